package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/metricstest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

func TestInboxDeliverSubject(t *testing.T) {
	const nuid = "Xk3dP0qLm2nB7vR9sT1uWy" // what nats.Conn.NewInbox appends
	for _, tt := range []struct {
		subj string
		want bool
	}{
		{"_INBOX." + nuid, true},                // control's, or a client's of a NATS without credentials
		{"_INBOX.edge.lon.n1." + nuid, true},    // an edge's KV watch
		{"_INBOX.dns.ns1." + nuid, true},        // a DNS server's
		{"_INBOX.edge.lon-2.n_1." + nuid, true}, // any identity's names
		{"$JS.M.a1B2c3D4", true},                // the server's own mirror of the stream
		{"$JS.S.a1B2c3D4", true},                // and source
		{purge.LiveSubject(""), false},
		{purge.AckSubject("", "lon", "n1"), false},
		{"$KV.meridian_fleet.lon.n1", false},
		{"_INBOX.edge.lon.n1." + nuid + ".1", false}, // n1's request multiplexer answers there
		{"_INBOX.edge.lon.n1", false},
		{"_INBOX.dns.ns1", false},
		{"_INBOX.leaf.lon." + nuid, false}, // a leaf link's prefix is its edges'
		{"_INBOX.control." + nuid, false},  // control's prefix is _INBOX
		{"_INBOX.edge.lon." + nuid, false},
		{"_INBOX.nobody.x." + nuid, false},
		{"_INBOX.", false},
		{"_INBOX", false},
		{"_INBOX.edge.lon.n1.", false},
		{"$JS.M.a.b", false},
		{"$JS.M.", false},
		{"_inbox." + nuid, false},
	} {
		if got := inboxDeliverSubject(tt.subj); got != tt.want {
			t.Errorf("inboxDeliverSubject(%q) = %v, want %v", tt.subj, got, tt.want)
		}
	}
}

// hostileConsumer is a push consumer that a leaked edge or DNS credential can create (NATS
// checks the create request's subject, never its deliver subject), aimed where nodes or
// control listen.
type hostileConsumer struct {
	name    string
	id      natsauth.Identity
	stream  string
	deliver string
}

func hostileConsumers() []hostileConsumer {
	kv := func(b string) string { return "KV_" + wire.Bucket("", b) }
	thief := natsauth.Edge("lon", "n9")
	return []hostileConsumer{
		{"purge stream to the live subject", thief, purge.StreamName(""), purge.LiveSubject("")},
		{"fleet bucket to another node's acks", thief, kv(wire.FleetBucket), purge.AckSubject("", "lon", "n1")},
		{"config bucket under another node's inbox, not a watch's", thief, kv(wire.ConfigBucket), "_INBOX.edge.lon.n1.Xk3dP0qLm2nB7vR9sT1uWy.1"},
		{"peer keys to the live subject", thief, kv(wire.PeerKeyBucket), purge.LiveSubject("")},
		{"latency bucket by a DNS credential to the live subject", natsauth.DNS("ns9"), kv(wire.LatencyBucket), purge.LiveSubject("")},
	}
}

// create makes the consumer with h's credential on the NATS server at url and returns its name.
// It is durable (the server would delete an ephemeral one some seconds after nobody listens
// to it) and sends idle heartbeats, as one made to annoy would.
func (h hostileConsumer) create(t *testing.T, url string) string {
	t.Helper()
	_, js := connectAs(t, url, h.id)
	c, err := js.CreatePushConsumer(t.Context(), h.stream, jetstream.ConsumerConfig{
		Durable: "hostile", DeliverSubject: h.deliver, IdleHeartbeat: 100 * time.Millisecond,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
	})
	if err != nil {
		t.Fatalf("%s creates a push consumer on %s delivering to %s: %v", h.id, h.stream, h.deliver, err)
	}
	return c.CachedInfo().Name
}

// consumerExists reports whether stream has the consumer, as control sees it.
func consumerExists(t *testing.T, js jetstream.JetStream, stream, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := js.PushConsumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false
	}
	if err != nil {
		t.Fatalf("look up consumer %s of %s: %v", name, stream, err)
	}
	return true
}

// sweeps is how many sweeps ts's sweeper has completed.
func (ts *testServer) sweeps() uint64 {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.sweeper.sweeps.Load()
}

// waitSweep waits until a whole sweep ran after the call: the one under way, if any, may
// have listed a stream before what the caller just did.
func (ts *testServer) waitSweep(t *testing.T) {
	t.Helper()
	n := ts.sweeps()
	wait.For(t, 20*time.Second, "a whole sweep of the consumers", func() bool { return ts.sweeps() >= n+2 })
}

