package purge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/clocktest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

func newTracker(t *testing.T, nc *nats.Conn, opts ...TrackerOption) *Tracker {
	t.Helper()
	tr, err := NewTracker(nc, "", opts...)
	if err != nil {
		t.Fatalf("NewTracker: %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Tracker.Close() = %v", err)
		}
	})
	return tr
}

func nodeNames(r Receipt) []NodeRef {
	var out []NodeRef
	for _, p := range r.PoPs {
		for _, n := range p.Nodes {
			out = append(out, NodeRef{PoP: p.PoP, Node: n.Node})
		}
	}
	return out
}

func TestTrackerEndToEnd(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	nc, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, nc)
	live := []NodeRef{{"ams", "n1"}, {"ams", "n2"}, {"fra", "n1"}}
	for _, n := range live {
		startNode(t, ns, n.PoP, n.Node)
	}
	pub := &Publisher{JS: js, Tracker: tr}

	t.Run("every expected node acks", func(t *testing.T) {
		m, err := pub.Publish(ctx, msg("www.example.com", KindKey, "k1", "k2"), live)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r := tr.Wait(wctx, m.ID)
		if !r.Complete || r.CompletedAt == nil || len(r.Pending) != 0 {
			t.Fatalf("Wait() = complete %v, pending %v; want complete with none pending", r.Complete, r.Pending)
		}
		if got := nodeNames(r); !slices.Equal(got, live) {
			t.Errorf("receipt nodes = %v, want %v", got, live)
		}
		// Done and Completion say the same as the receipt, without building one.
		if _, ok := tr.Done("unknown"); ok {
			t.Error("Done(unknown id) ok, want false")
		}
		done, ok := tr.Done(m.ID)
		select {
		case <-done:
		default:
			t.Errorf("Done(%s) = open channel (ok %v) after completion", m.ID, ok)
		}
		if at, took, ok := tr.Completion(m.ID); !ok || !at.Equal(*r.CompletedAt) || took != r.CompletedAt.Sub(r.IssuedAt) {
			t.Errorf("Completion() = %v, %v, %v; want %v, %v", at, took, ok, *r.CompletedAt, r.CompletedAt.Sub(r.IssuedAt))
		}
		if r.Seq != m.Seq || r.Host != "www.example.com" || r.Kind != KindKey {
			t.Errorf("receipt = seq %d host %q kind %q; want seq %d host www.example.com kind key", r.Seq, r.Host, r.Kind, m.Seq)
		}
		for _, p := range r.PoPs {
			if !p.Complete || p.AckedAt == nil {
				t.Errorf("PoP %s complete %v acked_at %v, want complete with a time", p.PoP, p.Complete, p.AckedAt)
			}
			for _, n := range p.Nodes {
				if !n.Acked || n.AckedAt == nil || n.Hits != 2 || n.LatencyMs <= 0 {
					t.Errorf("node %s/%s = %+v, want acked with 2 hits and a latency", p.PoP, n.Node, n)
				}
			}
		}
		if r.DurationMs <= 0 {
			t.Errorf("DurationMs = %v, want > 0", r.DurationMs)
		}
	})

	t.Run("a silent node stays pending", func(t *testing.T) {
		expected := append(slices.Clone(live), NodeRef{"lhr", "gone"})
		m, err := pub.Publish(ctx, msg("www.example.com", KindAll), expected)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		// Wait until the live nodes acked, then let Wait time out on the silent one.
		wait.For(t, 10*time.Second, "3 acks", func() bool {
			r, _ := tr.Receipt(m.ID)
			return len(r.Pending) == 1
		})
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		r := tr.Wait(wctx, m.ID)
		if r.Complete || r.CompletedAt != nil {
			t.Errorf("Wait() complete = %v, want false", r.Complete)
		}
		if want := []NodeRef{{"lhr", "gone"}}; !slices.Equal(r.Pending, want) {
			t.Errorf("Pending = %v, want %v", r.Pending, want)
		}
		if got := nodeNames(r); !slices.Equal(got, []NodeRef{{"ams", "n1"}, {"ams", "n2"}, {"fra", "n1"}, {"lhr", "gone"}}) {
			t.Errorf("receipt nodes = %v, want all four, the silent one included", got)
		}
		if p := r.PoPs[2]; p.PoP != "lhr" || p.Complete || p.Nodes[0].Acked {
			t.Errorf("PoP lhr = %+v, want incomplete with an unacked node", p)
		}
	})

	t.Run("an unexpected node is shown", func(t *testing.T) {
		m, err := pub.Publish(ctx, msg("www.example.com", KindAll), live[:2])
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		// Every node acks, the unexpected one in any order with the two expected.
		wait.For(t, 10*time.Second, "all three acks", func() bool {
			r, _ := tr.Receipt(m.ID)
			acked := 0
			for _, p := range r.PoPs {
				for _, n := range p.Nodes {
					if n.Acked {
						acked++
					}
				}
			}
			return acked == 3
		})
		r, _ := tr.Receipt(m.ID)
		if !r.Complete {
			t.Errorf("Complete = false, want true (both expected nodes acked)")
		}
		if n := r.PoPs[1].Nodes[0]; r.PoPs[1].PoP != "fra" || !n.Unexpected || !n.Acked {
			t.Errorf("fra node = %+v, want acked and marked unexpected", n)
		}
	})
}

