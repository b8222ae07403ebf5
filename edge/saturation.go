package edge

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// SaturationConfig says what a node counts as full when it measures its own saturation, the
// figure DNS sheds on when no capacity is configured (docs/dns.md, "Saturation").
type SaturationConfig struct {
	// CPUs is how many cores the node may use. Zero means GOMAXPROCS; negative leaves CPU out
	// of the figure (several nodes in one process, as in tests and the simulator, share one
	// process's CPU time and cannot tell theirs apart).
	CPUs float64 `yaml:"cpus"`
	// MaxInFlight is the number of requests in flight at which the node is full. Zero means
	// DefaultMaxInFlight; negative leaves in-flight requests out of the figure.
	MaxInFlight int `yaml:"max_in_flight"`
	// HitLatencyTarget is the p99 of cache hits' time to response header (over the last
	// hitWindowSlots seconds) at which the node counts as full: a hit served from memory takes
	// well under a millisecond, so a slow p99 means requests queue for CPU or locks. Zero means
	// DefaultHitLatencyTarget; negative leaves hit latency out of the figure.
	HitLatencyTarget time.Duration `yaml:"hit_latency_target"`
	// CPUTime, if set, is the node's CPU time so far, in place of the process's (getrusage):
	// the simulator meters each simulated node's CPU this way.
	CPUTime func() time.Duration `yaml:"-"`
}

// DefaultHitLatencyTarget is SaturationConfig.HitLatencyTarget's default.
const DefaultHitLatencyTarget = 20 * time.Millisecond

// saturationCPU is the CPU the node used since the previous load report, in cores, and the
// meter reading to keep for the next one: the process's CPU (processCores) unless
// SaturationConfig.CPUTime meters the node.
func (n *Node) saturationCPU(processCores float64, last loadMark, secs float64) (cores float64, mark time.Duration) {
	meter := n.cfg.Fleet.Saturation.CPUTime
	if meter == nil {
		return processCores, 0
	}
	mark = meter()
	if !last.at.IsZero() && secs > 0 {
		cores = (mark - last.satCPU).Seconds() / secs
	}
	return cores, mark
}

// DefaultMaxInFlight is SaturationConfig.MaxInFlight's default: a node holding this many
// client requests at once counts as full.
const DefaultMaxInFlight = 1024

// saturation counts what the node needs to measure its saturation. The zero value is ready.
type saturation struct {
	// started counts requests that entered serve; minus the finished ones (metrics.nRequests,
	// counted by finish) it is the number in flight, without a second hook at the end.
	started atomic.Int64
}

// inFlight is the number of client requests being served now.
func (n *Node) inFlight() int64 {
	done := n.metrics.nRequests.Load() // before started, so that done <= started
	return max(0, n.sat.started.Load()-done)
}

// saturationFigure is the largest of the CPU the node used over the interval (in cores)
// against the cores it may use, its in-flight requests against its limit, and its hit-latency
// p99 against the target. A term whose limit is negative is left out.
func saturationFigure(c SaturationConfig, cpuCores float64, inFlight int64, hitP99 time.Duration) float64 {
	var s float64
	cpus := c.CPUs
	if cpus == 0 {
		cpus = float64(runtime.GOMAXPROCS(0))
	}
	if cpus > 0 {
		s = max(s, cpuCores/cpus)
	}
	limit := c.MaxInFlight
	if limit == 0 {
		limit = DefaultMaxInFlight
	}
	if limit > 0 {
		s = max(s, float64(inFlight)/float64(limit))
	}
	target := c.HitLatencyTarget
	if target == 0 {
		target = DefaultHitLatencyTarget
	}
	if target > 0 {
		s = max(s, hitP99.Seconds()/target.Seconds())
	}
	return s
}

