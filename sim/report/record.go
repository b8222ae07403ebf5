package report

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// Sample is what one client saw for one request.
type Sample struct {
	At     time.Duration // since the start of recording
	City   string        // client city name
	Region string        // client city region
	PoP    string        // PoP that answered ("" if none was reached)
	Node   string        // node that answered
	Status int           // HTTP status (0 if none)
	Hit    bool          // served from the answering node's cache
	// Tier is where the content came from: "edge", "peer", "shield" or "origin".
	Tier         string
	Latency      time.Duration // DNS lookup (when one was needed) to last body byte
	FloorLatency time.Duration // the WAN model's floor for the same request (see wan.Model.Floor)
	Bytes        int           // body bytes received
	Err          string        // error kind, e.g. "dns", "connect", "timeout", "5xx"; "" if ok
	Object       int           // object id: its index in the catalogue, from 0 (the most popular)
	// Stale marks a response that carried content a purge had removed, after that purge was
	// acknowledged by the answering PoP.
	Stale bool
	// Group is the client's group, "rum" or "geo" ("" without RUM; see scenario.RUMSpec).
	Group string
	// Tromboning marks a city that some WAN path routes through a hub.
	Tromboning bool
	// Crowd marks a request of a flash crowd from its city, while the crowd lasts; Flash any
	// flash crowd request.
	Crowd, Flash bool
}

// PurgeResult is one purge's propagation through the fleet.
type PurgeResult struct {
	ID       string        `json:"id"`
	IssuedAt time.Duration `json:"issued_at_ns"`
	// AckMs is, per PoP, milliseconds from issue until the PoP's last node acknowledged.
	AckMs map[string]float64 `json:"ack_ms"`
	// FloorMs is, per PoP, the WAN model's floor for the same trip: with acks timed where the
	// purge was issued, wan.Model.RTT of the distance from there to the PoP.
	FloorMs map[string]float64 `json:"floor_ms"`
	// Complete is true when every live node acknowledged.
	Complete bool `json:"complete"`
}

// ErrorSample is one failed request, kept for the outage invariant.
type ErrorSample struct {
	At     time.Duration `json:"at_ns"`
	Object int           `json:"object"`
	Kind   string        `json:"kind"`
}

// EventMark is one timeline event as it happened.
type EventMark struct {
	At   time.Duration `json:"at_ns"`
	Name string        `json:"name"`
}

// RecorderConfig bounds a Recorder's memory. Its zero value works.
type RecorderConfig struct {
	// Bucket is the width of the routing time windows. Default 5s.
	Bucket time.Duration
	// Objects is how many object ids (0..Objects-1) are tracked one by one for the invariants;
	// samples of other ids are counted but not tracked. Default 20064 (the default catalogue
	// plus room for flash-crowd objects).
	Objects int
	// TTL is the freshness lifetime, the window of the origin-per-object invariant. Default 60s.
	TTL time.Duration
	// MaxSeconds bounds the per-second series; later samples count in the last second.
	// Default 3600.
	MaxSeconds int
	// MaxErrors bounds the error samples kept for the outage invariant. Default 100000.
	MaxErrors int
	// MaxPurges bounds the purge results kept. Default 100000.
	MaxPurges int
	// MaxKeys bounds the distinct cities, PoPs, regions, tiers and error kinds tracked; the
	// rest are counted as "other". Default 1024.
	MaxKeys int
}

