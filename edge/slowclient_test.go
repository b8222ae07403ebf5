package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/internal/tcptest"
	"github.com/meridian-cdn/meridian/wire"
)

// accessLines is a log handler that sends each access-log line's path, status, bytes and note
// on the channel: the event of a request's handler having returned.
type accessLines chan accessLine

type accessLine struct {
	path   string
	status int64
	bytes  int64
	note   string
}

func (h accessLines) Enabled(context.Context, slog.Level) bool { return true }
func (h accessLines) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h accessLines) WithGroup(string) slog.Handler            { return h }
func (h accessLines) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request" {
		return nil
	}
	var l accessLine
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "path":
			l.path = a.Value.String()
		case "status":
			l.status = a.Value.Int64()
		case "bytes":
			l.bytes = a.Value.Int64()
		case "note":
			l.note = a.Value.String()
		}
		return true
	})
	select {
	case h <- l:
	default: // never block the node: the test that misses the line fails waiting for it
	}
	return nil
}

// smallSendBuffers gives every TCP connection it accepts a small socket send buffer, so that
// an answer of a few MiB waits for its client to read rather than fit in the kernel's buffers.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(128 << 10)
	}
	return c, err
}

// slowClientProtocols are the ways a client fetches from the edge in the send-timeout tests:
// each opens a GET of path with the header fields extra ("Name: value\r\n" lines) and returns
// the answer with its body unread. The clients take little into their buffers (a small TCP
// receive buffer, small HTTP/2 and HTTP/3 windows), so that what they do not read holds the
// edge's writes up.
var slowClientProtocols = []struct {
	name string
	cfg  func(*Config)
	open func(t *testing.T, n *Node, path, extra string) *http.Response
}{
	{"http/1.1", nil, func(t *testing.T, n *Node, path, extra string) *http.Response {
		return rawGet(t, dialSmall(t, n.Addr()), path, extra)
	}},
	{"http/1.1 handed to net/http", nil, func(t *testing.T, n *Node, path, extra string) *http.Response {
		return rawGet(t, dialSmall(t, n.Addr()), path, "Content-Length: 0\r\n"+extra)
	}},
	{"http/1.1 with http1: std", func(c *Config) { c.HTTP1 = HTTP1Std }, func(t *testing.T, n *Node, path, extra string) *http.Response {
		return rawGet(t, dialSmall(t, n.Addr()), path, extra)
	}},
	{"https http/1.1", nil, func(t *testing.T, n *Node, path, extra string) *http.Response {
		cfg := insecure(testHost)
		cfg.NextProtos = []string{"http/1.1"}
		return rawGet(t, tls.Client(dialSmall(t, n.HTTPSAddr()), cfg), path, extra)
	}},
	{"h2", nil, func(t *testing.T, n *Node, path, extra string) *http.Response {
		tr := &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true,
			HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}}
		t.Cleanup(tr.CloseIdleConnections)
		return roundTrip(t, tr, "https://"+n.HTTPSAddr()+path, extra)
	}},
	{"h3", nil, func(t *testing.T, n *Node, path, extra string) *http.Response {
		tr := &http3.Transport{TLSClientConfig: insecure(testHost), QUICConfig: &quic.Config{
			InitialStreamReceiveWindow: 64 << 10, MaxStreamReceiveWindow: 64 << 10,
			InitialConnectionReceiveWindow: 128 << 10, MaxConnectionReceiveWindow: 128 << 10}}
		t.Cleanup(func() { tr.Close() })
		return roundTrip(t, tr, "https://"+n.HTTPSAddr()+path, extra)
	}},
}

// dialSmall connects to addr with a small TCP receive buffer; the test closes it.
func dialSmall(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	return c
}

