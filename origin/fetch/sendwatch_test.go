package fetch

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestEarlyAnswerRelayed: an upstream that answers an upload at once, taking none of it (a 413
// or 401 decided from the head, or a 200), has its answer relayed whole, not turned into the
// send watch's 504, over HTTP/1 and HTTP/2. Over HTTP/2 the body's last bytes wait for a
// window the upstream never opens (the watch runs on until the request is written), and Go's
// server ends the stream with RST_STREAM NO_ERROR after the complete answer (RFC 9113 §8.1).
// The answer's body comes in two parts, the second after twice the watch's timeout: a watch
// still running after the answer came would cancel the exchange under it (seen over HTTP/1;
// over HTTP/2 only once the stream's writer, asleep on the window, wakes).
func TestEarlyAnswerRelayed(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const window = 64 << 10 // the HTTP/2 upstream's, per stream and connection
	for _, tt := range []struct {
		name, ip string
		h2       bool
		status   int
		size     int // of the upload
	}{
		{"HTTP/1 413", "127.0.0.145", false, http.StatusRequestEntityTooLarge, 32 << 20},
		{"HTTP/1 200", "127.0.0.145", false, http.StatusOK, 32 << 20},
		{"HTTP/1 401 within the buffers", "127.0.0.145", false, http.StatusUnauthorized, 1 << 10},
		{"HTTP/2 413, the tail held", "127.0.0.146", true, http.StatusRequestEntityTooLarge, window + 16<<10},
		{"HTTP/2 200, the tail held", "127.0.0.146", true, http.StatusOK, window + 16<<10},
		{"HTTP/2 401, mid-body", "127.0.0.146", true, http.StatusUnauthorized, 4 * window},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tt.ip+":0")
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.ContentLength <= 0 {
					return // the connection's first exchange, for its settings
				}
				// Answered from the head, none of the body taken.
				w.Header().Set("Content-Length", "10")
				w.WriteHeader(tt.status)
				io.WriteString(w, "early")
				w.(http.Flusher).Flush()
				select {
				case <-time.After(2 * timeout): // the origin's pace, past the watch's timeout
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "-done")
			}))
			srv.Listener = ln
			var tc *tls.Config
			if tt.h2 {
				srv.EnableHTTP2 = true
				srv.Config.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerConnection: window, MaxReceiveBufferPerStream: window}
				srv.StartTLS()
				tc = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
				tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			u := New(Config{Name: "origin", TLSConfig: tc, BodyTimeout: time.Hour, ResponseHeaderTimeout: timeout})
			defer u.Close()
			if tt.h2 {
				// The first exchange opens the connection and learns its window.
				resp, err := u.Do(get(t, context.Background(), srv.URL))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Fatalf("upstream spoke %s, want HTTP/2", resp.Proto)
				}
			}
			body := strings.Repeat("a", tt.size)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/up", nil)
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
			resp, err := u.Do(req)
			if err != nil {
				t.Fatalf("Do = %v, want the upstream's %d", err, tt.status)
			}
			got, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || string(got) != "early-done" || rerr != nil {
				t.Fatalf("answer %d %q, read error %v; want %d \"early-done\"", resp.StatusCode, got, rerr, tt.status)
			}
			if st := u.Stats(); st.Failures != 0 || st.InFlight != 0 {
				t.Errorf("Stats() = %+v, want no failure, 0 in flight", st)
			}
		})
	}
}

// TestSendStallAfterWholeAnswer: a send watch that fires after the transport has a whole
// answer, one with no body (an HTTP/1 401 or 413 of Content-Length 0, a 204), before the watch
// is stopped, leaves that answer to the caller: nothing of it is read under the context the
// watch canceled, and the upstream did answer. Over HTTP/1 this window is not only the
// microseconds between the transport's return and the watch's stop: the Transport holds a
// bodiless answer that came while the body was still going out for up to 50 ms, waiting for
// the write to end, before it hands it over (persistConn.wroteRequest). An answer with a body
// is ended as a stall (TestSendStallAsAnswerComes).
func TestSendStallAfterWholeAnswer(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusRequestEntityTooLarge, http.StatusNoContent} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv := serve(t, "127.0.0.147", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "0")
				w.WriteHeader(status)
			}))
			testHookRoundTripped = func(w *sendWatch) { w.fire() } // the timer, in the window
			t.Cleanup(func() { testHookRoundTripped = nil })
			u := New(Config{Name: "origin"})
			defer u.Close()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/up", nil)
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader("hello")), 5
			resp, err := u.Do(req)
			if err != nil {
				t.Fatalf("Do = %v, want the upstream's %d", err, status)
			}
			got, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != status || len(got) != 0 || rerr != nil {
				t.Fatalf("answer %d %q, %v; want %d, no body", resp.StatusCode, got, rerr, status)
			}
			if st := u.Stats(); st.Failures != 0 || st.InFlight != 0 {
				t.Errorf("Stats() = %+v, want no failure, 0 in flight", st)
			}
		})
	}
}
