// Package wire defines the records that cross between the control plane and the nodes (edges and
// DNS servers): fleet registrations with their load reports, host configuration and routing
// policy, and the NATS names they travel under. It imports only the standard library so that
// every side can share it without pulling in the others.
package wire

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

// NATS names. Every subject and bucket is prefixed by a configurable prefix (default
// DefaultPrefix) so that several fleets can share one NATS cluster.
const (
	DefaultPrefix = "meridian"
	// FleetBucket is the KV bucket holding one key per edge node (see FleetKey).
	FleetBucket = "fleet"
	// ConfigBucket is the KV bucket holding host configs (see HostKey) and the routing policy.
	ConfigBucket = "config"
	// RoutingKey is the key in ConfigBucket that holds the RoutingPolicy.
	RoutingKey = "routing"
	// PurgeStream is the JetStream stream carrying purge commands.
	PurgeStream = "PURGE"
)

// Bucket returns the KV bucket name for prefix p (empty means DefaultPrefix), e.g.
// "meridian_fleet". Bucket names may not contain dots.
func Bucket(p, bucket string) string {
	if p == "" {
		p = DefaultPrefix
	}
	return strings.ReplaceAll(p, ".", "_") + "_" + bucket
}

// FleetKey is the key of one node in the fleet bucket: "<pop>.<node>".
func FleetKey(pop, node string) string { return pop + "." + node }

// HostKey is the key of one hostname's config in the config bucket: "host.<hostname>".
func HostKey(host string) string { return "host." + strings.ToLower(host) }

// MaxPurgeMaxLag is the longest purge.max_lag an edge accepts, and so the longest a
// registration's PurgeMaxLag can hold another process's purge acks: a write on the node's key,
// hostile or buggy, holds them no longer.
const MaxPurgeMaxLag = 10 * time.Minute

// MaxNodeHostsBytes bounds Node.Hosts as JSON (quotes and commas counted): with the ids,
// addresses and load report at their longest, and 256 bytes each of region and city, the
// registration stays within the fleet bucket's value bound (4 KiB; TestRegisteredHosts, edge).
// Region, city and version have no bound of their own: fleet.NewRegistrar refuses a
// registration that could outgrow the bucket's. About 100 names of 16 characters, 7 of the
// longest (253).
const MaxNodeHostsBytes = 2048

// Node is one edge node's registration and its latest load report. It is the value stored
// under FleetKey in the fleet bucket and rewritten on every heartbeat.
type Node struct {
	PoP    string  `json:"pop"`
	ID     string  `json:"id"`
	Region string  `json:"region,omitempty"`
	City   string  `json:"city,omitempty"`
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	// IPv4 and IPv6 are the public addresses that DNS hands to clients.
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
	// HTTPAddr is host:port of the plain HTTP listener; peers fill from it.
	HTTPAddr  string `json:"http_addr,omitempty"`
	HTTPSAddr string `json:"https_addr,omitempty"`
	AdminAddr string `json:"admin_addr,omitempty"`
	// Capacity is the request rate (requests/s) the node is sized for; 0 means unknown.
	Capacity float64 `json:"capacity,omitempty"`
	Version  string  `json:"version,omitempty"`
	// PurgeMaxLag is the process's purge.max_lag: how long it may serve its cache as fresh
	// after it last confirmed that it has every purge. A restart's new process, which acks
	// purges for the node while this one may still serve, holds its acks that long (at most
	// MaxPurgeMaxLag; docs/purge.md, "Restart overlap"). 0 (absent) from a version before it.
	PurgeMaxLag time.Duration `json:"purge_max_lag,omitempty"`
	// Hosts are the names (A-labels, sorted) of the hosts the node serves from its own config
	// file, not from the config bucket: control accepts purges of them as of configured hosts
	// (docs/purge.md). At most MaxNodeHostsBytes of them as JSON; the node leaves out those
	// past it. Absent from a version before it.
	Hosts []string `json:"hosts,omitempty"`
	// Instance is the id of the process that wrote the registration: random, made when the
	// process starts (fleet.Registrar), so that a process knows its own write on the key from
	// another process's of the same node (a restart's overlap), also one whose answer it lost.
	// Empty (absent) from a version before it: such a write is never a process's own.
	Instance string `json:"instance,omitempty"`
	// Draining is true when the node is shutting down or was drained by an operator: it still
	// serves what arrives but must not be handed new clients or used as a peer.
	Draining bool       `json:"draining"`
	Load     LoadReport `json:"load"`
}

