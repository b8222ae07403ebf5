package dnsroute

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/wire"
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
	// AnswerCount is the most addresses in one answer (default 2).
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
	// CacheEntries bounds the answer cache; a full cache is emptied (default 100000).
	CacheEntries int `yaml:"cache_entries"`
	// UDPWorkers is the number of goroutines reading the UDP socket (default GOMAXPROCS).
	UDPWorkers int `yaml:"udp_workers"`

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
	// Burst is the bucket size (default QPS, at least 1).
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

// LoadConfig reads a YAML config file; unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read dns config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses a YAML config; unknown fields are errors.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("parse dns config: %w", err)
	}
	return c, nil
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

// withDefaults validates c and fills in every default.
func (c Config) withDefaults() (Config, error) {
	fe := func(field, format string, args ...any) error {
		return &wire.FieldError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if c.Zone == "" {
		return c, fe("zone", "is required")
	}
	if _, ok := dns.IsDomainName(c.Zone); !ok {
		return c, fe("zone", "%q is not a domain name", c.Zone)
	}
	c.Zone = strings.ToLower(dns.Fqdn(c.Zone))
	abs := func(n string) string {
		n = strings.ToLower(n)
		if dns.IsFqdn(n) {
			return n
		}
		if n == "@" || n == "" {
			return c.Zone
		}
		return n + "." + c.Zone
	}
	if len(c.NS) == 0 {
		return c, fe("ns", "needs at least one name server")
	}
	for i := range c.NS {
		ns := &c.NS[i]
		if _, ok := dns.IsDomainName(ns.Name); !ok || ns.Name == "" {
			return c, fe(fmt.Sprintf("ns[%d].name", i), "%q is not a domain name", ns.Name)
		}
		ns.Name = abs(ns.Name)
		for _, a := range ns.IPv4 {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
				return c, fe(fmt.Sprintf("ns[%d].ipv4", i), "%q is not an IPv4 address", a)
			}
		}
		for _, a := range ns.IPv6 {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is6() {
				return c, fe(fmt.Sprintf("ns[%d].ipv6", i), "%q is not an IPv6 address", a)
			}
		}
		if dns.IsSubDomain(c.Zone, ns.Name) && len(ns.IPv4)+len(ns.IPv6) == 0 {
			return c, fe(fmt.Sprintf("ns[%d]", i), "%s is inside the zone and needs glue addresses", ns.Name)
		}
	}
	if c.SOA.MName == "" {
		c.SOA.MName = c.NS[0].Name
	}
	c.SOA.MName = abs(c.SOA.MName)
	if c.SOA.RName == "" {
		c.SOA.RName = "hostmaster." + c.Zone
	}
	c.SOA.RName = abs(c.SOA.RName)
	def := func(d *time.Duration, v time.Duration, field string) error {
		if *d < 0 {
			return fe(field, "is negative")
		}
		if *d == 0 {
			*d = v
		}
		return nil
	}
	for _, d := range []struct {
		p     *time.Duration
		v     time.Duration
		field string
	}{
		{&c.TTL, 30 * time.Second, "ttl"}, {&c.ZoneTTL, time.Hour, "zone_ttl"},
		{&c.SOA.Refresh, time.Hour, "soa.refresh"}, {&c.SOA.Retry, 10 * time.Minute, "soa.retry"},
		{&c.SOA.Expire, 168 * time.Hour, "soa.expire"}, {&c.SOA.Minimum, time.Minute, "soa.minimum"},
		{&c.HeartbeatTTL, 3 * time.Second, "heartbeat_ttl"},
	} {
		if err := def(d.p, d.v, d.field); err != nil {
			return c, err
		}
	}
	if c.SOA.Serial == 0 {
		c.SOA.Serial = 1
	}
	if c.MMDBReload == 0 {
		c.MMDBReload = 5 * time.Second
	}
	if c.Listen == "" {
		c.Listen = ":53"
	}
	if c.AnswerCount < 0 {
		return c, fe("answer_count", "is negative")
	}
	if c.AnswerCount == 0 {
		c.AnswerCount = 2
	}
	switch c.Rotation {
	case "":
		c.Rotation = "roundrobin"
	case "roundrobin", "weighted":
	default:
		return c, fe("rotation", "%q is not roundrobin or weighted", c.Rotation)
	}
	if c.RateLimit.QPS < 0 || c.RateLimit.Burst < 0 {
		return c, fe("rate_limit", "qps and burst may not be negative")
	}
	if c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = max(c.RateLimit.QPS, 1)
	}
	if c.RateLimit.Slip == 0 {
		c.RateLimit.Slip = 2
	}
	if err := c.Policy.Validate(); err != nil {
		return c, fmt.Errorf("policy.%w", err)
	}
	if len(c.Hostnames) == 0 {
		c.Hostnames = []string{"*"}
	}
	for i, h := range c.Hostnames {
		if h == "*" {
			continue
		}
		if _, ok := dns.IsDomainName(h); !ok {
			return c, fe(fmt.Sprintf("hostnames[%d]", i), "%q is not a domain name", h)
		}
		c.Hostnames[i] = abs(h)
		if !dns.IsSubDomain(c.Zone, c.Hostnames[i]) {
			return c, fe(fmt.Sprintf("hostnames[%d]", i), "%s is outside the zone %s", c.Hostnames[i], c.Zone)
		}
	}
	cn := map[string]string{}
	for from, to := range c.CNAMEs {
		f, t := abs(from), abs(to)
		if !dns.IsSubDomain(c.Zone, f) || f == c.Zone {
			return c, fe("cnames."+from, "must be a name below the zone")
		}
		if _, ok := dns.IsDomainName(t); !ok {
			return c, fe("cnames."+from, "%q is not a domain name", to)
		}
		cn[f] = t
	}
	c.CNAMEs = cn
	seen := map[string]bool{}
	for i, p := range c.PoPs {
		if p.ID == "" || seen[p.ID] {
			return c, fe(fmt.Sprintf("pops[%d].id", i), "%q is empty or repeated", p.ID)
		}
		seen[p.ID] = true
		if p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 {
			return c, fe(fmt.Sprintf("pops[%d]", i), "lat/lon out of range")
		}
		for j, n := range p.Nodes {
			f := fmt.Sprintf("pops[%d].nodes[%d]", i, j)
			if n.ID == "" {
				return c, fe(f+".id", "is required")
			}
			if ip, err := netip.ParseAddr(n.IPv4); n.IPv4 != "" && (err != nil || !ip.Is4()) {
				return c, fe(f+".ipv4", "%q is not an IPv4 address", n.IPv4)
			}
			if ip, err := netip.ParseAddr(n.IPv6); n.IPv6 != "" && (err != nil || !ip.Is6()) {
				return c, fe(f+".ipv6", "%q is not an IPv6 address", n.IPv6)
			}
			if n.Capacity < 0 {
				return c, fe(f+".capacity", "is negative")
			}
		}
	}
	if c.DefaultPoP != "" && c.Fleet == nil && c.NATS == "" && !seen[c.DefaultPoP] {
		return c, fe("default_pop", "%q is not a configured PoP", c.DefaultPoP)
	}
	if c.MaxUDPSize == 0 {
		c.MaxUDPSize = 1232
	}
	if c.MaxUDPSize < 512 || c.MaxUDPSize > 65535 {
		return c, fe("max_udp_size", "%d is not between 512 and 65535", c.MaxUDPSize)
	}
	if c.CacheEntries <= 0 {
		c.CacheEntries = 100000
	}
	if c.Geo == nil && c.MMDB == "" {
		return c, errors.New("mmdb: is required")
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
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
		p.High = 1.0
	}
	if p.Low == 0 {
		p.Low = min(0.8, p.High)
	}
	switch {
	case r.Explore == 0:
		p.Explore = geo.DefaultExplore
	case r.Explore > 0:
		p.Explore = r.Explore
	}
	return p
}
