package deploy

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
)

//go:embed systemd/*.service
var units embed.FS

// Paths on every VM. The rendered tree mirrors them under "<vm>/".
const (
	EtcDir      = "/etc/meridian"
	StateDir    = "/var/lib/meridian"
	UnitDir     = "/etc/systemd/system"
	MeridianBin = "/usr/local/bin/meridian"
	NATSBin     = "/usr/local/bin/nats-server"
	// DebianNATSBin is where the Debian (and Ubuntu) package nats-server installs the binary.
	DebianNATSBin = "/usr/sbin/nats-server"
	// MinNATSServerVersion is the oldest nats-server that reads the rendered nats.conf: routes'
	// pool_size came in 2.10.0, a leaf remote's nkey in 2.10.8 (2.9.10 refuses the first,
	// 2.10.7 the second; TestNATSServerVersionFloor).
	MinNATSServerVersion = "2.10.8"
	// ResolvConf is the resolver's configuration, which a control VM's cloud-init repoints
	// from systemd-resolved's stub to its upstream servers.
	ResolvConf = "/etc/resolv.conf"
	// resolvedDir holds the resolv.conf files systemd-resolved writes.
	resolvedDir = "/run/systemd/resolve"
)

// Roles a VM can have.
const (
	RoleControl = "control" // nats-server (cluster, JetStream), meridian control, meridian dns
	RoleEdge    = "edge"    // nats-server (leaf node), meridian edge
)

// RenderOptions adjusts rendering. The zero value renders for real VMs.
type RenderOptions struct {
	// BindHost, if set, returns the address every server on VM vm listens on, instead of all
	// addresses (public ports) and 127.0.0.1 (ports for processes on the same VM). Tests use
	// it to run a rendered fleet on 127.0.0.x; nothing else in the output changes.
	BindHost func(vm string) string
	// Secrets are the fleet's NATS credentials and route password, created as needed (and
	// added to it). Nil means fresh ones, which makes two renders differ.
	Secrets *Secrets
}

// VM is one rendered machine, as listed in vms.json for Terraform.
type VM struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Region string `json:"region"`
	PoP    string `json:"pop,omitempty"`
	IPv4   string `json:"ipv4"`
	IPv6   string `json:"ipv6,omitempty"`
	// PrivateIPv4 is the private address the VM must have (admin listeners, PoP peers bind or
	// reach it); the Terraform example creates the instance with it.
	PrivateIPv4 string `json:"private_ipv4,omitempty"`
	UserData    string `json:"user_data"` // path of its cloud-init file in the rendered tree
}

// Ports are the ports the fleet's VMs listen on that other hosts reach, as ports.json lists
// them for Terraform's security groups.
type Ports struct {
	HTTP        int `json:"http"`         // edges, from anyone
	DNS         int `json:"dns"`          // control VMs, TCP and UDP, from anyone
	NATSCluster int `json:"nats_cluster"` // control VMs, from the other control VMs
	NATSLeaf    int `json:"nats_leaf"`    // control VMs, from the edge VMs
	ControlAPI  int `json:"control_api"`  // control VMs, from operators
	EdgeAdmin   int `json:"edge_admin"`   // edges' health and metrics, on the private address
	DNSAdmin    int `json:"dns_admin"`    // DNS health and metrics, on the private address
}

// Ports lists the fleet's ports for ports.json. The NATS client and monitor ports are on
// loopback: no other host reaches them.
func (f *Fleet) Ports() Ports {
	return Ports{HTTP: f.Edge.HTTPPort, DNS: f.DNS.Port, NATSCluster: f.NATS.ClusterPort, NATSLeaf: f.NATS.LeafPort,
		ControlAPI: f.Control.APIPort, EdgeAdmin: f.Edge.AdminPort, DNSAdmin: f.DNS.AdminPort}
}

