package edge

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// windowStream is a body coded with the largest window its coding allows (br lgwin 24:
// 16 MiB; zstd 8 MiB; gzip's 32 KiB), as the libraries in go.mod make it, flushed after its
// first bytes (first, of the body before coding) so that an origin can send that piece and
// hold the rest.
type windowStream struct {
	coding string
	plain  []byte
	coded  []byte
	cut    int   // the end of the first piece
	window int64 // what decoding it is charged
}

func newWindowStream(t *testing.T, coding string, plain []byte, first int) windowStream {
	t.Helper()
	var b bytes.Buffer
	var w interface {
		io.WriteCloser
		Flush() error
	}
	s := windowStream{coding: coding, plain: plain}
	switch coding {
	case "br":
		w, s.window = brotli.NewWriterOptions(&b, brotli.WriterOptions{Quality: 5, LGWin: 24}), 16<<20
	case "zstd":
		zw, err := zstd.NewWriter(&b, zstd.WithWindowSize(8<<20), zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(false))
		if err != nil {
			t.Fatal(err)
		}
		// The decoder's ring: the window and two blocks of 128 KiB, 16 bytes more each
		// (compress.zstdCharge).
		w, s.window = zw, 8<<20+2*(128<<10+16)
	default:
		w, s.window = stdgzip.NewWriter(&b), 32<<10
	}
	w.Write(plain[:first])
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	s.cut = b.Len()
	w.Write(plain[first:])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s.coded = b.Bytes()
	return s
}

// streamsToClients fails t unless s is sent to its clients as it comes, not read whole
// first: a body declared over 64 KiB.
func streamsToClients(t *testing.T, s windowStream) {
	t.Helper()
	if len(s.coded) <= 64<<10 {
		t.Fatalf("%s: %d coded bytes; a body over 64 KiB streams to its clients as it comes", s.coding, len(s.coded))
	}
}

// heldOrigin ignores Accept-Encoding and answers a request for a path with its stream, coded,
// with a Content-Length, ETag "v1" and Cache-Control ?cc= (default max-age=60). With ?hold=1
// it sends the first piece at once and the rest when release is closed, or, with ?cut=1 too,
// ends the connection then instead.
type heldOrigin struct {
	streams map[string]windowStream // by path
	release chan struct{}
	once    sync.Once // closes release
}

// free lets every held answer go on.
func (o *heldOrigin) free() { o.once.Do(func() { close(o.release) }) }

func (o *heldOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s, ok := o.streams[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Encoding", s.coding)
	h.Set("Cache-Control", cmpOrString(q.Get("cc"), "max-age=60"))
	h.Set("ETag", `"v1"`)
	h.Set("Content-Length", strconv.Itoa(len(s.coded)))
	rest := s.coded
	if q.Get("hold") == "1" {
		w.Write(rest[:s.cut])
		w.(http.Flusher).Flush()
		rest = rest[s.cut:]
		select {
		case <-o.release:
		case <-r.Context().Done():
			return
		}
		if q.Get("cut") == "1" {
			panic(http.ErrAbortHandler)
		}
	}
	w.Write(rest)
}

func cmpOrString(s, or string) string {
	if s == "" {
		return or
	}
	return s
}

// budgetEdge is an edge with a decode budget of budget bytes in front of a heldOrigin of
// streams, its access log, and a client that neither asks for a coding nor decodes one.
func budgetEdge(t *testing.T, streams map[string]windowStream, budget int64) (*Node, *heldOrigin, *http.Client, *logtest.Buffer) {
	t.Helper()
	o := &heldOrigin{streams: streams, release: make(chan struct{})}
	var log logtest.Buffer
	n, _ := echoEdge(t, o.ServeHTTP, nil, func(c *Config) {
		c.Cache.DecodeWindowBytes = budget
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&log, nil))
	})
	t.Cleanup(o.free) // before the servers stop (cleanups run last first): no answer stays held
	c := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}}
	t.Cleanup(c.CloseIdleConnections)
	return n, o, c, &log
}

