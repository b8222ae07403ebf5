//go:build !unix

package control

import "time"

// processCPU is not measured here: the benchmarks then report 0 CPU per purge.
func processCPU() time.Duration { return 0 }
