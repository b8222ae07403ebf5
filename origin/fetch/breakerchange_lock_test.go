package fetch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOnBreakerChangeOutsideBreakerLock: OnBreakerChange is called after the breaker's lock
// is released, so a callback that blocks (the edge's log line, on a stderr pipe nobody
// reads) holds up the goroutine it runs on and no other request to the upstream. It ran
// inside gobreaker's OnStateChange, under the breaker's mutex: every Do (and Stats) of the
// upstream waited for it.
func TestOnBreakerChangeOutsideBreakerLock(t *testing.T) {
	srv := serve(t, "127.0.0.115", http.NotFoundHandler())
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	u := New(Config{
		Name: "origin blocked log", ConsecutiveFailures: 2, OpenTimeout: time.Minute,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
		},
		OnBreakerChange: func(c BreakerChange) {
			if c.To == "open" {
				once.Do(func() { close(entered) })
				<-release
			}
		},
	})
	defer u.Close()
	ctx := context.Background()
	opener := make(chan struct{})
	go func() { // opens the breaker; its goroutine is the one told, and held
		defer close(opener)
		for range 2 {
			doRead(t, u, ctx, srv.URL+"/")
		}
	}()
	released := false
	defer func() {
		if !released {
			close(release)
		}
		<-opener
	}()
	select {
	case <-entered:
	case <-opener:
		t.Fatal("two refused dials did not open the breaker")
	}
	type result struct {
		state string
		err   error
	}
	other := make(chan result, 1)
	go func() { // another request to the upstream, while the callback is held
		_, err := doRead(t, u, ctx, srv.URL+"/other")
		other <- result{u.Stats().State, err}
	}()
	select {
	case r := <-other:
		if r.state != "open" || !errors.Is(r.err, ErrBreakerOpen) {
			t.Errorf("another request while OnBreakerChange is held: state %q, err %v; want open and ErrBreakerOpen", r.state, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Error("another request and Stats still blocked after 10s while OnBreakerChange was held: it runs under the breaker's lock")
		close(release)
		released = true
		<-other
	}
}

// TestOnBreakerChangeInOrderUnderLoad: with many goroutines driving a flapping upstream, the
// changes reach OnBreakerChange one at a time, each from the state the previous one left,
// starting from closed: none lost, none reordered, though they are told outside the lock.
func TestOnBreakerChangeInOrderUnderLoad(t *testing.T) {
	srv := serve(t, "127.0.0.116", http.NotFoundHandler())
	var d net.Dialer
	var dials atomic.Int64
	var inside atomic.Int32
	var mu sync.Mutex
	var changes []BreakerChange
	u := New(Config{
		Name: "origin flapping under load", ConsecutiveFailures: 1, OpenTimeout: time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1)%3 != 0 { // two of three dials refused
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
			}
			return d.DialContext(ctx, network, addr)
		},
		OnBreakerChange: func(c BreakerChange) {
			if inside.Add(1) != 1 {
				t.Error("OnBreakerChange called while another call of it ran")
			}
			mu.Lock()
			changes = append(changes, c)
			mu.Unlock()
			inside.Add(-1)
		},
	})
	defer u.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				doRead(t, u, ctx, srv.URL+"/")
				if i%16 == g%16 {
					u.Stats() // moves an open breaker past its timeout to half-open, too
				}
			}
		})
	}
	wg.Wait()
	final := u.Stats().State
	mu.Lock()
	defer mu.Unlock()
	if len(changes) < 3 {
		t.Fatalf("%d changes, want the breaker to have flapped", len(changes))
	}
	from := "closed"
	for i, c := range changes {
		if c.From != from {
			t.Fatalf("change %d is %s -> %s, after a change to %s", i, c.From, c.To, from)
		}
		from = c.To
	}
	if from != final {
		t.Errorf("last change told was to %s; the breaker is %s", from, final)
	}
}

// TestChangeQueuePanic: a callback that panics on a change passes the panic on to its caller,
// and the changes queued after that one are told by the next caller, in order: the queue is
// not left to the goroutine the panic ended.
func TestChangeQueuePanic(t *testing.T) {
	var q changeQueue
	for _, to := range []string{"open", "half-open", "closed"} {
		q.push(BreakerChange{To: to})
	}
	var told []string
	f := func(c BreakerChange) {
		if c.To == "half-open" && len(told) == 1 {
			told = append(told, "panic")
			panic("callback")
		}
		told = append(told, c.To)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the callback's panic did not reach tell's caller")
			}
		}()
		q.tell(f)
	}()
	q.push(BreakerChange{To: "open"})
	if q.n.Load() != 2 {
		t.Errorf("%d changes queued after the panic, want 2 (the one after it, and a new one)", q.n.Load())
	}
	q.tell(f)
	if want := []string{"open", "panic", "closed", "open"}; !slices.Equal(told, want) {
		t.Errorf("told %v, want %v", told, want)
	}
}

// TestChangeQueueTellerTellsWhatCameMeanwhile: a change queued while another goroutine is
// telling (its caller's tell returns at once) is told by that goroutine before it stops, not
// left for the breaker's next call: the last request before an idle period (the one that
// opens the breaker) gets its "breaker open" line out then, not at the next request.
func TestChangeQueueTellerTellsWhatCameMeanwhile(t *testing.T) {
	var q changeQueue
	entered, release := make(chan struct{}), make(chan struct{})
	var told []string
	f := func(c BreakerChange) {
		if c.To == "half-open" {
			close(entered)
			<-release // the teller held in the callback (a blocked log line)
		}
		told = append(told, c.To)
	}
	q.push(BreakerChange{To: "half-open"})
	teller := make(chan struct{})
	go func() {
		defer close(teller)
		q.tell(f)
	}()
	<-entered
	q.push(BreakerChange{To: "open"}) // another call's change, while the first is told
	q.tell(f)                         // that call's tell: another goroutine is at it
	if q.n.Load() != 1 {
		t.Fatalf("%d changes queued while the teller is held, want 1", q.n.Load())
	}
	close(release)
	<-teller
	if want := []string{"half-open", "open"}; !slices.Equal(told, want) {
		t.Errorf("told %v once the teller returned, want %v", told, want)
	}
	if n := q.n.Load(); n != 0 {
		t.Errorf("%d changes left queued for the breaker's next call", n)
	}
}
