package purge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

func TestLiveEncoding(t *testing.T) {
	stored := []byte(`{"id":"x"}`)
	b := appendLive(nil, 42, stored)
	if string(b) != "42\n"+`{"id":"x"}` {
		t.Fatalf("appendLive = %q", b)
	}
	seq, data, err := splitLive(b)
	if err != nil || seq != 42 || string(data) != string(stored) {
		t.Errorf("splitLive = %d, %q, %v; want 42, %q", seq, data, err, stored)
	}
	for _, bad := range []string{"", "{}", "\n{}", "0\n{}", "x1\n{}", "123456789012345678901\n{}", "99999999999999999999\n{}"} {
		if _, _, err := splitLive([]byte(bad)); err == nil {
			t.Errorf("splitLive(%q) = nil error, want one", bad)
		}
	}
}

// TestPublisherLiveDelivery: purges published concurrently through a Publisher are announced on
// the live subject in stream order, and caught-up nodes apply and ack every one of them from
// there, in order, without creating a single consumer on the stream.
func TestPublisherLiveDelivery(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var announced []uint64
	live, err := nc.Subscribe(LiveSubject(""), func(m *nats.Msg) {
		seq, _, err := splitLive(m.Data)
		if err != nil {
			t.Errorf("unreadable announcement %q: %v", m.Data, err)
		}
		mu.Lock()
		announced = append(announced, seq)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Unsubscribe() })
	acks := listenAcks(t, nc)
	nodes := []*node{startNode(t, ns, "ams", "n1"), startNode(t, ns, "lon", "n1")}
	pub := &Publisher{JS: js}
	const workers, each = 8, 25
	var (
		wg   sync.WaitGroup
		smu  sync.Mutex
		seqs []uint64
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m, err := pub.Publish(ctx, msg("www.example.com", KindURL, fmt.Sprintf("/w%d/%d", w, i)), nil)
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				smu.Lock()
				seqs = append(seqs, m.Seq)
				smu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seqs)
	const total = workers * each
	wait.For(t, 10*time.Second, "every purge acked by both nodes", func() bool { return len(acks.snapshot()) == 2*total })
	// The announcements reach this test on a subscription of their own, with its own goroutine.
	wait.For(t, 10*time.Second, "every announcement seen", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(announced) >= total
	})
	mu.Lock()
	got := slices.Clone(announced)
	mu.Unlock()
	if !slices.Equal(got, seqs) {
		t.Errorf("announced sequences = %v, want each published one once, in stream order %v", got, seqs)
	}
	for _, n := range nodes {
		if got := appliedSeqs(n.rec); !slices.Equal(got, seqs) {
			t.Errorf("node applied %v, want %v", got, seqs)
		}
	}
	// A caught-up node replays nothing, so it made no consumer (a replay's stays listed 30 s).
	if c := natstest.StreamConsumers(t, js, StreamName("")); c != 0 {
		t.Errorf("the stream has %d consumers, want 0: caught-up nodes take purges live", c)
	}
	for _, n := range nodes {
		if r := n.sub.Replays(); r != 0 {
			t.Errorf("node replayed %d times from the stream, want 0", r)
		}
	}
}

// publishStreamOnly stores a purge in the stream without announcing it, as if its announcement
// were lost.
func publishStreamOnly(t *testing.T, ctx context.Context, js jetstream.JetStream, m Message) uint64 {
	t.Helper()
	m, err := m.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, CommandSubject("", m.Host), data, jetstream.WithMsgID(m.ID))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestSubscriberFillsLiveGapFromStream: a purge whose announcement never came is replayed from
