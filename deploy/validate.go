package deploy

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/wire"
)

var (
	labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// serviceLabelRE is a service label (RFC 8552's underscored names): "_acme-challenge".
	serviceLabelRE = regexp.MustCompile(`^_[a-z0-9]([a-z0-9_-]{0,60}[a-z0-9])?$`)
	prefixRE       = regexp.MustCompile(`^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$`)
	sha256RE       = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// natsReleaseRE finds the version in the name of a nats-server release archive
	// (nats-server-v2.11.4-linux-amd64.tar.gz).
	natsReleaseRE = regexp.MustCompile(`nats-server-v(\d+)\.(\d+)\.(\d+)[^/]*$`)
	regionRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// checker collects a fleet's problems. The fleet-wide uniqueness rules (VM names, addresses,
// PoP ids) span sections, so their indexes live here rather than in one check.
type checker struct {
	f    *Fleet
	errs wire.FieldErrors
	vms  map[string]string     // VM name -> the field that named it first
	ips  map[netip.Addr]string // address -> the field that gave it first
	pops map[string]bool       // PoP ids listed
}

// validate returns one problem per mistake, in file order as far as possible. f has its
// defaults (setDefaults).
func (f *Fleet) validate() wire.FieldErrors {
	c := &checker{f: f, vms: map[string]string{}, ips: map[netip.Addr]string{}, pops: map[string]bool{}}
	c.identity()
	c.release()
	c.ports()
	c.natsTLS()
	c.controlAPI()
	c.controlNodes()
	c.dns()
	c.secretFiles() // after the sections that name files
	c.edge()
	c.popList()
	c.routingPoPs() // after popList: it needs every PoP id
	c.hosts()
	return c.errs
}

func (c *checker) bad(field, format string, args ...any) { c.errs.Add(field, format, args...) }

// nested reports err, a problem a wire type found in its own value, under the field prefix.
func (c *checker) nested(prefix string, err error) {
	var fe *wire.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		c.bad(prefix+"."+fe.Field, "%w", fe.Err)
		return
	}
	c.bad(prefix, "%w", err)
}

func (c *checker) identity() {
	f := c.f
	if f.Name == "" {
		c.bad("name", "is required")
	} else if !labelRE.MatchString(f.Name) {
		c.bad("name", "%q is not one lower-case DNS label", f.Name)
	}
	if !prefixRE.MatchString(f.Prefix) {
		c.bad("prefix", "%q is not a NATS subject prefix (letters, digits, '-', '_', dots between)", f.Prefix)
	}
}

// release checks where the binaries come from: nothing is installed that cloud-init cannot
// check against a checksum.
func (c *checker) release() {
	r := c.f.Release
	switch {
	case r.BinaryURL == "" && r.BinaryPath == "":
		c.bad("release", "needs binary_url or binary_path (or --binary-url / --binary-path)")
	case r.BinaryURL != "" && r.BinaryPath != "":
		c.bad("release.binary_path", "give binary_url or binary_path, not both")
	}
	c.httpsURL("release.binary_url", r.BinaryURL)
	c.httpsURL("release.nats_server_url", r.NATSServerURL)
	if m := natsReleaseRE.FindStringSubmatch(r.NATSServerURL); m != nil && versionLess(m[1:], MinNATSServerVersion) {
		c.bad("release.nats_server_url", "is nats-server %s.%s.%s, which cannot read the rendered nats.conf: it needs %s or later",
			m[1], m[2], m[3], MinNATSServerVersion)
	}
	if r.BinaryPath != "" && !path.IsAbs(r.BinaryPath) {
		c.bad("release.binary_path", "%q is not an absolute path on the VM", r.BinaryPath)
	}
	c.checksum("release.binary_sha256", r.BinarySHA256, r.BinaryURL)
	c.checksum("release.nats_server_sha256", r.NATSServerSHA256, r.NATSServerURL)
}