// VMs lists the fleet's machines: control VMs first, then edges by PoP, in file order.
func (f *Fleet) VMs() []VM {
	var out []VM
	for _, c := range f.Control.Nodes {
		out = append(out, VM{Name: c.Name, Role: RoleControl, Region: c.Region, IPv4: c.IPv4, IPv6: c.IPv6,
			PrivateIPv4: c.PrivateIPv4, UserData: c.Name + "/user-data"})
	}
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			name := p.VMName(n)
			out = append(out, VM{Name: name, Role: RoleEdge, Region: p.Region, PoP: p.ID, IPv4: n.IPv4, IPv6: n.IPv6,
				PrivateIPv4: n.PrivateIPv4, UserData: name + "/user-data"})
		}
	}
	return out
}

// Render produces every file of the fleet, keyed by path relative to the output directory:
//
//	<vm>/user-data                         cloud-init (#cloud-config) carrying everything below
//	                                       but the credentials
//	<vm>/etc/meridian/creds/*              the VM's own NATS credentials (mode 0600): delivered
//	                                       beside the cloud-init, never in it
//	<vm>/etc/meridian/nats.conf            NATS: cluster member (control) or leaf node (edge)
//	<vm>/etc/meridian/control.env, dns.yaml (control VMs) or edge.yaml (edge VMs)
//	<vm>/etc/systemd/system/*.service      the hardened units from deploy/systemd
//	<vm>/etc/tmpfiles.d/meridian.conf      creates CredsDir, gives each credential and secret
//	                                       file to its reader
//	prometheus/prometheus.yml              scrape config for every node's metrics
//	hosts/<host>.json                      PUT /v1/hosts/<host> bodies for the control API
//	vms.json                               the VM list for Terraform
//	ports.json                             the ports other hosts reach, for Terraform
//
// The output is deterministic: the same fleet renders the same bytes. f must come from Parse
// or Load (defaults filled, validated).
func Render(f *Fleet, opts RenderOptions) (map[string][]byte, error) {
	// `deploy render --binary-*` replaces the release section after the fleet file was
	// checked: check it again, as the file's is (a relative --binary-path would link
	// /usr/local/bin/meridian to nothing).
	rc := &checker{f: f}
	rc.release()
	if err := rc.errs.Err(); err != nil {
		return nil, err
	}
	sec := opts.Secrets
	if sec == nil {
		var err error
		if sec, err = NewSecrets(); err != nil {
			return nil, err
		}
	}
	rd := renderer{f: f, opts: opts, out: map[string][]byte{}, sec: sec, secretOwners: map[string]map[string]string{}}
	if err := rd.credentials(); err != nil {
		return nil, err
	}
	for _, c := range f.Control.Nodes {
		if err := rd.control(c); err != nil {
			return nil, err
		}
	}
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			if err := rd.edge(p, n); err != nil {
				return nil, err
			}
		}
	}
	rd.out["prometheus/prometheus.yml"] = rd.prometheus()
	for _, h := range f.Hosts {
		b, err := json.MarshalIndent(h, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("render host %s: %w", h.Host, err)
		}
		rd.out["hosts/"+h.Host+".json"] = append(b, '\n')
	}
	if err := checkUserDataSize(f, rd.out); err != nil {
		return nil, err
	}
	vms, err := json.MarshalIndent(f.VMs(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render vms.json: %w", err)
	}
	rd.out["vms.json"] = append(vms, '\n')
	ports, err := json.MarshalIndent(f.Ports(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render ports.json: %w", err)
	}
	rd.out["ports.json"] = append(ports, '\n')
	return rd.out, nil
}

// MaxUserData is EC2's limit on user data, in bytes: "User data is limited to 16 KB, in raw
// form, before it is base64-encoded" (AWS, Amazon EC2 User Guide, "Work with instance user
// data"; the API's error says "User data is limited to 16384 bytes"). The Terraform example
// sends base64gzip(user-data), so the raw form is the gzip stream.
const MaxUserData = 16384

// GzippedSize is the size of b as Terraform's base64gzip compresses it before encoding:
// compress/gzip at its default level, flushed, then closed.
func GzippedSize(b []byte) int {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b) // writes to a bytes.Buffer do not fail
	_ = w.Flush()
	_ = w.Close()
	return buf.Len()
}