func TestTrackerReceipts(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tr := newTracker(t, nc, WithClock(clock.Now), WithMaxPurges(3), WithRetention(time.Hour))
	issued := clock.Now()
	m := Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: issued}

	t.Run("no expected nodes is complete at once", func(t *testing.T) {
		tr.Register(Message{ID: "p0", Host: "a.example", Kind: KindAll, IssuedAt: issued}, nil)
		r := tr.Wait(context.Background(), "p0")
		if !r.Complete {
			t.Errorf("Wait(p0) complete = false, want true")
		}
	})

	t.Run("latencies from the tracker clock", func(t *testing.T) {
		tr.Register(m, []NodeRef{{"ams", "n1"}, {"ams", "n2"}})
		clock.Advance(3 * time.Millisecond)
		tr.record(Ack{ID: "p1", Seq: 9, PoP: "ams", Node: "n1", Hits: 4})
		tr.record(Ack{ID: "p1", Seq: 9, PoP: "ams", Node: "n1", Hits: 5}) // duplicate: ignored
		r, ok := tr.Receipt("p1")
		if !ok || r.Complete || len(r.Pending) != 1 {
			t.Fatalf("Receipt(p1) = ok %v complete %v pending %v; want one pending", ok, r.Complete, r.Pending)
		}
		clock.Advance(2 * time.Millisecond)
		tr.record(Ack{ID: "p1", Seq: 9, PoP: "ams", Node: "n2", Hits: 1})
		r = tr.Wait(context.Background(), "p1")
		if !r.Complete || r.DurationMs != 5 || r.Seq != 9 {
			t.Errorf("receipt complete %v duration %v seq %d; want complete, 5 ms, seq 9", r.Complete, r.DurationMs, r.Seq)
		}
		if n := r.PoPs[0].Nodes; n[0].LatencyMs != 3 || n[0].Hits != 4 || n[1].LatencyMs != 5 {
			t.Errorf("node acks = %+v, want n1 at 3 ms with 4 hits and n2 at 5 ms", n)
		}
		if got := r.PoPs[0].LatencyMs; got != 5 {
			t.Errorf("PoP latency = %v ms, want 5 (its last node)", got)
		}
	})

	t.Run("ack of an unknown purge is dropped", func(t *testing.T) {
		tr.record(Ack{ID: "nope", PoP: "ams", Node: "n1"})
		if _, ok := tr.Receipt("nope"); ok {
			t.Errorf("Receipt(nope) found, want not found")
		}
		if r := tr.Wait(context.Background(), "nope"); r.ID != "nope" || r.Complete {
			t.Errorf("Wait(nope) = %+v, want an empty incomplete receipt", r)
		}
	})

	t.Run("bounded by count", func(t *testing.T) {
		for _, id := range []string{"p2", "p3"} {
			tr.Register(Message{ID: id, Host: "a.example", Kind: KindAll, IssuedAt: clock.Now()}, nil)
		}
		if _, ok := tr.Receipt("p0"); ok {
			t.Errorf("Receipt(p0) found after 4 registrations with a limit of 3, want evicted")
		}
		if _, ok := tr.Receipt("p1"); !ok {
			t.Errorf("Receipt(p1) evicted, want kept")
		}
	})

	t.Run("bounded by age", func(t *testing.T) {
		clock.Advance(2 * time.Hour)
		tr.Register(Message{ID: "p4", Host: "a.example", Kind: KindAll, IssuedAt: clock.Now()}, nil)
		for _, id := range []string{"p1", "p2", "p3"} {
			if _, ok := tr.Receipt(id); ok {
				t.Errorf("Receipt(%s) found 2h later with 1h retention, want evicted", id)
			}
		}
		if _, ok := tr.Receipt("p4"); !ok {
			t.Errorf("Receipt(p4) missing, want kept")
		}
	})

	t.Run("acks over nats", func(t *testing.T) {
		tr.Register(Message{ID: "p5", Host: "a.example", Kind: KindAll, IssuedAt: clock.Now()}, []NodeRef{{"fra", "n9"}})
		data, _ := json.Marshal(Ack{ID: "p5", Seq: 1, PoP: "fra", Node: "n9"})
		if err := nc.Publish(AckSubject("", "fra", "n9"), []byte("not json")); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(AckSubject("", "fra", "n9"), data); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r := tr.Wait(ctx, "p5"); !r.Complete {
			t.Errorf("Wait(p5) complete = false, want true after the ack was published")
		}
	})
}

func TestTrackerRun(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr, err := NewTracker(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run() did not return after cancel")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

// fakeRegistry is a settable fleet registry for WithRegistry.
type fakeRegistry struct {
	mu    sync.Mutex // guards nodes
	nodes []NodeRef
}

func (f *fakeRegistry) set(nodes ...NodeRef) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = nodes
}

func (f *fakeRegistry) registered() []NodeRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nodes)
}