// Recorder aggregates samples from many clients at once in bounded memory: per-second series,
// latency histograms, routing counts and what the invariants need.
type Recorder struct {
	cfg RecorderConfig

	mu        sync.Mutex // guards everything below
	series    []second
	requests  int64
	hits      int64
	bytes     int64
	stale     int64
	origin    int64
	errors    map[string]int64
	tiers     map[string]int64
	latency   *histogram
	floor     *histogram
	regions   map[string]*regionHist
	routing   map[routeKey]int64
	popSecs   map[string][]int64
	firstOK   []time.Duration
	purgedAt  map[int]time.Duration // object id -> when it was last purged (ForgetServed)
	errSample []ErrorSample
	originWin []originWindow
	events    []EventMark
	purges    []PurgeResult
	keys      map[string]struct{} // distinct key strings admitted, for MaxKeys

	// served is, per answering node ("pop/node") and object id, when the node's first
	// successful answer for it arrived (unserved when none): what tells a repeat request
	// (Report.RepeatRequests), of which repeatHits were hits.
	served     map[string][]time.Duration
	repeats    int64
	repeatHits int64

	ms measureRec // load, shedding and latency by client group (measured.go); own lock
}

type second struct {
	Requests, Hits, Errors, Origin, Stale int64
}

type regionHist struct{ latency, floor *histogram }

type routeKey struct {
	city, pop string
	window    int
}

// originWindow counts origin fetches and distinct objects fetched within one freshness
// lifetime.
type originWindow struct {
	fetches, distinct int64
	seen              []uint64 // bitset over object ids (their first version)
	// bumped holds the (id, version) pairs of later versions fetched (RecordOriginFetchVersion).
	bumped map[[2]int]struct{}
}

const otherKey = "other"

// NewRecorder returns an empty recorder.
func NewRecorder(cfg RecorderConfig) *Recorder {
	if cfg.Bucket <= 0 {
		cfg.Bucket = 5 * time.Second
	}
	if cfg.Objects <= 0 {
		cfg.Objects = 20000 + 64
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 60 * time.Second
	}
	if cfg.MaxSeconds <= 0 {
		cfg.MaxSeconds = 3600
	}
	if cfg.MaxErrors <= 0 {
		cfg.MaxErrors = 100000
	}
	if cfg.MaxPurges <= 0 {
		cfg.MaxPurges = 100000
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 1024
	}
	r := &Recorder{
		cfg:      cfg,
		errors:   map[string]int64{},
		tiers:    map[string]int64{},
		latency:  newHistogram(),
		floor:    newHistogram(),
		regions:  map[string]*regionHist{},
		routing:  map[routeKey]int64{},
		popSecs:  map[string][]int64{},
		firstOK:  make([]time.Duration, cfg.Objects),
		purgedAt: map[int]time.Duration{},
		served:   map[string][]time.Duration{},
		keys:     map[string]struct{}{},
	}
	for i := range r.firstOK {
		r.firstOK[i] = -1
	}
	return r
}

// ConfigFor sizes a recorder for scenario s.
func ConfigFor(s *scenario.Scenario) RecorderConfig {
	flashes := 0
	for _, e := range s.Events {
		if e.Kind == scenario.EventFlashCrowd {
			flashes++
		}
	}
	return RecorderConfig{
		Objects:    s.Workload.Objects + flashes,
		TTL:        s.Workload.TTL,
		MaxSeconds: int((s.Warmup+s.Duration)/time.Second) + 60,
	}
}

// keyLocked admits a key string within MaxKeys, else returns otherKey.
func (r *Recorder) keyLocked(k string) string {
	if _, ok := r.keys[k]; ok {
		return k
	}
	if len(r.keys) >= r.cfg.MaxKeys {
		return otherKey
	}
	r.keys[k] = struct{}{}
	return k
}

func (r *Recorder) secondLocked(at time.Duration) *second {
	i := r.secIndex(at)
	for len(r.series) <= i {
		r.series = append(r.series, second{})
	}
	return &r.series[i]
}

func (r *Recorder) secIndex(at time.Duration) int {
	return min(max(int(at/time.Second), 0), r.cfg.MaxSeconds-1)
}

