package report

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// histogram counts latencies in microseconds, from 1 µs to an hour, with two significant
// figures: a percentile is within 1 % of the exact one, in bounded memory whatever the run's
// length. Longer latencies count as an hour.
type histogram struct{ h *hdrhistogram.Histogram }

// maxMicros is the longest latency a histogram tells apart: an hour.
const maxMicros = int64(time.Hour / time.Microsecond)

func newHistogram() *histogram { return &histogram{hdrhistogram.New(1, maxMicros, 2)} }

func (h *histogram) add(d time.Duration) {
	us := min(max(int64(d/time.Microsecond), 0), maxMicros)
	// In range by construction: RecordValue fails only for values beyond the highest.
	_ = h.h.RecordValue(us)
}

func (h *histogram) count() int64 { return h.h.TotalCount() }

// quantile returns the q-quantile (0..1) in milliseconds; 0 for an empty histogram.
func (h *histogram) quantile(q float64) float64 {
	if h.count() == 0 {
		return 0
	}
	return float64(h.h.ValueAtQuantile(q*100)) / 1000
}

// cdf returns points (ms, cumulative fraction) at the middle of each non-empty bucket.
func (h *histogram) cdf() []CDFPoint {
	n := h.count()
	if n == 0 {
		return nil
	}
	var pts []CDFPoint
	var seen int64
	for _, b := range h.h.Distribution() {
		if b.Count == 0 {
			continue
		}
		seen += b.Count
		pts = append(pts, CDFPoint{Ms: float64(b.From+b.To) / 2 / 1000, Fraction: float64(seen) / float64(n)})
	}
	return pts
}
