package h2

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// goAwayOrClose reads frames until a GOAWAY (returned) or the end of the connection (nil);
// an answer on stream id before either fails the test.
func (c *rawClient) goAwayOrClose(id uint32) *http2.GoAwayFrame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("no GOAWAY nor close: %v", err)
			}
			return nil
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return f
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				c.t.Fatalf("stream %d answered %s: the connection went on", id, f.PseudoValue("status"))
			}
		}
	}
}

// TestEmptyContinuationFlood: a header block that goes on in CONTINUATION frames carrying
// nothing ends the connection (CVE-2019-9518, the CONTINUATION floods of 2024), rather
// than keeping the reader busy until the idle timeout, or forever beside an open stream.
func TestEmptyContinuationFlood(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
	}))
	c := dialRaw(t, ts)
	c.buf.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "a"}, {":path", "/"}} {
		c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	block := append([]byte(nil), c.buf.Bytes()...)
	go func() {
		if c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:1], EndStream: true}) != nil {
			return
		}
		for range 10 * maxEmptyData {
			if c.fr.WriteContinuation(1, false, nil) != nil {
				return
			}
		}
		c.fr.WriteContinuation(1, true, block[1:])
	}()
	if g := c.goAwayOrClose(1); g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", g)
	}
}

// TestContinuationFloodWithoutFields: CONTINUATION frames whose bytes decode to no field
// (dynamic table size updates to 0, allowed anywhere while the table is empty) cannot go
// on for ever: the encoded block is bounded as the decoded list is.
func TestContinuationFloodWithoutFields(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
	}))
	ts.H2.MaxHeaderBytes = 4096
	c := dialRaw(t, ts)
	c.buf.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "a"}, {":path", "/"}} {
		c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	block := append([]byte(nil), c.buf.Bytes()...)
	updates := []byte(strings.Repeat("\x20", 1000)) // size update to 0, a thousand times
	go func() {
		if c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: updates, EndStream: true}) != nil {
			return
		}
		for range 1000 { // 1 MB of nothing against a 4 KiB limit
			if c.fr.WriteContinuation(1, false, updates) != nil {
				return
			}
		}
		c.fr.WriteContinuation(1, true, block)
	}()
	if g := c.goAwayOrClose(1); g == nil || g.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", g)
	}
}

// TestHeaderListTooLargeReleasesStream: a request answered 431 without reaching a handler
// leaves nothing behind on its connection (its context, registered with the connection's).
func TestHeaderListTooLargeReleasesStream(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	ts.H2.MaxHeaderBytes = 256
	c := dialRaw(t, ts)
	const n = 50
	for i := range n {
		c.headers(uint32(2*i+1), true, "/", "x-big", strings.Repeat("a", 200), "x-big2", strings.Repeat("b", 200))
		c.until("the 431", func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == uint32(2*i+1)
		})
	}
	ts.H2.mu.Lock()
	var cn *conn
	for k := range ts.H2.conns {
		cn = k
	}
	ts.H2.mu.Unlock()
	children := reflect.ValueOf(cn.ctx).Elem().FieldByName("children")
	if !children.IsValid() {
		t.Fatal("context.cancelCtx has no children field any more: count the stream contexts another way")
	}
	cn.mu.Lock()
	left := children.Len()
	cn.mu.Unlock()
	if left > 0 {
		t.Fatalf("%d stream contexts left registered after %d answers of 431", left, n)
	}
}

