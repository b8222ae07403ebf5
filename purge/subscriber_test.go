package purge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// node is one subscriber under test with its own NATS connection.
type node struct {
	sub *Subscriber
	rec *recorder
	nc  *nats.Conn
	// cut sits between the node and NATS: a NATS server cannot be told to drop one client and
	// refuse it for a while, so this is the one fault injected.
	cut  *natstest.Cutter
	stop func()
}

type nodeOpt func(*SubscriberConfig)

func startNode(t *testing.T, ns *natstest.Server, pop, name string, opts ...nodeOpt) *node {
	t.Helper()
	cut := natstest.NewCutter(t, "127.0.0.1", ns.URL())
	nc, js := natstest.ConnectURL(t, cut.URL(), append(ns.Options(natsauth.Edge(pop, name)),
		nats.ReconnectWait(20*time.Millisecond))...)
	rec := &recorder{}
	cfg := SubscriberConfig{JS: js, PoP: pop, Node: name, Apply: rec.apply, OnGap: rec.onGap,
		RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	n := &node{sub: s, rec: rec, nc: nc, cut: cut}
	n.stop = runSubscriber(t, s)
	return n
}

// ackListener collects acks seen on the ack subject.
type ackListener struct {
	mu    sync.Mutex // guards acks, joins and msgs
	acks  []Ack
	joins []Ack // join acks (Ack.Through), kept apart: they ack no one purge
	msgs  int   // messages, each one ack or several
}

func listenAcks(t *testing.T, nc *nats.Conn) *ackListener {
	t.Helper()
	l := &ackListener{}
	sub, err := nc.Subscribe(AckSubjects(""), func(m *nats.Msg) {
		l.mu.Lock()
		l.msgs++
		l.mu.Unlock()
		// Several acks in one message under load, one per line.
		for line := range bytes.SplitSeq(m.Data, []byte("\n")) {
			var a Ack
			if err := json.Unmarshal(line, &a); err != nil {
				t.Errorf("undecodable ack %q: %v", line, err)
				return
			}
			l.mu.Lock()
			if a.Through != 0 {
				l.joins = append(l.joins, a)
			} else {
				l.acks = append(l.acks, a)
			}
			l.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *ackListener) snapshot() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Ack(nil), l.acks...)
}

func (l *ackListener) joinAcks() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Ack(nil), l.joins...)
}

// ackIDs is the set of purge ids l has seen acked (by pop, node and id): a node may send an
// ack again (confirmLoop's resend), which counts once here.
func ackIDs(l *ackListener) map[string]bool {
	ids := map[string]bool{}
	for _, a := range l.snapshot() {
		ids[a.PoP+"/"+a.Node+"/"+a.ID] = true
	}
	return ids
}

