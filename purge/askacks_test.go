package purge

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestAckLostOnControlsConnectionIsAskedFor: a node applies a purge and acks it while
// control's own connection is cut, so the server has no one to hand the ack to; the node's
// connection was whole and its stream answers confirm the ack, so it never sends it again.
// Control asks the pending nodes for their position when its connection is back (and every
// AskEvery), and the node's answer acks the purge. Before, the receipt kept the node pending
// for good, though it applied the purge.
func TestAckLostOnControlsConnectionIsAskedFor(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	pubConn, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	seen := listenAcks(t, pubConn) // on a connection that stays: the ack reached the server
	cut := natstest.NewCutter(t, "127.0.0.1", ns.URL())
	trConn, _ := natstest.ConnectURL(t, cut.URL(), append(ns.Options(natsauth.Control()),
		nats.ReconnectWait(20*time.Millisecond))...)
	tr := newTracker(t, trConn, WithAskEvery(time.Hour)) // only the reconnect asks here
	tctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tr.Run(tctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	startNode(t, ns, "lon", "n1", func(c *SubscriberConfig) {
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			entered <- struct{}{}
			return held(ctx, release, 1)
		}
	})
	pub := &Publisher{JS: js, Tracker: tr}
	first, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/first"), []NodeRef{{"lon", "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	release <- struct{}{}
	if r := waitReceipt(t, tr, first.ID); !r.Complete {
		t.Fatalf("first purge: pending %v, want complete", r.Pending)
	}
	m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/lost"), []NodeRef{{"lon", "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	cut.Cut()
	wait.For(t, 5*time.Second, "control's connection gone", func() bool { return !trConn.IsConnected() })
	close(release)
	wait.For(t, 10*time.Second, "the ack at the server", func() bool { return ackIDs(seen)["lon/n1/"+m.ID] })
	cut.Restore()
	r := waitReceipt(t, tr, m.ID)
	if !r.Complete {
		t.Fatalf("receipt after control reconnected: pending %v, want complete", r.Pending)
	}
	if a := acksByNode(r)[NodeRef{"lon", "n1"}]; !a.Acked || a.Joined {
		t.Errorf("lon/n1 = %+v, want acked (not joined: this process applied it)", a)
	}
}

// TestAskNamesNodes: a node answers the tracker's question only when a line names it whole.
func TestAskNamesNodes(t *testing.T) {
	q := appendAsk(nil, []NodeRef{{"ams", "n1"}, {"lon", "n10"}})
	names, ok := bytes.CutPrefix(q, []byte(askPrefix))
	if !ok {
		t.Fatalf("question %q does not start with %q", q, askPrefix)
	}
	tests := []struct {
		pop, node string
		want      bool
	}{
		{"ams", "n1", true},
		{"lon", "n10", true},
		{"lon", "n1", false},
		{"am", "s.n1", false},
		{"ams", "n", false},
		{"fra", "n1", false},
	}
	for _, tt := range tests {
		if got := asks(names, tt.pop, tt.node); got != tt.want {
			t.Errorf("asks(%q, %s, %s) = %v, want %v", names, tt.pop, tt.node, got, tt.want)
		}
	}
	if _, _, err := splitLive(q); err == nil {
		t.Errorf("splitLive(%q) read a question as an announcement", q)
	}
}
