package fleet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync/atomic"
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

const testTTL = time.Second

// setup starts NATS, creates the buckets and returns a JetStream context.
func setup(t *testing.T) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	return setupTTL(t, testTTL)
}

// setupTTL is setup with a fleet bucket whose keys live ttl.
func setupTTL(t *testing.T, ttl time.Duration) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	if err := fleet.EnsureBuckets(t.Context(), js, "", ttl, 1); err != nil {
		t.Fatalf("EnsureBuckets: %v", err)
	}
	return s, js
}

// run starts r.Run in the background; the returned stop cancels it and waits for Run to
// return.
func run(t *testing.T, fn func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func startView(t *testing.T, js jetstream.JetStream, clock func() time.Time) *fleet.View {
	t.Helper()
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: testTTL, Clock: clock})
	run(t, v.Run)
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("view not ready within 10s")
	}
	return v
}

func node(pop, id string) wire.Node {
	return wire.Node{PoP: pop, ID: id, Region: "eu", City: "Paris", Lat: 48.85, Lon: 2.35, HTTPAddr: "127.0.0.2:80", Capacity: 100}
}

func findNode(v *fleet.View, pop, id string) (wire.Node, bool) {
	for _, n := range v.Nodes() {
		if n.PoP == pop && n.ID == id {
			return n, true
		}
	}
	return wire.Node{}, false
}

func TestEnsureBucketsIdempotent(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.ConfigBucket))
	if err != nil {
		t.Fatalf("bind config bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "routing", []byte(`{"policy":"nearest"}`)); err != nil {
		t.Fatalf("put: %v", err)
	}
	before, _ := js.Stream(ctx, "KV_"+wire.Bucket("", wire.FleetBucket))
	if err := fleet.EnsureBuckets(ctx, js, "", testTTL, 1); err != nil {
		t.Fatalf("second EnsureBuckets: %v", err)
	}
	after, _ := js.Stream(ctx, "KV_"+wire.Bucket("", wire.FleetBucket))
	if !before.CachedInfo().Created.Equal(after.CachedInfo().Created) {
		t.Errorf("fleet stream recreated: created %v, then %v", before.CachedInfo().Created, after.CachedInfo().Created)
	}
	if e, err := kv.Get(ctx, "routing"); err != nil || string(e.Value()) != `{"policy":"nearest"}` {
		t.Errorf("config after second EnsureBuckets: %v, %v; want the value kept", e, err)
	}
	// Another TTL updates the bucket in place.
	if err := fleet.EnsureBuckets(ctx, js, "", 2*testTTL, 1); err != nil {
		t.Fatalf("EnsureBuckets with a new TTL: %v", err)
	}
	fkv, _ := js.KeyValue(ctx, wire.Bucket("", wire.FleetBucket))
	st, err := fkv.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if got, want := st.TTL(), 2*testTTL; got != want {
		t.Errorf("fleet TTL = %v, want %v", got, want)
	}
	cst, _ := kv.Status(ctx)
	if got, want := cst.History(), int64(5); got != want {
		t.Errorf("config history = %d, want %d", got, want)
	}
	if _, err := kv.Get(ctx, "routing"); err != nil {
		t.Errorf("config after TTL change: %v; want the value kept", err)
	}
}

// TestEnsureBucketsByteBounds: EnsureBuckets keeps the latency bucket's byte bound (control
// sizes it: SetLatencyMaxBytes) but gives one without a bound LatencyMaxBytes again, and
// leaves the other buckets without one, as before it kept any: a bound set by hand on those
// goes at the next start.
func TestEnsureBucketsByteBounds(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	for _, tt := range []struct {
		bucket       string
		byHand, want int64
	}{
		{wire.LatencyBucket, 200 << 20, 200 << 20},
		{wire.LatencyBucket, -1, fleet.LatencyMaxBytes},
		{wire.FleetBucket, 1 << 20, -1},
		{wire.ConfigBucket, 1 << 20, -1},
		{wire.PeerKeyBucket, 1 << 20, -1},
	} {
		t.Run(fmt.Sprintf("%s %d", tt.bucket, tt.byHand), func(t *testing.T) {
			name := "KV_" + wire.Bucket("", tt.bucket)
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			cfg.MaxBytes = tt.byHand
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if err := fleet.EnsureBuckets(ctx, js, "", testTTL, 1); err != nil {
				t.Fatal(err)
			}
			if st, err = js.Stream(ctx, name); err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.MaxBytes; got != tt.want {
				t.Errorf("%s's max bytes set to %d by hand, after EnsureBuckets = %d, want %d", name, tt.byHand, got, tt.want)
			}
		})
	}
}

func TestRegistrarJoinsAndLeaves(t *testing.T) {
	_, js := setup(t)
	v := startView(t, js, nil)
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{
		JS: js, Node: node("par", "n1"), Interval: 100 * time.Millisecond,
		Load: func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: 42, Healthy: true} },
	})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	stop := run(t, r.Run)
	wait.For(t, 5*time.Second, "node par.n1 in the view", func() bool {
		_, ok := findNode(v, "par", "n1")
		return ok
	})
	n, _ := findNode(v, "par", "n1")
	if n.Load.RequestsPerSec != 42 || !n.Load.Healthy || n.City != "Paris" || n.Load.At.IsZero() {
		t.Errorf("node = %+v, want registration with load 42 rps, healthy, stamped", n)
	}
	pops := v.PoPs()
	if len(pops) != 1 || pops[0].ID != "par" || len(pops[0].Nodes) != 1 {
		t.Errorf("PoPs() = %+v, want one PoP par with one node", pops)
	}
	if got := v.PeerSet("par"); len(got) != 1 {
		t.Errorf("PeerSet(par) = %d nodes, want 1", len(got))
	}
	// A clean stop deletes the key: the bucket sees a delete, not an expiry (which would not
	// show as a delete operation), and the view drops the node.
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	w, err := kv.Watch(t.Context(), wire.FleetKey("par", "n1"), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer func() { _ = w.Stop() }()
	stop()
	for deleted := false; !deleted; {
		select {
		case e := <-w.Updates():
			deleted = e != nil && e.Operation() == jetstream.KeyValueDelete
		case <-time.After(10 * time.Second):
			t.Fatal("no delete of par.n1 within 10s of a clean stop")
		}
	}
	wait.For(t, 5*time.Second, "node par.n1 gone", func() bool {
		_, ok := findNode(v, "par", "n1")
		return !ok
	})
}

