package report

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plot element ids in report.html; tests and readers find the plots by them.
const (
	PlotLatencyCDF = "plot-latency-cdf"
	PlotHitRatio   = "plot-hit-ratio"
	PlotOrigin     = "plot-origin"
	PlotPurge      = "plot-purge"
	PlotRouting    = "plot-routing"
)

// htmlPlot is one figure of the page.
type htmlPlot struct {
	ID, Title, Caption string
	Src                template.URL // data: URL of the SVG
}

// WriteHTML writes report.html: one self-contained page (no scripts, no external resources)
// with the summary, the invariants and the plots as base64 SVG images rendered by gonum/plot.
func (r *Report) WriteHTML(w io.Writer) error {
	type figure struct {
		id, title, caption string
		width, height      vg.Length
		draw               func(draw.Canvas)
	}
	figs := []figure{
		{PlotLatencyCDF, "Latency by region", "Cumulative distribution of client latency (DNS + HTTP) per client region; log scale.", 8 * vg.Inch, 4.5 * vg.Inch, r.drawLatencyCDF},
		{PlotHitRatio, "Hit ratio over time", "Share of requests served from the answering node's cache, per second; timeline events marked.", 8 * vg.Inch, 3.5 * vg.Inch, r.drawHitRatio},
		{PlotOrigin, "Origin requests and errors over time", "Requests that reached the origin and client errors, per second; timeline events marked.", 8 * vg.Inch, 3.5 * vg.Inch, r.drawOrigin},
		{PlotPurge, "Purge propagation", "Per purge, the time until each PoP acknowledged (points) against the WAN model's fiber floor for that PoP (lines).", 8 * vg.Inch, 4.5 * vg.Inch, r.drawPurge},
		{PlotRouting, "Where each city was routed", "Client cities (dots) joined to the PoP that answered most of their requests (triangles), per time window.", 12 * vg.Inch, 6.5 * vg.Inch, r.drawRouting},
		{PlotSaturation, "Saturation per PoP", "Each PoP's utilisation as DNS sees it (its nodes' own saturation figures: simulated CPU over budget, in-flight requests), per second; DNS sheds between 0.8 and 1.0.", 8 * vg.Inch, 4 * vg.Inch, r.drawSaturation},
		{PlotShed, "Shed share over time", "Share of its client networks each shedding PoP hands to the next PoP, per second.", 8 * vg.Inch, 3.5 * vg.Inch, r.drawShed},
		{PlotLatencyGain, "Latency gain of measured routing", "Median latency per client region: networks that report beacons (rum, routed by measured RTT) beside networks routed by geography alone (geo).", 8 * vg.Inch, 4 * vg.Inch, r.drawLatencyGain},
	}
	var plots []htmlPlot
	for _, f := range figs {
		c := vgsvg.New(f.width, f.height)
		f.draw(draw.New(c))
		var buf bytes.Buffer
		if _, err := c.WriteTo(&buf); err != nil {
			return fmt.Errorf("render plot %s: %w", f.id, err)
		}
		src := "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
		plots = append(plots, htmlPlot{ID: f.id, Title: f.title, Caption: f.caption, Src: template.URL(src)})
	}
	var summary bytes.Buffer
	if err := r.Summary(&summary); err != nil {
		return err
	}
	type invRow struct {
		Name string
		Invariant
	}
	var invs []invRow
	for _, name := range sortedKeys(r.Invariants) {
		invs = append(invs, invRow{name, r.Invariants[name]})
	}
	data := struct {
		R          *Report
		Summary    string
		Invariants []invRow
		Plots      []htmlPlot
	}{r, summary.String(), invs, plots}
	if err := htmlPage.Execute(w, data); err != nil {
		return fmt.Errorf("write report html: %w", err)
	}
	return nil
}

