package edge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFillContextDeadline: a fill's context ends at its deadline with DeadlineExceeded, the
// fills in the order they started, one timer serving them all; one cancelled before its
// deadline ends with Canceled and is not ended again.
func TestFillContextDeadline(t *testing.T) {
	f := newFiller(&Node{})
	defer f.close()
	const timeout = 40 * time.Millisecond
	var fills [3]fillContext
	for i := range fills {
		if !f.enterFill(&fills[i], timeout) {
			t.Fatal("enterFill refused on an open filler")
		}
		defer f.wg.Done()
	}
	if d, ok := fills[0].Deadline(); !ok || d.After(time.Now().Add(timeout)) {
		t.Fatalf("Deadline() = %v, %v; want at most %v from now", d, ok, timeout)
	}
	fills[1].cancel()
	if err := fills[1].Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fill: Err() = %v, want Canceled", err)
	}
	for i, c := range []*fillContext{&fills[0], &fills[2]} {
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("fill %d still running 10 s after its %v deadline", i, timeout)
		}
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("fill %d: Err() = %v, want DeadlineExceeded", i, err)
		}
		if err := context.Cause(c); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("fill %d: Cause() = %v, want DeadlineExceeded", i, err)
		}
		if time.Now().Before(c.deadline) {
			t.Errorf("fill %d ended before its deadline", i)
		}
	}
	if err := fills[1].Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled fill after the others' deadlines: Err() = %v, want Canceled still", err)
	}
	f.mu.Lock()
	head := f.fillHead
	f.mu.Unlock()
	if head != nil {
		t.Error("ended fills are still listed")
	}
	// The timer, idle now, serves a fill that starts after it went idle.
	var late fillContext
	if !f.enterFill(&late, timeout) {
		t.Fatal("enterFill refused")
	}
	defer f.wg.Done()
	select {
	case <-late.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a fill started after the timer went idle never reached its deadline")
	}
}

// TestFillContextClose: closing the filler ends every live fill with Canceled (context.Cause
// says so too) and refuses new ones.
func TestFillContextClose(t *testing.T) {
	f := newFiller(&Node{})
	var c fillContext
	if !f.enterFill(&c, time.Hour) {
		t.Fatal("enterFill refused on an open filler")
	}
	ran := make(chan struct{})
	context.AfterFunc(&c, func() { close(ran) })
	go func() {
		<-c.Done() // a fill that ends when its context does
		f.wg.Done()
	}()
	f.close() // waits for the fill
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err() after close = %v, want Canceled", err)
	}
	if err := context.Cause(&c); !errors.Is(err, context.Canceled) {
		t.Errorf("Cause() after close = %v, want Canceled", err)
	}
	<-ran
	var late fillContext
	if f.enterFill(&late, time.Hour) {
		t.Error("enterFill accepted a fill after close")
	}
}

// TestFillContextAfterFunc: functions registered on a fill's context, directly or through
// context.AfterFunc and a derived context, run once it ends unless stopped first, as
// context.AfterFunc documents.
func TestFillContextAfterFunc(t *testing.T) {
	f := newFiller(&Node{})
	defer f.close()
	var c fillContext
	if !f.enterFill(&c, time.Hour) {
		t.Fatal("enterFill refused")
	}
	defer f.wg.Done()
	ran := make(chan string, 4)
	stopKept := c.AfterFunc(func() { ran <- "kept" })
	stopStopped := c.AfterFunc(func() { ran <- "stopped" })
	context.AfterFunc(&c, func() { ran <- "context.AfterFunc" })
	child, cancelChild := context.WithCancel(&c)
	defer cancelChild()
	if !stopStopped() {
		t.Error("stop before the end = false, want true")
	}
	if stopStopped() {
		t.Error("a second stop = true, want false")
	}
	c.cancel()
	got := map[string]bool{}
	for range 2 {
		got[<-ran] = true
	}
	if !got["kept"] || !got["context.AfterFunc"] {
		t.Errorf("ran %v, want kept and context.AfterFunc", got)
	}
	if stopKept() {
		t.Error("stop after the end = true, want false")
	}
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a context derived from the fill's did not end with it")
	}
	// Registered after the end: runs at once.
	c.AfterFunc(func() { ran <- "late" })
	if r := <-ran; r != "late" {
		t.Errorf("ran %q, want late (and never stopped)", r)
	}
}

// TestFillContextValues: a fill's context holds its trace's values and no parent's: the
// context package finds no cancelCtx above it (contexts derived from it go through its
// AfterFunc, TestFillContextAfterFunc).
func TestFillContextValues(t *testing.T) {
	f := newFiller(&Node{})
	defer f.close()
	if newInterim(nil) != nil {
		t.Fatal("newInterim(nil) != nil")
	}
	var c fillContext
	trace := &httptrace.ClientTrace{}
	c.values = httptrace.WithClientTrace(context.Background(), trace)
	if !f.enterFill(&c, time.Hour) {
		t.Fatal("enterFill refused")
	}
	defer f.wg.Done()
	defer c.cancel()
	if got := httptrace.ContextClientTrace(&c); got != trace {
		t.Errorf("ContextClientTrace = %p, want %p", got, trace)
	}
	var bare fillContext
	if v := bare.Value("anything"); v != nil {
		t.Errorf("Value on a context without values = %v", v)
	}
}