// TestMalformedRequests: requests RFC 9113 (section 8.3.1) calls malformed, and x/net's
// server refuses, are reset with PROTOCOL_ERROR rather than served. (A regular field's value
// with white space at either end is answered 400 instead: TestEdgeSpaceValueAnswered400; so
// are white space around a pseudo-field's value, a connection-specific field and TE other
// than trailers, which clients send: TestMalformedAnswered400.)
func TestMalformedRequests(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %s %q host %q %v", r.Method, r.RequestURI, r.Host, r.Header)
	}))
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"host differs from :authority", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "host", "b"}},
		{"two hosts", []string{":method", "GET", ":scheme", "https", ":path", "/", "host", "a", "host", "b"}},
		{"host port differs from :authority", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "host", "a:80"}},
		{"host differs from :authority but for a Unicode case fold (Kelvin sign)", []string{":method", "GET", ":scheme", "https", ":authority", "kelvin.example", ":path", "/", "host", "\u212aelvin.example"}},
		{"host differs from :authority but for a Unicode case fold (long s)", []string{":method", "GET", ":scheme", "https", ":authority", "shop.example", ":path", "/", "host", "\u017fhop.example"}},
		{"empty :authority beside host", []string{":method", "GET", ":scheme", "https", ":authority", "", ":path", "/", "host", "a"}},
		{"empty :authority", []string{":method", "GET", ":scheme", "https", ":authority", "", ":path", "/"}},
		{"userinfo in :authority", []string{":method", "GET", ":scheme", "https", ":authority", "u@a", ":path", "/"}},
		{"invalid :authority", []string{":method", "GET", ":scheme", "https", ":authority", "a b/c", ":path", "/"}},
		{"absolute :path", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "https://b/x"}},
		{"unknown :scheme", []string{":method", "GET", ":scheme", "ftp", ":authority", "a", ":path", "/"}},
		{"empty :path", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", ""}},
		{"uppercase", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "X-Up", "1"}},
		{"CR in value", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "x-a", "1\r\nx-b: 2"}},
		{"NUL in value", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", "x-a", "1\x002"}},
		{"duplicate :path", []string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", ":path", "/x"}},
		{"pseudo after regular", []string{":method", "GET", ":scheme", "https", "x-a", "1", ":authority", "a", ":path", "/"}},
		{"CONNECT with :path", []string{":method", "CONNECT", ":authority", "a:443", ":path", "/"}},
		{":protocol", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":authority", "a", ":path", "/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts)
			c.buf.Reset()
			for i := 0; i < len(tc.fields); i += 2 {
				c.enc.WriteField(hpack.HeaderField{Name: tc.fields[i], Value: tc.fields[i+1]})
			}
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
			c.wantReset(1, http2.ErrCodeProtocol, true)
		})
	}
}

// TestHostBesideAuthorityNormalized: a Host field that names the same entity as :authority
// once both are normalized as RFC 9113 (section 8.3.1) requires of a server that is not the
// origin (scheme-based normalization, RFC 3986 section 6.2.3: the host's case, the scheme's
// default port, an empty port) is no conflict: the request is served, and its host is the
// :authority, which the target URI comes from. Compared as strings, they were reset.
func TestHostBesideAuthorityNormalized(t *testing.T) {
	hosts := make(chan string, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		if _, ok := r.Header["Host"]; ok {
			t.Errorf("Host left in the header: %q", r.Header["Host"])
		}
	}))
	for _, tc := range []struct {
		scheme, authority, host string
	}{
		{"https", "a.example", "A.Example"},
		{"https", "A.Example", "a.example"},
		{"https", "a.example", "a.example:443"},
		{"https", "a.example:443", "a.example"},
		{"https", "a.example", "a.example:"},
		{"http", "a.example", "a.example:80"},
		{"https", "a.example:8443", "A.EXAMPLE:8443"},
		{"https", "[::1]", "[::1]:443"},
	} {
		t.Run(tc.scheme+" "+tc.authority+" "+tc.host, func(t *testing.T) {
			c := dialRaw(t, ts)
			c.buf.Reset()
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", tc.scheme}, {":authority", tc.authority}, {":path", "/"}, {"host", tc.host}} {
				c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
			c.until("the answer", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					t.Fatalf("reset with %v: Host %q and :authority %q are one entity", f.ErrCode, tc.host, tc.authority)
				case *http2.MetaHeadersFrame:
					if got := f.PseudoValue("status"); got != "200" {
						t.Fatalf("status %s", got)
					}
					return true
				}
				return false
			})
			if got := <-hosts; got != tc.authority {
				t.Errorf("r.Host %q, want the :authority %q", got, tc.authority)
			}
		})
	}
}

