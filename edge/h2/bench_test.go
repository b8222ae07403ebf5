package h2

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/net/http2"
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

// newBareConn is a connection that is not served: its frames are handed to process by the
// caller, on the caller's goroutine. Its client is nc's other end, which reads nothing.
func newBareConn(tb testing.TB) *conn {
	nc, peer := net.Pipe()
	c := newConn(&Server{}, context.Background(), nc, nil, http.NotFoundHandler())
	tb.Cleanup(func() {
		c.cancel()
		nc.Close()
		peer.Close()
	})
	return c
}

// BenchmarkLateFrame is the cost of one frame on a closed stream while resetOpen is full (the
// server reset maxResetOpen streams while their clients were sending): a flood of RST_STREAM
// on streams it no longer remembers, trailers on the most recently remembered one (which
// forget it: each iteration remembers it again, so it costs a remembering too), and the
// remembering of one more stream, which overwrites the oldest.
func BenchmarkLateFrame(b *testing.B) {
	full := func(b *testing.B) *conn {
		c := newBareConn(b)
		for i := range maxResetOpen {
			c.rememberLocked(uint32(2*i+1), recvStreamWindow)
		}
		c.maxClientID = 2*maxResetOpen + 1 // a stream the server does not remember
		return c
	}
	b.Run("RST_STREAM/forgotten", func(b *testing.B) {
		c := full(b)
		f := &http2.RSTStreamFrame{FrameHeader: http2.FrameHeader{Type: http2.FrameRSTStream, StreamID: c.maxClientID}, ErrCode: http2.ErrCodeCancel}
		b.ReportAllocs()
		for b.Loop() {
			if c.process(f) != keepReading {
				b.Fatal("the connection ended")
			}
		}
	})
	b.Run("HEADERS/remembered", func(b *testing.B) {
		c := full(b)
		newest := uint32(2*maxResetOpen - 1)
		f := &http2.MetaHeadersFrame{HeadersFrame: &http2.HeadersFrame{FrameHeader: http2.FrameHeader{Type: http2.FrameHeaders, Flags: http2.FlagHeadersEndStream, StreamID: newest}}}
		b.ReportAllocs()
		for b.Loop() {
			c.mu.Lock()
			c.rememberLocked(newest, recvStreamWindow)
			c.mu.Unlock()
			if c.process(f) != keepReading {
				b.Fatal("the connection ended")
			}
		}
	})
	b.Run("remember", func(b *testing.B) {
		c := full(b)
		id := c.maxClientID
		b.ReportAllocs()
		for b.Loop() {
			id += 2
			c.mu.Lock()
			c.rememberLocked(id, recvStreamWindow)
			c.mu.Unlock()
		}
	})
}
