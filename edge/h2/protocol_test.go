package h2

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// dialRawSettings is dialRaw with the client's own SETTINGS.
func dialRawSettings(t testing.TB, ts *testServer, settings ...http2.Setting) *rawClient {
	t.Helper()
	c := dialRaw(t, ts)
	if len(settings) > 0 {
		c.fr.WriteSettings(settings...)
	}
	return c
}

// TestInlineHandlerWaitingForWindow: a response larger than the client's window makes its
// (inline) handler wait for WINDOW_UPDATE; the connection's other streams are answered
// meanwhile, and the first completes once the client grants more.
func TestInlineHandlerWaitingForWindow(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 5000)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		io.WriteString(w, "small")
	}))
	c := dialRawSettings(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	c.headers(1, true, "/big")
	c.headers(3, true, "/small")
	got := map[uint32]int{}
	ended := map[uint32]bool{}
	c.until("/small to end while /big waits", func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got[d.StreamID] += len(d.Data())
			ended[d.StreamID] = ended[d.StreamID] || d.StreamEnded()
		}
		return ended[3]
	})
	if got[1] > 1000 || ended[1] {
		t.Fatalf("/big sent %d bytes (ended %v) past a 1000-byte window", got[1], ended[1])
	}
	c.fr.WriteWindowUpdate(1, 10000)
	c.until("/big to end", func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got[d.StreamID] += len(d.Data())
			ended[d.StreamID] = ended[d.StreamID] || d.StreamEnded()
		}
		return ended[1]
	})
	if got[1] != len(big) || got[3] != len("small") {
		t.Fatalf("bodies of %d and %d bytes", got[1], got[3])
	}
}

// TestRapidResetBounded: a client that opens streams and resets them at once cannot make
// the server run more handlers than MaxConcurrentStreams; past a queue it is cut off with
// ENHANCE_YOUR_CALM (CVE-2023-44487).
func TestRapidResetBounded(t *testing.T) {
	release := make(chan struct{})
	var running, peak atomic.Int32
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		running.Add(-1)
	}))
	defer close(release)
	ts.H2.MaxConcurrentStreams = 10
	c := dialRaw(t, ts)
	var goaway *http2.GoAwayFrame
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goaway = g
			}
		}
	}()
	for id := uint32(1); id < 2*200; id += 2 {
		if c.tryHeaders(id, true, "/") != nil || c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // the server hung up
		}
	}
	<-done
	if goaway == nil || goaway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", goaway)
	}
	if p := peak.Load(); p > 10 {
		t.Fatalf("%d handlers ran at once, limit 10", p)
	}
}

// TestEmptyDataFlood: DATA frames that carry nothing end the connection (CVE-2019-9518).
func TestEmptyDataFlood(t *testing.T) {
	for _, tt := range []struct {
		name    string
		streams int // the empty frames are spread over them: the bound is the connection's
	}{
		{name: "one stream", streams: 1},
		{name: "many streams", streams: 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
			}))
			c := dialRaw(t, ts)
			for i := range tt.streams {
				c.headers(uint32(2*i+1), false, "/")
			}
			go func() {
				for i := range 2 * maxEmptyData {
					if c.fr.WriteData(uint32(2*(i%tt.streams)+1), false, nil) != nil {
						return
					}
				}
				c.fr.WritePing(false, [8]byte{1})
			}()
			c.until("GOAWAY", func(f http2.Frame) bool {
				if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
					t.Fatalf("%d empty DATA frames over %d streams: the connection went on", 2*maxEmptyData, tt.streams)
				}
				g, ok := f.(*http2.GoAwayFrame)
				if ok && g.ErrCode != http2.ErrCodeEnhanceYourCalm {
					t.Fatalf("GOAWAY %v", g.ErrCode)
				}
				return ok
			})
		})
	}
}

// TestHandlerPanicResetsStream: a panicking handler resets its stream; the connection and
// its other streams go on.
func TestHandlerPanicResetsStream(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "fine")
	}))
	c := dialRaw(t, ts)
	c.headers(1, true, "/panic")
	c.wantReset(1, http2.ErrCodeInternal, false)
	c.headers(3, true, "/ok")
	c.until("the next answer", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		return ok && d.StreamID == 3 && d.StreamEnded()
	})
}

// TestIdleTimeout: a connection without streams is closed with a GOAWAY after IdleTimeout.
func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	ts.H2.IdleTimeout = 300 * time.Millisecond
	c := dialRaw(t, ts)
	c.headers(1, true, "/")
	start := time.Now()
	c.until("GOAWAY", func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		if ok && (g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1) {
			t.Fatalf("GOAWAY %v last %d", g.ErrCode, g.LastStreamID)
		}
		return ok
	})
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", time.Since(start))
	}
	if _, err := c.fr.ReadFrame(); err == nil {
		t.Fatal("connection still open after GOAWAY")
	}
}

// TestBadPreface: a client that does not open with the preface is hung up on, unanswered.
func TestBadPreface(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("handler called")
	}))
	c := dialRaw(t, ts) // sends the preface: now send garbage on a fresh connection instead
	c.nc.Close()
	nc := dialTLS(t, ts)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(nc)
	if len(b) != 0 || err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("answered %q, %v", b, err)
	}
}

// TestExpectContinue: 100 Continue goes out when the handler first reads the body. The
// expectation is a case-insensitive token in a list (RFC 9110, section 10.1.1), as net/http's
// servers read it: "100-Continue" got no 100, and a client waiting for it waited for its own
// timeout before it sent the body.
func TestExpectContinue(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	for _, expect := range []string{"100-continue", "100-Continue", "100-CONTINUE", "100-continue, 100-continue"} {
		t.Run(expect, func(t *testing.T) {
			c := dialRaw(t, ts)
			c.headers(1, false, "/", "expect", expect, "content-length", "4")
			c.until("100 Continue", func(f http2.Frame) bool {
				h, ok := f.(*http2.MetaHeadersFrame)
				if ok && h.PseudoValue("status") != "100" {
					t.Fatalf("status %s before the body", h.PseudoValue("status"))
				}
				return ok
			})
			c.fr.WriteData(1, true, []byte("body"))
			var body []byte
			c.until("the echo", func(f http2.Frame) bool {
				d, ok := f.(*http2.DataFrame)
				if ok {
					body = append(body, d.Data()...)
				}
				return ok && d.StreamEnded()
			})
			if string(body) != "body" {
				t.Fatalf("echo %q", body)
			}
		})
	}
}

// TestBodyPastContentLength: DATA past the declared Content-Length resets the stream with
// PROTOCOL_ERROR (RFC 9113, section 8.1.1) and the handler's read fails.
func TestBodyPastContentLength(t *testing.T) {
	readErr := make(chan error, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}))
	c := dialRaw(t, ts)
	c.headers(1, false, "/", "content-length", "3")
	c.fr.WriteData(1, false, []byte("four"))
	c.wantReset(1, http2.ErrCodeProtocol, true)
	if err := <-readErr; err == nil {
		t.Fatal("the handler read a body that broke its Content-Length without error")
	}
}
