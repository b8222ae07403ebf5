package dnsroute

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/internal/yamlconf"
	"github.com/meridian-cdn/meridian/wire"
)

// defaultListen is Config.Listen's default: every address, the DNS port.
const defaultListen = ":53"

// maxAnswerCount bounds answer_count. gdnsd's weighted plugin stops at 64 addresses a set as
// well. Clients use the first address, or a few to fall back on: 64 AAAA records (about 1.8
// KB) already go over UDP only to EDNS buffers above the default 1232, and with no bound a
// PoP of some 2,300 nodes would make an answer larger than a DNS message can be even over TCP.
const maxAnswerCount = 64

// Defaults of max_tcp_connections and of its bound per client address. RFC 7766 section
// 6.2.2 asks a client for one connection to a server at a time; 32 leaves room for a resolver
// farm behind one address, and takes 32 addresses to fill the 1000 (a tenth of a smaller
// max_tcp_connections takes 10).
const (
	defaultMaxTCPConnections          = 1000
	defaultMaxTCPConnectionsPerSource = 32
)

// Config is a DNS server's configuration: the YAML file (see docs/dns.md) plus the Go-only
// fields at the end. The zero value of every field except Zone, NS and MMDB (or Geo) works.
type Config struct {
	// Zone is the CDN zone the server is authoritative for, e.g. "cdn.example." (required).
	Zone string `yaml:"zone"`
	// NS lists the zone's name servers; names inside the zone need glue addresses (required).
	NS []NameServer `yaml:"ns"`
	// SOA holds the zone's SOA fields; see SOA for defaults.
	SOA SOA `yaml:"soa"`
	// TTL is the TTL of routed answers (default 30s).
	TTL time.Duration `yaml:"ttl"`
	// ZoneTTL is the TTL of the SOA, NS and glue records (default 1h).
	ZoneTTL time.Duration `yaml:"zone_ttl"`
	// Listen is the UDP and TCP address Run serves on (default ":53").
	Listen string `yaml:"listen"`
	// AdminListen, if set, is the address of an HTTP listener serving /metrics (default none).
	AdminListen string `yaml:"admin_listen"`
	// MMDB is the path of a MaxMind City database (required unless Geo is set).
	MMDB string `yaml:"mmdb"`
	// MMDBReload is how often Run checks the MMDB file for changes (default 5s; negative
	// disables reloading).
	MMDBReload time.Duration `yaml:"mmdb_reload"`
	// DefaultPoP is where clients of unknown location go (default: the first PoP by id).
	DefaultPoP string `yaml:"default_pop"`
	// AnswerCount is the most addresses in one answer (default 2, at most maxAnswerCount).
	AnswerCount int `yaml:"answer_count"`
	// Rotation orders a PoP's node addresses: "roundrobin" (default) rotates them per query,
	// "weighted" puts nodes first in proportion to their spare capacity.
	Rotation string `yaml:"rotation"`
	// FailClosed answers SERVFAIL when no PoP is usable; by default (fail open) the nearest
	// PoP is answered anyway.
	FailClosed bool `yaml:"fail_closed"`
	// HeartbeatTTL is how old a node's load report may be before the node is not used
	// (default 3s). A zero report time (static config) counts as fresh.
	HeartbeatTTL time.Duration `yaml:"heartbeat_ttl"`
	// RateLimit limits responses per client prefix; off by default.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Policy is the routing policy (default nearest with watermarks 0.8/1.0, radius 1500 km).
	Policy wire.RoutingPolicy `yaml:"policy"`
	// Hostnames are the routed names, relative to the zone ("www") or absolute
	// ("www.cdn.example."); "*" routes every name under the zone (default ["*"]).
	Hostnames []string `yaml:"hostnames"`
	// CNAMEs maps names in the zone to their CNAME targets (relative or absolute).
	CNAMEs map[string]string `yaml:"cnames"`
	// PoPs is the static fleet, used when Fleet is nil.
	PoPs []PoPConfig `yaml:"pops"`
	// MaxUDPSize caps the EDNS0 buffer size the server answers into (default 1232).
	MaxUDPSize int `yaml:"max_udp_size"`
	// CacheEntries bounds the answer cache, which evicts the least recently used answers
	// (default 100000).
	CacheEntries int `yaml:"cache_entries"`
	// CacheBytes bounds the memory the answer cache holds too, in bytes (default 128 MiB;
	// about 200,000 typical answers): an answer for a long name in a PoP of many nodes holds
	// tens of times a typical one's.
	CacheBytes int64 `yaml:"cache_bytes"`
	// LatencyRecords bounds the latency map: the most records of the latency bucket (one per
	// reporting edge node and client network) the server holds, the most recently measured
	// (default DefaultLatencyRecords, 200,000). Each costs the process about 680 bytes of heap
	// with its node's own PoP, 1,520 with 16 PoPs (docs/dns.md, "Latency map"); `meridian
	// deploy render` sets it from the fleet's edges.
	LatencyRecords int `yaml:"latency_records"`
	// UDPWorkers is the number of goroutines reading the UDP socket (default GOMAXPROCS).
	UDPWorkers int `yaml:"udp_workers"`
	// MaxTCPConnections bounds the TCP connections served at once (default 1000); more wait
	// in the kernel's accept queue until one ends.
	MaxTCPConnections int `yaml:"max_tcp_connections"`
	// MaxTCPConnectionsPerSource bounds the TCP connections of one client address (default
	// a tenth of MaxTCPConnections, at most 32, at least 1), so that one address cannot take
	// every connection and starve the rest; a connection beyond it is refused at accept.
	MaxTCPConnectionsPerSource int `yaml:"max_tcp_connections_per_source"`

	// NATS, if set, is the NATS URL of the fleet: PoPs, nodes, health, load and drains come
	// from the registry (the fleet bucket) and the routing policy from the config bucket, and
	// PoPs in this file are ignored. `meridian dns` then uses RunLive.
	NATS string `yaml:"nats"`
	// Creds is the DNS server's NATS credentials file (mode 0600), from `meridian control creds
	// dns` or `meridian deploy render`: a read-only identity. Empty means none, which only a
	// NATS server without authentication accepts.
	Creds string `yaml:"creds"`
	// Prefix of the fleet's NATS subjects and buckets (default "meridian").
	Prefix string `yaml:"prefix"`
	// Fleet supplies the PoPs, their nodes, health and load (default: a StaticFleet from PoPs).
	Fleet Fleet `yaml:"-"`
	// Geo locates clients (default: opened from MMDB).
	Geo *geo.DB `yaml:"-"`
	// Clock tells the time for heartbeat freshness and rate limits (default: time.Now, read
	// every 5ms by Serve rather than per query).
	Clock func() time.Time `yaml:"-"`
	// Logger receives Run's log lines (default: discarded).
	Logger *slog.Logger `yaml:"-"`
}