// the stream, in order, before anything newer is applied: when the next announcement shows the
// gap, and, with no purge after it, when the node's check of the stream's position does.
func TestSubscriberFillsLiveGapFromStream(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	acks := listenAcks(t, nc)
	n := startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) { c.ConfirmEvery = 20 * time.Millisecond })
	pub := &Publisher{JS: js}

	t.Run("next announcement shows the gap", func(t *testing.T) {
		var want []uint64
		want = append(want, publishN(t, ctx, js, 1)...)
		want = append(want, publishStreamOnly(t, ctx, js, msg("www.example.com", KindURL, "/lost")))
		m, err := pub.Publish(ctx, msg("www.example.com", KindURL, "/next"), nil)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, m.Seq)
		wait.For(t, 10*time.Second, "3 purges applied", func() bool { return n.rec.count() >= 3 })
		if got := appliedSeqs(n.rec); !slices.Equal(got, want) {
			t.Errorf("applied %v, want %v (the lost one from the stream, in order)", got, want)
		}
	})
	t.Run("no purge after it", func(t *testing.T) {
		seq := publishStreamOnly(t, ctx, js, msg("www.example.com", KindKey, "lonely"))
		wait.For(t, 10*time.Second, "the unannounced purge applied", func() bool { return n.sub.LastApplied() == seq })
		if got := appliedSeqs(n.rec); got[len(got)-1] != seq {
			t.Errorf("applied %v, want %d last", got, seq)
		}
	})
	// By id: with ConfirmEvery this short, a loaded machine can time a stream question out,
	// and its answer after that sends the unconfirmed acks again (confirmLoop).
	wait.For(t, 10*time.Second, "4 purges acked", func() bool { return len(ackIDs(acks)) == 4 })
	if _, gaps, _ := n.rec.snapshot(); len(gaps) != 0 {
		t.Errorf("OnGap calls = %v, want none: the stream held every purge", gaps)
	}
}

// TestSubscriberIgnoresStaleAndForeignAnnouncements: an announcement at or below LastApplied
// (a duplicate publish, or one overtaken by a replay) is not applied again, and an unreadable
// one makes the node ask the stream rather than act on it.
func TestSubscriberIgnoresStaleAndForeignAnnouncements(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, ns, "ams", "n1")
	m := msg("www.example.com", KindURL, "/a")
	seq, err := Publish(ctx, js, "", m)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the purge applied", func() bool { return n.rec.count() == 1 })
	// The same id again: stored once, announced again with the same sequence.
	if again, err := Publish(ctx, js, "", m); err != nil || again != seq {
		t.Fatalf("re-Publish = %d, %v; want %d", again, err, seq)
	}
	if err := nc.Publish(LiveSubject(""), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	next := publishN(t, ctx, js, 1)
	wait.For(t, 10*time.Second, "the next purge applied", func() bool { return n.sub.LastApplied() == next[0] })
	if got := appliedSeqs(n.rec); !slices.Equal(got, []uint64{seq, next[0]}) {
		t.Errorf("applied %v, want [%d %d]", got, seq, next[0])
	}
}

// forger is an edge node that tries to make other nodes apply a purge it made up.
type forger struct {
	ctl     *nats.Conn // control's connection, which also receives live purges
	nc      *nats.Conn // the forger's
	js      jetstream.JetStream
	refused *natstest.Violations
	// key is the forger's own registry key; subject is its subject in the fleet bucket's
	// stream.
	key, subject string
}

// putOwnKey writes value under the forger's own registry key, which its credential may.
func (f *forger) putOwnKey(t *testing.T, ctx context.Context, value []byte) {
	t.Helper()
	kv, err := f.js.KeyValue(ctx, wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("the forger binds the fleet bucket: %v", err)
	}
	if _, err := kv.Put(ctx, f.key, value); err != nil {
		t.Fatalf("the forger writes its own registry key: %v", err)
	}
}

