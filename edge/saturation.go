package edge

import (
	"runtime"
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
	// CPUTime, if set, is the node's CPU time so far, in place of the process's (getrusage):
	// the simulator meters each simulated node's CPU this way.
	CPUTime func() time.Duration `yaml:"-"`
}

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

// saturationOf is the node's saturation figure: the largest of the CPU it used over the
// interval (in cores) against the cores it may use, and its in-flight requests against its
// limit. A term whose limit is negative is left out.
func saturationOf(c SaturationConfig, cpuCores float64, inFlight int64) float64 {
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
	return s
}
