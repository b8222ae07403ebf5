package edge

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

func TestSaturationOf(t *testing.T) {
	procs := float64(runtime.GOMAXPROCS(0))
	tests := []struct {
		name     string
		cfg      SaturationConfig
		cpuCores float64
		inFlight int64
		hitP99   time.Duration
		want     float64
	}{
		{"idle", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 0, 0, 0, 0},
		{"cpu bound", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 3, 10, 0, 0.75},
		{"in-flight bound", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 1, 90, 0, 0.9},
		{"over both limits", SaturationConfig{CPUs: 2, MaxInFlight: 10}, 3, 20, 0, 2},
		{"cpu left out", SaturationConfig{CPUs: -1, MaxInFlight: 100}, 8, 50, 0, 0.5},
		{"in-flight left out", SaturationConfig{CPUs: 4, MaxInFlight: -1}, 1, 5000, 0, 0.25},
		{"default in-flight limit", SaturationConfig{CPUs: -1}, 0, DefaultMaxInFlight / 2, 0, 0.5},
		{"default cores", SaturationConfig{MaxInFlight: -1}, procs / 2, 0, 0, 0.5},
		{"everything left out", SaturationConfig{CPUs: -1, MaxInFlight: -1, HitLatencyTarget: -1}, 8, 5000, time.Second, 0},
		{"hit latency bound", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 1, 10, 15 * time.Millisecond, 0.75},
		{"hit latency over the target", SaturationConfig{CPUs: 4, MaxInFlight: 100, HitLatencyTarget: 5 * time.Millisecond}, 1, 10, 10 * time.Millisecond, 2},
		{"hit latency left out", SaturationConfig{CPUs: 4, MaxInFlight: 100, HitLatencyTarget: -1}, 1, 10, time.Second, 0.25},
		{"fast hits", SaturationConfig{CPUs: -1, MaxInFlight: -1}, 0, 0, 200 * time.Microsecond, 0.01},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := saturationFigure(tt.cfg, tt.cpuCores, tt.inFlight, tt.hitP99); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("saturationFigure(%+v, %v, %d, %v) = %v, want %v", tt.cfg, tt.cpuCores, tt.inFlight, tt.hitP99, got, tt.want)
			}
		})
	}
}

// TestLoadReportSaturation: requests held at a slow origin count as in flight, and the load
// report's saturation is their number over the node's limit; once they finish it falls back.
func TestLoadReportSaturation(t *testing.T) {
	s := newSingle(t, func(c *Config) {
		c.Fleet.Saturation = SaturationConfig{CPUs: -1, MaxInFlight: 4}
	})
	if got := s.edge.TakeLoadReport().Saturation; got != 0 {
		t.Fatalf("idle saturation = %v, want 0", got)
	}
	const held = 3
	var wg sync.WaitGroup
	errs := make(chan error, held)
	for i := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/held-%d?delay=1s", s.edge.Addr(), i), nil)
			req.Host = testHost
			r, err := s.client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}()
	}
	wait.For(t, 5*time.Second, "requests in flight", func() bool { return s.edge.inFlight() == held })
	if got, want := s.edge.TakeLoadReport().Saturation, float64(held)/4; got != want {
		t.Errorf("saturation with %d of 4 in flight = %v, want %v", held, got, want)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("held request: %v", err)
	}
	// The client may read the whole body before the handler returns; wait for the node's count.
	wait.For(t, 5*time.Second, "requests finished", func() bool { return s.edge.inFlight() == 0 })
	if got := s.edge.TakeLoadReport().Saturation; got != 0 {
		t.Errorf("saturation after the requests finished = %v, want 0", got)
	}
}

// TestSaturationMeteredCPU: with a CPU meter (the simulator's), the CPU term is the metered
// time over the interval against the node's cores.
func TestSaturationMeteredCPU(t *testing.T) {
	var used atomic.Int64
	s := newSingle(t, func(c *Config) {
		c.Fleet.Saturation = SaturationConfig{CPUs: 0.5, MaxInFlight: -1,
			CPUTime: func() time.Duration { return time.Duration(used.Load()) }}
	})
	s.edge.TakeLoadReport()
	used.Add(int64(300 * time.Millisecond))
	s.clock.Advance(time.Second)
	if got := s.edge.TakeLoadReport().Saturation; math.Abs(got-0.6) > 1e-9 {
		t.Errorf("saturation after 0.3 s of CPU in 1 s on 0.5 cores = %v, want 0.6", got)
	}
}

