package fetch

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestOnBreakerChange: OnBreakerChange hears every change of the breaker's state in order,
// with the failure that opened it on a change to open (the probe's too) and the effective
// open timeout, so a caller can log an upstream going down and coming back.
func TestOnBreakerChange(t *testing.T) {
	srv := serve(t, "127.0.0.114", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	var down atomic.Bool
	down.Store(true)
	var d net.Dialer
	var mu sync.Mutex
	var changes []BreakerChange
	u := New(Config{
		Name: "origin flapping", ConsecutiveFailures: 2, OpenTimeout: 20 * time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
			}
			return d.DialContext(ctx, network, addr)
		},
		OnBreakerChange: func(c BreakerChange) {
			mu.Lock()
			changes = append(changes, c)
			mu.Unlock()
		},
	})
	defer u.Close()
	ctx := context.Background()
	for range 2 {
		if _, err := doRead(t, u, ctx, srv.URL+"/"); err == nil {
			t.Fatal("Do with the upstream down: no error")
		}
	}
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	if _, err := doRead(t, u, ctx, srv.URL+"/"); err == nil { // the probe fails: open again
		t.Fatal("probe with the upstream down: no error")
	}
	down.Store(false)
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	if _, err := doRead(t, u, ctx, srv.URL+"/"); err != nil {
		t.Fatalf("probe with the upstream back: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var got [][2]string
	for _, c := range changes {
		got = append(got, [2]string{c.From, c.To})
		if c.Name != "origin flapping" || c.OpenTimeout != 20*time.Millisecond {
			t.Errorf("change %+v: want name %q and open timeout 20ms", c, "origin flapping")
		}
		if (c.To == "open") != (c.Err != nil) {
			t.Errorf("change %s -> %s with err %v: want an error exactly on a change to open", c.From, c.To, c.Err)
		}
		if c.Err != nil && !strings.Contains(c.Err.Error(), "connection refused") {
			t.Errorf("change %s -> %s with err %v: want the refused dial", c.From, c.To, c.Err)
		}
	}
	want := [][2]string{{"closed", "open"}, {"open", "half-open"}, {"half-open", "open"}, {"open", "half-open"}, {"half-open", "closed"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes %v, want %v", got, want)
	}
}
