package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/sim/wan"
)

// syntheticRun records what a run of Small() could have produced: every city sends a request
// every 100 ms for 15 s, routed to its nearest PoP except London while lhr is drained, with
// one purge storm and the timeline events.
func syntheticRun(t testing.TB) (*scenario.Scenario, *Recorder) {
	t.Helper()
	s := scenario.Small()
	r := NewRecorder(ConfigFor(s))
	rng := rand.New(rand.NewPCG(1, 2))
	model := s.WAN.Model()
	for at := time.Duration(0); at < s.Duration; at += 100 * time.Millisecond {
		for _, c := range s.Clients.Cities {
			pop := nearestPoP(s, c)
			if pop.ID == "lhr" && at >= 3*time.Second && at < 10*time.Second {
				pop, _ = s.PoP("iad")
			}
			km := wan.GreatCircleKm(c.Lat, c.Lon, pop.Lat, pop.Lon)
			obj := int(rng.Uint64N(uint64(s.Workload.Objects)))
			floor := 2 * model.RTT(km)
			smp := Sample{At: at, City: c.Name, Region: c.Region, PoP: pop.ID, Node: pop.ID + "-1", Status: 200,
				Hit: obj%4 != 0, Tier: "edge", Latency: floor + time.Duration(obj%7)*time.Millisecond,
				FloorLatency: floor, Bytes: 1024, Object: obj,
				Group: []string{scenario.GroupRUM, scenario.GroupGeo}[int(at/(100*time.Millisecond))%2]}
			if !smp.Hit {
				smp.Tier = "origin"
				r.RecordOriginFetch(at, obj)
			}
			if at >= 9*time.Second && at < 12*time.Second && !smp.Hit {
				smp.Status, smp.Err = 503, "5xx"
			}
			r.Record(smp)
		}
	}
	for _, e := range s.SortedEvents() {
		r.RecordEvent(e.At, e.Kind+" "+e.PoP)
	}
	// lhr overloads from 3 s, sheds, and settles (the saturation and shed plots).
	for sec := range int(s.Duration / time.Second) {
		for i, pop := range s.PoPs {
			sat, shed := 0.3+0.1*float64(i), 0.0
			if pop.ID == "lhr" && sec >= 3 {
				sat, shed = 0.9, 0.5
			}
			r.RecordPoPLoad(time.Duration(sec)*time.Second, pop.ID, sat, shed)
		}
	}
	for i := range 20 {
		p := PurgeResult{ID: fmt.Sprint("p", i), IssuedAt: 6 * time.Second, AckMs: map[string]float64{}, FloorMs: map[string]float64{}, Complete: true}
		for _, pop := range s.PoPs {
			floor := float64(model.OneWay(wan.GreatCircleKm(s.Origin.Lat, s.Origin.Lon, pop.Lat, pop.Lon))) / 1e6
			p.FloorMs[pop.ID] = floor
			p.AckMs[pop.ID] = floor + 1 + float64(i%5)
			if pop.ID == "sin" {
				p.AckMs[pop.ID] += 2000 // cut off from NATS until 8s: replays on rejoin
			}
		}
		r.RecordPurge(p)
	}
	return s, r
}

func nearestPoP(s *scenario.Scenario, c scenario.City) scenario.PoPSpec {
	best, bestKm := s.PoPs[0], -1.0
	for _, p := range s.PoPs {
		if km := wan.GreatCircleKm(c.Lat, c.Lon, p.Lat, p.Lon); bestKm < 0 || km < bestKm {
			best, bestKm = p, km
		}
	}
	return best
}

