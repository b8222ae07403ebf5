package purge

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder is an Apply/OnGap pair that records what it saw, in order.
type recorder struct {
	mu      sync.Mutex // guards the fields below
	applied []Message
	gaps    [][2]uint64
	// events interleaves "apply:<seq>" and "gap:<last>-<next>" to check order.
	events []string
}

func (r *recorder) apply(_ context.Context, m Message) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, m)
	r.events = append(r.events, "apply:"+strconv.FormatUint(m.Seq, 10))
	return len(m.Values), nil
}

func (r *recorder) onGap(_ context.Context, last, next uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps = append(r.gaps, [2]uint64{last, next})
	r.events = append(r.events, "gap:"+strconv.FormatUint(last, 10)+"-"+strconv.FormatUint(next, 10))
}

func (r *recorder) snapshot() (applied []Message, gaps [][2]uint64, events []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.applied...), append([][2]uint64(nil), r.gaps...), append([]string(nil), r.events...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied)
}

// runSubscriber starts s.Run in a goroutine that the test's cleanup stops and waits for, and
// waits until s is ready.
func runSubscriber(t *testing.T, s *Subscriber) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Subscriber.Run = %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Subscriber.Run did not return within 15s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber not ready within 10s")
	}
	return stop
}

func msg(host string, kind Kind, values ...string) Message {
	return Message{ID: NewID(), Host: host, Kind: kind, Values: values, IssuedAt: time.Now()}
}

// held is an Apply a test holds: it reports hits once release is closed, or fails when ctx
// ends.
func held(ctx context.Context, release <-chan struct{}, hits int) (int, error) {
	select {
	case <-release:
		return hits, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// runHeldSubscriber runs lon/n1's subscriber on js until the returned stop: its Apply sends
// each purge's id on started and then waits for release (held). confirm is its ConfirmEvery
// (zero: the default).
func runHeldSubscriber(t *testing.T, js jetstream.JetStream, confirm time.Duration) (s *Subscriber, started chan string, release chan struct{}, stop func()) {
	t.Helper()
	started, release = make(chan string, 4), make(chan struct{})
	s, err := NewSubscriber(SubscriberConfig{JS: js, PoP: "lon", Node: "n1",
		Apply: func(ctx context.Context, m Message) (int, error) {
			started <- m.ID
			return held(ctx, release, 1)
		},
		OnGap:        func(context.Context, uint64, uint64) {},
		ConfirmEvery: confirm,
		RetryMin:     10 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s, started, release, runSubscriber(t, s)
}