// statuses maps "pop/node" to each listed node's status.
func statuses(r Receipt) map[string]string {
	out := map[string]string{}
	for _, p := range r.PoPs {
		for _, n := range p.Nodes {
			out[p.PoP+"/"+n.Node] = n.Status
		}
	}
	return out
}

// TestTrackerUnreachableAndGone: a receipt lists every node expected when the purge was issued;
// one that left the registry without acking reads unreachable and keeps the purge incomplete
// until it acks or an operator declares it gone.
func TestTrackerUnreachableAndGone(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	reg := &fakeRegistry{}
	tr := newTracker(t, nc, WithClock(clock.Now), WithRegistry(reg.registered))
	a1, a2, f1 := NodeRef{"ams", "n1"}, NodeRef{"ams", "n2"}, NodeRef{"fra", "n1"}
	reg.set(a1, a2, f1)
	tr.Register(Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: clock.Now()}, []NodeRef{a1, a2, f1})
	clock.Advance(time.Millisecond)
	tr.record(Ack{ID: "p1", PoP: "ams", Node: "n1"})

	// ams/n2 and fra/n1 drop out of the registry; fra/n1 comes back (it will replay and ack).
	reg.set(a1)
	r, _ := tr.Receipt("p1")
	want := map[string]string{"ams/n1": NodeAcked, "ams/n2": NodeUnreachable, "fra/n1": NodeUnreachable}
	if got := statuses(r); !maps.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if r.Complete || !slices.Equal(r.Unreachable, []NodeRef{a2, f1}) || !slices.Equal(r.Pending, []NodeRef{a2, f1}) {
		t.Errorf("receipt complete %v pending %v unreachable %v; want incomplete, both pending and unreachable", r.Complete, r.Pending, r.Unreachable)
	}
	reg.set(a1, f1)
	r, _ = tr.Receipt("p1")
	if got := statuses(r)["fra/n1"]; got != NodePending || !slices.Equal(r.Unreachable, []NodeRef{a2}) {
		t.Errorf("fra/n1 back in the registry: status %q, unreachable %v; want pending, only ams/n2", got, r.Unreachable)
	}

	errTests := []struct {
		name  string
		id    string
		nodes []NodeRef
		want  error
	}{
		{"unknown purge", "nope", nil, ErrUnknownPurge},
		{"node not expected", "p1", []NodeRef{{"lhr", "n1"}}, ErrUnknownNode},
		{"registered pending node", "p1", []NodeRef{f1}, ErrNodeLive},
		{"all or nothing", "p1", []NodeRef{a2, f1}, ErrNodeLive},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tr.DeclareGone(tt.id, tt.nodes...); !errors.Is(err, tt.want) {
				t.Errorf("DeclareGone(%s, %v) = %v, want %v", tt.id, tt.nodes, err, tt.want)
			}
		})
	}
	if r, _ := tr.Receipt("p1"); len(r.Gone) != 0 {
		t.Fatalf("refused DeclareGone calls declared %v gone, want none", r.Gone)
	}

	clock.Advance(time.Millisecond)
	gone, err := tr.DeclareGone("p1")
	if err != nil || !slices.Equal(gone, []NodeRef{a2}) {
		t.Fatalf("DeclareGone(p1) = %v, %v; want [ams/n2]", gone, err)
	}
	if gone, err := tr.DeclareGone("p1", a1, a2); err != nil || len(gone) != 0 {
		t.Errorf("DeclareGone(p1, acked, gone) = %v, %v; want nothing to do", gone, err)
	}
	r, _ = tr.Receipt("p1")
	if got := statuses(r)["ams/n2"]; got != NodeGone || r.Complete || !slices.Equal(r.Gone, []NodeRef{a2}) || !slices.Equal(r.Pending, []NodeRef{f1}) {
		t.Errorf("after DeclareGone: ams/n2 %q, complete %v, gone %v, pending %v; want gone, incomplete, pending fra/n1", got, r.Complete, r.Gone, r.Pending)
	}
	if p := r.PoPs[0]; !p.Complete || p.AckedAt == nil {
		t.Errorf("PoP ams = complete %v acked_at %v, want complete (acked and gone) with a time", p.Complete, p.AckedAt)
	}

	clock.Advance(time.Millisecond)
	tr.record(Ack{ID: "p1", PoP: "fra", Node: "n1"})
	r = tr.Wait(context.Background(), "p1")
	if !r.Complete || len(r.Pending) != 0 {
		t.Fatalf("after the last ack: complete %v pending %v, want complete", r.Complete, r.Pending)
	}
	// The gone node comes back after all and acks: it reads acked, and is no longer gone.
	tr.record(Ack{ID: "p1", PoP: "ams", Node: "n2"})
	r, _ = tr.Receipt("p1")
	if got := statuses(r)["ams/n2"]; got != NodeAcked || len(r.Gone) != 0 || !r.Complete {
		t.Errorf("gone node acked: status %q gone %v complete %v; want acked, none gone, complete", got, r.Gone, r.Complete)
	}
}

