// Package sim runs a whole Meridian fleet on one machine: it starts the control plane, the
// PoPs' edge nodes, the DNS server and the reference origin on 127.0.0.x (Fleet), drives
// simulated clients through them with the scenario's workload, plays the scenario's timeline
// of faults, and hands what the clients saw to the report (Run), behind the `meridian sim`
// command (NewCommand).
//
// It is the runner; the rest of the simulator lives in its sub-packages, and dependencies
// point one way, sim -> report -> scenario -> wan:
//
//   - sim/scenario: the scenario format, its validation and the built-in scenarios;
//   - sim/wan: the WAN latency model and the dialer that applies it to real connections;
//   - sim/report: recording, percentiles, the --check invariants, report.json and report.html.
//
// Only main imports sim.
package sim
