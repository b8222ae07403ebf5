//go:build !unix

package fetch

import (
	"testing"
	"time"
)

// cpuTime is not measured here: the benchmarks then report 0 cpu-ns/op.
func cpuTime(testing.TB) time.Duration { return 0 }
