package edge

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSaturationOf(t *testing.T) {
	procs := float64(runtime.GOMAXPROCS(0))
	tests := []struct {
		name     string
		cfg      SaturationConfig
		cpuCores float64
		inFlight int64
		want     float64
	}{
		{"idle", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 0, 0, 0},
		{"cpu bound", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 3, 10, 0.75},
		{"in-flight bound", SaturationConfig{CPUs: 4, MaxInFlight: 100}, 1, 90, 0.9},
		{"over both limits", SaturationConfig{CPUs: 2, MaxInFlight: 10}, 3, 20, 2},
		{"cpu left out", SaturationConfig{CPUs: -1, MaxInFlight: 100}, 8, 50, 0.5},
		{"in-flight left out", SaturationConfig{CPUs: 4, MaxInFlight: -1}, 1, 5000, 0.25},
		{"default in-flight limit", SaturationConfig{CPUs: -1}, 0, DefaultMaxInFlight / 2, 0.5},
		{"default cores", SaturationConfig{MaxInFlight: -1}, procs / 2, 0, 0.5},
		{"everything left out", SaturationConfig{CPUs: -1, MaxInFlight: -1}, 8, 5000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := saturationOf(tt.cfg, tt.cpuCores, tt.inFlight); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("saturationOf(%+v, %v, %d) = %v, want %v", tt.cfg, tt.cpuCores, tt.inFlight, got, tt.want)
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
	if got := s.edge.LoadReport().Saturation; got != 0 {
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
	waitFor(t, 5*time.Second, "requests in flight", func() bool { return s.edge.inFlight() == held })
	if got, want := s.edge.LoadReport().Saturation, float64(held)/4; got != want {
		t.Errorf("saturation with %d of 4 in flight = %v, want %v", held, got, want)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("held request: %v", err)
	}
	// The client may read the whole body before the handler returns; wait for the node's count.
	waitFor(t, 5*time.Second, "requests finished", func() bool { return s.edge.inFlight() == 0 })
	if got := s.edge.LoadReport().Saturation; got != 0 {
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
	s.edge.LoadReport()
	used.Add(int64(300 * time.Millisecond))
	s.clock.Advance(time.Second)
	if got := s.edge.LoadReport().Saturation; math.Abs(got-0.6) > 1e-9 {
		t.Errorf("saturation after 0.3 s of CPU in 1 s on 0.5 cores = %v, want 0.6", got)
	}
}