// TestTrackerDeclareGoneCompletes: declaring the last pending node gone completes the purge and
// wakes waiters.
func TestTrackerDeclareGoneCompletes(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	reg := &fakeRegistry{}
	tr := newTracker(t, nc, WithRegistry(reg.registered))
	tr.Register(Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: time.Now()}, []NodeRef{{"ams", "n1"}})
	waited := make(chan Receipt)
	go func() { waited <- tr.Wait(context.Background(), "p1") }()
	if _, err := tr.DeclareGone("p1"); err != nil {
		t.Fatalf("DeclareGone = %v", err)
	}
	select {
	case r := <-waited:
		if !r.Complete || r.CompletedAt == nil || len(r.Gone) != 1 {
			t.Errorf("Wait = complete %v at %v gone %v, want complete with ams/n1 gone", r.Complete, r.CompletedAt, r.Gone)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the last pending node was declared gone")
	}
}

// TestTrackerWithoutRegistry: with no registry every pending node reads pending, and none can be
// declared gone.
func TestTrackerWithoutRegistry(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr := newTracker(t, nc)
	tr.Register(Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: time.Now()}, []NodeRef{{"ams", "n1"}})
	r, _ := tr.Receipt("p1")
	if got := statuses(r)["ams/n1"]; got != NodePending || len(r.Unreachable) != 0 {
		t.Errorf("status %q unreachable %v, want pending and none unreachable", got, r.Unreachable)
	}
	if _, err := tr.DeclareGone("p1", NodeRef{"ams", "n1"}); !errors.Is(err, ErrNodeLive) {
		t.Errorf("DeclareGone = %v, want ErrNodeLive", err)
	}
}

// TestTrackerDropsForgedAcks: an ack whose body names another node than its subject is dropped.
// NATS permissions let a node publish only on its own ack subject, so such an ack is a forgery.
func TestTrackerDropsForgedAcks(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr := newTracker(t, nc)
	tr.Register(Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: time.Now()}, []NodeRef{{"fra", "n1"}, {"fra", "n2"}})
	forged, _ := json.Marshal(Ack{ID: "p1", Seq: 1, PoP: "fra", Node: "n2"})
	real, _ := json.Marshal(Ack{ID: "p1", Seq: 1, PoP: "fra", Node: "n1"})
	// Acks from one connection on one subscription arrive in order: once n1's real ack is in,
	// the forged one before it was seen.
	if err := nc.Publish(AckSubject("", "fra", "n1"), forged); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(AckSubject("", "fra", "n1"), real); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "fra/n1's ack", func() bool {
		r, _ := tr.Receipt("p1")
		return len(r.Pending) == 1
	})
	if r, _ := tr.Receipt("p1"); r.Complete || len(r.Pending) != 1 || r.Pending[0] != (NodeRef{"fra", "n2"}) {
		t.Fatalf("receipt after a forged ack for fra/n2: complete %v, pending %v; want fra/n2 pending", r.Complete, r.Pending)
	}
}

// TestNodeCannotForgeAckThroughGet: a node may not have the server answer a get of its own
// registry key, holding another node's ack, on that node's ack subject, where only that node
// may publish (refused by the embedded server's real permissions): the forged ack never
// reaches the tracker.
func TestNodeCannotForgeAckThroughGet(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := fleet.EnsureBuckets(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, nc)
	tr.Register(Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: time.Now()}, []NodeRef{{"fra", "n1"}, {"fra", "n2"}})
	refused := natstest.NewViolations()
	evil, evilJS := natstest.ConnectURL(t, ns.URL(), append(ns.Options(natsauth.Edge("lon", "n9")), refused.Option())...)
	kv, err := evilJS.KeyValue(ctx, wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(Ack{ID: "p1", Seq: 1, PoP: "fra", Node: "n2", AppliedAt: time.Now()})
	if _, err := kv.Put(ctx, wire.FleetKey("lon", "n9"), forged); err != nil {
		t.Fatalf("the forger writes its own registry key: %v", err)
	}
	get := "$JS.API.DIRECT.GET.KV_" + wire.Bucket("", wire.FleetBucket) + ".$KV." + wire.Bucket("", wire.FleetBucket) + "." + wire.FleetKey("lon", "n9")
	if err := evil.PublishMsg(&nats.Msg{Subject: get, Reply: AckSubject("", "fra", "n2"), Data: []byte(`{"no_hdr":true}`)}); err != nil {
		t.Fatal(err)
	}
	refused.Wait(t, "publish", get)
	real, _ := json.Marshal(Ack{ID: "p1", Seq: 1, PoP: "fra", Node: "n1"})
	if err := nc.Publish(AckSubject("", "fra", "n1"), real); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "fra/n1's ack", func() bool {
		r, _ := tr.Receipt("p1")
		return len(r.Pending) <= 1
	})
	if r, _ := tr.Receipt("p1"); r.Complete || len(r.Pending) != 1 || r.Pending[0] != (NodeRef{"fra", "n2"}) {
		t.Fatalf("receipt after a forged ack for fra/n2: complete %v, pending %v; want fra/n2 pending", r.Complete, r.Pending)
	}
}