func publishN(t *testing.T, ctx context.Context, js jetstream.JetStream, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		seq, err := Publish(ctx, js, "", msg("www.example.com", KindURL, fmt.Sprintf("/p/%d", i)))
		if err != nil {
			t.Fatalf("Publish #%d: %v", i, err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// appliedSeqs returns the sequences applied, in order.
func appliedSeqs(r *recorder) []uint64 {
	applied, _, _ := r.snapshot()
	out := make([]uint64, len(applied))
	for i, m := range applied {
		out[i] = m.Seq
	}
	return out
}

func TestNewSubscriberRequires(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	apply := func(context.Context, Message) (int, error) { return 0, nil }
	gap := func(context.Context, uint64, uint64) {}
	tests := []struct {
		name string
		cfg  SubscriberConfig
	}{
		{"no js", SubscriberConfig{PoP: "p", Node: "n", Apply: apply, OnGap: gap}},
		{"no pop", SubscriberConfig{JS: js, Node: "n", Apply: apply, OnGap: gap}},
		{"no apply", SubscriberConfig{JS: js, PoP: "p", Node: "n", OnGap: gap}},
		{"no ongap", SubscriberConfig{JS: js, PoP: "p", Node: "n", Apply: apply}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewSubscriber(tt.cfg); err == nil {
				t.Errorf("NewSubscriber(%s) = nil error, want one", tt.name)
			}
		})
	}
}

func TestSubscriberAppliesInOrderAndAcks(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	old := publishN(t, ctx, js, 3) // before the node joined: not its concern
	acks := listenAcks(t, nc)
	n := startNode(t, ns, "ams", "n1")
	if got := n.sub.LastApplied(); got != old[2] {
		t.Errorf("LastApplied() at join = %d, want the stream's last sequence %d", got, old[2])
	}
	seqs := publishN(t, ctx, js, 20)
	wait.For(t, 10*time.Second, "20 acks", func() bool { return len(acks.snapshot()) == 20 })
	if got := appliedSeqs(n.rec); !slices.Equal(got, seqs) {
		t.Errorf("applied sequences = %v, want %v", got, seqs)
	}
	applied, _, _ := n.rec.snapshot()
	for i, a := range acks.snapshot() {
		want := applied[i]
		if a.ID != want.ID || a.Seq != want.Seq || a.PoP != "ams" || a.Node != "n1" || a.Hits != 1 || a.AppliedAt.IsZero() {
			t.Errorf("ack %d = %+v, want id %s seq %d pop ams node n1 hits 1", i, a, want.ID, want.Seq)
		}
	}
	if got := n.sub.LastApplied(); got != seqs[19] {
		t.Errorf("LastApplied() = %d, want %d", got, seqs[19])
	}
	// The purges before the join are acked with one join ack, sent before the first ack.
	if got := acks.joinAcks(); len(got) != 1 || got[0].Through != old[2] || got[0].ID != "" || got[0].PoP != "ams" || got[0].Node != "n1" {
		t.Errorf("join acks = %+v, want one from ams/n1 through %d", got, old[2])
	}
}

func TestSubscriberAcksOnlyAfterApply(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, nc)
	entered := make(chan uint64, 1)
	release := make(chan struct{})
	n := startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			entered <- m.Seq
			return held(ctx, release, 7)
		}
	})
	seqs := publishN(t, ctx, js, 1)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Apply not called within 10s")
	}
	// Round trips on both connections: an ack sent before Apply returned would be here by now.
	if err := n.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := acks.snapshot(); len(got) != 0 {
		t.Fatalf("acks while Apply is blocked = %+v, want none", got)
	}
	if got := n.sub.LastApplied(); got == seqs[0] {
		t.Errorf("LastApplied() = %d while Apply is blocked, want less", got)
	}
	close(release)
	wait.For(t, 10*time.Second, "the ack after release", func() bool { return len(acks.snapshot()) == 1 })
	if a := acks.snapshot()[0]; a.Seq != seqs[0] || a.Hits != 7 {
		t.Errorf("ack = %+v, want seq %d hits 7", a, seqs[0])
	}
}

func TestSubscriberRetriesFailedApply(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, nc)
	var calls atomic.Int32
	rec := &recorder{}
	startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			if m.Values[0] == "/p/0" && calls.Add(1) <= 3 {
				return 0, errors.New("store busy")
			}
			return rec.apply(ctx, m)
		}
	})
	seqs := publishN(t, ctx, js, 2)
	wait.For(t, 10*time.Second, "2 acks", func() bool { return len(acks.snapshot()) == 2 })
	if got := calls.Load(); got != 4 {
		t.Errorf("Apply calls for the failing purge = %d, want 4 (3 failures, 1 success)", got)
	}
	if got := appliedSeqs(rec); !slices.Equal(got, seqs) {
		t.Errorf("applied = %v, want %v (the failed one retried, not skipped, and first)", got, seqs)
	}
	if got := acks.snapshot(); got[0].Seq != seqs[0] || got[1].Seq != seqs[1] {
		t.Errorf("ack sequences = %d, %d; want %d, %d", got[0].Seq, got[1].Seq, seqs[0], seqs[1])
	}
}