// versionLess says whether the version of numeric parts v (major, minor, patch) is older than
// floor ("2.10.8").
func versionLess(v []string, floor string) bool {
	m := strings.Split(floor, ".")
	for i := range min(len(v), len(m)) {
		a, _ := strconv.Atoi(v[i])
		b, _ := strconv.Atoi(m[i])
		if a != b {
			return a < b
		}
	}
	return len(v) < len(m)
}

func (c *checker) httpsURL(field, u string) {
	if u == "" {
		return
	}
	if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
		c.bad(field, "%q is not an https URL", u)
	}
}

// checksum checks the SHA-256 in field of the download at url.
func (c *checker) checksum(field, sum, url string) {
	switch {
	case sum != "" && !sha256RE.MatchString(sum):
		c.bad(field, "is not 64 lower-case hex digits")
	case sum != "" && url == "":
		c.bad(field, "is set but there is no URL to check")
	case sum == "" && url != "":
		c.bad(field, "is required with a download URL: cloud-init installs nothing it cannot check")
	}
}

// ports checks every port. A control VM runs nats, control and dns; an edge VM runs nats and
// the edge: every port a VM listens on must differ. Comparing all of them is simpler and
// stricter.
func (c *checker) ports() {
	f := c.f
	used := map[int]string{}
	for _, p := range []struct {
		field string
		port  int
		// privileged: the port's unit may bind below 1024 (CAP_NET_BIND_SERVICE: edge and DNS
		// only; nats-server and control run with no capability at all).
		privileged bool
	}{
		{"nats.client_port", f.NATS.ClientPort, false}, {"nats.cluster_port", f.NATS.ClusterPort, false},
		{"nats.leaf_port", f.NATS.LeafPort, false}, {"nats.monitor_port", f.NATS.MonitorPort, false},
		{"control.api_port", f.Control.APIPort, false}, {"dns.port", f.DNS.Port, true},
		{"dns.admin_port", f.DNS.AdminPort, true}, {"edge.http_port", f.Edge.HTTPPort, true},
		{"edge.admin_port", f.Edge.AdminPort, true},
	} {
		switch other, dup := used[p.port]; {
		case p.port < 1 || p.port > 65535:
			c.bad(p.field, "%d is not a port (1-65535)", p.port)
		case p.port < 1024 && !p.privileged:
			c.bad(p.field, "%d is below 1024, which its unit (no CAP_NET_BIND_SERVICE) cannot bind", p.port)
		case dup:
			c.bad(p.field, "port %d is also %s", p.port, other)
		default:
			used[p.port] = p.field
		}
	}
}

func (c *checker) natsTLS() {
	t := c.f.NATS.TLS
	if !t.enabled() {
		if !c.f.allLoopback() {
			c.bad("nats.tls", "is required: routes, leaf links and clients cross the network (only a fleet on loopback addresses may go without)")
		}
		return
	}
	c.file("nats.tls.cert_file", t.CertFile, true)
	c.file("nats.tls.key_file", t.KeyFile, true)
	c.file("nats.tls.ca_file", t.CAFile, true)
}

