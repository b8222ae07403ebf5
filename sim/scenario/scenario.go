// Package scenario is the simulator's scenario format: the types a scenario file decodes into,
// their defaults, strict parsing and validation (every mistake reported at once, as
// wire.FieldErrors with file:line:column), the built-in "world" and "small" scenarios, and the
// questions other parts ask of a scenario (the nearest PoPs of a city, the path of a leg, the
// client group of a network). It builds on the WAN model (sim/wan) and nothing else of the
// simulator.
package scenario

import (
	"sort"
	"time"

	"github.com/meridian-cdn/meridian/sim/wan"
)

// Scenario is one simulator run: the fleet, the clients and their workload, the WAN model, the
// timeline of faults and the invariant limits. Zero fields take the defaults stated on each
// field (Parse and Default apply them); docs/sim.md documents the YAML schema.
type Scenario struct {
	// Name labels the report. Default "scenario".
	Name string `yaml:"name"`
	// Seed makes the workload and the event order reproducible. Default 0 (itself a seed).
	Seed uint64 `yaml:"seed"`
	// Duration is how long clients send requests after the warm-up. Default 60s.
	Duration time.Duration `yaml:"duration"`
	// Warmup is how long clients run before recording starts. Default 0 (record from the start).
	Warmup time.Duration `yaml:"warmup"`
	// PoPs is the fleet; at least one is required.
	PoPs []PoPSpec `yaml:"pops"`
	// Origin is where the reference origin is placed. Default Ashburn (us-east).
	Origin OriginSpec `yaml:"origin"`
	// Clients says where requests come from and how fast.
	Clients ClientSpec `yaml:"clients"`
	// Workload says what is requested.
	Workload WorkloadSpec `yaml:"workload"`
	// WAN configures the latency model.
	WAN WANSpec `yaml:"wan"`
	// Events is the fault and traffic timeline, in any order.
	Events []Event `yaml:"events"`
	// Check holds the limits of the --check invariants.
	Check CheckSpec `yaml:"check"`
}

// PoPSpec is one point of presence.
type PoPSpec struct {
	// ID is the PoP's short name (lowercase letters, digits and '-'), e.g. "lhr". Required.
	ID string `yaml:"id"`
	// City is the PoP's city, for the report. Default: the ID.
	City string  `yaml:"city"`
	Lat  float64 `yaml:"lat"`
	Lon  float64 `yaml:"lon"`
	// Region groups PoPs and clients in the report, e.g. "europe". Default "".
	Region string `yaml:"region"`
	// Nodes is the number of edge nodes in the PoP. Default 2.
	Nodes int `yaml:"nodes"`
	// Shield marks the PoP that every other PoP fills through. At most one. Default false.
	Shield bool `yaml:"shield"`
	// CPUBudget is the simulated CPU each node of the PoP has, in cores: every request it
	// serves costs workload.cpu_per_request, and the node's saturation (what DNS sheds on) is
	// its metered CPU over this budget. Default 0: unlimited (saturation counts in-flight
	// requests only).
	CPUBudget float64 `yaml:"cpu_budget"`
}

// OriginSpec places the origin.
type OriginSpec struct {
	// City names the origin's location. With City empty and Lat, Lon zero the origin is in
	// Ashburn, Virginia (us-east).
	City string  `yaml:"city"`
	Lat  float64 `yaml:"lat"`
	Lon  float64 `yaml:"lon"`
}

// City is a place simulated clients live in.
type City struct {
	// Name is the city's name; unique. Required.
	Name string  `yaml:"name"`
	Lat  float64 `yaml:"lat"`
	Lon  float64 `yaml:"lon"`
	// Population (millions) weighs how many requests come from the city. Required, > 0.
	Population float64 `yaml:"population"`
	// Region groups the city in the report, e.g. "asia". Default "".
	Region string `yaml:"region"`
}

