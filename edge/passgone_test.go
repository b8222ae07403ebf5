package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/wire"
)

// TestPassClientGone: a client that leaves while a pass-through answer streams (an event
// stream, an answer without a length), and the origin has nothing more to send for now, ends
// the upstream exchange: the origin sees its connection closed, and the access log says the
// answer was cut short. ReverseProxy flushes such answers after every write and ignores the
// flush's error; over HTTP/3, where nothing else ends the request's context, a client that takes
// nothing more failed only the flush, and the edge kept the origin's connection open, reading
// to nobody, until the origin sent more (for an event stream, up to pass_timeout).
func TestPassClientGone(t *testing.T) {
	const first, total = 3000, 64 << 10 // the origin's bytes at once, and in all
	answers := []struct {
		name   string
		method string
		header http.Header // the request's
		answer http.Header // the origin's
	}{
		{"event stream", http.MethodGet, http.Header{"Accept": {"text/event-stream"}},
			http.Header{"Content-Type": {"text/event-stream"}}},
		{"event stream decoded", http.MethodGet, http.Header{"Accept": {"text/event-stream"}},
			http.Header{"Content-Type": {"text/event-stream"}, "Content-Encoding": {"gzip"}}},
		{"post without a length", http.MethodPost, nil,
			http.Header{"Content-Type": {"application/octet-stream"}}},
	}
	clients := []struct {
		name string
		// open sends the request to n and returns once the answer's header is in; leave
		// makes the client go.
		open func(t *testing.T, n *Node, method, path string, h http.Header) (leave func())
	}{
		{"http/1.1 closes its connection", func(t *testing.T, n *Node, method, path string, h http.Header) func() {
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			var extra strings.Builder
			h.Write(&extra)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n%s\r\n", method, path, testHost, extra.String()); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Read(make([]byte, 1)); err != nil {
				t.Fatalf("read the answer's first byte: %v", err)
			}
			return func() { c.Close() }
		}},
		{"h3 closes its connection", func(t *testing.T, n *Node, method, path string, h http.Header) func() {
			conn, resp := h3Do(t, n, method, path, h, &quic.Config{})
			if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
				t.Fatalf("read the first body byte: %v", err)
			}
			return func() { conn.CloseWithError(0, "") }
		}},
		{"h3 takes nothing more", func(t *testing.T, n *Node, method, path string, h http.Header) func() {
			// A stream window of 1 KiB, never read from: the client takes the header and what
			// fits, then nothing, as one whose network went. The edge's flush of the first
			// bytes fails at the send timeout; its write went to quic-go's buffer.
			h3Do(t, n, method, path, h, &quic.Config{InitialStreamReceiveWindow: 1 << 10, MaxStreamReceiveWindow: 1 << 10})
			return func() {}
		}},
	}
	origin, n, lines := pausedEdge(t, "127.0.0.42", nil)
	for ci, cl := range clients {
		for ai, an := range answers {
			t.Run(cl.name+"/"+an.name, func(t *testing.T) {
				path := fmt.Sprintf("/passgone/%d/%d", ci, ai)
				a := &pausedAnswer{header: an.answer, first: first, total: total,
					release: make(chan struct{}), ended: make(chan struct{})}
				origin.answers.Store(path, a)
				release := sync.OnceFunc(func() { close(a.release) })
				defer release() // the origin's handler returns at the test's end, whatever happened

				cl.open(t, n, an.method, path, an.header)()
				select {
				case <-a.ended:
				case <-time.After(10 * time.Second):
					t.Fatal("the origin's exchange goes on after its client left")
				}
				l := lineFor(t, lines, path)
				if l.status != http.StatusOK || l.bytes >= total || !strings.HasPrefix(l.note, "stream aborted: ") {
					t.Errorf("access log: status %d, %d bytes, note %q; want 200, fewer than %d bytes, stream aborted",
						l.status, l.bytes, l.note, total)
				}
				if got := a.requests.Load(); got != 1 {
					t.Errorf("origin requests = %d, want 1", got)
				}
			})
		}
	}
}

// dialQUIC opens a QUIC connection for HTTP/3 to addr with config qc, the edge's test
// certificate trusted; the caller closes it.
func dialQUIC(ctx context.Context, t *testing.T, addr string, qc *quic.Config) *quic.Conn {
	t.Helper()
	tlsConf := insecure(testHost)
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, qc)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// h3Do sends a request of method for path, with the header fields h, to n over a new HTTP/3
// connection with config qc, and returns the connection and the answer, its body unread, once
// its header is in. The test closes both.
func h3Do(t *testing.T, n *Node, method, path string, h http.Header, qc *quic.Config) (*quic.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	conn := dialQUIC(ctx, t, n.HTTPSAddr(), qc)
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	req, _ := http.NewRequestWithContext(ctx, method, "https://"+testHost+path, nil)
	req.Header = h.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	resp, err := (&http3.Transport{DisableCompression: true}).NewClientConn(conn).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return conn, resp
}

