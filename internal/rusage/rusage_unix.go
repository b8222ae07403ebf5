//go:build unix

package rusage

import (
	"fmt"
	"syscall"
	"time"
)

// CPU is the CPU time the process has used (user + system), from getrusage.
func CPU() (time.Duration, error) {
	ru, err := self()
	if err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// MinorFaults is how many pages the process has touched for the first time (minor page
// faults: memory new to it, or given back to the system and taken again), from getrusage.
func MinorFaults() (int64, error) {
	ru, err := self()
	if err != nil {
		return 0, err
	}
	return int64(ru.Minflt), nil
}

func self() (*syscall.Rusage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return nil, fmt.Errorf("getrusage: %w", err)
	}
	return &ru, nil
}
