package purge

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestPublisherRetryKeepsAcks: publishing a purge again with the same id (a retry, stored once
// and announced again with its first sequence) is one purge. Nodes skip the second
// announcement, having applied the first, so they never ack again: the receipt must keep the
// acks it has, and a publish whose caller gave up before the stream answered (the purge may
// well be stored, and nodes then apply and ack it) must not drop the receipt, or those acks
// are lost and the purge stays pending on every node that applied it.
func TestPublisherRetryKeepsAcks(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	nc, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, nc)
	ref := NodeRef{PoP: "ams", Node: "n1"}
	n := startNode(t, ns, ref.PoP, ref.Node, func(c *SubscriberConfig) { c.ConfirmEvery = 20 * time.Millisecond })
	pub := &Publisher{JS: js, Tracker: tr}
	expected := []NodeRef{ref}

	t.Run("retry after success", func(t *testing.T) {
		m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/a"), expected)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if r := tr.Wait(wctx, m.ID); !r.Complete {
			t.Fatalf("receipt pending %v, want complete", r.Pending)
		}
		again, err := pub.Publish(ctx, m, expected)
		if err != nil || again.Seq != m.Seq {
			t.Fatalf("retried Publish = seq %d, %v; want %d (stored once)", again.Seq, err, m.Seq)
		}
		if r, ok := tr.Receipt(m.ID); !ok || !r.Complete {
			t.Errorf("receipt after the retry: found %v, complete %v, pending %v; want the acks kept", ok, r.Complete, r.Pending)
		}
	})

	t.Run("retry after the caller gave up", func(t *testing.T) {
		m := msg("www.example.com", KindURL, "/b")
		gone, cancel := context.WithCancel(ctx)
		cancel() // sent, but the caller does not wait for the stream's answer
		if _, err := pub.Publish(gone, m, expected); err == nil {
			t.Fatal("Publish with an ended context = nil, want an error")
		}
		stream, err := js.Stream(ctx, StreamName(""))
		if err != nil {
			t.Fatal(err)
		}
		var seq uint64
		wait.For(t, 10*time.Second, "the purge stored", func() bool {
			info, err := stream.Info(ctx)
			seq = info.State.LastSeq
			return err == nil && seq == 2
		})
		// Not announced: the node finds it by its position check, applies and acks it.
		wait.For(t, 10*time.Second, "the node to apply the stored purge", func() bool { return n.sub.LastApplied() == seq })
		again, err := pub.Publish(ctx, m, expected)
		if err != nil || again.Seq != seq {
			t.Fatalf("retried Publish = seq %d, %v; want %d (stored once)", again.Seq, err, seq)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if r := tr.Wait(wctx, m.ID); !r.Complete {
			t.Errorf("receipt pending %v, want complete: the node applied and acked it", r.Pending)
		}
		if got := n.rec.count(); got != 2 {
			t.Errorf("node applied %d purges, want 2 (the retry is not applied again)", got)
		}
	})
}