// controlAPI checks how the control API is served: tokens, and TLS off loopback.
func (c *checker) controlAPI() {
	ct := c.f.Control
	c.file("control.tokens_file", ct.TokensFile, true)
	switch {
	case (ct.TLSCert == "") != (ct.TLSKey == ""):
		c.bad("control.tls_cert", "and control.tls_key go together: give both or neither")
	case ct.TLSCert == "" && !ct.InsecureHTTP && !c.f.allLoopback():
		c.bad("control.tls_cert", "is required: the API carries bearer tokens across the network (or set control.insecure_http behind a TLS-terminating proxy)")
	case ct.TLSCert != "" && ct.InsecureHTTP:
		c.bad("control.insecure_http", "cannot be combined with control.tls_cert")
	}
	if ct.TLSCert != "" {
		c.file("control.tls_cert", ct.TLSCert, true)
		c.file("control.tls_key", ct.TLSKey, true)
	}
	for i, p := range ct.TrustedProxies {
		// As control parses --trusted-proxies; a comma would split one entry into two there.
		if _, err := netip.ParseAddr(p); err == nil && !strings.Contains(p, "%") {
			continue
		}
		if _, err := netip.ParsePrefix(p); err == nil {
			continue
		}
		c.bad(fmt.Sprintf("control.trusted_proxies[%d]", i), "%q is not an IP address or a CIDR", p)
	}
	switch {
	case ct.HeartbeatTTL < 0:
		c.bad("control.heartbeat_ttl", "is negative")
	case ct.HeartbeatTTL > 0 && ct.HeartbeatTTL < MinHeartbeatTTL:
		// Edges re-register every EdgeHeartbeat: a shorter TTL expires a node's key between two
		// heartbeats, and DNS and purges lose it half the time.
		c.bad("control.heartbeat_ttl", "%v is shorter than two edge heartbeats (%v each): nodes would drop out of the fleet between them (at least %v)",
			ct.HeartbeatTTL, EdgeHeartbeat, MinHeartbeatTTL)
	}
}

// controlNodes checks the control VMs: a JetStream quorum, and each VM's name and addresses.
func (c *checker) controlNodes() {
	ct := c.f.Control
	n := len(ct.Nodes)
	switch {
	case n == 0:
		c.bad("control.nodes", "is required: list the control VMs (three for JetStream R3)")
	case n < 3 || n%2 == 0:
		c.bad("control.nodes", "has %d VMs, want an odd number of at least three (JetStream needs a quorum)", n)
	}
	quorum := n >= 3 && n%2 == 1
	if ct.Replicas < 1 || ct.Replicas > 5 || (quorum && ct.Replicas > n) {
		c.bad("control.replicas", "%d is not between 1 and the number of control VMs (at most 5)", ct.Replicas)
	}
	nsNames := map[string]bool{}
	for i, cn := range ct.Nodes {
		p := fmt.Sprintf("control.nodes[%d]", i)
		if !labelRE.MatchString(cn.Name) {
			c.bad(p+".name", "%q is not one lower-case DNS label", cn.Name)
		} else {
			c.vm(p+".name", cn.Name)
		}
		c.region(p+".region", cn.Region)
		c.ip(p+".ipv4", cn.IPv4, false, true)
		c.ip(p+".ipv6", cn.IPv6, true, false)
		c.ip(p+".private_ipv4", cn.PrivateIPv4, false, false)
		ns := c.f.nsName(cn)
		// The name goes into every DNS server's NS records and the parent zone's delegation:
		// dnsroute takes any name miekg/dns does ("ns 1"), and refuses one over 253 bytes.
		// A name relative to a zone that is refused is not checked: the zone's one problem
		// is the problem.
		switch zone := c.f.DNS.Zone; {
		case idnaProblem(cn.NS) != nil:
			c.bad(p+".ns", "%w", idnaProblem(cn.NS))
		case !strings.HasSuffix(dnsName(cn.NS), ".") && (zone == "" || idnaProblem(zone) != nil || !validDomain(zone)):
		case !validDomain(ns):
			c.bad(p+".ns", "%q is not a domain name", ns)
		case nsNames[ns]:
			c.bad(p+".ns", "%s is also another control VM's name server", ns)
		}
		nsNames[ns] = true
	}
}