// TestNodeCannotAnnouncePurges: only control announces purges, against the embedded server's
// real permissions. An edge's credential may receive live purges but may not publish one, nor
// have the server answer a get of its own registry key (holding a forged announcement) on
// the live subject: both refused. It may create a consumer on the fleet bucket that delivers
// its key on the live subject (NATS does not check a deliver subject), but the delivery keeps
// its stream subject and nodes drop it. A node never applies the forgery, and applies the real
// purge that takes the sequence the forgery claimed.
func TestNodeCannotAnnouncePurges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// forge tries to have announcement delivered on the live subject, and returns once
		// the server refused it or delivered it to every live subscriber.
		forge func(t *testing.T, ctx context.Context, f *forger, announcement []byte)
	}{
		{"publish", func(t *testing.T, _ context.Context, f *forger, announcement []byte) {
			if err := f.nc.Publish(LiveSubject(""), announcement); err != nil {
				t.Fatal(err)
			}
			f.refused.Wait(t, "publish", LiveSubject(""))
		}},
		{"direct get answered on the live subject", func(t *testing.T, ctx context.Context, f *forger, announcement []byte) {
			f.putOwnKey(t, ctx, announcement)
			// The stored value as it is, without the headers a direct get adds.
			get := "$JS.API.DIRECT.GET.KV_" + wire.Bucket("", wire.FleetBucket) + "." + f.subject
			if err := f.nc.PublishMsg(&nats.Msg{Subject: get, Reply: LiveSubject(""), Data: []byte(`{"no_hdr":true}`)}); err != nil {
				t.Fatal(err)
			}
			f.refused.Wait(t, "publish", get)
		}},
		{"consumer delivering on the live subject", func(t *testing.T, ctx context.Context, f *forger, announcement []byte) {
			watch, err := f.ctl.SubscribeSync(LiveSubject(""))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = watch.Unsubscribe() }()
			if err := f.ctl.Flush(); err != nil {
				t.Fatal(err)
			}
			f.putOwnKey(t, ctx, announcement)
			if _, err := f.js.CreatePushConsumer(ctx, "KV_"+wire.Bucket("", wire.FleetBucket), jetstream.ConsumerConfig{
				Name: "forger", DeliverSubject: LiveSubject(""), FilterSubject: f.subject,
				DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, AckPolicy: jetstream.AckNonePolicy,
			}); err != nil {
				t.Fatalf("the forger creates a consumer on the fleet bucket: %v", err)
			}
			// The server hands one delivery to every subscriber at once: once control has it,
			// it is queued to the victim ahead of any later announcement.
			m, err := watch.NextMsg(5 * time.Second)
			if err != nil || !bytes.Equal(m.Data, announcement) {
				t.Fatalf("control's live subscription got %v, %v; want the forged delivery", m, err)
			}
			if m.Subject != f.subject {
				t.Fatalf("the forged delivery came on %q, want its stream subject %q", m.Subject, f.subject)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.Start(t)
			ctl, js := ns.Connect(t)
			ctx := testContext(t)
			if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			if err := fleet.EnsureBuckets(ctx, js, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			victim := startNode(t, ns, "ams", "n1")
			f := &forger{ctl: ctl, refused: natstest.NewViolations(), key: wire.FleetKey("lon", "n9")}
			f.subject = "$KV." + wire.Bucket("", wire.FleetBucket) + "." + f.key
			f.nc, f.js = natstest.ConnectURL(t, ns.URL(), append(ns.Options(natsauth.Edge("lon", "n9")), f.refused.Option())...)
			last := victim.sub.LastApplied()
			tc.forge(t, ctx, f, appendLive(nil, last+1, []byte(`{"id":"evil","host":"www.example.com","kind":"all","issued_at":"2026-01-01T00:00:00Z"}`)))
			seqs := publishN(t, ctx, js, 1)
			if seqs[0] != last+1 {
				t.Fatalf("the real purge has sequence %d, want %d (the forgery's)", seqs[0], last+1)
			}
			wait.For(t, 10*time.Second, "a purge applied", func() bool { return victim.rec.count() >= 1 })
			if applied, _, _ := victim.rec.snapshot(); applied[0].ID == "evil" || applied[0].Seq != seqs[0] {
				t.Errorf("applied %+v, want the published purge %d", applied[0], seqs[0])
			}
		})
	}
}