// TestPassUpstreamCutShort: a pass-through answer that the origin cuts short reaches the client
// cut short over every protocol, never complete-looking, and the access log says so.
// ReverseProxy aborts the answer at a failed read of the upstream only under net/http's
// servers: over HTTP/3 the handler returned normally and the stream ended cleanly.
func TestPassUpstreamCutShort(t *testing.T) {
	const sent = 3000 // bytes the origin sends before it aborts
	answers := []struct {
		name, method, accept string
		header               http.Header // the origin's
	}{
		{"event stream", http.MethodGet, "text/event-stream", http.Header{"Content-Type": {"text/event-stream"}}},
		{"post without a length", http.MethodPost, "", http.Header{"Content-Type": {"application/octet-stream"}}},
		{"post with a length", http.MethodPost, "", http.Header{"Content-Type": {"application/octet-stream"},
			"Content-Length": {"100000"}}},
	}
	originAddr := startHTTP(t, "127.0.0.42", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ai int
		if _, err := fmt.Sscanf(path.Base(r.URL.Path), "%d", &ai); err != nil || ai >= len(answers) {
			http.NotFound(w, r)
			return
		}
		maps.Copy(w.Header(), answers[ai].header)
		w.Write(make([]byte, sent))
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // the connection ends mid-body
	}))
	lines := make(accessLines, 64)
	_, n, _ := tlsEdgeWith(t, TLSConfig{Dev: true}, nil, func(c *Config) {
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
		c.AccessLog = true
		c.Logger = slog.New(lines)
	})
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost), DisableCompression: true}
	t.Cleanup(func() { h3t.Close() })
	h2t := &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true, DisableCompression: true}
	t.Cleanup(h2t.CloseIdleConnections)
	h1t := &http.Transport{DisableCompression: true}
	t.Cleanup(h1t.CloseIdleConnections)
	protocols := []struct {
		name, url string
		rt        http.RoundTripper
	}{
		{"http/1.1", "http://" + n.Addr(), h1t},
		{"http/2", "https://" + n.HTTPSAddr(), h2t},
		{"http/3", "https://" + n.HTTPSAddr(), h3t},
	}
	for pi, p := range protocols {
		for ai, a := range answers {
			t.Run(p.name+"/"+a.name, func(t *testing.T) {
				target := fmt.Sprintf("/passcut/%d/%d", pi, ai)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, a.method, p.url+target, nil)
				req.Host = testHost
				if a.accept != "" {
					req.Header.Set("Accept", a.accept)
				}
				res, err := p.rt.RoundTrip(req)
				switch {
				case err != nil && p.name == "http/3":
					// The stream's reset can overtake its HEADERS frame: QUIC may drop what a
					// reset stream had sent, so the client sees no answer at all. Cut short
					// either way, never complete.
				case err != nil:
					t.Fatal(err)
				default:
					body, err := io.ReadAll(res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK || err == nil {
						t.Errorf("status %d, %d bytes, read error %v; want a 200 cut short", res.StatusCode, len(body), err)
					}
				}
				l := lineFor(t, lines, target)
				if l.status != http.StatusOK || l.bytes > sent || !strings.HasPrefix(l.note, "stream aborted: ") {
					t.Errorf("access log: status %d, %d bytes, note %q; want 200, at most %d bytes, stream aborted",
						l.status, l.bytes, l.note, sent)
				}
			})
		}
	}
}

// TestPassClientStopsReading: a client that stops reading a pass-through event stream while
// a write to it is under way fails that write at the send timeout, and the access log notes
// that write's failure, as for any answer (docs/edge.md, "A client that goes away
// mid-answer"): ReverseProxy flushes after the failed write too, and the flush's failure,
// which the log noted instead, says less or something else (over HTTP/2, that the stream
// closed: the edge had reset it, not the client).
func TestPassClientStopsReading(t *testing.T) {
	const first = 4 << 20 // the origin's bytes at once: more than the sockets and windows hold
	origin := &pausingOrigin{}
	originAddr := startHTTP(t, "127.0.0.42", origin)
	for pi, p := range slowClientProtocols {
		t.Run(p.name, func(t *testing.T) {
			lines := make(accessLines, 16)
			_, n, _ := tlsEdgeWith(t, TLSConfig{Dev: true}, func(n *Node, ls *Listeners) {
				n.sendTimeout = 200 * time.Millisecond
				ls.HTTP = smallSendBuffers{ls.HTTP}
				ls.HTTPS = smallSendBuffers{ls.HTTPS}
			}, func(c *Config) {
				c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
				c.AccessLog = true
				c.Logger = slog.New(lines)
				if p.cfg != nil {
					p.cfg(c)
				}
			})
			path := fmt.Sprintf("/passstops/%d", pi)
			a := &pausedAnswer{header: http.Header{"Content-Type": {"text/event-stream"}}, first: first, total: first + 1,
				release: make(chan struct{}), ended: make(chan struct{})}
			origin.answers.Store(path, a)
			defer close(a.release) // the origin's handler returns at the test's end, whatever happened

			if resp := p.open(t, n, path, "Accept: text/event-stream\r\n"); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			} // and its body is never read
			select {
			case <-a.ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the origin's exchange goes on after its client stopped reading")
			}
			l := lineFor(t, lines, path)
			write, _ := strings.CutPrefix(l.note, "stream aborted: ")
			if l.status != http.StatusOK || l.bytes >= first || write == l.note ||
				strings.HasPrefix(write, "flush to the client") || !strings.Contains(write, "timeout") && !strings.Contains(write, "deadline") {
				t.Errorf("access log: status %d, %d bytes, note %q; want 200, fewer than %d bytes, "+
					"stream aborted with the write's failure at the send timeout", l.status, l.bytes, l.note, first)
			}
		})
	}
}
