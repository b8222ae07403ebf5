package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/gcheadroom"
	"github.com/meridian-cdn/meridian/internal/prefault"
	"github.com/meridian-cdn/meridian/internal/rusage"
	"github.com/meridian-cdn/meridian/wire"
)

// staticOrigin serves one body for every path, with the fields nginx gives a static file
// (Content-Length, Last-Modified, ETag, Accept-Ranges) and Cache-Control: max-age=3600: the
// origin of issue 15's miss benchmark, cheap enough that the edge's own work dominates.
func staticOrigin(tb testing.TB, ip string, size int) string {
	tb.Helper()
	body := bytes.Repeat([]byte("m"), size)
	lm := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC).Format(http.TimeFormat)
	etag := fmt.Sprintf(`"6543a2c0-%x"`, size)
	length := strconv.Itoa(size)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/octet-stream"}
		h["Content-Length"] = []string{length}
		h["Last-Modified"] = []string{lm}
		h["Etag"] = []string{etag}
		h["Accept-Ranges"] = []string{"bytes"}
		h["Cache-Control"] = []string{"max-age=3600"}
		w.Write(body)
	})}
	ln := listen(tb, ip)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("static origin: %v", err)
		}
	})
	return ln.Addr().String()
}

// benchCPU is the user and system CPU time this process has used.
func benchCPU(tb testing.TB) time.Duration {
	d, err := rusage.CPU()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// BenchmarkMiss measures unique-URL misses (issue 15): every request is for a URL never
// asked before, so each one is a collapsed fill from a real origin over loopback, stored,
// and delivered. The handler is called directly, as in BenchmarkHit; "serial" is one miss at
// a time (the cost of one miss), "parallel" 64 at once, as wrk -c64 drives the binary. The
// store starts empty, so it grows throughout (BenchmarkMissFullStore: one that evicts).
func BenchmarkMiss(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, mode := range []string{"serial", "parallel"} {
			b.Run(fmt.Sprintf("size=%d/%s", size, mode), func(b *testing.B) {
				n := missEdge(b, size, 0)
				benchMisses(b, n, size, mode == "parallel")
			})
		}
	}
}

// BenchmarkMissFullStore is BenchmarkMiss's parallel case at a store already past its
// max_bytes with 16 KiB objects before the timer starts, so every miss meets a full store,
// and the heap is at its steady size: a cache's usual state, which an empty store's misses
// (paying the first touch of each new page) do not show (docs/benchmarks.md, forty-sixth
// pass). Not every miss is stored: the admission policy refuses some (stored/op, about 0.3-0.7
// at 64 MiB and 0.9 at 1 GiB), and each it admits evicts. The 1 GiB store is the binary's
// default; filling it takes a while.
func BenchmarkMissFullStore(b *testing.B) {
	for _, c := range []struct {
		name     string
		maxBytes int64
	}{{"64MiB", 64 << 20}, {"1GiB", 1 << 30}} {
		for _, size := range []int{1 << 10, 16 << 10} {
			b.Run(fmt.Sprintf("store=%s/size=%d", c.name, size), func(b *testing.B) {
				benchMissFullStore(b, size, c.maxBytes)
			})
		}
	}
}

// benchMissFullStore fills a store of maxBytes past its size with 16 KiB objects, then
// measures misses of size bytes on it.
func benchMissFullStore(b *testing.B, size int, maxBytes int64) {
	n := missEdge(b, size, maxBytes)
	binaryGC(b, n)
	fill := missFunc(b, n, "/fill/", 16<<10)
	prefill := int(maxBytes*5/4) / (16 << 10)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			w := &discardWriter{h: http.Header{}}
			for range prefill / 8 {
				fill(w, fillHost)
			}
		})
	}
	wg.Wait()
	if st := n.store.Stats(); st.Items >= int64(prefill) {
		b.Fatalf("store holds %d objects after %d fills of 16 KiB into %d bytes: it never evicted", st.Items, prefill, maxBytes)
	}
	benchMisses(b, n, size, true)
}

