package dnsroute

import (
	"container/heap"
	"hash/maphash"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// Defaults of the latency map.
const (
	// DefaultLatencyRecords bounds the records held (one per reporting node and network):
	// Config.LatencyRecords's default.
	DefaultLatencyRecords = 200_000
	// DefaultLatencyMaxAge is how long a record counts after its last report (the latency
	// bucket's TTL).
	DefaultLatencyMaxAge = 15 * time.Minute
)

// latencyMap is what DNS knows of real-user measurements: per client network (/24, /48), the
// RTT clients measured to each PoP, merged over the edge nodes that received their reports.
// It holds at most max records, the most recently measured, and ignores (and sweeps) those
// older than maxAge. The records are kept in a heap by age too, so that a full map drops its
// oldest record, and a sweep its expired ones, in O(log n) each: DNS queries that miss the
// answer cache look the map up under its lock, and a sort of every record under it (as the
// map once did to drop its oldest eighth) held them for a second at 2 million records.
//
// An answer depends on the map only through the RTT order of its client's own network's PoPs,
// so the map counts changes per network: when a network's order changes, the generation of
// its slot (see genSlot) goes up, and cached answers filled under an older generation of
// their network's slot are stale. A new figure that keeps the order keeps every answer, and a
// change for one network keeps the answers of all the others.
type latencyMap struct {
	max    int
	maxAge time.Duration
	// gens are the generations of the network slots. Hashing networks into a fixed table
	// keeps a cache hit's check to one atomic load; two networks sharing a slot (1 in
	// genSlots) only cost each other a refill.
	gens    [genSlots]atomic.Uint32
	changes atomic.Uint64 // order changes so far, over all networks
	// followed is set once the map follows a fleet's latency bucket: from then on any client
	// network may gain measurements, so no answer may claim to hold beyond one network (the
	// ECS scope floor, decision.scope).
	followed atomic.Bool

	mu    sync.Mutex                // guards the fields below
	recs  map[string]*latencyRec    // by KV key (reporting node and network)
	byAge ageHeap                   // the same records, the oldest measured first
	nets  map[netip.Prefix][]string // network -> keys of its records
	order map[netip.Prefix]string   // network -> its PoPs in RTT order, for change detection
}

// genSlots is the size of the latency map's generation table.
const genSlots = 1 << 14

// slotSeed seeds the network hash; any seed works, it only has to be the same for the process.
var slotSeed = maphash.MakeSeed()

// genSlot is the generation slot of client network (wire.ClientNetwork of a client address).
func genSlot(network netip.Prefix) uint32 {
	return uint32(maphash.Comparable(slotSeed, network) % genSlots)
}

// gen is the current generation of slot. Read it before routing on the map: an answer routed
// afterwards is at least as new as the generation, so tagging it with gen is never too new.
func (m *latencyMap) gen(slot uint32) uint32 { return m.gens[slot].Load() }

type latencyRec struct {
	wire.LatencyRecord
	key string // never changes: Replace reads it without the lock
	idx int    // position in latencyMap.byAge
}

// ageHeap is a min-heap of records by measurement time (container/heap), ties by key.
type ageHeap []*latencyRec

func (h ageHeap) Len() int { return len(h) }
func (h ageHeap) Less(i, j int) bool {
	if !h[i].At.Equal(h[j].At) {
		return h[i].At.Before(h[j].At)
	}
	return h[i].key < h[j].key
}
func (h ageHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *ageHeap) Push(x any) {
	r := x.(*latencyRec)
	r.idx = len(*h)
	*h = append(*h, r)
}
func (h *ageHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil // no longer held by the heap's array
	*h = old[:len(old)-1]
	return r
}

func newLatencyMap(max int, maxAge time.Duration) *latencyMap {
	if max <= 0 {
		max = DefaultLatencyRecords
	}
	if maxAge <= 0 {
		maxAge = DefaultLatencyMaxAge
	}
	return &latencyMap{max: max, maxAge: maxAge, recs: map[string]*latencyRec{},
		nets: map[netip.Prefix][]string{}, order: map[netip.Prefix]string{}}
}

// Len is the number of records held.
func (m *latencyMap) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs)
}

