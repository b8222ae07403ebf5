//go:build !unix

package control

import "time"

// processCPU is not measured here: the benchmarks then report 0 CPU per purge.
func processCPU() time.Duration { return 0 }

// processMinorFaults is not read here: the benchmark then reports 0 faults per purge.
func processMinorFaults() int64 { return 0 }
