package report

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// TestHistogramError: whatever the value, from 0 to an hour, a percentile of one value is
// that value within 1 % (or 1 µs), and the CDF ends at 1.
func TestHistogramError(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 63 * time.Microsecond, 64 * time.Microsecond, 999 * time.Microsecond,
		time.Millisecond, 27 * time.Millisecond, 123456 * time.Microsecond, 3 * time.Second, time.Hour} {
		h := newHistogram()
		h.add(d)
		ms := float64(d) / float64(time.Millisecond)
		if got := h.quantile(0.5); math.Abs(got-ms) > math.Max(0.001, 0.01*ms) {
			t.Errorf("quantile of one %v = %v ms, want %v ms ± 1%%", d, got, ms)
		}
		if cdf := h.cdf(); len(cdf) != 1 || cdf[0].Fraction != 1 || math.Abs(cdf[0].Ms-ms) > math.Max(0.001, 0.01*ms) {
			t.Errorf("cdf of one %v = %v, want one point at %v ms with fraction 1", d, cdf, ms)
		}
	}
	h := newHistogram()
	h.add(2 * time.Hour)
	h.add(-time.Second)
	if got, hour := h.quantile(1), float64(time.Hour/time.Millisecond); math.Abs(got-hour) > 0.01*hour {
		t.Errorf("quantile(1) after 2 h = %v ms, want an hour (the cap) ± 1%%", got)
	}
	if got := h.quantile(0); got != 0 {
		t.Errorf("quantile(0) after a negative latency = %v ms, want 0", got)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram()
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	tests := []struct {
		q, want float64
	}{{0.5, 500}, {0.9, 900}, {0.99, 990}}
	for _, tt := range tests {
		if got := h.quantile(tt.q); math.Abs(got-tt.want)/tt.want > 0.01 {
			t.Errorf("quantile(%v) = %v ms, want %v ms ± 1%%", tt.q, got, tt.want)
		}
	}
	if got := newHistogram().quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
}

// TestRepeatHitRatio: a request is a repeat when the node that answers it had answered the
// same object successfully before the request was sent, and the object was not purged;
// repeat_hit_ratio is the share of repeats served from the cache. Unlike hit_ratio it does not
// depend on how many requests a run's wall-clock time let the clients send: the first
// request for each object at each node, a miss however well the cache works, is no repeat.
func TestRepeatHitRatio(t *testing.T) {
	ms := time.Millisecond
	ok := func(at time.Duration, node string, obj int, hit bool) Sample {
		return Sample{At: at, PoP: "lhr", Node: node, Status: 200, Hit: hit, Latency: 10 * ms, Object: obj}
	}
	tests := []struct {
		name    string
		samples []Sample
		purge   time.Duration // object 1 purged then, when > 0
		repeats int64
		ratio   float64
	}{
		{"first request at each node is no repeat", []Sample{ok(0, "n1", 1, false), ok(100*ms, "n2", 1, false)}, 0, 0, 0},
		{"a later request at the same node is one, hit", []Sample{ok(0, "n1", 1, false), ok(100*ms, "n1", 1, true)}, 0, 1, 1},
		{"a later request at the same node is one, miss", []Sample{ok(0, "n1", 1, false), ok(100*ms, "n1", 1, false)}, 0, 1, 0},
		{"sent before the first answer arrived: no repeat (a collapsed fill)", []Sample{ok(0, "n1", 1, false), ok(5*ms, "n1", 1, false)}, 0, 0, 0},
		{"another object is no repeat", []Sample{ok(0, "n1", 1, false), ok(100*ms, "n1", 2, false)}, 0, 0, 0},
		{"the same node name in another PoP is another node", []Sample{ok(0, "n1", 1, false), {At: 100 * ms, PoP: "fra", Node: "n1", Status: 200, Object: 1}}, 0, 0, 0},
		{"a failed first request serves nothing", []Sample{{At: 0, PoP: "lhr", Node: "n1", Status: 503, Err: "5xx", Object: 1}, ok(100*ms, "n1", 1, false)}, 0, 0, 0},
		{"a failed repeat is no repeat served", []Sample{ok(0, "n1", 1, false), {At: 100 * ms, PoP: "lhr", Node: "n1", Status: 503, Err: "5xx", Object: 1}}, 0, 0, 0},
		{"a purged object counts no more", []Sample{ok(0, "n1", 1, false), ok(50*ms, "n1", 1, true), ok(200*ms, "n1", 1, false), ok(300*ms, "n1", 1, true)}, 100 * ms, 1, 1},
		{"mixed", []Sample{ok(0, "n1", 1, false), ok(20*ms, "n1", 1, true), ok(40*ms, "n1", 1, true), ok(60*ms, "n1", 1, false), ok(80*ms, "n1", 1, true)}, 0, 4, 0.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(RecorderConfig{Objects: 10})
			for _, s := range tt.samples {
				if tt.purge > 0 && s.At > tt.purge {
					r.ForgetServed(1, tt.purge)
					tt.purge = 0
				}
				r.Record(s)
			}
			rep := r.Report(scenario.Small())
			if rep.RepeatRequests != tt.repeats || rep.RepeatHitRatio != tt.ratio {
				t.Errorf("repeat requests %d, hit ratio %v; want %d, %v", rep.RepeatRequests, rep.RepeatHitRatio, tt.repeats, tt.ratio)
			}
		})
	}
}