// TestTrackerBatchedAcks: a node's acks of several purges may come in one message, one per line
// (the subscriber batches them under load); each is recorded, and a forged line is dropped
// without losing the others.
func TestTrackerBatchedAcks(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr := newTracker(t, nc)
	nodes := []NodeRef{{"fra", "n1"}, {"fra", "n2"}}
	for _, id := range []string{"p1", "p2", "p3"} {
		tr.Register(Message{ID: id, Host: "a.example", Kind: KindAll, IssuedAt: time.Now()}, nodes)
	}
	var batch []byte
	for i, a := range []Ack{
		{ID: "p1", Seq: 1, PoP: "fra", Node: "n1"},
		{ID: "p2", Seq: 2, PoP: "fra", Node: "n2"}, // forged: n1 publishes it
		{ID: "p2", Seq: 2, PoP: "fra", Node: "n1"},
		{ID: "p3", Seq: 3, PoP: "fra", Node: "n1"},
	} {
		if i > 0 {
			batch = append(batch, '\n')
		}
		var err error
		if batch, err = appendAck(batch, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(AckSubject("", "fra", "n1"), batch); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "fra/n1's three acks", func() bool {
		for _, id := range []string{"p1", "p2", "p3"} {
			if r, _ := tr.Receipt(id); len(r.Pending) != 1 {
				return false
			}
		}
		return true
	})
	for _, id := range []string{"p1", "p2", "p3"} {
		if r, _ := tr.Receipt(id); r.Complete || len(r.Pending) != 1 || r.Pending[0] != (NodeRef{"fra", "n2"}) {
			t.Errorf("receipt %s: complete %v, pending %v; want fra/n2 pending", id, r.Complete, r.Pending)
		}
	}
}

// offlineTracker is a Tracker with NewTracker's defaults and no subscription: acks are given
// to record directly.
func offlineTracker() *Tracker {
	return &Tracker{now: time.Now, maxPurges: DefaultMaxPurges, retention: DefaultRetention,
		entries: map[string]*entry{}, log: slog.New(slog.DiscardHandler)}
}

// BenchmarkTracker is the tracker's part of one purge in a 20-node fleet (4 PoPs of 5): the
// registration, the 20 acks, and the complete receipt the API answers with.
func BenchmarkTracker(b *testing.B) {
	tr := offlineTracker()
	var refs []NodeRef
	for _, pop := range []string{"ams", "fra", "lon", "par"} {
		for _, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
			refs = append(refs, NodeRef{PoP: pop, Node: n})
		}
	}
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = NewID()
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		i++
		tr.Register(Message{ID: id, Host: "www.example.com", Kind: KindKey, IssuedAt: time.Now()}, refs)
		// Acks arrive in no particular order.
		for j := range refs {
			ref := refs[(j*7)%len(refs)]
			tr.record(Ack{ID: id, Seq: uint64(i), PoP: ref.PoP, Node: ref.Node, AppliedAt: time.Now(), Hits: 1})
		}
		if r := tr.Wait(ctx, id); !r.Complete {
			b.Fatal("receipt not complete")
		}
	}
}

// BenchmarkAskRound is one round of the tracker's question with nodes pending for good: 10,000
// receipts, each with the same 50 registered nodes that never ack (they applied nothing past
// the purges: each answers below their sequences, so every receipt stays as it is), and the
// question and every node's answer (round; answers: the answers alone, the nodes' 50 of a
// round). Before the pending index, each answer (and each join ack)
// scanned every receipt: 500 such nodes took about 0.4 s a round.
func BenchmarkAskRound(b *testing.B) {
	const receipts, stuck = 10000, 50
	ns := natstest.Start(b)
	nc, _ := ns.Connect(b)
	tr, err := NewTracker(nc, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	var refs []NodeRef
	for i := range stuck {
		refs = append(refs, NodeRef{PoP: fmt.Sprintf("p%02d", i/5), Node: fmt.Sprint("n", i%5)})
	}
	for i := range receipts {
		m := Message{ID: NewID(), Host: "www.example.com", Kind: KindKey, IssuedAt: time.Now()}
		tr.Register(m, refs)
		tr.SetSeq(m.ID, uint64(1001+i))
	}
	answers := func() {
		for _, ref := range refs {
			tr.recordJoin(Ack{PoP: ref.PoP, Node: ref.Node, Through: 1000, Asked: true, AppliedAt: time.Now()})
		}
	}
	// The answers alone (the question asked once before), then whole rounds.
	tr.askPending(0)
	b.Run("answers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			answers()
		}
	})
	b.Run("round", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tr.askPending(0)
			answers()
		}
	})
	tr.recordJoin(Ack{PoP: refs[0].PoP, Node: refs[0].Node, Through: 1001, Asked: true, AppliedAt: time.Now()})
	tr.mu.RLock()
	e := tr.entries[tr.order[0]]
	tr.mu.RUnlock()
	if r := tr.receipt(e); len(r.Pending) != stuck-1 {
		b.Fatalf("first receipt pending %d nodes after one answered through it, want %d", len(r.Pending), stuck-1)
	}
}

