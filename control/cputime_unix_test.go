//go:build unix

package control

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user and system) the whole test process has used: control, its
// embedded NATS server, the edges and the benchmark's clients.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processMinorFaults is how many pages the test process has touched for the first time (minor
// page faults: memory new to it, or given back to the system and taken again).
func processMinorFaults() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return int64(ru.Minflt)
}