// NameServer is one NS record of the zone with its glue.
type NameServer struct {
	Name string   `yaml:"name"`
	IPv4 []string `yaml:"ipv4"`
	IPv6 []string `yaml:"ipv6"`
}

// SOA holds the SOA record fields.
type SOA struct {
	// MName is the primary name server (default: the first NS).
	MName string `yaml:"mname"`
	// RName is the responsible mailbox in DNS form (default "hostmaster.<zone>").
	RName string `yaml:"rname"`
	// Serial is the zone serial (default 1).
	Serial uint32 `yaml:"serial"`
	// Refresh, Retry and Expire default to 1h, 10m and 168h.
	Refresh time.Duration `yaml:"refresh"`
	Retry   time.Duration `yaml:"retry"`
	Expire  time.Duration `yaml:"expire"`
	// Minimum is the negative-caching TTL (default 60s).
	Minimum time.Duration `yaml:"minimum"`
}

// RateLimit configures response rate limiting per client prefix (/24 for IPv4, /56 for IPv6
// of the source address).
type RateLimit struct {
	// QPS is the sustained responses per second per prefix; 0 disables rate limiting.
	QPS float64 `yaml:"qps"`
	// Burst is the bucket size, in whole queries (default QPS, at least 1).
	Burst float64 `yaml:"burst"`
	// Slip answers every Slip-th limited query with an empty truncated reply, so that real
	// clients retry over TCP, and drops the rest (default 2; 1 slips all; negative drops all).
	Slip int `yaml:"slip"`
}

