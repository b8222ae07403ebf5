package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/metricstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// registryUpdates forwards every registration node pop/id writes to the fleet bucket, in
// order, until the test ends. DNS ranks a node only while its registration is fresh and
// wire.Node.Usable (dnsroute/state.go), so a node that is not usable in these updates gets no
// clients.
func registryUpdates(t *testing.T, js jetstream.JetStream, pop, id string) <-chan wire.Node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.FleetBucket))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, wire.FleetKey(pop, id))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	out := make(chan wire.Node, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var n wire.Node
			if json.Unmarshal(e.Value(), &n) != nil {
				continue
			}
			select {
			case out <- n:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = w.Stop()
		cancel()
		<-done
	})
	return out
}

// healthz asks the node's admin handler for /healthz.
func healthz(n *Node) (int, string) {
	w := httptest.NewRecorder()
	n.AdminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	return w.Code, w.Body.String()
}

// nextUpdate returns the next registration from updates.
func nextUpdate(t *testing.T, updates <-chan wire.Node, what string) wire.Node {
	t.Helper()
	select {
	case n := <-updates:
		return n
	case <-time.After(20 * time.Second):
		t.Fatalf("no registry update within 20s waiting for %s", what)
		return wire.Node{}
	}
}

// TestReadyBeforeRegistered: a node registers at once but is usable in the registry (what DNS
// ranks) only once it can serve a host defined only in the config bucket and its purge
// consumer is caught up. Each case holds one of the two back until the node has registered.
func TestReadyBeforeRegistered(t *testing.T) {
	tests := []struct {
		name string
		// holdBack removes what the node needs before it starts; release restores it.
		holdBack, release func(t *testing.T, js jetstream.JetStream, h wire.HostConfig)
		// loadsEmpty: release makes the bucket, then puts the host in it. A node that loads
		// the bucket between the two has loaded all its config (none) and is rightly usable
		// without the host; such registrations are passed over until it serves the host.
		loadsEmpty bool
	}{
		{
			name:       "config bucket",
			loadsEmpty: true,
			holdBack: func(t *testing.T, js jetstream.JetStream, _ wire.HostConfig) {
				if err := js.DeleteKeyValue(context.Background(), wire.Bucket("", wire.ConfigBucket)); err != nil {
					t.Fatal(err)
				}
			},
			release: func(t *testing.T, js jetstream.JetStream, h wire.HostConfig) {
				if err := fleet.EnsureBuckets(context.Background(), js, "", 3*time.Second, 1); err != nil {
					t.Fatal(err)
				}
				if err := fleet.PutHost(context.Background(), js, "", h); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "purge stream",
			holdBack: func(t *testing.T, js jetstream.JetStream, h wire.HostConfig) {
				if err := js.DeleteStream(context.Background(), purge.StreamName("")); err != nil {
					t.Fatal(err)
				}
				if err := fleet.PutHost(context.Background(), js, "", h); err != nil {
					t.Fatal(err)
				}
			},
			release: func(t *testing.T, js jetstream.JetStream, _ wire.HostConfig) {
				if err := purge.EnsureStream(context.Background(), js, "", time.Hour, 1); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, js, _ := startNATS(t)
			_, originAddr := startOrigin(t, "127.0.0.10", nil)
			h := wire.HostConfig{Host: testHost, Origin: "http://" + originAddr}
			tt.holdBack(t, js, h)
			updates := registryUpdates(t, js, "f1", "n0")
			s, nodes := fleetEdges(t, []string{url}, false)
			n := nodes[0]
			served := func() int {
				return do(t, s.client, http.MethodGet, n.Addr(), testHost, "/ready?cc=max-age%3D60").status
			}

			first := nextUpdate(t, updates, "the first registration")
			if first.Usable() {
				t.Fatalf("first registration usable (%+v) while the %s is missing (request status %d)", first.Load, tt.name, served())
			}
			if code, body := healthz(n); code != http.StatusServiceUnavailable {
				t.Errorf("/healthz = %d %q while the %s is missing, want 503", code, body, tt.name)
			}
			tt.release(t, js, h)
			for usable := 0; usable < 3; {
				u := nextUpdate(t, updates, "a usable registration")
				if !u.Usable() {
					continue
				}
				got := served()
				if got == http.StatusMisdirectedRequest && tt.loadsEmpty && usable == 0 {
					continue // loaded the empty bucket; once it serves the host, it must go on
				}
				usable++
				if got != http.StatusOK {
					t.Fatalf("registered usable but answered %d for a host from the config bucket, want 200", got)
				}
				if n.purgeSub.Load().CaughtUpAt().IsZero() {
					t.Fatal("registered usable before its purge consumer confirmed it was caught up")
				}
			}
			if code, body := healthz(n); code != http.StatusOK {
				t.Errorf("/healthz = %d %q once usable, want 200", code, body)
			}
		})
	}
}

// TestPurgeBoundedStalenessUnderPartition is purge rule 5: a node cut off from NATS for longer
// than purge.max_lag serves nothing purged during the cut as fresh (every answer is a
// revalidation), says it is not ready, and after rejoining reports itself usable only once the
// purge is applied.
func TestPurgeBoundedStalenessUnderPartition(t *testing.T) {
	url, js, nc := startNATS(t)
	cut := natsCutter(t, "127.0.0.50", url)
	// Long enough that a busy machine's late stream confirmation does not make the node lag
	// before the cut (its warm-up hits would then be revalidations), short for the test.
	const maxLag = 2 * time.Second
	s, nodes := fleetEdgesWith(t, []string{cut.URL()}, true, time.Second, func(c *Config) { c.Purge.MaxLag = maxLag })
	n := nodes[0]
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	updates := registryUpdates(t, js, "f1", "n0")
	// stale-while-revalidate must not serve the purged copy while the node lags.
	purged := obj("/cut/purged", "cc", "max-age=600, stale-while-revalidate=600")
	kept := obj("/cut/kept", "cc", "max-age=600")
	for _, path := range []string{purged, kept} {
		do(t, s.client, http.MethodGet, n.Addr(), testHost, path)
		wantCacheStatus(t, do(t, s.client, http.MethodGet, n.Addr(), testHost, path), "hit")
	}

	cut.Cut()
	s.origin.Bump("/cut/purged")
	m := purge.Message{ID: purge.NewID(), Host: testHost, Kind: purge.KindURL, Values: []string{purged}, IssuedAt: time.Now()}
	p.tracker.Register(m, []purge.NodeRef{{PoP: n.cfg.PoP, Node: n.cfg.Node}})
	seq, err := purge.Publish(context.Background(), js, "", m)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the node to lag", n.purgeLagging)
	if code, body := healthz(n); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz = %d %q while cut off past max_lag, want 503", code, body)
	}
	if rep := n.TakeLoadReport(); rep.Healthy {
		t.Error("load report healthy while cut off past max_lag")
	}
	for i := range 10 {
		r := do(t, s.client, http.MethodGet, n.Addr(), testHost, purged)
		cs := r.header.Get("Cache-Status")
		if !strings.HasPrefix(r.body, "/cut/purged@v2:") || !strings.Contains(cs, "fwd=stale") {
			t.Errorf("request %d during the cut: %q via %q, want the new version, revalidated (fwd=stale)", i, r.body[:min(len(r.body), 16)], cs)
		}
		r = do(t, s.client, http.MethodGet, n.Addr(), testHost, kept)
		if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "fwd=stale") {
			t.Errorf("request %d during the cut for an unpurged object: Cache-Status %q, want a revalidation (fwd=stale)", i, cs)
		}
	}
	if n.purgeSeq.Load() >= seq {
		t.Fatalf("purge %d applied while cut off: the cut did not hold", seq)
	}

	restored := time.Now()
	cut.Restore()
	for {
		u := nextUpdate(t, updates, "the node usable again after the cut")
		if !u.Usable() || u.Load.At.Before(restored) {
			continue // written before the cut
		}
		if got := n.purgeSeq.Load(); got < seq {
			t.Fatalf("usable again with purges applied up to %d, want >= %d (published during the cut)", got, seq)
		}
		break
	}
	p.wait(m, 10*time.Second)
	r := do(t, s.client, http.MethodGet, n.Addr(), testHost, purged)
	if !strings.HasPrefix(r.body, "/cut/purged@v2:") {
		t.Errorf("after rejoining served %q via %q, want the new version", r.body[:min(len(r.body), 16)], r.header.Get("Cache-Status"))
	}
	wantCacheStatus(t, do(t, s.client, http.MethodGet, n.Addr(), testHost, kept), "hit")
}

