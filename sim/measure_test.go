package sim

import (
	"math"
	"testing"
	"time"
)

func TestClientKmThroughHub(t *testing.T) {
	s := Default()
	city := func(name string) City {
		for _, c := range s.Clients.Cities {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no city %s", name)
		return City{}
	}
	pop := func(id string) PoPSpec {
		p, ok := s.PoP(id)
		if !ok {
			t.Fatalf("no PoP %s", id)
		}
		return p
	}
	miami := Place{Lat: 25.76, Lon: -80.19}
	tests := []struct {
		name      string
		city      City
		pop       PoPSpec
		want      float64
		trombones bool
	}{
		{"Sao Paulo to its own PoP goes through Miami", city("Sao Paulo"), pop("gru"),
			GreatCircleKm(-23.55, -46.63, miami.Lat, miami.Lon) + GreatCircleKm(miami.Lat, miami.Lon, -23.43, -46.47), true},
		{"Sao Paulo to Lagos is direct", city("Sao Paulo"), pop("los"), GreatCircleKm(-23.55, -46.63, 6.58, 3.32), true},
		{"London to London is direct", city("London"), pop("lhr"), GreatCircleKm(51.51, -0.13, 51.47, -0.45), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.clientKm(tt.city, tt.pop); math.Abs(got-tt.want) > 1e-6 {
				t.Errorf("clientKm(%s, %s) = %.0f, want %.0f", tt.city.Name, tt.pop.ID, got, tt.want)
			}
			if got := s.trombones(tt.city); got != tt.trombones {
				t.Errorf("trombones(%s) = %v, want %v", tt.city.Name, got, tt.trombones)
			}
		})
	}
}

func TestCityNetworksAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for i := range maxCities {
		for k := range CityNetworks {
			n := cityNetwork(i, k)
			if !cityBlock(i).Contains(n.Addr()) || seen[n.String()] {
				t.Fatalf("cityNetwork(%d, %d) = %v: outside %v or taken", i, k, n, cityBlock(i))
			}
			seen[n.String()] = true
		}
	}
}

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
	s := Default()
	e, ok := s.crowd()
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
		"europe": {GroupRUM: {Count: 10, P50: 80}, GroupGeo: {Count: 10, P50: 80}},
	}
	good := &Measured{Saturation: map[string][]float64{"bom": sat}, Shed: map[string][]float64{"bom": shed},
		Groups:   groups,
		Trombone: map[string]LatencyStats{GroupRUM: {Count: 10, P50: 100}, GroupGeo: {Count: 10, P50: 160}},
		Crowd:    map[string]LatencyStats{"bom": {P99: 50}, "sin": {P99: 300}}}
	inv := map[string]Invariant{}
	checkMeasured(s, good, inv)
	if !inv[InvOverloadShed].Pass || !inv[InvLatencyRouting].Pass {
		t.Errorf("good figures: %+v, want both to pass", inv)
	}
	bad := *good
	bad.Saturation = map[string][]float64{"bom": append(append([]float64(nil), sat[:50]...), 1.2)}
	bad.Trombone = map[string]LatencyStats{GroupRUM: {Count: 10, P50: 150}, GroupGeo: {Count: 10, P50: 160}}
	inv = map[string]Invariant{}
	checkMeasured(s, &bad, inv)
	if inv[InvOverloadShed].Pass || inv[InvLatencyRouting].Pass {
		t.Errorf("bad figures: %+v, want both to fail", inv)
	}
}
