package dnsroute

import (
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
	// DefaultLatencyRecords bounds the records held (one per reporting node and network).
	DefaultLatencyRecords = 200_000
	// DefaultLatencyMaxAge is how long a record counts after its last report (the latency
	// bucket's TTL).
	DefaultLatencyMaxAge = 15 * time.Minute
)

// latencyMap is what DNS knows of real-user measurements: per client network (/24, /48), the
// RTT clients measured to each PoP, merged over the edge nodes that received their reports.
// It holds at most max records and ignores (and sweeps) those older than maxAge.
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
	recs  map[string]latencyRec     // by KV key (reporting node and network)
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
	key string
}

func newLatencyMap(max int, maxAge time.Duration) *latencyMap {
	if max <= 0 {
		max = DefaultLatencyRecords
	}
	if maxAge <= 0 {
		maxAge = DefaultLatencyMaxAge
	}
	return &latencyMap{max: max, maxAge: maxAge, recs: map[string]latencyRec{},
		nets: map[netip.Prefix][]string{}, order: map[netip.Prefix]string{}}
}

// Len is the number of records held.
func (m *latencyMap) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs)
}

// Put stores a node's record under its KV key; a record too old at now, or without a valid
// network, is dropped (and removes what the key held).
func (m *latencyMap) Put(key string, r wire.LatencyRecord, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !r.Network.IsValid() || r.Network != wire.ClientNetwork(r.Network.Addr()) || now.Sub(r.At) > m.maxAge {
		m.deleteLocked(key, now)
		return
	}
	if old, ok := m.recs[key]; ok && old.Network != r.Network {
		m.deleteLocked(key, now)
	}
	if _, ok := m.recs[key]; !ok {
		if len(m.recs) >= m.max {
			m.sweepLocked(now)
		}
		if len(m.recs) >= m.max {
			m.evictOldestLocked(now)
		}
		m.nets[r.Network] = append(m.nets[r.Network], key)
	}
	m.recs[key] = latencyRec{LatencyRecord: r, key: key}
	m.reorderLocked(r.Network, now)
}

// Replace makes recs (by KV key) the whole content of the map, as after a fresh watch of the
// bucket: keys it lacks are deleted, the others put.
func (m *latencyMap) Replace(recs map[string]wire.LatencyRecord, now time.Time) {
	m.mu.Lock()
	for k := range m.recs {
		if _, ok := recs[k]; !ok {
			m.deleteLocked(k, now)
		}
	}
	m.mu.Unlock()
	for k, r := range recs {
		m.Put(k, r, now)
	}
}

// Delete removes the record under key.
func (m *latencyMap) Delete(key string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	keys := slices.DeleteFunc(m.nets[r.Network], func(k string) bool { return k == key })
	if len(keys) == 0 {
		delete(m.nets, r.Network)
	} else {
		m.nets[r.Network] = keys
	}
	m.reorderLocked(r.Network, now)
}

func (m *latencyMap) sweepLocked(now time.Time) {
	for k, r := range m.recs {
		if now.Sub(r.At) > m.maxAge {
			m.deleteLocked(k, now)
		}
	}
}

// evictOldestLocked drops the oldest eighth of the records, so that a full map costs one
// sort per max/8 new records rather than one scan per record.
func (m *latencyMap) evictOldestLocked(now time.Time) {
	all := make([]latencyRec, 0, len(m.recs))
	for _, r := range m.recs {
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].At.Before(all[j].At) })
	for _, r := range all[:max(1, len(all)/8)] {
		m.deleteLocked(r.key, now)
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
