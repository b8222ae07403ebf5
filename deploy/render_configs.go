package deploy

import (
	"net"
	"reflect"
	"strconv"

	"github.com/meridian-cdn/meridian/wire"
)

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
	// LatencyRecords follows the latency bucket's size (latencyRecords).
	LatencyRecords int    `yaml:"latency_records"`
	NATS           string `yaml:"nats"`
	Creds          string `yaml:"creds"`
	Prefix         string `yaml:"prefix"`
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
		MMDB: f.DNS.MMDB, DefaultPoP: f.DNS.DefaultPoP,
		NATS: "nats://" + r.local(vm, f.NATS.ClientPort), Creds: CredsDir + "/dns.creds", Prefix: f.Prefix,
		RateLimit: renderedDNSRateLimit, LatencyRecords: latencyRecords(f),
	}
	// Names as the DNS server holds them, A-labels for Unicode ones (validate refused two
	// spellings of one CNAME name, which would collide here).
	for _, h := range f.DNS.Hostnames {
		d.Hostnames = append(d.Hostnames, dnsName(h))
	}
	if len(f.DNS.CNAMEs) > 0 {
		d.CNAMEs = map[string]string{}
		for from, to := range f.DNS.CNAMEs {
			d.CNAMEs[dnsName(from)] = dnsName(to)
		}
	}
	// Any field set renders the policy: one listed by hand missed those added later (explore,
	// load_hysteresis), and DNS ran on its defaults.
	if !reflect.DeepEqual(f.DNS.Policy, wire.RoutingPolicy{}) {
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
