package deploy

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/wire"
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
	Name     string `json:"name"`
	Role     string `json:"role"`
	Region   string `json:"region"`
	PoP      string `json:"pop,omitempty"`
	IPv4     string `json:"ipv4"`
	IPv6     string `json:"ipv6,omitempty"`
	UserData string `json:"user_data"` // path of its cloud-init file in the rendered tree
}

// VMs lists the fleet's machines: control VMs first, then edges by PoP, in file order.
func (f *Fleet) VMs() []VM {
	var out []VM
	for _, c := range f.Control.Nodes {
		out = append(out, VM{Name: c.Name, Role: RoleControl, Region: c.Region, IPv4: c.IPv4, IPv6: c.IPv6,
			UserData: c.Name + "/user-data"})
	}
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			name := p.VMName(n)
			out = append(out, VM{Name: name, Role: RoleEdge, Region: p.Region, PoP: p.ID, IPv4: n.IPv4, IPv6: n.IPv6,
				UserData: name + "/user-data"})
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
//	prometheus/prometheus.yml              scrape config for every node's metrics
//	hosts/<host>.json                      PUT /v1/hosts/<host> bodies for the control API
//	vms.json                               the VM list for Terraform
//
// The output is deterministic: the same fleet renders the same bytes. f must come from Parse
// or Load (defaults filled, validated).
func Render(f *Fleet, opts RenderOptions) (map[string][]byte, error) {
	r := f.Release
	if r.BinaryURL == "" && r.BinaryPath == "" {
		return nil, &FieldError{Field: "release", Err: errors.New("needs binary_url or binary_path (or --binary-url / --binary-path)")}
	}
	if r.BinaryURL != "" && r.BinaryPath != "" {
		return nil, &FieldError{Field: "release", Err: errors.New("give binary_url or binary_path, not both")}
	}
	for _, d := range []struct{ field, url, sum string }{
		{"release.binary_url", r.BinaryURL, r.BinarySHA256},
		{"release.nats_server_url", r.NATSServerURL, r.NATSServerSHA256},
	} {
		if d.url == "" {
			continue
		}
		if u, err := url.Parse(d.url); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, &FieldError{Field: d.field, Err: fmt.Errorf("%q is not an https URL", d.url)}
		}
		if !sha256RE.MatchString(d.sum) {
			return nil, &FieldError{Field: d.field, Err: errors.New("needs its SHA-256 (binary_sha256 / nats_server_sha256, or --binary-sha256): cloud-init installs nothing it cannot check")}
		}
	}
	sec := opts.Secrets
	if sec == nil {
		var err error
		if sec, err = NewSecrets(); err != nil {
			return nil, err
		}
	}
	rd := renderer{f: f, opts: opts, out: map[string][]byte{}, sec: sec}
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
	vms, err := json.MarshalIndent(f.VMs(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render vms.json: %w", err)
	}
	rd.out["vms.json"] = append(vms, '\n')
	return rd.out, nil
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
}

// credentials creates (or takes from the secrets) the credential of every process on every VM:
// on a control VM, control and dns.<vm>; on an edge VM, edge.<pop>.<node> and its PoP's leaf
// link leaf.<pop> (one key per VM).
func (r *renderer) credentials() error {
	r.creds = map[string]map[natsauth.Identity]natsauth.Credential{}
	add := func(vm string, id natsauth.Identity, cluster bool) error {
		c, err := r.sec.credential(vm, id)
		if err != nil {
			return err
		}
		if r.creds[vm] == nil {
			r.creds[vm] = map[natsauth.Identity]natsauth.Credential{}
		}
		r.creds[vm][id] = c
		if cluster {
			u, err := c.User()
			if err != nil {
				return err
			}
			r.clusterUsers = append(r.clusterUsers, u)
		}
		return nil
	}
	for _, c := range r.f.Control.Nodes {
		if err := add(c.Name, natsauth.Control(), true); err != nil {
			return err
		}
		if err := add(c.Name, natsauth.DNS(c.Name), true); err != nil {
			return err
		}
	}
	for _, p := range r.f.PoPs {
		for _, n := range p.Nodes {
			vm := p.VMName(n)
			if err := add(vm, natsauth.Edge(p.ID, n.ID), false); err != nil {
				return err
			}
			if err := add(vm, natsauth.Leaf(p.ID), true); err != nil {
				return err
			}
		}
	}
	return nil
}

// secret adds a VM's secret file at path (under CredsDir): in the rendered tree, not in the
// cloud-init.
func (r *renderer) secret(vm, name string, b []byte) {
	r.out[vm+CredsDir+"/"+name] = b
}

// public is the listen address of a port other VMs reach; local, of one only this VM uses.
func (r *renderer) public(vm string, port int) string {
	if r.opts.BindHost != nil {
		return net.JoinHostPort(r.opts.BindHost(vm), strconv.Itoa(port))
	}
	return ":" + strconv.Itoa(port)
}

func (r *renderer) natsPublic(vm string, port int) string {
	if r.opts.BindHost != nil {
		return net.JoinHostPort(r.opts.BindHost(vm), strconv.Itoa(port))
	}
	return "0.0.0.0:" + strconv.Itoa(port)
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

func (r *renderer) control(c ControlNode) error {
	f := r.f
	vm := c.Name
	files := map[string][]byte{}
	files[EtcDir+"/nats.conf"] = r.natsCluster(vm)
	r.secret(vm, "control.creds", r.creds[vm][natsauth.Control()].Format())
	r.secret(vm, "dns.creds", r.creds[vm][natsauth.DNS(vm)].Format())
	r.secret(vm, "nats-cluster.conf", r.natsRouteSecrets(vm))
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
	if f.Control.HeartbeatTTL > 0 {
		args = append(args, "--heartbeat-ttl", f.Control.HeartbeatTTL.String())
	}
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
	r.secret(vm, "edge.creds", r.creds[vm][natsauth.Edge(p.ID, n.ID)].Format())
	r.secret(vm, "nats-leaf.conf", []byte(r.header(vm, "NATS leaf link credential (secret)")+
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

// natsCluster is a control VM's nats.conf: a cluster member with JetStream and a leaf listener.
func (r *renderer) natsCluster(vm string) []byte {
	f := r.f
	var b strings.Builder
	b.WriteString(r.header(vm, "NATS cluster member"))
	fmt.Fprintf(&b, "server_name: %q\n", vm)
	fmt.Fprintf(&b, "# Clients (meridian control and dns) run on this VM.\nlisten: %q\n", r.local(vm, f.NATS.ClientPort))
	fmt.Fprintf(&b, "http: %q\n\n", r.local(vm, f.NATS.MonitorPort))
	b.WriteString("# Nobody is anonymous: control, DNS and every PoP's leaf link, each with its own nkey and\n" +
		"# permissions (docs/security.md). Only public keys are here.\n")
	b.WriteString(natsauth.ConfUsers(f.Prefix, r.clusterUsers, ""))
	b.WriteString("\n")
	// The domain lets leaf nodes reach this JetStream: JetStream API traffic crosses a leaf
	// connection only under a domain prefix ($JS.<domain>.API), to which each leaf maps its
	// clients' plain $JS.API requests (default_js_domain).
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  domain: %q\n}\n\n", StateDir+"/nats", f.Name)
	fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: %q\n", f.Name, r.natsPublic(vm, f.NATS.ClusterPort))
	// One route connection per pair of servers keeps a client's subscription and the
	// JetStream request it then forwards to the meta leader in order; with pooled routes the
	// reply can outrun the subscription and be dropped (a lost first request, a 30 s timeout).
	b.WriteString("  pool_size: -1\n")
	r.natsTLS(&b, "  ")
	b.WriteString("  # The routes' own user and password, and the routes that carry them: a secret file.\n")
	fmt.Fprintf(&b, "  include %q\n}\n\n", "creds/nats-cluster.conf")
	fmt.Fprintf(&b, "# Every PoP's leaf node connects here; purges fan out from the cluster to them.\n")
	fmt.Fprintf(&b, "leafnodes {\n  listen: %q\n", r.natsPublic(vm, f.NATS.LeafPort))
	r.natsTLS(&b, "  ")
	b.WriteString("}\n")
	return []byte(b.String())
}

// natsRouteSecrets is a control VM's creds/nats-cluster.conf, included in its cluster block:
// the route user and password, and the route URLs that carry them.
func (r *renderer) natsRouteSecrets(vm string) []byte {
	var b strings.Builder
	b.WriteString(r.header(vm, "NATS route credentials (secret)"))
	fmt.Fprintf(&b, "authorization {\n  user: \"route\"\n  password: %q\n}\nroutes: [\n", r.sec.RoutePassword)
	for _, c := range r.f.Control.Nodes {
		u := url.URL{Scheme: "nats-route", User: url.UserPassword("route", r.sec.RoutePassword),
			Host: net.JoinHostPort(c.IPv4, strconv.Itoa(r.f.NATS.ClusterPort))}
		fmt.Fprintf(&b, "  %q\n", u.String())
	}
	b.WriteString("]\n")
	return []byte(b.String())
}

// natsLeaf is an edge VM's nats.conf: a leaf node of the cluster, without JetStream of its own,
// so the edge's JetStream calls are answered by the cluster.
func (r *renderer) natsLeaf(vm string, p PoP, n EdgeNode) []byte {
	f := r.f
	var b strings.Builder
	b.WriteString(r.header(vm, "NATS leaf node"))
	fmt.Fprintf(&b, "server_name: %q\n", vm)
	fmt.Fprintf(&b, "# The only client is meridian edge on this VM.\nlisten: %q\n", r.local(vm, f.NATS.ClientPort))
	fmt.Fprintf(&b, "http: %q\n\n", r.local(vm, f.NATS.MonitorPort))
	u, err := r.creds[vm][natsauth.Edge(p.ID, n.ID)].User()
	if err == nil {
		b.WriteString("# The edge on this VM, with its own nkey and permissions (docs/security.md).\n")
		b.WriteString(natsauth.ConfUsers(r.f.Prefix, []natsauth.User{u}, ""))
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "# No JetStream here: the edge's JetStream requests go to the cluster's domain.\n")
	fmt.Fprintf(&b, "default_js_domain: {\"$G\": %q}\n\n", f.Name)
	b.WriteString("leafnodes {\n  remotes: [\n    {\n      # One connection, to whichever control VM answers first; fails over to the others.\n      urls: [\n")
	for _, c := range f.Control.Nodes {
		fmt.Fprintf(&b, "        %q\n", "nats-leaf://"+net.JoinHostPort(c.IPv4, strconv.Itoa(f.NATS.LeafPort)))
	}
	b.WriteString("      ]\n")
	r.natsTLS(&b, "      ")
	b.WriteString("      # This VM's key of the PoP's leaf link: a secret file.\n")
	fmt.Fprintf(&b, "      include %q\n", "creds/nats-leaf.conf")
	b.WriteString("    }\n  ]\n}\n")
	return []byte(b.String())
}

func (r *renderer) natsTLS(b *strings.Builder, indent string) {
	t := r.f.NATS.TLS
	if !t.enabled() {
		return
	}
	fmt.Fprintf(b, "%stls {\n%s  cert_file: %q\n%s  key_file: %q\n%s  ca_file: %q\n%s  verify: true\n%s}\n",
		indent, indent, t.CertFile, indent, t.KeyFile, indent, t.CAFile, indent, indent)
}

// edgeYAML mirrors the fields of edge.Config the renderer sets (tests load the result with
// edge.LoadConfig, which refuses unknown fields).
type edgeYAML struct {
	PoP             string                `yaml:"pop"`
	Node            string                `yaml:"node"`
	Listen          string                `yaml:"listen"`
	AdminListen     string                `yaml:"admin_listen"`
	Hosts           []wire.HostConfig     `yaml:"hosts,omitempty"`
	Cache           *edgeCache            `yaml:"cache,omitempty"`
	Peers           []edgePeer            `yaml:"peers,omitempty"`
	Shields         map[string][]edgePeer `yaml:"shields,omitempty"`
	LameDuck        string                `yaml:"lame_duck"`
	ShutdownTimeout string                `yaml:"shutdown_timeout"`
	Fleet           edgeFleet             `yaml:"fleet"`
}

type edgeCache struct {
	MaxBytes int64 `yaml:"max_bytes"`
}

type edgePeer struct {
	ID   string `yaml:"id"`
	Addr string `yaml:"addr"`
}

type edgeFleet struct {
	NATS     string  `yaml:"nats"`
	Creds    string  `yaml:"creds"`
	Prefix   string  `yaml:"prefix"`
	Region   string  `yaml:"region"`
	City     string  `yaml:"city,omitempty"`
	Lat      float64 `yaml:"lat"`
	Lon      float64 `yaml:"lon"`
	IPv4     string  `yaml:"ipv4"`
	IPv6     string  `yaml:"ipv6,omitempty"`
	Capacity float64 `yaml:"capacity,omitempty"`
	TTL      string  `yaml:"ttl,omitempty"`
}

func (r *renderer) peerAddr(n EdgeNode, private bool) string {
	ip := n.IPv4
	if private && n.PrivateIPv4 != "" {
		ip = n.PrivateIPv4
	}
	return net.JoinHostPort(ip, strconv.Itoa(r.f.Edge.HTTPPort))
}

func (r *renderer) edgeConfig(p PoP, n EdgeNode) ([]byte, error) {
	f := r.f
	vm := p.VMName(n)
	e := edgeYAML{
		PoP: p.ID, Node: n.ID,
		Listen:          r.public(vm, f.Edge.HTTPPort),
		AdminListen:     r.admin(vm, n.PrivateIPv4, f.Edge.AdminPort),
		Hosts:           f.Hosts,
		LameDuck:        f.Edge.LameDuck.String(),
		ShutdownTimeout: f.Edge.ShutdownTimeout.String(),
		Fleet: edgeFleet{
			NATS: "nats://" + r.local(vm, f.NATS.ClientPort), Creds: CredsDir + "/edge.creds", Prefix: f.Prefix,
			Region: p.Region, City: p.City, Lat: *p.Lat, Lon: *p.Lon,
			IPv4: n.IPv4, IPv6: n.IPv6, Capacity: n.Capacity,
		},
	}
	if f.Control.HeartbeatTTL > 0 {
		e.Fleet.TTL = f.Control.HeartbeatTTL.String()
	}
	if f.Edge.CacheBytes > 0 {
		e.Cache = &edgeCache{MaxBytes: f.Edge.CacheBytes}
	}
	for _, o := range p.Nodes {
		if o.ID != n.ID {
			e.Peers = append(e.Peers, edgePeer{ID: o.ID, Addr: r.peerAddr(o, true)})
		}
	}
	for _, h := range f.Hosts {
		if h.Shield == "" || h.Shield == p.ID {
			continue
		}
		if e.Shields == nil {
			e.Shields = map[string][]edgePeer{}
		}
		if _, done := e.Shields[h.Shield]; done {
			continue
		}
		for _, sp := range f.PoPs {
			if sp.ID != h.Shield {
				continue
			}
			for _, sn := range sp.Nodes {
				e.Shields[h.Shield] = append(e.Shields[h.Shield], edgePeer{ID: sn.ID, Addr: r.peerAddr(sn, false)})
			}
		}
	}
	return r.yaml(vm, "meridian edge config (docs/edge.md)", e)
}

// dnsYAML mirrors the fields of dnsroute.Config the renderer sets, plus nats and prefix: the
// DNS server follows the fleet in NATS KV, like the edges.
type dnsYAML struct {
	Zone         string              `yaml:"zone"`
	NS           []dnsNS             `yaml:"ns"`
	TTL          string              `yaml:"ttl"`
	Listen       string              `yaml:"listen"`
	AdminListen  string              `yaml:"admin_listen"`
	MMDB         string              `yaml:"mmdb"`
	DefaultPoP   string              `yaml:"default_pop,omitempty"`
	Policy       *wire.RoutingPolicy `yaml:"policy,omitempty"`
	Hostnames    []string            `yaml:"hostnames,omitempty"`
	CNAMEs       map[string]string   `yaml:"cnames,omitempty"`
	HeartbeatTTL string              `yaml:"heartbeat_ttl,omitempty"`
	RateLimit    dnsRateLimit        `yaml:"rate_limit"`
	NATS         string              `yaml:"nats"`
	Creds        string              `yaml:"creds"`
	Prefix       string              `yaml:"prefix"`
}

// dnsRateLimit is dnsroute.RateLimit as rendered.
type dnsRateLimit struct {
	QPS   float64 `yaml:"qps"`
	Burst float64 `yaml:"burst"`
	Slip  int     `yaml:"slip"`
}

// renderedDNSRateLimit is the response rate limit every rendered DNS server runs with: per
// client /24 (/56), far above what one resolver's cache misses need at a 30 s TTL, low enough
// that the server cannot be used to amplify a flood; every other limited query gets a
// truncated reply so real resolvers retry over TCP.
var renderedDNSRateLimit = dnsRateLimit{QPS: 200, Burst: 400, Slip: 2}

type dnsNS struct {
	Name string   `yaml:"name"`
	IPv4 []string `yaml:"ipv4,omitempty"`
	IPv6 []string `yaml:"ipv6,omitempty"`
}

func (r *renderer) dnsConfig(vm string) ([]byte, error) {
	f := r.f
	d := dnsYAML{
		Zone: f.DNS.Zone, TTL: f.DNS.TTL.String(),
		Listen: r.public(vm, f.DNS.Port), AdminListen: r.admin(vm, r.controlNode(vm).PrivateIPv4, f.DNS.AdminPort),
		MMDB: f.DNS.MMDB, DefaultPoP: f.DNS.DefaultPoP, Hostnames: f.DNS.Hostnames, CNAMEs: f.DNS.CNAMEs,
		NATS: "nats://" + r.local(vm, f.NATS.ClientPort), Creds: CredsDir + "/dns.creds", Prefix: f.Prefix,
		RateLimit: renderedDNSRateLimit,
	}
	if f.DNS.Policy.Policy != "" || f.DNS.Policy.RadiusKm != 0 || len(f.DNS.Policy.Weights) > 0 ||
		f.DNS.Policy.LowWatermark != 0 || f.DNS.Policy.HighWatermark != 0 {
		pol := f.DNS.Policy
		d.Policy = &pol
	}
	if f.Control.HeartbeatTTL > 0 {
		d.HeartbeatTTL = f.Control.HeartbeatTTL.String()
	}
	for _, c := range f.Control.Nodes {
		ns := dnsNS{Name: f.nsName(c), IPv4: []string{c.IPv4}}
		if c.IPv6 != "" {
			ns.IPv6 = []string{c.IPv6}
		}
		d.NS = append(d.NS, ns)
	}
	return r.yaml(vm, "meridian dns config (docs/dns.md)", d)
}

func (r *renderer) controlNode(vm string) ControlNode {
	for _, c := range r.f.Control.Nodes {
		if c.Name == vm {
			return c
		}
	}
	return ControlNode{}
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
