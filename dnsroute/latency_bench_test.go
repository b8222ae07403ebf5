package dnsroute

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// benchPoPs are PoP ids as a fleet of 16 PoPs names them.
var benchPoPs = []string{"lhr", "fra", "cdg", "ams", "mad", "waw", "iad", "ord", "dfw", "sjc", "gru", "nrt", "sin", "syd", "bom", "jnb"}

// latencyNetwork is the i-th client network of a test fleet: /24s and /48s in turn, as the
// edges see both.
func latencyNetwork(i int) netip.Prefix {
	if i%2 == 1 {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, byte(i >> 16), byte(i >> 8), byte(i)}), 48)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(64 + i>>16), byte(i >> 8), byte(i), 0}), 24)
}

// latencyEntry is the i-th record of a test fleet, measured at, with pops PoPs, as the watch
// gets it: the key and the value decoded from the bucket's JSON (so its RTT map is sized as
// json.Unmarshal sizes it).
func latencyEntry(tb testing.TB, i, pops int, at time.Time) (string, wire.LatencyRecord) {
	network := latencyNetwork(i)
	r := wire.LatencyRecord{Network: network, RTTMs: make(map[string]float64, pops), Samples: 1234, EdgeSamples: 1000, At: at}
	own := benchPoPs[i%len(benchPoPs)]
	r.RTTMs[own] = 20 + float64(i%97)/3
	for p := 0; len(r.RTTMs) < pops; p++ {
		r.RTTMs[benchPoPs[p]] = 20 + float64(p)/3
	}
	b, err := json.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	var dec wire.LatencyRecord
	if err := json.Unmarshal(b, &dec); err != nil {
		tb.Fatal(err)
	}
	return wire.LatencyKey(own, fmt.Sprintf("n%d", i%3+1), network), dec
}

// fillLatency puts records [from, to) into m, record i measured at base + i µs.
func fillLatency(tb testing.TB, m *latencyMap, from, to, pops int, base, now time.Time) {
	for i := from; i < to; i++ {
		k, r := latencyEntry(tb, i, pops, base.Add(time.Duration(i)*time.Microsecond))
		m.Put(k, r, now)
	}
}

// BenchmarkLatencyPutFull puts new records into a full latency map of 200,000 (the default)
// and 2,000,000 records (about what deploy renders for the largest fleets), each newer than
// all it holds: the steady state of a map smaller than its bucket. max-ms is the longest Put,
// during which the map's lock is held and DNS queries that miss the answer cache wait.
//
//	go test -run '^$' -bench 'LatencyPutFull' -benchtime 400000x ./dnsroute/
func BenchmarkLatencyPutFull(b *testing.B) {
	for _, n := range []int{200_000, 2_000_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			now := time.Now()
			base := now.Add(-10 * time.Minute)
			m := newLatencyMap(n, 0)
			fillLatency(b, m, 0, n, 2, base, now)
			// The records to put, made before the clock starts.
			const batch = 1 << 16
			keys, recs := make([]string, batch), make([]wire.LatencyRecord, batch)
			next := n
			refill := func() {
				for j := range batch {
					keys[j], recs[j] = latencyEntry(b, next, 2, base.Add(time.Duration(next)*time.Microsecond))
					next++
				}
			}
			refill()
			var worst time.Duration
			j := 0
			b.ReportAllocs()
			for b.Loop() {
				if j == batch {
					b.StopTimer()
					refill()
					j = 0
					b.StartTimer()
				}
				t0 := time.Now()
				m.Put(keys[j], recs[j], now)
				worst = max(worst, time.Since(t0))
				j++
			}
			if m.Len() > n {
				b.Fatalf("%d records held, bound %d", m.Len(), n)
			}
			b.ReportMetric(float64(worst)/float64(time.Millisecond), "max-ms")
		})
	}
}

// BenchmarkLatencyReplace is the snapshot after a NATS reconnect: a full map of n records
// replaced by a bucket of 2n newer records. While it runs, a goroutine looks up one network
// over and over as a cache miss does; max-lookup-ms is the longest such lookup waited (the
// longest the map's lock was held in one go), kept is how many of the n newest records of the
// snapshot the map holds afterwards.
//
//	go test -run '^$' -bench 'LatencyReplace' -benchtime 1x ./dnsroute/
func BenchmarkLatencyReplace(b *testing.B) {
	for _, n := range []int{200_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			now := time.Now()
			base := now.Add(-10 * time.Minute)
			snap := make(map[string]wire.LatencyRecord, 2*n)
			var newest []string
			for i := n; i < 3*n; i++ {
				k, r := latencyEntry(b, i, 2, base.Add(time.Duration(i)*time.Microsecond))
				snap[k] = r
				if i >= 2*n {
					newest = append(newest, k)
				}
			}
			var worst time.Duration
			var m *latencyMap
			for b.Loop() {
				b.StopTimer()
				m = newLatencyMap(n, 0)
				fillLatency(b, m, 0, n, 2, base, now)
				var stop atomic.Bool
				var wg sync.WaitGroup
				probe := latencyNetwork(0)
				wg.Go(func() {
					for !stop.Load() {
						t0 := time.Now()
						m.Lookup(probe, now)
						worst = max(worst, time.Since(t0))
					}
				})
				b.StartTimer()
				m.Replace(snap, now)
				b.StopTimer()
				stop.Store(true)
				wg.Wait()
				b.StartTimer()
			}
			kept := 0
			m.mu.Lock()
			for _, k := range newest {
				if _, ok := m.recs[k]; ok {
					kept++
				}
			}
			m.mu.Unlock()
			b.ReportMetric(float64(worst)/float64(time.Millisecond), "max-lookup-ms")
			b.ReportMetric(float64(kept)/float64(n), "newest-kept")
		})
	}
}
