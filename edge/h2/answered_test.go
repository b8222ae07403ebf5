package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// answeredRecorder collects what Server.Answered hears.
type answeredRecorder struct {
	mu  sync.Mutex
	got []string
}

func (a *answeredRecorder) answered(r *http.Request, status int, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, fmt.Sprintf("%s %s %s %d %q", r.Method, r.Host, r.URL.RequestURI(), status, reason))
}

func (a *answeredRecorder) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	got := a.got
	a.got = nil
	return got
}

// wantAnswer reads frames until stream id's answer ends, and returns its status; a
// RST_STREAM before it fails the test.
func (c *rawClient) wantAnswer(id uint32) string {
	c.t.Helper()
	status, code := c.answerAndReset(id)
	if code != http2.ErrCodeNo {
		c.t.Fatalf("stream %d answered %s, then reset with %v", id, status, code)
	}
	return status
}

// answerAndReset reads frames until stream id's answer ends with END_STREAM (code
// ErrCodeNo) or a RST_STREAM after its HEADERS (its code); a RST_STREAM before any HEADERS
// fails the test.
func (c *rawClient) answerAndReset(id uint32) (status string, code http2.ErrCode) {
	c.t.Helper()
	c.until(fmt.Sprintf("the answer on stream %d", id), func(f http2.Frame) bool {
		if f.Header().StreamID != id {
			return false
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if status == "" {
				c.t.Fatalf("stream %d reset with %v, want an answer", id, f.ErrCode)
			}
			code = f.ErrCode
			return true
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
			return f.StreamEnded()
		case *http2.DataFrame:
			return f.StreamEnded()
		}
		return false
	})
	return status, code
}

// TestAnsweredHeard: the requests the server answers itself, without their handler (431 for
// a header list over the limit, 400 for a malformed request it answers), are reported to
// Server.Answered with their status and why, so that the edge logs and counts them as it
// does its own refusals. They reached no handler and no log: an operator looking for why
// clients failed saw nothing.
func TestAnsweredHeard(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %q %v", r.RequestURI, r.Header)
	}))
	var rec answeredRecorder
	ts.H2.Answered = rec.answered
	ts.H2.MaxHeaderBytes = 4096
	c := dialRaw(t, ts)
	c.headers(1, true, "/sp", "x-a", "1 ")
	if s := c.wantAnswer(1); s != "400" {
		t.Fatalf("white space: status %s, want 400", s)
	}
	c.headers(3, true, "/big", "x-big", strings.Repeat("a", 3000), "x-big2", strings.Repeat("a", 3000))
	if s := c.wantAnswer(3); s != "431" {
		t.Fatalf("over the limit: status %s, want 431", s)
	}
	got := rec.take()
	want := []string{
		`GET a /sp 400 "a field value starts or ends with white space"`,
		`GET a /big 431 "request header list over max_header_bytes"`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Answered heard\n%q\nwant\n%q", got, want)
	}
}

// TestMalformedAnswered400: RFC 9113 section 8.2.1's malformations that a client can be made
// to send, and that nginx answers 400 or serves, are answered 400 without their handler, as a
// field value with white space at either end is (section 8.1.1 lets a server answer a
// malformed request): white space at either end of a pseudo-field's value, a space inside
// :path, a connection-specific field, TE other than trailers (whose 400 is followed by
// RST_STREAM PROTOCOL_ERROR, the stream error section 8.1.1 asks for and h2spec checks, which
// Go's client reads as the 400: golang.org/issue/49645). They were reset with
// PROTOCOL_ERROR: Go's client, which sends a TE of gzip or a :path with a space (URL.Opaque)
// as given, retried the request on a new connection without end; curl (-X "GET ",
// --request-target "/x ") and nghttp reported a stream error. nginx 1.22 answers the
// pseudo-field ones 400 and serves the others. Uppercase names and CR, LF or NUL in a value,
// which Go's client, curl and nghttp lowercase or refuse to send, are still reset, as nginx
// resets them (TestMalformedRequests).
func TestMalformedAnswered400(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %s %q %v", r.Method, r.RequestURI, r.Header)
	}))
	var rec answeredRecorder
	ts.H2.Answered = rec.answered
	const (
		pseudo = "a pseudo-field value starts or ends with white space"
		conn   = "a connection-specific field, or TE other than trailers"
	)
	for _, tc := range []struct {
		name   string
		fields []string
		reason string
	}{
		{":method ends with a space", []string{":method", "GET ", ":scheme", "https", ":authority", "a", ":path", "/"}, pseudo},
		{":method starts with a tab", []string{":method", "\tGET", ":scheme", "https", ":authority", "a", ":path", "/"}, pseudo},
		{":path ends with a space", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/x "}, pseudo},
		{":path ends with a tab", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/x\t"}, pseudo},
		{":authority ends with a space", []string{":method", "GET", ":scheme", "https", ":authority", "a ", ":path", "/"}, pseudo},
		{":scheme ends with a space", []string{":method", "GET", ":scheme", "https ", ":authority", "a", ":path", "/"}, pseudo},
		{":path with a space", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/a b"}, "a space in :path"},
		{":path with a space in the query", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/a?q=b c"}, "a space in :path"},
		{"connection", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "connection", "close"}, conn},
		{"keep-alive", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "keep-alive", "1"}, conn},
		{"proxy-connection", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "proxy-connection", "x"}, conn},
		{"transfer-encoding", []string{":method", "POST", ":scheme", "https", ":authority", "a", ":path", "/", "transfer-encoding", "chunked"}, conn},
		{"upgrade", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "upgrade", "h2c"}, conn},
		{"te gzip", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "te", "gzip"}, conn},
		{"te trailers, gzip", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "te", "trailers, gzip"}, conn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts)
			c.buf.Reset()
			for i := 0; i < len(tc.fields); i += 2 {
				c.enc.WriteField(hpack.HeaderField{Name: tc.fields[i], Value: tc.fields[i+1]})
			}
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
			// The fields section 8.2.2 names get their 400, then the stream error h2spec
			// looks for; the others, a 400 that ends the stream, as nginx answers them.
			wantCode := http2.ErrCodeNo
			if tc.reason == conn {
				wantCode = http2.ErrCodeProtocol
			}
			if s, code := c.answerAndReset(1); s != "400" || code != wantCode {
				t.Fatalf("status %s, then %v; want 400, then %v", s, code, wantCode)
			}
			got := rec.take()
			if len(got) != 1 || !strings.HasSuffix(got[0], fmt.Sprintf("400 %q", tc.reason)) {
				t.Errorf("Answered heard %q, want one 400 for %q", got, tc.reason)
			}
		})
	}
}