// readHeld GETs target, reports on started once it has the answer's first bytes, and returns
// what is wrong with the whole answer (checkPlain).
func readHeld(c *http.Client, addr, target string, plain []byte, started chan<- error) error {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+target, nil)
	req.Host = testHost
	res, err := c.Do(req)
	if err != nil {
		started <- err
		return err
	}
	defer res.Body.Close()
	first := make([]byte, 1000)
	_, err = io.ReadFull(res.Body, first)
	started <- err
	if err != nil {
		return err
	}
	rest, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	return checkPlain(resp{status: res.StatusCode, header: res.Header, body: string(first) + string(rest)}, plain)
}

// tryDoContext is tryDo for a GET under ctx.
func tryDoContext(ctx context.Context, c *http.Client, addr, target string) (resp, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+target, nil)
	req.Host = testHost
	res, err := c.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}, err
}

// checkPlain checks an answer decoded whole for its client.
func checkPlain(r resp, plain []byte) error {
	if r.status != http.StatusOK || r.header.Get("Content-Encoding") != "" || r.body != string(plain) {
		return errors.New("status " + strconv.Itoa(r.status) + ", Content-Encoding " + strconv.Quote(r.header.Get("Content-Encoding")) +
			", " + strconv.Itoa(len(r.body)) + " bytes; want 200 and the " + strconv.Itoa(len(plain)) + " bytes decoded")
	}
	return nil
}

// TestDecodeBudget: under a budget of k windows and a half, k clients that cannot decode br
// (zstd, gzip) get the answer of an origin that ignores Accept-Encoding decoded, each charged
// its stream's window while it decodes (a gzip decode its 32 KiB only), and the next client
// gets a 503 with Retry-After at once, never a wait, with Cache-Status, the access log and
// meridian_edge_decode_refused_total saying why. Once the k are done their windows are
// given back, and a new decode is served. Before, every client was decoded, each holding a
// window of up to 16 MiB, as many as came.
func TestDecodeBudget(t *testing.T) {
	const k = 3
	plain := gzipPlain("300000", true)
	for _, coding := range []string{"br", "zstd", "gzip"} {
		t.Run(coding, func(t *testing.T) {
			s := newWindowStream(t, coding, plain, len(plain)/2)
			streamsToClients(t, s)
			n, o, c, log := budgetEdge(t, map[string]windowStream{"/obj": s}, k*s.window+s.window/2)
			const target = "/obj?hold=1"
			started := make(chan error, k) // a client read its answer's first bytes
			results := make(chan error, k)
			for range k {
				go func() { results <- readHeld(c, n.Addr(), target, plain, started) }()
			}
			for range k {
				if err := <-started; err != nil {
					t.Fatalf("a client within the budget: %v", err)
				}
			}
			if got := n.decodes.Used(); got != k*s.window {
				t.Errorf("%d decodes under way: %d bytes charged, want %d", k, got, k*s.window)
			}

			// The next is answered at once, while the others still wait for the origin.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := tryDoContext(ctx, c, n.Addr(), target)
			if err != nil {
				t.Fatalf("decode %d: %v; want a 503 at once", k+1, err)
			}
			if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
				t.Errorf("decode %d: status %d, Retry-After %q; want 503, 1", k+1, r.status, r.header.Get("Retry-After"))
			}
			if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "detail=decode-budget-full") {
				t.Errorf("decode %d: Cache-Status %q, want detail=decode-budget-full", k+1, cs)
			}
			wait.For(t, 5*time.Second, "the access log notes why", func() bool {
				return logNote(t, log, "request", target, "note") != ""
			})
			if note := logNote(t, log, "request", target, "note"); !strings.Contains(note, "decoding windows over budget") {
				t.Errorf("access log note %q, want it to say the budget was full", note)
			}
			m := metricValues(t, n)
			if got := m["meridian_edge_decode_refused_total"]; got != 1 {
				t.Errorf("meridian_edge_decode_refused_total = %v, want 1", got)
			}
			if got := m["meridian_edge_decode_window_bytes"]; got != float64(k*s.window) {
				t.Errorf("meridian_edge_decode_window_bytes = %v, want %d", got, k*s.window)
			}

			o.free()
			for range k {
				if err := <-results; err != nil {
					t.Errorf("a client within the budget: %v", err)
				}
			}
			wait.For(t, 10*time.Second, "every window given back", func() bool { return n.decodes.Used() == 0 })
			if err := checkPlain(do(t, c, http.MethodGet, n.Addr(), testHost, target), plain); err != nil {
				t.Errorf("a decode after the others ended: %v", err)
			}
			wait.For(t, 10*time.Second, "its window given back", func() bool { return n.decodes.Used() == 0 })
		})
	}
}