// TestHealthzSaysHeartbeatFailing: a node whose heartbeats the fleet bucket refuses is not
// ready (it counts as lagging: registrationLapsed), before its first heartbeat or once its
// registration may have expired. /healthz must say that the heartbeat fails, not "joining the
// fleet" or "purges not confirmed", which sent an operator to the purge stream for a full or
// missing fleet bucket or a permission error.
func TestHealthzSaysHeartbeatFailing(t *testing.T) {
	for i, tt := range []struct {
		name string
		// registered: the bucket refuses heartbeats only once the node is ready.
		registered bool
	}{
		{name: "never registered"},
		{name: "registration lapsed", registered: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, js, _ := startNATS(t)
			_, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, nil)
			cfg := processConfig(t, nodes[0], "n9", url, url)
			var restore func()
			if !tt.registered {
				restore = setFleetMaxValueSize(t, js, 16)
			}
			n, _ := startEdge(t, listen(t, fmt.Sprintf("127.0.4.%d", 40+i)), cfg)
			if tt.registered {
				<-n.FleetReady()
				if v := metricstest.Values(t, n.Registry()); v["meridian_edge_ready"] != 1 || v["meridian_edge_fleet_heartbeat_failing"] != 0 {
					t.Errorf("a ready node's meridian_edge_ready %v, meridian_edge_fleet_heartbeat_failing %v; want 1 and 0",
						v["meridian_edge_ready"], v["meridian_edge_fleet_heartbeat_failing"])
				}
				restore = setFleetMaxValueSize(t, js, 16)
			}
			defer restore()
			wait.For(t, 10*time.Second, "a heartbeat refused", func() bool { return n.registrar.Load().Err() != nil })
			wait.For(t, 10*time.Second, "the node lagging", n.purgeLagging)
			code, body := healthz(n)
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "heartbeat") {
				t.Errorf("/healthz = %d %q while the fleet bucket refuses heartbeats, want 503 naming the heartbeat", code, body)
			}
			// An operator's alert reads the same from the metrics.
			v := metricstest.Values(t, n.Registry())
			if v["meridian_edge_ready"] != 0 || v["meridian_edge_fleet_heartbeat_failing"] != 1 {
				t.Errorf("meridian_edge_ready %v, meridian_edge_fleet_heartbeat_failing %v while heartbeats fail; want 0 and 1",
					v["meridian_edge_ready"], v["meridian_edge_fleet_heartbeat_failing"])
			}
		})
	}
}