// PoPConfig is one PoP of the static fleet.
type PoPConfig struct {
	ID     string       `yaml:"id"`
	City   string       `yaml:"city"`
	Region string       `yaml:"region"`
	Lat    float64      `yaml:"lat"`
	Lon    float64      `yaml:"lon"`
	Nodes  []NodeConfig `yaml:"nodes"`
}

// NodeConfig is one node of a static PoP.
type NodeConfig struct {
	ID   string `yaml:"id"`
	IPv4 string `yaml:"ipv4"`
	IPv6 string `yaml:"ipv6"`
	// Capacity is the node's request rate capacity (requests/s; 0 means unknown).
	Capacity float64 `yaml:"capacity"`
	// Unhealthy and Draining mark the node out of rotation from the start.
	Unhealthy bool `yaml:"unhealthy"`
	Draining  bool `yaml:"draining"`
}

// LoadConfig reads and validates a YAML config file (see ParseConfigFile).
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read dns config: %w", err)
	}
	return ParseConfigFile(path, b)
}

// ParseConfig is ParseConfigFile without a file name: positions read "line L:C".
func ParseConfig(b []byte) (Config, error) { return ParseConfigFile("", b) }

// ParseConfigFile decodes the YAML config b read from file and validates it. Unknown fields,
// values of the wrong type and bad values are reported together: the error is a
// wire.FieldErrors (errors.As reaches each *wire.FieldError), each problem naming its field
// and its file:line:column, so that an operator fixes the file in one round. The Config is
// returned as written; New fills in the defaults.
func ParseConfigFile(file string, b []byte) (Config, error) {
	var c Config
	doc, probs := yamlconf.Decode(b, &c)
	return c, wire.DocumentErrors(file, probs, doc.Position, c.validate).Err()
}

// Nodes turns the static PoPs into fleet nodes.
func (c Config) Nodes() []wire.Node {
	var out []wire.Node
	for _, p := range c.PoPs {
		for _, n := range p.Nodes {
			out = append(out, wire.Node{
				PoP: p.ID, ID: n.ID, Region: p.Region, City: p.City, Lat: p.Lat, Lon: p.Lon,
				IPv4: n.IPv4, IPv6: n.IPv6, Capacity: n.Capacity, Draining: n.Draining,
				Load: wire.LoadReport{Healthy: !n.Unhealthy},
			})
		}
	}
	return out
}

// prepare validates c and fills in its defaults: what New runs, so that a Config built in Go
// is held to the same rules as one read from a file.
func (c Config) prepare() (Config, error) {
	if err := c.validate().Err(); err != nil {
		return c, err
	}
	return c.withDefaults(), nil
}

// absName makes n (relative to zone, "@" or "" for the apex, or absolute) a lower-case FQDN.
func absName(zone, n string) string {
	n = strings.ToLower(n)
	if dns.IsFqdn(n) {
		return n
	}
	if n == "@" || n == "" {
		return zone
	}
	return n + "." + zone
}

// asciiName is the name n as the server holds and answers it: its Unicode labels as A-labels
// ("bücher" -> "xn--bcher-kva"), in lower case (toASCII), since resolvers ask for the
// A-labels, never for UTF-8. A name IDNA refuses is returned lower-cased; validate reports it.
func asciiName(n string) string {
	if a, err := toASCII(n); err == nil {
		return a
	}
	return strings.ToLower(n)
}