// TestSubscriberBatchesQueuedAcks: purges that wait while Apply is busy are acked together, in
// one message, once applied, in order; a purge applied with nothing queued behind it is acked
// at once, alone.
func TestSubscriberBatchesQueuedAcks(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var msgs []int // acks per message
	raw, err := nc.Subscribe(AckSubjects(""), func(m *nats.Msg) {
		mu.Lock()
		msgs = append(msgs, strings.Count(string(m.Data), "\n")+1)
		mu.Unlock()
	})
	// rawAcks waits until the messages counted hold n acks: this subscription has its own
	// goroutine, which may run behind listenAcks'.
	rawAcks := func(n int) []int {
		t.Helper()
		var got []int
		wait.For(t, 10*time.Second, fmt.Sprintf("%d acks in the counted messages", n), func() bool {
			mu.Lock()
			defer mu.Unlock()
			got = slices.Clone(msgs)
			sum := 0
			for _, k := range got {
				sum += k
			}
			return sum >= n
		})
		return got
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Unsubscribe() })
	acks := listenAcks(t, nc)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	rec := &recorder{}
	var blocked atomic.Bool // the first purge's Apply blocks until release
	n := startNode(t, ns, "ams", "n1", func(c *SubscriberConfig) {
		c.Apply = func(ctx context.Context, m Message) (int, error) {
			if blocked.CompareAndSwap(false, true) {
				entered <- struct{}{}
				<-release
			}
			return rec.apply(ctx, m)
		}
	})
	seqs := publishN(t, ctx, js, 1)
	<-entered
	in := n.nc.Stats().InMsgs
	seqs = append(seqs, publishN(t, ctx, js, 9)...)
	wait.For(t, 10*time.Second, "9 announcements received while Apply is busy", func() bool { return n.nc.Stats().InMsgs >= in+9 })
	close(release)
	wait.For(t, 10*time.Second, "10 acks", func() bool { return len(acks.snapshot()) == 10 })
	var got []uint64
	for _, a := range acks.snapshot() {
		got = append(got, a.Seq)
	}
	if !slices.Equal(got, seqs) || !slices.Equal(appliedSeqs(rec), seqs) {
		t.Errorf("acked %v, applied %v; want both %v", got, appliedSeqs(rec), seqs)
	}
	batched := rawAcks(10)
	// The announcements counted in InMsgs may not all be queued yet when Apply is released.
	if len(batched) > 3 {
		t.Errorf("acks per message = %v, want the 9 queued behind the busy one with it", batched)
	}
	last := publishN(t, ctx, js, 1)
	wait.For(t, 10*time.Second, "the 11th ack", func() bool { return len(acks.snapshot()) == 11 })
	counted := rawAcks(11)
	if a := acks.snapshot()[10]; a.Seq != last[0] || counted[len(counted)-1] != 1 {
		t.Errorf("11th ack seq %d in messages %v, want seq %d alone", a.Seq, counted, last[0])
	}
}

// TestMessagePayloadsAreOwned checks what decoding in place (ownedString) relies on: the NATS
// client hands every delivered message a payload of its own, which it never writes to or reuses
// for a later message, on a channel subscription (the live path), a callback subscription (the
// tracker's acks) and a JetStream ordered consumer (replays).
func TestMessagePayloadsAreOwned(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	const n = 300
	payload := func(i int) []byte { return fmt.Appendf(nil, "%04d%s", i, strings.Repeat("x", 200+i%7)) }
	check := func(name string, got [][]byte) {
		t.Helper()
		if len(got) != n {
			t.Fatalf("%s: %d messages, want %d", name, len(got), n)
		}
		for i, b := range got {
			if !bytes.Equal(b, payload(i)) {
				t.Fatalf("%s: message %d reads %q after later deliveries, want its own payload", name, i, b[:min(len(b), 16)])
			}
		}
	}

	ch := make(chan *nats.Msg, n)
	chSub, err := nc.ChanSubscribe("owned.chan", ch)
	if err != nil {
		t.Fatal(err)
	}
	defer chSub.Unsubscribe()
	var mu sync.Mutex
	var viaCallback [][]byte
	cbSub, err := nc.Subscribe("owned.cb", func(m *nats.Msg) {
		mu.Lock()
		viaCallback = append(viaCallback, m.Data)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cbSub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		for _, subj := range []string{"owned.chan", "owned.cb"} {
			if err := nc.Publish(subj, payload(i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := js.Publish(ctx, CommandSubject("", "owned.example"), payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	var viaChan [][]byte
	for range n {
		select {
		case m := <-ch:
			viaChan = append(viaChan, m.Data)
		case <-ctx.Done():
			t.Fatal("channel subscription: messages missing")
		}
	}
	check("channel subscription", viaChan)
	wait.For(t, 10*time.Second, "callback deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(viaCallback) == n
	})
	mu.Lock()
	check("callback subscription", viaCallback)
	mu.Unlock()

	cons, err := js.OrderedConsumer(ctx, StreamName(""), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var viaStream [][]byte
	for range n {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		viaStream = append(viaStream, m.Data())
	}
	check("ordered consumer", viaStream)
}
