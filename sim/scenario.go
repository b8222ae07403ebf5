package sim

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
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

// WANSpec configures the WAN latency model (see WAN).
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
func (w WANSpec) Model() WAN {
	return WAN{KmPerMs: w.KmPerMs, HopOverheadMs: w.HopOverheadMs, Enabled: w.Enabled == nil || *w.Enabled}
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
	// maxNodes bounds the YAML nodes visited, so alias expansion cannot blow up.
	maxNodes = 200000
)

// DefaultOrigin is Ashburn, Virginia: us-east.
var DefaultOrigin = OriginSpec{City: "Ashburn", Lat: 39.04, Lon: -77.49}

// DefaultSizes is the size mix used when a scenario gives none: mostly small objects, a few
// large ones, like a web page's assets.
func DefaultSizes() []SizeClass {
	return []SizeClass{{Bytes: 1 << 10, Weight: 40}, {Bytes: 8 << 10, Weight: 35}, {Bytes: 64 << 10, Weight: 20}, {Bytes: 512 << 10, Weight: 5}}
}

// DefaultCities returns 44 large cities on six continents with their metropolitan population
// in millions (rounded; enough to weigh traffic).
func DefaultCities() []City {
	return []City{
		{"New York", 40.71, -74.01, 19.5, "north-america"},
		{"Los Angeles", 34.05, -118.24, 12.9, "north-america"},
		{"Chicago", 41.88, -87.63, 9.4, "north-america"},
		{"Toronto", 43.65, -79.38, 6.4, "north-america"},
		{"Mexico City", 19.43, -99.13, 21.8, "north-america"},
		{"Houston", 29.76, -95.37, 7.3, "north-america"},
		{"Miami", 25.76, -80.19, 6.1, "north-america"},
		{"San Francisco", 37.77, -122.42, 4.7, "north-america"},
		{"Atlanta", 33.75, -84.39, 6.2, "north-america"},
		{"Seattle", 47.61, -122.33, 4, "north-america"},
		{"Sao Paulo", -23.55, -46.63, 22.4, "south-america"},
		{"Buenos Aires", -34.6, -58.38, 15.5, "south-america"},
		{"Rio de Janeiro", -22.91, -43.17, 13.6, "south-america"},
		{"Bogota", 4.71, -74.07, 11.3, "south-america"},
		{"Lima", -12.05, -77.04, 11, "south-america"},
		{"Santiago", -33.45, -70.67, 6.9, "south-america"},
		{"London", 51.51, -0.13, 9.6, "europe"},
		{"Paris", 48.86, 2.35, 11.1, "europe"},
		{"Berlin", 52.52, 13.4, 3.6, "europe"},
		{"Madrid", 40.42, -3.7, 6.7, "europe"},
		{"Moscow", 55.76, 37.62, 12.6, "europe"},
		{"Istanbul", 41.01, 28.98, 15.6, "europe"},
		{"Rome", 41.9, 12.5, 4.3, "europe"},
		{"Stockholm", 59.33, 18.07, 1.7, "europe"},
		{"Lagos", 6.52, 3.38, 15.4, "africa"},
		{"Cairo", 30.04, 31.24, 21.8, "africa"},
		{"Johannesburg", -26.2, 28.05, 6.2, "africa"},
		{"Nairobi", -1.29, 36.82, 5.1, "africa"},
		{"Kinshasa", -4.44, 15.27, 16.3, "africa"},
		{"Casablanca", 33.57, -7.59, 3.8, "africa"},
		{"Tokyo", 35.68, 139.69, 37.2, "asia"},
		{"Delhi", 28.7, 77.1, 32.9, "asia"},
		{"Shanghai", 31.23, 121.47, 29.2, "asia"},
		{"Mumbai", 19.08, 72.88, 21.3, "asia"},
		{"Beijing", 39.9, 116.41, 21.8, "asia"},
		{"Dhaka", 23.81, 90.41, 23.2, "asia"},
		{"Jakarta", -6.21, 106.85, 11.2, "asia"},
		{"Manila", 14.6, 120.98, 14.7, "asia"},
		{"Seoul", 37.57, 126.98, 10, "asia"},
		{"Singapore", 1.35, 103.82, 6, "asia"},
		{"Bangkok", 13.76, 100.5, 11, "asia"},
		{"Sydney", -33.87, 151.21, 5.4, "oceania"},
		{"Melbourne", -37.81, 144.96, 5.2, "oceania"},
		{"Auckland", -36.85, 174.76, 1.7, "oceania"},
	}
}

