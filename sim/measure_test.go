package sim

import (
	"testing"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

func TestCityNetworksAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for i := range scenario.MaxCities {
		for k := range scenario.CityNetworks {
			n := cityNetwork(i, k)
			if !cityBlock(i).Contains(n.Addr()) || seen[n.String()] {
				t.Fatalf("cityNetwork(%d, %d) = %v: outside %v or taken", i, k, n, cityBlock(i))
			}
			seen[n.String()] = true
		}
	}
}
