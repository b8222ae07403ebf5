package purge

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestAckHoldHoldsEveryAck: with AckHold (the edge's, while another process of the node may
// still serve its cache), the join ack and a purge's ack go out no sooner than the hold after
// they were queued; without it at once. The receipts complete either way.
func TestAckHoldHoldsEveryAck(t *testing.T) {
	ref := NodeRef{"lon", "n1"}
	for _, tt := range []struct {
		name string
		hold time.Duration
	}{
		{name: "no hold"},
		{name: "held", hold: 300 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := testContext(t)
			ctl, js := ns.Connect(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			tr := newTracker(t, ctl)
			pub := &Publisher{JS: js, Tracker: tr}
			// Published before the node joins: its join ack acks it.
			before, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/before"), []NodeRef{ref})
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			s, err := NewSubscriber(SubscriberConfig{JS: js, PoP: ref.PoP, Node: ref.Node, Apply: rec.apply, OnGap: rec.onGap,
				AckHold: func() time.Duration { return tt.hold }})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			runSubscriber(t, s)
			if r := waitReceipt(t, tr, before.ID); !r.Complete {
				t.Fatalf("purge before the join: pending %v, want complete", r.Pending)
			}
			if took := time.Since(start); took < tt.hold {
				t.Errorf("join ack acked the purge %v after the node started, want no sooner than the hold %v", took, tt.hold)
			}
			published := time.Now()
			m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/after"), []NodeRef{ref})
			if err != nil {
				t.Fatal(err)
			}
			if r := waitReceipt(t, tr, m.ID); !r.Complete {
				t.Fatalf("purge after the join: pending %v, want complete", r.Pending)
			}
			if took := time.Since(published); took < tt.hold {
				t.Errorf("purge acked %v after it was published, want no sooner than the hold %v", took, tt.hold)
			}
			if rec.count() != 1 {
				t.Errorf("applied %d purges, want 1 (the one after the join)", rec.count())
			}
		})
	}
}

// TestAckHoldReleasedWhileApplyFails: an ack held for a purge applied goes out once due, also
// while the next purge's Apply keeps failing (Run's loop is inside apply's retries then). Before,
// it stayed held until that Apply succeeded: the receipt of a purge in effect waited, for good if
// the store never recovered.
func TestAckHoldReleasedWhileApplyFails(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, nc)
	rec := &recorder{}
	startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.AckHold = func() time.Duration { return 100 * time.Millisecond }
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			if m.Values[0] == "/p/1" {
				return 0, errors.New("store broken") // the fault under test: never recovers
			}
			return rec.apply(ctx, m)
		}
	})
	seqs := publishN(t, ctx, js, 2)
	wait.For(t, 10*time.Second, "the ack of the purge applied", func() bool { return len(acks.snapshot()) == 1 })
	if got := acks.snapshot()[0].Seq; got != seqs[0] {
		t.Errorf("acked seq %d, want %d (the purge applied)", got, seqs[0])
	}
}

// TestAckHoldReleasesInBatches: acks held that come due together (a hold that ends at one
// time, or a loop busy in a replay while they came due) go out maxAckBatch to a message at
// most, as others do. Before, releaseHeld put every due ack into one message: 5,000 purges
// a second held for max_lag make a message beyond NATS's max_payload.
func TestAckHoldReleasesInBatches(t *testing.T) {
	const purges = 3 * maxAckBatch
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var perMsg []int
	sub, err := nc.Subscribe(AckSubjects(""), func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		perMsg = append(perMsg, bytes.Count(m.Data, []byte("\n"))+1)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every ack queued before the deadline is due at it.
	deadline := time.Now().Add(3 * time.Second)
	startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.AckHold = func() time.Duration { return time.Until(deadline) }
	})
	publishN(t, ctx, js, purges)
	wait.For(t, 20*time.Second, "every purge acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range perMsg {
			n += c
		}
		return n >= purges
	})
	mu.Lock()
	defer mu.Unlock()
	if m := slices.Max(perMsg); m > maxAckBatch {
		t.Errorf("an ack message held %d acks (messages %v), want at most maxAckBatch = %d", m, perMsg, maxAckBatch)
	}
}

// TestAckHeldAtStopCoveredByNextJoin: an ack still held when its process stops is not sent
// (it stands for the node, and the hold is for another process of it), and its receipt waits
// only until the next process under the node's id joins: its join ack covers the purge.
func TestAckHeldAtStopCoveredByNextJoin(t *testing.T) {
	ref := NodeRef{"lon", "n1"}
	ns := natstest.Start(t)
	ctx := testContext(t)
	ctl, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, ctl)
	pub := &Publisher{JS: js, Tracker: tr}
	old := startNode(t, ns, ref.PoP, ref.Node, func(c *SubscriberConfig) {
		c.AckHold = func() time.Duration { return time.Hour }
	})
	<-old.sub.Ready()
	m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/held"), []NodeRef{ref})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the old process to apply the purge", func() bool { return old.rec.count() == 1 })
	old.stop()
	if r := mustReceipt(t, tr, m.ID); r.Complete {
		t.Fatalf("receipt complete with the ack held at the stop, want pending")
	}
	startNode(t, ns, ref.PoP, ref.Node)
	r := waitReceipt(t, tr, m.ID)
	if n := acksByNode(r)[ref]; n.Status != NodeAcked || !n.Joined {
		t.Errorf("after the next process joined: %+v, want acked by its join ack", n)
	}
}
