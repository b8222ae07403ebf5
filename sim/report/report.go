package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/sim/wan"
)

// Report is the result of a run, written as report.json and rendered as report.html.
type Report struct {
	Scenario  string  `json:"scenario"`
	Seed      uint64  `json:"seed"`
	DurationS float64 `json:"duration_s"`
	Requests  int64   `json:"requests"`
	// RequestsPerSec is Requests over the run's duration.
	RequestsPerSec float64 `json:"requests_per_sec"`
	// Errors counts failed requests by kind.
	Errors   map[string]int64 `json:"errors"`
	HitRatio float64          `json:"hit_ratio"`
	// RepeatRequests counts the successful requests for an object that the answering node
	// had answered successfully before they were sent (objects purged in the run left out);
	// RepeatHitRatio is the share of them served from its cache. Unlike HitRatio, it leaves
	// out each node's first request for each object, a miss however well the cache works,
	// so it does not depend on how many requests the run's time let the clients send.
	RepeatRequests int64   `json:"repeat_requests"`
	RepeatHitRatio float64 `json:"repeat_hit_ratio"`
	// Tiers counts successful responses by where their content came from.
	Tiers          map[string]int64 `json:"tiers"`
	Bytes          int64            `json:"bytes"`
	OriginRequests int64            `json:"origin_requests"`
	// OriginOffload is the share of client requests that did not reach the origin.
	OriginOffload float64                `json:"origin_offload"`
	LatencyMs     Latency                `json:"latency_ms"`
	Purge         PurgeStats             `json:"purge"`
	Routing       map[string]CityRouting `json:"routing"`
	Invariants    map[string]Invariant   `json:"invariants"`
	Timeline      []TimelinePoint        `json:"timeline"`
	Events        []EventMark            `json:"events"`
	RoutingOver   []RoutingWindow        `json:"routing_over_time"`
	LatencyCDF    map[string][]CDFPoint  `json:"latency_cdf"`
	PoPs          map[string]ReportPlace `json:"pops"`
	Cities        map[string]ReportPlace `json:"cities"`
	Origin        ReportPlace            `json:"origin"`
	WAN           wan.Model              `json:"wan"`
	// Measured is per-PoP saturation and shed share over time and latency by client group.
	Measured *Measured `json:"measured,omitempty"`
}

// Latency holds percentiles in milliseconds, overall and per client region, with the WAN
// model's floor for the same requests beside them.
type Latency struct {
	LatencyStats
	ByRegion map[string]LatencyStats `json:"by_region"`
}

// LatencyStats is one set of percentiles (ms).
type LatencyStats struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	// FloorP50 and FloorP99 are the same percentiles of the WAN model's floor.
	FloorP50 float64 `json:"floor_p50"`
	FloorP99 float64 `json:"floor_p99"`
}

// PurgeStats summarises purge propagation: per purge, the time until the last PoP acked.
type PurgeStats struct {
	Count           int           `json:"count"`
	Complete        int           `json:"complete"`
	P50Ms           float64       `json:"p50_ms"`
	P99Ms           float64       `json:"p99_ms"`
	MaxMs           float64       `json:"max_ms"`
	FloorMaxMs      float64       `json:"floor_max_ms"`
	StaleAfterPurge int64         `json:"stale_after_purge"`
	Purges          []PurgeResult `json:"purges"`
}

// CityRouting is where one city's requests went.
type CityRouting struct {
	Region string `json:"region"`
	// PoP is the PoP that answered most of the city's requests, DistanceKm its distance and
	// Share its share of them.
	PoP        string  `json:"pop"`
	DistanceKm float64 `json:"distance_km"`
	Share      float64 `json:"share"`
	Requests   int64   `json:"requests"`
	// PoPs is every PoP's share of the city's requests.
	PoPs map[string]float64 `json:"pops"`
}

// RoutingWindow is which PoP each city mostly went to in one time window.
type RoutingWindow struct {
	FromS  float64           `json:"from_s"`
	ToS    float64           `json:"to_s"`
	Cities map[string]string `json:"cities"` // city -> PoP
}

// TimelinePoint is one second of the run.
type TimelinePoint struct {
	S        int     `json:"s"`
	Requests int64   `json:"requests"`
	Hits     int64   `json:"hits"`
	HitRatio float64 `json:"hit_ratio"`
	Errors   int64   `json:"errors"`
	Origin   int64   `json:"origin"`
	Stale    int64   `json:"stale"`
}

// ReportPlace is a located PoP, city or origin.
type ReportPlace struct {
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	Region string  `json:"region,omitempty"`
}