// TestRegistrarStoppedBeforeFirstHeartbeat: a registrar stopped before its first heartbeat was
// written (an edge in a fleet stopped right after "edge serving") stops cleanly. The heartbeat
// the stop cut short failed with "context canceled", which was logged as "fleet heartbeat
// failing" and kept as Err, a warning on a clean stop.
func TestRegistrarStoppedBeforeFirstHeartbeat(t *testing.T) {
	_, js := setup(t)
	var w logtest.Warnings
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node("par", "n1"), Logger: slog.New(&w)})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stopped before Run's first heartbeat
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if n := w.Count(""); n != 0 {
		t.Errorf("%d warnings logged (%d of a failing heartbeat), want none", n, w.Count("fleet heartbeat failing"))
	}
	if err := r.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
}

func TestSilentNodeExpires(t *testing.T) {
	_, js := setup(t)
	// The view's clock stands still until the node is seen, so a stalled machine cannot age the
	// report out first; then it moves past the TTL.
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	v := startView(t, js, func() time.Time { return time.Unix(0, now.Load()) })
	kv, _ := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	n := node("fra", "n1")
	n.Load = wire.LoadReport{At: time.Unix(0, now.Load()), Healthy: true}
	b, _ := json.Marshal(n)
	if _, err := kv.Put(t.Context(), wire.FleetKey("fra", "n1"), b); err != nil {
		t.Fatalf("put: %v", err)
	}
	wait.For(t, 5*time.Second, "node fra.n1 in the view", func() bool {
		_, ok := findNode(v, "fra", "n1")
		return ok
	})
	changed := v.Changed()
	now.Add(int64(2 * testTTL))
	wait.For(t, 3*testTTL, "silent node fra.n1 to expire", func() bool {
		_, ok := findNode(v, "fra", "n1")
		return !ok
	})
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Error("Changed() not closed when the node expired")
	}
	// The key itself expires in the bucket too, not only in the view.
	wait.For(t, 5*testTTL, "fleet key fra.n1 to expire in the bucket", func() bool {
		_, err := kv.Get(t.Context(), wire.FleetKey("fra", "n1"))
		return err != nil
	})
}

// TestViewForgetsLongSilentNodes: keys expire without delete markers, so the view itself lets
// go of a node whose report has been stale for ten TTLs while another node reports (else a
// long-running view grew by every node that ever died); while no node reports, it keeps every
// stale one, for DNS to fail open to (AllNodes).
func TestViewForgetsLongSilentNodes(t *testing.T) {
	_, js := setup(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	v := startView(t, js, clock)
	kv, _ := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	beat := func(id string) {
		t.Helper()
		n := node("fra", id)
		n.Load = wire.LoadReport{At: clock(), Healthy: true}
		b, _ := json.Marshal(n)
		if _, err := kv.Put(t.Context(), wire.FleetKey("fra", id), b); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	held := func(id string) bool {
		for _, n := range v.AllNodes() {
			if n.ID == id {
				return true
			}
		}
		return false
	}
	beat("n1")
	beat("n2")
	wait.For(t, 5*time.Second, "both nodes in the view", func() bool { return held("n1") && held("n2") })
	// Nobody reports for twenty TTLs: both are stale, and both are kept.
	changed := v.Changed()
	now.Add(int64(20 * testTTL))
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed() not closed when the nodes went stale")
	}
	if _, ok := findNode(v, "fra", "n1"); ok {
		t.Error("stale node fra.n1 is live in the view")
	}
	// The tick that marked them stale would also have let them go (both are past ten TTLs).
	if !held("n1") || !held("n2") {
		t.Fatal("with no node reporting, the view let go of stale nodes")
	}
	// n2 reports again: n1, silent for over ten TTLs, is let go.
	beat("n2")
	wait.For(t, 5*time.Second, "fra.n1 let go once another node reports", func() bool { return !held("n1") })
	if !held("n2") {
		t.Error("the reporting node fra.n2 is not held")
	}
}

func TestViewDropsStaleReports(t *testing.T) {
	_, js := setup(t)
	skew := 0 * time.Second
	var clockSkew = func() time.Time { return time.Now().Add(skew) }
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: time.Hour, Clock: clockSkew})
	run(t, v.Run)
	<-v.Ready()
	r, _ := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node("ams", "n1"), Interval: time.Hour})
	run(t, r.Run)
	wait.For(t, 5*time.Second, "node ams.n1", func() bool { _, ok := findNode(v, "ams", "n1"); return ok })
	tests := []struct {
		name string
		skew time.Duration
		want bool
	}{
		{"fresh", 0, true},
		{"just under ttl", 59 * time.Minute, true},
		{"older than ttl", 2 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skew = tt.skew
			_, got := findNode(v, "ams", "n1")
			if got != tt.want {
				t.Errorf("node visible with report %v old = %v, want %v", tt.skew, got, tt.want)
			}
		})
	}
}

func TestSetDrainingHeartbeatsAtOnce(t *testing.T) {
	_, js := setup(t)
	// The view's clock stays at the start: with an hour between heartbeats, a real one would
	// age the node out one TTL after each, and a stalled machine would miss it.
	start := time.Now()
	v := startView(t, js, func() time.Time { return start })
	// An hour-long interval: only SetDraining's immediate heartbeat can carry the change.
	r, _ := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node("lon", "n1"), Interval: time.Hour})
	run(t, r.Run)
	wait.For(t, 5*time.Second, "node lon.n1", func() bool { _, ok := findNode(v, "lon", "n1"); return ok })
	r.SetDraining(true)
	wait.For(t, 5*time.Second, "node lon.n1 draining", func() bool {
		n, ok := findNode(v, "lon", "n1")
		return ok && n.Draining && !n.Usable()
	})
	r.SetDraining(false)
	wait.For(t, 5*time.Second, "node lon.n1 undrained", func() bool {
		n, ok := findNode(v, "lon", "n1")
		return ok && !n.Draining
	})
}

func TestOperatorDrainMerges(t *testing.T) {
	_, js := setup(t)
	v := startView(t, js, nil)
	for _, id := range []string{"n1", "n2"} {
		r, _ := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node("nyc", id), Interval: 200 * time.Millisecond})
		run(t, r.Run)
	}
	wait.For(t, 5*time.Second, "two nodes in nyc", func() bool { return len(v.PeerSet("nyc")) == 2 })
	if err := fleet.SetDrain(t.Context(), js, "", "nyc", true); err != nil {
		t.Fatalf("SetDrain: %v", err)
	}
	wait.For(t, 5*time.Second, "nyc drained", func() bool {
		p := v.PoPs()
		return len(p) == 1 && p[0].Draining() && v.Drained("nyc") && len(v.PeerSet("nyc")) == 0
	})
	if err := fleet.SetDrain(t.Context(), js, "", "nyc", false); err != nil {
		t.Fatalf("SetDrain false: %v", err)
	}
	wait.For(t, 5*time.Second, "nyc undrained", func() bool {
		p := v.PoPs()
		return len(p) == 1 && !p[0].Draining() && !v.Drained("nyc") && len(v.PeerSet("nyc")) == 2
	})
	if err := fleet.SetDrain(t.Context(), js, "", "Bad Pop", true); err == nil {
		t.Error("SetDrain(\"Bad Pop\") = nil, want an error naming the pop")
	}
}