// rawGet sends a GET of path for testHost, with extra header lines, on c and reads the answer's
// head. Reading the body fails with a timeout after 20 s.
func rawGet(t *testing.T, c net.Conn, path, extra string) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+testHost+"\r\n"+extra+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// roundTrip sends a GET of url for testHost, with the header fields extra ("Name: value\r\n"
// lines), through rt and returns the answer with its body unread; reading the body fails with a
// timeout after 20 s.
func roundTrip(t *testing.T, rt http.RoundTripper, url, extra string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Host = testHost
	for line := range strings.SplitSeq(strings.TrimSuffix(extra, "\r\n"), "\r\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			req.Header.Add(k, v)
		}
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// slowClientEdge starts an edge whose writes to clients have a send timeout of timeout, with
// small TCP send buffers, and caches an object of size bytes at the path it returns.
func slowClientEdge(t *testing.T, timeout time.Duration, size int, cfg func(*Config)) (*Node, accessLines, string) {
	t.Helper()
	lines := make(accessLines, 16)
	_, n, _ := tlsEdgeWith(t, TLSConfig{Dev: true}, func(n *Node, ls *Listeners) {
		n.sendTimeout = timeout
		ls.HTTP = smallSendBuffers{ls.HTTP}
		ls.HTTPS = smallSendBuffers{ls.HTTPS}
	}, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(lines)
		if cfg != nil {
			cfg(c)
		}
	})
	path := "/big?cc=max-age%3D600&size=" + strconv.Itoa(size)
	if r := do(t, &http.Client{}, http.MethodGet, n.Addr(), testHost, path); r.status != http.StatusOK || len(r.body) != size {
		t.Fatalf("filling the cache: %d with %d bytes", r.status, len(r.body))
	}
	<-lines
	return n, lines, path
}

// TestClientThatStopsReading: a client that stops reading a large cached answer holds its
// handler no longer than the send timeout (nginx's send_timeout), over every protocol: the
// handler's write fails, the handler returns, the connection (HTTP/1.1, or the stream over
// HTTP/2 and HTTP/3) ends, and the access log notes the answer aborted (docs/edge.md, "A
// client that goes away mid-answer"). Over HTTP/3 and HTTP/1.1 (over TLS, on a connection
// handed to net/http, and with http1: std) the handler was held for ever. An answer that
// http.ServeContent writes (a Range, a sliced object), which returns at a failed write
// without a word, was logged as if it had been sent whole.
func TestClientThatStopsReading(t *testing.T) {
	const size = 4 << 20
	answers := []struct {
		name   string
		extra  string // request header lines
		status int
		cfg    func(*Config)
	}{
		{"whole", "", http.StatusOK, nil},
		{"range", "Range: bytes=1-\r\n", http.StatusPartialContent, nil},
		// Stored in 1 MiB slices, answered by http.ServeContent over them.
		{"sliced", "", http.StatusOK, func(c *Config) { c.Cache.MaxObjectBytes, c.Hosts[0].Cache.SliceBytes = 1<<20, 1<<20 }},
	}
	for _, a := range answers {
		for _, p := range slowClientProtocols {
			t.Run(a.name+"/"+p.name, func(t *testing.T) {
				n, lines, path := slowClientEdge(t, 200*time.Millisecond, size, func(c *Config) {
					if p.cfg != nil {
						p.cfg(c)
					}
					if a.cfg != nil {
						a.cfg(c)
					}
				})
				resp := p.open(t, n, path, a.extra)
				if resp.StatusCode != a.status || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
					t.Fatalf("%d %q, want a %d hit", resp.StatusCode, resp.Header.Get("Cache-Status"), a.status)
				}
				select {
				case l := <-lines:
					if l.path != path {
						t.Fatalf("access log line for %q, want %q", l.path, path)
					}
					if l.status != int64(a.status) || l.bytes >= size-1 {
						t.Errorf("access log: status %d, %d bytes; want %d and fewer than the %d bytes of the answer", l.status, l.bytes, a.status, size-1)
					}
					if !strings.HasPrefix(l.note, "stream aborted: ") {
						t.Errorf("access log note %q, want the answer logged as aborted", l.note)
					}
				case <-time.After(15 * time.Second):
					t.Fatal("the handler still writes to a client that reads nothing")
				}
				// The connection or stream has ended: the client reads what was sent, then the end.
				got, err := io.Copy(io.Discard, resp.Body)
				if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || got >= size-1 {
					t.Errorf("read %d of %d bytes, then %v; want the end of the connection or stream before the whole answer", got, size, err)
				}
			})
		}
	}
}