// dns checks the zone and its names; the PoPs it names are checked in routingPoPs.
func (c *checker) dns() {
	d := c.f.DNS
	switch {
	case d.Zone == "":
		c.bad("dns.zone", "is required (e.g. cdn.example.com.)")
	case idnaProblem(d.Zone) != nil:
		c.bad("dns.zone", "%w", idnaProblem(d.Zone))
	case !validDomain(d.Zone):
		c.bad("dns.zone", "%q is not a domain name", d.Zone)
	}
	switch {
	case d.TTL < 0:
		c.bad("dns.ttl", "is negative")
	case d.TTL%time.Second != 0:
		// DNS counts TTLs in whole seconds: dnsroute refuses the rendered dns.yaml otherwise.
		c.bad("dns.ttl", "%v is not a whole number of seconds", d.TTL)
	}
	c.file("dns.mmdb", d.MMDB, false)
	// The DNS server reads a name without a final dot relative to the zone, and routes or
	// aliases only names in it (below it, for a CNAME): it refuses a dns.yaml with any other.
	// It holds a name written in Unicode as its A-labels, and checks it in that form
	// (zoneName): a problem found there names the name as written too, as dnsroute's does.
	zoneOK := d.Zone != "" && validDomain(d.Zone)
	for i, h := range d.Hostnames {
		switch {
		case h == "*":
		case idnaProblem(h) != nil:
			c.bad(fmt.Sprintf("dns.hostnames[%d]", i), "%w", idnaProblem(h))
		case !zoneNameOK(h):
			c.bad(fmt.Sprintf("dns.hostnames[%d]", i), "%q is not a domain name", h)
		case zoneOK && !validDomain(zoneName(d.Zone, h)):
			c.bad(fmt.Sprintf("dns.hostnames[%d]", i), "%w", tooLong(h, zoneName(d.Zone, h)))
		case zoneOK && !inZone(d.Zone, zoneName(d.Zone, h)):
			c.bad(fmt.Sprintf("dns.hostnames[%d]", i), "%w", idnhost.Wrap(h, fmt.Errorf("%s is outside the zone %s", zoneName(d.Zone, h), d.Zone)))
		}
	}
	// dnsroute refuses a name with two meanings (RFC 2181 sections 10.1 and 10.3): a CNAME
	// beside a routed hostname or a name server's name, or a routed name server.
	// The errors name both meanings and where each is, so that the operator sees which to drop.
	nsNames, routed := map[string]int{}, map[string]int{} // name -> the first entry with it
	for i, cn := range c.f.Control.Nodes {
		if _, ok := nsNames[c.f.nsName(cn)]; !ok {
			nsNames[c.f.nsName(cn)] = i
		}
	}
	for i, h := range d.Hostnames {
		if name := zoneName(d.Zone, h); h != "*" && idnaProblem(h) == nil {
			if _, ok := routed[name]; !ok {
				routed[name] = i
			}
			if j, ok := nsNames[name]; ok {
				c.bad(fmt.Sprintf("dns.hostnames[%d]", i), "%w", idnhost.Wrap(h,
					fmt.Errorf("%s is both a routed hostname and control.nodes[%d]'s name server name (ns), whose address answers for it", name, j)))
			}
		}
	}
	owners := map[string]string{} // name -> its first spelling in cnames, in sorted order
	for _, from := range slices.Sorted(maps.Keys(d.CNAMEs)) {
		if idnaProblem(from) != nil {
			continue // refused below
		}
		name := zoneName(d.Zone, from)
		// Two CNAMEs for one name (RFC 2181 section 10.1): dnsroute refuses them.
		if first, ok := owners[name]; ok {
			c.bad("dns.cnames."+from, "%w", idnhost.Wrap(from,
				fmt.Errorf("%s is also dns.cnames.%s (to %s); a name has one CNAME at most", name, first, zoneName(d.Zone, d.CNAMEs[first]))))
		} else {
			owners[name] = from
		}
	}
	for from, to := range d.CNAMEs {
		if idnaProblem(from) != nil {
			continue // refused below
		}
		name := zoneName(d.Zone, from)
		var also []string
		if i, ok := routed[name]; ok {
			also = append(also, fmt.Sprintf("a routed hostname (dns.hostnames[%d])", i))
		}
		if i, ok := nsNames[name]; ok {
			also = append(also, fmt.Sprintf("control.nodes[%d]'s name server name (ns)", i))
		}
		if len(also) > 0 {
			c.bad("dns.cnames."+from, "%w", idnhost.Wrap(from,
				fmt.Errorf("%s is both a CNAME (to %s) and %s; a CNAME has no other data beside it", name, zoneName(d.Zone, to), strings.Join(also, " and "))))
		}
	}
	for from, to := range d.CNAMEs {
		switch name := zoneName(d.Zone, from); {
		case idnaProblem(from) != nil:
			c.bad("dns.cnames."+from, "%w", idnaProblem(from))
		case idnaProblem(to) != nil:
			c.bad("dns.cnames."+from, "%w", idnaProblem(to))
		case !aliasNameOK(from) || !aliasNameOK(to):
			c.bad("dns.cnames."+from, "%q -> %q: both must be domain names", from, to)
		case zoneOK && !validName(name, true):
			c.bad("dns.cnames."+from, "%w", tooLong(from, name))
		case zoneOK && !validName(zoneName(d.Zone, to), true):
			c.bad("dns.cnames."+from, "%w", tooLong(to, zoneName(d.Zone, to)))
		case zoneOK && (name == d.Zone || !inZone(d.Zone, name)):
			c.bad("dns.cnames."+from, "%w", idnhost.Wrap(from, fmt.Errorf("%s must be a name below the zone %s", name, d.Zone)))
		}
	}
	// dnsroute refuses a CNAME loop (RFC 1034 section 3.6.2), which no name on it resolves.
	if zoneOK {
		// A name's CNAME is its first entry's, the one a duplicate error names: map order
		// must not pick which entry a loop goes through, nor the entry it is reported on.
		abs := map[string]string{}
		// A name refused above for being outside the zone or its apex is on no loop: dnsroute
		// serves it as no alias, and its one mistake is one error.
		for name, from := range owners {
			if to := d.CNAMEs[from]; aliasNameOK(from) && aliasNameOK(to) && name != d.Zone && inZone(d.Zone, name) &&
				validName(name, true) && validName(zoneName(d.Zone, to), true) { // else refused above
				abs[name] = zoneName(d.Zone, to)
			}
		}
		for _, loop := range wire.CNAMELoops(abs) {
			c.bad("dns.cnames."+owners[loop[0]], "CNAME loop %s: no name on it resolves", strings.Join(loop, " -> "))
		}
	}
	if err := d.Policy.Validate(); err != nil {
		c.nested("dns.policy", err)
	}
}

