package fetch

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// hangingUpstream is a real upstream on ip: /hang sends nothing until the test ends (or the
// client goes), /503hang sends a 503 head and then nothing, /503 answers 503, anything else
// 200. Each request's path is sent on arrived as it comes in.
func hangingUpstream(t *testing.T, ip string) (srvURL string, arrived <-chan string) {
	t.Helper()
	release := make(chan struct{})
	paths := make(chan string, 16)
	srv := serve(t, ip, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		switch r.URL.Path {
		case "/hang":
		case "/503hang":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.(http.Flusher).Flush()
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		default:
			io.WriteString(w, "ok")
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	// Registered after serve's, so it runs first: the hung handlers end before the server closes.
	t.Cleanup(func() { close(release) })
	return srv.URL, paths
}

// hold sends a GET for url, which the upstream hangs on, on a goroutine, and returns once the
// upstream has it, with a channel closed when the goroutine ends. ctx (at most t.Context(),
// which ends before the cleanups run) ends it; the test's end waits for it.
func hold(t *testing.T, u *Upstream, ctx context.Context, url string, arrived <-chan string) <-chan struct{} {
	t.Helper()
	req := get(t, ctx, url)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		if resp, err := u.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() { <-ended })
	<-arrived
	return ended
}

// TestRefusedWithoutQueueing: when every bulkhead slot is held by a hung exchange and the
// breaker refuses (half-open with its probe out, or open again after a probe failed at its
// head), a request fails at once with ErrBreakerOpen. Asked the other way round, it waited
// all of QueueWait (here a minute) for a slot and failed with ErrBulkheadFull.
func TestRefusedWithoutQueueing(t *testing.T) {
	for _, tc := range []struct {
		name, ip, probe string
		state           string
		want            error
	}{
		{"half-open, its probe hung", "127.0.0.120", "/hang", "half-open", gobreaker.ErrTooManyRequests},
		{"open again, the failed probe's body hung", "127.0.0.121", "/503hang", "open", gobreaker.ErrOpenState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, arrived := hangingUpstream(t, tc.ip)
			u := New(Config{
				MaxConcurrent: 2, QueueWait: time.Minute,
				ConsecutiveFailures: 1, MinRequests: 1000, FailureStatus: fail5xx,
				// Long enough that the breaker, open again, is still open when asked.
				OpenTimeout: time.Second,
			})
			defer u.Close()
			ctx := t.Context()

			hold(t, u, ctx, url+"/hang", arrived) // slot 1, sent while closed
			if _, err := doRead(t, u, ctx, url+"/503"); err != nil {
				t.Fatalf("GET /503: %v", err)
			}
			<-arrived
			if st := u.Stats(); st.State != "open" {
				t.Fatalf("after a counted 503: state %q, want open", st.State)
			}
			wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
			if tc.probe == "/hang" {
				hold(t, u, ctx, url+tc.probe, arrived)
			} else {
				resp, err := u.Do(get(t, ctx, url+tc.probe)) // its head fails the probe
				if err != nil {
					t.Fatalf("probe: %v", err)
				}
				defer resp.Body.Close()
				<-arrived
			}
			before := u.Stats()
			if before.State != tc.state || before.InFlight != 2 {
				t.Fatalf("with the probe out: %+v, want %s with both slots held", before, tc.state)
			}

			// A bound in case the request queues: it would then fail after this, not QueueWait.
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := u.Do(get(t, dctx, url+"/"))
			if !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, tc.want) {
				t.Fatalf("Do with every slot held: error = %v, want ErrBreakerOpen wrapping %v, at once", err, tc.want)
			}
			after := u.Stats()
			if after.BreakerRejections != before.BreakerRejections+1 || after.BulkheadRejections != 0 ||
				after.Requests != before.Requests || after.InFlight != 2 {
				t.Errorf("Stats() = %+v after %+v, want one more breaker rejection, no bulkhead rejection, nothing sent", after, before)
			}
		})
	}
}

// TestProbeWithoutSlotHandsBackAdmission: a half-open breaker's probe admitted but then left
// without a bulkhead slot (ErrBulkheadFull) is not sent, counts as no failure, and lets the
// breaker admit another probe in its place; once slots free up, probes close it.
func TestProbeWithoutSlotHandsBackAdmission(t *testing.T) {
	url, arrived := hangingUpstream(t, "127.0.0.122")
	u := New(Config{
		MaxConcurrent: 2, QueueWait: 10 * time.Millisecond,
		ConsecutiveFailures: 1, MinRequests: 1000, FailureStatus: fail5xx,
		OpenTimeout: 100 * time.Millisecond, HalfOpenRequests: 2,
	})
	defer u.Close()
	ctx := t.Context()
	heldCtx, endHeld := context.WithCancel(ctx)

	first := hold(t, u, heldCtx, url+"/hang", arrived) // slot 1, sent while closed
	doRead(t, u, ctx, url+"/503")
	<-arrived
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	probe := hold(t, u, heldCtx, url+"/hang", arrived) // the first probe, slot 2

	// The second probe finds no slot, twice: the first time's admission came back.
	for i := range 2 {
		if _, err := u.Do(get(t, ctx, url+"/")); !errors.Is(err, ErrBulkheadFull) {
			t.Fatalf("probe %d without a slot: error = %v, want ErrBulkheadFull", i, err)
		}
	}
	if st := u.Stats(); st.State != "half-open" || st.Failures != 1 || st.BulkheadRejections != 2 || st.BreakerRejections != 0 {
		t.Fatalf("Stats() = %+v, want half-open, the 503 as the one failure, 2 bulkhead rejections, no breaker rejection", st)
	}

	endHeld() // both slots free (a caller's cancel: counted nowhere)
	<-first
	<-probe
	for i := range 2 {
		if got, err := doRead(t, u, ctx, url+"/"); err != nil || got != http.StatusOK {
			t.Fatalf("probe %d with slots free = %d, %v; want 200", i, got, err)
		}
		<-arrived
	}
	if st := u.Stats(); st.State != "closed" || st.Failures != 1 || st.Requests != 5 {
		t.Errorf("Stats() = %+v, want closed after two probes, 1 failure, 5 requests sent", st)
	}
}

