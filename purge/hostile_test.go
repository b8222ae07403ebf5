package purge

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// streamReads counts the JetStream requests for the purge stream's state (STREAM.INFO, what
// a replay and a confirmation begin with) that one identity makes, as control's connection,
// allowed to receive everything, sees them.
type streamReads struct {
	ch     chan *nats.Msg
	nc     *nats.Conn
	prefix string // the identity's inbox prefix, which its requests' replies carry
	n      int
}

func countStreamReads(t *testing.T, ctl *nats.Conn, id natsauth.Identity) *streamReads {
	t.Helper()
	r := &streamReads{ch: make(chan *nats.Msg, 1<<16), nc: ctl, prefix: id.InboxPrefix() + "."}
	sub, err := ctl.ChanSubscribe("$JS.API.STREAM.INFO."+StreamName(""), r.ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// total is how many reads the identity has made so far over from, its connection. An answer
// does not show that control has the request: the server hands it to JetStream (whose
// $JS.API.> subscription it matches first) before it copies it to control, and the answer can
// reach the node, and a flush of control's connection alone come back, in between. A flush of
// from comes back once the server has done with everything sent before it, copies included,
// and a channel subscription then has every message the server sent before the answer to a
// flush of its own connection.
func (r *streamReads) total(t *testing.T, from *nats.Conn) int {
	t.Helper()
	if err := from.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for len(r.ch) > 0 {
		if m := <-r.ch; strings.HasPrefix(m.Reply, r.prefix) {
			r.n++
		}
	}
	return r.n
}

// TestHostileLiveMessagesAreCheap: an edge's credential can have messages that are not
// announcements delivered on the live subject, and NATS can refuse none of them: JetStream
// answers to requests whose reply it names (NATS checks a request's subject, not its reply),
// the idle heartbeats of a push consumer it made to deliver there (nor a deliver subject),
// which go on for as long as nodes listen, and that consumer's deliveries (another subject's:
// they were always dropped). However many come, a node reads the stream for them once per
// ConfirmEvery (here an hour: once), not once each, logs one line per kind, and goes on
// applying purges from the live subject.
func TestHostileLiveMessagesAreCheap(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		// flood has at least n messages delivered on the live subject; dropped is how many
		// the node dropped so far.
		flood func(t *testing.T, ctx context.Context, f *forger, n int, dropped func() uint64)
		// logged is the warning the node logs for them, once.
		logged string
	}{
		{"jetstream answers", 40, func(t *testing.T, _ context.Context, f *forger, n int, _ func() uint64) {
			for range n {
				if err := f.nc.PublishMsg(&nats.Msg{Subject: "$JS.API.STREAM.INFO." + StreamName(""), Reply: LiveSubject("")}); err != nil {
					t.Fatal(err)
				}
			}
		}, "unreadable live purge"},
		// One every 100 ms (the least the server takes), to every node, for as long as
		// nodes listen on the live subject: the consumer outlives the edge's connection.
		{"consumer heartbeats", 10, func(t *testing.T, ctx context.Context, f *forger, _ int, _ func() uint64) {
			if _, err := f.js.CreatePushConsumer(ctx, StreamName(""), jetstream.ConsumerConfig{
				Name: "hostile", DeliverSubject: LiveSubject(""), IdleHeartbeat: 100 * time.Millisecond,
				DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckNonePolicy,
			}); err != nil {
				t.Fatalf("the edge creates a push consumer on the purge stream: %v", err)
			}
		}, "unreadable live purge"},
		{"consumer deliveries", 40, func(t *testing.T, ctx context.Context, f *forger, n int, dropped func() uint64) {
			if _, err := f.js.CreatePushConsumer(ctx, "KV_"+wire.Bucket("", wire.FleetBucket), jetstream.ConsumerConfig{
				Name: "hostile", DeliverSubject: LiveSubject(""), FilterSubject: f.subject,
				DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckNonePolicy,
			}); err != nil {
				t.Fatalf("the edge creates a push consumer on the fleet bucket: %v", err)
			}
			// One at a time: the bucket keeps one value per key, and a consumer skips a value
			// replaced before it was delivered.
			for i := range n {
				f.putOwnKey(t, ctx, fmt.Appendf(nil, `{"n":%d}`, i))
				wait.For(t, 10*time.Second, "the delivery dropped", func() bool { return dropped() > uint64(i) })
			}
		}, "delivered from another subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctl, js := ns.Connect(t)
			ctx := testContext(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			if err := fleet.EnsureBuckets(ctx, js, "", time.Minute, 1); err != nil {
				t.Fatal(err)
			}
			reads := countStreamReads(t, ctl, natsauth.Edge("ams", "n1"))
			logs := &logtest.Warnings{}
			victim := startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
				c.ConfirmEvery = time.Hour
				c.Logger = slog.New(logs)
			})
			<-victim.sub.Confirmed() // its first question to the stream is answered
			before := reads.total(t, victim.nc)
			if before < 2 {
				// Its join and its first question: a count that misses them proves nothing.
				t.Fatalf("counted %d stream reads by the node before the flood, want 2 at least", before)
			}

			f := &forger{ctl: ctl, refused: natstest.NewViolations(), key: wire.FleetKey("lon", "n9")}
			f.subject = "$KV." + wire.Bucket("", wire.FleetBucket) + "." + f.key
			f.nc, f.js = natstest.ConnectURL(t, ns.URL(), append(ns.Options(natsauth.Edge("lon", "n9")), f.refused.Option())...)
			tc.flood(t, ctx, f, tc.n, victim.sub.Dropped)
			wait.For(t, 20*time.Second, fmt.Sprintf("%d hostile messages dropped", tc.n), func() bool { return victim.sub.Dropped() >= uint64(tc.n) })

			if got := reads.total(t, victim.nc) - before; got > 1 {
				t.Errorf("the node read the stream %d times for %d hostile messages, want once at most", got, victim.sub.Dropped())
			}
			if got := logs.Count(tc.logged); got != 1 {
				t.Errorf("%q logged %d times, want once", tc.logged, got)
			}
			seqs := publishN(t, ctx, js, 1)
			wait.For(t, 10*time.Second, "the purge applied", func() bool { return victim.sub.LastApplied() == seqs[0] })
			if r := victim.sub.Replays(); r != 0 {
				t.Errorf("the node replayed %d times, want the purge taken live", r)
			}
			// Once the node stopped, those held back are logged too, though none follows.
			logged := logs.Count(tc.logged)
			victim.stop()
			if got := logs.Count(tc.logged); got != logged+1 {
				t.Errorf("%q logged %d times once the node stopped, want %d: the held back too", tc.logged, got, logged+1)
			}
		})
	}
}

