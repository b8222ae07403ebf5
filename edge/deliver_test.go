package edge

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meridian-cdn/meridian/wire"
)

// pausedAnswer is one answer of pausingOrigin: its first part goes out at once, the rest once the
// test releases it.
type pausedAnswer struct {
	header   http.Header
	first    int // bytes sent at once
	total    int
	requests atomic.Int32
	release  chan struct{} // closed by the test: send the rest
	ended    chan struct{} // closed when the edge ended the exchange before the release
}

// pausingOrigin is a real origin whose answers (by path) hold the rest of their body until the
// test releases it, so a client can leave mid-body while the edge waits for the upstream.
type pausingOrigin struct {
	answers sync.Map // path -> *pausedAnswer
}

func (o *pausingOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v, ok := o.answers.Load(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	a := v.(*pausedAnswer)
	a.requests.Add(1)
	for k, vs := range a.header {
		w.Header()[k] = vs
	}
	// The body: its first bytes at once, the rest once released; gzipped for an answer that
	// says so (first and total count the bytes before coding).
	var dst io.Writer = w
	flush := func() { http.NewResponseController(w).Flush() }
	if a.header.Get("Content-Encoding") == "gzip" {
		zw := gzip.NewWriter(w)
		defer zw.Close()
		dst = zw
		flush = func() {
			zw.Flush()
			http.NewResponseController(w).Flush()
		}
	}
	body := strings.Repeat("x", a.total)
	io.WriteString(dst, body[:a.first])
	flush()
	select {
	case <-a.release:
	case <-r.Context().Done():
		close(a.ended)
		return
	}
	io.WriteString(dst, body[a.first:])
}

// TestClientGoneMidBody: a client that leaves while its answer streams, and the edge waits for
// the upstream's next bytes, ends its answer there: the access log says it was cut short, with
// the bytes sent, the upstream exchange of an answer that was the client's alone ends, and a
// fill that others read goes on for them and for the store (docs/edge.md, "The filler").
// Over HTTP/3, a client that takes nothing more (its network went, or it stopped reading) is
// noticed by the send timeout on a write or a flush, and a failed write does not end the
// request's context there: the flush's failure and the first write's (the bytes read before
// the answer outgrew max_object_bytes) were ignored, so the handler waited, holding its own
// upstream exchange, until the origin sent more.
func TestClientGoneMidBody(t *testing.T) {
	const maxObject = 256 << 10
	answers := []struct {
		name   string
		header http.Header
		first  int
		total  int
		shared bool // a fill that other clients read: it must go on
	}{
		// A streaming miss of a body that will be stored: the client reads it from the fill.
		{"kept streaming miss", http.Header{"Cache-Control": {"max-age=600"}, "Content-Type": {"application/octet-stream"},
			"Content-Length": {strconv.Itoa(200 << 10)}},
			3000, 200 << 10, true},
		// A compressible answer without a length, read whole until it outgrew max_object_bytes:
		// the client gets what was read in one write, then the rest from the upstream.
		{"grown past max_object_bytes", http.Header{"Cache-Control": {"max-age=600"}, "Content-Type": {"text/plain"}},
			maxObject + 1, maxObject + 64<<10, false},
		// Not storable, without a length: the client's own stream, flushed on every write.
		{"private stream", http.Header{"Cache-Control": {"private"}, "Content-Type": {"application/octet-stream"}}, 3000, 64 << 10, false},
		// The same in gzip, which the client does not accept: decoded for it as it arrives.
		{"private stream decoded", http.Header{"Cache-Control": {"private"}, "Content-Type": {"application/octet-stream"},
			"Content-Encoding": {"gzip"}}, 3000, 64 << 10, false},
	}
	clients := []struct {
		name string
		// open GETs path from n and returns once the answer's header is in; leave makes the
		// client go.
		open func(t *testing.T, n *Node, path string) (leave func())
	}{
		{"http/1.1 closes its connection", func(t *testing.T, n *Node, path string) func() {
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			resp := rawGet(t, c, path, "")
			if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
				t.Fatalf("read the first body byte: %v", err)
			}
			return func() { c.Close() }
		}},
		{"h3 closes its connection", func(t *testing.T, n *Node, path string) func() {
			conn, resp := h3Get(t, n, path, &quic.Config{})
			if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
				t.Fatalf("read the first body byte: %v", err)
			}
			return func() { conn.CloseWithError(0, "") }
		}},
		{"h3 takes nothing more", func(t *testing.T, n *Node, path string) func() {
			// A stream window of 1 KiB, never read from: the client takes the header and
			// what fits, then nothing, as one whose network went.
			h3Get(t, n, path, &quic.Config{InitialStreamReceiveWindow: 1 << 10, MaxStreamReceiveWindow: 1 << 10})
			return func() {}
		}},
	}
	origin, n, lines := pausedEdge(t, "127.0.0.41", func(c *Config) { c.Cache.MaxObjectBytes = maxObject })
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	for ci, cl := range clients {
		for ai, an := range answers {
			t.Run(cl.name+"/"+an.name, func(t *testing.T) {
				path := fmt.Sprintf("/gone/%d/%d", ci, ai)
				a := &pausedAnswer{header: an.header, first: an.first, total: an.total,
					release: make(chan struct{}), ended: make(chan struct{})}
				origin.answers.Store(path, a)
				release := sync.OnceFunc(func() { close(a.release) })
				defer release()

				// A fill that others read: one reads along from its start, and the client that
				// leaves joins once the first part is in, so that its first write finds it whole.
				other := make(chan alongResult, 1)
				if an.shared {
					along := make(chan struct{})
					go func() { other <- readAlong(c, n.Addr(), path, an.first, along) }()
					select {
					case <-along:
					case r := <-other:
						t.Fatalf("the client reading along: %d, %d bytes, %v", r.status, r.n, r.err)
					}
				}
				cl.open(t, n, path)()

				l := lineFor(t, lines, path)
				if l.status != http.StatusOK || l.bytes >= int64(an.total) || !strings.HasPrefix(l.note, "stream aborted: ") {
					t.Errorf("access log: status %d, %d bytes, note %q; want 200, fewer than %d bytes, stream aborted",
						l.status, l.bytes, l.note, an.total)
				}
				if !an.shared {
					select {
					case <-a.ended:
					case <-time.After(10 * time.Second):
						t.Fatal("the upstream exchange of the client's own answer goes on without it")
					}
					return
				}
				release()
				if r := <-other; r.err != nil || r.status != http.StatusOK || r.n != int64(an.total) {
					t.Fatalf("the client reading along: %d, %d bytes, %v; want 200 and %d bytes", r.status, r.n, r.err, an.total)
				}
				if got := a.requests.Load(); got != 1 {
					t.Errorf("origin requests = %d, want 1", got)
				}
				if r := do(t, c, http.MethodGet, n.Addr(), testHost, path); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
					t.Errorf("after the fill: Cache-Status %q, want a hit", r.header.Get("Cache-Status"))
				}
			})
		}
	}
}