// TestDecodeBudgetReleased: a decode gives its window back however it ends: its client gone
// before the answer's header went out (a 502 to no one) or after (the answer aborted), while
// the edge waits for the upstream or while it writes to a client that reads no more; the
// upstream's body cut short; a pass (the pass's body, closed by ReverseProxy), and its client
// gone. Before, nothing was charged; a window kept after such an end would shrink the budget
// for good.
func TestDecodeBudgetReleased(t *testing.T) {
	plain := gzipPlain("300000", true)
	streams := map[string]windowStream{
		"/obj":   newWindowStream(t, "br", plain, len(plain)/2),
		"/early": newWindowStream(t, "br", plain, 1000),                  // its first piece decodes to less than the first read
		"/big":   newWindowStream(t, "br", make([]byte, 32<<20), 16<<20), // decodes to more than the sockets hold
	}
	for _, s := range []windowStream{streams["/obj"], streams["/early"]} {
		streamsToClients(t, s)
	}
	const window = 16 << 20
	for _, tt := range []struct {
		name, method, target string
		readSome             bool // the client reads the first bytes of the answer, then no more
		gone                 bool // then it leaves, before the origin sends the rest
	}{
		{"client gone before the header", http.MethodGet, "/early?hold=1", false, true},
		{"client gone mid-answer, waiting for the upstream", http.MethodGet, "/obj?hold=1&cc=no-store", true, true},
		{"client gone mid-answer, not reading", http.MethodGet, "/big", true, true},
		{"upstream cut short", http.MethodGet, "/obj?hold=1&cut=1", false, false},
		{"pass", http.MethodPost, "/obj?hold=1&cc=no-store", false, false},
		{"pass, client gone mid-answer", http.MethodPost, "/obj?hold=1&cc=no-store", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, o, c, _ := budgetEdge(t, streams, window+window/2)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, tt.method, "http://"+n.Addr()+tt.target, nil)
			req.Host = testHost
			first := make(chan error, 1) // the first bytes read, or the answer's end
			done := make(chan error, 1)
			go func() {
				res, err := c.Do(req)
				if err != nil {
					first <- err
					done <- err
					return
				}
				defer res.Body.Close()
				if tt.readSome {
					_, err = io.ReadFull(res.Body, make([]byte, 1000))
					first <- err
					<-ctx.Done()
					done <- ctx.Err()
					return
				}
				_, err = io.Copy(io.Discard, res.Body)
				first <- err
				done <- err
			}()
			wait.For(t, 10*time.Second, "the decode charged", func() bool { return n.decodes.Used() == window })
			switch {
			case tt.gone:
				if tt.readSome {
					if err := <-first; err != nil {
						t.Fatalf("the first bytes: %v", err)
					}
				}
				cancel()
				<-done
				wait.For(t, 10*time.Second, "the window given back", func() bool { return n.decodes.Used() == 0 })
				o.free()
			default:
				o.free()
				err := <-done
				if cut := strings.Contains(tt.target, "cut=1"); cut != (err != nil) {
					t.Errorf("the answer read: %v; want it cut short: %v", err, cut)
				}
				wait.For(t, 10*time.Second, "the window given back", func() bool { return n.decodes.Used() == 0 })
			}
		})
	}
}