// toASCII is idnhost.ToASCII (UTS #46 Lookup, as edge, control and deploy convert hosts) for a
// DNS name in presentation format, which may hold labels no host name has: "_acme-challenge",
// "*", escapes ("a\.b", "\065"). UTS #46 refuses those (STD3 rules), and would refuse a whole
// name with one of them beside a U-label, though the same name spelt with its A-labels loads.
// Such a label is ASCII already: it is kept as written, in lower case, and the rest is
// converted. Errors name n as written.
func toASCII(n string) (string, error) {
	a, err := idnhost.ToASCII(n)
	if err == nil {
		return a, nil
	}
	labels := splitLabels(n)
	probe := slices.Clone(labels) // n with each such label as "a", for the rules across labels
	kept := false
	for i, l := range labels {
		if l != "" && idnhost.IsASCII(l) && strings.ContainsFunc(l, func(r rune) bool { return !isLDH(r) }) {
			probe[i], kept = "a", true
		}
	}
	if !kept {
		return "", err
	}
	// Each U-label alone first, for an error that names it; then the name without the kept
	// labels, for the rules that look across labels (the bidi rule, RFC 5893).
	out := make([]string, len(labels))
	for i, l := range labels {
		if idnhost.IsASCII(l) {
			out[i] = strings.ToLower(l)
			continue
		}
		if out[i], err = idnhost.ToASCII(l); err != nil {
			return "", fmt.Errorf("%q: %w", n, err)
		}
	}
	if _, err := idnhost.ToASCII(strings.Join(probe, ".")); err != nil {
		return "", fmt.Errorf("%q is not a valid internationalised hostname: %w", n, cmp.Or(errors.Unwrap(err), err))
	}
	return strings.Join(out, "."), nil
}

// splitLabels splits n at its dots but for escaped ones ("a\.b" is one label); a final dot
// leaves a final "".
func splitLabels(n string) []string {
	var labels []string
	start := 0
	for i := 0; i < len(n); i++ {
		switch n[i] {
		case '\\':
			i++ // the escaped byte; "\DDD" has digits only after it
		case '.':
			labels = append(labels, n[start:i])
			start = i + 1
		}
	}
	return append(labels, n[start:])
}

func isLDH(r rune) bool {
	return r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
}

// asciiMailbox is soa.rname converted as asciiName converts a name, but for its first label:
// that is a mailbox's local part ("hostmaster" in hostmaster.cdn.example.), no host label, and
// its A-label would name another mailbox. A local part in Unicode has no DNS form (RFC 6530
// addresses are not IDNA) and is refused; errors name rname as written.
func asciiMailbox(rname string) (string, error) {
	end := len(rname) // the end of the local part: its first unescaped dot, if any
	if idx := dns.Split(rname); len(idx) > 1 {
		end = idx[1] - 1
	} else if dns.IsFqdn(rname) {
		end = len(rname) - 1
	}
	local, domain := rname[:end], rname[end:] // domain holds the dot, if any
	if !idnhost.IsASCII(local) {
		return "", fmt.Errorf("%q: the mailbox %q is not ASCII, and DNS has no form for a Unicode mailbox", rname, local)
	}
	if len(domain) > 1 {
		a, err := toASCII(domain[1:])
		if err != nil {
			return "", fmt.Errorf("%q: %w", rname, err)
		}
		domain = "." + a
	}
	return strings.ToLower(local) + domain, nil
}

// tooLong is the problem with a name written as written, a domain name as ascii (its
// A-labels), that is longer than 255 octets once made absolute in zone (RFC 1035 section
// 2.3.4): checked as written, a relative name passed, but a record holding it is malformed
// and no query can ask for it. dns.IsDomainName is no check of that: it takes up to 257.
// nil when zone is unknown (refused itself).
func tooLong(zone, written, ascii string) error {
	if zone == "" {
		return nil
	}
	abs := absName(zone, ascii)
	if n := wireLen(abs); n > 255 {
		return fmt.Errorf("%q is longer than 255 octets as the absolute name %s (%d)", written, abs, n)
	}
	return nil
}

// wireLen is the length on the wire of the FQDN n in presentation format: a length octet and
// the label's octets ("\DDD" and "\X" are one each) per label, and the root's octet.
func wireLen(n string) int {
	w := 1
	for _, l := range dns.SplitDomainName(n) {
		w++
		for i := 0; i < len(l); i++ {
			if l[i] == '\\' {
				if i+3 < len(l) && isDigits(l[i+1:i+4]) {
					i += 3
				} else {
					i++
				}
			}
			w++
		}
	}
	return w
}

func isDigits(s string) bool { return strings.Trim(s, "0123456789") == "" }

// belowZone says whether the lower-case FQDN n is a name below zone, as the owner of a CNAME
// must be (at the apex it would have the SOA and NS beside it).
func belowZone(zone, n string) bool { return n != zone && dns.IsSubDomain(zone, n) }

