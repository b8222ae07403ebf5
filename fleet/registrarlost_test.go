package fleet_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRegistrarLostAnswer: what the heartbeat after one whose answer was lost (its write
// stored) says about the node's key, with the watch of the key handing its entries to the
// registrar (KeyWatch). The write there is the process's own (its instance id): not shared.
// Before, it was, and the edge held its purge acks as in a restart's overlap. A write of
// another process after the lost one is still shared, whether it carries an instance id or
// not (a version before it: never this process's).
func TestRegistrarLostAnswer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		instance string // the other process's write after the lost one ("-": none)
		shared   bool
	}{
		{"own write, answer lost", "-", false},
		{"another process wrote after it", "0123456789abcdef", true},
		{"a process without an instance id wrote after it", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := setupTTL(t, time.Minute)
			kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
			if err != nil {
				t.Fatal(err)
			}
			_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
			lose := natstest.NewLoseAnswer(ejs, true)
			writes := make(chan bool, 4096)
			r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: lose, Node: node("lon", "n1"), Interval: 50 * time.Millisecond,
				OnWrite: func(_ time.Time, shared bool) {
					select {
					case writes <- shared:
					default:
					}
				}})
			if err != nil {
				t.Fatalf("NewRegistrar: %v", err)
			}
			run(t, func(ctx context.Context) error {
				fleet.WatchKeys(ctx, ejs, wire.Bucket("", wire.FleetBucket), []string{r.Key()}, slog.New(slog.DiscardHandler), r.KeyWatch())
				return nil
			})
			run(t, r.Run)
			if shared := <-writes; shared {
				t.Fatal("first write over no entry: shared, want not")
			}
			lose.Armed.Store(true)
			var lostRev uint64
			select {
			case lostRev = <-lose.Lost:
			case <-time.After(10 * time.Second):
				t.Fatal("no heartbeat within 10s")
			}
			// The registrar waits on the lost answer: every write answered before is reported.
			for len(writes) > 0 {
				<-writes
			}
			e, err := kv.Get(t.Context(), r.Key())
			if err != nil || e.Revision() != lostRev {
				t.Fatalf("the lost write is not the key's entry (revision %d): %v, %v", lostRev, e, err)
			}
			var stored wire.Node
			if err := json.Unmarshal(e.Value(), &stored); err != nil || stored.Instance != r.Instance() || len(r.Instance()) != 16 {
				t.Fatalf("stored registration's instance %q (%v), want the registrar's %q (16 hex digits)", stored.Instance, err, r.Instance())
			}
			if tc.instance != "-" {
				other := node("lon", "n1")
				other.Instance = tc.instance
				other.Load = wire.LoadReport{Healthy: true, At: time.Now()}
				b, _ := json.Marshal(other)
				if _, err := kv.Put(t.Context(), r.Key(), b); err != nil {
					t.Fatalf("put: %v", err)
				}
			}
			select {
			case shared := <-writes:
				if shared != tc.shared {
					t.Errorf("first write after the lost answer: shared %v, want %v", shared, tc.shared)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no heartbeat answered within 10s of the lost one")
			}
		})
	}
}