func TestConfigViewFollowsBucket(t *testing.T) {
	s, js := setup(t)
	// The view uses its own connection, as an edge would.
	_, js2 := s.Connect(t)
	cv := fleet.NewConfigView(fleet.ConfigViewConfig{JS: js2})
	run(t, cv.Run)
	<-cv.Ready()
	ctx := t.Context()

	good := wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:8080"}
	if err := fleet.PutHost(ctx, js, "", good); err != nil {
		t.Fatalf("PutHost: %v", err)
	}
	wait.For(t, 5*time.Second, "host in config view", func() bool {
		h, ok := cv.Host("www.example.com")
		return ok && h.Origin == good.Origin
	})
	if got, err := fleet.GetHost(ctx, js, "", "www.example.com"); err != nil || got.Origin != good.Origin {
		t.Errorf("GetHost = %+v, %v; want %+v", got, err, good)
	}

	// An invalid value written behind the API's back is skipped; the last good one stays.
	kv, _ := js.KeyValue(ctx, wire.Bucket("", wire.ConfigBucket))
	if _, err := kv.Put(ctx, wire.HostKey("www.example.com"), []byte(`{"host":"www.example.com","origin":"ftp://x"}`)); err != nil {
		t.Fatalf("put invalid: %v", err)
	}
	marker := wire.HostConfig{Host: "marker.example.com", Origin: "http://127.0.0.1:1"}
	if err := fleet.PutHost(ctx, js, "", marker); err != nil {
		t.Fatalf("PutHost marker: %v", err)
	}
	wait.For(t, 5*time.Second, "marker host", func() bool { _, ok := cv.Host("marker.example.com"); return ok })
	if h, ok := cv.Host("www.example.com"); !ok || h.Origin != good.Origin {
		t.Errorf("after invalid put, Host = %+v, %v; want last good %+v", h, ok, good)
	}

	if err := fleet.PutHost(ctx, js, "", wire.HostConfig{Host: "bad host"}); err == nil {
		t.Error("PutHost(invalid) = nil, want an error")
	}
	if err := fleet.PutRouting(ctx, js, "", wire.RoutingPolicy{Policy: "least-loaded", RadiusKm: 800}); err != nil {
		t.Fatalf("PutRouting: %v", err)
	}
	wait.For(t, 5*time.Second, "routing policy", func() bool { return cv.Routing().Policy == "least-loaded" })
	if err := fleet.DeleteHost(ctx, js, "", "www.example.com"); err != nil {
		t.Fatalf("DeleteHost: %v", err)
	}
	wait.For(t, 5*time.Second, "host deleted", func() bool { _, ok := cv.Host("www.example.com"); return !ok })
	if err := fleet.DeleteHost(ctx, js, "", "www.example.com"); err == nil {
		t.Error("second DeleteHost = nil, want ErrNotFound")
	}
	if err := fleet.SetDrain(ctx, js, "", "par", true); err != nil {
		t.Fatalf("SetDrain: %v", err)
	}
	wait.For(t, 5*time.Second, "par drained in config view", func() bool { return cv.Drained("par") })
}

func TestSurvivesNATSRestart(t *testing.T) {
	s, js := setup(t)
	v := startView(t, js, nil)
	cv := fleet.NewConfigView(fleet.ConfigViewConfig{JS: js})
	run(t, cv.Run)
	<-cv.Ready()
	if err := fleet.PutHost(t.Context(), js, "", wire.HostConfig{Host: "a.example.com", Origin: "http://127.0.0.1:9"}); err != nil {
		t.Fatalf("PutHost: %v", err)
	}
	wait.For(t, 5*time.Second, "host a", func() bool { _, ok := cv.Host("a.example.com"); return ok })
	r, _ := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: node("sin", "n1"), Interval: 100 * time.Millisecond})
	run(t, r.Run)
	wait.For(t, 5*time.Second, "node sin.n1", func() bool { _, ok := findNode(v, "sin", "n1"); return ok })

	s.Stop()
	wait.For(t, 5*time.Second, "heartbeats to fail", func() bool { return r.Err() != nil })
	// Cut off, the config view keeps serving its last good config.
	if _, ok := cv.Host("a.example.com"); !ok {
		t.Error("config view lost host a.example.com while NATS was down")
	}
	s.Restart()
	restarted := time.Now()
	wait.For(t, 15*time.Second, "node sin.n1 re-registered after restart", func() bool {
		n, ok := findNode(v, "sin", "n1")
		return ok && n.Load.At.After(restarted) && r.Err() == nil
	})
	// And the views follow changes made after the restart.
	if err := fleet.PutHost(t.Context(), js, "", wire.HostConfig{Host: "b.example.com", Origin: "http://127.0.0.1:9"}); err != nil {
		t.Fatalf("PutHost after restart: %v", err)
	}
	wait.For(t, 10*time.Second, "host b after restart", func() bool { _, ok := cv.Host("b.example.com"); return ok })
}

func TestNewRegistrarValidates(t *testing.T) {
	_, js := setup(t)
	tests := []struct {
		name string
		cfg  fleet.RegistrarConfig
	}{
		{"no js", fleet.RegistrarConfig{Node: node("par", "n1")}},
		{"no pop", fleet.RegistrarConfig{JS: js, Node: node("", "n1")}},
		{"bad id", fleet.RegistrarConfig{JS: js, Node: node("par", "N.1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := fleet.NewRegistrar(tt.cfg); err == nil {
				t.Errorf("NewRegistrar(%s) = nil error, want one", tt.name)
			}
		})
	}
}

