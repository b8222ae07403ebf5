package purge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync/atomic"
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

// TestAskedAnswerLeavesUndecodablePurgePending: a purge in the stream that the node cannot
// decode (a newer control's kind, say) is a gap there: the node marks what it stored stale
// and moves past it, having applied nothing. Its answer to the tracker's question runs
// through the last sequence it reached, past that purge, but must not ack it: the receipt
// keeps the node pending for it, as before the question existed. Before, the answer acked
// every purge at or below its sequence, the skipped one too.
func TestAskedAnswerLeavesUndecodablePurgePending(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	nc, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	seen := listenAcks(t, nc)
	tr := newTracker(t, nc, WithAskEvery(20*time.Millisecond))
	tctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tr.Run(tctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	n := startNode(t, ns, "lon", "n1")
	<-n.sub.Ready()
	n1 := NodeRef{"lon", "n1"}

	bad := msg("www.example.com", KindURL, "/bad")
	tr.Register(bad, []NodeRef{n1})
	stored, err := js.Publish(ctx, CommandSubject("", bad.Host), []byte(`{"id":"`+bad.ID+`","kind":"regex"}`))
	if err != nil {
		t.Fatal(err)
	}
	tr.SetSeq(bad.ID, stored.Sequence)
	pub := &Publisher{JS: js, Tracker: tr}
	good, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/good"), []NodeRef{n1})
	if err != nil {
		t.Fatal(err)
	}
	if r := waitReceipt(t, tr, good.ID); !r.Complete {
		t.Fatalf("the purge after the undecodable one: pending %v, want complete", r.Pending)
	}
	if _, gaps, _ := n.rec.snapshot(); len(gaps) != 1 {
		t.Fatalf("OnGap calls = %v, want one for the undecodable purge", gaps)
	}
	wait.For(t, 10*time.Second, "the node's answer to the question, past the undecodable purge", func() bool {
		for _, a := range seen.joinAcks() {
			if a.Asked && a.Through >= stored.Sequence {
				return true
			}
		}
		return false
	})
	// The node's ack of a later purge comes after its answer on its ack subject: once the
	// tracker has it, it has read the answer.
	later, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/later"), []NodeRef{n1})
	if err != nil {
		t.Fatal(err)
	}
	if r := waitReceipt(t, tr, later.ID); !r.Complete {
		t.Fatalf("the later purge: pending %v, want complete", r.Pending)
	}
	r, _ := tr.Receipt(bad.ID)
	if a := acksByNode(r)[n1]; a.Acked || r.Complete {
		t.Errorf("undecodable purge: lon/n1 = %+v (complete %v), want pending: the node never applied it", a, r.Complete)
	}
}

// TestAskedAnswersNotKept: answers to the tracker's question cover the receipts they reach at
// once and are not kept for purges whose sequence comes later (those are asked about then).
// Kept, a fleet's nodes pending for good answered every round, and every answer copied the
// last minute's: quadratic in the nodes (500 such nodes over 10,000 receipts cost 15 s of CPU
// and 7 GB of allocations a minute, against 5 s and under 0.5 GB now). A join ack is kept.
func TestAskedAnswersNotKept(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr := newTracker(t, nc)
	var nodes []NodeRef
	for i := range 50 {
		nodes = append(nodes, NodeRef{"lon", fmt.Sprint("n", i)})
	}
	m := msg("www.example.com", KindURL, "/x")
	tr.Register(m, nodes)
	tr.SetSeq(m.ID, 7)
	for _, n := range nodes {
		tr.recordJoin(Ack{PoP: n.PoP, Node: n.Node, Through: 7, Asked: true, AppliedAt: time.Now()})
	}
	if r, _ := tr.Receipt(m.ID); !r.Complete {
		t.Errorf("receipt after every node answered through its sequence: pending %v, want complete", r.Pending)
	}
	if j := tr.joins.Load(); j != nil && len(*j) != 0 {
		t.Errorf("%d answers kept, want none", len(*j))
	}
	tr.recordJoin(Ack{PoP: "lon", Node: "n0", Through: 9, AppliedAt: time.Now()})
	if j := tr.joins.Load(); j == nil || len(*j) != 1 {
		kept := 0
		if j != nil {
			kept = len(*j)
		}
		t.Errorf("%d acks kept after a join ack, want the one join", kept)
	}
}

// TestEdgeCannotForgeJoinOrAnswer: with a real edge credential, fra/n1 may neither ack for
// fra/n2 with a join ack or an answer on its own ack subject (the tracker drops an ack whose
// body names another node than its subject, the Through kinds too), nor ask the nodes
// itself: the live subject, where the question goes, is control's alone.
func TestEdgeCannotForgeJoinOrAnswer(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr := newTracker(t, nc)
	n1, n2 := NodeRef{"fra", "n1"}, NodeRef{"fra", "n2"}
	m := msg("a.example", KindAll)
	tr.Register(m, []NodeRef{n1, n2})
	tr.SetSeq(m.ID, 1)
	refused := natstest.NewViolations()
	edge, _ := natstest.ConnectURL(t, ns.URL(), append(ns.Options(natsauth.Edge("fra", "n1")), refused.Option())...)
	live := LiveSubject("")
	if err := edge.Publish(live, appendAsk(nil, []NodeRef{n2})); err != nil {
		t.Fatal(err)
	}
	refused.Wait(t, "publish", live)
	for _, forged := range []Ack{
		{PoP: "fra", Node: "n2", Through: 5, AppliedAt: time.Now()},
		{PoP: "fra", Node: "n2", Through: 5, Asked: true, AppliedAt: time.Now()},
	} {
		data, _ := json.Marshal(forged)
		if err := edge.Publish(AckSubject("", "fra", "n1"), data); err != nil {
			t.Fatal(err)
		}
	}
	// Acks on one connection reach the tracker in order: once n1's own is in, so are those.
	real, _ := json.Marshal(Ack{ID: m.ID, Seq: 1, PoP: "fra", Node: "n1", AppliedAt: time.Now()})
	if err := edge.Publish(AckSubject("", "fra", "n1"), real); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "fra/n1's own ack", func() bool { return acksByNode(mustReceipt(t, tr, m.ID))[n1].Acked })
	if r := mustReceipt(t, tr, m.ID); r.Complete || acksByNode(r)[n2].Acked {
		t.Errorf("after fra/n1 forged a join ack and an answer for fra/n2: complete %v, fra/n2 %+v; want it pending", r.Complete, acksByNode(r)[n2])
	}
	if got := tr.Dropped(); got != 2 {
		t.Errorf("Dropped() = %d, want the 2 forged acks", got)
	}
}