// TestHealthzSaysOwnKeyWatchFailing: a process's first heartbeat waits for the watch of its
// own fleet key (a restart's old process may have registered a longer max_lag there). When the
// fleet bucket refuses that watch (here it is missing; its consumer bound full does the same)
// the node never registers and never becomes ready, and /healthz said only "joining the
// fleet": no heartbeat was sent, so none failed to name.
func TestHealthzSaysOwnKeyWatchFailing(t *testing.T) {
	url, js, _ := startNATS(t)
	_, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, nil)
	cfg := processConfig(t, nodes[0], "n9", url, url)
	if err := js.DeleteKeyValue(context.Background(), wire.Bucket("", wire.FleetBucket)); err != nil {
		t.Fatal(err)
	}
	n, _ := startEdge(t, listen(t, "127.0.4.50"), cfg)
	wait.For(t, 10*time.Second, "/healthz naming the own key watch", func() bool {
		_, body := healthz(n)
		return strings.Contains(body, "fleet key")
	})
	if code, body := healthz(n); code != http.StatusServiceUnavailable || !strings.Contains(body, "not found") {
		t.Errorf("/healthz = %d %q, want 503 with the watch's error", code, body)
	}
}

// TestReadyGaugeFollowsHealthz: meridian_edge_ready is 1 exactly while /healthz answers 200;
// a draining node answers 503 ("draining"), and the first version of the gauge read 1 there.
func TestReadyGaugeFollowsHealthz(t *testing.T) {
	_, originAddr := startOrigin(t, "127.0.4.60", nil)
	n, stop := startEdge(t, listen(t, "127.0.4.61"), Config{LameDuck: 5 * time.Second,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	ready := func() float64 { return metricstest.Values(t, n.Registry())["meridian_edge_ready"] }
	if code, _ := healthz(n); code != http.StatusOK || ready() != 1 {
		t.Fatalf("a serving node: /healthz %d, meridian_edge_ready %v; want 200 and 1", code, ready())
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); stop() }()
	defer func() { <-stopped }()
	wait.For(t, 10*time.Second, "the node draining", n.Draining)
	if code, _ := healthz(n); code != http.StatusServiceUnavailable || ready() != 0 {
		t.Errorf("a draining node: /healthz %d, meridian_edge_ready %v; want 503 and 0", code, ready())
	}
}