// TestMembersChangedIgnoresLoads: a heartbeat that changes only load figures wakes Changed
// but not MembersChanged, nor does one that changes only the writing process (Instance);
// joining, health, registration (file hosts included) and going stale wake both.
func TestMembersChangedIgnoresLoads(t *testing.T) {
	_, js := setup(t)
	// The view's clock stands at the last report, so a stalled machine cannot age a report
	// out between steps; the last step moves it on.
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	v := startView(t, js, func() time.Time { return time.Unix(0, now.Load()) })
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	n := node("fra", "n1")
	n.HTTPAddr = "127.0.0.1:80"
	steps := []struct {
		name        string
		change      func(*wire.Node)
		wantMembers bool
	}{
		{"joins", func(*wire.Node) {}, true},
		{"new loads", func(n *wire.Node) { n.Load.RequestsPerSec, n.Load.CPU, n.Load.OpenConns = 900, 0.7, 12 }, false},
		{"same report again", func(*wire.Node) {}, false},
		{"unhealthy", func(n *wire.Node) { n.Load.Healthy = false }, true},
		{"healthy again, other loads", func(n *wire.Node) { n.Load.Healthy, n.Load.Saturation = true, 0.4 }, true},
		{"new address", func(n *wire.Node) { n.HTTPAddr = "127.0.0.2:80" }, true},
		// Two processes of the node (a restart's overlap) may write the key in turn: which one
		// wrote last is no change of membership.
		{"another process of the node", func(n *wire.Node) { n.Instance = "0123456789abcdef" }, false},
		{"the first process again", func(n *wire.Node) { n.Instance = "fedcba9876543210" }, false},
		{"file hosts", func(n *wire.Node) { n.Hosts = []string{"a.example"} }, true},
		{"other file hosts", func(n *wire.Node) { n.Hosts = []string{"a.example", "b.example"} }, true},
		{"draining", func(n *wire.Node) { n.Draining = true }, true},
	}
	n.Load = wire.LoadReport{Healthy: true}
	for _, s := range steps {
		changed, members := v.Changed(), v.MembersChanged()
		s.change(&n)
		n.Load.At = time.Now()
		now.Store(n.Load.At.UnixNano())
		b, _ := json.Marshal(n)
		if _, err := kv.Put(t.Context(), wire.FleetKey("fra", "n1"), b); err != nil {
			t.Fatalf("%s: put: %v", s.name, err)
		}
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Changed() not closed", s.name)
		}
		// The view wakes MembersChanged before Changed, so it is closed by now if ever.
		select {
		case <-members:
			if !s.wantMembers {
				t.Errorf("%s: MembersChanged() closed for a change of no member's (loads, the writing process)", s.name)
			}
		default:
			if s.wantMembers {
				t.Errorf("%s: MembersChanged() not closed", s.name)
			}
		}
	}
	members := v.MembersChanged()
	now.Add(int64(2 * testTTL))
	select {
	case <-members:
	case <-time.After(5 * testTTL):
		t.Error("MembersChanged() not closed when the silent node went stale")
	}
	if _, ok := findNode(v, "fra", "n1"); ok {
		t.Error("stale node fra.n1 still in the view")
	}
}

// TestBucketsRefuseRollup: an edge may write its own key in the fleet bucket and its own
// records in the latency bucket, but a write carrying "Nats-Rollup: all" (which NATS permits
// by subject) must not delete every other node's: the buckets refuse rollups. Found by a
// review helper; the fleet bucket allowed them until its keys expired without delete markers.
func TestBucketsRefuseRollup(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	_, edge := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	for _, tc := range []struct{ bucket, other, own string }{
		{wire.FleetBucket, wire.FleetKey("par", "n7"), wire.FleetKey("lon", "n1")},
		{wire.LatencyBucket, "par.n7.net1", "lon.n1.net1"},
	} {
		kv, err := js.KeyValue(ctx, wire.Bucket("", tc.bucket))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, tc.other, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		// Its own record: written as the edge writes it (a publish to the key's subject).
		subject := "$KV." + wire.Bucket("", tc.bucket) + "." + tc.own
		if _, err := edge.Publish(ctx, subject, []byte(`{}`)); err != nil {
			t.Fatalf("%s: the edge writes its own key: %v", tc.bucket, err)
		}
		m := nats.NewMsg(subject)
		m.Header.Set("Nats-Rollup", "all")
		m.Data = []byte(`{}`)
		if _, err := edge.PublishMsg(ctx, m); err == nil {
			t.Errorf("%s: a rollup write was accepted", tc.bucket)
		}
		if _, err := kv.Get(ctx, tc.other); err != nil {
			t.Errorf("%s: after the edge's rollup write, %s is gone: %v", tc.bucket, tc.other, err)
		}
	}
	// Ensuring the buckets again (every control start, the same or another TTL) keeps rollups
	// off, and never turns them on, not even between two updates: an edge's rollup write at
	// that moment would empty the bucket. Control's own connection sees every request it makes
	// to the JetStream API, configuration included.
	ctl, _ := s.Connect(t)
	var updates []string
	for _, b := range []string{wire.FleetBucket, wire.LatencyBucket} {
		updates = append(updates, "$JS.API.STREAM.CREATE.KV_"+wire.Bucket("", b), "$JS.API.STREAM.UPDATE.KV_"+wire.Bucket("", b))
	}
	requests := make(chan *nats.Msg, 64)
	for _, subject := range updates {
		sub, err := ctl.ChanSubscribe(subject, requests)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{testTTL, 2 * testTTL} {
		if err := fleet.EnsureBuckets(ctx, js, "", ttl, 1); err != nil {
			t.Fatal(err)
		}
	}
	// The requests reached the server before their answers: they are in before this round trip.
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	n := len(requests)
	for range n {
		m := <-requests
		var cfg struct {
			AllowRollup bool `json:"allow_rollup_hdrs"`
		}
		if err := json.Unmarshal(m.Data, &cfg); err != nil {
			t.Fatalf("%s: %v", m.Subject, err)
		}
		if cfg.AllowRollup {
			t.Errorf("EnsureBuckets asked for rollups on: %s %s", m.Subject, m.Data)
		}
	}
	if n == 0 {
		t.Error("EnsureBuckets with another TTL changed no bucket")
	}
	for _, b := range []string{wire.FleetBucket, wire.LatencyBucket} {
		st, err := js.Stream(ctx, "KV_"+wire.Bucket("", b))
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().Config.AllowRollup {
			t.Errorf("%s allows rollups after EnsureBuckets ran again", b)
		}
	}
}

// TestBucketsRefuseOversizedValues: NATS lets an edge's credential write its own keys in the
// fleet and latency buckets up to the server's max payload (1 MiB); the buckets take a value at
// their bound (MaxNodeBytes, MaxLatencyRecordBytes) and refuse a larger one, whether this
// version made them or an earlier one made them without a bound and EnsureBuckets (every
// control start) updated them, rollups staying off.
func TestBucketsRefuseOversizedValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		earlier bool
	}{{"made now", false}, {"made by an earlier version", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			_, js := s.Connect(t)
			ctx := t.Context()
			if tc.earlier {
				for _, b := range []string{wire.FleetBucket, wire.LatencyBucket} {
					if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
						Bucket: wire.Bucket("", b), History: 1, TTL: time.Hour, Storage: jetstream.FileStorage,
					}); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := fleet.EnsureBuckets(ctx, js, "", time.Hour, 1); err != nil {
				t.Fatal(err)
			}
			_, edge := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
			for _, b := range []struct {
				bucket, key string
				max         int
			}{
				{wire.FleetBucket, wire.FleetKey("lon", "n1"), fleet.MaxNodeBytes},
				{wire.LatencyBucket, "lon.n1.net1", fleet.MaxLatencyRecordBytes},
			} {
				// Written as the edge writes: a publish to its own key's subject.
				subject := "$KV." + wire.Bucket("", b.bucket) + "." + b.key
				if _, err := edge.Publish(ctx, subject, bytes.Repeat([]byte("x"), b.max)); err != nil {
					t.Errorf("%s: a value of %d bytes (the bound) was refused: %v", b.bucket, b.max, err)
				}
				_, err := edge.Publish(ctx, subject, bytes.Repeat([]byte("y"), b.max+1))
				if !errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
					t.Errorf("%s: a value of %d bytes: %v, want refused as too large", b.bucket, b.max+1, err)
				}
				kv, err := js.KeyValue(ctx, wire.Bucket("", b.bucket))
				if err != nil {
					t.Fatal(err)
				}
				if e, err := kv.Get(ctx, b.key); err != nil || len(e.Value()) != b.max {
					size := -1
					if err == nil {
						size = len(e.Value())
					}
					t.Errorf("%s: the key holds %d bytes (%v), want the value of %d bytes", b.bucket, size, err, b.max)
				}
				st, err := js.Stream(ctx, "KV_"+wire.Bucket("", b.bucket))
				if err != nil {
					t.Fatal(err)
				}
				if st.CachedInfo().Config.AllowRollup {
					t.Errorf("%s allows rollups", b.bucket)
				}
			}
		})
	}
}

