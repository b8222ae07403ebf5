package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestHeldHeadKeepsHitTime: a sliced hit's head is held (headHold) until the first slice its
// answer needs is read, which may be fetched first; the hit's service time (hitTime, the
// saturation figure's) is to the head's WriteHeader, as every hit's, not to its release after
// the fetch. logWriter.WriteHeader marks a hit's time unconditionally (no check on every hit
// for a held head's): the hold keeps its own.
func TestHeldHeadKeepsHitTime(t *testing.T) {
	clock := newFakeClock()
	since := func(t0 time.Time) time.Duration { return clock.Now().Sub(t0) }
	rec := httptest.NewRecorder()
	w := &logWriter{ResponseWriter: rec, status: http.StatusOK, start: clock.Now(), since: since, cacheStatus: "hit"}
	sr := &sliceReader{}
	h := &headHold{w: w, sr: sr}
	clock.Advance(time.Millisecond)
	h.writeHeader(http.StatusPartialContent)
	clock.Advance(time.Second) // the first slice's fetch
	sr.started.Store(true)
	if _, err := h.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusPartialContent || w.status != http.StatusPartialContent || rec.Body.String() != "x" {
		t.Errorf("released: %d (logged %d), body %q; want the held 206, then the byte", rec.Code, w.status, rec.Body.String())
	}
	if !w.hitSet || w.hitTime != time.Millisecond {
		t.Errorf("hit time %v (set %v); want 1ms, to the held head, not the release after the slice's fetch", w.hitTime, w.hitSet)
	}
}