// edge checks the settings every edge shares; its stop sequence must fit the unit's budget.
func (c *checker) edge() {
	e, ttl := c.f.Edge, c.f.DNS.TTL
	if e.CacheBytes < 0 {
		c.bad("edge.cache_bytes", "is negative")
	}
	if e.LameDuck < 0 {
		c.bad("edge.lame_duck", "is negative")
	}
	if e.ShutdownTimeout < 0 {
		c.bad("edge.shutdown_timeout", "is negative")
	}
	if e.LameDuck+e.ShutdownTimeout >= StopBudget {
		c.bad("edge.lame_duck", "%v plus shutdown_timeout %v must stay under the unit's stop budget %v",
			e.LameDuck, e.ShutdownTimeout, StopBudget)
	}
	if e.LameDuck > 0 && e.LameDuck < ttl {
		c.bad("edge.lame_duck", "%v is shorter than dns.ttl %v: resolvers would still send clients to a stopped edge", e.LameDuck, ttl)
	}
}

func (c *checker) popList() {
	if len(c.f.PoPs) == 0 {
		c.bad("pops", "is required: list at least one PoP")
	}
	for i, p := range c.f.PoPs {
		c.pop(fmt.Sprintf("pops[%d]", i), p)
	}
}

func (c *checker) pop(pf string, p PoP) {
	// VM names derive from the PoP id: check them only under a good, unique id, so one
	// mistake gives one error.
	idOK := false
	if err := wire.ValidatePoPID(p.ID); err != nil {
		c.bad(pf+".id", "%w", err)
	} else if c.pops[p.ID] {
		c.bad(pf+".id", "%q is listed twice", p.ID)
	} else {
		idOK = true
	}
	c.pops[p.ID] = true
	c.region(pf+".region", p.Region)
	c.coordinate(pf+".lat", p.Lat, 90)
	c.coordinate(pf+".lon", p.Lon, 180)
	if len(p.Nodes) == 0 {
		c.bad(pf+".nodes", "is required: list at least one edge VM")
	}
	ids := map[string]bool{}
	for j, n := range p.Nodes {
		nf := fmt.Sprintf("%s.nodes[%d]", pf, j)
		switch {
		case !labelRE.MatchString(n.ID):
			c.bad(nf+".id", "%q is not one lower-case DNS label", n.ID)
		case ids[n.ID]:
			c.bad(nf+".id", "%q is listed twice in PoP %s", n.ID, p.ID)
		case idOK:
			c.vm(nf+".id", p.VMName(n))
		}
		ids[n.ID] = true
		c.ip(nf+".ipv4", n.IPv4, false, true)
		c.ip(nf+".ipv6", n.IPv6, true, false)
		c.ip(nf+".private_ipv4", n.PrivateIPv4, false, false)
		if n.Capacity < 0 {
			c.bad(nf+".capacity", "is negative")
		}
	}
}

