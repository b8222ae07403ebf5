package durhist

import (
	"testing"
	"time"
)

func TestQuantilesWithinOnePercent(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 1000; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	h := Of(ds)
	if h.Count() != 1000 {
		t.Fatalf("Count = %d, want 1000", h.Count())
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond, 1: time.Second} {
		got := h.Quantile(q)
		if got < want*99/100 || got > want*101/100 {
			t.Errorf("Quantile(%v) = %v, want %v ± 1 %%", q, got, want)
		}
	}
	if m := h.Max(); m < 990*time.Millisecond || m > 1010*time.Millisecond {
		t.Errorf("Max = %v, want about 1s", m)
	}
	var n int64
	for _, b := range h.Buckets() {
		n += b.Count
	}
	if n != 1000 {
		t.Errorf("buckets hold %d, want 1000", n)
	}
	if New().Quantile(0.5) != 0 {
		t.Error("an empty histogram's median is not 0")
	}
	h.Add(2 * time.Hour) // clamped, not lost
	if h.Count() != 1001 {
		t.Errorf("a duration beyond an hour was not counted")
	}
}