// TestMalformedTrailers: a request's trailers are held to the rules of its header fields
// (RFC 9113, section 8.2): a connection-specific field or a TE other than "trailers" makes
// the request malformed: the handler reading the body gets an error (errTrailerField), not its
// end, and answers. Such trailers were accepted (and dropped), and the body ended as if
// whole; then the stream was reset with PROTOCOL_ERROR, which Go's client, which sends such
// trailers, took for a reason to retry the request on a new connection, without end. A
// pseudo-field in trailers is still reset. (A value with white space at either end fails the
// body the same way: TestEdgeSpaceTrailer.)
func TestMalformedTrailers(t *testing.T) {
	type result struct {
		body string
		err  error
	}
	for _, tc := range []struct {
		name     string
		trailers []string
		ok       bool
	}{
		{"valid", []string{"x-sum", "1"}, true},
		{"te trailers", []string{"te", "trailers"}, true},
		{"pseudo field", []string{":path", "/x"}, false},
		{"connection", []string{"connection", "close"}, false},
		{"keep-alive", []string{"keep-alive", "timeout=5"}, false},
		{"proxy-connection", []string{"proxy-connection", "keep-alive"}, false},
		{"transfer-encoding", []string{"transfer-encoding", "chunked"}, false},
		{"upgrade", []string{"upgrade", "h2c"}, false},
		{"te gzip", []string{"te", "gzip"}, false},
	} {
		connField := tc.name != "pseudo field" // answered, not reset (TestEdgeSpaceTrailer)
		t.Run(tc.name, func(t *testing.T) {
			results := make(chan result, 1)
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				results <- result{string(b), err}
			}))
			c := dialRaw(t, ts)
			c.buf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "a"}, {":path", "/"}} {
				c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndHeaders: true})
			c.fr.WriteData(1, false, []byte("abc"))
			c.buf.Reset()
			for i := 0; i < len(tc.trailers); i += 2 {
				c.enc.WriteField(hpack.HeaderField{Name: tc.trailers[i], Value: tc.trailers[i+1]})
			}
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
			if !tc.ok && !connField {
				c.wantReset(1, http2.ErrCodeProtocol, true)
			}
			var got result
			select {
			case got = <-results:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler did not finish reading the body")
			}
			switch {
			case tc.ok && (got.err != nil || got.body != "abc"):
				t.Fatalf("body %q, error %v; want \"abc\" whole", got.body, got.err)
			case !tc.ok && got.err == nil:
				t.Fatalf("body %q read whole, its trailers malformed", got.body)
			case !tc.ok && connField && (got.err != errTrailerField || got.body != "abc"):
				t.Fatalf("body %q, error %v; want \"abc\", then %v", got.body, got.err, errTrailerField)
			}
			if !tc.ok && connField {
				// The handler answered, and its answer ends the stream: no reset, which Go's
				// client, which sends such trailers, retried on a new connection without end.
				if s := c.wantAnswer(1); s != "200" {
					t.Fatalf("status %s, want the handler's 200", s)
				}
			}
		})
	}
}

// TestStreamsAfterGoAwayBounded: the streams a client opens after the server's GOAWAY are
// ignored (RFC 9113, section 6.8), but not without end while a stream before it is still
// served: a client that has not yet seen the GOAWAY can have opened no more than its
// concurrent-stream limit, and twice that ends the connection with ENHANCE_YOUR_CALM. They
// were ignored for as long as the held stream lasted.
func TestStreamsAfterGoAwayBounded(t *testing.T) {
	const maxStreams = 4
	for _, tt := range []struct {
		name    string
		streams int // opened after the GOAWAY
		calm    bool
	}{
		{name: "within the bound", streams: 2 * maxStreams},
		{name: "past the bound", streams: 2*maxStreams + 1, calm: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hold := make(chan struct{})
			release := sync.OnceFunc(func() { close(hold) })
			defer release() // the server's shutdown waits for the held handler
			started := make(chan struct{})
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started) // only stream 1 is served
				<-hold
				io.WriteString(w, "ok")
			}))
			ts.H2.MaxConcurrentStreams = maxStreams
			c := dialRaw(t, ts)
			c.headers(1, true, "/hold")
			<-started // the GOAWAY names stream 1
			c.shutdownUntilGoAway(ts, 1)
			for i := range tt.streams {
				if err := c.tryHeaders(uint32(3+2*i), true, "/"); err != nil {
					t.Fatal(err)
				}
			}
			c.fr.WritePing(false, [8]byte{1})
			c.until("the PING's ACK or a GOAWAY", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					if !tt.calm {
						t.Fatalf("GOAWAY %v after %d streams ignored, within the bound", f.ErrCode, tt.streams)
					}
					if f.ErrCode != http2.ErrCodeEnhanceYourCalm || f.LastStreamID != 1 {
						t.Fatalf("GOAWAY %v naming stream %d, want ENHANCE_YOUR_CALM naming 1", f.ErrCode, f.LastStreamID)
					}
					return true
				case *http2.PingFrame:
					if tt.calm && f.IsAck() {
						t.Fatalf("%d streams opened after the GOAWAY ignored: the connection went on", tt.streams)
					}
					return f.IsAck()
				case *http2.MetaHeadersFrame, *http2.RSTStreamFrame:
					if id := f.Header().StreamID; id > 1 {
						t.Fatalf("stream %d, opened after the GOAWAY, answered", id)
					}
				}
				return false
			})
		})
	}
}