func (c *checker) coordinate(field string, v *float64, limit float64) {
	switch {
	case v == nil:
		c.bad(field, "is required")
	case *v < -limit || *v > limit:
		c.bad(field, "%v is not between %v and %v", *v, -limit, limit)
	}
}

// routingPoPs checks that the PoPs the DNS section names exist.
func (c *checker) routingPoPs() {
	d := c.f.DNS
	if d.DefaultPoP != "" && !c.pops[d.DefaultPoP] {
		c.bad("dns.default_pop", "%q is not a PoP of this fleet", d.DefaultPoP)
	}
	for pop := range d.Policy.Weights {
		if !c.pops[pop] {
			c.bad("dns.policy.weights."+pop, "%q is not a PoP of this fleet", pop)
		}
	}
}

func (c *checker) hosts() {
	seen := map[string]bool{}
	for i, h := range c.f.Hosts {
		hf := fmt.Sprintf("hosts[%d]", i)
		if _, err := idnhost.ToASCII(h.Host); err != nil {
			c.bad(hf+".host", "%w", err)
			continue
		}
		written := h.Host // a Fleet built in Go, without setDefaults
		if i < len(c.f.hostsWritten) {
			written = c.f.hostsWritten[i]
		}
		// ValidateNew: the rendered host configs are PUT to control's API, which holds a config
		// written now to every rule; one it refuses must stop the render, not the upload.
		if err := h.ValidateNew(); err != nil {
			var fe *wire.FieldError
			if errors.As(err, &fe) && fe.Field == "host" {
				err = &wire.FieldError{Field: "host", Err: idnhost.Wrap(written, fe.Err)}
			}
			c.nested(hf, err)
			continue
		}
		if seen[h.Host] {
			c.bad(hf+".host", "%s is listed twice", idnhost.Quote(written, h.Host))
		}
		seen[h.Host] = true
		if h.Shield != "" && !c.pops[h.Shield] {
			c.bad(hf+".shield", "%q is not a PoP of this fleet", h.Shield)
		}
		// Every edge's edge.yaml carries the fleet's hosts, and the user data carries edge.yaml:
		// what any process on the VM, and anyone allowed to describe the instance, can read.
		for _, k := range slices.Sorted(maps.Keys(h.RequestHeaders.Set)) {
			if credentialFields[http.CanonicalHeaderKey(k)] {
				c.bad(hf+".request_headers.set."+k, "is a credential, and the fleet's hosts go into every edge's user data and edge.yaml, "+
					"which every process on the VM can read: leave it out here and PUT the host with it through control's API (docs/deploy.md)")
			}
		}
	}
}

