package purge

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestRestartedNodeAcksWhatItJoinedAfter: a node's process stops without acking a purge (it
// was stopped, or crashed with its registration still live), the purge is published, and a
// new process joins. The new process starts after the stream's end: the purge is in effect
// there (nothing older than its join is in its cache), so it acks it with one join ack, and
// a receipt waited on across the restart completes. Before, the receipt kept that node
// pending for good: the new process never saw the purge, and acked nothing it had not applied.
// A new process under another id acks nothing for the old id, whose receipt stays truthful.
func TestRestartedNodeAcksWhatItJoinedAfter(t *testing.T) {
	n1, n2, n3 := NodeRef{"lon", "n1"}, NodeRef{"lon", "n2"}, NodeRef{"lon", "n3"}
	tests := []struct {
		name             string
		stop, restart    []NodeRef
		complete         bool
		joined, stillOut []NodeRef // acked through a join ack; pending after the restart
	}{
		{name: "same id", stop: []NodeRef{n1}, restart: []NodeRef{n1}, complete: true, joined: []NodeRef{n1}},
		{name: "whole PoP down", stop: []NodeRef{n1, n2}, restart: []NodeRef{n1, n2}, complete: true, joined: []NodeRef{n1, n2}},
		{name: "new id", stop: []NodeRef{n1}, restart: []NodeRef{n3}, stillOut: []NodeRef{n1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := testContext(t)
			ctl, js := ns.Connect(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			tr := newTracker(t, ctl)
			pub := &Publisher{JS: js, Tracker: tr}
			fleet := []NodeRef{n1, n2}
			nodes := map[NodeRef]*node{}
			for _, ref := range fleet {
				nodes[ref] = startNode(t, ns, ref.PoP, ref.Node)
			}
			before, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/before"), fleet)
			if err != nil {
				t.Fatal(err)
			}
			if r := waitReceipt(t, tr, before.ID); !r.Complete {
				t.Fatalf("purge before the restart: pending %v, want complete", r.Pending)
			}
			for _, ref := range tt.stop {
				nodes[ref].stop()
			}
			m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/gap"), fleet)
			if err != nil {
				t.Fatal(err)
			}
			// Held across the restart, as ?wait is.
			waited := make(chan Receipt, 1)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			go func() { waited <- tr.Wait(wctx, m.ID) }()
			restarted := map[NodeRef]*node{}
			for _, ref := range tt.restart {
				restarted[ref] = startNode(t, ns, ref.PoP, ref.Node)
			}
			// A purge after the restart, acked by every process running: each one's join ack
			// went out on its connection before this ack, so the tracker has read it.
			running := []NodeRef{}
			for _, ref := range fleet {
				if _, ok := restarted[ref]; ok || !slices.Contains(tt.stop, ref) {
					running = append(running, ref)
				}
			}
			for _, ref := range tt.restart {
				if !slices.Contains(running, ref) {
					running = append(running, ref)
				}
			}
			after, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/after"), running)
			if err != nil {
				t.Fatal(err)
			}
			if r := waitReceipt(t, tr, after.ID); !r.Complete {
				t.Fatalf("purge after the restart: pending %v, want complete", r.Pending)
			}
			if !tt.complete {
				cancel()
			}
			r := <-waited
			if r.Complete != tt.complete {
				t.Errorf("receipt waited across the restart: complete %v pending %v, want complete %v", r.Complete, r.Pending, tt.complete)
			}
			got := acksByNode(r)
			for _, ref := range tt.joined {
				if a := got[ref]; !a.Acked || !a.Joined || a.AckedAt == nil {
					t.Errorf("%s/%s = %+v, want acked by its new process's join", ref.PoP, ref.Node, a)
				}
				applied, _, _ := restarted[ref].rec.snapshot()
				for _, a := range applied {
					if a.ID == m.ID {
						t.Errorf("%s/%s's new process applied %s, want not: it joined after it", ref.PoP, ref.Node, m.ID)
					}
				}
			}
			for _, ref := range tt.stillOut {
				if a := got[ref]; a.Acked || a.Status != NodePending {
					t.Errorf("%s/%s = %+v, want pending: no process of that id ran after the purge", ref.PoP, ref.Node, a)
				}
			}
			for _, ref := range tt.restart {
				if a, ok := got[ref]; ok && a.Unexpected {
					t.Errorf("%s/%s listed as an unexpected ack: a join ack covers only expected nodes", ref.PoP, ref.Node)
				}
			}
		})
	}
}

// waitReceipt waits up to 10 s for purge id to complete and returns its receipt.
func waitReceipt(t *testing.T, tr *Tracker, id string) Receipt {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return tr.Wait(ctx, id)
}

// acksByNode maps each node of r to its line.
func acksByNode(r Receipt) map[NodeRef]NodeAck {
	out := map[NodeRef]NodeAck{}
	for _, p := range r.PoPs {
		for _, n := range p.Nodes {
			out[NodeRef{p.PoP, n.Node}] = n
		}
	}
	return out
}

// TestTrackerJoinAckCoversBySequence: a join ack acks its node for the purges stored at or
// before its sequence, including one whose sequence the tracker learns only after the join ack
// came (its PubAck, or another node's ack, was still on its way), and no purge after it. So
// does a node's answer to the tracker's question (Asked), which does not read joined.
func TestTrackerJoinAckCoversBySequence(t *testing.T) {
	n1, n2 := NodeRef{"lon", "n1"}, NodeRef{"lon", "n2"}
	join := Ack{PoP: "lon", Node: "n1", AppliedAt: time.Now(), Through: 5}
	tests := []struct {
		name   string
		events func(tr *Tracker, id string) // after Register, expecting n1 and n2
		want   map[string]string            // statuses
		joined bool                         // n1 acked by the join
	}{
		{"stored before the join", func(tr *Tracker, id string) {
			tr.SetSeq(id, 3)
			tr.recordJoin(join)
		}, map[string]string{"lon/n1": NodeAcked, "lon/n2": NodePending}, true},
		{"at the join's sequence", func(tr *Tracker, id string) {
			tr.SetSeq(id, 5)
			tr.recordJoin(join)
		}, map[string]string{"lon/n1": NodeAcked, "lon/n2": NodePending}, true},
		{"stored after the join", func(tr *Tracker, id string) {
			tr.SetSeq(id, 6)
			tr.recordJoin(join)
		}, map[string]string{"lon/n1": NodePending, "lon/n2": NodePending}, false},
		{"sequence learnt after the join", func(tr *Tracker, id string) {
			tr.recordJoin(join)
			tr.SetSeq(id, 3)
		}, map[string]string{"lon/n1": NodeAcked, "lon/n2": NodePending}, true},
		{"sequence learnt after the join, above it", func(tr *Tracker, id string) {
			tr.recordJoin(join)
			tr.SetSeq(id, 6)
		}, map[string]string{"lon/n1": NodePending, "lon/n2": NodePending}, false},
		{"sequence learnt from another node's ack", func(tr *Tracker, id string) {
			tr.recordJoin(join)
			tr.record(Ack{ID: id, Seq: 4, PoP: "lon", Node: "n2", AppliedAt: time.Now()})
		}, map[string]string{"lon/n1": NodeAcked, "lon/n2": NodeAcked}, true},
		{"another node's join", func(tr *Tracker, id string) {
			tr.SetSeq(id, 3)
			tr.recordJoin(Ack{PoP: "lon", Node: "n3", AppliedAt: time.Now(), Through: 5})
		}, map[string]string{"lon/n1": NodePending, "lon/n2": NodePending}, false},
		{"a node's answer through it", func(tr *Tracker, id string) {
			tr.SetSeq(id, 3)
			tr.recordJoin(Ack{PoP: "lon", Node: "n1", AppliedAt: time.Now(), Through: 3, Asked: true})
		}, map[string]string{"lon/n1": NodeAcked, "lon/n2": NodePending}, false},
		{"a node's answer through the purge before", func(tr *Tracker, id string) {
			tr.SetSeq(id, 3)
			tr.recordJoin(Ack{PoP: "lon", Node: "n1", AppliedAt: time.Now(), Through: 2, Asked: true})
		}, map[string]string{"lon/n1": NodePending, "lon/n2": NodePending}, false},
		{"acked before the join", func(tr *Tracker, id string) {
			tr.record(Ack{ID: id, Seq: 3, PoP: "lon", Node: "n1", AppliedAt: time.Now(), Hits: 2})
			tr.recordJoin(join)
		}, map[string]string{"lon/n1": NodeAcked, "lon/n2": NodePending}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := offlineTracker()
			id := NewID()
			tr.Register(Message{ID: id, Host: "www.example.com", Kind: KindKey, IssuedAt: time.Now()}, []NodeRef{n1, n2})
			tt.events(tr, id)
			r, _ := tr.Receipt(id)
			if got := statuses(r); !maps.Equal(got, tt.want) {
				t.Errorf("statuses = %v, want %v", got, tt.want)
			}
			if got := acksByNode(r)[n1].Joined; got != tt.joined {
				t.Errorf("lon/n1 joined = %v, want %v", got, tt.joined)
			}
			if r.Complete != (len(r.Pending) == 0) {
				t.Errorf("complete = %v with pending %v", r.Complete, r.Pending)
			}
		})
	}
}