// checkUserDataSize refuses a fleet any of whose VMs' gzipped user data is over MaxUserData:
// EC2 would refuse to launch it. Each control VM's grows with every edge VM (nats.conf lists
// every leaf key with its permissions); each edge VM's with the hosts.
func checkUserDataSize(f *Fleet, out map[string][]byte) error {
	var errs []error
	for _, vm := range f.VMs() {
		ud := out[vm.UserData]
		if n := GzippedSize(ud); n > MaxUserData {
			errs = append(errs, fmt.Errorf("%s: user data is %d bytes gzipped (%d before), over EC2's limit of %d bytes (16 KiB); docs/deploy.md, \"User data size\"",
				vm.Name, n, len(ud), MaxUserData))
		}
	}
	return errors.Join(errs...)
}

type renderer struct {
	f    *Fleet
	opts RenderOptions
	out  map[string][]byte
	sec  *Secrets
	// creds are every VM's credentials by VM, then identity.
	creds map[string]map[natsauth.Identity]natsauth.Credential
	// clusterUsers are the users the cluster's servers accept: control, DNS and leaf links.
	clusterUsers []natsauth.User
	// secretOwners are the users that read each VM's secret files, by VM, then file name.
	secretOwners map[string]map[string]string
}

// secret adds VM vm's secret file name (under CredsDir), which only the service user owner
// reads: in the rendered tree, not in the cloud-init.
func (r *renderer) secret(vm, name, owner string, b []byte) {
	r.out[vm+CredsDir+"/"+name] = b
	if r.secretOwners[vm] == nil {
		r.secretOwners[vm] = map[string]string{}
	}
	r.secretOwners[vm][name] = owner
}

// public is the listen address of a port other VMs reach; local, of one only this VM uses.
func (r *renderer) public(vm string, port int) string {
	if h := r.publicHost(vm); h != "" {
		return net.JoinHostPort(h, strconv.Itoa(port))
	}
	return ":" + strconv.Itoa(port)
}

func (r *renderer) natsPublic(vm string, port int) string {
	if h := r.publicHost(vm); h != "" {
		return net.JoinHostPort(h, strconv.Itoa(port))
	}
	return "0.0.0.0:" + strconv.Itoa(port)
}

// publicHost is the one address vm's public ports listen on, or "" for every address. A VM on
// a loopback address listens on it alone: validate lets a fleet on loopback go without NATS
// and API TLS, which must then not listen where other hosts reach (and control refuses a
// plain-HTTP API on every address).
func (r *renderer) publicHost(vm string) string {
	if r.opts.BindHost != nil {
		return r.opts.BindHost(vm)
	}
	for _, v := range r.f.VMs() {
		if ip := net.ParseIP(v.IPv4); v.Name == vm && ip != nil && ip.IsLoopback() {
			return v.IPv4
		}
	}
	return ""
}

// admin is the listen address of an admin port (health, metrics): the VM's private address if
// it has one, else loopback; never every address.
func (r *renderer) admin(vm, private string, port int) string {
	if r.opts.BindHost != nil {
		return net.JoinHostPort(r.opts.BindHost(vm), strconv.Itoa(port))
	}
	if private == "" {
		private = "127.0.0.1"
	}
	return net.JoinHostPort(private, strconv.Itoa(port))
}

func (r *renderer) local(vm string, port int) string {
	h := "127.0.0.1"
	if r.opts.BindHost != nil {
		h = r.opts.BindHost(vm)
	}
	return net.JoinHostPort(h, strconv.Itoa(port))
}

func (r *renderer) header(vm, what string) string {
	return fmt.Sprintf("# %s for %s in fleet %s, rendered by `meridian deploy render`.\n"+
		"# Do not edit on the VM: change the fleet file and render again.\n", what, vm, r.f.Name)
}