// TestLatencyBucketFill: NATS lets an edge's credential write as many records under its own
// PoP and node as it likes, and nothing in NATS bounds one writer's share of a stream, so one
// edge can fill the latency bucket (LatencyMaxBytes). What the bucket bounds: the filler is
// refused at LatencyMaxBytes, not at the disk's size, and another node's records already in
// the bucket keep being updated (one revision per key: an update replaces, it does not add),
// so DNS keeps the measurements it has. Only new networks of the other nodes are refused until
// the filler's records go (docs/security.md, "Latency bucket").
func TestLatencyBucketFill(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 64 MiB")
	}
	s, js := setup(t)
	ctx := t.Context()
	_, filler := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	_, other := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("par", "n7"))...)
	subject := func(pop, node, network string) string {
		return "$KV." + wire.Bucket("", wire.LatencyBucket) + "." + pop + "." + node + "." + network
	}
	record := bytes.Repeat([]byte("r"), 200) // a record of a few PoPs
	if _, err := other.Publish(ctx, subject("par", "n7", "net0"), record); err != nil {
		t.Fatalf("the other edge writes its record: %v", err)
	}
	// The filler writes records at the bound's size, as fast as the server takes them, until
	// the bucket refuses one.
	value := bytes.Repeat([]byte("f"), fleet.MaxLatencyRecordBytes)
	var refused error
	for i := 0; refused == nil && i < 2*fleet.LatencyMaxBytes/fleet.MaxLatencyRecordBytes; i += 256 {
		var acks []jetstream.PubAckFuture
		for j := i; j < i+256; j++ {
			f, err := filler.PublishAsync(subject("lon", "n1", fmt.Sprintf("net%d", j)), value)
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				refused = err
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
	// The server's "maximum bytes exceeded" (JSStreamStoreFailedF, 10077).
	var apiErr *jetstream.APIError
	if !errors.As(refused, &apiErr) || apiErr.ErrorCode != 10077 {
		t.Fatalf("filling the latency bucket: %v, want refused at maximum bytes", refused)
	}
	st, err := js.Stream(ctx, "KV_"+wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Bytes; got > fleet.LatencyMaxBytes {
		t.Errorf("the latency bucket holds %d bytes, want at most %d", got, fleet.LatencyMaxBytes)
	}
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	updated := bytes.Repeat([]byte("u"), len(record))
	if _, err := other.Publish(ctx, subject("par", "n7", "net0"), updated); err != nil {
		t.Errorf("the other edge updates its record in the full bucket: %v", err)
	}
	if e, err := kv.Get(ctx, "par.n7.net0"); err != nil || !bytes.Equal(e.Value(), updated) {
		t.Errorf("the other edge's record after its update in the full bucket: %v, want the update", err)
	}
	// The gap: a new network of another node is refused while the filler holds the bucket.
	if _, err := other.Publish(ctx, subject("par", "n7", "net1"), record); err == nil {
		t.Errorf("a new record of another node was taken by the full bucket; docs/security.md says it is refused: update it")
	}
}

// TestLatencyRecordCost: what one edge's record of one network costs the latency bucket
// (stream bytes, key and overhead included), which says how many records LatencyMaxBytes
// holds fleet-wide (docs/security.md, "Latency bucket"; docs/dns.md): about 200 bytes with the
// node's own PoP only, which every client connection gives, about 500 with the 16 PoPs a
// record keeps at most.
func TestLatencyRecordCost(t *testing.T) {
	const records = 2000
	for _, tt := range []struct {
		name     string
		pops     int
		min, max int64 // bytes per record
	}{
		{"own PoP only", 1, 170, 230},
		{"16 PoPs", 16, 440, 560},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, js := setup(t)
			for i := range records {
				network := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>8), byte(i), 0}), 24)
				if i%2 == 1 {
					network = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 48)
				}
				rec := wire.LatencyRecord{Network: network, RTTMs: map[string]float64{},
					Samples: 1234, EdgeSamples: 1000, At: time.Now()}
				for p := range tt.pops {
					// A smoothed RTT prints with all its digits.
					rec.RTTMs[fmt.Sprintf("p%02d", p)] = 20 + float64(p)/3
				}
				b, err := json.Marshal(rec)
				if err != nil {
					t.Fatal(err)
				}
				subject := "$KV." + wire.Bucket("", wire.LatencyBucket) + "." + wire.LatencyKey("fra", "n12", network)
				if _, err := js.PublishAsync(subject, b); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-t.Context().Done():
				t.Fatal(t.Context().Err())
			}
			st, err := js.Stream(t.Context(), "KV_"+wire.Bucket("", wire.LatencyBucket))
			if err != nil {
				t.Fatal(err)
			}
			state := st.CachedInfo().State
			if state.Msgs != records {
				t.Fatalf("the bucket holds %d records, want %d", state.Msgs, records)
			}
			if per := int64(state.Bytes / state.Msgs); per < tt.min || per > tt.max {
				t.Errorf("a record costs the bucket %d bytes, want %d-%d (the documented figures)", per, tt.min, tt.max)
			}
		})
	}
}

