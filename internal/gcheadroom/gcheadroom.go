// Package gcheadroom keeps the garbage collector's headroom (how much the heap may grow above
// its live data before the next collection) near a fixed size while the live heap is small
// relative to it, instead of letting it grow in proportion to the live heap.
//
// Why: GOGC sizes the headroom as a share of the live heap. In an edge most of the live heap is
// the store's bodies, pointer-free bytes the collector marks almost for free, so a headroom
// that grows with them buys no collector time. What it costs is fresh memory: at GOGC=400 an
// edge filling its store took a fresh page for about four times every byte it stored, and on
// virtual machines where the first touch of a page costs 7-15 µs that was a sixth of the CPU
// of a 1 KiB miss (docs/benchmarks.md, "Twenty-first pass"). Run sets GOGC after each
// collection (within Every of it) so that the next goal is the live heap plus
// max(Min, Fraction x live), with GOGC at most Max: a small live heap (a node serving hits)
// keeps Max, a large one (a full store) gets Fraction. The runtime applies GOGC to the live
// heap, goroutine stacks and globals together, so Run divides the headroom by all three.
package gcheadroom

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Config says how much headroom to keep.
type Config struct {
	// Min is the headroom kept at least, in bytes.
	Min int64
	// Fraction is the headroom as a share of the live heap, where that is more than Min.
	Fraction float64
	// Max is the highest GOGC set, which a live heap smaller than Min/Max*100 gets.
	Max int
	// Every is how often Run looks for a new collection; it must be positive.
	Every time.Duration
}

// Percent is the GOGC that gives a live heap of live bytes the headroom c asks for, where
// the runtime applies GOGC to scanned bytes (the live heap, goroutine stacks and globals). It
// is between 1 and c.Max (c.Max if that is less than 1).
func Percent(live, scanned int64, c Config) int {
	if live <= 0 || scanned <= 0 || c.Max < 1 {
		return c.Max
	}
	h := max(float64(c.Min), c.Fraction*float64(live))
	// Rounded up, less a rounding error's worth: 30 % of a live heap is GOGC 30, not 31.
	p := math.Ceil(100*h/float64(scanned) - 1e-6)
	if !(p < float64(c.Max)) { // also NaN
		return c.Max
	}
	return max(int(p), 1)
}

// Run sets GOGC from the live heap after every collection until ctx ends. It changes GOGC only
// when the percentage changes, and leaves it as last set when it returns. It does nothing
// with a Max below 1 (GOGC 0 would collect without pause, a negative one never).
func Run(ctx context.Context, c Config) {
	if c.Max < 1 || c.Every <= 0 {
		return
	}
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	t := time.NewTicker(c.Every)
	defer t.Stop()
	var seen uint64
	current := -1
	for {
		metrics.Read(s)
		if v, ok := values(s); ok && v[0] != seen {
			seen = v[0]
			live := int64(v[1])
			if p := Percent(live, live+int64(v[2]+v[3]), c); p != current {
				debug.SetGCPercent(p)
				current = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// values returns the samples' values, unless one is not a uint64 (a metric this runtime does
// not have).
func values(s []metrics.Sample) (v [4]uint64, ok bool) {
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return v, false
		}
		v[i] = s[i].Value.Uint64()
	}
	return v, true
}
