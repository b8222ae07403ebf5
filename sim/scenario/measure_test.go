package scenario

import (
	"math"
	"testing"

	"github.com/meridian-cdn/meridian/sim/wan"
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
			wan.GreatCircleKm(-23.55, -46.63, miami.Lat, miami.Lon) + wan.GreatCircleKm(miami.Lat, miami.Lon, -23.43, -46.47), true},
		{"Sao Paulo to Lagos is direct", city("Sao Paulo"), pop("los"), wan.GreatCircleKm(-23.55, -46.63, 6.58, 3.32), true},
		{"London to London is direct", city("London"), pop("lhr"), wan.GreatCircleKm(51.51, -0.13, 51.47, -0.45), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.ClientKm(tt.city, tt.pop); math.Abs(got-tt.want) > 1e-6 {
				t.Errorf("clientKm(%s, %s) = %.0f, want %.0f", tt.city.Name, tt.pop.ID, got, tt.want)
			}
			if got := s.Trombones(tt.city); got != tt.trombones {
				t.Errorf("trombones(%s) = %v, want %v", tt.city.Name, got, tt.trombones)
			}
		})
	}
}