// TestTrackerReceiptOrder: a receipt lists nodes sorted by PoP and node whatever the order they
// were expected or acked in, a late node's ack among them; a node expected twice counts once,
// and a late node's second ack is ignored.
func TestTrackerReceiptOrder(t *testing.T) {
	tr := offlineTracker()
	tr.Register(Message{ID: "p1", Host: "a.example", Kind: KindAll, IssuedAt: time.Now()},
		[]NodeRef{{"lon", "n1"}, {"ams", "n3"}, {"ams", "n1"}, {"lon", "n1"}})
	for _, a := range []Ack{
		{ID: "p1", PoP: "ams", Node: "n2", Hits: 1}, // late: not expected
		{ID: "p1", PoP: "ams", Node: "n2", Hits: 9}, // its duplicate
		{ID: "p1", PoP: "lon", Node: "n1", Hits: 2},
		{ID: "p1", PoP: "ams", Node: "n3", Hits: 3},
	} {
		tr.record(a)
	}
	r, _ := tr.Receipt("p1")
	var got []string
	for _, p := range r.PoPs {
		for _, n := range p.Nodes {
			got = append(got, fmt.Sprintf("%s/%s %s %d %v", p.PoP, n.Node, n.Status, n.Hits, n.Unexpected))
		}
	}
	want := []string{"ams/n1 pending 0 false", "ams/n2 acked 1 true", "ams/n3 acked 3 false", "lon/n1 acked 2 false"}
	if !slices.Equal(got, want) {
		t.Errorf("receipt nodes = %q, want %q", got, want)
	}
	if r.Complete || len(r.Pending) != 1 || r.Pending[0] != (NodeRef{"ams", "n1"}) {
		t.Errorf("complete %v pending %v, want incomplete with ams/n1 pending", r.Complete, r.Pending)
	}
	tr.record(Ack{ID: "p1", PoP: "ams", Node: "n1"})
	if r, _ := tr.Receipt("p1"); !r.Complete {
		t.Errorf("complete = false after the last expected node (listed twice) acked, pending %v", r.Pending)
	}
}

// TestTrackerForgottenIDsLeaveTheOrder: a purge forgotten because its publish failed gives its
// place back, and a retried publish of the same id (Publisher.Publish again) is one purge, not
// two: neither evicts a live receipt before the tracker holds maxPurges of them, and a long run
// of failed publishes among successful ones keeps the tracker's bookkeeping bounded by the live
// receipts it holds.
func TestTrackerForgottenIDsLeaveTheOrder(t *testing.T) {
	tr := offlineTracker()
	tr.maxPurges = 3
	reg := func(id string) {
		tr.Register(Message{ID: id, Host: "a.example", Kind: KindAll, IssuedAt: time.Now()}, []NodeRef{{"ams", "n1"}})
	}
	kept := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if _, ok := tr.Receipt(id); !ok {
				t.Errorf("Receipt(%s) evicted, want kept", id)
			}
		}
	}
	reg("p1")
	reg("p2")
	tr.Forget("p2") // its publish failed
	reg("p2")       // and was retried with the same id
	reg("p3")
	kept("p1", "p2", "p3") // three live receipts, limit three
	reg("p4")
	if _, ok := tr.Receipt("p1"); ok {
		t.Errorf("Receipt(p1) kept after a fourth purge with a limit of 3, want evicted")
	}
	kept("p2", "p3", "p4")

	// A long run in which most publishes fail: the tracker remembers no forgotten id, and keeps
	// the latest successful purges (a registration at the limit evicts the oldest receipt
	// while its publish runs, even if it then fails).
	for i := range 1000 {
		id := fmt.Sprintf("f%d", i)
		reg(id)
		if i%10 != 0 {
			tr.Forget(id)
		}
	}
	kept("f980", "f990")
	tr.mu.RLock()
	nOrder, nEntries := len(tr.order), len(tr.entries)
	tr.mu.RUnlock()
	if nOrder != nEntries || nEntries != 2 {
		t.Errorf("after 1,000 purges, 900 forgotten: %d ids in order, %d receipts; want 2 and 2", nOrder, nEntries)
	}
}

// TestPublisherRetryAfterFailedPublishKeepsReceipt: a publish that failed (no stream yet)
// forgets its receipt; publishing the same purge again, then another, keeps both receipts
// within a limit of two (the failed attempt left nothing behind that evicts the retry's).
func TestPublisherRetryAfterFailedPublishKeepsReceipt(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	tr := newTracker(t, nc, WithMaxPurges(2))
	p := &Publisher{JS: js, Tracker: tr}
	m1 := msg("a.example", KindAll)
	if _, err := p.Publish(ctx, m1, []NodeRef{{"ams", "n1"}}); err == nil {
		t.Fatal("Publish before the stream exists = nil, want an error")
	}
	if _, ok := tr.Receipt(m1.ID); ok {
		t.Fatal("Receipt of a failed publish found, want forgotten")
	}
	if err := EnsureStream(ctx, js, "", 0, 0); err != nil {
		t.Fatal(err)
	}
	m2 := msg("a.example", KindAll)
	for _, m := range []Message{m1, m2} {
		if _, err := p.Publish(ctx, m, []NodeRef{{"ams", "n1"}}); err != nil {
			t.Fatalf("Publish(%s) = %v", m.ID, err)
		}
	}
	for _, m := range []Message{m1, m2} {
		if r, ok := tr.Receipt(m.ID); !ok || r.Seq == 0 {
			t.Errorf("Receipt(%s) = %+v, %v; want kept, with its sequence (two purges, limit two)", m.ID, r, ok)
		}
	}
}

