package deploy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// Defaults for zero fields of a Fleet.
const (
	DefaultClientPort      = 4222
	DefaultClusterPort     = 6222
	DefaultLeafPort        = 7422
	DefaultMonitorPort     = 8222
	DefaultAPIPort         = 7070
	DefaultDNSPort         = 53
	DefaultDNSAdminPort    = 9153
	DefaultHTTPPort        = 80
	DefaultEdgeAdminPort   = 9080
	DefaultTokensFile      = "/etc/meridian/tokens.yaml"
	DefaultMMDB            = "/var/lib/meridian/GeoLite2-City.mmdb"
	DefaultDNSTTL          = 30 * time.Second
	DefaultShutdownTimeout = 20 * time.Second
	// StopBudget is the edge unit's TimeoutStopSec; lame duck plus shutdown timeout must fit.
	StopBudget = 90 * time.Second
)

func (f *Fleet) setDefaults() {
	port := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if f.Prefix == "" {
		f.Prefix = wire.DefaultPrefix
	}
	port(&f.NATS.ClientPort, DefaultClientPort)
	port(&f.NATS.ClusterPort, DefaultClusterPort)
	port(&f.NATS.LeafPort, DefaultLeafPort)
	port(&f.NATS.MonitorPort, DefaultMonitorPort)
	port(&f.Control.APIPort, DefaultAPIPort)
	port(&f.DNS.Port, DefaultDNSPort)
	port(&f.DNS.AdminPort, DefaultDNSAdminPort)
	port(&f.Edge.HTTPPort, DefaultHTTPPort)
	port(&f.Edge.AdminPort, DefaultEdgeAdminPort)
	if f.Control.TokensFile == "" {
		f.Control.TokensFile = DefaultTokensFile
	}
	if f.Control.Replicas == 0 {
		f.Control.Replicas = 3
	}
	if f.DNS.MMDB == "" {
		f.DNS.MMDB = DefaultMMDB
	}
	if f.DNS.TTL == 0 {
		f.DNS.TTL = DefaultDNSTTL
	}
	if f.DNS.Zone != "" && !strings.HasSuffix(f.DNS.Zone, ".") {
		f.DNS.Zone += "."
	}
	f.DNS.Zone = strings.ToLower(f.DNS.Zone)
	if f.Edge.LameDuck == 0 {
		f.Edge.LameDuck = f.DNS.TTL + 5*time.Second
	}
	if f.Edge.ShutdownTimeout == 0 {
		f.Edge.ShutdownTimeout = DefaultShutdownTimeout
	}
	for i := range f.Control.Nodes {
		if f.Control.Nodes[i].NS == "" {
			f.Control.Nodes[i].NS = fmt.Sprintf("ns%d", i+1)
		}
	}
}