func TestRecorderAggregates(t *testing.T) {
	r := NewRecorder(RecorderConfig{Bucket: 10 * time.Second, Objects: 100, TTL: 10 * time.Second})
	r.Record(Sample{At: 500 * time.Millisecond, City: "London", Region: "europe", PoP: "lhr", Status: 200, Hit: true, Tier: "edge", Latency: 10 * time.Millisecond, FloorLatency: 4 * time.Millisecond, Bytes: 100, Object: 1})
	r.Record(Sample{At: 1500 * time.Millisecond, City: "London", Region: "europe", PoP: "lhr", Status: 200, Tier: "origin", Latency: 80 * time.Millisecond, FloorLatency: 60 * time.Millisecond, Bytes: 100, Object: 2})
	r.Record(Sample{At: 1600 * time.Millisecond, City: "Paris", Region: "europe", PoP: "fra", Status: 503, Err: "5xx", Object: 3})
	r.Record(Sample{At: 11 * time.Second, City: "Paris", Region: "europe", PoP: "lhr", Status: 200, Hit: true, Tier: "edge", Latency: 12 * time.Millisecond, Object: 1, Stale: true})
	r.RecordOriginFetch(time.Second, 2)
	r.RecordOriginFetch(2*time.Second, 2) // same object, same TTL window
	r.RecordOriginFetch(3*time.Second, 5)
	r.RecordOriginFetch(12*time.Second, 2) // next window
	r.RecordOrigin(4*time.Second, 3)

	if got, want := r.Live(), (Live{Requests: 4, Hits: 2, Errors: 1}); got != want {
		t.Errorf("Live() = %+v, want %+v", got, want)
	}
	o := r.Observations()
	if o.StaleAfterPurge != 1 {
		t.Errorf("StaleAfterPurge = %d, want 1", o.StaleAfterPurge)
	}
	if o.OriginFetches != 4 || o.OriginDistinct != 3 {
		t.Errorf("origin fetches/distinct = %d/%d, want 4/3", o.OriginFetches, o.OriginDistinct)
	}
	if got := o.PoPSeconds["lhr"]; len(got) != 12 || got[0] != 1 || got[1] != 1 || got[11] != 1 {
		t.Errorf("PoPSeconds[lhr] = %v, want 1 in seconds 0, 1 and 11", got)
	}
	if got := o.FirstOK[1]; got != 500*time.Millisecond {
		t.Errorf("FirstOK[1] = %v, want 500ms", got)
	}
	if got := o.FirstOK[3]; got != -1 {
		t.Errorf("FirstOK[3] = %v, want -1 (only failed)", got)
	}
	if len(o.Errors) != 1 || o.Errors[0] != (ErrorSample{At: 1600 * time.Millisecond, Object: 3, Kind: "5xx"}) {
		t.Errorf("Errors = %+v, want the one 5xx", o.Errors)
	}

	s := scenario.Small()
	rep := r.Report(s)
	if rep.Requests != 4 || rep.Errors["5xx"] != 1 || rep.OriginRequests != 7 {
		t.Errorf("report requests/errors/origin = %d/%v/%d, want 4/map[5xx:1]/7", rep.Requests, rep.Errors, rep.OriginRequests)
	}
	if rep.HitRatio != 0.5 {
		t.Errorf("hit ratio = %v, want 0.5", rep.HitRatio)
	}
	if got := rep.Routing["London"]; got.PoP != "lhr" || got.Share != 1 || got.DistanceKm < 15 || got.DistanceKm > 30 {
		t.Errorf("routing[London] = %+v, want lhr, share 1, about 22 km", got)
	}
	if got := rep.Routing["Paris"]; got.Requests != 2 || got.PoPs["fra"] != 0.5 {
		t.Errorf("routing[Paris] = %+v, want 2 requests split between fra and lhr", got)
	}
	if len(rep.RoutingOver) != 2 || rep.RoutingOver[1].Cities["Paris"] != "lhr" {
		t.Errorf("routing over time = %+v, want 2 windows with Paris on lhr in the second", rep.RoutingOver)
	}
	if got := rep.LatencyMs.ByRegion["europe"].Count; got != 3 {
		t.Errorf("europe latency count = %d, want 3 (errors excluded)", got)
	}
	if got := rep.Timeline[1]; got.Requests != 2 || got.Errors != 1 || got.Origin != 1 {
		t.Errorf("timeline second 1 = %+v, want 2 requests, 1 error, 1 origin", got)
	}
}

