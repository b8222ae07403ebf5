package scenario

import (
	"fmt"
	"math"
	"sort"

	"github.com/meridian-cdn/meridian/sim/wan"
)

// CityNetworks is how many /24s each client city has in the run's MMDB. Client i lives in
// network i mod CityNetworks of every city it asks from; shedding moves /24s, so a city of one
// network could only move whole.
const CityNetworks = 16

// MaxCities bounds the client cities: their /20s fill 127.64.0.0/10.
const MaxCities = 1024

// Client groups: networks that report beacons and networks routed by geography alone.
const (
	GroupRUM = "rum"
	GroupGeo = "geo"
)

// Group is the client group of network k ("" when the scenario has no RUM).
func (s *Scenario) Group(k int) string {
	if !s.Clients.RUM.Enabled {
		return ""
	}
	if k%2 == 0 {
		return GroupRUM
	}
	return GroupGeo
}

// Via returns the hub of the WAN path between city and pop, if one is configured.
func (s *Scenario) Via(city City, pop PoPSpec) (Place, bool) {
	for _, p := range s.WAN.Paths {
		if (p.From == city.Name || p.From == city.Region && city.Region != "") && (p.To == pop.ID || p.To == pop.Region && pop.Region != "") {
			return p.Via, true
		}
	}
	return Place{}, false
}

// ClientKm is the length of the leg from city to pop: the great circle, or through the hub of
// a configured path.
func (s *Scenario) ClientKm(city City, pop PoPSpec) float64 {
	if v, ok := s.Via(city, pop); ok {
		return wan.GreatCircleKm(city.Lat, city.Lon, v.Lat, v.Lon) + wan.GreatCircleKm(v.Lat, v.Lon, pop.Lat, pop.Lon)
	}
	return wan.GreatCircleKm(city.Lat, city.Lon, pop.Lat, pop.Lon)
}

// Trombones reports whether some configured path applies to city.
func (s *Scenario) Trombones(city City) bool {
	for _, pop := range s.PoPs {
		if _, ok := s.Via(city, pop); ok {
			return true
		}
	}
	return false
}

// NearestPoPs returns the ids of the n PoPs nearest city by great circle.
func (s *Scenario) NearestPoPs(city City, n int) []string {
	ids := make([]string, len(s.PoPs))
	km := map[string]float64{}
	for i, p := range s.PoPs {
		ids[i] = p.ID
		km[p.ID] = wan.GreatCircleKm(city.Lat, city.Lon, p.Lat, p.Lon)
	}
	sort.SliceStable(ids, func(a, b int) bool { return km[ids[a]] < km[ids[b]] })
	return ids[:min(n, len(ids))]
}

// Crowd is the scenario's first flash crowd that comes from one city, if any.
func (s *Scenario) Crowd() (Event, bool) {
	for _, e := range s.SortedEvents() {
		if e.Kind == EventFlashCrowd && e.City != "" {
			return e, true
		}
	}
	return Event{}, false
}

// OverloadedPoP is the PoP a crowd from city loads: the nearest one, where geography sends it.
func (s *Scenario) OverloadedPoP(city string) string {
	for _, c := range s.Clients.Cities {
		if c.Name == city {
			return s.NearestPoPs(c, 1)[0]
		}
	}
	return ""
}

func (p *validator) validateMeasured(s *Scenario, pops map[string]int, cities map[string]int) {
	if len(s.Clients.Cities) > MaxCities {
		p.fieldf("clients.cities", "at most %d cities, got %d", MaxCities, len(s.Clients.Cities))
	}
	regions := map[string]bool{}
	for _, c := range s.Clients.Cities {
		regions[c.Region] = true
	}
	popRegions := map[string]bool{}
	for i, pop := range s.PoPs {
		popRegions[pop.Region] = true
		if !(pop.CPUBudget >= 0) || math.IsInf(pop.CPUBudget, 0) {
			p.fieldf(fmt.Sprintf("pops[%d].cpu_budget", i), "must be a finite number, not negative, got %v", pop.CPUBudget)
		}
	}
	for i, w := range s.WAN.Paths {
		f := fmt.Sprintf("wan.paths[%d]", i)
		if _, ok := cities[w.From]; !ok && (w.From == "" || !regions[w.From]) {
			p.fieldf(f+".from", "%q is neither a client city nor a client region", w.From)
		}
		if _, ok := pops[w.To]; !ok && (w.To == "" || !popRegions[w.To]) {
			p.fieldf(f+".to", "%q is neither a PoP id nor a PoP region", w.To)
		}
		p.checkLatLon(f+".via", w.Via.Lat, w.Via.Lon)
	}
	if s.Workload.CPUPerRequest < 0 {
		p.fieldf("workload.cpu_per_request", "must not be negative, got %v", s.Workload.CPUPerRequest)
	}
	if r := s.Clients.RUM; r.Candidates < 0 || r.Candidates > 8 {
		p.fieldf("clients.rum.candidates", "must be between 1 and 8, got %d", r.Candidates)
	}
	if s.Clients.RUM.Every < 0 {
		p.fieldf("clients.rum.every", "must not be negative, got %v", s.Clients.RUM.Every)
	}
	if s.Check.MaxMovedP99 < 0 {
		p.fieldf("check.max_moved_p99", "must not be negative, got %v", s.Check.MaxMovedP99)
	}
	if !(s.Check.MinLatencyGain >= 0 && s.Check.MinLatencyGain < 1) {
		p.fieldf("check.min_latency_gain", "must be at least 0 and below 1, got %v", s.Check.MinLatencyGain)
	}
}