var (
	labelRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	prefixRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// validate returns one error per mistake, in file order as far as possible.
func (f *Fleet) validate() []*FieldError {
	var errs []*FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if f.Name == "" {
		bad("name", "is required")
	} else if !labelRE.MatchString(f.Name) {
		bad("name", "%q is not one lower-case DNS label", f.Name)
	}
	if !prefixRE.MatchString(f.Prefix) {
		bad("prefix", "%q is not a NATS subject prefix (letters, digits, '-', '_', dots between)", f.Prefix)
	}

	r := f.Release
	switch {
	case r.BinaryURL == "" && r.BinaryPath == "":
		bad("release", "needs binary_url or binary_path (or --binary-url / --binary-path)")
	case r.BinaryURL != "" && r.BinaryPath != "":
		bad("release.binary_path", "give binary_url or binary_path, not both")
	}
	checkURL := func(field, u string) {
		if u == "" {
			return
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "https" || pu.Host == "" {
			bad(field, "%q is not an https URL", u)
		}
	}
	checkURL("release.binary_url", r.BinaryURL)
	checkURL("release.nats_server_url", r.NATSServerURL)
	if r.BinaryPath != "" && !path.IsAbs(r.BinaryPath) {
		bad("release.binary_path", "%q is not an absolute path on the VM", r.BinaryPath)
	}
	for _, s := range []struct{ field, sum, of string }{
		{"release.binary_sha256", r.BinarySHA256, r.BinaryURL},
		{"release.nats_server_sha256", r.NATSServerSHA256, r.NATSServerURL},
	} {
		if s.sum != "" && !sha256RE.MatchString(s.sum) {
			bad(s.field, "is not 64 lower-case hex digits")
		} else if s.sum != "" && s.of == "" {
			bad(s.field, "is set but there is no URL to check")
		} else if s.sum == "" && s.of != "" {
			bad(s.field, "is required with a download URL: cloud-init installs nothing it cannot check")
		}
	}

	ports := []struct {
		field string
		p     int
	}{
		{"nats.client_port", f.NATS.ClientPort}, {"nats.cluster_port", f.NATS.ClusterPort},
		{"nats.leaf_port", f.NATS.LeafPort}, {"nats.monitor_port", f.NATS.MonitorPort},
		{"control.api_port", f.Control.APIPort}, {"dns.port", f.DNS.Port},
		{"dns.admin_port", f.DNS.AdminPort}, {"edge.http_port", f.Edge.HTTPPort},
		{"edge.admin_port", f.Edge.AdminPort},
	}
	// A control VM runs nats, control and dns; an edge VM runs nats and the edge: every port a
	// VM listens on must differ. Comparing all of them is simpler and stricter.
	used := map[int]string{}
	for _, p := range ports {
		if p.p < 1 || p.p > 65535 {
			bad(p.field, "%d is not a port (1-65535)", p.p)
			continue
		}
		if other, ok := used[p.p]; ok {
			bad(p.field, "port %d is also %s", p.p, other)
			continue
		}
		used[p.p] = p.field
	}
	t := f.NATS.TLS
	if !t.enabled() && !f.allLoopback() {
		bad("nats.tls", "is required: routes, leaf links and clients cross the network (only a fleet on loopback addresses may go without)")
	}
	if t.enabled() {
		for _, x := range []struct{ field, file string }{
			{"nats.tls.cert_file", t.CertFile}, {"nats.tls.key_file", t.KeyFile}, {"nats.tls.ca_file", t.CAFile},
		} {
			checkFile(bad, x.field, x.file, true)
		}
	}

	c := f.Control
	checkFile(bad, "control.tokens_file", c.TokensFile, true)
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		bad("control.tls_cert", "and control.tls_key go together: give both or neither")
	case c.TLSCert == "" && !c.InsecureHTTP && !f.allLoopback():
		bad("control.tls_cert", "is required: the API carries bearer tokens across the network (or set control.insecure_http behind a TLS-terminating proxy)")
	case c.TLSCert != "" && c.InsecureHTTP:
		bad("control.insecure_http", "cannot be combined with control.tls_cert")
	}
	if c.TLSCert != "" {
		checkFile(bad, "control.tls_cert", c.TLSCert, true)
		checkFile(bad, "control.tls_key", c.TLSKey, true)
	}
	n := len(c.Nodes)
	switch {
	case n == 0:
		bad("control.nodes", "is required: list the control VMs (three for JetStream R3)")
	case n < 3 || n%2 == 0:
		bad("control.nodes", "has %d VMs, want an odd number of at least three (JetStream needs a quorum)", n)
	}
	nodesOK := n >= 3 && n%2 == 1
	if c.Replicas < 1 || c.Replicas > 5 || (nodesOK && c.Replicas > n) {
		bad("control.replicas", "%d is not between 1 and the number of control VMs (at most 5)", c.Replicas)
	}
	if c.HeartbeatTTL < 0 {
		bad("control.heartbeat_ttl", "is negative")
	}
	vms := map[string]string{}
	vm := func(field, name string) {
		if other, ok := vms[name]; ok {
			bad(field, "VM name %q is also %s", name, other)
		}
		vms[name] = field
	}
	ips := map[string]string{}
	ip := func(field, a string, want6, required bool) {
		if a == "" {
			if required {
				bad(field, "is required")
			}
			return
		}
		p, err := netip.ParseAddr(a)
		switch {
		case err != nil || p.Zone() != "":
			bad(field, "%q is not an IP address", a)
			return
		case want6 && !p.Is6():
			bad(field, "%q is not an IPv6 address", a)
			return
		case !want6 && !p.Is4():
			bad(field, "%q is not an IPv4 address", a)
			return
		}
		if other, ok := ips[a]; ok {
			bad(field, "%s is also %s", a, other)
			return
		}
		ips[a] = field
	}
	nsNames := map[string]bool{}
	for i, cn := range c.Nodes {
		p := fmt.Sprintf("control.nodes[%d]", i)
		if !labelRE.MatchString(cn.Name) {
			bad(p+".name", "%q is not one lower-case DNS label", cn.Name)
		} else {
			vm(p+".name", cn.Name)
		}
		if !regionRE.MatchString(cn.Region) {
			bad(p+".region", "is required (a cloud region such as eu-central-1)")
		}
		ip(p+".ipv4", cn.IPv4, false, true)
		ip(p+".ipv6", cn.IPv6, true, false)
		ip(p+".private_ipv4", cn.PrivateIPv4, false, false)
		ns := f.nsName(cn)
		if nsNames[ns] {
			bad(p+".ns", "%s is also another control VM's name server", ns)
		}
		nsNames[ns] = true
	}

	d := f.DNS
	switch {
	case d.Zone == "":
		bad("dns.zone", "is required (e.g. cdn.example.com.)")
	case !validDomain(d.Zone):
		bad("dns.zone", "%q is not a domain name", d.Zone)
	}
	if d.TTL < 0 {
		bad("dns.ttl", "is negative")
	}
	checkFile(bad, "dns.mmdb", d.MMDB, false)
	for i, h := range d.Hostnames {
		if h != "*" && !validDomain(strings.TrimSuffix(h, ".")+".") {
			bad(fmt.Sprintf("dns.hostnames[%d]", i), "%q is not a domain name", h)
		}
	}
	for from, to := range d.CNAMEs {
		if !validDomain(strings.TrimSuffix(from, ".")+".") || !validDomain(strings.TrimSuffix(to, ".")+".") {
			bad("dns.cnames."+from, "%q -> %q: both must be domain names", from, to)
		}
	}
	if err := d.Policy.Validate(); err != nil {
		var fe *wire.FieldError
		if errors.As(err, &fe) {
			bad("dns.policy."+fe.Field, "%v", fe.Err)
		} else {
			bad("dns.policy", "%v", err)
		}
	}

	e := f.Edge
	if e.CacheBytes < 0 {
		bad("edge.cache_bytes", "is negative")
	}
	if e.LameDuck < 0 {
		bad("edge.lame_duck", "is negative")
	}
	if e.ShutdownTimeout < 0 {
		bad("edge.shutdown_timeout", "is negative")
	}
	if e.LameDuck+e.ShutdownTimeout >= StopBudget {
		bad("edge.lame_duck", "%v plus shutdown_timeout %v must stay under the unit's stop budget %v",
			e.LameDuck, e.ShutdownTimeout, StopBudget)
	}
	if e.LameDuck > 0 && e.LameDuck < d.TTL {
		bad("edge.lame_duck", "%v is shorter than dns.ttl %v: resolvers would still send clients to a stopped edge", e.LameDuck, d.TTL)
	}

	pops := map[string]bool{}
	if len(f.PoPs) == 0 {
		bad("pops", "is required: list at least one PoP")
	}
	for i, p := range f.PoPs {
		pf := fmt.Sprintf("pops[%d]", i)
		// VM names derive from the PoP id: check them only under a good, unique id, so one
		// mistake gives one error.
		idOK := false
		if err := wire.ValidatePoPID(p.ID); err != nil {
			bad(pf+".id", "%v", err)
		} else if pops[p.ID] {
			bad(pf+".id", "%q is listed twice", p.ID)
		} else {
			idOK = true
		}
		pops[p.ID] = true
		if !regionRE.MatchString(p.Region) {
			bad(pf+".region", "is required (a cloud region such as eu-central-1)")
		}
		switch {
		case p.Lat == nil:
			bad(pf+".lat", "is required")
		case *p.Lat < -90 || *p.Lat > 90:
			bad(pf+".lat", "%v is not between -90 and 90", *p.Lat)
		}
		switch {
		case p.Lon == nil:
			bad(pf+".lon", "is required")
		case *p.Lon < -180 || *p.Lon > 180:
			bad(pf+".lon", "%v is not between -180 and 180", *p.Lon)
		}
		if len(p.Nodes) == 0 {
			bad(pf+".nodes", "is required: list at least one edge VM")
		}
		ids := map[string]bool{}
		for j, n := range p.Nodes {
			nf := fmt.Sprintf("%s.nodes[%d]", pf, j)
			switch {
			case !labelRE.MatchString(n.ID):
				bad(nf+".id", "%q is not one lower-case DNS label", n.ID)
			case ids[n.ID]:
				bad(nf+".id", "%q is listed twice in PoP %s", n.ID, p.ID)
			case idOK:
				vm(nf+".id", p.VMName(n))
			}
			ids[n.ID] = true
			ip(nf+".ipv4", n.IPv4, false, true)
			ip(nf+".ipv6", n.IPv6, true, false)
			ip(nf+".private_ipv4", n.PrivateIPv4, false, false)
			if n.Capacity < 0 {
				bad(nf+".capacity", "is negative")
			}
		}
	}
	if d.DefaultPoP != "" && !pops[d.DefaultPoP] {
		bad("dns.default_pop", "%q is not a PoP of this fleet", d.DefaultPoP)
	}
	for pop := range d.Policy.Weights {
		if !pops[pop] {
			bad("dns.policy.weights."+pop, "%q is not a PoP of this fleet", pop)
		}
	}

	hosts := map[string]bool{}
	for i, h := range f.Hosts {
		hf := fmt.Sprintf("hosts[%d]", i)
		if err := h.Validate(); err != nil {
			var fe *wire.FieldError
			if errors.As(err, &fe) {
				bad(hf+"."+fe.Field, "%v", fe.Err)
			} else {
				bad(hf, "%v", err)
			}
			continue
		}
		if hosts[h.Host] {
			bad(hf+".host", "%q is listed twice", h.Host)
		}
		hosts[h.Host] = true
		if h.Shield != "" && !pops[h.Shield] {
			bad(hf+".shield", "%q is not a PoP of this fleet", h.Shield)
		}
	}
	return errs
}

// checkFile checks that a file reference is an absolute path on the VM. Secrets are always file
// references; a value that looks like the secret itself is refused so it never lands in
// cloud-init user data (readable from the instance metadata service).
func checkFile(bad func(string, string, ...any), field, file string, required bool) {
	switch {
	case file == "" && required:
		bad(field, "is required (a path on the VM)")
	case file == "":
	case !path.IsAbs(file) || strings.ContainsAny(file, " \t\n\"'\\$`"):
		bad(field, "%q is not an absolute path on the VM (secrets are file references, never inline)", file)
	}
}

func validDomain(fqdn string) bool {
	if fqdn == "." {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(fqdn, "."), ".") {
		if !labelRE.MatchString(strings.ToLower(l)) && l != "_" {
			return false
		}
	}
	return len(fqdn) <= 254
}

// nsName is the absolute name server name of a control VM.
func (f *Fleet) nsName(c ControlNode) string {
	n := strings.ToLower(c.NS)
	if strings.HasSuffix(n, ".") {
		return n
	}
	return n + "." + f.DNS.Zone
}

// allLoopback says whether every VM of the fleet has a loopback address (a fleet tried on one
// machine), the only case in which NATS may run without TLS.
func (f *Fleet) allLoopback() bool {
	for _, vm := range f.VMs() {
		ip := net.ParseIP(vm.IPv4)
		if ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			if ip := net.ParseIP(n.PrivateIPv4); n.PrivateIPv4 != "" && (ip == nil || !ip.IsLoopback()) {
				return false
			}
		}
	}
	return true
}