// credentialFields are the request fields that carry credentials (RFC 9110 section 11.6.2,
// RFC 6265 section 5.4); Proxy-Authorization is hop-by-hop, refused by ValidateNew.
var credentialFields = map[string]bool{"Authorization": true, "Cookie": true}

func (c *checker) region(field, r string) {
	switch {
	case r == "":
		c.bad(field, "is required (a cloud region such as eu-central-1)")
	case !regionRE.MatchString(r):
		c.bad(field, "%q is not a cloud region (lower-case letters, digits and '-', such as eu-central-1)", r)
	}
}

// vm records a VM name, which must be unique in the fleet: it names the VM's directory in the
// rendered tree.
func (c *checker) vm(field, name string) {
	if other, ok := c.vms[name]; ok {
		c.bad(field, "VM name %q is also %s", name, other)
	}
	c.vms[name] = field
}

// ip checks an address of the wanted family and records it: no two VMs share an address.
func (c *checker) ip(field, a string, want6, required bool) {
	if a == "" {
		if required {
			c.bad(field, "is required")
		}
		return
	}
	p, err := netip.ParseAddr(a)
	switch {
	case err != nil || p.Zone() != "":
		c.bad(field, "%q is not an IP address", a)
	case want6 && (!p.Is6() || p.Is4In6()):
		// An IPv4-mapped address in an AAAA record reaches no one over IPv6.
		c.bad(field, "%q is not an IPv6 address", a)
	case !want6 && !p.Is4():
		c.bad(field, "%q is not an IPv4 address", a)
	case p.IsUnspecified() || p.IsMulticast():
		// DNS would hand it to clients and routes and leaf links would dial it.
		c.bad(field, "%s cannot be a host's address", a)
	case c.ips[p] != "":
		c.bad(field, "%s is also %s", a, c.ips[p])
	default:
		c.ips[p] = field // by value: IPv6 has many spellings of one address
	}
}

// file checks that a file reference is an absolute path on the VM. Secrets are always file
// references; a value that looks like the secret itself is refused so it never lands in
// cloud-init user data (readable from the instance metadata service).
func (c *checker) file(field, file string, required bool) {
	switch {
	case file == "" && required:
		c.bad(field, "is required (a path on the VM)")
	case file == "":
	case !fileRef(file):
		c.bad(field, "%q is not an absolute path on the VM (secrets are file references, never inline)", file)
	}
}

// fileRef says whether file can be a file reference: an absolute path that no config it is
// written into (YAML, control.env, nats.conf, tmpfiles.d) splits or reads otherwise.
func fileRef(file string) bool {
	return path.IsAbs(file) && !strings.ContainsAny(file, " \t\n\"'\\$`") && !strings.ContainsFunc(file, unicode.IsControl)
}

// secretFiles checks the files that the tmpfiles.d config gives to their reader alone: the
// line must name that file and no other, and no other service may need to read it.
func (c *checker) secretFiles() {
	fs := c.f.files()
	for i, s := range fs {
		if !s.secret || !fileRef(s.path) {
			continue // a missing or malformed reference is reported once, where it is checked
		}
		switch {
		case path.Clean(s.path) != s.path:
			// systemd-tmpfiles refuses "invalid path" on such a line.
			c.bad(s.field, "%q is not a clean path (no \".\" or \"..\" parts, no \"//\", no final \"/\"): systemd-tmpfiles would not give it to %s", s.path, s.reader)
		case strings.ContainsAny(s.path, "%*?[{"):
			// In a tmpfiles.d line '%' starts a specifier (%h, %m...), and "*?[{" make a pattern
			// that would give other files to the service too.
			c.bad(s.field, "%q has one of \"%%*?[{\", which systemd-tmpfiles reads as a specifier or a pattern when it gives the file to %s: rename the file", s.path, s.reader)
		}
		for _, o := range fs[:i] {
			if o.path == s.path && o.reader != s.reader {
				c.bad(s.field, "%s is also %s, which %s reads: the file is given to %s alone (mode 0600), so give each service its own copy", s.path, o.field, o.reader, s.reader)
			}
		}
		for _, o := range fs[i+1:] {
			if o.path == s.path && o.reader != s.reader && !o.secret {
				c.bad(o.field, "%s is also %s, which is given to %s alone (mode 0600): give %s its own copy", o.path, s.field, s.reader, o.reader)
			}
		}
	}
}

