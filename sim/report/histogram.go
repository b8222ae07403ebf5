package report

import (
	"time"

	"github.com/meridian-cdn/meridian/internal/durhist"
)

// histogram counts latencies (internal/durhist: within 1 %, bounded memory) and reads them in
// the report's units, milliseconds.
type histogram struct{ h *durhist.Histogram }

func newHistogram() *histogram { return &histogram{durhist.New()} }

func (h *histogram) add(d time.Duration) { h.h.Add(d) }

func (h *histogram) count() int64 { return h.h.Count() }

// quantile returns the q-quantile (0..1) in milliseconds; 0 for an empty histogram.
func (h *histogram) quantile(q float64) float64 { return ms(h.h.Quantile(q)) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cdf returns points (ms, cumulative fraction) at the middle of each non-empty bucket.
func (h *histogram) cdf() []CDFPoint {
	n := h.count()
	if n == 0 {
		return nil
	}
	var pts []CDFPoint
	var seen int64
	for _, b := range h.h.Buckets() {
		seen += b.Count
		pts = append(pts, CDFPoint{Ms: ms(b.From+b.To) / 2, Fraction: float64(seen) / float64(n)})
	}
	return pts
}
