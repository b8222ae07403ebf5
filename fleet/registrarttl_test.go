package fleet_test

import (
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

// TestRegistrarRereadsTTLAfterFailure: control restarted with a lower heartbeat_ttl updates
// the fleet bucket's TTL (EnsureBuckets) while the edges' heartbeats fail or their
// connections are down (its embedded NATS restarts with it). The first heartbeat answered
// after that counts the new TTL (BucketTTL, which the edge's lapse timer and rejoin check
// use): after a refused heartbeat on a connection that stayed up, and after a reconnect whose
// gap no heartbeat saw. Before, the registrar read the TTL again only every 60th heartbeat,
// so for up to a minute it took its key to live longer than the bucket kept it.
func TestRegistrarRereadsTTLAfterFailure(t *testing.T) {
	const oldTTL, newTTL = time.Minute, 5 * time.Second
	for _, tc := range []struct {
		name string
		// during makes the registrar miss the bucket's change (lower, which lowers its TTL),
		// given the test's and the registrar's connections.
		during func(t *testing.T, js jetstream.JetStream, c *natstest.Cutter, enc *nats.Conn, r *fleet.Registrar, lower func())
	}{
		{"a heartbeat refused", func(t *testing.T, js jetstream.JetStream, _ *natstest.Cutter, enc *nats.Conn, r *fleet.Registrar, lower func()) {
			reconnects := enc.Stats().Reconnects
			st, err := js.Stream(t.Context(), "KV_"+wire.Bucket("", wire.FleetBucket))
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			cfg.MaxMsgSize = 16
			if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
				t.Fatalf("fleet bucket max value size: %v", err)
			}
			r.Beat()
			wait.For(t, 10*time.Second, "a refused heartbeat", func() bool { return r.Err() != nil })
			lower() // also takes values up to fleet.MaxNodeBytes again
			if enc.Stats().Reconnects != reconnects {
				t.Fatal("the registrar's connection reconnected: not a heartbeat refusal alone")
			}
		}},
		{"reconnected between heartbeats", func(t *testing.T, _ jetstream.JetStream, c *natstest.Cutter, enc *nats.Conn, r *fleet.Registrar, lower func()) {
			reconnects := enc.Stats().Reconnects
			c.Cut()
			// Then no heartbeat is asked for: one would find the client down, and fail.
			wait.For(t, 10*time.Second, "the registrar's connection down", func() bool { return !enc.IsConnected() })
			lower()
			c.Restore()
			wait.For(t, 10*time.Second, "the registrar's connection back", func() bool {
				return enc.IsConnected() && enc.Stats().Reconnects > reconnects
			})
			if err := r.Err(); err != nil {
				t.Fatalf("a heartbeat failed (%v): not a reconnect alone", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := setupTTL(t, oldTTL)
			c := natstest.NewCutter(t, "127.0.0.1", s.URL())
			enc, ejs := natstest.ConnectURL(t, c.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
			ttls := make(chan time.Duration, 16)
			var r *fleet.Registrar
			// An hour between heartbeats: each one here is asked for (Beat), so the count
			// since the TTL was last read is known.
			r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: time.Hour,
				OnWrite: func(time.Time, bool) { ttls <- r.BucketTTL() }})
			if err != nil {
				t.Fatalf("NewRegistrar: %v", err)
			}
			run(t, r.Run)
			if got := <-ttls; got != oldTTL {
				t.Fatalf("first heartbeat: BucketTTL %v, want %v", got, oldTTL)
			}
			tc.during(t, js, c, enc, r, func() {
				if err := fleet.EnsureBuckets(t.Context(), js, "", newTTL, 1); err != nil {
					t.Fatalf("EnsureBuckets with a lower TTL: %v", err)
				}
			})
			r.Beat()
			select {
			case got := <-ttls:
				if got != newTTL {
					t.Errorf("first heartbeat answered after: BucketTTL %v, want the bucket's new %v", got, newTTL)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no heartbeat answered within 10s")
			}
		})
	}
}

// TestRegistrarTTLReadsOnlyWhenDue: the registrar reads the bucket's TTL (a stream info
// request) only when it is due: at the bind, not again for the next answered heartbeats (one
// read per ttlRereadBeats of them in steady state), none while NATS is out of reach, and once
// after the reconnect. Counted as the server sees them: every stream info request for the
// fleet bucket's stream, whoever sends it, reaches a subscriber of its subject.
func TestRegistrarTTLReadsOnlyWhenDue(t *testing.T) {
	s, _ := setupTTL(t, time.Minute)
	nc, _ := s.Connect(t)
	seen := make(chan *nats.Msg, 256)
	const marker = "test.registrar.marker"
	info := "$JS.API.STREAM.INFO.KV_" + wire.Bucket("", wire.FleetBucket)
	if _, err := nc.ChanSubscribe(info, seen); err != nil {
		t.Fatalf("subscribe %s: %v", info, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := natstest.NewCutter(t, "127.0.0.1", s.URL())
	enc, ejs := natstest.ConnectURL(t, c.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	// infos returns how many stream info requests the server routed since the last call. The
	// marker is one too, sent on the registrar's connection with its own reply subject: it
	// takes the registrar's requests' path and comes after them (a message on another
	// connection could overtake a JetStream API request the server had already answered).
	infos := func() int {
		t.Helper()
		if err := enc.PublishRequest(info, marker, nil); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			select {
			case m := <-seen:
				if m.Reply == marker {
					return n
				}
				n++
			case <-time.After(10 * time.Second):
				t.Fatal("the marker did not come back within 10s")
			}
		}
	}
	written := make(chan struct{}, 16)
	// An hour between heartbeats: each one here is asked for (Beat).
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: time.Hour,
		OnWrite: func(time.Time, bool) { written <- struct{}{} }})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	beat := func() {
		t.Helper()
		r.Beat()
		select {
		case <-written:
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat answered within 10s")
		}
	}
	run(t, r.Run)
	select {
	case <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("first heartbeat not answered within 10s")
	}
	if n := infos(); n == 0 || n > 2 {
		t.Errorf("bind and first heartbeat: %d stream info requests, want 1 or 2 (the bind's, the TTL's)", n)
	}
	for range 10 {
		beat()
	}
	if n := infos(); n != 0 {
		t.Errorf("10 answered heartbeats in steady state: %d stream info requests, want none", n)
	}

	c.Cut()
	wait.For(t, 10*time.Second, "the registrar's connection down", func() bool { return !enc.IsConnected() })
	r.Beat()
	wait.For(t, 10*time.Second, "a heartbeat failed", func() bool { return r.Err() != nil })
	c.Restore()
	wait.For(t, 10*time.Second, "the registrar's connection back", func() bool { return enc.IsConnected() })
	beat()
	if n := infos(); n != 1 {
		t.Errorf("heartbeats failing, then one answered after the reconnect: %d stream info requests, want 1", n)
	}
	for range 5 {
		beat()
	}
	if n := infos(); n != 0 {
		t.Errorf("5 answered heartbeats after that: %d stream info requests, want none", n)
	}
}