// Default returns the built-in "world" scenario (also in testdata/world.yaml): 12 PoPs on six
// continents with two edges each, the origin in Ashburn behind an Ashburn shield PoP, clients
// in DefaultCities, and a one-minute timeline with a drain, an origin outage, a purge storm, a
// NATS cut and a flash crowd.
func Default() *Scenario {
	s := &Scenario{
		Name:     "world",
		Seed:     1,
		Duration: 60 * time.Second,
		Warmup:   5 * time.Second,
		PoPs: []PoPSpec{
			{ID: "iad", City: "Ashburn", Lat: 39.04, Lon: -77.49, Region: "north-america", Shield: true},
			{ID: "lax", City: "Los Angeles", Lat: 33.94, Lon: -118.41, Region: "north-america"},
			{ID: "gru", City: "Sao Paulo", Lat: -23.43, Lon: -46.47, Region: "south-america"},
			{ID: "bog", City: "Bogota", Lat: 4.7, Lon: -74.15, Region: "south-america"},
			{ID: "lhr", City: "London", Lat: 51.47, Lon: -0.45, Region: "europe"},
			{ID: "fra", City: "Frankfurt", Lat: 50.04, Lon: 8.56, Region: "europe"},
			{ID: "jnb", City: "Johannesburg", Lat: -26.14, Lon: 28.25, Region: "africa"},
			{ID: "los", City: "Lagos", Lat: 6.58, Lon: 3.32, Region: "africa"},
			{ID: "bom", City: "Mumbai", Lat: 19.09, Lon: 72.87, Region: "asia", CPUBudget: 0.08},
			{ID: "sin", City: "Singapore", Lat: 1.36, Lon: 103.99, Region: "asia"},
			{ID: "nrt", City: "Tokyo", Lat: 35.77, Lon: 140.39, Region: "asia"},
			{ID: "syd", City: "Sydney", Lat: -33.95, Lon: 151.18, Region: "oceania"},
		},
		Origin:   DefaultOrigin,
		Clients:  ClientSpec{Concurrency: 64, DNSTTL: 10 * time.Second, RUM: RUMSpec{Enabled: true}},
		Workload: WorkloadSpec{Objects: 20000, ZipfAlpha: 0.9, TTL: 60 * time.Second, SWR: 10 * time.Second, SIE: 5 * time.Minute},
		// South America reaches its own PoPs through Miami: the tromboning region.
		WAN: WANSpec{Paths: []WANPath{
			{From: "south-america", To: "gru", Via: Place{Name: "Miami", Lat: 25.76, Lon: -80.19}},
			{From: "south-america", To: "bog", Via: Place{Name: "Miami", Lat: 25.76, Lon: -80.19}},
		}},
		Events: []Event{
			{At: 8 * time.Second, Kind: EventDrain, PoP: "fra"},
			{At: 15 * time.Second, Kind: EventOriginFail, Duration: 10 * time.Second},
			{At: 26 * time.Second, Kind: EventFlashCrowd, Duration: 30 * time.Second, Share: 0.3, City: "Mumbai"},
			{At: 28 * time.Second, Kind: EventPurgeStorm, Count: 100},
			{At: 34 * time.Second, Kind: EventCutNATS, PoP: "nrt", Duration: 10 * time.Second},
			{At: 40 * time.Second, Kind: EventUndrain, PoP: "fra"},
			{At: 47 * time.Second, Kind: EventFlashCrowd, Duration: 10 * time.Second, Share: 0.3},
		},
	}
	s.setDefaults()
	return s
}