// Hit latency: the service time of every cache hit (request start to response header, so a
// slow client's download is not the node's load) goes into a histogram per second, and the
// p99 is read over the last hitWindowSlots seconds. Recording is one atomic add; the window
// costs 20 KiB per node.
const (
	hitWindowSlots = 10  // seconds in the window
	hitBuckets     = 256 // log-linear buckets: exact below 8 µs, then 8 per power of two (±6 %)
	// hitMinSamples pads a quiet window: with fewer hits than this the missing ones count as
	// instant, so the p99 is then the 11th slowest hit and a few slow ones (a GC pause, a
	// cold start) on an idle node cannot make it look full.
	hitMinSamples = 1000
)

// hitWindow is a sliding window of hit latencies. The zero value is ready.
type hitWindow struct {
	mu    sync.Mutex // serialises resetting a slot for a new second
	slots [hitWindowSlots]hitSlot
}

type hitSlot struct {
	sec    atomic.Int64 // the Unix second the counts are for
	counts [hitBuckets]atomic.Uint32
}

// hitBucket is the bucket of a latency: microseconds, exact below 8, else the power of two and
// the next three bits.
func hitBucket(d time.Duration) int {
	us := uint64(max(0, d/time.Microsecond))
	if us < 8 {
		return int(us)
	}
	e := bits.Len64(us) - 1 // >= 3
	return min(hitBuckets-1, 8+(e-3)*8+int(us>>(e-3)&7))
}

// hitBucketFloor is the smallest latency in bucket i.
func hitBucketFloor(i int) time.Duration {
	if i < 8 {
		return time.Duration(i) * time.Microsecond
	}
	e, m := (i-8)/8+3, uint64((i-8)%8)
	return time.Duration((8+m)<<(e-3)) * time.Microsecond
}

// record counts one hit that took d, in the second of at. A hit is recorded as its answer ends,
// in the second it began (Node.finish): a slow client's may come a window late or more, when
// its slot holds a later second, which it must not erase; it is outside the window, and dropped.
// But a later second that now (read only then) has not reached was recorded before the wall
// clock went back: no window p99 reads holds it, and the hit takes its slot. Were it dropped,
// so would every hit be, for as long as the clock went back (an NTP step of an hour: an hour).
func (w *hitWindow) record(d time.Duration, at time.Time, now func() time.Time) {
	sec := at.Unix()
	s := &w.slots[uint64(sec)%hitWindowSlots]
	if cur := s.sec.Load(); cur != sec {
		if cur > sec && cur <= now().Unix() {
			return
		}
		w.mu.Lock()
		if cur = s.sec.Load(); cur < sec || cur > sec && cur > now().Unix() {
			for i := range s.counts {
				s.counts[i].Store(0)
			}
			s.sec.Store(sec) // after the reset: a recorder that sees sec counts into clean buckets
			cur = sec
		}
		w.mu.Unlock()
		if cur != sec {
			return
		}
	}
	s.counts[hitBucket(d)].Add(1)
}

// p99 is the 99th percentile of the hits of the window ending at now (the floor of its bucket),
// a window of fewer than hitMinSamples hits padded with instant ones; 0 without hits.
func (w *hitWindow) p99(now time.Time) time.Duration {
	sec := now.Unix()
	var counts [hitBuckets]uint64
	var total uint64
	for i := range w.slots {
		s := &w.slots[i]
		if d := sec - s.sec.Load(); d < 0 || d >= hitWindowSlots {
			continue
		}
		for b := range s.counts {
			c := uint64(s.counts[b].Load())
			counts[b] += c
			total += c
		}
	}
	if total == 0 {
		return 0
	}
	n := max(total, hitMinSamples)
	rank := (n*99 + 99) / 100 // ceil(0.99 n), 1-based from the fastest
	pad := n - total
	if rank <= pad {
		return 0
	}
	rank -= pad
	var seen uint64
	for b, c := range counts {
		seen += c
		if seen >= rank {
			return hitBucketFloor(b)
		}
	}
	return hitBucketFloor(hitBuckets - 1)
}
