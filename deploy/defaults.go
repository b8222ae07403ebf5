package deploy

import (
	"fmt"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/internal/idnhost"
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
	DefaultReplicas        = 3
	DefaultTokensFile      = "/etc/meridian/tokens.yaml"
	DefaultMMDB            = "/var/lib/meridian/GeoLite2-City.mmdb"
	DefaultDNSTTL          = 30 * time.Second
	DefaultShutdownTimeout = 20 * time.Second
	// EdgeHeartbeat is how often a rendered edge re-registers (edge.yaml leaves
	// fleet.heartbeat at the edge's default); MinHeartbeatTTL, the shortest
	// control.heartbeat_ttl that outlives two of them.
	EdgeHeartbeat   = time.Second
	MinHeartbeatTTL = 2 * EdgeHeartbeat
	// StopBudget is the edge unit's TimeoutStopSec; lame duck plus shutdown timeout must fit.
	StopBudget = 90 * time.Second
)

// setDefaults fills every zero field that has a default (docs/deploy.md lists them). It runs
// before validate, which then sees the values the fleet will be rendered with.
func (f *Fleet) setDefaults() {
	orDefault(&f.Prefix, wire.DefaultPrefix)
	// Hosts are rendered (edge configs, host configs to PUT) under the names clients send:
	// lower case, Unicode labels as A-labels. One IDNA refuses is left for validate to name.
	f.hostsWritten = make([]string, len(f.Hosts))
	for i := range f.Hosts {
		f.hostsWritten[i] = f.Hosts[i].Host
		if name, err := idnhost.ToASCII(f.Hosts[i].Host); err == nil {
			f.Hosts[i].Host = name
		}
	}
	f.NATS.setDefaults()
	f.Control.setDefaults()
	f.DNS.setDefaults()
	// The lame duck follows the DNS TTL, so DNS must have its defaults first.
	f.Edge.setDefaults(f.DNS.TTL)
}

func (n *NATS) setDefaults() {
	orDefault(&n.ClientPort, DefaultClientPort)
	orDefault(&n.ClusterPort, DefaultClusterPort)
	orDefault(&n.LeafPort, DefaultLeafPort)
	orDefault(&n.MonitorPort, DefaultMonitorPort)
}

func (c *Control) setDefaults() {
	orDefault(&c.APIPort, DefaultAPIPort)
	orDefault(&c.TokensFile, DefaultTokensFile)
	orDefault(&c.Replicas, DefaultReplicas)
	for i := range c.Nodes {
		orDefault(&c.Nodes[i].NS, fmt.Sprintf("ns%d", i+1))
	}
}

func (d *DNS) setDefaults() {
	orDefault(&d.Port, DefaultDNSPort)
	orDefault(&d.AdminPort, DefaultDNSAdminPort)
	orDefault(&d.MMDB, DefaultMMDB)
	orDefault(&d.TTL, DefaultDNSTTL)
	if idnaProblem(d.Zone) != nil {
		return // left as written, for validate to name
	}
	d.Zone = dnsName(d.Zone)
	if d.Zone != "" && !strings.HasSuffix(d.Zone, ".") {
		d.Zone += "."
	}
}

func (e *Edge) setDefaults(dnsTTL time.Duration) {
	orDefault(&e.HTTPPort, DefaultHTTPPort)
	orDefault(&e.AdminPort, DefaultEdgeAdminPort)
	// Resolvers keep handing out a stopping edge's address for up to a TTL.
	orDefault(&e.LameDuck, dnsTTL+5*time.Second)
	orDefault(&e.ShutdownTimeout, DefaultShutdownTimeout)
}

// orDefault sets *v to def when *v is the zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
