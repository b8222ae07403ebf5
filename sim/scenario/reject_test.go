package scenario

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestShippedScenariosLoad: every scenario file shipped with the simulator loads.
func TestShippedScenariosLoad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob(filepath.Join("..", "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no scenario files found")
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("Load(%s): %v", f, err)
		}
	}
}

// TestParseRejects: nonsense is refused, naming the key at fault (unknown kinds and PoPs,
// duplicate PoP ids and events after the run are TestParseErrors' bad files). An event whose
// duration outlasts the run is allowed: its window runs to the end of the run.
func TestParseRejects(t *testing.T) {
	const pops = "pops: [{id: a, lat: 0, lon: 0}, {id: b, lat: 1, lon: 1}]\n"
	tests := []struct {
		name, yaml, field string
	}{
		{"negative duration", "duration: -1s\n" + pops, "duration"},
		{"negative warmup", "warmup: -1s\n" + pops, "warmup"},
		{"negative nodes", "pops: [{id: a, lat: 0, lon: 0, nodes: -1}]\n", "pops[0].nodes"},
		{"too many nodes", "pops: [{id: a, lat: 0, lon: 0, nodes: 65}]\n", "pops[0].nodes"},
		{"negative concurrency", pops + "clients: {concurrency: -1}\n", "clients.concurrency"},
		{"negative rate", pops + "clients: {rate: -1}\n", "clients.rate"},
		{"negative objects", pops + "workload: {objects: -1}\n", "workload.objects"},
		{"negative ttl", pops + "workload: {ttl: -1s}\n", "workload.ttl"},
		{"negative rum every", pops + "clients: {rum: {enabled: true, every: -1s}}\n", "clients.rum.every"},
		{"negative rum candidates", pops + "clients: {rum: {enabled: true, candidates: -1}}\n", "clients.rum.candidates"},
		{"negative cpu budget", "pops: [{id: a, lat: 0, lon: 0, cpu_budget: -1}]\n", "pops[0].cpu_budget"},
		{"event before the run", pops + "events: [{at: -1s, kind: drain, pop: a}]\n", "events[0].at"},
		{"negative event duration", pops + "events: [{at: 1s, kind: kill, pop: a, duration: -1s}]\n", "events[0].duration"},
		{"duration on a drain", pops + "events: [{at: 1s, kind: drain, pop: a, duration: 5s}]\n", "events[0].duration"},
		{"duration on an undrain", pops + "events: [{at: 1s, kind: undrain, pop: a, duration: 5s}]\n", "events[0].duration"},
		{"duration on a purge storm", pops + "events: [{at: 1s, kind: purge-storm, duration: 5s}]\n", "events[0].duration"},
		{"negative purge count", pops + "events: [{at: 1s, kind: purge-storm, count: -1}]\n", "events[0].count"},
		{"negative delay", pops + "events: [{at: 1s, kind: origin-slow, duration: 1s, delay: -1s}]\n", "events[0].delay"},
		{"share above 1", pops + "events: [{at: 1s, kind: flash-crowd, duration: 1s, share: 1.5}]\n", "events[0].share"},
		{"negative share", pops + "events: [{at: 1s, kind: flash-crowd, duration: 1s, share: -0.5}]\n", "events[0].share"},
		{"min latency gain above 1", pops + "check: {min_latency_gain: 1.5}\n", "check.min_latency_gain"},
		{"negative min latency gain", pops + "check: {min_latency_gain: -0.1}\n", "check.min_latency_gain"},
		{"negative grace", pops + "check: {grace: -1s}\n", "check.grace"},
		{"negative max moved p99", pops + "check: {max_moved_p99: -1s}\n", "check.max_moved_p99"},
		{"negative max stale", pops + "check: {max_stale_after_purge: -1}\n", "check.max_stale_after_purge"},
		{"negative max outage", pops + "check: {max_outage_errors: -1}\n", "check.max_outage_errors"},
		{"negative cpu per request", pops + "workload: {cpu_per_request: -1ms}\n", "workload.cpu_per_request"},
		{"negative size weight", pops + "workload: {sizes: [{bytes: 10, weight: -1}]}\n", "workload.sizes[0].weight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted it, want an error naming %s", tt.field)
			}
			if !strings.Contains(err.Error(), ": "+tt.field+": ") {
				t.Errorf("Parse error = %v, want it to name %s", err, tt.field)
			}
		})
	}
}
