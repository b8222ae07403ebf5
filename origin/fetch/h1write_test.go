package fetch

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/rusage"
)

// TestH1SameAsTransport sends the same requests through h1Transport and net/http's Transport
// (as New configured it before h1) to the same servers: the bytes on the wire must be the same,
// and the responses alike in every field the edge reads.
func TestH1SameAsTransport(t *testing.T) {
	heads := make(chan string, 1)
	raw := startRaw(t, "127.0.0.78", func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			var head strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			heads <- head.String()
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		}
	})
	cfg := Config{}.withDefaults()
	transports := map[string]http.RoundTripper{"h1": newH1(t, cfg), "net/http": cfg.newTransport()}
	reqs := []func() *http.Request{
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://"+raw.addr+"/a?b=c&d=%20e", nil)
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://"+raw.addr+"/p/../q;x?y", nil)
			r.Host = "www.example.com"
			r.Header.Set("User-Agent", "Meridian/1")
			r.Header.Set("X-Forwarded-For", "192.0.2.1")
			r.Header["Accept-Encoding"] = []string{"gzip, br"}
			r.Header.Add("Cookie", "a=1")
			r.Header.Add("Cookie", "b=2")
			r.Header.Set("Range", "bytes=0-1")
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodHead, "http://"+raw.addr+"/h", nil)
			r.Header["User-Agent"] = []string{""} // present and empty: no User-Agent at all
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://"+raw.addr+"/c", nil)
			r.Close = true
			r.Header["lower-case"] = []string{"kept as is"}
			r.Header["User-Agent"] = []string{" spaced\tout "}
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodOptions, "http://"+raw.addr+"/o", nil)
			return r
		},
	}
	for i, mk := range reqs {
		got := map[string]string{}
		for name, rt := range transports {
			resp, err := rt.RoundTrip(mk())
			if err != nil {
				t.Fatalf("request %d via %s: %v", i, name, err)
			}
			resp.Body.Close()
			got[name] = <-heads
		}
		if got["h1"] != got["net/http"] {
			t.Errorf("request %d: h1 sent\n%q\nnet/http sent\n%q", i, got["h1"], got["net/http"])
		}
	}
	// Both refuse what cannot be sent.
	for _, bad := range []http.Header{{"Folded": {"a\r\n b"}}, {"Bad Name": {"x"}}} {
		for name, rt := range transports {
			r, _ := http.NewRequest(http.MethodGet, "http://"+raw.addr+"/", nil)
			r.Header = bad
			if _, err := rt.RoundTrip(r); err == nil || !strings.Contains(err.Error(), "invalid header") {
				t.Errorf("header %v via %s: %v, want an invalid header error", bad, name, err)
			}
		}
	}
	for _, rt := range transports {
		rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
	}

	// Responses: the same answers seen through both.
	answers := map[string]string{
		"/len":     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"/http10":  "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"/eof":     "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nhello",
		"/gzip":    "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
		"/hints":   "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"/304":     "HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nContent-Length: 99\r\n\r\n",
		"/bad":     "HTTP/1.1 2xx Nope\r\n\r\n",
	}
	srv := startRaw(t, "127.0.0.79", func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			io.WriteString(c, answers[req.URL.Path])
			if req.URL.Path == "/eof" || req.URL.Path == "/http10" || req.URL.Path == "/bad" {
				return
			}
		}
	})
	describe := func(rt http.RoundTripper, path string) string {
		resp, body, err := roundTrip(t, rt, context.Background(), http.MethodGet, "http://"+srv.addr+path, nil)
		if err != nil {
			return "error" // the wording differs; both must fail
		}
		return fmt.Sprintf("%s %q %d %v %v %q %v %v tls=%v req=%v",
			resp.Status, resp.Proto, resp.ContentLength, resp.Close, resp.Uncompressed, body,
			resp.Header, resp.Trailer, resp.TLS != nil, resp.Request != nil)
	}
	for path := range answers {
		h1, std := describe(transports["h1"], path), describe(transports["net/http"], path)
		if h1 != std {
			t.Errorf("GET %s:\nh1       %s\nnet/http %s", path, h1, std)
		}
	}
}

