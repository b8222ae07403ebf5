package fetch

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReleaseAtHead: with ReleaseAtHead, an answer whose body is still streaming holds no
// bulkhead slot (a second request gets the only one), is counted as Streaming rather than
// InFlight, and its outcome still reaches the breaker when its body is closed: a body the
// upstream cuts short is a failure. Without it, the streaming answer keeps its slot until its
// body is closed, as a cache fill's must.
func TestReleaseAtHead(t *testing.T) {
	cut := make(chan struct{})
	srv := serve(t, "127.0.0.34", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/stream" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-cut:
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler) // the stream cut short: no chunked terminator
	}))
	defer close(cut)
	requests := []struct {
		name string
		req  func(path string) *http.Request
	}{
		{"h1", func(path string) *http.Request { return get(t, context.Background(), srv.URL+path) }},
		{"transport", func(path string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader("x")) // a body: net/http's Transport
			return req
		}},
	}
	for _, rq := range requests {
		for _, release := range []bool{false, true} {
			name := rq.name + "/hold"
			if release {
				name = rq.name + "/release at head"
			}
			t.Run(name, func(t *testing.T) {
				u := New(Config{MaxConcurrent: 1, QueueWait: 10 * time.Millisecond, ReleaseAtHead: release})
				defer u.Close()
				stream, err := u.Do(rq.req("/stream"))
				if err != nil {
					t.Fatalf("Do /stream: %v", err)
				}
				defer stream.Body.Close()
				if _, err := io.ReadFull(stream.Body, make([]byte, len("data: one\n"))); err != nil {
					t.Fatalf("read the first event: %v", err)
				}
				wantIn, wantStreaming := 1, 0
				if release {
					wantIn, wantStreaming = 0, 1
				}
				if st := u.Stats(); st.InFlight != wantIn || st.Streaming != wantStreaming {
					t.Errorf("Stats() with a stream open = %+v, want %d in flight, %d streaming", st, wantIn, wantStreaming)
				}

				resp, err := u.Do(rq.req("/ok"))
				switch {
				case !release && !errors.Is(err, ErrBulkheadFull):
					t.Errorf("Do /ok while the stream holds the only slot: %v, want ErrBulkheadFull", err)
				case release && err != nil:
					t.Errorf("Do /ok while a stream is open: %v, want its answer", err)
				case release:
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}

				cut <- struct{}{}
				if _, err := io.Copy(io.Discard, stream.Body); err == nil {
					t.Fatalf("reading a stream cut short: no error")
				}
				stream.Body.Close()
				if st := u.Stats(); st.InFlight != 0 || st.Streaming != 0 || st.Failures != 1 {
					t.Errorf("Stats() once the cut stream is closed = %+v, want nothing in flight or streaming, 1 failure", st)
				}
			})
		}
	}
}

// TestReleaseAtHeadBodyTimeoutNotAFailure: with ReleaseAtHead (the edge's pass client, whose
// BodyTimeout is pass_timeout), an answer whose head came and whose body was still streaming
// when BodyTimeout ended it is the caller's own limit, not a failure of the upstream: viewers
// of an event stream who connected within seconds of each other (a reconnect wave) reached
// pass_timeout together, and their expiries opened the breaker, every pass to the origin
// refused for open_timeout. Without ReleaseAtHead (a fill's 30 s), the expiry stays a failure.
func TestReleaseAtHeadBodyTimeoutNotAFailure(t *testing.T) {
	srv := serve(t, "127.0.0.36", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	for _, release := range []bool{true, false} {
		t.Run(map[bool]string{true: "release at head", false: "hold"}[release], func(t *testing.T) {
			u := New(Config{ReleaseAtHead: release, BodyTimeout: 100 * time.Millisecond, MinRequests: 3})
			defer u.Close()
			for i := range 3 {
				resp, err := u.Do(get(t, context.Background(), srv.URL+"/live"))
				if err != nil {
					t.Fatalf("stream %d: Do: %v", i, err)
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if !errors.Is(err, errBodyTimeout) {
					t.Fatalf("stream %d: read to %v, want the body timeout", i, err)
				}
			}
			st := u.Stats()
			if release && (st.Failures != 0 || st.State != "closed") {
				t.Errorf("after 3 streams ended by BodyTimeout: %+v, want no failure, breaker closed", st)
			}
			if !release && (st.Failures != 3 || st.State != "open") {
				t.Errorf("without ReleaseAtHead, after 3 body timeouts: %+v, want 3 failures, breaker open", st)
			}
		})
	}
}