func mustReceipt(t *testing.T, tr *Tracker, id string) Receipt {
	t.Helper()
	r, ok := tr.Receipt(id)
	if !ok {
		t.Fatalf("no receipt for %s", id)
	}
	return r
}

// TestAskedAnswerAfterRecreatedStream: a stream deleted and created again starts its
// sequences over, and the node reports a gap (its copies are only made stale). A purge of the
// old stream the node never applied (it was cut off, or could not decode it) stays pending in
// its receipt under its old sequence; the node's answers to the tracker's question count the
// new stream's sequences and must not ack it once they pass that number. Before, the gap of the
// recreation set After to the new stream's first sequence less one (0), lower than every
// purge the node lost with the old stream, and the answer acked the lost purge.
func TestAskedAnswerAfterRecreatedStream(t *testing.T) {
	for _, tt := range []struct {
		name string
		cut  bool // the node is cut off while the lost purge is published, else it is undecodable
	}{
		{name: "cut off", cut: true},
		{name: "undecodable", cut: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := testContext(t)
			nc, js := ns.Connect(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			var questions atomic.Int64 // naming lon.n1, seen on the live subject
			qsub, err := nc.Subscribe(LiveSubject(""), func(m *nats.Msg) {
				if names, ok := bytes.CutPrefix(m.Data, []byte(askPrefix)); ok && asks(names, "lon", "n1") {
					questions.Add(1)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = qsub.Unsubscribe() })
			tr := newTracker(t, nc, WithAskEvery(20*time.Millisecond))
			tctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = tr.Run(tctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
			n := startNode(t, ns, "lon", "n1", func(c *SubscriberConfig) { c.ConfirmEvery = 50 * time.Millisecond })
			<-n.sub.Ready()
			n1 := []NodeRef{{"lon", "n1"}}
			pub := &Publisher{JS: js, Tracker: tr}
			for i := range 2 {
				m, err := pub.Publish(ctx, msg("www.example.com", KindURL, fmt.Sprintf("/old/%d", i)), n1)
				if err != nil {
					t.Fatal(err)
				}
				if r := waitReceipt(t, tr, m.ID); !r.Complete {
					t.Fatalf("old purge %d: pending %v, want complete", i, r.Pending)
				}
			}
			lost := msg("www.example.com", KindURL, "/lost")
			if tt.cut {
				n.cut.Cut()
				wait.For(t, 10*time.Second, "disconnected", func() bool { return !n.nc.IsConnected() })
				if _, err := pub.Publish(ctx, lost, n1); err != nil {
					t.Fatal(err)
				}
			} else {
				tr.Register(lost, n1)
				stored, err := js.Publish(ctx, CommandSubject("", lost.Host), []byte(`{"id":"`+lost.ID+`","kind":"regex"}`))
				if err != nil {
					t.Fatal(err)
				}
				tr.SetSeq(lost.ID, stored.Sequence)
				wait.For(t, 10*time.Second, "the gap at the undecodable purge", func() bool {
					_, gaps, _ := n.rec.snapshot()
					return len(gaps) == 1
				})
			}
			r, _ := tr.Receipt(lost.ID)
			if r.Seq != 3 {
				t.Fatalf("lost purge at %d, want 3", r.Seq)
			}
			if err := js.DeleteStream(ctx, StreamName("")); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "the stream created again", func() bool {
				return EnsureStream(ctx, js, "", 0, 1) == nil
			})
			if tt.cut {
				n.cut.Restore()
			}
			// The new stream's purges, past the lost one's sequence: each applied and acked.
			for i := range 4 {
				m, err := pub.Publish(ctx, msg("www.example.com", KindURL, fmt.Sprintf("/new/%d", i)), n1)
				if err != nil {
					t.Fatal(err)
				}
				if r := waitReceipt(t, tr, m.ID); !r.Complete {
					t.Fatalf("new purge %d: pending %v, want complete", i, r.Pending)
				}
			}
			// Two questions asked since (the node has had the first before the purge below), or
			// the lost purge acked by an answer.
			asked := questions.Load()
			wait.For(t, 10*time.Second, "two questions, or an answer acking the lost purge", func() bool {
				r, _ := tr.Receipt(lost.ID)
				return questions.Load() >= asked+2 || acksByNode(r)[n1[0]].Acked
			})
			later, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/later"), n1)
			if err != nil {
				t.Fatal(err)
			}
			if r := waitReceipt(t, tr, later.ID); !r.Complete {
				t.Fatalf("the later purge: pending %v, want complete", r.Pending)
			}
			applied, _, _ := n.rec.snapshot()
			for _, m := range applied {
				if m.ID == lost.ID {
					t.Fatalf("the lost purge was applied at %d: the test lost nothing", m.Seq)
				}
			}
			r, _ = tr.Receipt(lost.ID)
			if a := acksByNode(r)[n1[0]]; a.Acked || r.Complete {
				t.Errorf("purge lost with the old stream: lon/n1 = %+v (complete %v), want pending: the node never applied it", a, r.Complete)
			}
		})
	}
}

// TestPendingIndexCoversWhatAScanDoes: a join ack or an answer finds the receipts it can
// affect through the index askPending built (pendingIndex), not by scanning every receipt. It
// must ack exactly what the scan did: receipts indexed with their sequence, receipts whose
// sequence came after the index, receipts registered after it, a node declared gone since,
// a receipt complete because its node was declared gone before (a join acks it then), and,
// with a receipt's sequence changed since (registered and published again), without
// the index. Each case runs on two trackers, one that built the index and one that never did.
func TestPendingIndexCoversWhatAScanDoes(t *testing.T) {
	a, b, c := NodeRef{"lon", "a"}, NodeRef{"lon", "b"}, NodeRef{"par", "c"}
	for _, tt := range []struct {
		name      string
		changeSeq bool
	}{
		{name: "index used"},
		{name: "sequence changed since the index", changeSeq: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			nc, _ := ns.Connect(t)
			var got [2]map[string]map[NodeRef]NodeAck
			for i, indexed := range []bool{false, true} {
				// c is out of the registry, so it can be declared gone.
				tr := newTracker(t, nc, WithRegistry(func() []NodeRef { return []NodeRef{a, b} }))
				ms := map[string]Message{}
				reg := func(name string, seq uint64, nodes ...NodeRef) {
					m, ok := ms[name]
					if !ok {
						m = msg("www.example.com", KindURL, "/"+name)
						ms[name] = m
					}
					tr.Register(m, nodes)
					if seq != 0 {
						tr.SetSeq(m.ID, seq)
					}
				}
				reg("p1", 5, a, b)
				reg("p2", 0, a, b) // its sequence comes after the index
				reg("p3", 7, a, c)
				reg("p4", 9, a)
				reg("p6", 4, c) // complete before the index: c declared gone
				if _, err := tr.DeclareGone(ms["p6"].ID, c); err != nil {
					t.Fatal(err)
				}
				tr.record(Ack{ID: ms["p1"].ID, Seq: 5, PoP: b.PoP, Node: b.Node, AppliedAt: time.Now()})
				if indexed {
					tr.askPending(0)
				}
				tr.SetSeq(ms["p2"].ID, 6)
				reg("p5", 8, a, b) // after the index
				if tt.changeSeq {
					reg("p4", 3, a)
				}
				if _, err := tr.DeclareGone(ms["p3"].ID, c); err != nil {
					t.Fatal(err)
				}
				for _, j := range []Ack{
					{PoP: a.PoP, Node: a.Node, Through: 8, After: 5, Asked: true},
					{PoP: b.PoP, Node: b.Node, Through: 6, Asked: true},
					{PoP: c.PoP, Node: c.Node, Through: 7},
				} {
					j.AppliedAt = time.Now()
					tr.recordJoin(j)
				}
				if indexed {
					tr.mu.RLock()
					used := tr.pending != nil && tr.pending.seqChanges == tr.seqChanges.Load()
					tr.mu.RUnlock()
					if used == tt.changeSeq {
						t.Errorf("index used = %v, want %v", used, !tt.changeSeq)
					}
				}
				got[i] = map[string]map[NodeRef]NodeAck{}
				for name, m := range ms {
					acks := acksByNode(mustReceipt(t, tr, m.ID))
					for ref, n := range acks {
						acks[ref] = NodeAck{Status: n.Status, Joined: n.Joined}
					}
					got[i][name] = acks
				}
			}
			if !reflect.DeepEqual(got[0], got[1]) {
				t.Errorf("receipts without the index %v, with it %v", got[0], got[1])
			}
			// And what that is: a's answer covers (5, 8], b's up to 6, c's join p3.
			if n := got[1]["p2"][a]; n.Status != NodeAcked {
				t.Errorf("p2's a = %+v, want acked by its answer (sequence learnt after the index)", n)
			}
			if n := got[1]["p5"][a]; n.Status != NodeAcked {
				t.Errorf("p5's a = %+v, want acked by its answer (registered after the index)", n)
			}
			if n := got[1]["p3"][c]; n.Status != NodeAcked || !n.Joined {
				t.Errorf("p3's c = %+v, want acked by its join (declared gone before)", n)
			}
			if n := got[1]["p6"][c]; n.Status != NodeAcked || !n.Joined {
				t.Errorf("p6's c = %+v, want acked by its join (declared gone before the index)", n)
			}
			if n := got[1]["p1"][a]; n.Status != NodePending {
				t.Errorf("p1's a = %+v, want pending (at or below the answer's After)", n)
			}
		})
	}
}