// TestHeaderTooLargeAcrossFrames: a header list over MaxHeaderBytes is answered 431 also when
// its block goes on in CONTINUATION frames after the limit was passed, or holds one field
// longer than the limit, as long as the block's encoded bytes stay within twice the limit;
// past that the connection ends (PROTOCOL_ERROR), so a client cannot make the server read
// without bound. The first ended the connection with PROTOCOL_ERROR at the next CONTINUATION
// frame, the second with COMPRESSION_ERROR (the HPACK decoder's string limit): a Go client
// sending a 70 KiB field on a new connection got a GOAWAY instead of its 431.
func TestHeaderTooLargeAcrossFrames(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	ts.H2.MaxHeaderBytes = 4096
	// Random-looking values, which HPACK's Huffman code does not shorten much.
	value := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteByte("!#$%&'*+-.^_`|~0123456789"[(i*7+i/3)%25])
		}
		return b.String()
	}
	block := func(c *rawClient, path string, extra ...string) []byte {
		c.buf.Reset()
		fields := append([]string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", path}, extra...)
		for i := 0; i < len(fields); i += 2 {
			c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), c.buf.Bytes()...)
	}
	send := func(c *rawClient, id uint32, b []byte, frag int) {
		first := true
		for first || len(b) > 0 {
			n := min(frag, len(b))
			chunk := b[:n]
			b = b[n:]
			if first {
				c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: true, EndHeaders: len(b) == 0})
			} else {
				c.fr.WriteContinuation(id, len(b) == 0, chunk)
			}
			first = false
		}
	}
	longPath := "/" + strings.Repeat("p", 6000) // a valid target, in few bytes fewer with Huffman
	for _, tc := range []struct {
		name   string
		path   string
		fields []string
		frag   int
	}{
		{"fields past the limit, more frames after", "/big", []string{"x-a", value(1500), "x-b", value(1500), "x-c", value(1500), "x-d", value(1500)}, 1000},
		{"one field longer than the limit, in one frame", "/big", []string{"x-a", value(6000)}, 16384},
		{"one field longer than the limit, over frames", "/big", []string{"x-a", value(6000)}, 1000},
		// A :path over the limit: it was dropped (with any pseudo-field after it), and the
		// request, without a :path, was reset with PROTOCOL_ERROR, which Go's client (that
		// sends such a URL before it has read the SETTINGS) retried on new connections
		// (TestLongTargetAnswered431).
		{":path longer than the limit, in one frame", longPath, nil, 16384},
		{":path longer than the limit, over frames", longPath, nil, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts)
			send(c, 1, block(c, tc.path, tc.fields...), tc.frag)
			if s := c.wantAnswer(1); s != "431" {
				t.Fatalf("status %s, want 431", s)
			}
			// The connection and its HPACK state serve on.
			c.headers(3, true, "/small")
			if s := c.wantAnswer(3); s != "200" {
				t.Fatalf("the next request: status %s, want 200", s)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"fields over twice the limit", []string{"x-a", value(3000), "x-b", value(3000), "x-c", value(3000)}},
		// One field whose name and value pass twice the limit together: the limit comes
		// after its last byte, and the block was read whole (twice the string limit for its
		// name and its value) and answered 431, the decoder holding all of it at once.
		{"one field over twice the limit", []string{value(4500), value(4500)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts)
			send(c, 1, block(c, "/big", tc.fields...), 1000)
			c.until("the GOAWAY", func(f http2.Frame) bool {
				if h, ok := f.(*http2.MetaHeadersFrame); ok {
					t.Fatalf("answered %s", h.PseudoValue("status"))
				}
				g, ok := f.(*http2.GoAwayFrame)
				if ok && g.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", g.ErrCode)
				}
				return ok
			})
		})
	}
}

