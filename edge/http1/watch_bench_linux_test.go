package http1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/rusage"
)

// BenchmarkServeAfterWatch measures 1 KiB hits on keep-alive connections whose first request
// ran long ("watched": past watchDelay, so it was watched for its client going away) or not
// ("plain"), and BenchmarkWatched requests that all run long (a slow upstream's 10 ms, in
// which each is watched): what a watch costs the requests after it on its connection, and
// what it costs itself. cpu-ns/op is the process's CPU time per request, server and clients.
//
// (Before the server's read watch, a watch read a duplicate of the socket; closing it when
// each watch ended, rather than with the connection, was measured and not kept on 2026-12-06:
// every watched request +4.4 µs of CPU and 5 allocations.)
func BenchmarkServeAfterWatch(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	h := slowOrHit(body)
	const parallelism = 16
	for _, first := range []string{"plain", "watched"} {
		b.Run(first, func(b *testing.B) {
			addr := serveBench(b, h)
			hit := []byte("GET /hit HTTP/1.1\r\nHost: bench\r\n\r\n")
			n := answerLength(b, addr, hit)
			// The connections, and their first requests, before the clock starts: one per
			// goroutine of RunParallel.
			conns := make(chan net.Conn, parallelism*runtime.GOMAXPROCS(0))
			var wg sync.WaitGroup
			for range cap(conns) {
				wg.Go(func() {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					b.Cleanup(func() { c.Close() })
					if first == "watched" {
						io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: bench\r\n\r\n")
						resp, err := http.ReadResponse(bufio.NewReader(c), nil)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
					}
					conns <- c
				})
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			b.ResetTimer()
			cpu0 := benchCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				c := <-conns
				defer func() { conns <- c }() // the next round's (b.N grows)
				exchanges(b, pb, c, hit, n)
			})
			b.ReportMetric(float64((benchCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

func BenchmarkWatched(b *testing.B) {
	addr := serveBench(b, slowOrHit(bytes.Repeat([]byte("x"), 1<<10)))
	slow := []byte("GET /slow HTTP/1.1\r\nHost: bench\r\n\r\n")
	n := answerLength(b, addr, slow)
	b.ReportAllocs()
	b.SetParallelism(16)
	cpu0 := benchCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		exchanges(b, pb, c, slow, n)
	})
	b.ReportMetric(float64((benchCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// slowOrHit answers /slow after 10 ms (twice watchDelay: a miss from a slow upstream, which is
// watched) and anything else at once with body, as a hit.
func slowOrHit(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			t := time.NewTimer(2 * watchDelay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
			}
		}
		w.Header()["Content-Length"] = []string{strconv.Itoa(len(body))}
		w.Write(body)
	})
}

// serveBench serves h on the fast path until the benchmark ends.
func serveBench(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.64:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: h, Fallback: &http.Server{Handler: h}}
	go s.Serve(ln)
	b.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// benchCPU returns the process's CPU time so far, user and system.
func benchCPU(tb testing.TB) time.Duration {
	d, err := rusage.CPU()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}
