package control

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/tcplink"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// watchRecorder is a fleet.WatchHandler that keeps the last value of each key.
type watchRecorder struct {
	mu   sync.Mutex // guards vals
	vals map[string]string
}

func (r *watchRecorder) Snapshot(entries []jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vals = make(map[string]string)
	for _, e := range entries {
		r.vals[e.Key()] = string(e.Value())
	}
}

func (r *watchRecorder) Update(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() == jetstream.KeyValuePut {
		r.vals[e.Key()] = string(e.Value())
	} else {
		delete(r.vals, e.Key())
	}
}

func (r *watchRecorder) get(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vals[key]
}

// TestFleetOutlivesConsumerInactivityLimit: control's inactivity limit makes the server delete
// the consumers of a client that is away for longer than it, so a node's KV watch and its
// purge subscription must not depend on a consumer outliving a cut. A node is cut off (its
// own connection, or its PoP's leaf link, where its connection stays up) until the server
// deleted its watch's consumer; a purge and a config change made meanwhile reach it once the
// cut ends (the purge applied and acked to control), and the watch keeps delivering after.
func TestFleetOutlivesConsumerInactivityLimit(t *testing.T) {
	const inactive = 500 * time.Millisecond
	for _, tt := range []struct {
		name string
		// edgeURL starts what stands between the node and the cluster and returns the URL the
		// node connects to, and the link that cuts it off.
		edgeURL func(t *testing.T, hub *server.Server, leafPort int) (string, *tcplink.Link)
	}{
		{
			name: "node's connection cut",
			edgeURL: func(t *testing.T, hub *server.Server, _ int) (string, *tcplink.Link) {
				link := listenLink(t, hub.Addr().String())
				return "nats://" + link.Addr().String(), link
			},
		},
		{
			name: "leaf link cut",
			edgeURL: func(t *testing.T, hub *server.Server, leafPort int) (string, *tcplink.Link) {
				link := listenLink(t, fmt.Sprintf("127.0.0.1:%d", leafPort))
				u, _ := url.Parse("nats-leaf://" + link.Addr().String())
				leaf := natstest.StartOptions(t, &server.Options{ServerName: "leaf", Host: "127.0.0.1", Port: -1,
					JsAccDefaultDomain: map[string]string{"$G": "fleet"},
					LeafNode: server.LeafNodeOpts{ReconnectInterval: 50 * time.Millisecond,
						Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
				wait.For(t, 10*time.Second, "the leaf link", func() bool { return hub.NumLeafNodes() == 1 })
				return leaf.ClientURL(), link
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			leafPort := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			hub := natstest.StartOptions(t, &server.Options{ServerName: "hub", Host: "127.0.0.1", Port: -1,
				JetStream: true, JetStreamDomain: "fleet", StoreDir: t.TempDir(),
				// Not advertised: the leaf node would learn the hub's own address and reconnect
				// around the link.
				LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort, NoAdvertise: true}})
			cnc, cjs := natstest.ConnectURL(t, hub.ClientURL())
			if err := fleet.EnsureBuckets(ctx, cjs, "", time.Second, 1); err != nil {
				t.Fatal(err)
			}
			if err := purge.EnsureStream(ctx, cjs, "", 0, 1); err != nil {
				t.Fatal(err)
			}
			for _, st := range fleetStreams("") {
				if err := boundConsumers(ctx, cjs, st, 100, inactive, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), slog.New(slog.DiscardHandler)); err != nil {
					t.Fatal(err)
				}
			}
			acks := make(chan []byte, 64)
			if _, err := cnc.Subscribe(purge.AckSubjects(""), func(m *nats.Msg) { acks <- m.Data }); err != nil {
				t.Fatal(err)
			}
			configKV, err := cjs.KeyValue(ctx, wire.Bucket("", wire.ConfigBucket))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := configKV.Put(ctx, "k", []byte("v0")); err != nil {
				t.Fatal(err)
			}

			edgeURL, link := tt.edgeURL(t, hub, leafPort)
			_, ejs := natstest.ConnectURL(t, edgeURL, nats.ReconnectWait(20*time.Millisecond),
				nats.MaxReconnects(-1))
			var applied sync.Map
			sub, err := purge.NewSubscriber(purge.SubscriberConfig{JS: ejs, PoP: "lon", Node: "n1",
				Apply: func(_ context.Context, m purge.Message) (int, error) {
					applied.Store(m.ID, true)
					return 1, nil
				},
				OnGap:        func(context.Context, uint64, uint64) { t.Error("a purge was reported lost") },
				ConfirmEvery: 50 * time.Millisecond,
				RetryMin:     10 * time.Millisecond, RetryMax: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			rec := &watchRecorder{}
			rctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			t.Cleanup(func() { stop(); wg.Wait() })
			wg.Go(func() { _ = sub.Run(rctx) })
			wg.Go(func() {
				fleet.Watch(rctx, ejs, wire.Bucket("", wire.ConfigBucket), ">", slog.New(slog.DiscardHandler), rec)
			})
			<-sub.Ready()
			configStream := "KV_" + wire.Bucket("", wire.ConfigBucket)
			wait.For(t, 10*time.Second, "the watch's first value", func() bool { return rec.get("k") == "v0" })
			if n := natstest.StreamConsumers(t, cjs, configStream); n != 1 {
				t.Fatalf("the config stream has %d consumers, want the watch's", n)
			}

			link.Cut()
			wait.For(t, 20*inactive, "the server deleting the cut node's watch", func() bool {
				return natstest.StreamConsumers(t, cjs, configStream) == 0
			})
			m := purge.Message{ID: purge.NewID(), Host: "www.example.com", Kind: purge.KindURL,
				Values: []string{"/during-cut"}, IssuedAt: time.Now()}
			if _, err := purge.Publish(ctx, cjs, "", m); err != nil {
				t.Fatal(err)
			}
			if _, err := configKV.Put(ctx, "k", []byte("v1")); err != nil {
				t.Fatal(err)
			}
			link.Restore()

			wait.For(t, 30*time.Second, "the purge made during the cut applied", func() bool {
				_, ok := applied.Load(m.ID)
				return ok
			})
			wait.For(t, 30*time.Second, "its ack at control", func() bool {
				for {
					select {
					case a := <-acks:
						if bytes.Contains(a, []byte(m.ID)) {
							return true
						}
					default:
						return false
					}
				}
			})
			wait.For(t, 30*time.Second, "the change made during the cut watched", func() bool { return rec.get("k") == "v1" })
			if _, err := configKV.Put(ctx, "k", []byte("v2")); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 30*time.Second, "a change after the cut watched", func() bool { return rec.get("k") == "v2" })
		})
	}
}

// listenLink starts a link to target that the test can cut.
func listenLink(t *testing.T, target string) *tcplink.Link {
	t.Helper()
	link, err := tcplink.Listen("127.0.0.1:0", target, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })
	return link
}