// defaultMaxConsumers is meridian control's --max-consumers default (control.DefaultMaxConsumers).
const defaultMaxConsumers = 1000

// maxConsumers is the bound on each of the fleet's streams' consumers for f: room for four
// per process (each watches at most two of a stream, and leaves them behind for a while when it
// crashes or reconnects), at least control's default.
func maxConsumers(f *Fleet) int {
	processes := 2 * len(f.Control.Nodes) // control and DNS on each control VM
	for _, p := range f.PoPs {
		processes += len(p.Nodes)
	}
	return max(defaultMaxConsumers, 4*processes)
}

// The latency bucket's size for a fleet (docs/deploy.md, "Latency bucket size"): each edge
// writes one record per client network it saw within the bucket's 15-minute TTL.
const (
	// latencyNetworksPerEdge is the client networks an edge is taken to see in 15 minutes, an
	// estimate: above the 3,400-8,500 per edge at which 40 edges fill 64 MiB (docs/security.md),
	// below the 65,536 an edge may keep.
	latencyNetworksPerEdge = 10_000
	// latencyRecordBytes is what a record costs the bucket with the 16 PoPs it keeps at most
	// (440-560 bytes measured by fleet's TestLatencyRecordCost; 200 with its own PoP only).
	latencyRecordBytes = 512
	// latencyCapBytes caps the bound (reached at 210 edges): every control VM keeps a replica
	// on its disk and nats-server keeps per-key state in memory, for 2-5 million records at
	// 1 GiB; DNS's map follows it (latencyRecords) at some 680-1,520 bytes of heap a record.
	latencyCapBytes = 1 << 30
)

// latencyMaxBytes is the latency bucket's bound for f: edges × latencyNetworksPerEdge ×
// latencyRecordBytes, from control's default (fleet.LatencyMaxBytes, 64 MiB: a fleet of up
// to 13 edges keeps it) to latencyCapBytes.
func latencyMaxBytes(f *Fleet) int64 {
	var edges int64
	for _, p := range f.PoPs {
		edges += int64(len(p.Nodes))
	}
	return min(max(edges*latencyNetworksPerEdge*latencyRecordBytes, fleet.LatencyMaxBytes), latencyCapBytes)
}

// defaultLatencyRecords is meridian dns's latency_records default
// (dnsroute.DefaultLatencyRecords).
const defaultLatencyRecords = 200_000

// latencyRecords is the bound of DNS's latency map for f, from the estimate latencyMaxBytes
// makes: a record per network each edge sees (edges × latencyNetworksPerEdge), from DNS's
// default to the records the bucket's cap holds (latencyCapBytes / latencyRecordBytes,
// 2,097,152). A smaller map routes no more networks by RTT than it holds, however large the
// bucket; one past the bucket only costs memory (docs/dns.md, "Latency map").
func latencyRecords(f *Fleet) int {
	edges := 0
	for _, p := range f.PoPs {
		edges += len(p.Nodes)
	}
	return min(max(edges*latencyNetworksPerEdge, defaultLatencyRecords), latencyCapBytes/latencyRecordBytes)
}