// LoadReport is what a node measured over its last heartbeat interval.
type LoadReport struct {
	At                time.Time `json:"at"`
	RequestsPerSec    float64   `json:"requests_per_sec"`
	EgressBytesPerSec float64   `json:"egress_bytes_per_sec"`
	OpenConns         int       `json:"open_conns"`
	// CPU is the process's share of one core over the interval (1.0 = one core busy).
	CPU         float64 `json:"cpu"`
	MemoryBytes uint64  `json:"memory_bytes"`
	HitRatio    float64 `json:"hit_ratio"`
	Healthy     bool    `json:"healthy"`
	// Saturation is how close the node is to its limits by its own measurement: the largest of
	// its CPU use over its cores and its in-flight requests over its limit (docs/dns.md,
	// "Saturation"). 1.0 is full; 0 when the node measures nothing.
	Saturation float64 `json:"saturation,omitempty"`
}

// Utilisation is the node's load as a fraction of what it can take: its request rate over
// Capacity when an operator configured one (the override), else the saturation it measured.
func (n Node) Utilisation() float64 {
	if n.Capacity <= 0 {
		return n.Load.Saturation
	}
	return n.Load.RequestsPerSec / n.Capacity
}

// Usable reports whether the node may be handed new clients or used as a fill peer.
func (n Node) Usable() bool { return n.Load.Healthy && !n.Draining }

// PoP is a point of presence: the nodes that share one location. It is derived from the
// nodes in the fleet bucket (see GroupPoPs), never stored on its own.
type PoP struct {
	ID     string  `json:"id"`
	Region string  `json:"region,omitempty"`
	City   string  `json:"city,omitempty"`
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	Nodes  []Node  `json:"nodes"`
}

// Usable reports whether at least one node of the PoP is usable.
func (p PoP) Usable() bool {
	for _, n := range p.Nodes {
		if n.Usable() {
			return true
		}
	}
	return false
}

// Draining reports whether every node of the PoP is draining.
func (p PoP) Draining() bool {
	for _, n := range p.Nodes {
		if !n.Draining {
			return false
		}
	}
	return len(p.Nodes) > 0
}

// Utilisation is the PoP's load as a fraction of what it can take. When every node has a
// configured capacity it is the summed request rate over the summed capacity; otherwise it is
// the mean of the nodes' Utilisation, so that measured saturation counts where no capacity was
// configured.
func (p PoP) Utilisation() float64 {
	var rps, capacity, sum float64
	all := len(p.Nodes) > 0
	for _, n := range p.Nodes {
		rps += n.Load.RequestsPerSec
		capacity += n.Capacity
		sum += n.Utilisation()
		all = all && n.Capacity > 0
	}
	switch {
	case all:
		return rps / capacity
	case len(p.Nodes) > 0:
		return sum / float64(len(p.Nodes))
	}
	return 0
}