// TestPendingIndexFollowsReceiptsThatChange: what TestPendingIndexCoversWhatAScanDoes checks,
// over a longer run with the index built twice: receipts evicted (maxPurges) and forgotten and
// registered again under their id (a new receipt where the index has the old one), a
// retried registration, a sequence learnt from another node's ack, nodes declared gone, and
// the index rebuilt between the answers of one round. After each step the tracker that built
// the index shows exactly the receipts of one that never did.
func TestPendingIndexFollowsReceiptsThatChange(t *testing.T) {
	a, b, c := NodeRef{"lon", "a"}, NodeRef{"lon", "b"}, NodeRef{"par", "c"}
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	type tracked struct {
		tr *Tracker
		ms map[string]Message
	}
	var trs [2]tracked // [0] never indexes, [1] does
	for i := range trs {
		// c is out of the registry, so it can be declared gone.
		trs[i] = tracked{tr: newTracker(t, nc, WithMaxPurges(7), WithRegistry(func() []NodeRef { return []NodeRef{a, b} })),
			ms: map[string]Message{}}
	}
	reg := func(x tracked, name string, seq uint64, nodes ...NodeRef) {
		m, ok := x.ms[name]
		if !ok {
			m = msg("www.example.com", KindURL, "/"+name)
			x.ms[name] = m
		}
		x.tr.Register(m, nodes)
		if seq != 0 {
			x.tr.SetSeq(m.ID, seq)
		}
	}
	gone := func(x tracked, name string, ref NodeRef) {
		if _, err := x.tr.DeclareGone(x.ms[name].ID, ref); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(x tracked, ref NodeRef, after, through uint64, asked bool) {
		x.tr.recordJoin(Ack{PoP: ref.PoP, Node: ref.Node, Through: through, After: after, Asked: asked, AppliedAt: time.Now()})
	}
	index := func(x tracked, indexed bool) {
		if indexed {
			x.tr.askPending(0)
		}
	}
	steps := []struct {
		name string
		do   func(x tracked, indexed bool)
	}{
		{"receipts before the index", func(x tracked, indexed bool) {
			reg(x, "p1", 5, a, b)
			reg(x, "p2", 0, a, b)
			reg(x, "p3", 7, a, c)
			reg(x, "p4", 9, a)
			reg(x, "p6", 4, c)
			gone(x, "p6", c)
			reg(x, "p7", 0, a, b)
			index(x, indexed)
		}},
		{"evicted, sequences learnt, forgotten and registered again", func(x tracked, _ bool) {
			reg(x, "p8", 13, a)
			reg(x, "p9", 14, b) // the eighth: p1 is evicted, indexed
			x.tr.record(Ack{ID: x.ms["p7"].ID, Seq: 10, PoP: b.PoP, Node: b.Node, AppliedAt: time.Now()})
			x.tr.SetSeq(x.ms["p2"].ID, 6)
			reg(x, "p4", 9, a) // a retried publish
			x.tr.Forget(x.ms["p6"].ID)
			reg(x, "p6", 11, c, a) // a new receipt under the id the index has
			gone(x, "p3", c)
		}},
		{"a's answer", func(x tracked, _ bool) { answer(x, a, 5, 8, true) }},
		{"index rebuilt mid-round", func(x tracked, indexed bool) { index(x, indexed) }},
		{"b's answer, c's join", func(x tracked, _ bool) {
			answer(x, b, 0, 6, true)
			answer(x, c, 0, 11, false)
		}},
		{"after the rebuild", func(x tracked, _ bool) {
			reg(x, "p10", 12, a) // p2 is evicted, indexed again
			answer(x, a, 8, 13, true)
			answer(x, b, 6, 14, true)
		}},
	}
	state := func(x tracked) map[string]map[NodeRef]NodeAck {
		out := map[string]map[NodeRef]NodeAck{}
		for name, m := range x.ms {
			r, ok := x.tr.Receipt(m.ID)
			if !ok {
				continue // evicted
			}
			acks := acksByNode(r)
			for ref, n := range acks {
				acks[ref] = NodeAck{Status: n.Status, Joined: n.Joined}
			}
			out[name] = acks
		}
		return out
	}
	for _, st := range steps {
		for i, x := range trs {
			st.do(x, i == 1)
		}
		if got, want := state(trs[1]), state(trs[0]); !reflect.DeepEqual(got, want) {
			t.Fatalf("after %s: receipts with the index %v, scanning %v", st.name, got, want)
		}
	}
	trs[1].tr.mu.RLock()
	used := trs[1].tr.pending != nil && trs[1].tr.pending.seqChanges == trs[1].tr.seqChanges.Load()
	trs[1].tr.mu.RUnlock()
	if !used {
		t.Errorf("the indexed tracker scanned every receipt: the index was not used")
	}
	final := state(trs[1])
	for _, w := range []struct {
		name string
		ref  NodeRef
	}{
		{"p7", a}, {"p3", c}, {"p6", c}, {"p6", a}, {"p10", a}, {"p8", a}, {"p9", b}, {"p4", a},
	} {
		if n := final[w.name][w.ref]; n.Status != NodeAcked {
			t.Errorf("%s's %s/%s = %+v, want acked", w.name, w.ref.PoP, w.ref.Node, n)
		}
	}
	for _, name := range []string{"p1", "p2"} {
		if _, ok := final[name]; ok {
			t.Errorf("%s still has a receipt, want it evicted (the test's eviction did not happen)", name)
		}
	}
}
