package fleet_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRegistrarSharedAfterCut: what the first heartbeat after a cut says (OnWrite's shared)
// about the node's key. A key the bucket's TTL removed during the cut holds no other process's
// write, as a first write over no entry does not: not shared (before, it was, and the edge
// held its purge acks for max_lag after every NATS outage or control restart longer than the
// TTL). Another process's write made during the cut, or a delete (a clean stop's), is shared.
func TestRegistrarSharedAfterCut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ttl    time.Duration
		during func(t *testing.T, kv jetstream.KeyValue)
		shared bool
	}{
		{"key expired", testTTL, func(t *testing.T, kv jetstream.KeyValue) {
			wait.For(t, 10*testTTL, "the key to expire", func() bool {
				_, err := kv.Get(t.Context(), wire.FleetKey("lon", "n1"))
				return errors.Is(err, jetstream.ErrKeyNotFound)
			})
		}, false},
		{"another process wrote", time.Minute, func(t *testing.T, kv jetstream.KeyValue) {
			other := node("lon", "n1")
			other.Load = wire.LoadReport{RequestsPerSec: 9, Healthy: true, At: time.Now()}
			b, _ := json.Marshal(other)
			if _, err := kv.Put(t.Context(), wire.FleetKey("lon", "n1"), b); err != nil {
				t.Fatalf("put: %v", err)
			}
		}, true},
		{"deleted", time.Minute, func(t *testing.T, kv jetstream.KeyValue) {
			if err := kv.Delete(t.Context(), wire.FleetKey("lon", "n1")); err != nil {
				t.Fatalf("delete: %v", err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := setupTTL(t, tc.ttl)
			kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
			if err != nil {
				t.Fatal(err)
			}
			c := natstest.NewCutter(t, "127.0.0.1", s.URL())
			_, ejs := natstest.ConnectURL(t, c.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
			writes := make(chan bool, 4096)
			r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 50 * time.Millisecond,
				OnWrite: func(_ time.Time, shared bool) {
					select {
					case writes <- shared:
					default:
					}
				}})
			if err != nil {
				t.Fatalf("NewRegistrar: %v", err)
			}
			run(t, r.Run)
			if shared := <-writes; shared {
				t.Fatal("first write over no entry: shared, want not")
			}
			c.Cut()
			wait.For(t, 5*time.Second, "a failed heartbeat", func() bool { return r.Err() != nil })
			// Heartbeats are sequential: every write answered before the cut is reported by now.
			for len(writes) > 0 {
				<-writes
			}
			tc.during(t, kv)
			c.Restore()
			select {
			case shared := <-writes:
				if shared != tc.shared {
					t.Errorf("first write after the cut: shared %v, want %v", shared, tc.shared)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no heartbeat answered within 10s of the restore")
			}
		})
	}
}