// validate reports every problem with c as written (before defaults), each naming its field
// as it is spelt in the YAML file.
func (c Config) validate() wire.FieldErrors {
	var errs wire.FieldErrors
	// Names are checked as the server holds them (asciiName): a name written in Unicode as
	// its A-labels, so that two spellings of one name are one name. A problem found in that
	// form names the name as written too (idnhost.Wrap); one IDNA refuses is a problem of its
	// own, and the name is left out of the checks that follow.
	zone := ""
	if c.Zone == "" {
		errs.Add("zone", "is required")
	} else if a, err := toASCII(c.Zone); err != nil {
		errs.Add("zone", "%w", err)
	} else if _, ok := dns.IsDomainName(a); !ok {
		errs.Add("zone", "%q is not a domain name", c.Zone)
	} else if n := wireLen(dns.Fqdn(a)); n > 255 {
		errs.Add("zone", "%q is longer than 255 octets (%d)", c.Zone, n)
	} else {
		zone = dns.Fqdn(a)
	}
	// absChecked is the name written in field converted (conv: toASCII, or asciiMailbox) and
	// absolute, or false once errs says why the server cannot hold it.
	absChecked := func(field, written string, conv func(string) (string, error)) (string, bool) {
		a, err := conv(written)
		if err == nil {
			if _, ok := dns.IsDomainName(a); !ok {
				err = fmt.Errorf("%q is not a domain name", written)
			} else {
				err = tooLong(zone, written, a)
			}
		}
		if err != nil {
			errs.Add(field, "%w", err)
			return "", false
		}
		return absName(zone, a), true
	}
	if len(c.NS) == 0 {
		errs.Add("ns", "needs at least one name server")
	}
	nsNames := map[string]int{} // name -> the first ns entry with it, inside the zone
	for i, ns := range c.NS {
		f := fmt.Sprintf("ns[%d]", i)
		if ns.Name == "" { // it would read as the apex
			errs.Add(f+".name", "%q is not a domain name", ns.Name)
		} else if name, ok := absChecked(f+".name", ns.Name, toASCII); ok && zone != "" && dns.IsSubDomain(zone, name) {
			if len(ns.IPv4)+len(ns.IPv6) == 0 {
				errs.Add(f, "%w", idnhost.Wrap(ns.Name, fmt.Errorf("%s is inside the zone and needs glue addresses", name)))
			}
			if _, ok := nsNames[name]; !ok {
				nsNames[name] = i
			}
		}
		for _, a := range ns.IPv4 {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
				errs.Add(f+".ipv4", "%q is not an IPv4 address", a)
			}
		}
		for _, a := range ns.IPv6 {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is6() {
				errs.Add(f+".ipv6", "%q is not an IPv6 address", a)
			}
		}
	}
	if c.SOA.MName != "" { // else the first name server's
		absChecked("soa.mname", c.SOA.MName, toASCII)
	}
	if c.SOA.RName != "" { // else hostmaster at the zone
		absChecked("soa.rname", c.SOA.RName, asciiMailbox)
	}
	for _, d := range []struct {
		v     time.Duration
		field string
	}{
		{c.TTL, "ttl"}, {c.ZoneTTL, "zone_ttl"}, {c.SOA.Refresh, "soa.refresh"}, {c.SOA.Retry, "soa.retry"},
		{c.SOA.Expire, "soa.expire"}, {c.SOA.Minimum, "soa.minimum"}, {c.HeartbeatTTL, "heartbeat_ttl"},
	} {
		switch {
		case d.v < 0:
			errs.Add(d.field, "is negative")
		case d.v%time.Second != 0 && d.field != "heartbeat_ttl":
			// DNS counts TTLs and SOA timers in whole seconds: 500ms would go out as 0.
			errs.Add(d.field, "%v is not a whole number of seconds", d.v)
		}
	}
	switch {
	case c.AnswerCount < 0:
		errs.Add("answer_count", "is negative")
	case c.AnswerCount > maxAnswerCount:
		errs.Add("answer_count", "%d is more than %d, the most addresses an answer holds", c.AnswerCount, maxAnswerCount)
	}
	switch c.Rotation {
	case "", "roundrobin", "weighted":
	default:
		errs.Add("rotation", "%q is not roundrobin or weighted", c.Rotation)
	}
	if c.RateLimit.QPS < 0 {
		errs.Add("rate_limit.qps", "is negative")
	}
	if c.RateLimit.Burst < 0 {
		errs.Add("rate_limit.burst", "is negative")
	}
	if err := c.Policy.Validate(); err != nil {
		var fe *wire.FieldError
		if errors.As(err, &fe) {
			errs.Add("policy."+fe.Field, "%w", fe.Err)
		} else {
			errs.Add("policy", "%w", err)
		}
	}
	hosts := make([]string, len(c.Hostnames)) // each name, absolute; "" for "*" or one refused
	for i, h := range c.Hostnames {
		f := fmt.Sprintf("hostnames[%d]", i)
		if h == "*" {
			continue
		}
		name, ok := absChecked(f, h, toASCII)
		if !ok {
			continue
		}
		hosts[i] = name
		if zone != "" && !dns.IsSubDomain(zone, hosts[i]) {
			errs.Add(f, "%w", idnhost.Wrap(h, fmt.Errorf("%s is outside the zone %s", hosts[i], zone)))
		}
	}
	// A name has one meaning: a CNAME has no other data beside it (RFC 2181 section 10.1)
	// and a name server's name is no alias (section 10.3); a name server's addresses are its
	// glue, not routed. The server would answer with one of them and ignore the other.
	// The errors name both meanings and where each is, so that the operator sees which to drop.
	routed := map[string]int{} // name -> the first hostnames entry with it
	for i, n := range hosts {
		if n != "" && zone != "" {
			if _, ok := routed[n]; !ok {
				routed[n] = i
			}
			if j, ok := nsNames[n]; ok {
				errs.Add(fmt.Sprintf("hostnames[%d]", i), "%w", idnhost.Wrap(c.Hostnames[i],
					fmt.Errorf("%s is both a routed hostname and the name of name server ns[%d], whose glue answers for it", n, j)))
			}
		}
	}
	// Each cnames entry's name and target, absolute, for the entries whose name and target
	// are domain names.
	names, targets := map[string]string{}, map[string]string{}
	for from, to := range c.CNAMEs {
		f := "cnames." + from
		if name, ok := absChecked(f, from, toASCII); ok {
			names[from] = name
		}
		if target, ok := absChecked(f, to, toASCII); ok {
			targets[from] = target
		}
	}
	owners := map[string]string{} // name -> its first spelling in cnames, in sorted order
	for _, from := range slices.Sorted(maps.Keys(names)) {
		f := names[from]
		// Two CNAMEs for one name (RFC 2181 section 10.1): Go's map order would pick the answer.
		if first, ok := owners[f]; ok {
			errs.Add("cnames."+from, "%w", idnhost.Wrap(from,
				fmt.Errorf("%s is also cnames.%s (to %s); a name has one CNAME at most", f, first, cmp.Or(targets[first], c.CNAMEs[first]))))
		} else {
			owners[f] = from
		}
	}
	for from, f := range names {
		if zone != "" && !belowZone(zone, f) {
			errs.Add("cnames."+from, "%w", idnhost.Wrap(from, fmt.Errorf("%s must be a name below the zone %s", f, zone)))
		}
		var also []string
		if i, ok := routed[f]; ok {
			also = append(also, fmt.Sprintf("a routed hostname (hostnames[%d])", i))
		}
		if i, ok := nsNames[f]; ok {
			also = append(also, fmt.Sprintf("the name of name server ns[%d]", i))
		}
		if len(also) > 0 {
			errs.Add("cnames."+from, "%w", idnhost.Wrap(from, fmt.Errorf("%s is both a CNAME (to %s) and %s; a CNAME has no other data beside it",
				f, cmp.Or(targets[from], c.CNAMEs[from]), strings.Join(also, " and "))))
		}
	}
	// A CNAME loop is an error (RFC 1034 section 3.6.2): no name on it resolves, and the
	// server would answer each of them with the loop's CNAMEs alone. Refused here, it stops a
	// start or a restart with the names to fix, rather than showing only in queries.
	if zone != "" {
		// A name's CNAME is its first spelling's, the one its duplicate problem names: map
		// order must not pick which entry a loop goes through, nor the line it is shown on.
		// A name refused above for being outside the zone or its apex is served as no alias:
		// it is on no loop, and its one mistake is one problem.
		abs := map[string]string{}
		for f, from := range owners {
			if to, ok := targets[from]; ok && belowZone(zone, f) { // else refused above
				abs[f] = to
			}
		}
		for _, loop := range wire.CNAMELoops(abs) {
			errs.Add("cnames."+owners[loop[0]], "CNAME loop %s: no name on it resolves", strings.Join(loop, " -> "))
		}
	}
	seen := map[string]bool{}
	for i, p := range c.PoPs {
		f := fmt.Sprintf("pops[%d]", i)
		if p.ID == "" || seen[p.ID] {
			errs.Add(f+".id", "%q is empty or repeated", p.ID)
		}
		seen[p.ID] = true
		if p.Lat < -90 || p.Lat > 90 {
			errs.Add(f+".lat", "%g is out of range [-90, 90]", p.Lat)
		}
		if p.Lon < -180 || p.Lon > 180 {
			errs.Add(f+".lon", "%g is out of range [-180, 180]", p.Lon)
		}
		for j, n := range p.Nodes {
			f := fmt.Sprintf("%s.nodes[%d]", f, j)
			if n.ID == "" {
				errs.Add(f+".id", "is required")
			}
			if ip, err := netip.ParseAddr(n.IPv4); n.IPv4 != "" && (err != nil || !ip.Is4()) {
				errs.Add(f+".ipv4", "%q is not an IPv4 address", n.IPv4)
			}
			if ip, err := netip.ParseAddr(n.IPv6); n.IPv6 != "" && (err != nil || !ip.Is6()) {
				errs.Add(f+".ipv6", "%q is not an IPv6 address", n.IPv6)
			}
			if n.Capacity < 0 {
				errs.Add(f+".capacity", "is negative")
			}
		}
	}
	if c.DefaultPoP != "" && c.Fleet == nil && c.NATS == "" && !seen[c.DefaultPoP] {
		errs.Add("default_pop", "%q is not a configured PoP", c.DefaultPoP)
	}
	for _, n := range []struct {
		field string
		v     int64
	}{{"cache_entries", int64(c.CacheEntries)}, {"cache_bytes", c.CacheBytes}, {"latency_records", int64(c.LatencyRecords)}, {"udp_workers", int64(c.UDPWorkers)},
		{"max_tcp_connections", int64(c.MaxTCPConnections)}, {"max_tcp_connections_per_source", int64(c.MaxTCPConnectionsPerSource)}} {
		if n.v < 0 {
			errs.Add(n.field, "is negative")
		}
	}
	// More per source than in all would never apply: the operator meant something else.
	if maxTCP := cmp.Or(c.MaxTCPConnections, defaultMaxTCPConnections); c.MaxTCPConnections >= 0 && c.MaxTCPConnectionsPerSource > maxTCP {
		errs.Add("max_tcp_connections_per_source", "%d is more than max_tcp_connections (%d)", c.MaxTCPConnectionsPerSource, maxTCP)
	}
	for _, a := range []struct{ field, addr string }{{"listen", c.Listen}, {"admin_listen", c.AdminListen}} {
		if a.addr != "" && !wire.ValidHostPort(a.addr) {
			errs.Add(a.field, "%q is not host:port", a.addr)
		}
	}
	// Both have SO_REUSEPORT (for restarts): on one port both would bind and the kernel would
	// split TCP connections between the DNS and the admin server instead of refusing one.
	if listen := cmp.Or(c.Listen, defaultListen); c.AdminListen != "" && wire.SamePort(listen, c.AdminListen) {
		errs.Add("admin_listen", "%q is the same port as listen (%q)", c.AdminListen, listen)
	}
	if c.MaxUDPSize != 0 && (c.MaxUDPSize < 512 || c.MaxUDPSize > 65535) {
		errs.Add("max_udp_size", "%d is not between 512 and 65535", c.MaxUDPSize)
	}
	if c.Geo == nil && c.MMDB == "" {
		errs.Add("mmdb", "is required")
	}
	return errs
}