// Report builds the report of a run of scenario s from everything recorded, including the
// invariants (see CheckInvariants).
func (r *Recorder) Report(s *scenario.Scenario) *Report {
	obs := r.Observations()
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &Report{
		Scenario:       s.Name,
		Seed:           s.Seed,
		DurationS:      s.Duration.Seconds(),
		Requests:       r.requests,
		Errors:         map[string]int64{},
		Tiers:          map[string]int64{},
		Bytes:          r.bytes,
		OriginRequests: r.origin,
		Routing:        map[string]CityRouting{},
		LatencyCDF:     map[string][]CDFPoint{},
		PoPs:           map[string]ReportPlace{},
		Cities:         map[string]ReportPlace{},
		Origin:         ReportPlace{Lat: s.Origin.Lat, Lon: s.Origin.Lon},
		WAN:            s.WAN.Model(),
		Events:         append([]EventMark{}, r.events...),
	}
	for k, v := range r.errors {
		rep.Errors[k] = v
	}
	for k, v := range r.tiers {
		rep.Tiers[k] = v
	}
	if s.Duration > 0 {
		rep.RequestsPerSec = float64(r.requests) / s.Duration.Seconds()
	}
	if r.requests > 0 {
		rep.HitRatio = float64(r.hits) / float64(r.requests)
		rep.OriginOffload = math.Max(0, 1-float64(r.origin)/float64(r.requests))
	}
	rep.RepeatRequests = r.repeats
	if r.repeats > 0 {
		rep.RepeatHitRatio = float64(r.repeatHits) / float64(r.repeats)
	}
	rep.LatencyMs = Latency{LatencyStats: stats(r.latency, r.floor), ByRegion: map[string]LatencyStats{}}
	rep.LatencyCDF["all"] = r.latency.cdf()
	for name, h := range r.regions {
		rep.LatencyMs.ByRegion[name] = stats(h.latency, h.floor)
		rep.LatencyCDF[name] = h.latency.cdf()
	}
	for _, p := range s.PoPs {
		rep.PoPs[p.ID] = ReportPlace{Lat: p.Lat, Lon: p.Lon, Region: p.Region}
	}
	for _, c := range s.Clients.Cities {
		rep.Cities[c.Name] = ReportPlace{Lat: c.Lat, Lon: c.Lon, Region: c.Region}
	}
	for i, sec := range r.series {
		tp := TimelinePoint{S: i, Requests: sec.Requests, Hits: sec.Hits, Errors: sec.Errors, Origin: sec.Origin, Stale: sec.Stale}
		if sec.Requests > 0 {
			tp.HitRatio = float64(sec.Hits) / float64(sec.Requests)
		}
		rep.Timeline = append(rep.Timeline, tp)
	}
	rep.Routing, rep.RoutingOver = r.routingLocked(s, rep)
	rep.Purge = purgeStats(obs.Purges)
	rep.Purge.StaleAfterPurge = r.stale
	rep.Invariants = CheckInvariants(s, obs)
	rep.Measured = obs.Measured
	return rep
}

func stats(lat, floor *histogram) LatencyStats {
	return LatencyStats{Count: lat.count(), P50: lat.quantile(0.5), P90: lat.quantile(0.9), P99: lat.quantile(0.99),
		FloorP50: floor.quantile(0.5), FloorP99: floor.quantile(0.99)}
}

func (r *Recorder) routingLocked(s *scenario.Scenario, rep *Report) (map[string]CityRouting, []RoutingWindow) {
	perCity := map[string]map[string]int64{}
	perWin := map[int]map[string]map[string]int64{}
	maxWin := -1
	for k, n := range r.routing {
		if perCity[k.city] == nil {
			perCity[k.city] = map[string]int64{}
		}
		perCity[k.city][k.pop] += n
		if perWin[k.window] == nil {
			perWin[k.window] = map[string]map[string]int64{}
		}
		if perWin[k.window][k.city] == nil {
			perWin[k.window][k.city] = map[string]int64{}
		}
		perWin[k.window][k.city][k.pop] += n
		maxWin = max(maxWin, k.window)
	}
	routing := map[string]CityRouting{}
	for city, pops := range perCity {
		var total int64
		for _, n := range pops {
			total += n
		}
		top := topKey(pops)
		cr := CityRouting{PoP: top, Requests: total, PoPs: map[string]float64{}, Share: float64(pops[top]) / float64(total)}
		for pop, n := range pops {
			cr.PoPs[pop] = float64(n) / float64(total)
		}
		c, okc := rep.Cities[city]
		p, okp := rep.PoPs[top]
		if okc && okp {
			cr.DistanceKm = math.Round(wan.GreatCircleKm(c.Lat, c.Lon, p.Lat, p.Lon))
		}
		cr.Region = c.Region
		routing[city] = cr
	}
	var windows []RoutingWindow
	for w := 0; w <= maxWin; w++ {
		rw := RoutingWindow{FromS: (time.Duration(w) * r.cfg.Bucket).Seconds(), ToS: (time.Duration(w+1) * r.cfg.Bucket).Seconds(), Cities: map[string]string{}}
		for city, pops := range perWin[w] {
			rw.Cities[city] = topKey(pops)
		}
		windows = append(windows, rw)
	}
	return routing, windows
}

