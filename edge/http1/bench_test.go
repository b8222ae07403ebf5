package http1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkServe compares the fast path with net/http alone on loopback: keep-alive
// connections, each asking for a 1 KiB or 16 KiB answer with a dozen fields, as a cache hit
// is. The client reads answers of a known length, so that it costs as little as it can.
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
		for _, server := range []string{"fast", "net-http"} {
			b.Run(fmt.Sprintf("%s/size=%d", server, size), func(b *testing.B) {
				ln, err := net.Listen("tcp", "127.0.0.64:0")
				if err != nil {
					b.Fatal(err)
				}
				var stop func()
				if server == "fast" {
					s := &Server{Handler: h, Fallback: &http.Server{Handler: h}}
					go s.Serve(ln)
					stop = func() { s.Close() }
				} else {
					s := &http.Server{Handler: h}
					go s.Serve(ln)
					stop = func() { s.Close() }
				}
				defer stop()
				req := []byte("GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
				n := answerLength(b, ln.Addr().String(), req)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					c, err := net.Dial("tcp", ln.Addr().String())
					if err != nil {
						b.Error(err)
						return
					}
					defer c.Close()
					exchanges(b, pb, c, req, n)
				})
			})
		}
	}
}

// exchanges sends req on c and reads its answer of n bytes, for each of pb's iterations.
func exchanges(b *testing.B, pb *testing.PB, c net.Conn, req []byte, n int) {
	buf := make([]byte, n)
	for pb.Next() {
		if _, err := c.Write(req); err != nil {
			b.Error(err)
			return
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Error(err)
			return
		}
	}
}

// answerLength asks once and returns the length of the whole answer (header and body).
func answerLength(b *testing.B, addr string, req []byte) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Write(req)
	var raw bytes.Buffer
	resp, err := http.ReadResponse(bufio.NewReader(io.TeeReader(c, &raw)), nil)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	head := bytes.Index(raw.Bytes(), []byte("\r\n\r\n")) + 4
	return head + len(body)
}