// TestLongTargetAnswered431: a Go client's request whose URL alone is over MaxHeaderBytes
// gets its 431 on its one connection (or, once the client has read the SETTINGS, its own
// refusal), and Server.Answered hears of it with its target. The :path over the limit was
// dropped and the request, without one, reset with PROTOCOL_ERROR: Go's client retried it on
// a new connection each time (dozens, until one read the SETTINGS before sending).
func TestLongTargetAnswered431(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for a %d-byte target", len(r.RequestURI))
	}))
	ts.H2.MaxHeaderBytes = 16 << 10
	var rec answeredRecorder
	ts.H2.Answered = rec.answered
	var dials atomic.Int64
	p := new(http.Protocols)
	p.SetHTTP2(true)
	tr := &http.Transport{Protocols: p, TLSClientConfig: &tls.Config{RootCAs: ts.pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				return nil, errors.New("a second connection for one request")
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	defer tr.CloseIdleConnections()
	path := "/" + strings.Repeat("p", 20<<10)
	req, err := http.NewRequest(http.MethodGet, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	switch {
	case err == nil:
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", resp.StatusCode)
		}
		want := fmt.Sprintf("GET %s %s 431 %q", ts.Addr, path, "request header list over max_header_bytes")
		if got := rec.take(); len(got) != 1 || got[0] != want {
			t.Errorf("Answered heard %.200q, want one 431 for the target", got)
		}
	case !strings.Contains(err.Error(), "larger than peer's advertised limit"):
		t.Errorf("%v (%d connections), want a 431 or the client's own refusal", err, dials.Load())
	}
}

// TestAnswered400BodiesCredited: the bodies of requests answered 400 without their handler
// (a TE other than trailers, whose 400 the reset follows; white space at a value's end, whose
// 400 ends the stream) still come after the answer, and are credited back to the connection's
// window: MaxConcurrentStreams such requests at a time, round after round, send more than the
// connection's window, and a request after them is served. Were they not, the client would
// wait for a WINDOW_UPDATE that never comes.
func TestAnswered400BodiesCredited(t *testing.T) {
	const (
		maxStreams = 8
		rounds     = 10
		bodyLen    = 32 << 10 // all the rounds' bodies: 2.5 MiB, past the 1 MiB window
	)
	for _, tc := range []struct {
		name  string
		field [2]string
	}{
		{"te gzip", [2]string{"te", "gzip"}},
		{"white space", [2]string{"x-a", "1 "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil || r.URL.Path != "/ok" {
					t.Errorf("handler for %s read %d bytes, then %v", r.URL.Path, n, err)
				}
				fmt.Fprint(w, n)
			}))
			ts.H2.MaxConcurrentStreams = maxStreams
			c := dialRaw(t, ts)
			window := make(chan uint32, 64)    // the connection's WINDOW_UPDATE increments
			statuses := make(chan string, 128) // each stream's answer
			go func() {
				defer close(statuses)
				for {
					f, err := c.fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.WindowUpdateFrame:
						if f.StreamID == 0 {
							window <- f.Increment
						}
					case *http2.MetaHeadersFrame:
						statuses <- f.PseudoValue("status")
					case *http2.DataFrame:
						if f.StreamEnded() {
							statuses <- "body " + string(f.Data())
						}
					}
				}
			}()
			send := int64(65535) // the connection's window before the server's WINDOW_UPDATE
			data := func(id uint32) {
				for sent := 0; sent < bodyLen; sent += 16384 {
					for send < 16384 {
						select {
						case inc := <-window:
							send += int64(inc)
						case <-time.After(5 * time.Second):
							t.Fatalf("stream %d: no WINDOW_UPDATE for the connection in 5s, %d bytes of window left", id, send)
						}
					}
					if err := c.fr.WriteData(id, sent+16384 >= bodyLen, make([]byte, 16384)); err != nil {
						t.Fatal(err)
					}
					send -= 16384
				}
			}
			id := uint32(1)
			for range rounds {
				first := id
				for range maxStreams {
					c.headers(id, false, "/bad", "content-type", "text/plain", tc.field[0], tc.field[1])
					id += 2
				}
				for s := first; s < id; s += 2 {
					data(s)
				}
				for range maxStreams {
					if s := <-statuses; s != "400" {
						t.Fatalf("status %q, want 400", s)
					}
				}
			}
			c.headers(id, false, "/ok", "content-type", "text/plain")
			data(id)
			if s, body := <-statuses, <-statuses; s != "200" || body != fmt.Sprint("body ", bodyLen) {
				t.Fatalf("the request after them: %q %q, want 200 and its body's length", s, body)
			}
		})
	}
}