func validDomain(fqdn string) bool { return validName(fqdn, false) }

// validName says whether fqdn is a domain name of host labels (letters, digits, hyphens),
// or, with service, also of service labels ("_acme-challenge", "_dmarc", "_443._tcp"): an
// alias of one delegates a service's records elsewhere (an ACME DNS-01 challenge to an
// acme-dns server), and dnsroute serves it.
func validName(fqdn string, service bool) bool {
	if fqdn == "." {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(fqdn, "."), ".") {
		l = strings.ToLower(l)
		if !labelRE.MatchString(l) && l != "_" && !(service && serviceLabelRE.MatchString(l)) {
			return false
		}
	}
	return len(fqdn) <= 254
}

// zoneName is n as the DNS server reads it: absolute with a final dot, "@" for the zone
// itself, else relative to zone; in lower case, Unicode labels as their A-labels (dnsName).
func zoneName(zone, n string) string {
	n = dnsName(n)
	switch {
	case strings.HasSuffix(n, "."):
		return n
	case n == "@":
		return zone
	}
	return n + "." + zone
}

// zoneNameOK says whether n, relative or absolute, is a domain name (in its A-labels) or "@",
// which the DNS server reads as the apex (dnsroute routes it when hostnames lists it).
func zoneNameOK(n string) bool {
	return n == "@" || idnaProblem(n) == nil && validDomain(strings.TrimSuffix(dnsName(n), ".")+".")
}

// aliasNameOK is zoneNameOK for a CNAME's name or target, which may hold service labels
// (validName).
func aliasNameOK(n string) bool {
	return n == "@" || idnaProblem(n) == nil && validName(strings.TrimSuffix(dnsName(n), ".")+".", true)
}

// dnsName is a DNS name of the fleet (the zone, a name server's, a hostname or a CNAME's) as
// the DNS server holds it and as it is rendered: its Unicode labels as their A-labels
// ("bücher" -> "xn--bcher-kva"), in lower case (idnhost.ToASCII, as dnsroute converts them).
// One IDNA refuses is only lower-cased: idnaProblem reports it.
func dnsName(n string) string {
	if a, err := idnhost.ToASCII(n); err == nil {
		return a
	}
	return strings.ToLower(n)
}

// idnaProblem is what IDNA finds wrong with a name written in Unicode, naming it as written,
// as dnsroute reports it; nil for a name it converts and for every ASCII name.
func idnaProblem(n string) error {
	_, err := idnhost.ToASCII(n)
	return err
}

// tooLong is the problem with a name written as written, a domain name relative to the zone,
// whose absolute name abs is longer than 255 octets (RFC 1035 section 2.3.4), as dnsroute
// words it: dnsroute holds the name absolute, with its A-labels, and refuses it.
func tooLong(written, abs string) error {
	return fmt.Errorf("%q is longer than 255 octets as the absolute name %s (%d)", written, abs, len(abs)+1)
}

// inZone says whether the absolute name is zone or below it.
func inZone(zone, name string) bool { return name == zone || strings.HasSuffix(name, "."+zone) }

// nsName is the absolute name server name of a control VM.
func (f *Fleet) nsName(c ControlNode) string {
	n := dnsName(c.NS)
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
