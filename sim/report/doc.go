// Package report turns what a simulator run observed into its verdict and its report: the
// Recorder aggregates the clients' samples, the fleet's load and the purges in bounded memory
// (latency percentiles from HDR histograms), CheckInvariants judges them against the
// scenario's limits, and the Report is written as report.json, a summary table and a
// self-contained report.html with plots. It knows scenarios (sim/scenario) and the WAN model
// (sim/wan), and nothing of how a run is driven.
package report