// ClientSpec says where requests come from.
type ClientSpec struct {
	// Cities the clients live in. Default: DefaultCities, 44 cities on six continents.
	Cities []City `yaml:"cities"`
	// Concurrency is the number of simulated clients sending at once. Default 64.
	Concurrency int `yaml:"concurrency"`
	// Rate is the target rate in requests/s over all clients; 0 (the default) is a closed loop:
	// each client sends its next request as soon as the last one finished.
	Rate float64 `yaml:"rate"`
	// DNSTTL is the TTL the DNS server answers with and clients honour. Default 30s.
	DNSTTL time.Duration `yaml:"dns_ttl"`
	// RUM makes half of each city's networks measure beacons and report them.
	RUM RUMSpec `yaml:"rum"`
}

// RUMSpec configures real-user measurement by the simulated clients. Every city has
// CityNetworks /24s and each client lives in one of them; with RUM on, clients of the even
// ones (the "rum" group) fetch the beacon of a few PoPs through the WAN model every Every and
// report the RTTs to the PoP they use, while the odd ones (the "geo" group) never do, so one
// run compares latency-aware routing with geography alone.
type RUMSpec struct {
	// Enabled turns the beacons on. Default false.
	Enabled bool `yaml:"enabled"`
	// Candidates is how many PoPs a client measures: the nearest by distance, plus the one it
	// uses. Default 3.
	Candidates int `yaml:"candidates"`
	// Every is how often the clients of one network of one city measure. Default 10s.
	Every time.Duration `yaml:"every"`
}

// WorkloadSpec says what is requested.
type WorkloadSpec struct {
	// Objects is the catalogue size. Default 20000.
	Objects int `yaml:"objects"`
	// ZipfAlpha is the popularity skew: object of rank k is requested in proportion to
	// 1/k^alpha. Default 0.9.
	ZipfAlpha float64 `yaml:"zipf_alpha"`
	// Sizes is the size mix; each object gets one size, drawn by weight. Default DefaultSizes.
	Sizes []SizeClass `yaml:"sizes"`
	// TTL is the freshness lifetime (max-age) the origin sets. Default 60s.
	TTL time.Duration `yaml:"ttl"`
	// SWR is the stale-while-revalidate window the origin sets. Default 0 (none).
	SWR time.Duration `yaml:"swr"`
	// SIE is the stale-if-error window the origin sets. Default 0 (none).
	SIE time.Duration `yaml:"sie"`
	// CPUPerRequest is the simulated CPU a node spends on one request, against its PoP's
	// cpu_budget. Default 1ms.
	CPUPerRequest time.Duration `yaml:"cpu_per_request"`
}

// SizeClass is one entry of the size mix.
type SizeClass struct {
	// Bytes is the body size. Required, > 0.
	Bytes int `yaml:"bytes"`
	// Weight is the share of objects of this size, relative to the other classes. Required, > 0.
	Weight float64 `yaml:"weight"`
}

// WANSpec configures the WAN latency model (see wan.Model).
type WANSpec struct {
	// Enabled turns the model on. Default true.
	Enabled *bool `yaml:"enabled"`
	// KmPerMs is the propagation speed in fiber. Default 200 (km per millisecond).
	KmPerMs float64 `yaml:"km_per_ms"`
	// HopOverheadMs is added to every one-way trip over one leg (client->PoP, PoP->PoP or
	// PoP->origin): routing, queuing and last-mile delay. Default 2.
	HopOverheadMs float64 `yaml:"hop_overhead_ms"`
	// Paths are non-geographic routes: traffic between a client city (or region) and a PoP
	// (or the PoPs of a region) goes through a hub, as South America's often does through
	// Miami. Default none: every leg is a great circle.
	Paths []WANPath `yaml:"paths"`
}

// WANPath routes the client->PoP legs it matches through a hub: the leg's length is the
// distance from the client to Via plus from Via to the PoP.
type WANPath struct {
	// From is a client city name or region. Required.
	From string `yaml:"from"`
	// To is a PoP id or region. Required.
	To string `yaml:"to"`
	// Via is the hub.
	Via Place `yaml:"via"`
}

// Place is a named point.
type Place struct {
	Name string  `yaml:"name"`
	Lat  float64 `yaml:"lat"`
	Lon  float64 `yaml:"lon"`
}