// binaryGC runs the collector as `meridian edge` does for n (command.go: the memory limit,
// GOGC, gcheadroom and prefault) until b ends, so that a store's heap costs what it costs the
// binary; a test binary's GOGC=100 alone gives a 1 GiB store a 1 GiB headroom.
func binaryGC(b *testing.B, n *Node) {
	limit, _ := memoryLimit(n.cfg, "")
	oldLimit := debug.SetMemoryLimit(limit)
	oldPct := debug.SetGCPercent(edgeGCPercent)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { gcheadroom.Run(ctx, edgeHeadroom(n.cfg)) })
	wg.Go(func() { prefault.Run(ctx, 5*time.Millisecond) })
	b.Cleanup(func() {
		stop()
		wg.Wait()
		debug.SetMemoryLimit(oldLimit)
		debug.SetGCPercent(oldPct)
	})
}

// fillHost is the host whose origin serves the 16 KiB objects that fill a store.
const fillHost = "fill.example.com"

// missEdge is an edge with testHost's origin serving size bytes for every path and fillHost's
// 16 KiB, its store bounded by maxBytes (0: the default).
func missEdge(b *testing.B, size int, maxBytes int64) *Node {
	originAddr := staticOrigin(b, "127.0.0.10", size)
	fillAddr := staticOrigin(b, "127.0.0.12", 16<<10)
	cfg := Config{
		PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{
			{Host: testHost, Origin: "http://" + originAddr},
			{Host: fillHost, Origin: "http://" + fillAddr},
		},
	}
	cfg.Cache.MaxBytes = maxBytes
	n, _ := startEdge(b, listen(b, "127.0.0.11"), cfg)
	return n
}

// missFunc returns a function that asks n for a URL under prefix never asked before, for the
// host given, and checks that it got size bytes.
func missFunc(b *testing.B, n *Node, prefix string, size int) func(w *discardWriter, host string) {
	var seq atomic.Uint64
	want := strconv.Itoa(size)
	return func(w *discardWriter, host string) {
		r := &http.Request{Method: http.MethodGet, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL:  &url.URL{Path: prefix + strconv.FormatUint(seq.Add(1), 10)},
			Host: host, Header: http.Header{}, RemoteAddr: "127.0.0.1:1234"}
		clear(w.h)
		n.ServeHTTP(w, r)
		if w.status != http.StatusOK || w.h.Get("Content-Length") != want {
			b.Fatalf("status %d, Content-Length %q", w.status, w.h.Get("Content-Length"))
		}
	}
}

// benchMisses runs b.N unique-URL misses of size bytes on n, one at a time or 64 at once.
func benchMisses(b *testing.B, n *Node, size int, parallel bool) {
	miss := missFunc(b, n, "/miss/", size)
	b.ResetTimer() // a full store's fill is not the misses' time or allocations
	b.ReportAllocs()
	b.SetBytes(int64(size))
	cpu0, st0 := benchCPU(b), n.store.Stats()
	if !parallel {
		w := &discardWriter{h: http.Header{}}
		for b.Loop() {
			miss(w, testHost)
		}
	} else {
		b.SetParallelism(32) // 64 goroutines on 2 cores, as wrk -c64
		b.RunParallel(func(pb *testing.PB) {
			w := &discardWriter{h: http.Header{}}
			for pb.Next() {
				miss(w, testHost)
			}
		})
	}
	// CPU per miss is steadier than ns/op on a shared machine: it is this process's (edge and
	// origin together), whatever else runs.
	b.ReportMetric(float64((benchCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	// The misses the store admitted: each is an object more, or one more that left for it (an
	// eviction). A full store's admission policy refuses most (Ristretto's TinyLFU: a new key
	// seen once against a sample of old ones), which a count of what it holds cannot tell from
	// all; a run of a few (the first, b.N 1) may store none.
	st := n.store.Stats()
	stored := st.Items - st0.Items + int64(st.Evictions-st0.Evictions)
	b.ReportMetric(float64(stored)/float64(b.N), "stored/op")
	if stored <= 0 && b.N >= 100 {
		b.Fatalf("none of %d misses was stored (objects %d then %d, evictions %d then %d)", b.N, st0.Items, st.Items, st0.Evictions, st.Evictions)
	}
}
