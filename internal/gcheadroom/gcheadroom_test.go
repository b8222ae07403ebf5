package gcheadroom

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	edge := Config{Min: 64 * mib, Fraction: 0.3, Max: 400}
	for _, tc := range []struct {
		name          string
		live, scanned int64
		c             Config
		want          int
	}{
		{"no collection yet", 0, 0, edge, 400},
		{"hits: a small live heap keeps Max", 14 * mib, 14 * mib, edge, 400},
		{"Min is exactly Max's headroom", 16 * mib, 16 * mib, edge, 400},
		{"a filling store: Min, not 4 x live", 128 * mib, 128 * mib, edge, 50},
		{"Min at 100 MiB live", 100 * mib, 100 * mib, edge, 64},
		{"stacks and globals count against the headroom", 100 * mib, 128 * mib, edge, 50},
		{"a full store: Fraction", 1024 * mib, 1024 * mib, edge, 30},
		{"Fraction past where it overtakes Min", 256 * mib, 256 * mib, edge, 30},
		{"just below where Fraction overtakes Min", 213 * mib, 213 * mib, edge, 31},
		{"no headroom asked: the least GOGC", 1024 * mib, 1024 * mib, Config{Max: 100}, 1},
		{"a Max below 1 is returned as it is", 100 * mib, 100 * mib, Config{Min: mib}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.live, tc.scanned, tc.c); got != tc.want {
				t.Errorf("Percent(%d, %d, %+v) = %d, want %d", tc.live, tc.scanned, tc.c, got, tc.want)
			}
		})
	}
}

// gogc is the runtime's current GOGC.
func gogc(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestRunFollowsCollections runs Run in this process: after a collection of a heap with 32 MiB
// live, GOGC becomes what Config asks for, in each regime, and Run stops with its context.
func TestRunFollowsCollections(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	live := make([]byte, 32<<20)
	defer runtime.KeepAlive(live)
	for _, tc := range []struct {
		name        string
		c           Config
		least, most int // the GOGC expected
	}{
		// Half the live heap, whatever else the test binary holds.
		{"Fraction", Config{Min: 1 << 20, Fraction: 0.5, Max: 400, Every: time.Millisecond}, 50, 50},
		// 48 MiB over the 32 MiB held and the little else the test binary has live: read
		// from anything but the live heap (the goal, the memory mapped), it is far lower.
		{"Min", Config{Min: 48 << 20, Max: 400, Every: time.Millisecond}, 120, 150},
		// 1 GiB of headroom is more than Max gives a live heap of about 32 MiB.
		{"Max", Config{Min: 1 << 30, Fraction: 0.5, Max: 300, Every: time.Millisecond}, 300, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			wg.Go(func() { Run(ctx, tc.c) })
			wait.For(t, 10*time.Second, fmt.Sprintf("GOGC %d to %d", tc.least, tc.most), func() bool {
				runtime.GC()
				p := gogc(t)
				return p >= tc.least && p <= tc.most
			})
			cancel()
			stopped := make(chan struct{})
			go func() {
				wg.Wait()
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				t.Fatal("Run still running 10 s after its context ended")
			}
		})
	}
}
