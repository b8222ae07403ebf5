package edge

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/edge/store"
)

// discardWriter is the cheapest ResponseWriter: the benchmark measures the pipeline, not I/O.
type discardWriter struct {
	h      http.Header
	status int
	values [16]string
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) ValueScratch() []string      { return d.values[:] } // as edge/http1 and edge/h2
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(s int)           { d.status = s }

// CloseWhenClientGone is edge/http1's: a miss then fills on the caller's goroutine, as on the
// HTTP/1.1 fast path that wrk drives (filler.wait).
func (d *discardWriter) CloseWhenClientGone(bool) {}

// BenchmarkHit measures one cache hit through the whole handler (route, key, lookup, purge
// check, deliver), with no purge records and with 10,000 live ones.
func BenchmarkHit(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, records := range []int{0, 10_000} {
			b.Run(fmt.Sprintf("size=%d/records=%d", size, records), func(b *testing.B) {
				s := newSingleB(b)
				p := obj("/bench", "cc", "max-age=3600", "size", fmt.Sprint(size))
				warm := do(b, s.client, http.MethodGet, s.edge.Addr(), testHost, p)
				if warm.status != 200 {
					b.Fatalf("warm-up = %d", warm.status)
				}
				for i := range records {
					kinds := []store.Kind{store.URL, store.Prefix, store.Key}
					s.edge.store.Purge(store.Record{Kind: kinds[i%3], Host: testHost, Value: fmt.Sprintf("/other/%d", i)})
				}
				req, _ := http.NewRequest(http.MethodGet, p, nil)
				req.Host = testHost
				req.RemoteAddr = "127.0.0.1:1234"
				w := &discardWriter{h: http.Header{}}
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					clear(w.h)
					s.edge.ServeHTTP(w, req)
					if w.status != 200 {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		}
	}
}

// BenchmarkHitVary measures a hit on an answer with a Vary: on Accept-Encoding, a field
// forwarded as the client sent it (its key is read from the client's request), and on
// X-Forwarded-Proto, which the edge sets upstream itself.
func BenchmarkHitVary(b *testing.B) {
	for _, vary := range []string{"Accept-Encoding", "X-Forwarded-Proto"} {
		b.Run("vary="+vary, func(b *testing.B) {
			s := newSingleB(b)
			p := obj("/bench", "cc", "max-age=3600", "size", "1024", "vary", vary)
			ae := []string{"gzip, deflate, br"}
			warm := do(b, s.client, http.MethodGet, s.edge.Addr(), testHost, p, "Accept-Encoding", ae[0])
			if warm.status != 200 {
				b.Fatalf("warm-up = %d", warm.status)
			}
			req, _ := http.NewRequest(http.MethodGet, p, nil)
			req.Host = testHost
			req.RemoteAddr = "127.0.0.1:1234"
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.SetBytes(1024)
			for b.Loop() {
				clear(w.h)
				req.Header["Accept-Encoding"] = ae // the edge rewrites it as the request arrives
				s.edge.ServeHTTP(w, req)
				if cs := w.h["Cache-Status"]; w.status != 200 || len(cs) != 1 || !strings.Contains(cs[0], "hit") {
					b.Fatalf("status %d, Cache-Status %q", w.status, cs)
				}
			}
		})
	}
}
