package purge

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestSubscriberCaughtUpAt: the confirmed time never passes a purge that is not applied yet,
// stops while the node is cut off, and after a reconnect is confirmed again only once what
// was published meanwhile is applied.
func TestSubscriberCaughtUpAt(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	type entered struct {
		seq        uint64
		caughtUpAt time.Time
	}
	calls := make(chan entered, 16)
	release := make(chan struct{})
	var n *node
	n = startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.ConfirmEvery = 20 * time.Millisecond
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			calls <- entered{m.Seq, n.sub.CaughtUpAt()}
			return held(ctx, release, 1)
		}
	})
	wait.For(t, 10*time.Second, "a first confirmation", func() bool { return n.sub.ConfirmedSinceReconnect() })

	publishN(t, ctx, js, 1)
	published := time.Now() // the stream holds it: any confirmation asked from now needs it applied
	e := <-calls
	if !e.caughtUpAt.Before(published) {
		t.Errorf("CaughtUpAt() = %v while purge %d (published %v) is being applied, want before it", e.caughtUpAt, e.seq, published)
	}
	close(release)
	wait.For(t, 10*time.Second, "confirmed past the purge", func() bool { return n.sub.CaughtUpAt().After(published) })

	n.cut.Cut()
	wait.For(t, 10*time.Second, "the node to be disconnected", func() bool { return !n.nc.IsConnected() })
	cutAt := time.Now()
	_, js2 := ns.Connect(t)
	seqs := publishN(t, ctx, js2, 3)
	n.cut.Restore()
	// Until the reconnect the last confirmation stands (the edge bounds how old it may get).
	wait.For(t, 10*time.Second, "the reconnect", func() bool { return n.nc.IsConnected() })
	wait.For(t, 10*time.Second, "confirmed after the reconnect", func() bool { return n.sub.ConfirmedSinceReconnect() })
	if got := n.sub.LastApplied(); got < seqs[len(seqs)-1] {
		t.Errorf("confirmed after the reconnect with LastApplied() = %d, want >= %d (purged while cut off)", got, seqs[len(seqs)-1])
	}
	if !n.sub.CaughtUpAt().After(cutAt) {
		t.Errorf("CaughtUpAt() = %v after the reconnect, want after the cut (%v)", n.sub.CaughtUpAt(), cutAt)
	}
}

// TestSubscriberConfirmsWhenApplied: a confirmation waiting for a purge that is being applied
// settles as soon as that purge is applied, not at the next round: Run wakes confirmLoop when
// lastApplied reaches the sequence it awaits (and only then).
func TestSubscriberConfirmsWhenApplied(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	entered := make(chan uint64, 16)
	release := make(chan struct{})
	n := startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.ConfirmEvery = time.Hour // no round comes during the test: only an apply can settle
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			entered <- m.Seq
			return held(ctx, release, 1)
		}
	})
	wait.For(t, 10*time.Second, "a first confirmation", func() bool { return n.sub.ConfirmedSinceReconnect() })
	seq := publishN(t, ctx, js, 1)[0]
	if got := <-entered; got != seq {
		t.Fatalf("applying purge %d, want %d", got, seq)
	}
	// A reconnect makes confirmLoop ask the stream again, while the purge is being applied.
	n.cut.Cut()
	wait.For(t, 10*time.Second, "the node to be disconnected", func() bool { return !n.nc.IsConnected() })
	n.cut.Restore()
	wait.For(t, 10*time.Second, "confirmLoop to await the purge", func() bool { return n.sub.awaiting.Load() == seq })
	if n.sub.ConfirmedSinceReconnect() {
		t.Fatal("confirmed after the reconnect while the purge it needs is being applied")
	}
	close(release)
	wait.For(t, 10*time.Second, "confirmed once the purge is applied", func() bool { return n.sub.ConfirmedSinceReconnect() })
	if got := n.sub.awaiting.Load(); got != 0 {
		t.Errorf("awaiting %d after the confirmation, want 0", got)
	}
}