func TestSubscriberReplaysAfterDisconnect(t *testing.T) {
	tests := []struct {
		name string
		// cutOff disconnects the node; publishing happens between cutOff and reconnect.
		cutOff, reconnect func(t *testing.T, ns *natstest.Server, n *node)
		// consumerLimit is the stream's inactivity limit for consumers (control sets one);
		// zero means none.
		consumerLimit time.Duration
	}{
		{
			name:      "connection cut",
			cutOff:    func(t *testing.T, _ *natstest.Server, n *node) { n.cut.Cut() },
			reconnect: func(t *testing.T, _ *natstest.Server, n *node) { n.cut.Restore() },
		},
		{
			// The server refuses a consumer asking for a longer threshold than the limit.
			name:          "connection cut, stream's consumer inactivity limit below the replay's",
			cutOff:        func(t *testing.T, _ *natstest.Server, n *node) { n.cut.Cut() },
			reconnect:     func(t *testing.T, _ *natstest.Server, n *node) { n.cut.Restore() },
			consumerLimit: ReplayInactiveThreshold / 10,
		},
		{
			name: "server restarted",
			cutOff: func(t *testing.T, ns *natstest.Server, n *node) {
				n.cut.Cut() // keep the node out until the purges are in
				ns.Stop()
				ns.Restart()
			},
			reconnect: func(t *testing.T, _ *natstest.Server, n *node) { n.cut.Restore() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := testContext(t)
			_, js := ns.Connect(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			if tt.consumerLimit > 0 {
				st, err := js.Stream(ctx, StreamName(""))
				if err != nil {
					t.Fatal(err)
				}
				cfg := st.CachedInfo().Config
				cfg.ConsumerLimits.InactiveThreshold = tt.consumerLimit
				if _, err := js.UpdateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			}
			n := startNode(t, ns, "ams", "n1")
			before := publishN(t, ctx, js, 5)
			wait.For(t, 10*time.Second, "the first 5 applied", func() bool { return n.rec.count() == 5 })

			tt.cutOff(t, ns, n)
			wait.For(t, 10*time.Second, "the node to be disconnected", func() bool { return !n.nc.IsConnected() })
			// A fresh publisher: the test's own client may still be reconnecting after a restart.
			_, js2 := ns.Connect(t)
			during := publishN(t, ctx, js2, 10)
			if got := n.rec.count(); got != 5 {
				t.Fatalf("applied %d purges while cut off, want 5", got)
			}
			tt.reconnect(t, ns, n)
			after := publishN(t, ctx, js2, 5)

			want := slices.Concat(before, during, after)
			wait.For(t, 20*time.Second, "every purge applied", func() bool { return n.rec.count() >= len(want) })
			if got := appliedSeqs(n.rec); !slices.Equal(got, want) {
				t.Errorf("applied sequences = %v, want each of %v exactly once, in order", got, want)
			}
			if _, gaps, _ := n.rec.snapshot(); len(gaps) != 0 {
				t.Errorf("OnGap calls = %v, want none (nothing was lost)", gaps)
			}
		})
	}
}

// replayAcks cuts a node off, publishes missed purges, lets it back and returns the acks of
// its replay and how many messages carried them.
func replayAcks(t *testing.T, missed int, opts ...nodeOpt) ([]Ack, int) {
	t.Helper()
	ns := natstest.Start(t)
	ctx := testContext(t)
	nc, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, nc)
	n := startNode(t, ns, "ams", "n1", opts...)
	wait.For(t, 10*time.Second, "the node subscribed", func() bool {
		select {
		case <-n.sub.Ready():
			return true
		default:
			return false
		}
	})
	n.cut.Cut()
	wait.For(t, 10*time.Second, "the node to be disconnected", func() bool { return !n.nc.IsConnected() })
	want := publishN(t, ctx, js, missed)
	n.cut.Restore()
	wait.For(t, 20*time.Second, "every missed purge acked", func() bool { return len(acks.snapshot()) >= missed })
	got := acks.snapshot()
	if len(got) != missed {
		t.Fatalf("%d acks for %d replayed purges, want one each", len(got), missed)
	}
	for i, a := range got {
		if a.Seq != want[i] {
			t.Fatalf("ack %d is of seq %d, want each of %v once, in order", i, a.Seq, want)
		}
	}
	acks.mu.Lock()
	defer acks.mu.Unlock()
	return got, acks.msgs
}