var htmlPage = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Meridian simulation: {{.R.Scenario}}</title>
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
pre { background: #f4f4f4; padding: 1em; overflow-x: auto; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }
.pass { color: #060; } .fail { color: #b00; font-weight: bold; } .notjudged { color: #666; font-style: italic; }
figure { margin: 2em 0; } img { max-width: 100%; }
</style>
</head>
<body>
<h1>Meridian simulation: {{.R.Scenario}}</h1>
<section id="summary">
<h2>Summary</h2>
<pre>{{.Summary}}</pre>
</section>
{{if .Invariants}}<section id="invariants">
<h2>Invariants</h2>
<table>
<tr><th>invariant</th><th>result</th><th>value</th><th>limit</th><th>what</th></tr>
{{range .Invariants}}<tr><td>{{.Name}}</td>{{if .NotJudged}}<td class="notjudged">not judged</td>{{else if .Pass}}<td class="pass">pass</td>{{else}}<td class="fail">FAIL</td>{{end}}<td>{{.Value}}</td><td>{{.Limit}}</td><td>{{.Detail}}</td></tr>
{{end}}</table>
</section>{{end}}
{{range .Plots}}<figure id="{{.ID}}">
<h2>{{.Title}}</h2>
<img alt="{{.Title}}" src="{{.Src}}">
<figcaption>{{.Caption}}</figcaption>
</figure>
{{end}}</body>
</html>
`))

// emptyPlot draws a titled plot that says there is nothing to show.
func emptyPlot(c draw.Canvas, title, msg string) {
	p := plot.New()
	p.Title.Text = title
	p.HideAxes()
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: 0.5, Y: 0.5}}, Labels: []string{msg}})
	if err == nil {
		p.Add(l)
	}
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	p.Draw(c)
}

func (r *Report) drawLatencyCDF(c draw.Canvas) {
	names := sortedKeys(r.LatencyCDF)
	if len(names) == 0 || len(r.LatencyCDF["all"]) == 0 {
		emptyPlot(c, "Latency CDF", "no successful requests")
		return
	}
	p := plot.New()
	p.X.Label.Text = "latency (ms)"
	p.Y.Label.Text = "fraction of requests"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	i := 0
	for _, name := range names {
		pts := r.LatencyCDF[name]
		if len(pts) == 0 {
			continue
		}
		xys := make(plotter.XYs, 0, len(pts)+1)
		xys = append(xys, plotter.XY{X: math.Max(pts[0].Ms, 0.01), Y: 0})
		for _, pt := range pts {
			xys = append(xys, plotter.XY{X: math.Max(pt.Ms, 0.01), Y: pt.Fraction})
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			continue
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7)
		if name == "all" {
			l.Color = color.Black
			l.Width = vg.Points(2)
			l.Dashes = nil
		} else {
			i++
		}
		label := name
		if label == "" {
			label = "(no region)"
		}
		p.Add(l)
		p.Legend.Add(label, l)
	}
	p.Draw(c)
}

// eventMarks adds a dashed vertical line and a label for each event, from y=0 to y=top.
func (r *Report) eventMarks(p *plot.Plot, top float64) {
	if len(r.Events) == 0 {
		return
	}
	var labels plotter.XYLabels
	for i, e := range r.Events {
		x := e.At.Seconds()
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top}})
		if err != nil {
			continue
		}
		l.Color = color.RGBA{R: 150, G: 150, B: 150, A: 255}
		l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
		// Stagger labels so events close in time stay readable.
		labels.XYs = append(labels.XYs, plotter.XY{X: x, Y: top * (1 - 0.07*float64(i%4))})
		labels.Labels = append(labels.Labels, e.Name)
	}
	if l, err := plotter.NewLabels(labels); err == nil {
		for i := range l.TextStyle {
			l.TextStyle[i].Font.Size = vg.Points(8)
		}
		p.Add(l)
	}
}

func (r *Report) timeline(y func(TimelinePoint) float64) plotter.XYs {
	xys := make(plotter.XYs, 0, len(r.Timeline))
	for _, t := range r.Timeline {
		xys = append(xys, plotter.XY{X: float64(t.S) + 0.5, Y: y(t)})
	}
	return xys
}

func (r *Report) drawHitRatio(c draw.Canvas) {
	if len(r.Timeline) == 0 {
		emptyPlot(c, "Hit ratio", "no requests")
		return
	}
	p := plot.New()
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "hit ratio"
	p.Y.Min, p.Y.Max = 0, 1.1
	l, err := plotter.NewLine(r.timeline(func(t TimelinePoint) float64 { return t.HitRatio }))
	if err == nil {
		l.Width = vg.Points(1.5)
		l.Color = plotutil.Color(0)
		p.Add(l)
	}
	r.eventMarks(p, 1.1)
	p.Draw(c)
}

func (r *Report) drawOrigin(c draw.Canvas) {
	if len(r.Timeline) == 0 {
		emptyPlot(c, "Origin requests", "no requests")
		return
	}
	p := plot.New()
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "per second"
	p.Legend.Top = true
	top := 1.0
	for _, t := range r.Timeline {
		top = math.Max(top, math.Max(float64(t.Origin), float64(t.Errors)))
	}
	top *= 1.15
	p.Y.Min, p.Y.Max = 0, top
	for i, s := range []struct {
		name string
		y    func(TimelinePoint) float64
	}{
		{"origin requests", func(t TimelinePoint) float64 { return float64(t.Origin) }},
		{"client errors", func(t TimelinePoint) float64 { return float64(t.Errors) }},
	} {
		l, err := plotter.NewLine(r.timeline(s.y))
		if err != nil {
			continue
		}
		l.Color = plotutil.Color(i + 1)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	r.eventMarks(p, top)
	p.Draw(c)
}

// popIndex gives every PoP a stable colour and glyph index.
func (r *Report) popIndex() map[string]int {
	ids := sortedKeys(r.PoPs)
	idx := make(map[string]int, len(ids))
	for i, id := range ids {
		idx[id] = i
	}
	return idx
}

func (r *Report) drawPurge(c draw.Canvas) {
	purges := r.Purge.Purges
	if len(purges) == 0 {
		emptyPlot(c, "Purge propagation", "no purges")
		return
	}
	p := plot.New()
	p.X.Label.Text = "purge (in issue order)"
	p.Y.Label.Text = "ack time after issue (ms)"
	p.Legend.Top = true
	p.Legend.Left = false
	pops := map[string]bool{}
	for _, pr := range purges {
		for pop := range pr.AckMs {
			pops[pop] = true
		}
		for pop := range pr.FloorMs {
			pops[pop] = true
		}
	}
	// A PoP cut off from NATS acks seconds late while the rest ack in milliseconds: use a log
	// scale when the values span that much, so both stay readable.
	lo, hi := math.Inf(1), 0.0
	for _, pr := range purges {
		for _, m := range []map[string]float64{pr.AckMs, pr.FloorMs} {
			for _, ms := range m {
				lo, hi = math.Min(lo, ms), math.Max(hi, ms)
			}
		}
	}
	logY := hi > 0 && hi/math.Max(lo, 0.1) > 20
	clamp := func(ms float64) float64 {
		if logY {
			return math.Max(ms, 0.1)
		}
		return ms
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Label.Text += ", log scale"
	}
	idx := r.popIndex()
	for _, pop := range sortedKeys(pops) {
		i, ok := idx[pop]
		if !ok {
			i = len(idx)
		}
		var acks, floor plotter.XYs
		for n, pr := range purges {
			if ms, ok := pr.AckMs[pop]; ok {
				acks = append(acks, plotter.XY{X: float64(n + 1), Y: clamp(ms)})
			}
			if ms, ok := pr.FloorMs[pop]; ok {
				floor = append(floor, plotter.XY{X: float64(n + 1), Y: clamp(ms)})
			}
		}
		col := plotutil.Color(i)
		if len(acks) > 0 {
			s, err := plotter.NewScatter(acks)
			if err == nil {
				s.Color = col
				s.Shape = plotutil.Shape(i)
				s.Radius = vg.Points(2)
				p.Add(s)
				p.Legend.Add(pop, s)
			}
		}
		if len(floor) > 0 {
			l, err := plotter.NewLine(floor)
			if err == nil {
				l.Color = col
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
				p.Add(l)
			}
		}
	}
	if !logY {
		p.Y.Min = 0
	}
	// Head room above the highest point for the legend.
	p.Y.Max = hi * 1.3
	if logY {
		p.Y.Max = hi * 4
	}
	p.Draw(c)
}

// routingGroups merges the routing windows into at most n groups; within a group each city
// gets the PoP it was routed to in most of the group's windows.
func (r *Report) routingGroups(n int) []RoutingWindow {
	ws := r.RoutingOver
	if len(ws) == 0 {
		return nil
	}
	per := (len(ws) + n - 1) / n
	var out []RoutingWindow
	for start := 0; start < len(ws); start += per {
		end := min(start+per, len(ws))
		votes := map[string]map[string]int64{}
		for _, w := range ws[start:end] {
			for city, pop := range w.Cities {
				if votes[city] == nil {
					votes[city] = map[string]int64{}
				}
				votes[city][pop]++
			}
		}
		g := RoutingWindow{FromS: ws[start].FromS, ToS: ws[end-1].ToS, Cities: map[string]string{}}
		for city, v := range votes {
			g.Cities[city] = topKey(v)
		}
		out = append(out, g)
	}
	return out
}

func (r *Report) drawRouting(c draw.Canvas) {
	groups := r.routingGroups(6)
	if len(groups) == 0 {
		emptyPlot(c, "Routing", "no requests reached a PoP")
		return
	}
	const cols = 3
	rows := (len(groups) + cols - 1) / cols
	idx := r.popIndex()
	plots := make([][]*plot.Plot, rows)
	for row := range plots {
		plots[row] = make([]*plot.Plot, cols)
	}
	for gi, g := range groups {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%g-%g s", g.FromS, g.ToS)
		p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = -180, 180, -60, 80
		p.X.Label.Text = "longitude"
		p.Y.Label.Text = "latitude"
		cities := sortedKeys(g.Cities)
		for _, city := range cities {
			pop := g.Cities[city]
			cl, okc := r.Cities[city]
			pl, okp := r.PoPs[pop]
			if !okc || !okp {
				continue
			}
			col := plotutil.Color(idx[pop])
			if l, err := plotter.NewLine(plotter.XYs{{X: cl.Lon, Y: cl.Lat}, {X: pl.Lon, Y: pl.Lat}}); err == nil {
				l.Color = col
				l.Width = vg.Points(0.5)
				p.Add(l)
			}
			if s, err := plotter.NewScatter(plotter.XYs{{X: cl.Lon, Y: cl.Lat}}); err == nil {
				s.Color = col
				s.Shape = draw.CircleGlyph{}
				s.Radius = vg.Points(1.5)
				p.Add(s)
			}
		}
		var names plotter.XYLabels
		for _, id := range sortedKeys(r.PoPs) {
			pl := r.PoPs[id]
			if s, err := plotter.NewScatter(plotter.XYs{{X: pl.Lon, Y: pl.Lat}}); err == nil {
				s.Color = plotutil.Color(idx[id])
				s.Shape = draw.PyramidGlyph{}
				s.Radius = vg.Points(4)
				p.Add(s)
			}
			names.XYs = append(names.XYs, plotter.XY{X: pl.Lon + 3, Y: pl.Lat + 3})
			names.Labels = append(names.Labels, id)
		}
		if l, err := plotter.NewLabels(names); err == nil {
			for i := range l.TextStyle {
				l.TextStyle[i].Font.Size = vg.Points(7)
			}
			p.Add(l)
		}
		plots[gi/cols][gi%cols] = p
	}
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, c)
	for row := range plots {
		for col, p := range plots[row] {
			if p != nil {
				p.Draw(canvases[row][col])
			}
		}
	}
}