func TestRecorderBounds(t *testing.T) {
	r := NewRecorder(RecorderConfig{MaxSeconds: 10, MaxErrors: 2, MaxKeys: 3, Objects: 4})
	for i := range 20 {
		r.Record(Sample{At: time.Duration(i) * time.Hour, City: fmt.Sprint("city", i), PoP: "p", Err: "e", Object: i})
	}
	o := r.Observations()
	if len(o.Errors) != 2 {
		t.Errorf("kept %d error samples, want MaxErrors 2", len(o.Errors))
	}
	if got := len(o.PoPSeconds["p"]); got != 10 {
		t.Errorf("per-second series has %d entries, want MaxSeconds 10", got)
	}
	rep := r.Report(scenario.Small())
	if len(rep.Routing) > 3 || rep.Routing[otherKey].Requests == 0 {
		t.Errorf("routing has %d cities (%v), want at most MaxKeys 3 with the rest under %q", len(rep.Routing), rep.Routing, otherKey)
	}
	if len(rep.Timeline) != 10 || rep.Timeline[9].Requests != 19 {
		t.Errorf("timeline len %d, last second %d requests; want 10 and 19 (later samples land in the last)", len(rep.Timeline), rep.Timeline[len(rep.Timeline)-1].Requests)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	r := NewRecorder(RecorderConfig{})
	var wg sync.WaitGroup
	const workers, each = 8, 2000
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.Record(Sample{At: time.Duration(i) * time.Millisecond, City: "c", Region: "r", PoP: fmt.Sprint("p", w%3), Status: 200, Hit: i%2 == 0, Latency: time.Millisecond, Object: i})
				if i%100 == 0 {
					r.RecordOriginFetch(time.Duration(i)*time.Millisecond, i)
					r.Live()
				}
			}
		}()
	}
	wg.Wait()
	if got := r.Live(); got.Requests != workers*each || got.Hits != workers*each/2 {
		t.Errorf("Live() = %+v, want %d requests, %d hits", got, workers*each, workers*each/2)
	}
}

func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(RecorderConfig{})
	cities := []string{"London", "Paris", "Tokyo", "New York", "Sydney"}
	pops := []string{"lhr", "fra", "nrt", "iad", "syd"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Record(Sample{At: time.Duration(i%60000) * time.Millisecond, City: cities[i%5], Region: "europe", PoP: pops[i%5], Status: 200, Hit: i%10 != 0, Tier: "edge", Latency: time.Duration(i%5000) * time.Microsecond, FloorLatency: time.Millisecond, Bytes: 1024, Object: i % 20000})
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkRecordParallel(b *testing.B) {
	r := NewRecorder(RecorderConfig{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Record(Sample{At: time.Duration(i%60000) * time.Millisecond, City: "London", Region: "europe", PoP: "lhr", Status: 200, Hit: true, Tier: "edge", Latency: time.Millisecond, Object: i % 20000})
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
