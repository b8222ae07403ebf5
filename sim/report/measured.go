package report

import (
	"fmt"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// Measured is what the report holds about load, shedding and latency-aware routing.
type Measured struct {
	// Saturation is, per PoP and per second, the PoP's utilisation as DNS saw it (the nodes'
	// own saturation figures, unless a capacity was configured).
	Saturation map[string][]float64 `json:"saturation"`
	// Shed is, per PoP and per second, the share of its client networks DNS sent elsewhere.
	Shed map[string][]float64 `json:"shed"`
	// Groups is, per client region and group ("rum", "geo"), the latency of the requests.
	Groups map[string]map[string]LatencyStats `json:"groups,omitempty"`
	// Trombone is, per group, the latency of the cities that some WAN path routes through a hub.
	Trombone map[string]LatencyStats `json:"trombone,omitempty"`
	// Crowd is, per answering PoP, the latency of the flash crowd's requests from its city.
	Crowd map[string]LatencyStats `json:"crowd,omitempty"`
	// Beacons counts beacon reports by outcome ("accepted", "limited", "refused", "failed").
	Beacons map[string]int64 `json:"beacons,omitempty"`
}

// measureRec is the Recorder's part for Measured.
type measureRec struct {
	mu       sync.Mutex // guards everything below
	sat      map[string][]float64
	shed     map[string][]float64
	groups   map[[2]string]*histogram // region, group
	trombone map[string]*histogram    // group
	crowd    map[string]*histogram    // answering PoP
	beacons  map[string]int64
}

// record adds a request sample: to its region and group, and, for a crowd request from the
// crowd's city while it lasts, to the crowd's latency by answering PoP.
func (m *measureRec) record(smp Sample) {
	if smp.Err != "" || smp.Group == "" && !smp.Crowd {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups == nil {
		m.groups, m.trombone, m.crowd = map[[2]string]*histogram{}, map[string]*histogram{}, map[string]*histogram{}
	}
	if smp.Group != "" && !smp.Flash {
		// Flash crowd requests are a workload of their own (one hot object, one city): they
		// would weigh the groups differently, since rum clients spend time on beacons.
		addSample(m.groups, [2]string{smp.Region, smp.Group}, smp.Latency)
		if smp.Tromboning {
			addSample(m.trombone, smp.Group, smp.Latency)
		}
	}
	if smp.Crowd {
		addSample(m.crowd, smp.PoP, smp.Latency)
	}
}

// addSample adds latency d to the histogram under k in hs, creating it.
func addSample[K comparable](hs map[K]*histogram, k K, d time.Duration) {
	h := hs[k]
	if h == nil {
		h = newHistogram()
		hs[k] = h
	}
	h.add(d)
}

// RecordPoPLoad records PoP pop's utilisation and shed share at second at.
func (r *Recorder) RecordPoPLoad(at time.Duration, pop string, sat, shed float64) {
	if at < 0 {
		return
	}
	i := min(int(at/time.Second), r.cfg.MaxSeconds-1)
	m := &r.ms
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sat == nil {
		m.sat, m.shed = map[string][]float64{}, map[string][]float64{}
	}
	put := func(series map[string][]float64, v float64) {
		s := series[pop]
		for len(s) <= i {
			s = append(s, math.NaN())
		}
		s[i] = v
		series[pop] = s
	}
	put(m.sat, sat)
	put(m.shed, shed)
}

// RecordBeacon counts one beacon report by outcome.
func (r *Recorder) RecordBeacon(outcome string) {
	m := &r.ms
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.beacons == nil {
		m.beacons = map[string]int64{}
	}
	m.beacons[outcome]++
}

// measured copies out the report's Measured part.
func (m *measureRec) measured() *Measured {
	m.mu.Lock()
	defer m.mu.Unlock()
	stats := func(h *histogram) LatencyStats {
		return LatencyStats{Count: h.count(), P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99)}
	}
	out := &Measured{Saturation: map[string][]float64{}, Shed: map[string][]float64{}, Beacons: map[string]int64{}}
	for pop, s := range m.sat {
		out.Saturation[pop] = nanToZero(s)
	}
	for pop, s := range m.shed {
		out.Shed[pop] = nanToZero(s)
	}
	maps.Copy(out.Beacons, m.beacons)
	if len(m.groups) > 0 {
		out.Groups = map[string]map[string]LatencyStats{}
		for k, h := range m.groups {
			if out.Groups[k[0]] == nil {
				out.Groups[k[0]] = map[string]LatencyStats{}
			}
			out.Groups[k[0]][k[1]] = stats(h)
		}
	}
	if len(m.trombone) > 0 {
		out.Trombone = map[string]LatencyStats{}
		for g, h := range m.trombone {
			out.Trombone[g] = stats(h)
		}
	}
	if len(m.crowd) > 0 {
		out.Crowd = map[string]LatencyStats{}
		for pop, h := range m.crowd {
			out.Crowd[pop] = stats(h)
		}
	}
	return out
}

// nanToZero copies s with the seconds that got no figure (NaN) as the previous figure (0 at the
// start): JSON has no NaN.
func nanToZero(s []float64) []float64 {
	out := make([]float64, len(s))
	prev := 0.0
	for i, v := range s {
		if math.IsNaN(v) {
			v = prev
		}
		out[i], prev = v, v
	}
	return out
}

// Invariant names of routing from live measurements.
const (
	InvOverloadShed   = "overload_shed"
	InvLatencyRouting = "latency_routing"
)

// shedHigh is the high watermark the simulated DNS sheds up to (the policy's default).
const shedHigh = 1.0

// checkMeasured adds overload_shed (when a flash crowd comes from one city) and latency_routing
// (when RUM is on and WAN paths exist):
//
//   - overload_shed: from DNS TTL + 10 s after the crowd starts until it ends, the overloaded
//     PoP's utilisation stays under the high watermark (1.0); the p99 latency of the crowd's
//     requests that went to other PoPs is at most check.max_moved_p99; the PoP's shed share
//     changes direction at most twice (steps under 0.05, the DNS quantum, do not count).
//     Value is the largest utilisation in the window. Not judged (NotJudged) when the
//     window is empty: the run, or the crowd, ends before it starts.
//   - latency_routing: in the cities some WAN path routes through a hub, the median latency of
//     the rum group is at least check.min_latency_gain below the geo group's; in every other
//     region the rum median is at most 10 % (plus 5 ms of timing noise) above the geo median.
//     Flash crowd requests count in neither group. Value is the gain. Not judged (NotJudged)
//     in a run shorter than MinLatencyRoutingRun.
func checkMeasured(s *scenario.Scenario, m *Measured, inv map[string]Invariant) {
	if m == nil {
		return
	}
	if e, ok := s.Crowd(); ok {
		pop := s.OverloadedPoP(e.City)
		sat := m.Saturation[pop]
		from, to := e.At+s.Clients.DNSTTL+10*time.Second, min(e.End(), s.Duration)
		worst := 0.0
		for i := int(from / time.Second); i < len(sat) && time.Duration(i)*time.Second < to; i++ {
			worst = max(worst, sat[i])
		}
		var movedP99 float64
		for p, st := range m.Crowd {
			if p != pop && p != "" {
				movedP99 = max(movedP99, st.P99)
			}
		}
		turns := directionChanges(m.Shed[pop], int(e.At/time.Second))
		limitMs := float64(s.Check.MaxMovedP99.Microseconds()) / 1000
		pass := worst < shedHigh && movedP99 <= limitMs && turns <= 2
		detail := fmt.Sprintf(
			"%s under the %s crowd: peak utilisation %.2f from %v to %v (limit %.1f); moved requests p99 %.0f ms (limit %.0f ms); shed share changed direction %d times (limit 2)",
			pop, e.City, worst, from, to, shedHigh, movedP99, limitMs, turns)
		if from >= to {
			// The run (or the crowd) ends before DNS has had time to shed: nothing to judge.
			short := "run"
			if e.End() < s.Duration {
				short = "crowd"
			}
			inv[InvOverloadShed] = Invariant{NotJudged: true, Value: worst, Limit: shedHigh, Detail: fmt.Sprintf(
				"not judged: %s too short (the window starts at %v, dns_ttl + 10s after the crowd starts, and the %s ends at %v): %s", short, from, short, to, detail)}
		} else {
			inv[InvOverloadShed] = Invariant{Pass: pass, Value: worst, Limit: shedHigh, Detail: detail}
		}
	}
	if s.Clients.RUM.Enabled && len(s.WAN.Paths) > 0 {
		rum, geo := m.Trombone[scenario.GroupRUM], m.Trombone[scenario.GroupGeo]
		gain := 0.0
		if geo.P50 > 0 {
			gain = 1 - rum.P50/geo.P50
		}
		var worse []string
		for _, region := range sortedKeys(m.Groups) {
			g := m.Groups[region]
			if tromboneRegion(s, region) || g[scenario.GroupRUM].Count == 0 || g[scenario.GroupGeo].Count == 0 {
				continue
			}
			if g[scenario.GroupRUM].P50 > 1.1*g[scenario.GroupGeo].P50+5 {
				worse = append(worse, fmt.Sprintf("%s %.0f vs %.0f ms", region, g[scenario.GroupRUM].P50, g[scenario.GroupGeo].P50))
			}
		}
		detail := fmt.Sprintf("median latency where paths trombone: rum %.0f ms (%d requests), geo %.0f ms (%d): %.0f %% lower (limit %.0f %%)",
			rum.P50, rum.Count, geo.P50, geo.Count, gain*100, s.Check.MinLatencyGain*100)
		if len(worse) > 0 {
			detail += fmt.Sprintf("; worse elsewhere: %v", worse)
		} else {
			detail += "; no other region worse by over 10 % + 5 ms"
		}
		if need := MinLatencyRoutingRun(s); s.Duration < need {
			inv[InvLatencyRouting] = Invariant{NotJudged: true, Value: gain, Limit: s.Check.MinLatencyGain, Detail: fmt.Sprintf(
				"not judged: run too short (%v after the warm-up; it needs %v, 2 x (clients.rum.every %v + clients.dns_ttl %v), for most rum requests to follow beacons): %s",
				s.Duration, need, s.Clients.RUM.Every, s.Clients.DNSTTL, detail)}
			return
		}
		inv[InvLatencyRouting] = Invariant{Pass: gain >= s.Check.MinLatencyGain && len(worse) == 0 && rum.Count > 0 && geo.Count > 0,
			Value: gain, Limit: s.Check.MinLatencyGain, Detail: detail}
	}
}

// MinLatencyRoutingRun is the shortest run (after the warm-up) of scenario s whose
// latency_routing is judged: 2 x (clients.rum.every + clients.dns_ttl). The invariant compares
// the rum group's median latency, which moves only when most of the group's requests were
// answered after a round of beacons had reached DNS (a network measures once per
// rum.every; a round limited or failed waits for the next) and the answers DNS gave before
// had expired (dns_ttl). In a shorter run most of them were routed by geography alone, and
// the invariant would judge the warm-up of the measurements rather than the routing.
func MinLatencyRoutingRun(s *scenario.Scenario) time.Duration {
	return 2 * (s.Clients.RUM.Every + s.Clients.DNSTTL)
}

// tromboneRegion reports whether some city of region has a WAN path through a hub.
func tromboneRegion(s *scenario.Scenario, region string) bool {
	for _, c := range s.Clients.Cities {
		if c.Region == region && s.Trombones(c) {
			return true
		}
	}
	return false
}

// directionChanges counts how often series (from index from on) turns from rising to falling
// or back, ignoring steps under the DNS state's 5 % quantum.
func directionChanges(series []float64, from int) int {
	turns, dir := 0, 0
	last := math.NaN()
	for i := max(from, 0); i < len(series); i++ {
		v := series[i]
		if math.IsNaN(last) {
			last = v
			continue
		}
		d := 0
		switch {
		case v > last+0.049:
			d = 1
		case v < last-0.049:
			d = -1
		}
		if d == 0 {
			continue
		}
		if dir != 0 && d != dir {
			turns++
		}
		dir, last = d, v
	}
	return turns
}