func hostileDeleted(t *testing.T, ts *testServer) float64 {
	t.Helper()
	return metricstest.Values(t, ts.reg)["meridian_control_hostile_consumers_deleted_total"]
}

// legitimateClients is a real edge (KV watches of the fleet, config and peer key buckets, the
// purge subscription) and a DNS credential's watch of the routing policy, joined to ts.
type legitimateClients struct {
	node   *edge.Node
	dns    *fleet.ConfigView
	addr   string // the origin's
	checks int    // how many checks ran: each writes its own routing weight
}

func startLegitimateClients(t *testing.T, ts *testServer, natsURL, ip string) *legitimateClients {
	t.Helper()
	_, addr := startOrigin(t, ip+"10")
	c := &legitimateClients{addr: addr, node: startEdge(t, ip+"20", "lon", "n1", natsURL)}
	_, djs := connectAs(t, natsURL, natsauth.DNS("ns1"))
	c.dns = fleet.NewConfigView(fleet.ConfigViewConfig{JS: djs, Keys: wire.RoutingKey})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.dns.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.dns.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("the DNS credential's config view did not load")
	}
	wait.For(t, 10*time.Second, "lon/n1 in the control's fleet view", func() bool { return len(ts.Fleet().Nodes()) == 1 })
	return c
}

// check fails unless the edge and the DNS watch still follow the config bucket (host is
// new to the edge, the routing weight to DNS) and the edge still applies and acks purges.
func (c *legitimateClients) check(t *testing.T, ts *testServer, host string) {
	t.Helper()
	putHosts(t, ts, c.addr, []*edge.Node{c.node}, host)
	c.checks++
	weight := float64(c.checks)
	if err := fleet.PutRouting(t.Context(), ts.JetStream(), "", wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"lon": weight}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, fmt.Sprintf("the DNS credential's watch sees lon's routing weight %v", weight), func() bool {
		return c.dns.Routing().Weights["lon"] == weight
	})
	code, resp, body := postPurge(t, ts, tokPurger, "5s", []byte(`{"host":"`+host+`","all":true}`))
	if acked, _ := ackedNodes(resp); code != http.StatusOK || !resp.Complete || !acked["lon/n1"] {
		t.Fatalf("purge = %d %s, want complete and acked by lon/n1", code, body)
	}
}

// TestHostileConsumerDeletedWhenCreated: a push consumer that a leaked credential creates on
// the fleet's streams, delivering on a subject where nodes or control listen (the live purge
// subject, an ack subject, another node's request inbox), is deleted as soon as the server
// announces its creation, with no sweep in between; the real edge's and the DNS credential's
// consumers, created the same way, are not, and they keep working.
func TestHostileConsumerDeletedWhenCreated(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1}, func(s *Server) { s.sweepEvery = time.Hour })
	wait.For(t, 20*time.Second, "the sweep at start", func() bool { return ts.sweeps() >= 1 })
	clients := startLegitimateClients(t, ts, ts.NATSURL(), "127.0.11.")
	js := ts.JetStream()
	cases := hostileConsumers()
	for _, h := range cases {
		t.Run(h.name, func(t *testing.T) {
			name := h.create(t, ts.NATSURL())
			wait.For(t, 10*time.Second, "the hostile consumer deleted", func() bool {
				return !consumerExists(t, js, h.stream, name)
			})
		})
	}
	// Counted just after the deletion's answer, which the polls above may beat.
	wait.For(t, 10*time.Second, "the deletions counted", func() bool { return hostileDeleted(t, ts) >= float64(len(cases)) })
	clients.check(t, ts, hostA)
	if got, want := hostileDeleted(t, ts), float64(len(cases)); got != want {
		t.Errorf("hostile consumers deleted = %v, want %v: only the hostile ones", got, want)
	}
}

