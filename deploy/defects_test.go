package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/wire"
)

// userData renders f and decodes vm's cloud-init.
func userData(t *testing.T, f *Fleet, vm string) cloudConfig {
	t.Helper()
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cc cloudConfig
	if err := yaml.Unmarshal(files[vm+"/user-data"], &cc); err != nil {
		t.Fatalf("%s/user-data: %v", vm, err)
	}
	return cc
}

// TestCloudInitLinksDebianNATSServer: without release.nats_server_url, cloud-init installs the
// Debian package nats-server, whose binary is /usr/sbin/nats-server (the package's file list);
// the unit runs /usr/local/bin/nats-server, which must link to it, not to a file that does not
// exist.
func TestCloudInitLinksDebianNATSServer(t *testing.T) {
	f := loadExample(t)
	f.Release = Release{BinaryPath: "/opt/meridian/meridian"}
	cc := userData(t, f, "fra-edge-1")
	if !slices.Contains(cc.Packages, "nats-server") {
		t.Fatalf("packages = %v, want nats-server", cc.Packages)
	}
	var target string
	for _, c := range cc.RunCmd {
		if len(c) == 4 && c[0] == "ln" && c[3] == NATSBin {
			target = c[2]
		}
	}
	if target != "/usr/sbin/nats-server" {
		t.Errorf("cloud-init links %s to %q, want /usr/sbin/nats-server (where the Debian package puts it)", NATSBin, target)
	}
}

// TestCloudInitRestartsUnits: the Debian package nats-server starts its own nats-server.service
// (anonymous, /etc/nats-server.conf) as it is installed, before the deferred files are written.
// `systemctl enable --now` only starts units that are not running, so that process would keep
// running instead of the fleet's NATS server: cloud-init must restart the units.
func TestCloudInitRestartsUnits(t *testing.T) {
	f := loadExample(t)
	f.Release = Release{BinaryPath: "/opt/meridian/meridian"}
	for vm, units := range map[string][]string{
		"ctl-1":      {"nats-server.service", "meridian-control.service", "meridian-dns.service"},
		"fra-edge-1": {"nats-server.service", "meridian-edge.service"},
	} {
		cc := userData(t, f, vm)
		restarted := map[string]bool{}
		for _, c := range cc.RunCmd {
			if len(c) > 2 && c[0] == "systemctl" && c[1] == "restart" {
				for _, u := range c[2:] {
					restarted[u] = true
				}
			}
		}
		for _, u := range units {
			if !restarted[u] {
				t.Errorf("%s: cloud-init never restarts %s (runcmd %q): a package-started unit keeps its old process", vm, u, cc.RunCmd)
			}
		}
	}
}

// TestCloudInitDoesNotWaitForUnits: systemctl waits for a start or restart job to finish unless
// given --no-block (systemctl(1)), and meridian-control's job finishes only once its
// ExecStartPre has seen the JetStream cluster healthy, for up to TimeoutStartSec (300 s). On a
// first boot that cannot happen (the NATS credentials are copied in after boot, and the cluster
// needs a second control VM), so a blocking restart holds cloud-init's final stage for five
// minutes and then fails it ("Job for meridian-control.service failed"), leaving
// `cloud-init status` at error on every control VM. The units retry on their own: cloud-init
// only has to queue them.
func TestCloudInitDoesNotWaitForUnits(t *testing.T) {
	f := loadExample(t)
	for _, vm := range []string{"ctl-1", "fra-edge-1"} {
		cc := userData(t, f, vm)
		started := 0
		for _, c := range cc.RunCmd {
			if len(c) < 2 || c[0] != "systemctl" {
				continue
			}
			verb := c[1]
			if verb != "start" && verb != "restart" && !(verb == "enable" && slices.Contains(c, "--now")) {
				continue
			}
			started++
			if !slices.Contains(c, "--no-block") {
				t.Errorf("%s: runcmd %q waits for the units to start: want --no-block", vm, c)
			}
		}
		if started == 0 {
			t.Errorf("%s: runcmd %q starts no unit", vm, cc.RunCmd)
		}
	}
}