// BenchmarkTransport compares h1Transport with net/http's Transport (as New configured it
// before) on 1 KiB answers from a net/http server over loopback: CPU per exchange, both sides.
func BenchmarkTransport(b *testing.B) {
	payload := make([]byte, 1024)
	ln, err := net.Listen("tcp", "127.0.0.80:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{"1024"}
		w.Write(payload)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/obj"
	cfg := Config{}.withDefaults()
	for _, name := range []string{"h1", "net-http"} {
		for _, mode := range []string{"serial", "parallel"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				var rt http.RoundTripper = cfg.newTransport()
				if name == "h1" {
					rt = cfg.newH1(cfg.newTransport())
				}
				defer rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
				one := func() {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					if n, _ := io.Copy(io.Discard, resp.Body); n != 1024 {
						b.Fatalf("read %d bytes", n)
					}
					resp.Body.Close()
				}
				b.ReportAllocs()
				cpu0 := benchCPU(b)
				if mode == "serial" {
					for b.Loop() {
						one()
					}
				} else {
					b.SetParallelism(8)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							one()
						}
					})
				}
				b.ReportMetric(float64((benchCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// TestWriteRequestSameBytes: writeRequest writes what Request.Write writes, for the requests it
// writes itself and for those it hands over.
func TestWriteRequestSameBytes(t *testing.T) {
	mk := func(method, url string, edit func(r *http.Request)) *http.Request {
		r, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatalf("new request %s: %v", url, err)
		}
		if edit != nil {
			edit(r)
		}
		return r
	}
	many := func(r *http.Request) {
		for i := range 40 { // more fields than writeRequest's stack array
			r.Header.Set(fmt.Sprintf("X-F%02d", 39-i), " v\t"+strconv.Itoa(i)+" ")
		}
	}
	reqs := []*http.Request{
		mk("GET", "http://o.example/", nil),
		mk("", "http://o.example/a/b?c=d&e", nil),
		mk("HEAD", "http://o.example:8080/%2Fx/y%20z?q=%41", func(r *http.Request) { r.Host = "www.example.com" }),
		mk("GET", "http://o.example/p", func(r *http.Request) {
			r.Header["User-Agent"] = []string{"  Meridian/1 "}
			r.Header["Accept"] = []string{"*/*"}
			r.Header["Cookie"] = []string{"a=1", "b=2"}
			r.Header["Via"] = []string{"1.1 e1"}
			r.Header["Host"] = []string{"ignored.example"}
			r.Header["Content-Length"] = []string{"5"}
			r.Header["Trailer"] = []string{"X"}
			r.Header["Empty"] = []string{}
			r.Header["Blank"] = []string{""}
		}),
		mk("GET", "http://o.example/ua-empty", func(r *http.Request) { r.Header["User-Agent"] = []string{} }),
		mk("GET", "http://o.example/ua-blank", func(r *http.Request) { r.Header["User-Agent"] = []string{""} }),
		mk("GET", "http://o.example/many", many),
		mk("GET", "http://[::1]:81/v6", nil),
		mk("GET", "http://o.example/zone", func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" }),
		mk("GET", "http://o.example/idna", func(r *http.Request) { r.Host = "bücher.example" }),
		mk("GET", "http://o.example/bad-host", func(r *http.Request) { r.Host = "a b" }),
		mk("GET", "http://o.example/close", func(r *http.Request) { r.Close = true }),
		mk("OPTIONS", "http://o.example/o", nil),
		mk("DELETE", "http://o.example/d", nil),
		mk("GET", "http://o.example/opaque", func(r *http.Request) { r.URL.Opaque = "//other/x" }),
	}
	for _, r := range reqs {
		var want bytes.Buffer
		wantErr := r.Write(&want)
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		gotErr := writeRequest(bw, r, nil)
		bw.Flush()
		if got.String() != want.String() || (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s %s (Host %q):\nwriteRequest  %q, %v\nRequest.Write %q, %v", r.Method, r.URL, r.Host, got.String(), gotErr, want.String(), wantErr)
		}
	}
}

// BenchmarkWriteRequest compares writeRequest with Request.Write on an edge fill's request.
func BenchmarkWriteRequest(b *testing.B) {
	r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8080/miss/12345?v=1", nil)
	r.Host = "www.example.com"
	for k, v := range map[string]string{"User-Agent": "", "Via": "1.1 e1", "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "www.example.com", "Forwarded": "for=127.0.0.1;host=www.example.com;proto=http",
		"X-Meridian-Purge-Seq": "0"} {
		r.Header[k] = []string{v}
	}
	bw := bufio.NewWriter(io.Discard)
	for _, name := range []string{"writeRequest", "Request.Write"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if name == "writeRequest" {
					writeRequest(bw, r, nil)
				} else {
					r.Write(bw)
				}
				bw.Flush()
			}
		})
	}
}

// benchCPU is the user and system CPU time this process has used.
func benchCPU(tb testing.TB) time.Duration {
	d, err := rusage.CPU()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}
