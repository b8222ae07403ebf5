package control

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestHelperSimNodes is not a test: TestLongFleet runs it in a child process to simulate edge
// nodes, so that the control plane's CPU can be measured on its own. It stops by itself after
// two minutes in case its parent died.
func TestHelperSimNodes(t *testing.T) {
	url := os.Getenv("MERIDIAN_SIM_NATS")
	if url == "" {
		t.Skip("helper process for TestLongFleet")
	}
	n, _ := strconv.Atoi(os.Getenv("MERIDIAN_SIM_NODES"))
	creds, err := natsauth.FileOptions(os.Getenv("MERIDIAN_SIM_NATS_CREDS"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const perPoP = 10
	var wg sync.WaitGroup
	for p := 0; p*perPoP < n; p++ {
		_, js := natstest.ConnectURL(t, url, creds...) // one connection per PoP, as its leaf node would carry
		for i := 0; i < perPoP && p*perPoP+i < n; i++ {
			node := wire.Node{PoP: fmt.Sprintf("pop%02d", p), ID: fmt.Sprintf("n%02d", i), Capacity: 1000,
				Lat: float64(p), Lon: float64(i), HTTPAddr: "127.0.0.1:80"}
			r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node, Interval: time.Second,
				Load: func() wire.LoadReport {
					return wire.LoadReport{RequestsPerSec: rand.Float64() * 1000, CPU: rand.Float64(), Healthy: true}
				}})
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				// Spread the heartbeats over the second, as independent nodes would.
				select {
				case <-time.After(rand.N(time.Second)):
				case <-ctx.Done():
					return
				}
				_ = r.Run(ctx)
			})
		}
	}
	wg.Wait()
}

// TestLongFleet is the control plane benchmark: 200 simulated nodes (in a child process)
// heartbeating at 1 Hz against one control plane with embedded NATS. It reports the control
// process's CPU, the heartbeat-to-visible latency in the fleet view that serves /v1/pops, and
// how long a node takes to disappear after it dies. Run with MERIDIAN_LONG=1; about 45 s.
func TestLongFleet(t *testing.T) {
	if os.Getenv("MERIDIAN_LONG") != "1" {
		t.Skip("set MERIDIAN_LONG=1 to run the 200-node fleet benchmark")
	}
	const nodes = 200
	window := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("MERIDIAN_LONG_WINDOW")); err == nil {
		window = d
	}
	ttl := 3 * time.Second
	ts := startServer(t, Config{HeartbeatTTL: ttl})
	v := ts.Fleet()

	child := exec.Command(os.Args[0], "-test.run=^TestHelperSimNodes$", "-test.count=1")
	child.Env = append(os.Environ(), "MERIDIAN_SIM_NATS="+ts.NATSURL(), "MERIDIAN_SIM_NATS_CREDS="+credsFile(t, ts.NATSURL(), natsauth.Control()), "MERIDIAN_SIM_NODES="+strconv.Itoa(nodes), "MERIDIAN_LONG=")
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatalf("start simulated nodes: %v", err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	wait.For(t, 30*time.Second, "200 nodes in the fleet", func() bool { return len(v.Nodes()) == nodes })

	// Watch the view as /v1/pops sees it: every new report's age when it becomes visible,
	// and when each node disappears.
	var (
		mu      sync.Mutex // guards lat, slowAt, gone
		lat     []time.Duration
		slowAt  = map[int64]int{} // seconds (since the epoch) holding samples over 100 ms
		gone    = map[string]time.Time{}
		measure = true
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		last := map[string]time.Time{}
		for {
			ch := v.Changed()
			now := time.Now()
			seen := map[string]bool{}
			mu.Lock()
			for _, n := range v.Nodes() {
				k := wire.FleetKey(n.PoP, n.ID)
				seen[k] = true
				if prev, ok := last[k]; ok && n.Load.At.After(prev) && measure {
					lat = append(lat, now.Sub(n.Load.At))
					if now.Sub(n.Load.At) > 100*time.Millisecond {
						slowAt[now.Unix()]++
					}
				}
				last[k] = n.Load.At
			}
			for k := range last {
				if !seen[k] {
					if _, ok := gone[k]; !ok {
						gone[k] = now
					}
				}
			}
			mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	before := processCPU()
	start := time.Now()
	select {
	case <-time.After(window): // the measurement window, not a synchronisation
	case <-t.Context().Done():
	}
	after := processCPU()
	wall := time.Since(start)
	cpu := after - before

	mu.Lock()
	measure = false
	samples := slices.Clone(lat)
	slowSamples, slowSeconds := 0, len(slowAt)
	for _, c := range slowAt {
		slowSamples += c
	}
	mu.Unlock()
	slices.Sort(samples)
	pct := func(p float64) time.Duration {
		if len(samples) == 0 {
			return 0
		}
		return samples[min(len(samples)-1, int(float64(len(samples))*p))]
	}

	// Kill every node at once (SIGKILL: no clean leave) and time their disappearance.
	killed := time.Now()
	if err := child.Process.Kill(); err != nil {
		t.Fatalf("kill simulated nodes: %v", err)
	}
	wait.For(t, 3*ttl, "every killed node to disappear", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gone) == nodes
	})
	mu.Lock()
	var death []time.Duration
	for _, at := range gone {
		if at.After(killed) {
			death = append(death, at.Sub(killed))
		}
	}
	mu.Unlock()
	slices.Sort(death)

	t.Logf("fleet benchmark: %d nodes at 1 Hz, heartbeat TTL %v, window %v", nodes, ttl, wall.Round(time.Millisecond))
	t.Logf("control process CPU: %v over %v = %.1f%% of one core (includes the embedded NATS server and this measuring loop)",
		cpu.Round(time.Millisecond), wall.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds())
	t.Logf("heartbeat-to-visible latency: %d samples, p50 %v, p99 %v, max %v",
		len(samples), pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
	t.Logf("samples over 100 ms: %d, within %d distinct seconds (stalls, not a steady tail, when few)", slowSamples, slowSeconds)
	if len(death) > 0 {
		t.Logf("death-to-disappearance (SIGKILL to gone from the view): %d nodes, min %v, p50 %v, max %v",
			len(death), death[0].Round(time.Millisecond), death[len(death)/2].Round(time.Millisecond), death[len(death)-1].Round(time.Millisecond))
	}
	if want := int(window.Seconds()) * nodes * 8 / 10; len(samples) < want {
		t.Errorf("saw %d heartbeats in %v, want at least %d (80%% of %d nodes at 1 Hz)", len(samples), window, want, nodes)
	}
	if len(death) != nodes {
		t.Errorf("saw %d nodes disappear after the kill, want %d", len(death), nodes)
	}
}
