package purge

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestAckLostInCutIsSentAgain: a node that applies a purge while its connection is cut, and
// whose ack is lost (here the publish fails: no reconnect buffer; under the simulator, the
// ack was on the wire when the link was cut), sends the ack again once it is back. Before, the
// purge stayed unacked by that node for good, though it was applied (make sim's
// purge_acked_by_every_live_pop failed when a purge storm ran into a cut-nats).
func TestAckLostInCutIsSentAgain(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	ctl, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, ctl)

	cut := natstest.NewCutter(t, "127.0.0.1", ns.URL())
	nc, njs := natstest.ConnectURL(t, cut.URL(), append(ns.Options(natsauth.Edge("lon", "n1")),
		nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))...)
	s, started, release, stop := runHeldSubscriber(t, njs, 0)
	defer stop()

	m := msg("www.example.com", KindURL, "/cut")
	if _, err := Publish(ctx, js, "", m); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the node never started applying the purge")
	}
	cut.Cut()
	wait.For(t, 5*time.Second, "the node to see its connection gone", func() bool { return !nc.IsConnected() })
	close(release) // the purge is applied while the node is cut off; its ack cannot go out
	wait.For(t, 5*time.Second, "the purge applied", func() bool { return s.LastApplied() == 1 })
	cut.Restore()
	wait.For(t, 10*time.Second, "the node's ack after it reconnected", func() bool {
		for _, a := range acks.snapshot() {
			if a.ID == m.ID && a.PoP == "lon" && a.Node == "n1" {
				return true
			}
		}
		return false
	})
}

// TestConfirmedAcksAreReleased: acks the server is known to have read (the stream answered a
// question sent after them on the same connection) are not kept for sending again, so what a
// node keeps is bounded by what it sent since the last confirmation.
func TestConfirmedAcksAreReleased(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	ctl, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, ctl)
	n := startNode(t, ns, "lon", "n1", func(c *SubscriberConfig) { c.ConfirmEvery = 20 * time.Millisecond })
	<-n.sub.Ready()
	const first = 100
	for i := range first {
		if _, err := Publish(ctx, js, "", msg("www.example.com", KindURL, fmt.Sprintf("/p/%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Acks may come twice: a node sends the unconfirmed ones again when the stream answers
	// after a question that failed (timed out under load, say).
	distinct := func() int {
		ids := map[string]bool{}
		for _, a := range acks.snapshot() {
			ids[a.ID] = true
		}
		return len(ids)
	}
	wait.For(t, 10*time.Second, "the first acks", func() bool { return distinct() == first })
	// A node lets go of confirmed acks when it sends the next: one more purge after a
	// confirmation asked for now leaves it keeping that purge's ack alone. Under load a
	// question may fail, after which the next answer confirms nothing: then once more.
	for round := 0; ; round++ {
		after := time.Now()
		wait.For(t, 10*time.Second, "a confirmation asked for after the acks", func() bool { return n.sub.CaughtUpAt().After(after) })
		if _, err := Publish(ctx, js, "", msg("www.example.com", KindURL, fmt.Sprintf("/last/%d", round))); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 10*time.Second, "the last ack", func() bool { return distinct() == first+round+1 })
		if kept := n.sub.UnconfirmedAcks(); kept <= 1 { // 1, or 0 if read before its count
			break
		} else if round == 4 {
			t.Fatalf("the node keeps %d acks for sending again after %d confirmed rounds, want 1 (the last)", kept, round+1)
		}
	}
}
