//go:build !unix

package sim

import "time"

// cpuTime is not measured here: BenchmarkRun then reports 0 cores.
func cpuTime() time.Duration { return 0 }