// TestFillContextCauseAfterClose: a fill that timed out keeps DeadlineExceeded as its cause
// when the node closes afterwards, as a context.WithTimeout of the filler's context did.
// Found in review: the filler's cancelCtx, reached through Value, gave Canceled.
func TestFillContextCauseAfterClose(t *testing.T) {
	f := newFiller(&Node{})
	var c fillContext
	if !f.enterFill(&c, 10*time.Millisecond) {
		t.Fatal("enterFill refused")
	}
	<-c.Done()
	f.wg.Done()
	f.close()
	if err := context.Cause(&c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Cause after close = %v, want DeadlineExceeded", err)
	}
}

// TestFillContextShorterTimeout: a fill entered with a shorter timeout than one already
// running still ends at its own deadline. Found in review: the list was kept in the order
// fills started, and the timer for the oldest.
func TestFillContextShorterTimeout(t *testing.T) {
	f := newFiller(&Node{})
	defer f.close()
	var long, short fillContext
	for _, e := range []struct {
		c *fillContext
		d time.Duration
	}{{&long, time.Hour}, {&short, 20 * time.Millisecond}} {
		if !f.enterFill(e.c, e.d) {
			t.Fatal("enterFill refused")
		}
		defer f.wg.Done()
	}
	select {
	case <-short.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a fill with a 20 ms timeout, entered behind one of an hour, still runs after 10 s")
	}
	if long.Err() != nil {
		t.Errorf("the hour-long fill ended too: %v", long.Err())
	}
}

// TestFillTimeout: a fill whose origin sends nothing ends at Config.FillTimeout, before the
// upstream's own timeouts, with 504 for the client; the next fill of the key runs anew.
func TestFillTimeout(t *testing.T) {
	release := make(chan struct{})
	var asked atomic.Int32
	n, client := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) == 1 {
			select { // the first fill: no answer until the test ends
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("second"))
	}, nil, func(c *Config) {
		c.FillTimeout = 300 * time.Millisecond
		c.Upstream.ResponseHeaderTimeout = time.Hour
		c.Upstream.BodyTimeout = time.Hour
	})
	defer close(release)
	start := time.Now()
	r := do(t, client, http.MethodGet, n.Addr(), testHost, "/slow")
	if r.status != http.StatusGatewayTimeout {
		t.Fatalf("GET /slow, origin silent = %d %q, want 504", r.status, r.body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the 504 took %v, want about the fill timeout", took)
	}
	if r := do(t, client, http.MethodGet, n.Addr(), testHost, "/slow"); r.status != http.StatusOK || r.body != "second" {
		t.Errorf("GET /slow again = %d %q, want 200 second", r.status, r.body)
	}
}

// TestResponseHeaderTimeoutIs504: an origin that sends no head within
// upstream.response_header_timeout gets its client a 504, as a pass did and nginx does, on
// every way a request reaches it. A GET or HEAD miss got 502: the upstream client's own
// HTTP/1.1 path wrapped its header timeout so that it no longer read as a timeout.
func TestResponseHeaderTimeoutIs504(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	n, client := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		select { // no head until the test ends
		case <-release:
		case <-r.Context().Done():
		}
	}, nil, func(c *Config) { c.Upstream.ResponseHeaderTimeout = 200 * time.Millisecond })
	for _, tt := range []struct {
		name, method, path string
		hdr                []string
	}{
		{"GET miss", http.MethodGet, "/get", nil},
		{"HEAD miss", http.MethodHead, "/head", nil},
		{"GET with Authorization", http.MethodGet, "/auth", []string{"Authorization", "Bearer x"}},
		{"POST pass", http.MethodPost, "/post", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, client, tt.method, n.Addr(), testHost, tt.path, tt.hdr...)
			if r.status != http.StatusGatewayTimeout {
				t.Errorf("%s %s, origin silent past response_header_timeout = %d %q, want 504", tt.method, tt.path, r.status, r.body)
			}
		})
	}
}

// TestFillTimeoutMidBody: a collapsed fill whose origin sends its header and part of a large
// body and then stalls ends at Config.FillTimeout (the pump's read is aborted through the
// fill context's AfterFunc), the client's answer is cut, and the next request fills anew.
// From the review of the fill context.
func TestFillTimeoutMidBody(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	first := make(chan struct{}, 1)
	first <- struct{}{}
	n, client := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "application/octet-stream")
		select {
		case <-first:
			w.Header().Set("Content-Length", "1000000")
			w.Write(make([]byte, 64<<10))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			w.Write([]byte(strings.Repeat("x", 100000)))
		}
	}, nil, func(c *Config) {
		c.FillTimeout = 300 * time.Millisecond
		c.Upstream.ResponseHeaderTimeout = time.Hour
		c.Upstream.BodyTimeout = time.Hour
	})
	start := time.Now()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr()+"/stall", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = testHost
	resp, err := client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("the stalled body arrived whole")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the cut took %v, want about the fill timeout", took)
	}
	if r := do(t, client, http.MethodGet, n.Addr(), testHost, "/stall"); r.status != http.StatusOK || len(r.body) != 100000 {
		t.Errorf("GET /stall again = %d with %d bytes, want 200 with 100000", r.status, len(r.body))
	}
}
