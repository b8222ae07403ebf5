package edge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// zipf draws ranks 0..n-1 with P(k) proportional to 1/(k+1)^alpha; alpha may be below 1,
// which math/rand's Zipf does not allow.
type zipf struct{ cdf []float64 }

func newZipf(n int, alpha float64) *zipf {
	z := &zipf{cdf: make([]float64, n)}
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), alpha)
		z.cdf[k] = sum
	}
	for k := range z.cdf {
		z.cdf[k] /= sum
	}
	return z
}

func (z *zipf) draw(r *rand.Rand) int { return sort.SearchFloat64s(z.cdf, r.Float64()) }

// BenchmarkShieldZipf runs a Zipf (alpha 0.9) workload over 10,000 objects against 3 PoPs x 3
// nodes, with the tiers (peer fill and a shield PoP) and without them (every node alone), and
// reports origin requests per distinct object requested and the share of requests answered by
// each tier.
func BenchmarkShieldZipf(b *testing.B) {
	for _, tiers := range []bool{true, false} {
		b.Run(fmt.Sprintf("tiers=%v", tiers), func(b *testing.B) {
			shield := func(string) string { return "p0" }
			mod := func(c *Config) {}
			if !tiers {
				shield = noShield
				mod = func(c *Config) { c.Peers, c.Shields = nil, nil }
			}
			f := newFleet(b, []int{3, 3, 3}, shield, mod)
			z := newZipf(10_000, 0.9)
			var mu sync.Mutex
			seen := map[int]bool{}
			tierCount := map[string]int{}
			work := make(chan int, 64)
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 1))
					for i := range work {
						k := z.draw(r)
						n := f.nodes[i%len(f.nodes)]
						res := do(b, f.client, http.MethodGet, n.Addr(), testHost, fmt.Sprintf("/z/%d?cc=max-age%%3D3600", k))
						cs := res.header.Get("Cache-Status")
						own := cs[strings.LastIndex(cs, ",")+1:]
						tier := "origin"
						switch {
						case strings.Contains(own, "; hit"):
							tier = "local-hit"
						case strings.Contains(own, "collapsed"):
							tier = "collapsed"
						case strings.Contains(own, "detail=peer"):
							tier = "peer"
						case strings.Contains(own, "detail=shield"):
							tier = "shield"
						}
						mu.Lock()
						seen[k] = true
						tierCount[tier]++
						mu.Unlock()
					}
				}()
			}
			b.ResetTimer()
			for i := range b.N {
				work <- i
			}
			close(work)
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(f.origin.Total())/float64(len(seen)), "origin-req/object")
			for _, tier := range []string{"local-hit", "peer", "shield", "origin", "collapsed"} {
				b.ReportMetric(float64(tierCount[tier])/float64(b.N), tier+"-share")
			}
		})
	}
}

// BenchmarkPeerHop measures what one peer hop adds on loopback: the same cached object fetched
// from its owner directly, and through a non-owner whose own copy is dropped before each
// request so that every request crosses the hop.
func BenchmarkPeerHop(b *testing.B) {
	f := newFleet(b, []int{2}, noShield, nil)
	owner, asker := f.nodes[0], f.nodes[1]
	// Objects the owner holds.
	var paths []string
	for k := 0; len(paths) < 256; k++ {
		p := fmt.Sprintf("/hop/%d?cc=max-age%%3D3600", k)
		if rendezvous(owner.tiers.Load().peers, owner.key(p))[0].ID == owner.cfg.Node {
			paths = append(paths, p)
			do(b, f.client, http.MethodGet, owner.Addr(), testHost, p)
		}
	}
	direct := make([]time.Duration, 0, b.N)
	hop := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		p := paths[i%len(paths)]
		t0 := time.Now()
		do(b, f.client, http.MethodGet, owner.Addr(), testHost, p)
		t1 := time.Now()
		asker.store.Delete(asker.key(p)) // force the hop every time
		do(b, f.client, http.MethodGet, asker.Addr(), testHost, p)
		t2 := time.Now()
		direct = append(direct, t1.Sub(t0))
		hop = append(hop, t2.Sub(t1))
	}
	b.StopTimer()
	q := func(d []time.Duration, p float64) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(direct, 0.5), "hit-p50-ms")
	b.ReportMetric(q(direct, 0.99), "hit-p99-ms")
	b.ReportMetric(q(hop, 0.5), "via-peer-p50-ms")
	b.ReportMetric(q(hop, 0.99), "via-peer-p99-ms")
	b.ReportMetric(q(hop, 0.5)-q(direct, 0.5), "hop-added-p50-ms")
}
