package fleet_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/wire"
)

// gatedWatch hands a watch's entries to the registrar's KeyWatch, and tells each revision it
// handed on; once frozen it hands on no more: the registrar's view of its key goes stale, as
// it is between another process's write and the watch's delivery of it.
type gatedWatch struct {
	h      fleet.WatchHandler
	frozen atomic.Bool
	revs   chan uint64
}

func (g *gatedWatch) Snapshot(entries []jetstream.KeyValueEntry) {
	g.h.Snapshot(entries)
	for _, e := range entries {
		g.revs <- e.Revision()
	}
}

func (g *gatedWatch) Update(e jetstream.KeyValueEntry) {
	if g.frozen.Load() {
		return
	}
	g.h.Update(e)
	g.revs <- e.Revision()
}

// TestRegistrarOwnWriteStaleView: what a registrar whose heartbeat was stored while its answer
// was lost does next when its watch's view of the key is stale. Writing over its own stored
// write is a write over that revision, and leaving deletes over it, so another process's write
// made since (a restart's overlap) is never taken for its own: the next heartbeat reports the
// key shared, and a stop leaves the other's registration. A stop over its own stored write
// deletes the key. A write over another's whose answer was lost reports shared with the next
// answered heartbeat, though that one writes over its own.
func TestRegistrarOwnWriteStaleView(t *testing.T) {
	for _, tc := range []struct {
		name       string
		otherFirst bool // another process's write is on the key before the registrar starts
		otherAfter bool // another process writes after the lost write, unseen by the watch
		stop       bool // stop after that instead of a heartbeat
		// want: the next answered heartbeat's shared (if !stop), or whether the key is left
		// with the other's write after the stop (if stop; else it is deleted)
		want bool
	}{
		{name: "another writes after the lost write, heartbeat", otherAfter: true, want: true},
		{name: "another writes after the lost write, stop", otherAfter: true, stop: true, want: true},
		{name: "own lost write, stop", stop: true, want: false},
		{name: "lost write over another's, heartbeat", otherFirst: true, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := setupTTL(t, time.Minute)
			kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
			if err != nil {
				t.Fatal(err)
			}
			putOther := func() uint64 {
				t.Helper()
				other := node("lon", "n1")
				other.Instance = "0123456789abcdef"
				other.Load = wire.LoadReport{Healthy: true, At: time.Now()}
				b, _ := json.Marshal(other)
				rev, err := kv.Put(t.Context(), "lon.n1", b)
				if err != nil {
					t.Fatalf("put another process's registration: %v", err)
				}
				return rev
			}
			if tc.otherFirst {
				putOther()
			}
			_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
			fa := natstest.NewLoseAnswer(ejs, false)
			r, writes, gw := gatedRegistrar(t, fa, ejs)
			var stopReg func()
			if !tc.otherFirst {
				// The first heartbeat, answered; the next one's answer is lost.
				stopReg = run(t, r.Run)
				if shared := <-writes; shared {
					t.Fatal("first write over no entry: shared, want not")
				}
				fa.Armed.Store(true)
				r.Beat()
			} else {
				// The first heartbeat, over the other's write (a Put), has its answer lost.
				fa.Armed.Store(true)
				stopReg = run(t, r.Run)
			}
			var lostRev uint64
			select {
			case lostRev = <-fa.Lost:
			case <-time.After(10 * time.Second):
				t.Fatal("no heartbeat stored within 10s")
			}
			// The watch hands the lost write to the registrar; with otherAfter it hands on nothing
			// after it.
			for deadline := time.After(10 * time.Second); ; {
				var rev uint64
				select {
				case rev = <-gw.revs:
				case <-deadline:
					t.Fatalf("the watch did not deliver the lost write (revision %d) within 10s", lostRev)
				}
				if rev == lostRev {
					break
				}
			}
			gw.frozen.Store(true)
			var otherRev uint64
			if tc.otherAfter {
				otherRev = putOther()
			}
			if !tc.stop {
				r.Beat()
				select {
				case shared := <-writes:
					if shared != tc.want {
						t.Errorf("first heartbeat answered after the lost one: shared %v, want %v", shared, tc.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no heartbeat answered within 10s of the lost one")
				}
				return
			}
			stopReg() // a clean stop: leave deletes the key over this process's write only
			var rev uint64
			e, err := kv.Get(t.Context(), r.Key())
			if err == nil {
				rev = e.Revision()
			}
			switch {
			case tc.want && (err != nil || rev != otherRev):
				t.Errorf("after the stop the key is at revision %d (%v), want the other process's write (revision %d) left", rev, err, otherRev)
			case !tc.want && !errors.Is(err, jetstream.ErrKeyNotFound):
				t.Errorf("after the stop over its own lost write the key is at revision %d (%v), want deleted", rev, err)
			}
		})
	}
}

// TestRegistrarLeaveWatchBehind: a stop just after an answered heartbeat, before the watch of
// the key delivered it (its view still at the process's previous write), deletes the key: the
// delete goes over the last answered write, not over the older write the watch last showed.
// Before, leave deleted over the watch's revision whenever it was the process's own and not
// the last answered one, the delete was refused, and the key outlived the clean stop until
// its TTL.
func TestRegistrarLeaveWatchBehind(t *testing.T) {
	s, js := setupTTL(t, time.Minute)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	r, writes, gw := gatedRegistrar(t, ejs, ejs)
	stop := run(t, r.Run)
	<-writes
	// The key was empty: the first revision the watch hands on is the first heartbeat's.
	select {
	case <-gw.revs:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not deliver the first heartbeat within 10s")
	}
	gw.frozen.Store(true)
	r.Beat()
	select {
	case <-writes:
	case <-time.After(10 * time.Second):
		t.Fatal("no second heartbeat answered within 10s")
	}
	stop()
	if e, err := kv.Get(t.Context(), r.Key()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		var rev uint64
		if err == nil {
			rev = e.Revision()
		}
		t.Errorf("after a clean stop the key is at revision %d (%v), want deleted", rev, err)
	}
}

// gatedRegistrar is a registrar of lon/n1 writing through js, with an hour between heartbeats,
// whose writes (shared or not) come on writes, and whose key watch, read through watchJS until
// the test ends, is the gatedWatch returned.
func gatedRegistrar(t *testing.T, js, watchJS jetstream.JetStream) (*fleet.Registrar, chan bool, *gatedWatch) {
	t.Helper()
	writes := make(chan bool, 16)
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node("lon", "n1"), Interval: time.Hour,
		OnWrite: func(_ time.Time, shared bool) { writes <- shared }})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	gw := &gatedWatch{h: r.KeyWatch(), revs: make(chan uint64, 64)}
	run(t, func(ctx context.Context) error {
		fleet.WatchKeys(ctx, watchJS, wire.Bucket("", wire.FleetBucket), []string{r.Key()}, slog.New(slog.DiscardHandler), gw)
		return nil
	})
	return r, writes, gw
}