// Record adds one sample. It is safe for concurrent use.
func (r *Recorder) Record(s Sample) {
	r.ms.record(s)
	r.mu.Lock()
	defer r.mu.Unlock()
	sec := r.secondLocked(s.At)
	sec.Requests++
	r.requests++
	r.bytes += int64(s.Bytes)
	if s.Err != "" {
		sec.Errors++
		r.errors[r.keyLocked(s.Err)]++
		if len(r.errSample) < r.cfg.MaxErrors {
			r.errSample = append(r.errSample, ErrorSample{At: s.At, Object: s.Object, Kind: s.Err})
		}
	} else {
		if s.Hit {
			sec.Hits++
			r.hits++
		}
		if s.Tier != "" {
			r.tiers[r.keyLocked(s.Tier)]++
		}
		r.repeatLocked(s)
		if s.Object >= 0 && s.Object < len(r.firstOK) && r.firstOK[s.Object] < 0 && s.Status >= 200 && s.Status < 400 &&
			s.At >= r.purgedAt[s.Object] {
			r.firstOK[s.Object] = s.At
		}
		r.latency.add(s.Latency)
		r.floor.add(s.FloorLatency)
		rh := r.regions[r.keyLocked(s.Region)]
		if rh == nil {
			rh = &regionHist{latency: newHistogram(), floor: newHistogram()}
			r.regions[r.keyLocked(s.Region)] = rh
		}
		rh.latency.add(s.Latency)
		rh.floor.add(s.FloorLatency)
	}
	if s.Stale {
		sec.Stale++
		r.stale++
	}
	if s.PoP != "" {
		pop := r.keyLocked(s.PoP)
		r.routing[routeKey{city: r.keyLocked(s.City), pop: pop, window: int(max(s.At, 0) / r.cfg.Bucket)}]++
		ps := r.popSecs[pop]
		i := r.secIndex(s.At)
		for len(ps) <= i {
			ps = append(ps, 0)
		}
		ps[i]++
		r.popSecs[pop] = ps
	}
}

// unserved marks an object a node has not answered (Recorder.served).
const unserved = time.Duration(math.MaxInt64)

// repeatLocked counts successful sample s as a repeat when its node had answered its object
// before s was sent, and otherwise records when the node's answer arrived. An object purged
// in the run counts no more: when its next request at a node misses depends on when the
// purge reached the node, later on a loaded machine, and so would the ratio.
func (r *Recorder) repeatLocked(s Sample) {
	if s.Node == "" || s.Object < 0 || s.Object >= r.cfg.Objects {
		return
	}
	if _, purged := r.purgedAt[s.Object]; purged {
		return
	}
	key := r.keyLocked(s.PoP + "/" + s.Node)
	if key == otherKey {
		return
	}
	served := r.served[key]
	if served == nil {
		served = make([]time.Duration, r.cfg.Objects)
		for i := range served {
			served[i] = unserved
		}
		r.served[key] = served
	}
	if at := served[s.Object]; at < s.At {
		r.repeats++
		if s.Hit {
			r.repeatHits++
		}
	} else {
		served[s.Object] = min(at, s.At+s.Latency)
	}
}

// ForgetServed records that object id was purged at time at: it no longer counts as served
// (for the outage invariant) until a request sent after the purge succeeds, nor in
// Report.RepeatRequests.
func (r *Recorder) ForgetServed(id int, at time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id >= 0 && id < len(r.firstOK) {
		r.firstOK[id] = -1
		r.purgedAt[id] = at
	}
}

// RecordOrigin counts n requests that reached the origin at time at. Use it or
// RecordOriginFetch for each origin request, not both.
func (r *Recorder) RecordOrigin(at time.Duration, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secondLocked(at).Origin += int64(n)
	r.origin += int64(n)
}

// RecordOriginFetch counts one request for object id that reached the origin at time at, and
// tracks the object for the origin-per-object invariant. Feed only requests the origin
// answered (2xx or 304); failed attempts during an outage are not fills.
func (r *Recorder) RecordOriginFetch(at time.Duration, id int) { r.RecordOriginFetchVersion(at, id, 1) }