func TestReportJSONHasTheIssueFields(t *testing.T) {
	s, r := syntheticRun(t)
	var buf bytes.Buffer
	if err := r.Report(s).WriteJSON(&buf); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("report.json does not parse: %v", err)
	}
	for _, path := range []string{
		"requests", "errors", "errors.5xx", "hit_ratio", "origin_requests", "origin_offload",
		"latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.by_region.europe.p99",
		"purge.count", "purge.p50_ms", "purge.p99_ms", "purge.max_ms", "purge.stale_after_purge",
		"routing.London.pop", "routing.London.distance_km", "routing.London.share",
		"invariants.stale_after_purge.pass", "invariants.stale_after_purge.value", "invariants.stale_after_purge.limit",
	} {
		if _, ok := lookup(got, path); !ok {
			t.Errorf("report.json has no %s", path)
		}
	}
	tests := []struct {
		path string
		want any
	}{
		{"requests", float64(6 * 150)},
		{"purge.count", float64(20)},
		{"routing.Tokyo.pop", "sin"},
		{"invariants.purge_acked_by_every_live_pop.pass", true},
		{"invariants.no_routing_to_down_pop.pass", true},
	}
	for _, tt := range tests {
		if v, _ := lookup(got, tt.path); v != tt.want {
			t.Errorf("report.json %s = %v, want %v", tt.path, v, tt.want)
		}
	}
	if v, _ := lookup(got, "purge.max_ms"); v.(float64) < 2000 {
		t.Errorf("purge.max_ms = %v, want the sin replay (> 2000)", v)
	}
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// TestHTMLHasEveryPlot parses report.html and checks that each plot is there, embedded as a
// non-empty SVG image, and that the page loads nothing from outside.
func TestHTMLHasEveryPlot(t *testing.T) {
	s, r := syntheticRun(t)
	var full, empty bytes.Buffer
	if err := r.Report(s).WriteHTML(&full); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	// A run with no data still renders every plot, saying there is nothing to show.
	if err := NewRecorder(RecorderConfig{}).Report(scenario.Small()).WriteHTML(&empty); err != nil {
		t.Fatalf("WriteHTML of an empty run: %v", err)
	}
	without := checkHTML(t, empty.Bytes())
	with := checkHTML(t, full.Bytes())
	for id, n := range with {
		if n <= without[id]+5 {
			t.Errorf("#%s draws %d SVG paths with data and %d without; want the data drawn", id, n, without[id])
		}
	}
}

// checkHTML checks the page with CheckPage and returns, per plot id, how many SVG paths the
// plot draws.
func checkHTML(t *testing.T, page []byte) map[string]int {
	t.Helper()
	counts, err := CheckPage(page)
	if err != nil {
		t.Error(err)
	}
	return counts
}

func TestSummary(t *testing.T) {
	s, r := syntheticRun(t)
	var buf bytes.Buffer
	if err := r.Report(s).Summary(&buf); err != nil {
		t.Fatalf("Summary: %v", err)
	}
	out := buf.String()
	for _, want := range []string{"small (seed 7, 15s)", "900 (60/s)", "hit ratio", "20 (20 complete)", "europe", "asia", "stale_after_purge", "PASS", "repeat requests"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

// TestSummarySaysWhatEachInvariantChecked: a PASS or FAIL in the terminal says what was
// measured (the invariant's detail), on the invariant's own line, as report.html does.
func TestSummarySaysWhatEachInvariantChecked(t *testing.T) {
	r := &Report{Scenario: "x", Invariants: map[string]Invariant{
		InvOutageErrors:    {Pass: false, Value: 210, Limit: 0, Detail: "client errors for already-served objects during origin outages"},
		InvOriginPerObject: {Pass: true, Value: 1, Limit: 1.05, Detail: "100 origin fetches for 100 distinct objects per freshness lifetime"},
	}}
	var buf bytes.Buffer
	if err := r.Summary(&buf); err != nil {
		t.Fatalf("Summary: %v", err)
	}
	lines := strings.Split(buf.String(), "\n")
	for name, inv := range r.Invariants {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, name+" ") {
				found = true
				if !strings.Contains(l, inv.Detail) {
					t.Errorf("summary line %q lacks what %s checked, %q", l, name, inv.Detail)
				}
			}
		}
		if !found {
			t.Errorf("summary has no line for %s:\n%s", name, buf.String())
		}
	}
}