// TestHitWindowP99: the window's p99 follows the hits of the last ten seconds, to the
// bucket's precision; a window of few hits counts as padded with instant ones, so a quiet
// node's handful of slow hits reads as 0.
func TestHitWindowP99(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	near := func(got, want time.Duration) bool { return got <= want && float64(got) >= 0.93*float64(want) }
	var w hitWindow
	if got := w.p99(t0); got != 0 {
		t.Fatalf("empty window p99 = %v, want 0", got)
	}
	// A quiet node: 20 hits, 5 of them slow.
	for i := range 20 {
		d := 100 * time.Microsecond
		if i%4 == 0 {
			d = 80 * time.Millisecond
		}
		w.record(d, t0, clockAt(t0))
	}
	if got := w.p99(t0); !near(got, 100*time.Microsecond) {
		t.Errorf("20 hits, 5 slow: p99 = %v, want the fast ones' ~100µs", got)
	}
	// A busy node over several seconds: 2000 fast hits and 40 slow ones (2 %).
	for i := range 2040 {
		d := time.Millisecond
		if i%51 == 0 {
			d = 50 * time.Millisecond
		}
		at := t0.Add(time.Duration(i%5) * time.Second)
		w.record(d, at, clockAt(at))
	}
	if got := w.p99(t0.Add(5 * time.Second)); !near(got, 50*time.Millisecond) {
		t.Errorf("2 %% of hits at 50 ms: p99 = %v, want ~50ms", got)
	}
	// Ten seconds on, the first seconds have left the window.
	if got := w.p99(t0.Add(14 * time.Second)); got != 0 {
		t.Errorf("p99 once every hit left the window = %v, want 0", got)
	}
	for _, d := range []time.Duration{0, 7 * time.Microsecond, 8 * time.Microsecond, 1234567 * time.Microsecond, 3 * time.Hour} {
		b := hitBucket(d)
		if lo := hitBucketFloor(b); lo > d || (b < hitBuckets-1 && hitBucketFloor(b+1) <= d) {
			t.Errorf("%v in bucket %d [%v, %v)", d, b, lo, hitBucketFloor(b+1))
		}
	}
}

// TestHitWindowLateRecord: a hit is recorded as its answer ends (Node.finish), in the second
// it began. A large hit to a slow client ends a window or more after it began, when that
// second's slot holds a later second's hits: the late one, outside the window, must not take
// the slot and erase them (it did, and every such download emptied a second of the window).
func TestHitWindowLateRecord(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, late := range []time.Duration{hitWindowSlots * time.Second, 3 * hitWindowSlots * time.Second} {
		t.Run(late.String(), func(t *testing.T) {
			var w hitWindow
			for range 2 * hitMinSamples {
				w.record(50*time.Millisecond, t0, clockAt(t0))
			}
			w.record(time.Microsecond, t0.Add(-late), clockAt(t0)) // began late ago in the same slot, ends now
			if got := w.p99(t0); got > 50*time.Millisecond || got < 45*time.Millisecond {
				t.Errorf("p99 after a hit that began %v ago ended = %v, want the window's ~50ms", late, got)
			}
		})
	}
}

// TestHitWindowClockWentBack: when the wall clock goes back (an NTP step), the window's slots
// hold seconds still to come. A hit recorded now takes its slot: it is not a late one (those
// find a second that has passed), and dropping it left the p99 blind, every hit dropped, for
// as long as the clock went back.
func TestHitWindowClockWentBack(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, back := range []time.Duration{hitWindowSlots * time.Second, 25 * time.Second, time.Hour} {
		t.Run(back.String(), func(t *testing.T) {
			var w hitWindow
			// A busy node: every second of the window has hits.
			for i := range hitWindowSlots {
				at := t0.Add(time.Duration(i-hitWindowSlots+1) * time.Second)
				for range hitMinSamples {
					w.record(50*time.Millisecond, at, clockAt(at))
				}
			}
			now := t0.Add(-back)
			for range 2 * hitMinSamples {
				w.record(5*time.Millisecond, now, clockAt(now))
			}
			if got := w.p99(now); got > 5*time.Millisecond || got < 4*time.Millisecond {
				t.Errorf("p99 of the hits since the clock went back %v = %v, want ~5ms", back, got)
			}
		})
	}
}

// clockAt is a clock that reads t.
func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

// TestLoadReportHitLatency: real requests through the edge. A node with a handful of hits
// reports 0 from the hit-latency term even against an absurd 1 µs target; once it has served
// enough hits, their p99 against that target dominates the figure and the metric shows it.
func TestLoadReportHitLatency(t *testing.T) {
	_, originAddr := startOrigin(t, "127.0.0.10", nil)
	n, _ := startEdge(t, listen(t, "127.0.0.14"), Config{PoP: "tst", Node: "hl",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}},
		Fleet: FleetConfig{Saturation: SaturationConfig{CPUs: -1, MaxInFlight: -1, HitLatencyTarget: time.Microsecond}}})
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	get := func() string {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, "/hl?cc=max-age%3D600")
		return r.header.Get("Cache-Status")
	}
	get() // the miss that fills
	for range 10 {
		if cs := get(); !strings.Contains(cs, "; hit") {
			t.Fatalf("Cache-Status %q, want a hit", cs)
		}
	}
	if got := n.TakeLoadReport().Saturation; got != 0 {
		t.Errorf("saturation after 10 hits = %v, want 0 (a quiet node)", got)
	}
	for range 40 {
		get()
	}
	// Fifty hits: the p99 is the 11th slowest, and no hit is served in under a microsecond.
	p99 := n.hitLat.p99(n.clock())
	if got := n.TakeLoadReport().Saturation; got < 1 || p99 < time.Microsecond {
		t.Errorf("saturation after 50 hits against a 1µs target = %v (p99 %v), want >= 1", got, p99)
	}
	if got := metricValues(t, n)["meridian_edge_hit_latency_p99_seconds"]; got <= 0 {
		t.Errorf("hit latency p99 metric = %v, want > 0", got)
	}
}