// TestSlowSteadyReaderKeepsDownload: a client that reads slowly but all the time gets the
// whole answer, over every protocol, though the edge's writes wait for it several times the
// send timeout in all: the timeout is for a write the client takes nothing of, not a bound on
// the download (as net/http's WriteTimeout would be).
func TestSlowSteadyReaderKeepsDownload(t *testing.T) {
	const size = 2 << 20
	// A second, and a download of 2 s (128 reads of 16 KiB at 16 ms): a reader held off the
	// CPU for a few hundred milliseconds by a loaded machine must not look stopped.
	const timeout = time.Second
	for _, p := range slowClientProtocols {
		t.Run(p.name, func(t *testing.T) {
			n, lines, path := slowClientEdge(t, timeout, size, p.cfg)
			start := time.Now()
			resp := p.open(t, n, path, "")
			if got, err := tcptest.ReadSlowly(resp.Body, 16*time.Millisecond); err != nil || got != size {
				t.Fatalf("read %d of %d bytes in %v, then %v", got, size, time.Since(start), err)
			}
			if took := time.Since(start); took < 2*timeout {
				t.Errorf("the download took %v: the test wants one longer than the %v timeout", took, timeout)
			}
			if l := <-lines; l.path != path || l.bytes != size {
				t.Errorf("the access log says %d bytes of %q, want %d of %q", l.bytes, l.path, size, path)
			}
		})
	}
}

// TestShutdownWithHalfHead: a client that sent half a request head and then nothing does not
// hold the node's shutdown for the 10 s header timeout: the head gets a second more
// (edge/http1's headGrace), then the connection ends. The half head comes behind a whole
// request in the same segment, so the edge has read it by the time it answers that one.
func TestShutdownWithHalfHead(t *testing.T) {
	clock := newFakeClock()
	_, originAddr := startOrigin(t, "127.0.0.10", clock.Now)
	n, stop := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: "+testHost+"\r\n\r\nGET /b HTTP/1.1\r\nHost: "+testHost+"\r\n")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	start := time.Now()
	stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v with half a head pending, want well within the 10 s header timeout", took)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Errorf("after the shutdown the client read %q, %v; want the connection's end", b, err)
	}
}

// TestShutdownWithHalfHeadHTTP3: an HTTP/3 client that sent half a request's HEADERS frame and
// then nothing does not hold the node's shutdown: its connection, on which no request is in
// flight, is closed once quiet for a few round trips (h3Linger; it was read until
// shutdown_timeout, 30 s, and the node exited with an error), while a request in flight on
// another connection is answered whole.
func TestShutdownWithHalfHeadHTTP3(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	_, n, stop := tlsEdgeWith(t, TLSConfig{Dev: true}, nil, func(c *Config) {
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	half := dialQUIC(ctx, t, n.HTTPSAddr(), &quic.Config{})
	defer half.CloseWithError(0, "")
	str, err := half.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// A HEADERS frame (type 1) of 100 bytes, of which 10 are sent.
	if _, err := str.Write([]byte{0x01, 0x40, 0x64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}); err != nil {
		t.Fatal(err)
	}

	tr := &http3.Transport{TLSClientConfig: insecure(testHost)}
	defer tr.Close()
	slow := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+n.HTTPSAddr()+"/slow", nil)
		req.Host = testHost
		r, err := tr.RoundTrip(req)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(r.Body)
			r.Body.Close()
			if err == nil && (r.StatusCode != http.StatusOK || string(b) != "ok") {
				err = errors.New("answer " + r.Status + " " + string(b))
			}
		}
		slow <- err
	}()
	<-arrived

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case <-half.Context().Done():
	case <-ctx.Done():
		t.Fatal("the connection with half a head is still open")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the connection with half a head was closed %v into the drain, want a few round trips", took)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("the request in progress at shutdown: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
}
