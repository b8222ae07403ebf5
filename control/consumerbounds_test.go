package control

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestConsumerBounds: NATS cannot bound the consumers of one credential (one account for the
// whole fleet), but it bounds those of a stream and how long an unused one lives. Control sets
// both on the fleet's streams: a leaked edge credential making consumers is refused at the
// bound, a consumer asking to outlive the inactivity limit is refused, a durable one gets the
// limit (before, it lived for ever), and one made while no limit was set is deleted at start.
// What the runaway made goes once its connection is gone, and so do the watches of processes
// that crashed: restarts do not use the bound up.
func TestConsumerBounds(t *testing.T) {
	const maxConsumers, inactive = 6, time.Second
	ns := startNATS(t)
	_, cjs := connect(t, ns.URL())
	ctx := t.Context()
	if err := fleet.EnsureBuckets(ctx, cjs, "", time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := purge.EnsureStream(ctx, cjs, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	stream := purge.StreamName("")
	edge := natsauth.Edge("lon", "n9")
	enc, ejs := connectAs(t, ns.URL(), edge)
	// Made by a leaked credential before this version, delivering to its own inbox where
	// nobody listens: nothing would ever remove it.
	if _, err := ejs.CreatePushConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: "forever", DeliverSubject: enc.NewInbox(), AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatal(err)
	}

	startServer(t, Config{NATSURL: ns.URL(), PurgeRate: -1, MaxConsumers: maxConsumers, ConsumerInactiveLimit: inactive})
	if consumerExists(t, cjs, stream, "forever") {
		t.Error("a durable consumer without an inactivity limit survived control's start")
	}
	checkStreamBounds(t, cjs, "", maxConsumers, inactive)
	if _, err := ejs.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "long", InactiveThreshold: time.Hour}); err == nil {
		t.Error("a consumer with an inactivity threshold of an hour was created")
	}

	// The runaway: push consumers delivering to its own inbox (as a KV watch does, so the
	// sweeper keeps them), one subscription keeping them all in use.
	rnc, rjs := connectAs(t, ns.URL(), edge)
	if _, err := rnc.Subscribe(edge.InboxPrefix()+".>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	base := natstest.StreamConsumers(t, cjs, stream)
	var refused error
	for i := 0; i <= maxConsumers && refused == nil; i++ {
		c, err := rjs.CreatePushConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("runaway%d", i), DeliverSubject: rnc.NewInbox(),
			DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckNonePolicy,
		})
		if err != nil {
			refused = err
			if i != maxConsumers-base {
				t.Errorf("the runaway was refused its consumer %d, want refused at %d (the stream has %d of others)", i+1, maxConsumers-base+1, base)
			}
			break
		}
		if got := c.CachedInfo().Config.InactiveThreshold; got != inactive {
			t.Errorf("the runaway's durable consumer has an inactivity threshold of %v, want the stream's limit %v", got, inactive)
		}
	}
	if !errors.Is(refused, jetstream.ErrMaximumConsumersLimit) {
		t.Fatalf("the runaway's consumer %d: %v, want %v", maxConsumers-base+1, refused, jetstream.ErrMaximumConsumersLimit)
	}
	rnc.Close() // it crashes, or its credential is revoked
	wait.For(t, 10*inactive, "the runaway's consumers gone", func() bool {
		return natstest.StreamConsumers(t, cjs, stream) == base
	})

	// Processes that crash right after they started watching the fleet bucket, as many as
	// the stream has room for: their watches go, and the next process watches.
	fleetStream := "KV_" + wire.Bucket("", wire.FleetBucket)
	base = natstest.StreamConsumers(t, cjs, fleetStream)
	for i := range maxConsumers - base {
		nc, js := connectAs(t, ns.URL(), natsauth.Edge("lon", fmt.Sprintf("c%d", i)))
		watch(t, js)
		nc.Close()
	}
	wait.For(t, 10*inactive, "the crashed processes' watches gone", func() bool {
		return natstest.StreamConsumers(t, cjs, fleetStream) == base
	})
	_, js := connectAs(t, ns.URL(), natsauth.Edge("lon", "n1"))
	watch(t, js)
}

// watch watches the fleet bucket and waits for its initial values.
func watch(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("watch the fleet bucket: %v", err)
	}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return
			}
		case <-ctx.Done():
			t.Fatalf("watch the fleet bucket: %v", ctx.Err())
		}
	}
}

// TestConsumerBoundsSurviveAnotherStart: every control start makes sure of the buckets and the
// purge stream before it bounds their consumers, and control VMs start at any time. That step
// must keep the bounds another control set: lifted, if only until the same start sets them
// again, a consumer made meanwhile could ask to outlive the limit, or get no threshold at
// all and live for ever, and a large fleet's stream would fall back to nats-server's default
// of 1,000 consumers.
func TestConsumerBoundsSurviveAnotherStart(t *testing.T) {
	const maxConsumers, inactive = 2500, 7 * time.Second
	ns := startNATS(t)
	_, cjs := connect(t, ns.URL())
	startServer(t, Config{NATSURL: ns.URL(), PurgeRate: -1, MaxConsumers: maxConsumers, ConsumerInactiveLimit: inactive})

	// What another control's start does before it bounds the consumers.
	ctx := t.Context()
	if err := fleet.EnsureBuckets(ctx, cjs, "", time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := purge.EnsureStream(ctx, cjs, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	checkStreamBounds(t, cjs, "after another start made sure of it", maxConsumers, inactive)
}

// checkStreamBounds checks that every stream of the fleet has control's consumer bounds; when
// names the moment for the error.
func checkStreamBounds(t *testing.T, js jetstream.JetStream, when string, maxConsumers int, inactive time.Duration) {
	t.Helper()
	for _, name := range fleetStreams("") {
		st, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		if cfg.MaxConsumers != maxConsumers || cfg.ConsumerLimits.InactiveThreshold != inactive {
			t.Errorf("stream %s %s: max consumers %d, inactive threshold limit %v; want %d, %v",
				name, when, cfg.MaxConsumers, cfg.ConsumerLimits.InactiveThreshold, maxConsumers, inactive)
		}
	}
}