// Put stores a node's record under its KV key; a record too old at now, or without a valid
// network, is dropped (and removes what the key held). A new key in a full map takes the
// place of the oldest measured record, unless it is no newer: then it is the one dropped, so
// that the map holds the most recent records whatever order they come in (a snapshot's).
func (m *latencyMap) Put(key string, r wire.LatencyRecord, now time.Time) {
	if r.At.After(now) {
		// Measured in the future by the writer's clock: it counts from its arrival, or
		// records dated ahead would outrank every honest one in a full map and outlive maxAge.
		r.At = now
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Aged-out records go first, so that their networks' orders and generations move now:
	// lookups already route without them, and a record that brings a stored order back would
	// otherwise leave answers routed meanwhile cached. The heap makes this O(log n) a record.
	m.sweepLocked(now)
	if !r.Network.IsValid() || r.Network != wire.ClientNetwork(r.Network.Addr()) || now.Sub(r.At) > m.maxAge {
		m.deleteLocked(key, now)
		return
	}
	old, ok := m.recs[key]
	if ok && old.Network != r.Network {
		m.deleteLocked(key, now)
		ok = false
	}
	if ok {
		old.LatencyRecord = r
		heap.Fix(&m.byAge, old.idx)
		m.reorderLocked(r.Network, now)
		return
	}
	rec := &latencyRec{LatencyRecord: r, key: key}
	if len(m.recs) >= m.max {
		if !rec.newer(m.byAge[0]) {
			return
		}
		m.deleteLocked(m.byAge[0].key, now)
	}
	m.recs[key] = rec
	heap.Push(&m.byAge, rec)
	m.nets[r.Network] = append(m.nets[r.Network], key)
	m.reorderLocked(r.Network, now)
}

// newer reports whether r comes after o in the map's age order.
func (r *latencyRec) newer(o *latencyRec) bool { return ageHeap{o, r}.Less(0, 1) }

// replaceStep is how many records Replace deletes per hold of the map's lock.
const replaceStep = 1024

// Replace makes recs (by KV key) the whole content of the map, as after a fresh watch of the
// bucket: keys it lacks are deleted, the others put. It holds the map's lock for a copy of
// the records' pointers, then for replaceStep deletes or one Put at a time, never for the
// whole snapshot: DNS queries that miss the answer cache wait for the lock.
func (m *latencyMap) Replace(recs map[string]wire.LatencyRecord, now time.Time) {
	m.mu.Lock()
	held := slices.Clone(m.byAge)
	m.mu.Unlock()
	var gone []string
	for _, r := range held {
		if _, ok := recs[r.key]; !ok {
			gone = append(gone, r.key)
		}
	}
	for chunk := range slices.Chunk(gone, replaceStep) {
		m.mu.Lock()
		m.sweepLocked(now) // as Put does
		for _, k := range chunk {
			m.deleteLocked(k, now)
		}
		m.mu.Unlock()
	}
	for k, r := range recs {
		m.Put(k, r, now)
	}
}

// Delete removes the record under key.
func (m *latencyMap) Delete(key string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now) // as Put does
	m.deleteLocked(key, now)
}

// Sweep drops the records older than maxAge at now.
func (m *latencyMap) Sweep(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now)
}

// Has reports whether the map holds any record for network, fresh or not: an answer routed
// without measurements holds for a client only while this is false.
func (m *latencyMap) Has(network netip.Prefix) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.nets[network]) > 0
}

// Lookup returns the RTT per PoP measured for clients of network at now (nil: none), each the
// sample-weighted mean over the nodes that received reports, the number of samples, and how
// many of those the edges measured themselves (the rest are clients' beacon reports).
func (m *latencyMap) Lookup(network netip.Prefix, now time.Time) (rtt map[string]float64, samples, edge int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookupLocked(network, now)
}

func (m *latencyMap) lookupLocked(network netip.Prefix, now time.Time) (map[string]float64, int, int) {
	keys := m.nets[network]
	if len(keys) == 0 {
		return nil, 0, 0
	}
	sum, weight := map[string]float64{}, map[string]float64{}
	samples, edge := 0, 0
	for _, k := range keys {
		r := m.recs[k]
		if now.Sub(r.At) > m.maxAge {
			continue
		}
		w := float64(max(1, r.Samples))
		samples += max(1, r.Samples)
		edge += r.EdgeSamples
		for pop, ms := range r.RTTMs {
			sum[pop] += ms * w
			weight[pop] += w
		}
	}
	if len(sum) == 0 {
		return nil, 0, 0
	}
	for pop := range sum {
		sum[pop] /= weight[pop]
	}
	return sum, samples, edge
}

func (m *latencyMap) deleteLocked(key string, now time.Time) {
	r, ok := m.recs[key]
	if !ok {
		return
	}
	delete(m.recs, key)
	heap.Remove(&m.byAge, r.idx)
	keys := slices.DeleteFunc(m.nets[r.Network], func(k string) bool { return k == key })
	if len(keys) == 0 {
		delete(m.nets, r.Network)
	} else {
		m.nets[r.Network] = keys
	}
	m.reorderLocked(r.Network, now)
}

// sweepLocked drops the records older than maxAge at now: the oldest first, so it stops at
// the first fresh one.
func (m *latencyMap) sweepLocked(now time.Time) {
	for len(m.byAge) > 0 && now.Sub(m.byAge[0].At) > m.maxAge {
		m.deleteLocked(m.byAge[0].key, now)
	}
}

// reorderLocked recomputes network's RTT order and, when it changed, moves the network's
// generation on (after the records changed, so that gen's contract holds).
func (m *latencyMap) reorderLocked(network netip.Prefix, now time.Time) {
	rtt, _, _ := m.lookupLocked(network, now)
	pops := make([]string, 0, len(rtt))
	for p := range rtt {
		pops = append(pops, p)
	}
	sort.Slice(pops, func(i, j int) bool {
		if rtt[pops[i]] != rtt[pops[j]] {
			return rtt[pops[i]] < rtt[pops[j]]
		}
		return pops[i] < pops[j]
	})
	o := strings.Join(pops, ",")
	if o == m.order[network] {
		return
	}
	if o == "" {
		delete(m.order, network)
	} else {
		m.order[network] = o
	}
	m.gens[genSlot(network)].Add(1)
	m.changes.Add(1)
}
