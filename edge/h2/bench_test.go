package h2

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
)

// BenchmarkServe compares this server with net/http's HTTP/2 server over TLS on loopback:
// 16 clients per core share 4 connections (x/net's HTTP/2 client), each asking for a 1 KiB or
// 16 KiB answer with a dozen fields, as a cache hit is. Client and server share the machine,
// so the figures are for comparison between the two only.
func BenchmarkServe(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		body := bytes.Repeat([]byte("x"), size)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hd := w.Header()
			for _, k := range []string{"Content-Type", "Cache-Control", "Etag", "Last-Modified", "Via", "Accept-Ranges", "X-Origin", "Age", "Cache-Status"} {
				hd[k] = []string{"value-of-" + k}
			}
			hd["Content-Length"] = []string{strconv.Itoa(len(body))}
			w.Write(body)
		})
		for _, server := range []string{"h2", "net-http"} {
			b.Run(fmt.Sprintf("%s/size=%d", server, size), func(b *testing.B) {
				ts := newTestServer(b, h)
				if server == "net-http" {
					ts.HS.TLSNextProto = nil // net/http configures its own HTTP/2 server
				}
				var clients []*http.Client
				for range 4 {
					clients = append(clients, ts.newClient())
				}
				// Before the server's shutdown (cleanups run last first): net/http's server
				// otherwise waits out the shutdown's 5 s for the idle connections.
				b.Cleanup(func() {
					for _, c := range clients {
						c.CloseIdleConnections()
					}
				})
				var mu sync.Mutex
				next := 0
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(16)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					mu.Lock()
					cl := clients[next%len(clients)]
					next++
					mu.Unlock()
					for pb.Next() {
						resp, err := cl.Get(ts.URL + "/x")
						if err != nil {
							b.Error(err)
							return
						}
						n, _ := io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if n != int64(size) {
							b.Errorf("body of %d bytes", n)
							return
						}
					}
				})
			})
		}
	}
}
