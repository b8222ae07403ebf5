// Package durhist summarises durations for the simulator's report and the benchmarks: an
// HdrHistogram of microseconds from 1 µs to an hour with two significant figures, so a
// percentile is within 1 % of the exact one in bounded memory, however many samples.
package durhist

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// maxMicros is the longest duration told apart: an hour. Longer ones count as an hour.
const maxMicros = int64(time.Hour / time.Microsecond)

// Histogram counts durations. The zero value is not ready: use New or Of.
type Histogram struct{ h *hdrhistogram.Histogram }

// New returns an empty histogram.
func New() *Histogram { return &Histogram{hdrhistogram.New(1, maxMicros, 2)} }

// Of returns a histogram of ds.
func Of(ds []time.Duration) *Histogram {
	h := New()
	for _, d := range ds {
		h.Add(d)
	}
	return h
}

// Add counts d.
func (h *Histogram) Add(d time.Duration) {
	us := min(max(int64(d/time.Microsecond), 0), maxMicros)
	// In range by construction: RecordValue fails only beyond the highest value.
	_ = h.h.RecordValue(us)
}

// Count is the number of durations counted.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the q-quantile (0..1); 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.h.ValueAtQuantile(q*100)) * time.Microsecond
}

// Max is the largest duration counted (within the histogram's precision).
func (h *Histogram) Max() time.Duration { return time.Duration(h.h.Max()) * time.Microsecond }

// Bucket is one non-empty range of the distribution and how many durations fell in it.
type Bucket struct {
	From, To time.Duration
	Count    int64
}

// Buckets lists the non-empty buckets, shortest first.
func (h *Histogram) Buckets() []Bucket {
	var out []Bucket
	for _, b := range h.h.Distribution() {
		if b.Count > 0 {
			out = append(out, Bucket{From: time.Duration(b.From) * time.Microsecond, To: time.Duration(b.To) * time.Microsecond, Count: b.Count})
		}
	}
	return out
}
