package report

import (
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
