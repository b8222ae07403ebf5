//go:build !unix && !windows

package rusage

import "time"

// CPU is not read on this system.
func CPU() (time.Duration, error) { return 0, ErrUnsupported }

// MinorFaults is not read on this system.
func MinorFaults() (int64, error) { return 0, ErrUnsupported }