func (r *renderer) control(c ControlNode) error {
	f := r.f
	vm := c.Name
	files := map[string][]byte{}
	files[EtcDir+"/nats.conf"] = r.natsCluster(vm)
	r.secret(vm, "control.creds", userControl, r.creds[vm][natsauth.Control()].Format())
	r.secret(vm, "dns.creds", userDNS, r.creds[vm][natsauth.DNS(vm)].Format())
	r.secret(vm, "nats-cluster.conf", userNATS, r.natsRouteSecrets(vm))
	args := []string{
		"--nats", "nats://" + r.local(vm, f.NATS.ClientPort),
		"--nats-creds", CredsDir + "/control.creds",
		"--replicas", strconv.Itoa(f.Control.Replicas),
		"--listen", r.public(vm, f.Control.APIPort),
		"--tokens", f.Control.TokensFile,
		"--prefix", f.Prefix,
	}
	switch {
	case f.Control.TLSCert != "":
		args = append(args, "--tls-cert", f.Control.TLSCert, "--tls-key", f.Control.TLSKey)
	case f.Control.InsecureHTTP:
		args = append(args, "--insecure-http")
	}
	if len(f.Control.TrustedProxies) > 0 {
		args = append(args, "--trusted-proxies", strings.Join(f.Control.TrustedProxies, ","))
	}
	if f.Control.HeartbeatTTL > 0 {
		args = append(args, "--heartbeat-ttl", f.Control.HeartbeatTTL.String())
	}
	args = append(args, "--max-consumers", strconv.Itoa(maxConsumers(f)),
		"--latency-max-bytes", strconv.FormatInt(latencyMaxBytes(f), 10))
	files[EtcDir+"/control.env"] = []byte(r.header(vm, "meridian control flags") +
		"MERIDIAN_CONTROL_ARGS=" + strings.Join(args, " ") + "\n" +
		"# ExecStartPre waits for this: JetStream answers only once the cluster has a meta leader.\n" +
		"MERIDIAN_NATS_HEALTHZ=http://" + r.local(vm, f.NATS.MonitorPort) + "/healthz\n")
	dnsYAML, err := r.dnsConfig(vm)
	if err != nil {
		return err
	}
	files[EtcDir+"/dns.yaml"] = dnsYAML
	// systemd-resolved's stub listener holds 127.0.0.53:53 on most images; the DNS server
	// binds :53, so the stub goes.
	files["/etc/systemd/resolved.conf.d/meridian.conf"] = []byte(r.header(vm, "resolved drop-in") +
		"[Resolve]\nDNSStubListener=no\n")
	return r.vm(vm, RoleControl, files, []string{"nats-server.service", "meridian-control.service", "meridian-dns.service"})
}

func (r *renderer) edge(p PoP, n EdgeNode) error {
	vm := p.VMName(n)
	files := map[string][]byte{}
	files[EtcDir+"/nats.conf"] = r.natsLeaf(vm, p, n)
	r.secret(vm, "edge.creds", userEdge, r.creds[vm][natsauth.Edge(p.ID, n.ID)].Format())
	r.secret(vm, "nats-leaf.conf", userNATS, []byte(r.header(vm, "NATS leaf link credential (secret)")+
		fmt.Sprintf("nkey: %q\n", r.creds[vm][natsauth.Leaf(p.ID)].Seed)))
	y, err := r.edgeConfig(p, n)
	if err != nil {
		return err
	}
	files[EtcDir+"/edge.yaml"] = y
	return r.vm(vm, RoleEdge, files, []string{"nats-server.service", "meridian-edge.service"})
}

// vm adds the units, writes every file under "<vm>/" and the cloud-init that carries them.
func (r *renderer) vm(vm, role string, files map[string][]byte, unitNames []string) error {
	for _, u := range unitNames {
		b, err := units.ReadFile("systemd/" + u)
		if err != nil {
			return fmt.Errorf("render %s: unit %s: %w", vm, u, err)
		}
		files[UnitDir+"/"+u] = b
	}
	files[TmpfilesConf] = r.secretsTmpfiles(vm, role)
	paths := make([]string, 0, len(files))
	for p, b := range files {
		paths = append(paths, p)
		r.out[vm+p] = b
	}
	sort.Strings(paths)
	ud, err := r.cloudInit(vm, role, paths, files, unitNames)
	if err != nil {
		return err
	}
	r.out[vm+"/user-data"] = ud
	return nil
}

func (r *renderer) yaml(vm, what string, v any) ([]byte, error) {
	b, err := marshalYAML(v)
	if err != nil {
		return nil, fmt.Errorf("render %s for %s: %w", what, vm, err)
	}
	return append([]byte(r.header(vm, what)), b...), nil
}

// marshalYAML encodes v with two-space indentation.
func marshalYAML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