// TestJoinAckOnlyAfterOnJoin: the join ack says the purges up to the join are in effect on
// the node, so it goes out only once OnJoin (the edge marking what it stored stale) returned,
// and the subscriber is not ready before either.
func TestJoinAckOnlyAfterOnJoin(t *testing.T) {
	ns := natstest.Start(t)
	ctl, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	seqs := publishN(t, ctx, js, 2)
	acks := listenAcks(t, ctl)
	nc, njs := natstest.ConnectURL(t, ns.URL(), ns.Options(natsauth.Edge("ams", "n1"))...)
	entered := make(chan uint64, 1)
	release := make(chan struct{})
	s, err := NewSubscriber(SubscriberConfig{JS: njs, PoP: "ams", Node: "n1",
		Apply: (&recorder{}).apply, OnGap: func(context.Context, uint64, uint64) {},
		OnJoin: func(ctx context.Context, seq uint64) {
			entered <- seq
			select {
			case <-release:
			case <-ctx.Done():
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case seq := <-entered:
		if seq != seqs[1] {
			t.Errorf("OnJoin(%d), want the stream's last sequence %d", seq, seqs[1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnJoin not called within 10s")
	}
	// Round trips on both connections: a join ack sent before OnJoin returned would be here.
	for _, c := range []*nats.Conn{nc, ctl} {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if got := acks.joinAcks(); len(got) != 0 {
		t.Fatalf("join acks while OnJoin is held = %+v, want none", got)
	}
	select {
	case <-s.Ready():
		t.Fatal("subscriber ready while OnJoin is held")
	default:
	}
	close(release)
	wait.For(t, 10*time.Second, "the join ack", func() bool { return len(acks.joinAcks()) == 1 })
	if a := acks.joinAcks()[0]; a.Through != seqs[1] || a.PoP != "ams" || a.Node != "n1" || a.AppliedAt.IsZero() {
		t.Errorf("join ack = %+v, want ams/n1 through %d with a time", a, seqs[1])
	}
}
