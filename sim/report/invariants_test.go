package report

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// invScenario is a 20-second, two-PoP scenario: lhr drained 2s-12s, sin killed from 5s for
// 5s, origin down 10s-15s, a 2-purge storm; DNS TTL 2s and grace 1s, so routing to lhr is a
// violation in seconds 5..11 and to sin in seconds 8..9.
func invScenario() *scenario.Scenario {
	s := &scenario.Scenario{
		Duration: 20 * time.Second,
		PoPs:     []scenario.PoPSpec{{ID: "iad", Shield: true}, {ID: "lhr"}, {ID: "sin"}},
		Clients:  scenario.ClientSpec{DNSTTL: 2 * time.Second},
		Events: []scenario.Event{
			{At: 2 * time.Second, Kind: scenario.EventDrain, PoP: "lhr"},
			{At: 12 * time.Second, Kind: scenario.EventUndrain, PoP: "lhr"},
			{At: 5 * time.Second, Kind: scenario.EventKill, PoP: "sin", Duration: 5 * time.Second},
			{At: 10 * time.Second, Kind: scenario.EventOriginFail, Duration: 5 * time.Second},
			{At: 6 * time.Second, Kind: scenario.EventPurgeStorm, Count: 2},
		},
		Check: scenario.CheckSpec{Grace: time.Second},
	}
	if err := s.Validate(); err != nil { // applies the defaults too
		panic(fmt.Sprintf("invScenario: %v", err))
	}
	return s
}

func okObservations() *Observations {
	first := make([]time.Duration, 10)
	for i := range first {
		first[i] = -1
	}
	first[1] = 3 * time.Second
	return &Observations{
		PoPSeconds: map[string][]int64{
			// lhr: traffic until its DNS TTL + grace ran out (second 4), then again from 12.
			"lhr": {5, 5, 5, 5, 2, 0, 0, 0, 0, 0, 0, 0, 4, 5},
			"sin": {3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 3},
			"iad": {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9},
		},
		OriginFetches:  100,
		OriginDistinct: 100,
		FirstOK:        first,
		Errors: []ErrorSample{
			{At: 11 * time.Second, Object: 2, Kind: "5xx"}, // never served before: not cached
			{At: 16 * time.Second, Object: 1, Kind: "5xx"}, // after the outage
		},
		Purges: []PurgeResult{
			{ID: "p1", IssuedAt: 6 * time.Second, AckMs: map[string]float64{"iad": 3, "lhr": 40}, Complete: true}, // sin is dead
			{ID: "p2", IssuedAt: 6 * time.Second, AckMs: map[string]float64{"iad": 3, "lhr": 41, "sin": 90}, Complete: true},
		},
	}
}

func TestInvariants(t *testing.T) {
	tests := []struct {
		name   string
		inv    string
		mutate func(*scenario.Scenario, *Observations)
		pass   bool
		value  float64
	}{
		{"no stale responses", InvStaleAfterPurge, nil, true, 0},
		{"one stale response", InvStaleAfterPurge, func(_ *scenario.Scenario, o *Observations) { o.StaleAfterPurge = 1 }, false, 1},
		{"stale within a raised limit", InvStaleAfterPurge, func(s *scenario.Scenario, o *Observations) { o.StaleAfterPurge = 2; s.Check.MaxStaleAfterPurge = 2 }, true, 2},

		{"drained and killed PoPs left alone after TTL + grace", InvRoutedToDown, nil, true, 0},
		{"requests to the drained PoP after TTL + grace", InvRoutedToDown, func(_ *scenario.Scenario, o *Observations) { o.PoPSeconds["lhr"][7] = 3 }, false, 3},
		{"requests to the killed PoP while down", InvRoutedToDown, func(_ *scenario.Scenario, o *Observations) { o.PoPSeconds["sin"][8] = 2 }, false, 2},
		{"requests within TTL + grace are allowed", InvRoutedToDown, func(_ *scenario.Scenario, o *Observations) { o.PoPSeconds["lhr"][4] = 50 }, true, 0},
		{"drain never undone runs to the end", InvRoutedToDown, func(s *scenario.Scenario, o *Observations) {
			s.Events = s.Events[:1]
			o.PoPSeconds["lhr"][13] = 1
		}, false, 5}, // seconds 12 and 13 now count: 4 + 1

		{"one origin fetch per object per TTL", InvOriginPerObject, nil, true, 1},
		{"5% over is the limit", InvOriginPerObject, func(_ *scenario.Scenario, o *Observations) { o.OriginFetches = 105 }, true, 1.05},
		{"collapsing broken", InvOriginPerObject, func(_ *scenario.Scenario, o *Observations) { o.OriginFetches = 150 }, false, 1.5},

		{"no errors for cached objects in the outage", InvOutageErrors, nil, true, 0},
		{"error for a cached object in the outage", InvOutageErrors, func(_ *scenario.Scenario, o *Observations) {
			o.Errors = append(o.Errors, ErrorSample{At: 12 * time.Second, Object: 1, Kind: "5xx"})
		}, false, 1},
		{"object first served during the outage is not cached before it", InvOutageErrors, func(_ *scenario.Scenario, o *Observations) {
			o.FirstOK[3] = 11 * time.Second
			o.Errors = append(o.Errors, ErrorSample{At: 12 * time.Second, Object: 3, Kind: "5xx"})
		}, true, 0},

		{"every live PoP acked", InvPurgeAcked, nil, true, 0},
		{"a live PoP missed a purge", InvPurgeAcked, func(_ *scenario.Scenario, o *Observations) { delete(o.Purges[1].AckMs, "lhr") }, false, 1},
		{"purge not complete", InvPurgeAcked, func(_ *scenario.Scenario, o *Observations) { o.Purges[0].Complete = false }, false, 1},
		{"purges never issued", InvPurgeAcked, func(_ *scenario.Scenario, o *Observations) { o.Purges = o.Purges[:1] }, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, o := invScenario(), okObservations()
			if tt.mutate != nil {
				tt.mutate(s, o)
			}
			got, ok := CheckInvariants(s, o)[tt.inv]
			if !ok {
				t.Fatalf("CheckInvariants has no %s", tt.inv)
			}
			if got.Pass != tt.pass || got.Value != tt.value {
				t.Errorf("%s = pass %v value %v (limit %v), want pass %v value %v", tt.inv, got.Pass, got.Value, got.Limit, tt.pass, tt.value)
			}
		})
	}
}

func TestInvariantsAllPassAndShieldOff(t *testing.T) {
	inv := CheckInvariants(invScenario(), okObservations())
	if !Passed(inv) {
		t.Errorf("CheckInvariants on good data = %+v, want all pass", inv)
	}
	if len(inv) != 5 {
		t.Errorf("got %d invariants, want 5", len(inv))
	}
	s := invScenario()
	s.PoPs[0].Shield = false
	if _, ok := CheckInvariants(s, okObservations())[InvOriginPerObject]; ok {
		t.Errorf("origin-per-object invariant evaluated without a shield PoP")
	}
	bad := okObservations()
	bad.StaleAfterPurge = 1
	if Passed(CheckInvariants(invScenario(), bad)) {
		t.Errorf("Passed = true with a stale response")
	}
}
