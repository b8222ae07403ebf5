package control

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
)

// TestRestartedEdgeAcksPurgeOfItsDowntime: an edge process dies with its registration still
// live (it could not leave the registry: its link was cut first, as in a crash), a purge is
// issued expecting it, and the node starts again under the same id while the purge's ?wait is
// held. The new process joins the stream after the purge and marks what it holds stale, so the
// purge is in effect there: its join ack completes the receipt, and the node reads acked
// (joined). Before, the new process never acked the purge and the receipt kept the node
// pending for good, though nothing it served could be older than the purge.
func TestRestartedEdgeAcksPurgeOfItsDowntime(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1, HeartbeatTTL: 20 * time.Second})
	_, addr := startOrigin(t, "127.0.6.110")
	cut := natstest.NewCutter(t, "127.0.6.150", ts.NATSURL())
	aliasNATS(t, cut.URL(), ts.NATSURL())
	live := startEdge(t, "127.0.6.120", "ams", "n1", ts.NATSURL())
	crashed, stopCrashed := startStoppableEdge(t, "127.0.6.121", "ams", "n2", cut.URL())
	wait.For(t, 10*time.Second, "two nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 2
	})
	putHosts(t, ts, addr, []*edge.Node{live, crashed}, hostA)

	lastSeq := func() uint64 {
		st, err := ts.JetStream().Stream(t.Context(), purge.StreamName(""))
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.LastSeq
	}
	before := lastSeq()
	cut.Cut()
	stopCrashed() // its leave cannot reach NATS: the registration stays until the TTL
	body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{"/downtime"}})
	type answer struct {
		code int
		resp purge.Response
		body []byte
	}
	answered := make(chan answer, 1)
	go func() {
		code, resp, b := postPurge(t, ts, tokPurger, "25s", body)
		answered <- answer{code, resp, b}
	}()
	// The purge is stored (so registered, expecting ams/n2) before the node comes back.
	wait.For(t, 10*time.Second, "the purge in the stream", func() bool { return lastSeq() > before })
	restarted := startEdge(t, "127.0.6.122", "ams", "n2", ts.NATSURL())
	a := <-answered
	if a.code != http.StatusOK || !a.resp.Complete {
		t.Fatalf("purge waited on across the restart = %d complete=%v, want 200 complete: %s", a.code, a.resp.Complete, a.body)
	}
	for _, rc := range a.resp.Purges {
		for _, p := range rc.PoPs {
			for _, n := range p.Nodes {
				if n.Node == "n2" && (!n.Acked || !n.Joined) {
					t.Errorf("ams/n2 = %+v, want acked by its new process's join: %s", n, a.body)
				}
			}
		}
	}
	// What the new process serves is no older than the purge.
	if r := get(t, restarted, hostA, "/downtime"); isHit(r.cs) {
		t.Errorf("the restarted node serves the purged path as a hit before any fill (Cache-Status %q)", r.cs)
	}
}

// startStoppableEdge is startEdge with a stop that ends the node at once.
func startStoppableEdge(t *testing.T, ip, pop, node, natsURL string) (*edge.Node, func()) {
	t.Helper()
	n, err := edge.New(edge.Config{PoP: pop, Node: node,
		Fleet: edge.FleetConfig{NATS: natsURL, Creds: credsFile(t, natsURL, natsauth.Edge(pop, node)),
			Heartbeat: 100 * time.Millisecond, TTL: 300 * time.Millisecond}})
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, listenOn(t, ip), nil) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge %s: %v", n.Name(), err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-n.FleetReady():
	case err := <-done:
		t.Fatalf("edge %s stopped before joining the fleet: %v", n.Name(), err)
	case <-time.After(30 * time.Second):
		t.Fatalf("edge %s did not join the fleet within 30s", n.Name())
	}
	return n, stop
}
