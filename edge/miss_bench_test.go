package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

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
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMiss measures unique-URL misses (issue 15): every request is for a URL never
// asked before, so each one is a collapsed fill from a real origin over loopback, stored,
// and delivered. The handler is called directly, as in BenchmarkHit; "serial" is one miss at
// a time (the cost of one miss), "parallel" 64 at once, as wrk -c64 drives the binary.
func BenchmarkMiss(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, mode := range []string{"serial", "parallel"} {
			b.Run(fmt.Sprintf("size=%d/%s", size, mode), func(b *testing.B) {
				originAddr := staticOrigin(b, "127.0.0.10", size)
				n, _ := startEdge(b, listen(b, "127.0.0.11"), Config{
					PoP: "tst", Node: "e1",
					Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}},
				})
				var seq atomic.Uint64
				miss := func(w *discardWriter) {
					r := &http.Request{Method: http.MethodGet, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
						URL:  &url.URL{Path: "/miss/" + strconv.FormatUint(seq.Add(1), 10)},
						Host: testHost, Header: http.Header{}, RemoteAddr: "127.0.0.1:1234"}
					clear(w.h)
					n.ServeHTTP(w, r)
					if w.status != http.StatusOK || w.h.Get("Content-Length") != strconv.Itoa(size) {
						b.Fatalf("status %d, Content-Length %q", w.status, w.h.Get("Content-Length"))
					}
				}
				b.ReportAllocs()
				b.SetBytes(int64(size))
				cpu0 := benchCPU(b)
				if mode == "serial" {
					w := &discardWriter{h: http.Header{}}
					for b.Loop() {
						miss(w)
					}
				} else {
					b.SetParallelism(32) // 64 goroutines on 2 cores, as wrk -c64
					b.RunParallel(func(pb *testing.PB) {
						w := &discardWriter{h: http.Header{}}
						for pb.Next() {
							miss(w)
						}
					})
				}
				// CPU per miss is steadier than ns/op on a shared machine: it is this process's
				// (edge and origin together), whatever else runs.
				b.ReportMetric(float64((benchCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
				if got := n.store.Stats().Items; got == 0 {
					b.Fatal("nothing was stored")
				}
			})
		}
	}
}