// TestConsumerSweep: hostile push consumers made while control was away are deleted by the
// sweep at its start, and one whose deliver subject an update moved onto the live subject
// (which the server announces to nobody) by the next sweep. Sweeps running back to back
// leave the real edge's and the DNS credential's consumers alone: the edge follows the config
// and acks purges, the DNS watch follows the config.
func TestConsumerSweep(t *testing.T) {
	ns := startNATS(t)
	_, cjs := connect(t, ns.URL())
	if err := fleet.EnsureBuckets(t.Context(), cjs, "", time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := purge.EnsureStream(t.Context(), cjs, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	cases := hostileConsumers()
	names := make([]string, len(cases))
	for i, h := range cases {
		names[i] = h.create(t, ns.URL())
	}

	ts := startServer(t, Config{NATSURL: ns.URL(), PurgeRate: -1}, func(s *Server) { s.sweepEvery = 20 * time.Millisecond })
	wait.For(t, 20*time.Second, "the sweep at start", func() bool { return ts.sweeps() >= 1 })
	for i, h := range cases {
		if consumerExists(t, cjs, h.stream, names[i]) {
			t.Errorf("%s: consumer %s still there after the first sweep", h.name, names[i])
		}
	}
	if got, want := hostileDeleted(t, ts), float64(len(cases)); got != want {
		t.Errorf("hostile consumers deleted = %v, want %v", got, want)
	}

	clients := startLegitimateClients(t, ts, ns.URL(), "127.0.11.1")

	// A consumer parked on an inbox nobody listens on delivers nothing, and its deliver
	// subject may then be changed: NATS refuses the change only while the old one has a
	// listener.
	_, ejs := connectAs(t, ns.URL(), natsauth.Edge("lon", "n9"))
	cfg := jetstream.ConsumerConfig{
		Durable: "parked", DeliverSubject: "_INBOX.edge.lon.n9.parked", IdleHeartbeat: 100 * time.Millisecond,
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckNonePolicy,
	}
	stream := purge.StreamName("")
	if _, err := ejs.CreatePushConsumer(t.Context(), stream, cfg); err != nil {
		t.Fatal(err)
	}
	ts.waitSweep(t)
	if !consumerExists(t, cjs, stream, "parked") {
		t.Fatal("a consumer delivering to its maker's inbox was deleted")
	}
	cfg.DeliverSubject = purge.LiveSubject("")
	if _, err := ejs.UpdatePushConsumer(t.Context(), stream, cfg); err != nil {
		t.Fatalf("move the consumer onto the live subject: %v", err)
	}
	ts.waitSweep(t)
	if consumerExists(t, cjs, stream, "parked") {
		t.Error("the consumer moved onto the live subject is still there after a sweep")
	}

	// Several sweeps ran while the edge and the DNS watch were up; more run while they work.
	clients.check(t, ts, hostA)
	ts.waitSweep(t)
	clients.check(t, ts, hostB)
	if got, want := hostileDeleted(t, ts), float64(len(cases)+1); got != want {
		t.Errorf("hostile consumers deleted = %v, want %v: only the hostile ones", got, want)
	}
}

// TestConsumerAdvisoriesOverflowQuietly: consumers created faster than control checks them
// (every watch of the fleet made again after a NATS restart, or a peer creating them in bulk)
// overflow the queue of announced creations. What overflows is left to the next sweep and
// logged at most once a minute, never reported as a slow consumer on control's connection:
// nats.go reports one for every burst, unthrottled (on stderr, by default), so a peer
// could have control write as many lines as it makes consumers. The sweep still deletes the
// hostile consumer hidden in the burst, and only that one.
func TestConsumerAdvisoriesOverflowQuietly(t *testing.T) {
	ns := startNATS(t)
	nc, js := natstest.ConnectURL(t, ns.URL(), natsOptions(t, ns.URL(), natsauth.Control())...)
	if err := purge.EnsureStream(t.Context(), js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	stream := purge.StreamName("")
	logs := &logtest.Warnings{}
	deleted := prometheus.NewCounter(prometheus.CounterOpts{Name: "deleted"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(deleted)
	w := newConsumerSweeper(js, "", time.Hour, deleted, slog.New(logs))
	w.subscribe() // announcements queue up: nothing checks them until run starts

	// Every announcement, counted on the same connection: once this has them all and a
	// flush came back, the sweeper's subscriptions have had them too.
	var announced atomic.Int64
	count, err := nc.Subscribe(consumerAdvisory+"."+stream+".*", func(*nats.Msg) { announced.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = count.Unsubscribe() })

	burst := cap(w.advisories) + 40
	_, ejs := connectAs(t, ns.URL(), natsauth.Edge("lon", "n9"))
	for i := range burst {
		name := fmt.Sprintf("c%d", i)
		if _, err := ejs.CreatePushConsumer(t.Context(), stream, jetstream.ConsumerConfig{
			Durable: name, DeliverSubject: "_INBOX.edge.lon.n9." + name, AckPolicy: jetstream.AckNonePolicy,
		}); err != nil {
			t.Fatalf("create consumer %d of %d: %v", i, burst, err)
		}
	}
	h := hostileConsumer{"last of the burst, to the live subject", natsauth.Edge("lon", "n9"), stream, purge.LiveSubject("")}
	hostile := h.create(t, ns.URL())
	wait.For(t, 20*time.Second, "every creation announced", func() bool { return announced.Load() == int64(burst+1) })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil {
		t.Errorf("control's connection after %d consumers created at once: LastError = %v, want none", burst+1, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.For(t, 20*time.Second, "the hostile consumer deleted", func() bool { return !consumerExists(t, js, stream, hostile) })
	wait.For(t, 10*time.Second, "the overflow logged", func() bool { return logs.Count("faster than") > 0 })
	if got := logs.Count("faster than"); got != 1 {
		t.Errorf("the overflow was logged %d times, want once (a minute at most)", got)
	}
	// The sweep at start, then what was queued: checked, and left alone.
	wait.For(t, 20*time.Second, "the sweep at start and the queue checked", func() bool {
		return w.sweeps.Load() >= 1 && len(w.advisories) == 0
	})
	cancel()
	<-done
	if got := metricstest.Values(t, reg)["deleted"]; got != 1 {
		t.Errorf("consumers deleted = %v, want 1: only the hostile one", got)
	}
}

// TestConsumerSweeperWritesHeldBackWarnings: what the sweeper's warnings held back is written
// when run returns, though no warning follows: the latest of each, with the count of the
// others.
func TestConsumerSweeperWritesHeldBackWarnings(t *testing.T) {
	ns := startNATS(t)
	_, js := natstest.ConnectURL(t, ns.URL(), natsOptions(t, ns.URL(), natsauth.Control())...)
	logs := &logtest.Warnings{}
	w := newConsumerSweeper(js, "", time.Hour, prometheus.NewCounter(prometheus.CounterOpts{Name: "deleted"}), slog.New(logs))
	warnings := map[string]*fleet.RateLog{"deleted a push consumer": w.logDel, "checking the consumers": w.logFail, "faster than": w.logDrop}
	for _, rl := range warnings {
		rl.Warn()
		rl.Warn() // held back
	}
	w.subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // run returns at once
	w.run(ctx)
	for msg := range warnings {
		if got := logs.Count(msg); got != 2 {
			t.Errorf("%q logged %d times once run returned, want twice: the first and the held back", msg, got)
		}
	}
}

// TestConsumerSweepKeepsToItsFleet: control looks only at its own prefix's streams. Push
// consumers that deliver outside every fleet inbox, on another fleet's streams in the same
// account (the default prefix's) or on another application's stream, are left alone, made
// before control starts or after; the one on its own purge stream is deleted.
func TestConsumerSweepKeepsToItsFleet(t *testing.T) {
	ns := startNATS(t)
	_, cjs := connect(t, ns.URL())
	const prefix = "acme.cdn"
	for _, p := range []string{"", prefix} {
		if err := fleet.EnsureBuckets(t.Context(), cjs, p, time.Second, 1); err != nil {
			t.Fatal(err)
		}
		if err := purge.EnsureStream(t.Context(), cjs, p, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cjs.CreateStream(t.Context(), jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	consumers := []struct {
		stream, deliver string
		keep            bool
	}{
		{purge.StreamName(""), purge.LiveSubject(""), true},
		{"KV_" + wire.Bucket("", wire.ConfigBucket), "audit.config", true},
		{"ORDERS", "workers.orders", true},
		{purge.StreamName(prefix), purge.LiveSubject(prefix), false},
	}
	create := func(name string) {
		t.Helper()
		for _, c := range consumers {
			if _, err := cjs.CreatePushConsumer(t.Context(), c.stream, jetstream.ConsumerConfig{
				Durable: name, DeliverSubject: c.deliver, AckPolicy: jetstream.AckNonePolicy,
			}); err != nil {
				t.Fatalf("create consumer %s on %s: %v", name, c.stream, err)
			}
		}
	}
	check := func(name string) {
		t.Helper()
		for _, c := range consumers {
			if got := consumerExists(t, cjs, c.stream, name); got != c.keep {
				t.Errorf("consumer %s of %s delivering to %s exists = %v, want %v", name, c.stream, c.deliver, got, c.keep)
			}
		}
	}

	create("before")
	ts := startServer(t, Config{NATSURL: ns.URL(), Prefix: prefix, PurgeRate: -1}, func(s *Server) { s.sweepEvery = 20 * time.Millisecond })
	wait.For(t, 20*time.Second, "the sweep at start", func() bool { return ts.sweeps() >= 1 })
	check("before")
	create("after")
	ts.waitSweep(t)
	check("after")
	if got := hostileDeleted(t, ts); got != 2 {
		t.Errorf("hostile consumers deleted = %v, want 2", got)
	}
}

// TestStreamUsageOfDeletedStream: a stream deleted by hand (`nats stream rm`, `nats kv del`)
// loses its series at the next sweep, rather than keeping the last values it had: those would
// say the bucket is still there, as full as it was, and hide the loss from the alerts on it.
// The other streams keep theirs.
func TestStreamUsageOfDeletedStream(t *testing.T) {
	ns := startNATS(t)
	ts := startServer(t, Config{NATSURL: ns.URL(), PurgeRate: -1}, func(s *Server) { s.sweepEvery = 20 * time.Millisecond })
	_, cjs := connect(t, ns.URL())
	subject := "$KV." + wire.Bucket("", wire.LatencyBucket) + "." + wire.LatencyKey("lon", "n1", netip.MustParsePrefix("192.0.2.0/24"))
	if _, err := cjs.Publish(t.Context(), subject, bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	ts.waitSweep(t)
	latency := "KV_" + wire.Bucket("", wire.LatencyBucket)
	series := func(name, stream string) string { return "meridian_control_stream_" + name + ",stream=" + stream }
	got := metricstest.Values(t, ts.reg)
	if v := got[series("bytes", latency)]; v < 1000 {
		t.Fatalf("%s = %v before the deletion, want at least the record's 1000 bytes", series("bytes", latency), v)
	}
	if err := cjs.DeleteStream(t.Context(), latency); err != nil {
		t.Fatal(err)
	}
	ts.waitSweep(t)
	got = metricstest.Values(t, ts.reg)
	for _, name := range []string{"bytes", "max_bytes", "consumers", "max_consumers"} {
		if v, present := got[series(name, latency)]; present {
			t.Errorf("%s = %v after the stream was deleted, want no series", series(name, latency), v)
		}
		if _, present := got[series(name, purge.StreamName(""))]; !present {
			t.Errorf("%s is gone, want it kept (its stream still exists)", series(name, purge.StreamName("")))
		}
	}
}

// TestStreamUsageExported: control's metrics say how full each of the fleet's streams is
// against its bounds, so an operator can alert on the latency bucket filling (honest edges
// fill it on a busy fleet, docs/security.md) or a stream near its consumer bound without the
// NATS monitoring port. Before, only `nats stream info` said so.
func TestStreamUsageExported(t *testing.T) {
	ns := startNATS(t)
	ts := startServer(t, Config{NATSURL: ns.URL(), PurgeRate: -1, MaxConsumers: 1234}, func(s *Server) { s.sweepEvery = 20 * time.Millisecond })
	// As an edge writes a record (edge/beacon.go), with its own credential.
	_, ejs := connectAs(t, ns.URL(), natsauth.Edge("lon", "n1"))
	record := bytes.Repeat([]byte("x"), 1000)
	subject := "$KV." + wire.Bucket("", wire.LatencyBucket) + "." + wire.LatencyKey("lon", "n1", netip.MustParsePrefix("192.0.2.0/24"))
	if _, err := ejs.Publish(t.Context(), subject, record); err != nil {
		t.Fatal(err)
	}
	ts.waitSweep(t)
	latency := "KV_" + wire.Bucket("", wire.LatencyBucket)
	got := metricstest.Values(t, ts.reg)
	for _, c := range []struct {
		series string
		ok     func(float64) bool
		want   string
	}{
		{"meridian_control_stream_bytes,stream=" + latency, func(v float64) bool { return v >= float64(len(record)) }, "at least the record's 1000 bytes"},
		{"meridian_control_stream_max_bytes,stream=" + latency, func(v float64) bool { return v == fleet.LatencyMaxBytes }, "the bucket's 64 MiB"},
		{"meridian_control_stream_max_consumers,stream=" + purge.StreamName(""), func(v float64) bool { return v == 1234 }, "--max-consumers"},
		{"meridian_control_stream_consumers,stream=" + purge.StreamName(""), func(v float64) bool { return v >= 0 }, "present"},
	} {
		if v, present := got[c.series]; !present || !c.ok(v) {
			t.Errorf("%s = %v (present %v), want %s", c.series, v, present, c.want)
		}
	}
}