// loopbackFleet is the example fleet on loopback addresses without any TLS: valid (a fleet tried
// on one machine), rendered for real VMs (no BindHost).
func loopbackFleet(t *testing.T) *Fleet {
	t.Helper()
	f, _ := localFleet(t)
	f.NATS.TLS = TLSFiles{}
	f.Control.TLSCert, f.Control.TLSKey = "", ""
	if errs := f.validate(); len(errs) > 0 {
		t.Fatalf("loopback fleet is invalid: %v", errs.Err())
	}
	return f
}

// TestLoopbackFleetStaysOnLoopback: validate lets a fleet on loopback addresses go without NATS
// TLS and without API TLS. Its servers must then listen on loopback only: NATS routes and leaf
// connections in plain text on every address would cross the network unencrypted, and control
// refuses a plain-HTTP API on every address (it would not start).
func TestLoopbackFleetStaysOnLoopback(t *testing.T) {
	f := loopbackFleet(t)
	root := renderTree(t, f)
	for _, c := range f.Control.Nodes {
		env := envFile(t, filepath.Join(root, c.Name)+EtcDir+"/control.env")
		args := strings.Fields(env["MERIDIAN_CONTROL_ARGS"])
		i := slices.Index(args, "--listen")
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("%s: control.env has no --listen: %q", c.Name, args)
		}
		if err := control.CheckPlaintextListen(args[i+1], slices.Contains(args, "--tls-cert"), slices.Contains(args, "--insecure-http")); err != nil {
			t.Errorf("%s: meridian control would not start: %v", c.Name, err)
		}
		opts, err := server.ProcessConfigFile(filepath.Join(root, c.Name) + EtcDir + "/nats.conf")
		if err != nil {
			t.Fatalf("%s: nats.conf: %v", c.Name, err)
		}
		for what, host := range map[string]string{"cluster": opts.Cluster.Host, "leafnodes": opts.LeafNode.Host} {
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				t.Errorf("%s: nats %s listens on %q in plain text (no TLS), beyond loopback", c.Name, what, host)
			}
		}
	}
}

