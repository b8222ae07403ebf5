package dnsroute

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
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
// It holds at most max records and ignores (and sweeps) those older than maxAge. It signals a
// change only when the RTT order of some network's PoPs changes, which is all an answer
// depends on; a new figure that keeps the order keeps the answer cache.
type latencyMap struct {
	max    int
	maxAge time.Duration

	mu      sync.Mutex                // guards the fields below
	recs    map[string]latencyRec     // by KV key (reporting node and network)
	nets    map[netip.Prefix][]string // network -> keys of its records
	order   map[netip.Prefix]string   // network -> its PoPs in RTT order, for change detection
	changed chan struct{}
	version uint64 // order changes so far
}

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
		nets: map[netip.Prefix][]string{}, order: map[netip.Prefix]string{}, changed: make(chan struct{})}
}

// changedVersion returns the change channel and the number of order changes so far.
func (m *latencyMap) changedVersion() (<-chan struct{}, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed, m.version
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

// Lookup returns the RTT per PoP measured by clients of network at now (nil: none), each the
// sample-weighted mean over the nodes that received reports, and the number of samples.
func (m *latencyMap) Lookup(network netip.Prefix, now time.Time) (rtt map[string]float64, samples int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookupLocked(network, now)
}

func (m *latencyMap) lookupLocked(network netip.Prefix, now time.Time) (map[string]float64, int) {
	keys := m.nets[network]
	if len(keys) == 0 {
		return nil, 0
	}
	sum, weight := map[string]float64{}, map[string]float64{}
	samples := 0
	for _, k := range keys {
		r := m.recs[k]
		if now.Sub(r.At) > m.maxAge {
			continue
		}
		w := float64(max(1, r.Samples))
		samples += max(1, r.Samples)
		for pop, ms := range r.RTTMs {
			sum[pop] += ms * w
			weight[pop] += w
		}
	}
	if len(sum) == 0 {
		return nil, 0
	}
	for pop := range sum {
		sum[pop] /= weight[pop]
	}
	return sum, samples
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

// reorderLocked recomputes network's RTT order and signals when it changed.
func (m *latencyMap) reorderLocked(network netip.Prefix, now time.Time) {
	rtt, _ := m.lookupLocked(network, now)
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
	close(m.changed)
	m.changed = make(chan struct{})
	m.version++
}