// TestTrackerHoldForRegistrations: a receipt registered under HoldNew is not complete while
// held, though every node it expects acked, and shows until when it is held (moved by a
// later HoldNew); Expect adds nodes to it (one that acked unexpected moves in acked); Release
// completes it at once when every node it lists acked, and leaves it pending on a node added
// then that has not. Receipts registered before HoldNew or after Release are not held.
func TestTrackerHoldForRegistrations(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	nc, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, nc)
	n1, n2, n3 := NodeRef{"ams", "n1"}, NodeRef{"ams", "n2"}, NodeRef{"lhr", "n3"}
	startNode(t, ns, n1.PoP, n1.Node)
	startNode(t, ns, n2.PoP, n2.Node)
	pub := &Publisher{JS: js, Tracker: tr}
	publish := func() Message {
		t.Helper()
		m, err := pub.Publish(ctx, msg("www.example.com", KindAll), []NodeRef{n1})
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		return m
	}
	waitComplete := func(id string) Receipt {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r := tr.Wait(wctx, id)
		if !r.Complete || r.CompletedAt == nil || r.AwaitingRegistrationsUntil != nil {
			t.Fatalf("Wait(%s) = complete %v, completed_at %v, until %v; want complete and not held", id, r.Complete, r.CompletedAt, r.AwaitingRegistrationsUntil)
		}
		return r
	}
	waitComplete(publish().ID) // before any hold

	until := time.Date(2026, 12, 8, 1, 0, 4, 0, time.UTC)
	tr.HoldNew(until)
	held := publish()
	var r Receipt
	wait.For(t, 10*time.Second, "n1 and n2 acked", func() bool {
		r, _ = tr.Receipt(held.ID)
		return len(r.PoPs) == 1 && len(r.PoPs[0].Nodes) == 2 && r.PoPs[0].Nodes[0].Acked && r.PoPs[0].Nodes[1].Acked
	})
	if r.Complete || r.PoPs[0].Complete || r.AwaitingRegistrationsUntil == nil || !r.AwaitingRegistrationsUntil.Equal(until) || !r.PoPs[0].Nodes[1].Unexpected {
		t.Fatalf("held receipt, every node acked: complete %v (PoP %v), until %v, n2 %+v; want not complete, until %v, n2 unexpected",
			r.Complete, r.PoPs[0].Complete, r.AwaitingRegistrationsUntil, r.PoPs[0].Nodes[1], until)
	}
	if done, _ := tr.Done(held.ID); func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}() {
		t.Fatal("Done closed for a held receipt")
	}
	later := until.Add(time.Second)
	tr.HoldNew(later)
	tr.Expect([]NodeRef{n2})
	r, _ = tr.Receipt(held.ID)
	if r.AwaitingRegistrationsUntil == nil || !r.AwaitingRegistrationsUntil.Equal(later) || r.PoPs[0].Nodes[1].Unexpected || !r.PoPs[0].Nodes[1].Acked {
		t.Fatalf("after HoldNew(later) and Expect(n2): until %v, n2 %+v; want %v, n2 acked and expected", r.AwaitingRegistrationsUntil, r.PoPs[0].Nodes[1], later)
	}
	tr.Release(nil)
	waitComplete(held.ID)

	tr.HoldNew(until)
	late := publish()
	wait.For(t, 10*time.Second, "n1 acked", func() bool {
		r, _ = tr.Receipt(late.ID)
		return len(r.PoPs) == 1 && r.PoPs[0].Nodes[0].Acked
	})
	tr.Release([]NodeRef{n3})
	r, _ = tr.Receipt(late.ID)
	if r.Complete || !slices.Equal(r.Pending, []NodeRef{n3}) || r.AwaitingRegistrationsUntil != nil {
		t.Fatalf("released with lhr/n3 added: complete %v, pending %v, until %v; want lhr/n3 pending, not held", r.Complete, r.Pending, r.AwaitingRegistrationsUntil)
	}
	waitComplete(publish().ID) // after the release
}