// A node back from a partition replays what it missed and acks it in batches, not one message
// per purge; every purge is acked once, in order.
func TestReplayBatchesAcks(t *testing.T) {
	const missed = 300
	_, msgs := replayAcks(t, missed)
	// maxAckBatch acks per message at most, 5 messages at best; one per purge before. A batch
	// also ends when its first ack has waited replayAckWait, so a slow machine sends more.
	if msgs > missed/4 {
		t.Fatalf("%d purges replayed were acked in %d messages, want at most %d", missed, msgs, missed/4)
	}
	t.Logf("%d replayed purges acked in %d messages", missed, msgs)
}

// A slow apply does not hold the first acks of a replay until the batch is full: an ack waits
// replayAckWait at most for others to join it.
func TestReplaySlowApplyAcksAtOnce(t *testing.T) {
	const missed = 40
	slow := func(c *SubscriberConfig) {
		apply := c.Apply
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			time.Sleep(3 * time.Millisecond) // a slow store scan: the fault under test
			return apply(ctx, m)
		}
	}
	_, msgs := replayAcks(t, missed, slow)
	if msgs < missed/4 {
		t.Fatalf("%d slowly applied purges were acked in %d messages, want at least %d (acks held for the batch)", missed, msgs, missed/4)
	}
}

func TestSubscriberGapBeyondRetention(t *testing.T) {
	tests := []struct {
		name      string
		retention time.Duration
		// lose removes the purges published while the node was cut off from the stream.
		lose func(t *testing.T, ctx context.Context, st jetstream.Stream)
	}{
		{
			name: "stream purged",
			lose: func(t *testing.T, ctx context.Context, st jetstream.Stream) {
				if err := st.Purge(ctx); err != nil {
					t.Fatalf("purge stream: %v", err)
				}
			},
		},
		{
			name:      "expired beyond MaxAge",
			retention: 300 * time.Millisecond,
			lose: func(t *testing.T, ctx context.Context, st jetstream.Stream) {
				wait.For(t, 10*time.Second, "the stream to expire its messages", func() bool {
					info, err := st.Info(ctx)
					return err == nil && info.State.Msgs == 0
				})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := testContext(t)
			_, js := ns.Connect(t)
			if err := EnsureStream(ctx, js, "", tt.retention, 1); err != nil {
				t.Fatal(err)
			}
			n := startNode(t, ns, "ams", "n1")
			before := publishN(t, ctx, js, 2)
			wait.For(t, 10*time.Second, "the first 2 applied", func() bool { return n.rec.count() == 2 })

			n.cut.Cut()
			wait.For(t, 10*time.Second, "the node to be disconnected", func() bool { return !n.nc.IsConnected() })
			lost := publishN(t, ctx, js, 3)
			st, err := js.Stream(ctx, "PURGE")
			if err != nil {
				t.Fatal(err)
			}
			tt.lose(t, ctx, st)
			after := publishN(t, ctx, js, 2)
			n.cut.Restore()
			wait.For(t, 20*time.Second, "the purges after the gap applied", func() bool { return n.rec.count() == 4 })

			_, gaps, events := n.rec.snapshot()
			wantGap := [2]uint64{before[1], lost[2] + 1}
			if len(gaps) != 1 || gaps[0] != wantGap {
				t.Errorf("OnGap calls = %v, want one with (lastApplied, next) = %v", gaps, wantGap)
			}
			wantEvents := []string{
				fmt.Sprint("apply:", before[0]), fmt.Sprint("apply:", before[1]),
				fmt.Sprintf("gap:%d-%d", before[1], after[0]),
				fmt.Sprint("apply:", after[0]), fmt.Sprint("apply:", after[1]),
			}
			if !slices.Equal(events, wantEvents) {
				t.Errorf("events = %v, want %v (the gap before anything newer)", events, wantEvents)
			}
		})
	}
}

