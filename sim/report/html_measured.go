package report

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// Plot element ids of routing from live measurements.
const (
	PlotSaturation  = "plot-saturation"
	PlotShed        = "plot-shed"
	PlotLatencyGain = "plot-latency-gain"
)

// drawSeries plots one line per PoP of series (per second), with the timeline's events.
func (r *Report) drawSeries(c draw.Canvas, series map[string][]float64, ylabel string, minTop float64, empty string) {
	if r.Measured == nil || len(series) == 0 {
		emptyPlot(c, ylabel, empty)
		return
	}
	p := plot.New()
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = ylabel
	top := minTop
	for i, pop := range sortedKeys(series) {
		s := series[pop]
		xys := make(plotter.XYs, len(s))
		for j, v := range s {
			xys[j] = plotter.XY{X: float64(j) + 0.5, Y: v}
			top = max(top, v*1.1)
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			continue
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(pop, l)
	}
	p.Y.Min, p.Y.Max = 0, top
	p.Legend.Top = true
	r.eventMarks(p, top)
	p.Draw(c)
}

func (r *Report) drawSaturation(c draw.Canvas) {
	var s map[string][]float64
	if r.Measured != nil {
		s = r.Measured.Saturation
	}
	r.drawSeries(c, s, "utilisation (saturation)", 1.1, "no load figures")
}

func (r *Report) drawShed(c draw.Canvas) {
	var s map[string][]float64
	if r.Measured != nil {
		s = map[string][]float64{}
		for pop, v := range r.Measured.Shed {
			for _, x := range v {
				if x > 0 {
					s[pop] = v // only the PoPs that shed at some point
					break
				}
			}
		}
	}
	r.drawSeries(c, s, "shed share", 1.0, "no PoP shed load")
}

// drawLatencyGain draws, per client region, the median latency of the rum group (routed by
// measured RTT) beside the geo group's (geography alone).
func (r *Report) drawLatencyGain(c draw.Canvas) {
	if r.Measured == nil || len(r.Measured.Groups) == 0 {
		emptyPlot(c, "Latency by client group", "no client groups (clients.rum.enabled is off)")
		return
	}
	regions := sortedKeys(r.Measured.Groups)
	p := plot.New()
	p.Y.Label.Text = "median latency (ms)"
	w := vg.Points(14)
	for i, g := range []string{scenario.GroupRUM, scenario.GroupGeo} {
		vals := make(plotter.Values, len(regions))
		for j, region := range regions {
			vals[j] = r.Measured.Groups[region][g].P50
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			continue
		}
		b.Color = plotutil.Color(i)
		b.Offset = w * vg.Length(2*i-1) / 2
		p.Add(b)
		p.Legend.Add(fmt.Sprintf("%s (%s)", g, map[string]string{scenario.GroupRUM: "measured RTT", scenario.GroupGeo: "geography"}[g]), b)
	}
	p.NominalX(regions...)
	p.Legend.Top = true
	p.Draw(c)
}