// TestRegistrarRefusesOversizedNode: a registration that could outgrow the fleet bucket's
// bound is refused when the registrar is made, with the reason, rather than every heartbeat
// failing; the longest one a node can have fits, and its heartbeat with the longest load
// report lands.
func TestRegistrarRefusesOversizedNode(t *testing.T) {
	_, js := setup(t)
	long := strings.Repeat("a", 63) // the longest PoP or node id: one DNS label
	ip6 := "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
	addr := "[" + ip6 + "]:65535"
	longest := wire.Node{
		PoP: long, ID: long, Region: strings.Repeat("r", 64), City: strings.Repeat("c", 128),
		IPv4: "255.255.255.255", IPv6: ip6, HTTPAddr: addr, HTTPSAddr: addr, AdminAddr: addr,
		Version: strings.Repeat("v", 128),
	}
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{
		JS: js, Node: longest, Interval: time.Hour,
		Load: func() wire.LoadReport {
			const f = -1.2345678901234567e-6 // the longest float64 in JSON
			return wire.LoadReport{
				At:             time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(23*3600+59*60))),
				RequestsPerSec: f, EgressBytesPerSec: f, OpenConns: math.MinInt, CPU: f,
				MemoryBytes: math.MaxUint64, HitRatio: f, Healthy: true, Saturation: f,
			}
		},
	})
	if err != nil {
		t.Fatalf("NewRegistrar with the longest registration: %v", err)
	}
	run(t, r.Run)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the longest registration in the bucket", func() bool {
		_, err := kv.Get(t.Context(), r.Key())
		return err == nil
	})
	if err := r.Err(); err != nil {
		t.Errorf("heartbeat: %v", err)
	}

	tooLong := longest
	tooLong.City = strings.Repeat("c", fleet.MaxNodeBytes)
	if _, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: tooLong}); err == nil ||
		!strings.Contains(err.Error(), "more than the fleet bucket's 4096") {
		t.Errorf("NewRegistrar with a %d-byte city = %v, want refused for the bucket's bound", len(tooLong.City), err)
	}
}

// TestViewLogsHostileEntriesOnce: an edge writes its own registry key as often as it likes,
// and every view of it decodes each write: what a view cannot take there (not JSON, or a
// record naming another node) is skipped and logged once per kind, not once per write, and the
// edge's next good registration is taken.
func TestViewLogsHostileEntriesOnce(t *testing.T) {
	s, js := setup(t)
	logs := &lines{}
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: time.Minute, Logger: slog.New(logs)})
	run(t, v.Run)
	<-v.Ready()
	_, edge := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	subject := "$KV." + wire.Bucket("", wire.FleetBucket) + "." + wire.FleetKey("lon", "n1")
	other, err := json.Marshal(node("par", "n7"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		undecodable = "skipping undecodable fleet entry"
		mismatched  = "skipping fleet entry whose key does not match its pop and id"
	)
	publish := func(value []byte) {
		t.Helper()
		if _, err := edge.Publish(t.Context(), subject, value); err != nil {
			t.Fatal(err)
		}
	}
	// The bucket keeps one value per key, so a watch running behind skips values replaced
	// before it reached them: the first of each kind is awaited, so that one is certainly seen.
	publish([]byte("not json 0"))
	wait.For(t, 10*time.Second, "the first undecodable entry logged", func() bool { return logs.count(undecodable) > 0 })
	publish(other)
	wait.For(t, 10*time.Second, "the first mismatched entry logged", func() bool { return logs.count(mismatched) > 0 })
	const n = 20
	for i := 1; i < n; i++ {
		publish(fmt.Appendf(nil, "not json %d", i))
		publish(other)
	}
	good := node("lon", "n1")
	good.Load.At = time.Now()
	b, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edge.Publish(t.Context(), subject, b); err != nil {
		t.Fatal(err)
	}
	// A watch applies the bucket's writes in order: the good one comes after the others.
	wait.For(t, 10*time.Second, "lon.n1 in the view", func() bool {
		_, ok := findNode(v, "lon", "n1")
		return ok
	})
	count := map[string]int{}
	for _, l := range logs.take() {
		count[l["msg"].(string)]++
	}
	for _, msg := range []string{undecodable, mismatched} {
		if count[msg] != 1 {
			t.Errorf("%q logged %d times for %d writes, want once", msg, count[msg], n)
		}
	}
	if _, ok := findNode(v, "par", "n7"); ok {
		t.Error("the record naming par.n7 under lon.n1's key is in the view")
	}
}

// TestViewWritesHeldBackWarnings: once Run returned, what the view's warnings held back is
// written, though no entry follows: the latest of each kind, with the count of the others.
// Each entry has a key of its own (control's credential writes any), so that the watch sees
// every one: an edge rewriting its one key may have a value replaced before it is delivered.
func TestViewWritesHeldBackWarnings(t *testing.T) {
	_, js := setup(t)
	logs := &lines{}
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: time.Minute, Logger: slog.New(logs)})
	stop := run(t, v.Run)
	<-v.Ready()
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	other, err := json.Marshal(node("par", "n7"))
	if err != nil {
		t.Fatal(err)
	}
	good := node("lon", "n9")
	good.Load.At = time.Now()
	b, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	const each = 3
	for i := range each {
		for key, value := range map[string][]byte{fmt.Sprintf("lon.u%d", i): []byte("not json"), fmt.Sprintf("lon.m%d", i): other} {
			if _, err := kv.Put(t.Context(), key, value); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := kv.Put(t.Context(), wire.FleetKey("lon", "n9"), b); err != nil {
		t.Fatal(err)
	}
	// A watch applies the bucket's writes in order: the good one comes after the others.
	wait.For(t, 10*time.Second, "lon.n9 in the view", func() bool {
		_, ok := findNode(v, "lon", "n9")
		return ok
	})
	for _, step := range []struct {
		when       string
		suppressed any // on each line; nil: no such attribute
	}{
		{"while running", nil}, // the first of each kind
		{"once stopped", int64(each - 2)},
	} {
		if step.when == "once stopped" {
			stop()
		}
		count := map[string]int{}
		for _, l := range logs.take() {
			count[l["msg"].(string)]++
			if l["suppressed"] != step.suppressed {
				t.Errorf("%s: wrote %v, want suppressed %v", step.when, l, step.suppressed)
			}
		}
		for _, msg := range []string{"skipping undecodable fleet entry", "skipping fleet entry whose key does not match its pop and id"} {
			if count[msg] != 1 {
				t.Errorf("%s: %q logged %d times for %d entries, want once", step.when, msg, count[msg], each)
			}
		}
	}
}

// TestFleetBucketFromEarlierVersion: a fleet bucket made with delete markers, which tie
// rollups and message TTLs on, loses its markers and rollups and keeps its keys when
// EnsureBuckets runs (a control upgrade), and every later start accepts the result.
func TestFleetBucketFromEarlierVersion(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: wire.Bucket("", wire.FleetBucket), History: 1, TTL: time.Minute,
		Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, wire.FleetKey("par", "n7"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := fleet.EnsureBuckets(ctx, js, "", testTTL*time.Duration(60+i), 1); err != nil {
			t.Fatalf("EnsureBuckets, run %d: %v", i+1, err)
		}
		st, err := js.Stream(ctx, "KV_"+wire.Bucket("", wire.FleetBucket))
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		if c.AllowRollup || c.SubjectDeleteMarkerTTL != 0 || c.MaxAge != testTTL*time.Duration(60+i) {
			t.Errorf("run %d: rollups %v, marker TTL %v, max age %v; want off, 0, %v", i+1,
				c.AllowRollup, c.SubjectDeleteMarkerTTL, c.MaxAge, testTTL*time.Duration(60+i))
		}
		if _, err := kv.Get(ctx, wire.FleetKey("par", "n7")); err != nil {
			t.Errorf("run %d: the key is gone: %v", i+1, err)
		}
	}
}

// TestMigratedFleetBucketTTLLowered: a fleet bucket migrated from delete markers keeps
// AllowMsgTTL, so every later start updates its stream directly; the stream keeps the
// duplicates window the old TTL gave it, and lowering the TTL (MaxAge below that window) is
// refused by the server: EnsureBuckets fails, and control does not start.
func TestMigratedFleetBucketTTLLowered(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: wire.Bucket("", wire.FleetBucket), History: 1, TTL: 10 * time.Second,
		Storage: jetstream.FileStorage, LimitMarkerTTL: 10 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	if err := fleet.EnsureBuckets(ctx, js, "", 10*time.Second, 1); err != nil {
		t.Fatalf("EnsureBuckets (upgrade): %v", err)
	}
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		t.Fatalf("EnsureBuckets with a lower TTL: %v", err)
	}
}