// topKey returns the key with the largest count, the smallest key on ties.
func topKey(m map[string]int64) string {
	best, bestN := "", int64(-1)
	for _, k := range sortedKeys(m) {
		if m[k] > bestN {
			best, bestN = k, m[k]
		}
	}
	return best
}

// purgeStats takes, per purge, the slowest PoP's ack as its fleet-wide completion time.
func purgeStats(purges []PurgeResult) PurgeStats {
	ps := PurgeStats{Count: len(purges), Purges: purges}
	done := newHistogram()
	for _, p := range purges {
		if p.Complete {
			ps.Complete++
		}
		worst := 0.0
		for _, ms := range p.AckMs {
			worst = math.Max(worst, ms)
		}
		for _, ms := range p.FloorMs {
			ps.FloorMaxMs = math.Max(ps.FloorMaxMs, ms)
		}
		if len(p.AckMs) > 0 {
			done.add(time.Duration(worst * float64(time.Millisecond)))
			ps.MaxMs = math.Max(ps.MaxMs, worst) // exact: a maximum needs no histogram
		}
	}
	if ps.Purges == nil {
		ps.Purges = []PurgeResult{}
	}
	// The histogram may round a percentile up by its 1 %; none is above the exact maximum.
	ps.P50Ms, ps.P99Ms = min(done.quantile(0.5), ps.MaxMs), min(done.quantile(0.99), ps.MaxMs)
	return ps
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report json: %w", err)
	}
	return nil
}

// Summary writes the end-of-run summary table.
func (r *Report) Summary(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var errs int64
	for _, n := range r.Errors {
		errs += n
	}
	fmt.Fprintf(tw, "scenario\t%s (seed %d, %gs)\n", r.Scenario, r.Seed, r.DurationS)
	fmt.Fprintf(tw, "requests\t%d (%.0f/s), %d errors %s\n", r.Requests, r.RequestsPerSec, errs, kinds(r.Errors))
	fmt.Fprintf(tw, "hit ratio\t%.1f%%; %.1f%% of the %d repeat requests (for an object their node had served)\n", 100*r.HitRatio, 100*r.RepeatHitRatio, r.RepeatRequests)
	fmt.Fprintf(tw, "origin\t%d requests, offload %.2f%%\n", r.OriginRequests, 100*r.OriginOffload)
	fmt.Fprintf(tw, "purges\t%d (%d complete), p50 %.1f ms, p99 %.1f ms, max %.1f ms (floor %.1f ms), stale after purge %d\n",
		r.Purge.Count, r.Purge.Complete, r.Purge.P50Ms, r.Purge.P99Ms, r.Purge.MaxMs, r.Purge.FloorMaxMs, r.Purge.StaleAfterPurge)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "latency (ms)\tanswered\tp50\tp90\tp99\tfloor p50\tfloor p99")
	row := func(name string, s LatencyStats) {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", name, s.Count, s.P50, s.P90, s.P99, s.FloorP50, s.FloorP99)
	}
	row("all", r.LatencyMs.LatencyStats)
	for _, name := range sortedKeys(r.LatencyMs.ByRegion) {
		label := name
		if label == "" {
			label = "(none)"
		}
		row("  "+label, r.LatencyMs.ByRegion[name])
	}
	if len(r.Invariants) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "invariant\tresult\tvalue\tlimit\twhat")
		for _, name := range sortedKeys(r.Invariants) {
			inv := r.Invariants[name]
			res := "PASS"
			switch {
			case inv.NotJudged:
				res = "not judged"
			case !inv.Pass:
				res = "FAIL"
			}
			fmt.Fprintf(tw, "%s\t%s\t%g\t%g\t%s\n", name, res, inv.Value, inv.Limit, inv.Detail)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	s := "("
	for i, k := range sortedKeys(m) {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %d", k, m[k])
	}
	return s + ")"
}
