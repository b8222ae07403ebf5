//go:build unix

package edge

import (
	"fmt"
	"syscall"
	"time"
)

// processCPUTime is the CPU time the process has used (user + system), from getrusage.
func processCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