// Model returns the WAN model the spec describes.
func (w WANSpec) Model() wan.Model {
	return wan.Model{KmPerMs: w.KmPerMs, HopOverheadMs: w.HopOverheadMs, Enabled: w.Enabled == nil || *w.Enabled}
}

// Event kinds.
const (
	EventDrain      = "drain"       // PoP reports itself draining: DNS stops sending clients to it
	EventUndrain    = "undrain"     // PoP takes clients again
	EventKill       = "kill"        // PoP's nodes stop; with Duration they restart after it
	EventOriginFail = "origin-fail" // origin answers 503 for Duration
	EventOriginSlow = "origin-slow" // origin adds Delay to every response for Duration
	EventPurgeStorm = "purge-storm" // Count purges of the hottest objects, issued back to back
	EventCutNATS    = "cut-nats"    // PoP loses its NATS connection for Duration, then rejoins
	EventFlashCrowd = "flash-crowd" // Share of all requests go to one new object for Duration
)

// EventKinds lists every event kind, in the order error messages show them.
var EventKinds = []string{EventDrain, EventUndrain, EventKill, EventOriginFail, EventOriginSlow, EventPurgeStorm, EventCutNATS, EventFlashCrowd}

// Event is one entry of the timeline.
type Event struct {
	// At is the time since the end of the warm-up. Required, within the duration.
	At time.Duration `yaml:"at"`
	// Kind is one of EventKinds. Required.
	Kind string `yaml:"kind"`
	// PoP is the target of drain, undrain, kill and cut-nats. Required for those.
	PoP string `yaml:"pop"`
	// Duration is how long origin-fail, origin-slow, cut-nats and flash-crowd last (required
	// for them), and how long a killed PoP stays down (default 0: for the rest of the run).
	Duration time.Duration `yaml:"duration"`
	// Count is the number of purges of a purge-storm. Default 100.
	Count int `yaml:"count"`
	// Delay is what origin-slow adds to each origin response. Required for origin-slow.
	Delay time.Duration `yaml:"delay"`
	// Share is the fraction of requests a flash-crowd sends to its object. Default 0.5.
	Share float64 `yaml:"share"`
	// City, for a flash-crowd, is where the crowd is: its requests all come from that client
	// city, so they load the PoPs near it. Default "": from everywhere, like the rest.
	City string `yaml:"city"`
}

// End is when the event's effect ends (At for instantaneous events and open-ended kills).
func (e Event) End() time.Duration { return e.At + e.Duration }

// CheckSpec holds the limits of the --check invariants.
type CheckSpec struct {
	// Grace is added to the DNS TTL before requests to a drained or killed PoP count as
	// violations. Default 5s.
	Grace time.Duration `yaml:"grace"`
	// MaxOriginPerObject bounds origin requests per distinct object per freshness lifetime
	// when a shield PoP is configured. Default 1.05.
	MaxOriginPerObject float64 `yaml:"max_origin_per_object"`
	// MaxStaleAfterPurge bounds responses that served purged content after the purge was
	// acknowledged. Default 0.
	MaxStaleAfterPurge int `yaml:"max_stale_after_purge"`
	// MaxOutageErrors bounds client errors for already-cached objects during origin-fail.
	// Default 0.
	MaxOutageErrors int `yaml:"max_outage_errors"`
	// MaxMovedP99 bounds the p99 latency of a city's flash crowd requests that DNS moved away
	// from the overloaded PoP (overload_shed). Default 1s.
	MaxMovedP99 time.Duration `yaml:"max_moved_p99"`
	// MinLatencyGain is how much lower the median latency of the rum group must be than the
	// geo group's in regions with non-geographic paths (latency_routing). Default 0.2.
	MinLatencyGain float64 `yaml:"min_latency_gain"`
}