// TestFreshFleetBucketTTLLowered: the same change on a bucket made by this version works.
func TestFreshFleetBucketTTLLowered(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	if err := fleet.EnsureBuckets(ctx, js, "", 10*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		t.Fatalf("EnsureBuckets with a lower TTL: %v", err)
	}
}

// TestViewReplayedReportFromTheFutureAgesFromItsArrival: a report whose At is in the view's
// future (the node's clock runs ahead) counts as made when the NATS server stored it, not
// when this view happens to read it: a view started later (a restart, or a re-watch after a
// reconnect or an edge's scope change) replays the report, and must not count it fresh again
// from then, routing to a node that may have crashed since.
func TestViewReplayedReportFromTheFutureAgesFromItsArrival(t *testing.T) {
	// The bucket keeps the key for an hour: only the view's TTL ages the report.
	_, js := setupTTL(t, time.Hour)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	n := node("fra", "n1")
	n.Load = wire.LoadReport{At: time.Now().Add(time.Hour), Healthy: true}
	b, _ := json.Marshal(n)
	put := time.Now()
	if _, err := kv.Put(t.Context(), wire.FleetKey("fra", "n1"), b); err != nil {
		t.Fatalf("put: %v", err)
	}
	// The view starts half a TTL after the report was stored, and then time moves on to
	// past a TTL after it: the node's one report is stale.
	const ttl = time.Minute
	var now atomic.Int64
	now.Store(put.Add(ttl / 2).UnixNano())
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: ttl, Clock: func() time.Time { return time.Unix(0, now.Load()) }})
	run(t, v.Run)
	<-v.Ready()
	if _, ok := findNode(v, "fra", "n1"); !ok {
		t.Fatal("node fra.n1 not in the view half a TTL after its report")
	}
	now.Store(put.Add(ttl + 10*time.Second).UnixNano())
	if got, ok := findNode(v, "fra", "n1"); ok {
		t.Errorf("node fra.n1 still fresh a TTL after its only report was stored (At %v)", got.Load.At)
	}
}

// fleetKeyWatch watches pop.id's fleet key from now on and returns its updates.
func fleetKeyWatch(t *testing.T, js jetstream.JetStream, pop, id string) <-chan jetstream.KeyValueEntry {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	w, err := kv.Watch(t.Context(), wire.FleetKey(pop, id), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w.Updates()
}

// nextWrite is the next update of a fleet key: the writer's requests/s (each registrar of a
// test reports its own) and whether it was a delete.
func nextWrite(t *testing.T, updates <-chan jetstream.KeyValueEntry) (rps float64, deleted bool) {
	t.Helper()
	rps, deleted, _ = nextWriteRev(t, updates)
	return rps, deleted
}

// nextWriteRev is nextWrite with the update's revision.
func nextWriteRev(t *testing.T, updates <-chan jetstream.KeyValueEntry) (rps float64, deleted bool, rev uint64) {
	t.Helper()
	select {
	case e := <-updates:
		if e == nil {
			t.Fatal("watch ended")
		}
		if e.Operation() != jetstream.KeyValuePut {
			return 0, true, e.Revision()
		}
		var n wire.Node
		if err := json.Unmarshal(e.Value(), &n); err != nil {
			t.Fatalf("decode registration: %v", err)
		}
		return n.Load.RequestsPerSec, false, e.Revision()
	case <-time.After(10 * time.Second):
		t.Fatal("no write of the fleet key within 10s")
	}
	return 0, false, 0
}

// TestRegistrarRestartOverlap: a restarted node's new process registers while the old one
// still drains (the edge's restart without dropped requests). Both wrote the key on every
// heartbeat, so the registry flipped between draining and serving for the whole lame duck, and
// the old process's leave deleted the new one's registration. The old process, draining, now
// leaves the key to the new one and deletes nothing. Real edge credentials: nothing is read.
func TestRegistrarRestartOverlap(t *testing.T) {
	s, js := setup(t)
	updates := fleetKeyWatch(t, js, "lon", "n1")
	// What each process's OnWrite said: its first write's shared, and whether any was.
	type written struct {
		first           atomic.Pointer[bool]
		sharedAfterward atomic.Bool
	}
	start := func(rps float64, w *written) (*fleet.Registrar, func()) {
		_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
		r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 20 * time.Millisecond,
			Load: func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: rps, Healthy: true} },
			OnWrite: func(_ time.Time, shared bool) {
				if !w.first.CompareAndSwap(nil, &shared) && shared {
					w.sharedAfterward.Store(true)
				}
			}})
		if err != nil {
			t.Fatalf("NewRegistrar: %v", err)
		}
		return r, run(t, r.Run)
	}
	var oldW, newW written
	old, stopOld := start(1, &oldW)
	for rps, _ := nextWrite(t, updates); rps != 1; rps, _ = nextWrite(t, updates) {
	}
	_, stopNew := start(2, &newW)
	for rps, _ := nextWrite(t, updates); rps != 2; rps, _ = nextWrite(t, updates) {
	}
	old.SetDraining(true) // SIGTERM to the old process
	// The old process may write once more (draining) if the new one did not write since its
	// last heartbeat; the new one then takes the key back, and the old one yields.
	olds := 0
	for i := range 40 {
		rps, deleted := nextWrite(t, updates)
		if deleted {
			t.Fatalf("write %d after the old process drained is a delete", i)
		}
		if rps == 1 && i >= 4 {
			olds++
		}
	}
	if olds > 0 {
		t.Errorf("the draining old process wrote the key %d times in 36 heartbeats of the new one, want none", olds)
	}
	stopOld()
	for i := range 10 {
		rps, deleted := nextWrite(t, updates)
		if deleted || rps != 2 {
			t.Fatalf("write %d after the old process stopped: deleted %v, requests/s %v; want the new process's registration", i, deleted, rps)
		}
	}
	if err := old.Err(); err != nil {
		t.Errorf("old registrar's Err() = %v, want nil", err)
	}
	// Each process learns of the other (the edge holds its purge acks meanwhile): the new
	// one at its first write, the old one at a later one; the first to register, alone, not.
	if f := oldW.first.Load(); f == nil || *f || !oldW.sharedAfterward.Load() {
		t.Errorf("old process's OnWrite: first shared %v, shared afterwards %v; want false, then true", f, oldW.sharedAfterward.Load())
	}
	if f := newW.first.Load(); f == nil || !*f {
		t.Errorf("new process's first OnWrite shared = %v, want true (the old process's key was there)", f)
	}
	stopNew()
	for {
		if _, deleted := nextWrite(t, updates); deleted {
			break // the new process leaves as any node does
		}
	}
}