// GroupPoPs groups nodes by PoP, sorted by PoP id and node id. A PoP's location is its
// first node's.
func GroupPoPs(nodes []Node) []PoP {
	byID := map[string]*PoP{}
	for _, n := range nodes {
		p, ok := byID[n.PoP]
		if !ok {
			p = &PoP{ID: n.PoP, Region: n.Region, City: n.City, Lat: n.Lat, Lon: n.Lon}
			byID[n.PoP] = p
		}
		p.Nodes = append(p.Nodes, n)
	}
	out := make([]PoP, 0, len(byID))
	for _, p := range byID {
		sort.Slice(p.Nodes, func(i, j int) bool { return p.Nodes[i].ID < p.Nodes[j].ID })
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// RoutingPolicy tells DNS how to choose a PoP. It is stored under RoutingKey.
type RoutingPolicy struct {
	// Policy is "nearest" (default), "least-loaded", "weighted" or "latency" (lowest RTT
	// measured by real clients, geography where there are no measurements).
	Policy string `json:"policy" yaml:"policy"`
	// Explore is the share of clients with measurements that "latency" (and "nearest" where it
	// uses measurements) sends to the second-best PoP, so that its figure stays fresh: 0 means
	// 0.05, negative means none; at most 0.5.
	Explore float64 `json:"explore,omitempty" yaml:"explore,omitempty"`
	// RadiusKm bounds least-loaded to PoPs within this distance of the nearest (default 1500).
	RadiusKm float64 `json:"radius_km,omitempty" yaml:"radius_km,omitempty"`
	// LoadHysteresis is how far a PoP's utilisation must move from the figure least-loaded
	// compares before that figure follows it, so that two PoPs of close loads do not swap
	// at every heartbeat: 0 means DefaultLoadHysteresis, negative means none; at most 0.5.
	LoadHysteresis float64 `json:"load_hysteresis,omitempty" yaml:"load_hysteresis,omitempty"`
	// LowWatermark and HighWatermark are utilisations between which nearest sheds load to
	// the next PoP in proportion (defaults DefaultLowWatermark, at most the high one, and
	// DefaultHighWatermark).
	LowWatermark  float64 `json:"low_watermark,omitempty" yaml:"low_watermark,omitempty"`
	HighWatermark float64 `json:"high_watermark,omitempty" yaml:"high_watermark,omitempty"`
	// Weights per PoP id for the weighted policy.
	Weights map[string]float64 `json:"weights,omitempty" yaml:"weights,omitempty"`
}

// The watermarks a RoutingPolicy that leaves them 0 has.
const (
	DefaultLowWatermark  = 0.8
	DefaultHighWatermark = 1.0
)

// DefaultLoadHysteresis is the LoadHysteresis of a RoutingPolicy that leaves it 0: one step
// of the 5 % in which DNS compares loads.
const DefaultLoadHysteresis = 0.05

// Validate reports the first problem with the policy, naming the field.
func (r RoutingPolicy) Validate() error {
	switch r.Policy {
	case "", "nearest", "least-loaded", "weighted", "latency":
	default:
		return &FieldError{Field: "policy", Err: fmt.Errorf("%q is not nearest, least-loaded, weighted or latency", r.Policy)}
	}
	// NaN, which a YAML file can write (.nan), passes every comparison of a bound: each
	// number is checked as one that holds only for a number in range.
	if math.IsNaN(r.Explore) {
		return &FieldError{Field: "explore", Err: errors.New("is not a number")}
	}
	if r.Explore > 0.5 {
		return &FieldError{Field: "explore", Err: errors.New("is more than 0.5")}
	}
	if !(r.RadiusKm >= 0) {
		return &FieldError{Field: "radius_km", Err: fmt.Errorf("%g is not a number at least 0", r.RadiusKm)}
	}
	if !(r.LoadHysteresis <= 0.5) { // NaN too: it would hold every figure for good
		return &FieldError{Field: "load_hysteresis", Err: fmt.Errorf("%g is not a number at most 0.5", r.LoadHysteresis)}
	}
	// A NaN low watermark would hold an overloaded PoP's 95 % for good (no fall is ever
	// judged due); a NaN high one would turn shedding off.
	if !(r.LowWatermark >= 0) {
		return &FieldError{Field: "low_watermark", Err: fmt.Errorf("%g is not a number at least 0", r.LowWatermark)}
	}
	if !(r.HighWatermark >= 0) {
		return &FieldError{Field: "high_watermark", Err: fmt.Errorf("%g is not a number at least 0", r.HighWatermark)}
	}
	// Against the high watermark in effect: one left unset is the default, which a low
	// watermark alone must not pass either.
	high, which := r.HighWatermark, ""
	if high == 0 {
		high, which = DefaultHighWatermark, " (the default)"
	}
	if r.LowWatermark > high {
		return &FieldError{Field: "low_watermark", Err: fmt.Errorf("%g is above high_watermark %g%s", r.LowWatermark, high, which)}
	}
	for pop, w := range r.Weights {
		if !(w >= 0) || math.IsInf(w, 1) { // NaN too: a YAML file can write .nan and .inf
			return &FieldError{Field: "weights." + pop, Err: fmt.Errorf("%g is not a finite number at least 0", w)}
		}
	}
	return nil
}

// ValidateNew is Validate and what a policy must meet to be written (control's API): its
// weights name PoPs by valid ids. A weight under any other name can match no PoP, and one
// already stored is held to Validate only.
func (r RoutingPolicy) ValidateNew() error {
	if err := r.Validate(); err != nil {
		return err
	}
	for pop := range r.Weights {
		if err := ValidatePoPID(pop); err != nil {
			return &FieldError{Field: "weights", Err: err}
		}
	}
	return nil
}

// Version is the running binary's module version ("devel" when built from a work tree).
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return "devel"
	}
	return bi.Main.Version
}

// DrainPrefix starts the config-bucket keys that mark a PoP as drained by an operator.
const DrainPrefix = "drain."

// DrainKey is the key in ConfigBucket whose presence marks PoP pop as drained by an operator:
// "drain.<pop>". Its value is a Drain record.
func DrainKey(pop string) string { return DrainPrefix + pop }

// Drain is the value stored under DrainKey: who drained the PoP and when, for operators.
type Drain struct {
	PoP   string    `json:"pop"`
	Since time.Time `json:"since"`
}

// ValidatePoPID checks that id can name a PoP: one lower-case DNS label (it is used in NATS
// keys and in hostnames).
func ValidatePoPID(id string) error {
	if !validLabel(id) {
		return fmt.Errorf("%q is not a valid PoP id (one lower-case DNS label)", id)
	}
	return nil
}

// LoopbackHost reports whether host (a URL or listen address host, without port) names this
// machine only: "localhost" or a loopback address (127.0.0.0/8, ::1, IPv4-mapped forms).
// Processes use it to refuse sending or serving secrets in clear text anywhere else.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