// Small returns a 3-PoP, 15-second scenario (after a 3-second warm-up) with every event kind
// but kill and origin-slow, and clients that report beacons (RUM), for tests.
func Small() *Scenario {
	s := &Scenario{
		Name:     "small",
		Seed:     7,
		Duration: 15 * time.Second,
		Warmup:   3 * time.Second,
		PoPs: []PoPSpec{
			{ID: "iad", City: "Ashburn", Lat: 39.04, Lon: -77.49, Region: "north-america", Shield: true},
			{ID: "lhr", City: "London", Lat: 51.47, Lon: -0.45, Region: "europe"},
			{ID: "sin", City: "Singapore", Lat: 1.36, Lon: 103.99, Region: "asia"},
		},
		Origin: DefaultOrigin,
		Clients: ClientSpec{
			Cities: []City{
				{"New York", 40.71, -74.01, 19.5, "north-america"},
				{"Chicago", 41.88, -87.63, 9.4, "north-america"},
				{"London", 51.51, -0.13, 9.6, "europe"},
				{"Paris", 48.86, 2.35, 11.1, "europe"},
				{"Singapore", 1.35, 103.82, 6, "asia"},
				{"Tokyo", 35.68, 139.69, 37.2, "asia"},
			},
			Concurrency: 32,
			DNSTTL:      2 * time.Second,
			RUM:         RUMSpec{Enabled: true, Every: 3 * time.Second},
		},
		Workload: WorkloadSpec{Objects: 1000, ZipfAlpha: 0.9, TTL: 30 * time.Second, SWR: 5 * time.Second, SIE: time.Minute},
		// The same order as the world scenario's timeline, compressed.
		Events: []Event{
			{At: 2 * time.Second, Kind: EventDrain, PoP: "lhr"},
			{At: 4 * time.Second, Kind: EventOriginFail, Duration: 3 * time.Second},
			{At: 7500 * time.Millisecond, Kind: EventPurgeStorm, Count: 20},
			{At: 9 * time.Second, Kind: EventCutNATS, PoP: "sin", Duration: 3 * time.Second},
			{At: 10 * time.Second, Kind: EventUndrain, PoP: "lhr"},
			{At: 12 * time.Second, Kind: EventFlashCrowd, Duration: 2500 * time.Millisecond, Share: 0.5},
		},
		Check: CheckSpec{Grace: 2 * time.Second},
	}
	s.setDefaults()
	return s
}

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