// TestRenderedConfigsLoad: whatever the fleet file's checks accept renders configs the servers'
// own loaders accept. A DNS config refused by dnsroute stops DNS on every control VM.
func TestRenderedConfigsLoad(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, old, new string }{
		{"absolute hostname outside the zone", `hostnames: ["*"]`, `hostnames: ["www.example.org."]`},
		{"relative hostname", `hostnames: ["*"]`, `hostnames: ["www"]`},
		{"cname outside the zone", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {\"www.example.org.\": \"www.cdn.example.com.\"}"},
		{"cname at the apex", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {\"cdn.example.com.\": \"www.cdn.example.com.\"}"},
		{"cname inside the zone", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {\"img.cdn.example.com.\": \"www.cdn.example.com.\"}"},
		{"cname on a routed hostname", `hostnames: ["*"]`, `hostnames: ["www"]` + "\n  cnames: {\"www\": \"img.cdn.example.com.\"}"},
		{"cname on a name server", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {\"ns1\": \"www.cdn.example.com.\"}"},
		{"routed name server", `hostnames: ["*"]`, `hostnames: ["ns1.cdn.example.com."]`},
		{"cname loop", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a: b, b: a}"},
		{"cname to itself", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a: a.cdn.example.com.}"},
		{"one cname name spelt twice", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a: www, \"a.cdn.example.com.\": img}"},
		{"city with quotes and a newline", "city: Frankfurt", `city: "Frank\"furt\n: am Main # x"`},
		{"heartbeat ttl", "replicas: 3", "replicas: 3\n  heartbeat_ttl: 5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(example), tt.old) {
				t.Fatalf("example has no %q", tt.old)
			}
			f, err := Parse([]byte(strings.Replace(string(example), tt.old, tt.new, 1)))
			if err != nil {
				t.Logf("refused by the fleet checks: %v", err)
				return
			}
			renderedConfigsLoad(t, f)
		})
	}
}

// renderTree renders f into a new temporary directory and returns it.
func renderTree(t *testing.T, f *Fleet) string {
	t.Helper()
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteTree(dir, files); err != nil {
		t.Fatal(err)
	}
	return dir
}

// renderedConfigsLoad renders f and loads every VM's server config with its server's loader.
func renderedConfigsLoad(t *testing.T, f *Fleet) {
	t.Helper()
	dir := renderTree(t, f)
	for _, vm := range f.VMs() {
		p := filepath.Join(dir, vm.Name) + EtcDir
		if vm.Role == RoleControl {
			if _, err := dnsroute.LoadConfig(p + "/dns.yaml"); err != nil {
				t.Errorf("fleet accepted, but %s's dns.yaml is refused: %v", vm.Name, err)
			}
			continue
		}
		if _, err := edge.LoadConfig(p + "/edge.yaml"); err != nil {
			t.Errorf("fleet accepted, but %s's edge.yaml is refused: %v", vm.Name, err)
		}
	}
}

// TestFleetTakesWhatDNSTakes: the other way round from TestRenderedConfigsLoad, names the DNS
// server takes in hostnames and cnames the fleet checks take too, and render a dns.yaml that
// loads. "@", the apex as dns.yaml spells it, was refused as "not a domain name", though
// dnsroute routes the apex for it.
func TestFleetTakesWhatDNSTakes(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const old = `hostnames: ["*"]`
	tests := []struct{ name, dns string }{
		{"apex as @", `hostnames: ["@"]`},
		{"apex as @ beside other names", `hostnames: ["www", "@"]`},
		{"apex by its name", `hostnames: ["cdn.example.com."]`},
		{"cname to the apex as @", `hostnames: ["@"]` + "\n  cnames: {\"top\": \"@\"}"},
		{"cname chain out of the zone", `hostnames: ["*"]` + "\n  cnames: {a: b, b: www.example.org.}"},
		{"cname chain longer than an answer follows", `hostnames: ["*"]` + "\n  cnames: {c0: c1, c1: c2, c2: c3, c3: c4, c4: c5, c5: c6, c6: c7, c7: c8, c8: c9, c9: www}"},
		// dnsroute holds a name written in Unicode as its A-labels: the fleet checks took no
		// Unicode name at all ("not a domain name").
		{"hostnames in unicode", `hostnames: ["bücher", "www.Straße.cdn.example.com."]`},
		{"cnames in unicode", `hostnames: ["www"]` + "\n  cnames: {ñ: www, alias: ñ, x: bücher.example.}"},
		// An ACME DNS-01 challenge delegated to an acme-dns server, and other service labels
		// (RFC 8552): the fleet checks took host labels only ("both must be domain names").
		{"cnames of service labels", `hostnames: ["www"]` + "\n  cnames: {_acme-challenge.www: 3f2a.auth.acme-dns.example.org., _dmarc: _dmarc.mail.example.org., _443._tcp.www: _acme-challenge.www}"},
		// The longest name, 255 octets with the zone after it.
		{"longest hostname", `hostnames: ["` + strings.Repeat(strings.Repeat("a", 60)+".", 3) + strings.Repeat("a", 54) + `"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The premise: dnsroute takes these names in a config of its own.
			own := "zone: cdn.example.com.\nns: [{name: ns1, ipv4: [192.0.2.53]}]\nmmdb: city.mmdb\n" + strings.ReplaceAll(tt.dns, "\n  ", "\n")
			if _, err := dnsroute.ParseConfig([]byte(own)); err != nil {
				t.Fatalf("dnsroute refuses %q: %v", tt.dns, err)
			}
			if !strings.Contains(string(example), old) {
				t.Fatalf("example has no %q", old)
			}
			f, err := Parse([]byte(strings.Replace(string(example), old, tt.dns, 1)))
			if err != nil {
				t.Fatalf("fleet checks refuse what dnsroute takes: %v", err)
			}
			renderedConfigsLoad(t, f)
		})
	}
}

// TestPrivilegedPortsNeedTheCapability: only the edge and DNS units may bind ports below 1024
// (CAP_NET_BIND_SERVICE); nats-server and control have no capability, so a fleet that puts
// one of their ports there renders units that never start. The checks must refuse it.
func TestPrivilegedPortsNeedTheCapability(t *testing.T) {
	for _, unit := range []string{"nats-server.service", "meridian-control.service"} {
		b, err := units.ReadFile("systemd/" + unit)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "CAP_NET_BIND_SERVICE") {
			t.Fatalf("%s has CAP_NET_BIND_SERVICE: this test's premise changed", unit)
		}
	}
	for _, field := range []string{"control.api_port", "nats.client_port", "nats.cluster_port", "nats.leaf_port", "nats.monitor_port"} {
		t.Run(field, func(t *testing.T) {
			f := loadExample(t)
			port := map[string]*int{"control.api_port": &f.Control.APIPort, "nats.client_port": &f.NATS.ClientPort,
				"nats.cluster_port": &f.NATS.ClusterPort, "nats.leaf_port": &f.NATS.LeafPort, "nats.monitor_port": &f.NATS.MonitorPort}[field]
			*port = 443
			errs := f.validate()
			if !slices.ContainsFunc(errs, func(e *wire.FieldError) bool { return e.Field == field }) {
				t.Errorf("%s: 443 accepted (%v), but its unit cannot bind a port below 1024", field, errs.Err())
			}
		})
	}
	// The edge's and DNS's may.
	f := loadExample(t)
	f.Edge.AdminPort, f.DNS.AdminPort = 443, 853
	if errs := f.validate(); len(errs) > 0 {
		t.Errorf("edge and DNS ports below 1024 refused: %v", errs.Err())
	}
}

// TestTerraformKeepsVMsWhenUserDataChanges: every control VM's user data carries nats.conf,
// which lists every PoP's leaf keys, so adding a PoP or a node changes it. Terraform must not
// then destroy and recreate the VMs (all three control VMs at once: the JetStream cluster, its
// data and the secrets provisioned on them); the operator installs the new files instead
// (docs/operations.md).
func TestTerraformKeepsVMsWhenUserDataChanges(t *testing.T) {
	f := loadExample(t)
	sec, err := NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	before, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	f.PoPs[1].Nodes = append(f.PoPs[1].Nodes, EdgeNode{ID: "edge-2", IPv4: "198.51.100.22"})
	after, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	if string(before["ctl-1/user-data"]) == string(after["ctl-1/user-data"]) {
		t.Fatal("a new edge left the control VMs' user data alone: this test's premise changed")
	}

	file, diags := hclparse.NewParser().ParseHCLFile(filepath.Join("terraform", "region", "main.tf"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var vm *hclsyntax.Block
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type == "resource" && len(b.Labels) == 2 && b.Labels[0] == "aws_instance" {
			vm = b
		}
	}
	if vm == nil {
		t.Fatal("terraform/region/main.tf has no aws_instance")
	}
	if a := vm.Body.Attributes["user_data_replace_on_change"]; a != nil {
		if v, d := a.Expr.Value(nil); !d.HasErrors() && v.True() {
			t.Errorf("aws_instance sets user_data_replace_on_change = true: a re-render replaces every control VM at once")
		}
	}
	ignored := false
	for _, b := range vm.Body.Blocks {
		if b.Type != "lifecycle" || b.Body.Attributes["ignore_changes"] == nil {
			continue
		}
		list, _ := hcl.ExprList(b.Body.Attributes["ignore_changes"].Expr)
		for _, tr := range list {
			if trav, d := hcl.AbsTraversalForExpr(tr); !d.HasErrors() && trav.RootName() == "user_data_base64" {
				ignored = true
			}
		}
	}
	if !ignored {
		t.Errorf("aws_instance does not ignore changes of user_data_base64: Terraform would update every VM whose rendered files changed")
	}
}

// TestTrustedProxiesRendered: control.trusted_proxies reaches meridian control as the one
// --trusted-proxies list its flags parse back to the fleet file's entries.
func TestTrustedProxiesRendered(t *testing.T) {
	f := loadExample(t)
	f.Control.TrustedProxies = []string{"10.0.0.5", "2001:db8:f::/48"}
	for name, cmd := range renderedControlCommands(t, f) {
		got, err := cmd.Flags().GetStringSlice("trusted-proxies")
		if err != nil || !slices.Equal(got, f.Control.TrustedProxies) {
			t.Errorf("%s: --trusted-proxies %q (%v), want %q", name, got, err, f.Control.TrustedProxies)
		}
	}
}

// renderedControlCommands renders f and parses each control VM's rendered control.env
// arguments as `meridian control` does, by VM name.
func renderedControlCommands(t *testing.T, f *Fleet) map[string]*cobra.Command {
	t.Helper()
	root := renderTree(t, f)
	cmds := map[string]*cobra.Command{}
	for _, c := range f.Control.Nodes {
		env := envFile(t, filepath.Join(root, c.Name)+EtcDir+"/control.env")
		cmd := control.NewCommand()
		if err := cmd.ParseFlags(strings.Fields(env["MERIDIAN_CONTROL_ARGS"])); err != nil {
			t.Fatalf("%s: meridian control refuses its flags: %v", c.Name, err)
		}
		cmds[c.Name] = cmd
	}
	return cmds
}

// TestMaxConsumersRendered: every process of the fleet watches some of the fleet's streams,
// and control bounds how many consumers each stream has (docs/security.md, "Consumers"). The
// rendered --max-consumers leaves each process room for its watches and as many left behind
// by a crash or reconnect, and is never below control's default.
func TestMaxConsumersRendered(t *testing.T) {
	f := loadExample(t)
	big := loadExample(t)
	for i := range 400 {
		big.PoPs[0].Nodes = append(big.PoPs[0].Nodes, EdgeNode{ID: fmt.Sprintf("x%d", i)})
	}
	processes := 2 * len(big.Control.Nodes) // control and DNS on each control VM
	for _, p := range big.PoPs {
		processes += len(p.Nodes)
	}
	for _, tc := range []struct {
		name string
		f    *Fleet
		want int
	}{
		{"example", f, control.DefaultMaxConsumers},
		{"400 more edges", big, 4 * processes},
	} {
		if got := maxConsumers(tc.f); got != tc.want {
			t.Errorf("%s: maxConsumers = %d, want %d", tc.name, got, tc.want)
		}
	}
	for name, cmd := range renderedControlCommands(t, f) {
		if got, err := cmd.Flags().GetInt("max-consumers"); err != nil || got != maxConsumers(f) {
			t.Errorf("%s: --max-consumers %d (%v), want %d", name, got, err, maxConsumers(f))
		}
	}
}

// TestRenderedDNSPolicyKeepsEveryField: the fleet file's dns.policy reaches every control
// VM's dns.yaml whole, whichever of its fields alone is set. A policy whose only fields were
// explore or load_hysteresis rendered no policy at all, and DNS ran on the defaults.
func TestRenderedDNSPolicyKeepsEveryField(t *testing.T) {
	tests := []struct {
		name string
		pol  wire.RoutingPolicy
	}{
		{"policy", wire.RoutingPolicy{Policy: "least-loaded"}},
		{"radius_km", wire.RoutingPolicy{RadiusKm: 900}},
		{"explore", wire.RoutingPolicy{Explore: 0.2}},
		{"explore off", wire.RoutingPolicy{Explore: -1}},
		{"load_hysteresis", wire.RoutingPolicy{LoadHysteresis: 0.1}},
		{"load_hysteresis off", wire.RoutingPolicy{LoadHysteresis: -1}},
		{"low_watermark", wire.RoutingPolicy{LowWatermark: 0.7}},
		{"high_watermark", wire.RoutingPolicy{HighWatermark: 1.2}},
		{"weights", wire.RoutingPolicy{Weights: map[string]float64{"fra": 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := loadExample(t)
			f.DNS.Policy = tt.pol
			if errs := f.validate(); len(errs) > 0 {
				t.Fatalf("fleet checks refuse the policy: %v", errs.Err())
			}
			dir := renderTree(t, f)
			for _, vm := range f.VMs() {
				if vm.Role != RoleControl {
					continue
				}
				cfg, err := dnsroute.LoadConfig(filepath.Join(dir, vm.Name) + EtcDir + "/dns.yaml")
				if err != nil {
					t.Fatalf("%s's dns.yaml: %v", vm.Name, err)
				}
				if !reflect.DeepEqual(cfg.Policy, tt.pol) {
					t.Errorf("%s's dns.yaml has policy %+v, want %+v (the fleet file's)", vm.Name, cfg.Policy, tt.pol)
				}
			}
		})
	}
}

// TestLatencyMaxBytesRendered: honest edges fill control's default 64 MiB latency bucket on a
// busy fleet (docs/security.md, "Latency bucket"), so render sizes it for the fleet it renders
// (docs/deploy.md, "Latency bucket size"): edges × 10,000 networks × 512 bytes, at least the
// default, at most 1 GiB. Each control VM's flags carry it, and meridian control takes them.
// DNS's latency map follows from the same estimate (edges × 10,000 records, at least
// dnsroute's default 200,000, at most the 2,097,152 records of 512 bytes that 1 GiB holds):
// each control VM's dns.yaml carries it as latency_records, and dnsroute's loader takes it.
// It was a constant in DNS, so past 20 edges a larger bucket routed no more networks by RTT.
func TestLatencyMaxBytesRendered(t *testing.T) {
	small := loadExample(t)
	edges := func(f *Fleet) (n int) {
		for _, p := range f.PoPs {
			n += len(p.Nodes)
		}
		return n
	}
	// The review's busy fleet: 40 edges over the example's PoPs, addresses of their own.
	busy := loadExample(t)
	for i := 0; edges(busy) < 40; i++ {
		p := &busy.PoPs[i%len(busy.PoPs)]
		n := p.Nodes[0]
		n.ID = fmt.Sprintf("busy-%d", i)
		n.IPv4 = fmt.Sprintf("198.51.101.%d", i+1)
		n.IPv6 = fmt.Sprintf("2001:db8:f00::%x", i+1)
		n.PrivateIPv4 = fmt.Sprintf("10.9.0.%d", i+1)
		p.Nodes = append(p.Nodes, n)
	}
	huge := loadExample(t)
	for i := range 300 {
		huge.PoPs[0].Nodes = append(huge.PoPs[0].Nodes, EdgeNode{ID: fmt.Sprintf("x%d", i)})
	}
	for _, tc := range []struct {
		name    string
		f       *Fleet
		render  bool
		want    int64
		records int
	}{
		{fmt.Sprintf("the example's %d edges", edges(small)), small, true, 64 << 20, dnsroute.DefaultLatencyRecords},
		{"40 edges", busy, true, 40 * 10_000 * 512, 400_000},
		{"300 more edges", huge, false, 1 << 30, (1 << 30) / 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := latencyMaxBytes(tc.f); got != tc.want {
				t.Errorf("latencyMaxBytes of %d edges = %d, want %d", edges(tc.f), got, tc.want)
			}
			if got := latencyRecords(tc.f); got != tc.records {
				t.Errorf("latencyRecords of %d edges = %d, want %d", edges(tc.f), got, tc.records)
			}
			if !tc.render {
				return
			}
			root := renderTree(t, tc.f)
			for _, c := range tc.f.Control.Nodes {
				env := envFile(t, filepath.Join(root, c.Name)+EtcDir+"/control.env")
				cmd := control.NewCommand()
				if err := cmd.ParseFlags(strings.Fields(env["MERIDIAN_CONTROL_ARGS"])); err != nil {
					t.Fatalf("%s: meridian control refuses its flags: %v", c.Name, err)
				}
				if got, err := cmd.Flags().GetInt64("latency-max-bytes"); err != nil || got != tc.want {
					t.Errorf("%s: --latency-max-bytes %d (%v), want %d", c.Name, got, err, tc.want)
				}
				cfg, err := dnsroute.LoadConfig(filepath.Join(root, c.Name) + EtcDir + "/dns.yaml")
				if err != nil {
					t.Fatalf("%s: dnsroute refuses its dns.yaml: %v", c.Name, err)
				}
				if cfg.LatencyRecords != tc.records {
					t.Errorf("%s: dns.yaml latency_records %d, want %d", c.Name, cfg.LatencyRecords, tc.records)
				}
			}
		})
	}
}
