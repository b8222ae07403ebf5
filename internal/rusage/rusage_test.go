package rusage

import (
	"runtime"
	"testing"
	"time"
)

// TestCPU: the process CPU time the edge's load report (cores) is computed from is read on
// this system, and grows, no faster than the cores allow, while the process works.
func TestCPU(t *testing.T) {
	wall0 := time.Now()
	cpu0, err := CPU()
	if err != nil {
		t.Fatalf("CPU: %v", err)
	}
	if cpu0 < 0 { // 0 is possible: a process just started on a system counting in ticks
		t.Fatalf("CPU = %v at the test's start, want >= 0", cpu0)
	}
	// Reading it is work: read until the reading moves, which a tick-based clock (Windows
	// counts in scheduler ticks) does within tens of milliseconds.
	cpu := cpu0
	for deadline := wall0.Add(10 * time.Second); cpu == cpu0 && time.Now().Before(deadline); {
		if cpu, err = CPU(); err != nil {
			t.Fatalf("CPU: %v", err)
		}
	}
	wall := time.Since(wall0)
	// Slack for a reading that counts in ticks (up to 15.6 ms on Windows).
	if used, most := cpu-cpu0, wall*time.Duration(runtime.NumCPU())+20*time.Millisecond; used <= 0 || used > most {
		t.Errorf("CPU grew by %v in %v on %d CPUs, want (0, %v]", used, wall, runtime.NumCPU(), most)
	}
}