// TestIgnoredHeadersBounded: HEADERS frames on a stream whose frames the server ignores (one
// it reset while its client was sending, or one opened after its GOAWAY) cost a decoding each
// and get no answer, so they must not come without end (CVE-2019-9518: here with empty
// header blocks). Such a stream has one HEADERS left to send at most, its trailers: the next
// one on a reset stream is a HEADERS on a closed stream (PROTOCOL_ERROR), and after the
// GOAWAY the connection takes no more of them than the streams it ignores.
func TestIgnoredHeadersBounded(t *testing.T) {
	for _, tt := range []struct {
		name      string
		goAway    bool // the stream is opened after the server's GOAWAY; else reset while sending
		held      bool // the GOAWAY names a stream still served (else none, and the server lingers)
		frames    int  // empty HEADERS frames sent on it
		endStream bool
		want      http2.ErrCode // the GOAWAY's; ErrCodeNo: the connection goes on
	}{
		{name: "reset/trailers", frames: 1, endStream: true},
		{name: "reset/flood", frames: 10 * maxEmptyData, want: http2.ErrCodeProtocol},
		{name: "goaway/trailers", goAway: true, held: true, frames: 1, endStream: true},
		{name: "goaway/flood", goAway: true, held: true, frames: 10 * maxEmptyData, endStream: true, want: http2.ErrCodeEnhanceYourCalm},
		{name: "goaway first/trailers", goAway: true, frames: 1, endStream: true},
		{name: "goaway first/flood", goAway: true, frames: 10 * maxEmptyData, endStream: true, want: http2.ErrCodeEnhanceYourCalm},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hold := make(chan struct{})
			release := sync.OnceFunc(func() { close(hold) })
			defer release() // the server's shutdown waits for the held handler
			started := make(chan struct{}, 1)
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					started <- struct{}{}
					<-hold
				}
				io.WriteString(w, "ok") // without reading the body: the stream is reset
			}))
			c := dialRaw(t, ts)
			id := uint32(1)
			switch {
			case tt.goAway && tt.held:
				c.headers(1, true, "/hold")
				<-started
				c.shutdownUntilGoAway(ts, 1)
				id = 3
				c.headers(id, false, "/") // ignored, its trailers too
			case tt.goAway:
				c.shutdownUntilGoAway(ts, 0)
				c.headers(id, false, "/")
			default:
				c.headers(id, false, "/")
				c.wantReset(id, http2.ErrCodeNo, false)
			}
			go func() {
				for range tt.frames {
					if c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: tt.endStream}) != nil {
						return
					}
				}
				c.fr.WritePing(false, [8]byte{1})
			}()
			c.until("the PING's ACK or a GOAWAY", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					if f.ErrCode != tt.want {
						t.Fatalf("GOAWAY %v after %d HEADERS on stream %d, want %v", f.ErrCode, tt.frames, id, tt.want)
					}
					return true
				case *http2.PingFrame:
					if f.IsAck() && tt.want != http2.ErrCodeNo {
						t.Fatalf("%d HEADERS ignored on stream %d: the connection went on", tt.frames, id)
					}
					return f.IsAck()
				case *http2.MetaHeadersFrame, *http2.RSTStreamFrame:
					if f.Header().StreamID == id {
						t.Fatalf("stream %d answered with %T", id, f)
					}
				}
				return false
			})
		})
	}
}

// TestControlFloodNotQueued: the answers to a flood of frames (PING and SETTINGS ACKs,
// RST_STREAM for frames on closed streams: CVE-2019-9512, 9515 and 9514) from a client that
// reads none of them are not queued without bound, as x/net's server queues up to 10000
// before it hangs up: they are written to the connection's buffer and from it to the
// socket, under the connection's lock, so once the socket is full the reader stops reading,
// the client's writes stop (TCP's buffers hold the flood, not the server's heap) until the
// write timeout ends the connection (TestClientThatStopsReading).
func TestControlFloodNotQueued(t *testing.T) {
	const maxFrames = 1 << 21 // ~35 MB of frames: far past the socket buffers of loopback
	for _, tt := range []struct {
		name  string
		flood func(c *rawClient) error
	}{
		{name: "PING", flood: func(c *rawClient) error { return c.fr.WritePing(false, [8]byte{}) }},
		{name: "SETTINGS", flood: func(c *rawClient) error { return c.fr.WriteSettings() }},
		{name: "RST_STREAM/DATA on a closed stream", flood: func(c *rawClient) error { return c.fr.WriteData(1, false, []byte("x")) }},
		{name: "RST_STREAM/PRIORITY on itself", flood: func(c *rawClient) error {
			return c.fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			c := dialRaw(t, ts)
			c.headers(1, true, "/") // ended: DATA on it is answered with RST_STREAM
			// Closed beneath TLS, whose close would wait 5 s to send its alert into the
			// full socket.
			defer c.nc.(*tls.Conn).NetConn().Close()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			frames := 0
			var err error
			for ; frames < maxFrames && err == nil; frames++ {
				// A write that waits this long means the server stopped reading.
				c.nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				err = tt.flood(c)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("the server read %d frames from a client that reads nothing", frames)
			}
			if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 4<<20 {
				t.Errorf("heap grew by %d bytes over %d frames, want the answers left in the socket", grown, frames)
			}
		})
	}
}