func TestSubscriberUndecodableIsAGap(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	_, js := ns.Connect(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, ns, "ams", "n1")
	ack, err := js.Publish(ctx, CommandSubject("", "www.example.com"), []byte(`{"id":"bad","kind":"regex"}`))
	if err != nil {
		t.Fatal(err)
	}
	good := publishN(t, ctx, js, 1)
	wait.For(t, 10*time.Second, "the good purge applied", func() bool { return n.rec.count() == 1 })
	_, gaps, _ := n.rec.snapshot()
	if want := [2]uint64{ack.Sequence - 1, ack.Sequence + 1}; len(gaps) != 1 || gaps[0] != want {
		t.Errorf("OnGap calls = %v, want one with %v for the undecodable message", gaps, want)
	}
	if got := appliedSeqs(n.rec); !slices.Equal(got, good) {
		t.Errorf("applied = %v, want %v", got, good)
	}
}

func TestSubscriberWaitsForStream(t *testing.T) {
	ns := natstest.Start(t)
	ctx := testContext(t)
	_, js := ns.Connect(t)
	_, js2 := ns.Connect(t)
	rec := &recorder{}
	s, err := NewSubscriber(SubscriberConfig{JS: js2, PoP: "ams", Node: "n1", Apply: rec.apply, OnGap: rec.onGap, RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-s.Ready():
		t.Fatal("Ready() closed before the stream exists")
	case <-time.After(50 * time.Millisecond):
	}
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("Ready() not closed within 10s of the stream's creation")
	}
	seqs := publishN(t, ctx, js, 1)
	wait.For(t, 10*time.Second, "the purge applied", func() bool { return rec.count() == 1 })
	if got := appliedSeqs(rec); !slices.Equal(got, seqs) {
		t.Errorf("applied = %v, want %v", got, seqs)
	}
	if err := s.Run(ctx); err == nil {
		t.Errorf("second Run() = nil, want an error")
	}
}

// TestRecreatedStreamIsAGap: a stream deleted and created again restarts its sequences. Once
// the new one has grown past what a node applied from the old one, only the stream's creation
// time tells them apart: the node must report a gap (its copies may have missed purges) and
// apply every purge of the new stream, whether it was cut off meanwhile or connected
// throughout (its live announcements then carry sequences it thinks it has applied).
func TestRecreatedStreamIsAGap(t *testing.T) {
	for _, cutOff := range []bool{true, false} {
		t.Run(map[bool]string{true: "cut off", false: "connected"}[cutOff], func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := testContext(t)
			_, js := ns.Connect(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			n := startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) { c.ConfirmEvery = 50 * time.Millisecond })
			publishN(t, ctx, js, 3)
			wait.For(t, 10*time.Second, "3 applied", func() bool { return n.rec.count() == 3 })
			if cutOff {
				n.cut.Cut()
				wait.For(t, 10*time.Second, "disconnected", func() bool { return !n.nc.IsConnected() })
			}
			if err := js.DeleteStream(ctx, StreamName("")); err != nil {
				t.Fatal(err)
			}
			// The server may still be removing the old stream's store: "error creating store".
			wait.For(t, 10*time.Second, "the stream created again", func() bool {
				return EnsureStream(ctx, js, "", 0, 1) == nil
			})
			seqs := publishN(t, ctx, js, 5) // 1..5 in the new stream: past the 3 applied
			if cutOff {
				n.cut.Restore()
			}
			// After the gap, each purge of the new stream is applied.
			wait.For(t, 10*time.Second, "a gap, then the new stream's purges", func() bool {
				_, gaps, events := n.rec.snapshot()
				if len(gaps) == 0 {
					return false
				}
				after := map[string]bool{}
				for i := len(events) - 1; i >= 0 && !strings.HasPrefix(events[i], "gap:"); i-- {
					after[events[i]] = true
				}
				for _, s := range seqs {
					if !after[fmt.Sprintf("apply:%d", s)] {
						return false
					}
				}
				return true
			})
		})
	}
}