// TestTrackerExpectVisitsOnlyWhatIsNew: during a hold, control calls Expect with the live nodes
// at every change of membership and every read of receipts, over every receipt held (at 5,000
// purges/s, 20,000 in the default 4 s grace). Expect with nodes every held receipt lists
// already leaves the receipts alone (it does not lock one) and keeps askPending's index in use
// (join acks do not scan every receipt); a receipt registered since gets them all, and none
// given to an earlier call only; a node not seen before is added to every held receipt. Before, each call locked and searched every held
// receipt for every node and invalidated the index whether it added a node or not.
func TestTrackerExpectVisitsOnlyWhatIsNew(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	tr := newTracker(t, nc)
	a, b, c := NodeRef{"ams", "a"}, NodeRef{"ams", "b"}, NodeRef{"fra", "c"}
	tr.HoldNew(time.Now().Add(time.Hour))
	var ids []string
	register := func() string {
		t.Helper()
		m := msg("www.example.com", KindAll)
		m.Seq = uint64(len(ids) + 1)
		tr.Register(m, []NodeRef{a})
		ids = append(ids, m.ID)
		return m.ID
	}
	listed := func(id string) []NodeRef {
		t.Helper()
		r, ok := tr.Receipt(id)
		if !ok {
			t.Fatalf("no receipt %s", id)
		}
		return nodeNames(r)
	}
	indexUsed := func() bool {
		tr.mu.RLock()
		defer tr.mu.RUnlock()
		return tr.pending != nil && tr.pending.seqChanges == tr.seqChanges.Load()
	}
	register()
	register()
	tr.Expect([]NodeRef{a, b})
	tr.askPending(time.Hour) // builds the index; asks nobody (every receipt is younger)
	if !indexUsed() {
		t.Fatal("askPending's index not in use right after it was built")
	}
	tr.Expect([]NodeRef{b, a})
	if !indexUsed() {
		t.Error("Expect with nodes every held receipt lists invalidated askPending's index")
	}

	// A receipt registered since gets every node expected so far, without the others being
	// locked: one of them is, by the test, until Expect returns.
	fresh := register()
	old := tr.lookup(ids[0])
	old.mu.Lock()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		tr.Expect([]NodeRef{a, b})
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Error("Expect with no node new to the older held receipts waited for one's lock")
	}
	old.mu.Unlock()
	<-returned
	if got, want := listed(fresh), []NodeRef{a, b}; !slices.Equal(got, want) {
		t.Errorf("receipt registered after Expect(a, b), then Expect(a, b): nodes %v, want %v", got, want)
	}

	tr.Expect([]NodeRef{a, b, c})
	for _, id := range ids {
		if got, want := listed(id), []NodeRef{a, b, c}; !slices.Equal(got, want) {
			t.Errorf("receipt %s after Expect(a, b, c): nodes %v, want %v", id, got, want)
		}
	}
	if indexUsed() {
		t.Error("Expect added fra/c, and askPending's index, which does not list it, is still used")
	}
	// A node given before and not now (it left) is not added to a receipt registered since.
	tr.Expect([]NodeRef{a})
	later := register()
	tr.Expect([]NodeRef{a})
	if got, want := listed(later), []NodeRef{a}; !slices.Equal(got, want) {
		t.Errorf("receipt registered after Expect(a, b, c), then Expect(a): nodes %v, want %v", got, want)
	}
	ids = ids[:len(ids)-1]

	tr.Release([]NodeRef{a, b, c})
	for _, id := range ids {
		r, _ := tr.Receipt(id)
		if r.AwaitingRegistrationsUntil != nil || r.Complete || len(r.Pending) != 3 {
			t.Errorf("receipt %s after Release: until %v, complete %v, pending %v; want not held, a, b and c pending",
				id, r.AwaitingRegistrationsUntil, r.Complete, r.Pending)
		}
	}
}

// TestTrackerHoldKeepsNoEvictedReceipt: the receipts evicted during a hold (beyond
// WithMaxPurges; at 5,000 purges/s the default 10,000 go in 2 s, of a 4 s grace) are not kept
// by the hold: its list stays within twice the receipts tracked, and the ones kept are still
// released. Before, the hold kept every receipt registered under it until its release, each
// with its expected nodes (20 KB for 200 nodes).
func TestTrackerHoldKeepsNoEvictedReceipt(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	const maxPurges = 4
	tr := newTracker(t, nc, WithMaxPurges(maxPurges))
	tr.HoldNew(time.Now().Add(time.Hour))
	var ids []string
	for range 50 {
		m := msg("www.example.com", KindAll)
		tr.Register(m, nil)
		ids = append(ids, m.ID)
		tr.Expect([]NodeRef{{"ams", "a"}})
	}
	tr.mu.RLock()
	held, tracked := len(tr.held), len(tr.entries)
	tr.mu.RUnlock()
	if tracked != maxPurges || held > 2*maxPurges {
		t.Errorf("after 50 receipts under a hold: %d tracked, %d held; want %d tracked, at most %d held", tracked, held, maxPurges, 2*maxPurges)
	}
	tr.Release(nil)
	for _, id := range ids[len(ids)-maxPurges:] {
		r, ok := tr.Receipt(id)
		if !ok || r.AwaitingRegistrationsUntil != nil || !slices.Equal(r.Pending, []NodeRef{{"ams", "a"}}) {
			t.Errorf("receipt %s after Release: found %v, until %v, pending %v; want not held, ams/a pending", id, ok, r.AwaitingRegistrationsUntil, r.Pending)
		}
	}
}
