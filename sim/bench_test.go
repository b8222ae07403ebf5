package sim

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/rusage"
	"github.com/meridian-cdn/meridian/sim/scenario"
)

// BenchmarkRun runs whole scenarios in this process and reports the request rate the clients
// achieved and the process CPU it took (cores = CPU seconds per wall-clock second). For the
// split between the fleet and the load generator, run with -cpuprofile and read the "sim"
// label (Run tags the fleet's goroutines sim=fleet and the clients' sim=load):
//
//	go test -run '^$' -bench 'Run/world$' -benchtime 1x -cpuprofile cpu.prof ./sim/
//	go tool pprof -tags cpu.prof
func BenchmarkRun(b *testing.B) {
	off := false
	scenarios := []struct {
		name string
		s    func() *scenario.Scenario
	}{
		{"small", scenario.Small},
		{"world", scenario.Default},
		// Without WAN delays and with more clients the run is bound by CPU, not by latency:
		// the most this machine can drive.
		{"world-nowan", func() *scenario.Scenario {
			s := scenario.Default()
			s.WAN.Enabled = &off
			s.Clients.Concurrency = 256
			return s
		}},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := sc.s()
				cpu0, wall0 := cpuTime(), time.Now()
				rep, err := Run(context.Background(), s, Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(rep.RequestsPerSec, "req/s")
				b.ReportMetric((cpuTime()-cpu0).Seconds()/time.Since(wall0).Seconds(), "cores")
				b.ReportMetric(rep.HitRatio, "hit-ratio")
			}
		})
	}
}

// cpuTime is the user and system CPU time this process has used, 0 where the system does not
// say (BenchmarkRun then reports 0 cores).
func cpuTime() time.Duration {
	d, _ := rusage.CPU()
	return d
}