// TestNotJudgedShown: an invariant the run was too short to judge reads "not judged" in the
// summary and in report.html, never PASS or FAIL.
func TestNotJudgedShown(t *testing.T) {
	r := &Report{Scenario: "x", Invariants: map[string]Invariant{
		InvLatencyRouting: {NotJudged: true, Limit: 0.2, Detail: "not judged: run too short (10s after the warm-up, it needs 40s)"},
	}}
	var buf bytes.Buffer
	if err := r.Summary(&buf); err != nil {
		t.Fatalf("Summary: %v", err)
	}
	var line string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(l, InvLatencyRouting+" ") {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 3 || f[1] != "not" || f[2] != "judged" {
		t.Errorf("summary line %q, want the result \"not judged\"", line)
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	if h := page.String(); !strings.Contains(h, `<td class="notjudged">not judged</td>`) || strings.Contains(h, `class="pass">pass<`) || strings.Contains(h, `class="fail">FAIL<`) {
		sec, _, _ := strings.Cut(h[max(strings.Index(h, `id="invariants"`), 0):], "</section>")
		t.Errorf("report.html's invariants do not say \"not judged\" alone:\n%s", sec)
	}
}

// TestSummaryLatencyCountsAnswered: the latency table counts the requests that were answered
// (a failed request has no latency); its column must not be called "requests" beside the
// line above that counts every request, failed ones too.
func TestSummaryLatencyCountsAnswered(t *testing.T) {
	r := &Report{Scenario: "x", Requests: 100, Errors: map[string]int64{"5xx": 10},
		LatencyMs: Latency{LatencyStats: LatencyStats{Count: 90}}}
	var buf bytes.Buffer
	if err := r.Summary(&buf); err != nil {
		t.Fatalf("Summary: %v", err)
	}
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(l, "latency (ms)") {
			if f := strings.Fields(l); len(f) < 3 || f[2] != "answered" {
				t.Errorf("latency table header %q, want its count column called answered", l)
			}
			return
		}
	}
	t.Errorf("summary has no latency table:\n%s", buf.String())
}

func BenchmarkWriteHTML(b *testing.B) {
	s, r := syntheticRun(b)
	rep := r.Report(s)
	b.ReportAllocs()
	for b.Loop() {
		if err := rep.WriteHTML(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPurgeStats: per purge the slowest PoP's ack counts; percentiles within the histogram's
// 1 %, the maximum exact, purges without acks left out of the times but counted.
func TestPurgeStats(t *testing.T) {
	var purges []PurgeResult
	for i := 1; i <= 100; i++ {
		purges = append(purges, PurgeResult{ID: fmt.Sprint(i), Complete: i%10 != 0,
			AckMs: map[string]float64{"iad": 0.5, "sin": float64(i) + 0.25}, FloorMs: map[string]float64{"iad": 1, "sin": 160}})
	}
	purges = append(purges, PurgeResult{ID: "none", FloorMs: map[string]float64{"sin": 170}})
	ps := purgeStats(purges)
	if ps.Count != 101 || ps.Complete != 90 || ps.FloorMaxMs != 170 || ps.MaxMs != 100.25 {
		t.Errorf("purgeStats = count %d, complete %d, floor max %v, max %v; want 101, 90, 170, 100.25", ps.Count, ps.Complete, ps.FloorMaxMs, ps.MaxMs)
	}
	for _, c := range []struct{ got, want float64 }{{ps.P50Ms, 50.25}, {ps.P99Ms, 99.25}} {
		if math.Abs(c.got-c.want) > 0.01*c.want {
			t.Errorf("percentile = %v ms, want %v ms ± 1%%", c.got, c.want)
		}
	}
	if ps := purgeStats(nil); ps.Purges == nil || ps.P50Ms != 0 || ps.MaxMs != 0 {
		t.Errorf("purgeStats(nil) = %+v, want an empty list and zero times", ps)
	}
}

// TestPurgePercentilesNotAboveMax: the histogram's percentiles may round up by 1 %, the
// maximum is exact; the summary must not read "p99 68.6 ms, max 68.2 ms" (the first case: the
// slowest acks of a run of sim/testdata/tiny.yaml).
func TestPurgePercentilesNotAboveMax(t *testing.T) {
	tests := []struct {
		name  string
		worst []float64
	}{
		{"tiny, seed 3", []float64{64.673, 68.156, 66.943, 65.747, 65.493}},
		{"acks near 65 ms", []float64{64.9, 65.8, 65.1, 64.7, 65.4}},
		{"one purge", []float64{68.156}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var purges []PurgeResult
			for i, ms := range tt.worst {
				purges = append(purges, PurgeResult{ID: fmt.Sprint(i), Complete: true, AckMs: map[string]float64{"iad": 1, "lhr": ms}})
			}
			ps := purgeStats(purges)
			if ps.P50Ms > ps.MaxMs || ps.P99Ms > ps.MaxMs {
				t.Errorf("purgeStats: p50 %v ms, p99 %v ms, max %v ms; want no percentile above the maximum", ps.P50Ms, ps.P99Ms, ps.MaxMs)
			}
		})
	}
}
