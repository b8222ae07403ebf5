// Package rusage reads what the system says of this process's use of resources: its CPU time
// (the edge's load report, and the benchmarks' CPU per request) and its minor page faults (the
// purge benchmark's). Each system reads them its own way (rusage_unix.go, rusage_windows.go);
// elsewhere they are an error.
package rusage

import "errors"

// ErrUnsupported is what a reading returns on a system that does not say.
var ErrUnsupported = errors.New("rusage: not read on this system")