// TestRegistrarDrainingRegistersAgainOnceKeyExpires: a draining node whose key another writer
// took (here a foreign write) stops heartbeating, but writes again once that key has expired:
// a node whose key expired in a long cut, or whose newer process crashed, is not left out of
// the registry for the rest of its drain.
func TestRegistrarDrainingRegistersAgainOnceKeyExpires(t *testing.T) {
	s, js := setup(t)
	updates := fleetKeyWatch(t, js, "lon", "n1")
	_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 50 * time.Millisecond,
		Load: func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: 1, Healthy: true} }})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	run(t, r.Run)
	for rps, _ := nextWrite(t, updates); rps != 1; rps, _ = nextWrite(t, updates) {
	}
	r.SetDraining(true)
	kv, _ := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	other := node("lon", "n1")
	other.Load = wire.LoadReport{RequestsPerSec: 9, Healthy: true, At: time.Now()}
	b, _ := json.Marshal(other)
	if _, err := kv.Put(t.Context(), wire.FleetKey("lon", "n1"), b); err != nil {
		t.Fatalf("put: %v", err)
	}
	for rps, _ := nextWrite(t, updates); rps != 9; rps, _ = nextWrite(t, updates) {
	}
	// Now only the registrar writes, once the foreign entry expired (testTTL).
	deadline := time.Now().Add(5 * testTTL)
	for {
		rps, deleted := nextWrite(t, updates)
		if !deleted && rps == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the draining registrar did not write its key again within %v of the foreign write", 5*testTTL)
		}
	}
	if err := r.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
}

// TestRegistrarUndrainedTakesKeyBack: a draining process that left its key to another writer
// serves again once undrained (SetDraining(false)), and a process that serves owns its key: it
// writes it at once, not only once the other's write has expired (the TTL here is a minute).
func TestRegistrarUndrainedTakesKeyBack(t *testing.T) {
	s, js := setupTTL(t, time.Minute)
	updates := fleetKeyWatch(t, js, "lon", "n1")
	_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	var logs logtest.Buffer
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 50 * time.Millisecond,
		Load:   func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: 1, Healthy: true} },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	run(t, r.Run)
	for rps, _ := nextWrite(t, updates); rps != 1; rps, _ = nextWrite(t, updates) {
	}
	r.SetDraining(true)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	other := node("lon", "n1")
	other.Load = wire.LoadReport{RequestsPerSec: 9, Healthy: true, At: time.Now()}
	b, _ := json.Marshal(other)
	if _, err := kv.Put(t.Context(), wire.FleetKey("lon", "n1"), b); err != nil {
		t.Fatalf("put: %v", err)
	}
	for rps, _ := nextWrite(t, updates); rps != 9; rps, _ = nextWrite(t, updates) {
	}
	wait.For(t, 10*time.Second, "the registrar to leave its key to the other writer", func() bool {
		return strings.Contains(logs.String(), "left to it")
	})
	r.SetDraining(false)
	for {
		rps, deleted := nextWrite(t, updates) // fails after 10 s without a write
		if !deleted && rps == 1 {
			break
		}
	}
}

// TestRegistrarNeverRegisteredStopsAtOnce: a node whose NATS was unreachable from its start
// (an edge connects with RetryOnFailedConnect) never wrote its key, so its stop has nothing to
// delete. It bound the bucket anyway, waiting out the leave's 2 s on a request that could not
// be sent, which every such edge's shutdown took on top of its drain.
func TestRegistrarNeverRegisteredStopsAtOnce(t *testing.T) {
	s, _ := setup(t)
	c := natstest.NewCutter(t, "127.0.0.1", s.URL())
	nc, ejs := natstest.ConnectURL(t, c.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	c.Cut()
	wait.For(t, 5*time.Second, "the connection to drop", func() bool { return !nc.IsConnected() })
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	stop := run(t, r.Run)
	wait.For(t, 5*time.Second, "a failed heartbeat", func() bool { return r.Err() != nil })
	start := time.Now()
	stop()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run returned %v after its stop, want well under the leave's 2 s: there is no key to delete", d)
	}
}

// TestRegistrarBucketTTLFollowsControl: BucketTTL follows the bucket's TTL when control lowers
// it (a restart with a shorter heartbeat_ttl updates the bucket), within ttlRereadBeats
// heartbeats. The edge counts itself lagging once no heartbeat answered in the last TTL
// (edge registrationLapsed): read once at the bind, as before, a lowered TTL left the edge
// thinking its key lived longer than it did, and another process of the node could find no
// key and ack for it while it served.
func TestRegistrarBucketTTLFollowsControl(t *testing.T) {
	s, js := setupTTL(t, 10*time.Second)
	_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	run(t, r.Run)
	wait.For(t, 10*time.Second, "the bucket's TTL read", func() bool { return r.BucketTTL() == 10*time.Second })
	if err := fleet.EnsureBuckets(t.Context(), js, "", 3*time.Second, 1); err != nil {
		t.Fatalf("EnsureBuckets with a lower TTL: %v", err)
	}
	wait.For(t, 10*time.Second, "BucketTTL to follow the lowered TTL", func() bool { return r.BucketTTL() == 3*time.Second })
}
