package fetch_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/origin/fetch"
)

// TestAgainstOrigin puts the client in front of the reference origin and drives the breaker with
// the origin's own faults: its 5xx answers leave the breaker closed, its transport faults open it.
func TestAgainstOrigin(t *testing.T) {
	o, err := origin.New(origin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.28:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Serve(ctx, ln) }()
	stop := func() {
		if ctx.Err() == nil {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("origin Serve: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	url := "http://" + ln.Addr().String() + "/x?size=4096"
	u := fetch.New(fetch.Config{Name: "origin test", ConsecutiveFailures: 3})
	defer u.Close()
	fetchOnce := func() error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := u.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return errors.New(resp.Status)
		}
		return nil
	}

	if err := fetchOnce(); err != nil {
		t.Fatalf("healthy origin: %v", err)
	}
	// An answer of 503 is the origin speaking: not a breaker failure.
	o.SetFault("/x", origin.Fault{Status: 503})
	for range 10 {
		if err := fetchOnce(); err == nil || errors.Is(err, fetch.ErrBreakerOpen) {
			t.Fatalf("fetch with a 503 fault: %v, want the 503", err)
		}
	}
	if st := u.Stats(); st.State != "closed" || st.Failures != 0 {
		t.Fatalf("Stats() after 10 answers of 503 = %+v, want closed with no failures", st)
	}
	// A body cut short and a connection dropped without an answer are failures of those
	// exchanges: counted, but not in a row (the origin was reached).
	faults := []origin.Fault{{Truncate: true}, {Drop: true}, {Truncate: true}, {Drop: true}}
	for _, f := range faults {
		o.SetFault("/x", f)
		if err := fetchOnce(); err == nil {
			t.Fatalf("fetch with fault %+v succeeded, want an error", f)
		}
	}
	if st := u.Stats(); st.State != "closed" || st.Failures != 4 {
		t.Fatalf("Stats() after 4 exchanges cut short = %+v, want closed with 4 failures", st)
	}
	// The origin gone: three refused connections in a row open the breaker.
	stop()
	for range 3 {
		if err := fetchOnce(); err == nil || errors.Is(err, fetch.ErrBreakerOpen) {
			t.Fatalf("fetch from a stopped origin: %v, want a refused connection", err)
		}
	}
	if err := fetchOnce(); !errors.Is(err, fetch.ErrBreakerOpen) {
		t.Errorf("fetch after 3 refused connections: %v, want ErrBreakerOpen", err)
	}
	if st := u.Stats(); st.State != "open" || st.Failures != 7 {
		t.Errorf("Stats() = %+v, want open with 7 failures", st)
	}
}