// alongResult is what readAlong read.
type alongResult struct {
	status int
	n      int64
	err    error
}

// readAlong GETs path from addr through c and reads the whole body, closing along once it has
// the first n bytes.
func readAlong(c *http.Client, addr, path string, n int, along chan<- struct{}) alongResult {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	req.Host = testHost
	resp, err := c.Do(req)
	if err != nil {
		return alongResult{err: err}
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, n)); err != nil {
		return alongResult{status: resp.StatusCode, err: err}
	}
	close(along)
	rest, err := io.Copy(io.Discard, resp.Body)
	return alongResult{status: resp.StatusCode, n: int64(n) + rest, err: err}
}

// h3Get sends a GET of path to n over a new HTTP/3 connection with config qc, and returns the
// connection and the answer, its body unread, once its header is in. The test closes both.
func h3Get(t *testing.T, n *Node, path string, qc *quic.Config) (*quic.Conn, *http.Response) {
	t.Helper()
	return h3Do(t, n, http.MethodGet, path, nil, qc)
}

// pausedEdge starts a pausingOrigin on ip and an edge (HTTPS and HTTP/3 too) in front of it
// with its access log in lines and a send timeout of 200 ms, for tests of clients that go away
// mid-answer; configure, if not nil, changes the edge's config further.
func pausedEdge(t *testing.T, ip string, configure func(*Config)) (*pausingOrigin, *Node, accessLines) {
	t.Helper()
	origin := &pausingOrigin{}
	originAddr := startHTTP(t, ip, origin)
	lines := make(accessLines, 64)
	_, n, _ := tlsEdgeWith(t, TLSConfig{Dev: true}, func(n *Node, _ *Listeners) {
		n.sendTimeout = 200 * time.Millisecond
	}, func(c *Config) {
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
		c.AccessLog = true
		c.Logger = slog.New(lines)
		if configure != nil {
			configure(c)
		}
	})
	return origin, n, lines
}

// lineFor returns the next access-log line for path, skipping others, or fails the test after
// 10 s.
func lineFor(t *testing.T, lines accessLines, path string) accessLine {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-lines:
			if l.path == path {
				return l
			}
		case <-timeout:
			t.Fatalf("no access log line for %s: its handler has not returned", path)
		}
	}
}
