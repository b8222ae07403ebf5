package report

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

func TestDirectionChanges(t *testing.T) {
	tests := []struct {
		name   string
		series []float64
		want   int
	}{
		{"flat", []float64{0, 0, 0}, 0},
		{"rise then settle down", []float64{0, 0.95, 0.95, 0.8, 0.5}, 1},
		{"small wobble ignored", []float64{0.5, 0.52, 0.49, 0.51}, 0},
		{"oscillation", []float64{0, 1, 0, 1, 0}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := directionChanges(tt.series, 0); got != tt.want {
				t.Errorf("directionChanges(%v) = %d, want %d", tt.series, got, tt.want)
			}
		})
	}
}

// TestCheckMeasured: the two invariants judge the figures the report holds.
func TestCheckMeasured(t *testing.T) {
	s := scenario.Default()
	e, ok := s.Crowd()
	if !ok {
		t.Fatal("the world scenario has no city flash crowd")
	}
	sat := make([]float64, 60)
	shed := make([]float64, 60)
	start := int(e.At / time.Second)
	for i := start; i < 60; i++ {
		sat[i], shed[i] = 0.9, 0.5
	}
	groups := map[string]map[string]LatencyStats{
		"europe": {scenario.GroupRUM: {Count: 10, P50: 80}, scenario.GroupGeo: {Count: 10, P50: 80}},
	}
	good := &Measured{Saturation: map[string][]float64{"bom": sat}, Shed: map[string][]float64{"bom": shed},
		Groups:   groups,
		Trombone: map[string]LatencyStats{scenario.GroupRUM: {Count: 10, P50: 100}, scenario.GroupGeo: {Count: 10, P50: 160}},
		Crowd:    map[string]LatencyStats{"bom": {P99: 50}, "sin": {P99: 300}}}
	inv := map[string]Invariant{}
	checkMeasured(s, good, inv)
	if !inv[InvOverloadShed].Pass || !inv[InvLatencyRouting].Pass {
		t.Errorf("good figures: %+v, want both to pass", inv)
	}
	bad := *good
	bad.Saturation = map[string][]float64{"bom": append(append([]float64(nil), sat[:50]...), 1.2)}
	bad.Trombone = map[string]LatencyStats{scenario.GroupRUM: {Count: 10, P50: 150}, scenario.GroupGeo: {Count: 10, P50: 160}}
	inv = map[string]Invariant{}
	checkMeasured(s, &bad, inv)
	if inv[InvOverloadShed].Pass || inv[InvLatencyRouting].Pass {
		t.Errorf("bad figures: %+v, want both to fail", inv)
	}
}

// TestLatencyRoutingNeedsBeaconRounds: latency_routing judges the rum group's median, which
// moves only once most of the group's requests were answered after a round of beacons reached
// DNS and the answers given before had expired: a run shorter than 2 x (clients.rum.every +
// clients.dns_ttl) after its warm-up is reported as not judged (neither pass nor fail, and
// --check does not fail for it), whatever its figures. `meridian sim --duration 10s --check`
// of the world scenario (beacons every 10 s, DNS TTL 10 s) failed it: rum 506 ms against geo
// 545 ms, 7 % lower.
func TestLatencyRoutingNeedsBeaconRounds(t *testing.T) {
	bad := &Measured{
		Groups:   map[string]map[string]LatencyStats{"africa": {scenario.GroupRUM: {Count: 10, P50: 504}, scenario.GroupGeo: {Count: 10, P50: 412}}},
		Trombone: map[string]LatencyStats{scenario.GroupRUM: {Count: 25, P50: 506}, scenario.GroupGeo: {Count: 80, P50: 545}},
	}
	tests := []struct {
		name     string
		duration time.Duration
		judged   bool
	}{
		{"10s", 10 * time.Second, false},
		{"just under 2 x (every + dns_ttl)", 40*time.Second - time.Millisecond, false},
		{"2 x (every + dns_ttl)", 40 * time.Second, true},
		{"the world scenario's minute", time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := scenario.Default()
			s.Duration = tt.duration
			s.Events = nil
			inv := map[string]Invariant{}
			checkMeasured(s, bad, inv)
			got, ok := inv[InvLatencyRouting]
			if !ok {
				t.Fatalf("no %s among %v", InvLatencyRouting, inv)
			}
			if got.NotJudged == tt.judged || got.Pass {
				t.Errorf("%s = %+v, want judged %v and not passed", InvLatencyRouting, got, tt.judged)
			}
			if !tt.judged {
				if !strings.HasPrefix(got.Detail, "not judged: run too short") || !strings.Contains(got.Detail, "40s") {
					t.Errorf("detail %q, want it to say the run is too short and how long it must be", got.Detail)
				}
				if !Passed(inv) {
					t.Errorf("Passed(%v) = false: an invariant not judged fails --check", inv)
				}
			} else if Passed(inv) {
				t.Errorf("Passed(%v) = true with %s failed", inv, InvLatencyRouting)
			}
		})
	}
}

// TestOverloadShedNeedsItsWindow: overload_shed judges the crowd's PoP from dns_ttl + 10 s after
// the crowd starts; a run that ends before then (the world scenario cut to 40 s: its Mumbai
// crowd starts at 26 s, the window at 46 s) has no second to judge, and was reported PASS
// (peak utilisation 0.00 "from 46s to 40s") or FAIL on the moved requests alone. It is not
// judged, and says so.
func TestOverloadShedNeedsItsWindow(t *testing.T) {
	tests := []struct {
		duration time.Duration
		judged   bool
	}{
		{40 * time.Second, false},
		{46 * time.Second, false},
		{47 * time.Second, true},
		{time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.duration.String(), func(t *testing.T) {
			s := scenario.Default()
			s.Duration = tt.duration
			inv := map[string]Invariant{}
			checkMeasured(s, &Measured{Crowd: map[string]LatencyStats{"sin": {P99: 4489}}}, inv)
			got := inv[InvOverloadShed]
			if got.NotJudged == tt.judged || got.Pass {
				t.Errorf("%s = %+v, want judged %v and not passed (moved p99 over the limit)", InvOverloadShed, got, tt.judged)
			}
			if !tt.judged && !strings.HasPrefix(got.Detail, "not judged: run too short") {
				t.Errorf("detail %q, want it to say the run is too short", got.Detail)
			}
		})
	}
}