// RecordOriginFetchVersion is RecordOriginFetch for version version of object id: each version
// (a purge storm's bump makes a new one) is a distinct object, and fetching it twice within a
// freshness lifetime counts as a repeated fetch like any other.
func (r *Recorder) RecordOriginFetchVersion(at time.Duration, id, version int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secondLocked(at).Origin++
	r.origin++
	w := int(max(at, 0) / r.cfg.TTL)
	if w >= r.cfg.MaxSeconds {
		return
	}
	for len(r.originWin) <= w {
		r.originWin = append(r.originWin, originWindow{})
	}
	ow := &r.originWin[w]
	ow.fetches++
	if id < 0 || id >= r.cfg.Objects {
		ow.distinct++ // untracked ids count as distinct: they cannot fail the invariant
		return
	}
	if version > 1 {
		if ow.bumped == nil {
			ow.bumped = map[[2]int]struct{}{}
		}
		if _, ok := ow.bumped[[2]int{id, version}]; !ok {
			ow.bumped[[2]int{id, version}] = struct{}{}
			ow.distinct++
		}
		return
	}
	if ow.seen == nil {
		ow.seen = make([]uint64, (r.cfg.Objects+63)/64)
	}
	if ow.seen[id/64]&(1<<(id%64)) == 0 {
		ow.seen[id/64] |= 1 << (id % 64)
		ow.distinct++
	}
}

// RecordEvent marks a timeline event (e.g. "drain fra") at time at.
func (r *Recorder) RecordEvent(at time.Duration, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) < r.cfg.MaxPurges {
		r.events = append(r.events, EventMark{At: at, Name: name})
	}
}

// RecordPurge adds one purge's propagation result. The maps are copied.
func (r *Recorder) RecordPurge(p PurgeResult) {
	p.AckMs = copyMap(p.AckMs)
	p.FloorMs = copyMap(p.FloorMs)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.purges) < r.cfg.MaxPurges {
		r.purges = append(r.purges, p)
	}
}

func copyMap(m map[string]float64) map[string]float64 {
	if m == nil {
		return nil
	}
	c := make(map[string]float64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Live is what the progress bar shows.
type Live struct {
	Requests, Hits, Errors int64
}

// Live returns the running totals.
func (r *Recorder) Live() Live {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs int64
	for _, n := range r.errors {
		errs += n
	}
	return Live{Requests: r.requests, Hits: r.hits, Errors: errs}
}

// Observations is the plain data the invariants are computed from (see CheckInvariants).
type Observations struct {
	// StaleAfterPurge counts responses marked Stale.
	StaleAfterPurge int64
	// PoPSeconds is, per PoP, the requests it answered in each second since the start.
	PoPSeconds map[string][]int64
	// OriginFetches and OriginDistinct sum, over freshness-lifetime windows, the origin fetches
	// and the distinct objects fetched (from RecordOriginFetch).
	OriginFetches, OriginDistinct int64
	// FirstOK is, per object id, when it was first served successfully (-1: never).
	FirstOK []time.Duration
	// Errors are the failed requests (up to RecorderConfig.MaxErrors).
	Errors []ErrorSample
	// Purges are the recorded purge results.
	Purges []PurgeResult
	// Measured is load, shedding and latency by client group (measured.go).
	Measured *Measured
}

// Observations copies out what the invariants need.
func (r *Recorder) Observations() *Observations {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := &Observations{
		StaleAfterPurge: r.stale,
		PoPSeconds:      make(map[string][]int64, len(r.popSecs)),
		FirstOK:         append([]time.Duration(nil), r.firstOK...),
		Errors:          append([]ErrorSample(nil), r.errSample...),
		Purges:          append([]PurgeResult(nil), r.purges...),
		Measured:        r.ms.measured(),
	}
	for pop, s := range r.popSecs {
		o.PoPSeconds[pop] = append([]int64(nil), s...)
	}
	for _, w := range r.originWin {
		o.OriginFetches += w.fetches
		o.OriginDistinct += w.distinct
	}
	return o
}

// CDFPoint is one point of a latency CDF.
type CDFPoint struct {
	Ms       float64 `json:"ms"`
	Fraction float64 `json:"fraction"`
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
