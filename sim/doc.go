// Package sim runs a whole Meridian fleet on one machine: it owns the scenario format, the WAN
// latency model, the client workload, the recording of what clients saw, the --check invariants
// and the end-of-run report with its plots.
package sim
