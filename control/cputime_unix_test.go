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