// TestHostileAcksAreLoggedOnce: what an edge's credential has delivered on ack subjects, its
// own or another node's (a JetStream answer whose reply it names, lines that are no ack), is
// dropped and logged once per kind, not once per message or line; the acks of real nodes still
// count.
func TestHostileAcksAreLoggedOnce(t *testing.T) {
	ns := natstest.Start(t)
	ctl, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Warnings{}
	tr := newTracker(t, ctl, WithLogger(slog.New(logs)))
	edge, _ := natstest.ConnectURL(t, ns.URL(), ns.Options(natsauth.Edge("lon", "n9"))...)
	const n = 40
	for range n {
		// Answered on another node's ack subject: JSON, but no ack of that node.
		if err := edge.PublishMsg(&nats.Msg{Subject: "$JS.API.STREAM.INFO." + StreamName(""), Reply: AckSubject("", "ams", "n1")}); err != nil {
			t.Fatal(err)
		}
	}
	// On its own subject: n lines that are no ack, in one message.
	if err := edge.Publish(AckSubject("", "lon", "n9"), []byte(strings.Repeat("x\n", n))); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, fmt.Sprintf("%d acks dropped", 2*n), func() bool { return tr.Dropped() >= 2*n })
	logged := map[string]int{}
	for _, msg := range []string{"drop undecodable purge ack", "drop purge ack whose node differs from its subject"} {
		if logged[msg] = logs.Count(msg); logged[msg] > 1 {
			t.Errorf("%q logged %d times, want once at most", msg, logged[msg])
		}
	}
	startNode(t, ns, "ams", "n1")
	pub := &Publisher{JS: js, Tracker: tr}
	m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/a"), []NodeRef{{PoP: "ams", Node: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the purge acked by ams.n1", func() bool {
		r, ok := tr.Receipt(m.ID)
		return ok && r.Complete
	})
	// Closing the tracker logs each kind's held back (n or more of each kind logged), though
	// none follows.
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	for msg, n := range logged {
		if got := logs.Count(msg); got != 2*n {
			t.Errorf("%q logged %d times once the tracker closed, want %d: the held back too", msg, got, 2*n)
		}
	}
}