// Defaults that the field comments state.
const (
	defaultName        = "scenario"
	defaultDuration    = 60 * time.Second
	defaultNodes       = 2
	defaultConcurrency = 64
	defaultDNSTTL      = 30 * time.Second
	defaultObjects     = 20000
	defaultZipfAlpha   = 0.9
	defaultTTL         = 60 * time.Second
	defaultKmPerMs     = 200
	defaultHopMs       = 2
	defaultPurgeCount  = 100
	defaultShare       = 0.5
	defaultGrace       = 5 * time.Second
	defaultOriginRatio = 1.05
	defaultCPUPerReq   = time.Millisecond
	defaultCandidates  = 3
	defaultRUMEvery    = 10 * time.Second
	defaultMovedP99    = time.Second
	defaultLatencyGain = 0.2
	// maxScenarioBytes bounds what Parse reads; real scenarios are a few kilobytes.
	maxScenarioBytes = 1 << 20
)

// setDefaults fills every zero field that has a stated default.
func (s *Scenario) setDefaults() {
	if s.Name == "" {
		s.Name = defaultName
	}
	if s.Duration == 0 {
		s.Duration = defaultDuration
	}
	for i := range s.PoPs {
		p := &s.PoPs[i]
		if p.City == "" {
			p.City = p.ID
		}
		if p.Nodes == 0 {
			p.Nodes = defaultNodes
		}
	}
	if s.Origin == (OriginSpec{}) {
		s.Origin = DefaultOrigin
	}
	if s.Clients.Cities == nil {
		s.Clients.Cities = DefaultCities()
	}
	if s.Clients.Concurrency == 0 {
		s.Clients.Concurrency = defaultConcurrency
	}
	if s.Clients.DNSTTL == 0 {
		s.Clients.DNSTTL = defaultDNSTTL
	}
	w := &s.Workload
	if w.Objects == 0 {
		w.Objects = defaultObjects
	}
	if w.ZipfAlpha == 0 {
		w.ZipfAlpha = defaultZipfAlpha
	}
	if w.Sizes == nil {
		w.Sizes = DefaultSizes()
	}
	if w.TTL == 0 {
		w.TTL = defaultTTL
	}
	if s.WAN.Enabled == nil {
		on := true
		s.WAN.Enabled = &on
	}
	if s.WAN.KmPerMs == 0 {
		s.WAN.KmPerMs = defaultKmPerMs
	}
	if s.WAN.HopOverheadMs == 0 {
		s.WAN.HopOverheadMs = defaultHopMs
	}
	for i := range s.Events {
		e := &s.Events[i]
		if e.Kind == EventPurgeStorm && e.Count == 0 {
			e.Count = defaultPurgeCount
		}
		if e.Kind == EventFlashCrowd && e.Share == 0 {
			e.Share = defaultShare
		}
	}
	if s.Check.Grace == 0 {
		s.Check.Grace = defaultGrace
	}
	if s.Check.MaxOriginPerObject == 0 {
		s.Check.MaxOriginPerObject = defaultOriginRatio
	}
	if w.CPUPerRequest == 0 {
		w.CPUPerRequest = defaultCPUPerReq
	}
	if s.Clients.RUM.Candidates == 0 {
		s.Clients.RUM.Candidates = defaultCandidates
	}
	if s.Clients.RUM.Every == 0 {
		s.Clients.RUM.Every = defaultRUMEvery
	}
	if s.Check.MaxMovedP99 == 0 {
		s.Check.MaxMovedP99 = defaultMovedP99
	}
	if s.Check.MinLatencyGain == 0 {
		s.Check.MinLatencyGain = defaultLatencyGain
	}
}

// PoP returns the PoP with the given id.
func (s *Scenario) PoP(id string) (PoPSpec, bool) {
	for _, p := range s.PoPs {
		if p.ID == id {
			return p, true
		}
	}
	return PoPSpec{}, false
}

// Shield returns the shield PoP's id, or "" when there is none.
func (s *Scenario) Shield() string {
	for _, p := range s.PoPs {
		if p.Shield {
			return p.ID
		}
	}
	return ""
}

// SortedEvents returns the events ordered by time; events at the same time keep file order.
func (s *Scenario) SortedEvents() []Event {
	ev := append([]Event(nil), s.Events...)
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].At < ev[j].At })
	return ev
}