// TestQueuedRequestAsksAgain: a request the breaker admitted while closed, that then waited
// for a slot while the breaker opened, is refused once it gets the slot, not sent: the
// breaker's state is the one when the request goes, as when the bulkhead was asked first.
func TestQueuedRequestAsksAgain(t *testing.T) {
	url, arrived := hangingUpstream(t, "127.0.0.123")
	// The bulkhead reads the clock as a request starts to wait for a slot (and the breaker
	// as it counts an outcome, none before the held body closes): the test's event that the
	// request queues.
	queued := make(chan struct{}, 16)
	u := New(Config{
		MaxConcurrent: 1, QueueWait: time.Minute,
		ConsecutiveFailures: 1, MinRequests: 1000, FailureStatus: fail5xx, OpenTimeout: time.Minute,
		Clock: func() time.Time {
			select {
			case queued <- struct{}{}:
			default:
			}
			return time.Now()
		},
	})
	defer u.Close()
	ctx := t.Context()

	failed, err := u.Do(get(t, ctx, url+"/503")) // the slot, its failure counted at Close
	if err != nil {
		t.Fatalf("GET /503: %v", err)
	}
	<-arrived
	errc := make(chan error, 1)
	go func() {
		_, err := doRead(t, u, ctx, url+"/")
		errc <- err
	}()
	<-queued
	failed.Body.Close() // opens the breaker, then frees the slot
	if err := <-errc; !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("request queued as the breaker opened: error = %v, want ErrBreakerOpen wrapping ErrOpenState", err)
	}
	select {
	case p := <-arrived:
		t.Errorf("the upstream got %s after the breaker opened", p)
	default:
	}
	if st := u.Stats(); st.State != "open" || st.Requests != 1 || st.BreakerRejections != 1 || st.InFlight != 0 {
		t.Errorf("Stats() = %+v, want open, 1 request sent, 1 breaker rejection, nothing in flight", st)
	}
}

// TestOldSuccessKeepsStreak: an exchange sent while the upstream was fine that ends with
// success after it began refusing connections does not end the run of refusals: the breaker
// opens at the third in a row, as ConsecutiveFailures says. A success sent after the run's
// first failure came in still ends it.
func TestOldSuccessKeepsStreak(t *testing.T) {
	for _, tc := range []struct {
		name, ip string
		fresh    bool // a request sent after the first refusal succeeds before the third
		want     string
	}{
		{"old exchange ends", "127.0.0.124", false, "open"},
		{"fresh exchange succeeds", "127.0.0.125", true, "closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			finish := make(chan struct{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close") // never reused: the refusals dial
				if r.URL.Path != "/slow" {
					io.WriteString(w, "ok")
					return
				}
				w.Header().Set("Content-Length", "8")
				io.WriteString(w, "half")
				w.(http.Flusher).Flush()
				select {
				case <-finish:
					io.WriteString(w, "half")
				case <-r.Context().Done():
				}
			})}
			var serving sync.WaitGroup
			listen := func(addr string) net.Listener {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("listen on %s: %v", addr, err)
				}
				serving.Go(func() { srv.Serve(ln) })
				return ln
			}
			ln := listen(tc.ip + ":0")
			addr := ln.Addr().String()
			t.Cleanup(func() {
				srv.Close()
				serving.Wait()
			})
			u := New(Config{ConsecutiveFailures: 3, MinRequests: 1000})
			defer u.Close()
			ctx := context.Background()

			slow, err := u.Do(get(t, ctx, "http://"+addr+"/slow"))
			if err != nil {
				t.Fatalf("GET /slow: %v", err)
			}
			defer slow.Body.Close()
			ln.Close() // the upstream now refuses every new connection; /slow's goes on
			refused := func(i int) {
				t.Helper()
				if _, err := doRead(t, u, ctx, "http://"+addr+"/"); err == nil {
					t.Fatalf("request %d with the listener closed: no error", i)
				}
			}
			refused(1)
			refused(2)
			if tc.fresh {
				ln := listen(addr)
				if got, err := doRead(t, u, ctx, "http://"+addr+"/"); err != nil || got != http.StatusOK {
					t.Fatalf("fresh request = %d, %v; want 200", got, err)
				}
				ln.Close()
			}
			close(finish)
			if b, err := io.ReadAll(slow.Body); err != nil || string(b) != "halfhalf" {
				t.Fatalf("slow body = %q, %v; want halfhalf", b, err)
			}
			slow.Body.Close() // a success, sent before the refusals began
			if st := u.Stats(); st.State != "closed" {
				t.Fatalf("after two refusals and a success: state %q, want closed", st.State)
			}
			refused(3)
			if st := u.Stats(); st.State != tc.want {
				t.Errorf("after the third refusal: state %q, want %s (Stats %+v)", st.State, tc.want, st)
			}
		})
	}
}
