package rusage

import (
	"fmt"
	"time"

	"golang.org/x/sys/windows"
)

// CPU is the CPU time the process has used (user + system), from GetProcessTimes.
func CPU() (time.Duration, error) {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0, fmt.Errorf("GetProcessTimes: %w", err)
	}
	// Kernel and user times are durations in 100 ns units; Filetime.Nanoseconds would treat
	// them as dates and subtract the 1601-to-1970 offset.
	ticks := func(ft windows.Filetime) int64 { return int64(ft.HighDateTime)<<32 | int64(ft.LowDateTime) }
	return time.Duration((ticks(kernel) + ticks(user)) * 100), nil
}

// MinorFaults is not read on Windows, whose page-fault count does not tell minor faults from
// others.
func MinorFaults() (int64, error) { return 0, ErrUnsupported }