// TestDecodeBudgetNotChargedUndecoded: answers that decode nothing (HEAD, a 304, a 412, an
// empty br stream) are never charged, so they are answered whatever the budget, even one
// that no window of the answer fits in, where a GET, or a pass, gets 503; and a client that
// accepts the coding gets the bytes as they came. (An empty br stream, the one byte a br
// encoder makes of an empty body, declares a window, 16 MiB here, but its decoder allocates
// none; it was charged that window, and refused.)
func TestDecodeBudgetNotChargedUndecoded(t *testing.T) {
	plain := gzipPlain("300000", true)
	s := newWindowStream(t, "br", plain, len(plain)/2)
	var empty bytes.Buffer
	if err := brotli.NewWriterOptions(&empty, brotli.WriterOptions{Quality: 5, LGWin: 24}).Close(); err != nil {
		t.Fatal(err)
	}
	streams := map[string]windowStream{"/obj": s, "/empty": {coding: "br", coded: empty.Bytes()}}
	n, _, c, _ := budgetEdge(t, streams, 1<<20) // less than the streams' 16 MiB window
	for _, tt := range []struct {
		name, method string
		path         string // "/obj" if empty
		hdr          []string
		want         int
	}{
		{"GET accepting br, a miss", http.MethodGet, "", []string{"Accept-Encoding", "br"}, http.StatusOK},
		{"GET accepting br, a hit", http.MethodGet, "", []string{"Accept-Encoding", "br"}, http.StatusOK},
		{"HEAD", http.MethodHead, "", nil, http.StatusOK},
		{"If-None-Match", http.MethodGet, "", []string{"If-None-Match", `W/"v1"`}, http.StatusNotModified},
		{"If-Match", http.MethodGet, "", []string{"If-Match", `"v1"`}, http.StatusPreconditionFailed},
		{"GET", http.MethodGet, "", nil, http.StatusServiceUnavailable},
		{"POST, a pass", http.MethodPost, "", nil, http.StatusServiceUnavailable},
		{"GET an empty br stream", http.MethodGet, "/empty", nil, http.StatusOK},
		{"POST, a pass, an empty br stream", http.MethodPost, "/empty", nil, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := cmpOrString(tt.path, "/obj")
			r := do(t, c, tt.method, n.Addr(), testHost, path, tt.hdr...)
			if r.status != tt.want {
				t.Errorf("status %d, want %d (Cache-Status %q)", r.status, tt.want, r.header.Get("Cache-Status"))
			}
			if tt.want == http.StatusOK && tt.method != http.MethodHead {
				want := streams[path].coded
				if r.header.Get("Content-Encoding") == "" {
					want = streams[path].plain
				}
				if r.body != string(want) {
					t.Errorf("%d bytes (Content-Encoding %q), want %d", len(r.body), r.header.Get("Content-Encoding"), len(want))
				}
			}
			if tt.want == http.StatusServiceUnavailable {
				if ra, cs := r.header.Get("Retry-After"), r.header.Get("Cache-Status"); ra != "1" || !strings.Contains(cs, "detail=decode-budget-full") {
					t.Errorf("Retry-After %q, Cache-Status %q; want 1, detail=decode-budget-full", ra, cs)
				}
			}
			if got := n.decodes.Used(); got != 0 {
				t.Errorf("%d bytes charged, want 0", got)
			}
		})
	}
	if got := metricValues(t, n)["meridian_edge_decode_refused_total"]; got != 2 {
		t.Errorf("meridian_edge_decode_refused_total = %v, want 2 (the GET and the POST)", got)
	}
}