// withDefaults fills in every default of a valid c and makes its names absolute and lower
// case; it leaves the caller's slices and maps alone.
func (c Config) withDefaults() Config {
	c.Zone = dns.Fqdn(asciiName(c.Zone))
	c.NS = slices.Clone(c.NS)
	for i := range c.NS {
		c.NS[i].Name = absName(c.Zone, asciiName(c.NS[i].Name))
	}
	if c.SOA.MName == "" {
		c.SOA.MName = c.NS[0].Name
	}
	c.SOA.MName = absName(c.Zone, asciiName(c.SOA.MName))
	if c.SOA.RName == "" {
		c.SOA.RName = "hostmaster." + c.Zone
	}
	if a, err := asciiMailbox(c.SOA.RName); err == nil {
		c.SOA.RName = a
	}
	c.SOA.RName = absName(c.Zone, c.SOA.RName)
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{
		{&c.TTL, 30 * time.Second}, {&c.ZoneTTL, time.Hour},
		{&c.SOA.Refresh, time.Hour}, {&c.SOA.Retry, 10 * time.Minute},
		{&c.SOA.Expire, 168 * time.Hour}, {&c.SOA.Minimum, time.Minute},
		{&c.HeartbeatTTL, 3 * time.Second}, {&c.MMDBReload, 5 * time.Second},
	} {
		if *d.p == 0 {
			*d.p = d.v
		}
	}
	if c.SOA.Serial == 0 {
		c.SOA.Serial = 1
	}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.AnswerCount == 0 {
		c.AnswerCount = 2
	}
	if c.Rotation == "" {
		c.Rotation = "roundrobin"
	}
	if c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = max(c.RateLimit.QPS, 1)
	}
	if c.RateLimit.Slip == 0 {
		c.RateLimit.Slip = 2
	}
	if len(c.Hostnames) == 0 {
		c.Hostnames = []string{"*"}
	}
	c.Hostnames = slices.Clone(c.Hostnames)
	for i, h := range c.Hostnames {
		if h != "*" {
			c.Hostnames[i] = absName(c.Zone, asciiName(h))
		}
	}
	cn := make(map[string]string, len(c.CNAMEs))
	for from, to := range c.CNAMEs {
		cn[absName(c.Zone, asciiName(from))] = absName(c.Zone, asciiName(to))
	}
	c.CNAMEs = cn
	if c.MaxUDPSize == 0 {
		c.MaxUDPSize = 1232
	}
	if c.CacheEntries <= 0 {
		c.CacheEntries = 100000
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 128 << 20
	}
	if c.LatencyRecords == 0 {
		c.LatencyRecords = DefaultLatencyRecords
	}
	if c.MaxTCPConnections == 0 {
		c.MaxTCPConnections = defaultMaxTCPConnections
	}
	if c.MaxTCPConnectionsPerSource == 0 {
		c.MaxTCPConnectionsPerSource = min(defaultMaxTCPConnectionsPerSource, max(1, c.MaxTCPConnections/10))
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// loadHysteresis is the policy's load hysteresis with its default filled in.
func loadHysteresis(r wire.RoutingPolicy) float64 {
	switch {
	case r.LoadHysteresis == 0:
		return wire.DefaultLoadHysteresis
	case r.LoadHysteresis > 0:
		return r.LoadHysteresis
	}
	return 0
}

// policy converts the wire policy into the ranking's, filling its defaults.
func rankPolicy(r wire.RoutingPolicy) geo.Policy {
	p := geo.Policy{Name: r.Policy, RadiusKm: r.RadiusKm, Low: r.LowWatermark, High: r.HighWatermark}
	if p.Name == "" {
		p.Name = geo.Nearest
	}
	if p.RadiusKm == 0 {
		p.RadiusKm = 1500
	}
	if p.High == 0 {
		p.High = wire.DefaultHighWatermark
	}
	if p.Low == 0 {
		p.Low = min(wire.DefaultLowWatermark, p.High)
	}
	switch {
	case r.Explore == 0:
		p.Explore = geo.DefaultExplore
	case r.Explore > 0:
		p.Explore = r.Explore
	}
	return p
}
