package edge

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
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

// TestSlicedFirstSliceFailsCollapsed: clients waiting on one fetch of the first slice their
// ranges need (one fetch per slice in flight), a single range and several, each get the edge's
// 502 when it fails, none a 206 or a cut; what stays stored is the manifest and the first slice,
// and once the origin serves the slice again the next range is its bytes.
func TestSlicedFirstSliceFailsCollapsed(t *testing.T) {
	const sliceSize = 64 << 10
	body := bytes.Repeat([]byte("0123456789abcdef"), 3*sliceSize/16)
	second := fmt.Sprintf("bytes=%d-%d", sliceSize, 2*sliceSize-1)
	var failing atomic.Bool
	failing.Store(true)
	asked := make(chan struct{}, 8)
	release := make(chan struct{})
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == second && failing.Load() {
			asked <- struct{}{}
			<-release
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"e"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr,
		Cache: wire.CacheOptions{SliceBytes: sliceSize}}}}
	cfg.Cache.MaxObjectBytes = sliceSize
	n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // a cut is never retried
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/obj", "Range", "bytes=0-9"); r.status != http.StatusPartialContent {
		t.Fatalf("the miss that stores the manifest and the first slice: %d", r.status)
	}
	ranges := []string{
		fmt.Sprintf("bytes=%d-%d", sliceSize+1, sliceSize+63),
		fmt.Sprintf("bytes=%d-%d", sliceSize+100, sliceSize+200),
		fmt.Sprintf("bytes=%d-%d,%d-%d", sliceSize+1, sliceSize+63, 2*sliceSize+5, 2*sliceSize+9),
	}
	results := make(chan string, len(ranges))
	for _, rng := range ranges {
		go func() {
			r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/obj", "Range", rng)
			switch {
			case err != nil:
				results <- fmt.Sprintf("%s: %v", rng, err)
			case r.status != http.StatusBadGateway || !strings.Contains(r.header.Get("Cache-Status"), "detail=upstream-slice-failed"):
				results <- fmt.Sprintf("%s: %d (Cache-Status %q)", rng, r.status, r.header.Get("Cache-Status"))
			default:
				results <- ""
			}
		}()
	}
	<-asked // the slice's one fetch is waiting, and every client is in its handler: it fails
	wait.For(t, 5*time.Second, "every client in the edge", func() bool { return n.inFlight() == int64(len(ranges)) })
	close(release)
	for range ranges {
		if r := <-results; r != "" {
			t.Errorf("GET %s; want the edge's 502", r)
		}
	}
	if items := n.store.Stats().Items; items != 2 {
		t.Errorf("%d objects stored; want 2, the manifest and the first slice", items)
	}
	failing.Store(false)
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/obj", "Range", ranges[0]); r.status != http.StatusPartialContent || r.body != string(body[sliceSize+1:sliceSize+64]) {
		t.Errorf("once the origin serves the slice: %d %q; want a 206 of its bytes", r.status, r.body)
	}
}