// Validate checks a scenario built or changed in code (Parse and Load validate already),
// after applying the defaults to its zero fields.
func (s *Scenario) Validate() error {
	p := &parser{file: "scenario", lines: map[string]int{}}
	s.setDefaults()
	p.validate(s)
	return errors.Join(p.errs...)
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

// FieldError is one mistake in a scenario file: where it is and what is wrong.
type FieldError struct {
	File string // file name as given to Load, or "scenario" for Parse
	Line int    // 1-based line in the file; 0 when unknown
	// Field is the path of the offending field, e.g. "events[2].kind"; "" for the whole file.
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and validates a scenario file. Errors name the file, line and field.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return parse(path, data)
}

// Parse validates a scenario in YAML and applies the defaults. Unknown fields are errors; every
// mistake gets its own *FieldError (joined with errors.Join) naming the line and field.
func Parse(data []byte) (*Scenario, error) { return parse("scenario", data) }

// parser collects the errors and the line of every field path while it walks the YAML tree.
type parser struct {
	file    string
	lines   map[string]int
	errs    []error
	visited int
}

func (p *parser) errorf(line int, field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// fieldf reports a mistake at a field path, at the line of the field or its nearest parent.
func (p *parser) fieldf(field, format string, args ...any) {
	p.errorf(p.lineOf(field), field, format, args...)
}

func (p *parser) lineOf(field string) int {
	for f := field; ; {
		if l, ok := p.lines[f]; ok {
			return l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			return p.lines[""]
		}
		f = f[:i]
	}
}

func parse(file string, data []byte) (*Scenario, error) {
	p := &parser{file: file, lines: map[string]int{}}
	if len(data) > maxScenarioBytes {
		p.errorf(0, "", "file is %d bytes, more than the %d a scenario may have", len(data), maxScenarioBytes)
		return nil, errors.Join(p.errs...)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		line, msg := yamlErrorLine(err)
		p.errorf(line, "", "%s", msg)
		return nil, errors.Join(p.errs...)
	}
	if len(doc.Content) == 0 {
		p.errorf(0, "", "empty scenario")
		return nil, errors.Join(p.errs...)
	}
	root := doc.Content[0]
	p.walk(root, reflect.TypeOf(Scenario{}), "")
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	var s Scenario
	if err := root.Decode(&s); err != nil {
		// The walk checked every field and scalar, so this is only reached by YAML the walk
		// does not model; report it with yaml's own line.
		line, msg := yamlErrorLine(err)
		p.errorf(line, "", "%s", msg)
		return nil, errors.Join(p.errs...)
	}
	s.setDefaults()
	p.validate(&s)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return &s, nil
}

var yamlLineRE = regexp.MustCompile(`line (\d+): `)

// yamlErrorLine pulls the first line number out of a yaml error.
func yamlErrorLine(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	m := yamlLineRE.FindStringSubmatchIndex(msg)
	if m == nil {
		return 0, msg
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	return line, strings.TrimSpace(msg[:m[0]] + msg[m[1]:])
}

var durationType = reflect.TypeOf(time.Duration(0))

// walk checks node n against Go type t: unknown or repeated fields, wrong shapes and scalars
// that do not convert, recording the line of every path on the way.
func (p *parser) walk(n *yaml.Node, t reflect.Type, path string) {
	p.visited++
	if p.visited > maxNodes {
		if p.visited == maxNodes+1 {
			p.errorf(n.Line, path, "scenario has more than %d YAML nodes", maxNodes)
		}
		return
	}
	if _, ok := p.lines[path]; !ok {
		p.lines[path] = n.Line
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias != nil {
			p.walk(n.Alias, t, path)
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			p.errorf(n.Line, path, "want a mapping of fields, got %s", describe(n))
			return
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fields[name] = f
			names = append(names, name)
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			if k.Kind != yaml.ScalarNode {
				p.errorf(k.Line, path, "field names must be plain words, got %s", describe(k))
				continue
			}
			if prev, dup := seen[k.Value]; dup {
				p.errorf(k.Line, sub, "repeated (first at line %d)", prev)
				continue
			}
			seen[k.Value] = k.Line
			f, ok := fields[k.Value]
			if !ok {
				p.errorf(k.Line, sub, "unknown field; known fields are %s", strings.Join(names, ", "))
				continue
			}
			p.lines[sub] = k.Line
			p.walk(v, f.Type, sub)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.errorf(n.Line, path, "want a list, got %s", describe(n))
			return
		}
		for i, c := range n.Content {
			p.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			p.errorf(n.Line, path, "want %s, got %s", scalarName(t), describe(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			p.errorf(n.Line, path, "%q is not %s", n.Value, scalarName(t))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func scalarName(t reflect.Type) string {
	if t == durationType {
		return `a duration such as "10s" or "1m30s"`
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "a non-negative whole number"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

var popIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// validate checks the meaning of a decoded scenario with its defaults applied.
func (p *parser) validate(s *Scenario) {
	if s.Duration < 0 {
		p.fieldf("duration", "must be positive, got %v", s.Duration)
	}
	if s.Warmup < 0 {
		p.fieldf("warmup", "must not be negative, got %v", s.Warmup)
	}
	if len(s.PoPs) == 0 {
		p.fieldf("pops", "at least one PoP is required")
	}
	ids := map[string]int{}
	shields := 0
	for i, pop := range s.PoPs {
		f := fmt.Sprintf("pops[%d]", i)
		switch {
		case pop.ID == "":
			p.fieldf(f+".id", "required")
		case !popIDRE.MatchString(pop.ID):
			p.fieldf(f+".id", "%q must be 1-32 lowercase letters, digits or '-'", pop.ID)
		default:
			if j, dup := ids[pop.ID]; dup {
				p.fieldf(f+".id", "%q is already the id of pops[%d]", pop.ID, j)
			}
			ids[pop.ID] = i
		}
		p.checkLatLon(f, pop.Lat, pop.Lon)
		if pop.Nodes < 0 || pop.Nodes > 64 {
			p.fieldf(f+".nodes", "must be between 1 and 64, got %d", pop.Nodes)
		}
		if pop.Shield {
			shields++
			if shields > 1 {
				p.fieldf(f+".shield", "only one PoP may be the shield")
			}
		}
	}
	p.checkLatLon("origin", s.Origin.Lat, s.Origin.Lon)
	c := s.Clients
	if len(c.Cities) == 0 {
		p.fieldf("clients.cities", "at least one city is required (leave the field out for the built-in list)")
	}
	names := map[string]int{}
	for i, city := range c.Cities {
		f := fmt.Sprintf("clients.cities[%d]", i)
		if city.Name == "" {
			p.fieldf(f+".name", "required")
		} else if j, dup := names[city.Name]; dup {
			p.fieldf(f+".name", "%q is already the name of clients.cities[%d]", city.Name, j)
		} else {
			names[city.Name] = i
		}
		p.checkLatLon(f, city.Lat, city.Lon)
		if !(city.Population > 0) || math.IsInf(city.Population, 0) {
			p.fieldf(f+".population", "must be a finite number greater than 0, got %v", city.Population)
		}
	}
	if c.Concurrency < 0 {
		p.fieldf("clients.concurrency", "must not be negative, got %d", c.Concurrency)
	}
	if !(c.Rate >= 0) || math.IsInf(c.Rate, 0) {
		p.fieldf("clients.rate", "must be a finite number, not negative, got %v", c.Rate)
	}
	if c.DNSTTL < 0 {
		p.fieldf("clients.dns_ttl", "must not be negative, got %v", c.DNSTTL)
	}
	w := s.Workload
	if w.Objects < 0 {
		p.fieldf("workload.objects", "must not be negative, got %d", w.Objects)
	}
	if w.Objects > 10_000_000 {
		p.fieldf("workload.objects", "at most 10000000, got %d", w.Objects)
	}
	if !(w.ZipfAlpha >= 0 && w.ZipfAlpha <= 10) {
		p.fieldf("workload.zipf_alpha", "must be between 0 and 10, got %v", w.ZipfAlpha)
	}
	if len(w.Sizes) == 0 {
		p.fieldf("workload.sizes", "at least one size class is required (leave the field out for the default mix)")
	}
	for i, sz := range w.Sizes {
		f := fmt.Sprintf("workload.sizes[%d]", i)
		if sz.Bytes <= 0 {
			p.fieldf(f+".bytes", "must be greater than 0, got %d", sz.Bytes)
		}
		if !(sz.Weight > 0) || math.IsInf(sz.Weight, 0) {
			p.fieldf(f+".weight", "must be a finite number greater than 0, got %v", sz.Weight)
		}
	}
	for name, d := range map[string]time.Duration{"workload.ttl": w.TTL, "workload.swr": w.SWR, "workload.sie": w.SIE} {
		if d < 0 {
			p.fieldf(name, "must not be negative, got %v", d)
		}
	}
	if !(s.WAN.KmPerMs > 0) || math.IsInf(s.WAN.KmPerMs, 0) {
		p.fieldf("wan.km_per_ms", "must be a finite number greater than 0, got %v", s.WAN.KmPerMs)
	}
	if !(s.WAN.HopOverheadMs >= 0 && s.WAN.HopOverheadMs <= 10000) {
		p.fieldf("wan.hop_overhead_ms", "must be between 0 and 10000, got %v", s.WAN.HopOverheadMs)
	}
	for i, e := range s.Events {
		p.validateEvent(s, fmt.Sprintf("events[%d]", i), e, ids)
		if e.City != "" {
			if _, ok := names[e.City]; !ok || e.Kind != EventFlashCrowd {
				p.fieldf(fmt.Sprintf("events[%d].city", i), "%q must be a client city, on a flash-crowd", e.City)
			}
		}
	}
	p.validateMeasured(s, ids, names)
	if s.Check.Grace < 0 {
		p.fieldf("check.grace", "must not be negative, got %v", s.Check.Grace)
	}
	if !(s.Check.MaxOriginPerObject >= 1) {
		p.fieldf("check.max_origin_per_object", "must be at least 1, got %v", s.Check.MaxOriginPerObject)
	}
	if s.Check.MaxStaleAfterPurge < 0 {
		p.fieldf("check.max_stale_after_purge", "must not be negative, got %d", s.Check.MaxStaleAfterPurge)
	}
	if s.Check.MaxOutageErrors < 0 {
		p.fieldf("check.max_outage_errors", "must not be negative, got %d", s.Check.MaxOutageErrors)
	}
	// Errors were collected in walk order except the map loop above; sort them by line so a
	// reader fixes the file top to bottom.
	sort.SliceStable(p.errs, func(i, j int) bool {
		a, b := p.errs[i].(*FieldError), p.errs[j].(*FieldError)
		return a.Line < b.Line
	})
}

func (p *parser) checkLatLon(field string, lat, lon float64) {
	if !(lat >= -90 && lat <= 90) {
		p.fieldf(field+".lat", "must be between -90 and 90, got %v", lat)
	}
	if !(lon >= -180 && lon <= 180) {
		p.fieldf(field+".lon", "must be between -180 and 180, got %v", lon)
	}
}

func (p *parser) validateEvent(s *Scenario, f string, e Event, pops map[string]int) {
	known := false
	for _, k := range EventKinds {
		known = known || e.Kind == k
	}
	if !known {
		if e.Kind == "" {
			p.fieldf(f+".kind", "required: one of %s", strings.Join(EventKinds, ", "))
		} else {
			p.fieldf(f+".kind", "%q is not one of %s", e.Kind, strings.Join(EventKinds, ", "))
		}
		return
	}
	if e.At < 0 || e.At > s.Duration {
		p.fieldf(f+".at", "%v is outside the run (0 to %v)", e.At, s.Duration)
	}
	if e.Duration < 0 {
		p.fieldf(f+".duration", "must not be negative, got %v", e.Duration)
	}
	needsPoP := e.Kind == EventDrain || e.Kind == EventUndrain || e.Kind == EventKill || e.Kind == EventCutNATS
	switch {
	case needsPoP && e.PoP == "":
		p.fieldf(f+".pop", "required for %s", e.Kind)
	case needsPoP:
		if _, ok := pops[e.PoP]; !ok {
			p.fieldf(f+".pop", "%q is not a PoP of this scenario", e.PoP)
		}
	case e.PoP != "":
		p.fieldf(f+".pop", "%s does not take a pop", e.Kind)
	}
	switch e.Kind {
	case EventOriginFail, EventOriginSlow, EventCutNATS, EventFlashCrowd:
		if e.Duration == 0 {
			p.fieldf(f+".duration", "required for %s", e.Kind)
		}
	}
	if e.Kind == EventOriginSlow && e.Delay <= 0 {
		p.fieldf(f+".delay", "required for %s and must be positive", e.Kind)
	}
	if e.Kind != EventOriginSlow && e.Delay != 0 {
		p.fieldf(f+".delay", "only origin-slow takes a delay")
	}
	if e.Kind == EventPurgeStorm && (e.Count < 0 || e.Count > 100000) {
		p.fieldf(f+".count", "must be between 1 and 100000, got %d", e.Count)
	}
	if e.Kind != EventPurgeStorm && e.Count != 0 {
		p.fieldf(f+".count", "only purge-storm takes a count")
	}
	if e.Kind == EventFlashCrowd && !(e.Share > 0 && e.Share <= 1) {
		p.fieldf(f+".share", "must be in (0, 1], got %v", e.Share)
	}
	if e.Kind != EventFlashCrowd && e.Share != 0 {
		p.fieldf(f+".share", "only flash-crowd takes a share")
	}
}
