package sim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// syntheticRun records what a run of Small() could have produced: every city sends a request
// every 100 ms for 15 s, routed to its nearest PoP except London while lhr is drained, with
// one purge storm and the timeline events.
func syntheticRun(t testing.TB) (*Scenario, *Recorder) {
	t.Helper()
	s := Small()
	r := NewRecorder(s.RecorderConfig())
	w := NewWorkload(s)
	g := w.Generator(1)
	wan := s.WAN.Model()
	for at := time.Duration(0); at < s.Duration; at += 100 * time.Millisecond {
		for _, c := range s.Clients.Cities {
			pop := nearestPoP(s, c)
			if pop.ID == "lhr" && at >= 3*time.Second && at < 10*time.Second {
				pop, _ = s.PoP("iad")
			}
			km := GreatCircleKm(c.Lat, c.Lon, pop.Lat, pop.Lon)
			req := g.Next(at)
			floor := 2 * wan.RTT(km)
			smp := Sample{At: at, City: c.Name, Region: c.Region, PoP: pop.ID, Node: pop.ID + "-1", Status: 200,
				Hit: req.Object%4 != 0, Tier: "edge", Latency: floor + time.Duration(req.Object%7)*time.Millisecond,
				FloorLatency: floor, Bytes: w.Size(req.Object), Object: req.Object,
				Group: []string{GroupRUM, GroupGeo}[int(at/(100*time.Millisecond))%2]}
			if !smp.Hit {
				smp.Tier = "origin"
				r.RecordOriginFetch(at, req.Object)
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
			floor := float64(wan.OneWay(GreatCircleKm(s.Origin.Lat, s.Origin.Lon, pop.Lat, pop.Lon))) / 1e6
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

func nearestPoP(s *Scenario, c City) PoPSpec {
	best, bestKm := s.PoPs[0], -1.0
	for _, p := range s.PoPs {
		if km := GreatCircleKm(c.Lat, c.Lon, p.Lat, p.Lon); bestKm < 0 || km < bestKm {
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
	if err := NewRecorder(RecorderConfig{}).Report(Small()).WriteHTML(&empty); err != nil {
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

// checkHTML checks the page and returns, per plot id, how many SVG paths the plot draws.
func checkHTML(t *testing.T, page []byte) map[string]int {
	t.Helper()
	counts := map[string]int{}
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatalf("report.html does not parse: %v", err)
	}
	figures := map[string]*html.Node{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "link", "iframe", "object":
				t.Errorf("report.html has a <%s> element; it must be self-contained", n.Data)
			}
			for _, a := range n.Attr {
				if a.Key == "id" {
					figures[a.Val] = n
				}
				if (a.Key == "src" || a.Key == "href") && !strings.HasPrefix(a.Val, "data:") {
					t.Errorf("<%s %s=%q> loads an outside resource", n.Data, a.Key, a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	for _, id := range []string{PlotLatencyCDF, PlotHitRatio, PlotOrigin, PlotPurge, PlotRouting, PlotSaturation, PlotShed, PlotLatencyGain} {
		t.Run(id, func(t *testing.T) {
			fig, ok := figures[id]
			if !ok {
				t.Fatalf("report.html has no element with id %q", id)
			}
			img := find(fig, "img")
			if img == nil {
				t.Fatalf("#%s has no <img>", id)
			}
			src := attr(img, "src")
			b64, ok := strings.CutPrefix(src, "data:image/svg+xml;base64,")
			if !ok {
				t.Fatalf("#%s img src starts %.40q, want an inline SVG data URL", id, src)
			}
			svg, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatalf("#%s image is not base64: %v", id, err)
			}
			paths, err := countSVG(svg)
			if err != nil {
				t.Fatalf("#%s image is not well-formed SVG: %v", id, err)
			}
			if paths < 1 {
				t.Errorf("#%s SVG draws nothing", id)
			}
			counts[id] = paths
		})
	}
	return counts
}

func find(n *html.Node, tag string) *html.Node {
	if n.Type == html.ElementNode && n.Data == tag {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if f := find(c, tag); f != nil {
			return f
		}
	}
	return nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// countSVG checks the SVG is well-formed XML with an <svg> root and counts its <path>s.
func countSVG(data []byte) (int, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	paths, root := 0, ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "path" {
				paths++
			}
		}
	}
	if root != "svg" {
		return 0, fmt.Errorf("root element is %q, want svg", root)
	}
	return paths, nil
}

func TestSummary(t *testing.T) {
	s, r := syntheticRun(t)
	var buf bytes.Buffer
	if err := r.Report(s).Summary(&buf); err != nil {
		t.Fatalf("Summary: %v", err)
	}
	out := buf.String()
	for _, want := range []string{"small (seed 7, 15s)", "900 (60/s)", "hit ratio", "20 (20 complete)", "europe", "asia", "stale_after_purge", "PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
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
