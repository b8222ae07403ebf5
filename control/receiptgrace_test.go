package control

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestPurgeReceiptInGraceWaitsForRegistrations: control (embedded NATS, same store dir)
// restarts after the fleet's registrations expired, and a purge is accepted during the grace
// (heartbeat TTL + 1 s on control's clock) while only ams/n2 has registered again. ams/n1 and
// ams/n3 are up (their purge subscribers reconnected) but register only when kicked; n3 acks at
// once, n1 only once the test lets it. The receipt is not complete while the grace lasts
// (awaiting_registrations_until says until when), though n2, the only node registered when it
// was issued, acked; n1 and n3 are added as they register (n3 acked, n1 pending); after the
// grace it waits for n1 still, and completes once n1 acks. Before, the receipt listed n2 alone
// and read complete as soon as n2 acked, while n1 had not applied the purge.
func TestPurgeReceiptInGraceWaitsForRegistrations(t *testing.T) {
	cfg := restartableConfig(t)
	ts := startServer(t, cfg)
	url := ts.NATSURL()
	hc, _ := json.Marshal(wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"})
	if code, b := ts.do(t, "PUT", "/v1/hosts/"+hostA, tokConfigurer, hc); code != http.StatusOK {
		t.Fatalf("PUT host %s = %d %s", hostA, code, b)
	}
	gate := make(chan struct{}) // n1 applies (and acks) purges once it is closed
	var openGate sync.Once
	regs := map[string]*fleet.Registrar{}
	var stops []func()
	for _, node := range []string{"n1", "n2", "n3"} {
		g := gate
		if node != "n1" {
			g = nil
		}
		var stop func()
		var wrote <-chan struct{}
		regs[node], wrote, stop = ackingNode(t, url, "ams", node, g)
		stops = append(stops, stop)
		// Each registrar registers as it starts; one still at it as control stops would wait
		// an hour (its interval) for an answer lost with NATS.
		select {
		case <-wrote:
		case <-time.After(10 * time.Second):
			t.Fatalf("ams/%s did not register within 10s", node)
		}
	}
	live := func(ts *testServer, node string) bool {
		return slices.ContainsFunc(ts.Fleet().Nodes(), func(n wire.Node) bool { return n.PoP == "ams" && n.ID == node })
	}
	for node := range regs {
		wait.For(t, 10*time.Second, "ams/"+node+" in control's view", func() bool { return live(ts, node) })
	}

	ts.stop()
	clock := newFakeClock()
	ts = startServer(t, cfg, func(s *Server) { s.now = clock.Now })
	// The nodes stop before the restarted control (cleanups run last first): a registrar's
	// write with NATS gone would wait out its interval.
	t.Cleanup(func() {
		openGate.Do(func() { close(gate) })
		for _, stop := range stops {
			stop()
		}
	})
	grace := startGrace(cfg.HeartbeatTTL)
	for node := range regs {
		wait.For(t, 10*time.Second, "ams/"+node+"'s old registration not live in the restarted view", func() bool { return !live(ts, node) })
	}
	wait.For(t, 10*time.Second, "ams/n2 registered again", func() bool { regs["n2"].Beat(); return live(ts, "n2") })

	code, resp, b := postPurge(t, ts, tokPurger, "", []byte(`{"host":"`+hostA+`","all":true}`))
	if code != http.StatusAccepted {
		t.Fatalf("purge of %s in the grace = %d %s, want 202", hostA, code, b)
	}
	id := resp.ID
	var r purge.Receipt
	var until *time.Time
	wait.For(t, 10*time.Second, "ams/n2 and ams/n3 acked", func() bool {
		r, until = graceReceipt(t, ts, id)
		return nodeStatus(r, "n2") == purge.NodeAcked && nodeStatus(r, "n3") == purge.NodeAcked
	})
	if r.Complete || until == nil || !until.Equal(clock.Now().Add(grace)) {
		t.Fatalf("receipt in the grace with ams/n1 not registered: complete %v, awaiting_registrations_until %v; want not complete until %v: %+v",
			r.Complete, until, clock.Now().Add(grace), r)
	}
	if s := nodeStatus(r, "n1"); s != "" {
		t.Errorf("ams/n1, not registered, is in the receipt as %q", s)
	}

	// n1 and n3 register during the grace: the receipt expects them now.
	for _, node := range []string{"n1", "n3"} {
		wait.For(t, 10*time.Second, "ams/"+node+" registered again", func() bool { regs[node].Beat(); return live(ts, node) })
	}
	// n1 is listed, not acked, and pending. (Its status may read unreachable for up to a TTL:
	// the view does not report a node back whose stale report it had not marked stale yet,
	// and the tracker asks expectedNodes who is registered.)
	r, until = graceReceipt(t, ts, id)
	if n := nodeAck(r, "n1"); r.Complete || until == nil || n == nil || n.Acked || !slices.Contains(r.Pending, purge.NodeRef{PoP: "ams", Node: "n1"}) {
		t.Fatalf("receipt once ams/n1 registered in the grace: complete %v, until %v, n1 %+v, pending %v; want not complete, n1 listed and pending",
			r.Complete, until, n, r.Pending)
	}
	if n := nodeAck(r, "n3"); n == nil || !n.Acked || n.Unexpected {
		t.Errorf("ams/n3 (acked before it registered, registered in the grace) in the receipt: %+v, want acked and expected", n)
	}

	clock.Advance(grace) // the grace is over: n1 still has not acked
	r, until = graceReceipt(t, ts, id)
	if r.Complete || until != nil || !slices.Contains(r.Pending, purge.NodeRef{PoP: "ams", Node: "n1"}) {
		t.Fatalf("receipt after the grace, ams/n1 not acked: complete %v, until %v, pending %v; want not complete, no until, n1 pending",
			r.Complete, until, r.Pending)
	}

	openGate.Do(func() { close(gate) })
	wait.For(t, 10*time.Second, "the receipt complete once ams/n1 acked", func() bool {
		r, _ = graceReceipt(t, ts, id)
		return r.Complete
	})
	if nodeStatus(r, "n1") != purge.NodeAcked || r.CompletedAt == nil {
		t.Errorf("complete receipt: n1 %q, completed_at %v; want n1 acked and a completion time", nodeStatus(r, "n1"), r.CompletedAt)
	}
}

// ackingNode runs node pop/node against the NATS at url until stop is called or the test ends:
// a registrar that registers as it starts and then heartbeats only when kicked (Beat), and a
// purge subscriber that acks every purge it applies, applying each only once gate (if not nil)
// is closed. wrote is closed once the registrar's first heartbeat is done.
func ackingNode(t *testing.T, url, pop, node string, gate <-chan struct{}) (_ *fleet.Registrar, wrote <-chan struct{}, stop func()) {
	t.Helper()
	_, js := connectAs(t, url, natsauth.Edge(pop, node))
	first := make(chan struct{})
	var once sync.Once
	reg, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Interval: time.Hour, Node: wire.Node{PoP: pop, ID: node},
		OnWrite: func(time.Time, bool) { once.Do(func() { close(first) }) }})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := purge.NewSubscriber(purge.SubscriberConfig{JS: js, PoP: pop, Node: node,
		Apply: func(ctx context.Context, _ purge.Message) (int, error) {
			if gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			return 0, nil
		},
		OnGap:        func(context.Context, uint64, uint64) {},
		ConfirmEvery: 100 * time.Millisecond,
		RetryMin:     10 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = reg.Run(ctx) })
	wg.Go(func() { _ = sub.Run(ctx) })
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	select {
	case <-sub.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s/%s's purge subscriber not ready within 10s", pop, node)
	}
	return reg, first, stop
}

// graceReceipt reads the one receipt of purge request id (GET /v1/purges/{id}) and its
// awaiting_registrations_until.
func graceReceipt(t *testing.T, ts *testServer, id string) (purge.Receipt, *time.Time) {
	t.Helper()
	code, b := ts.do(t, "GET", "/v1/purges/"+id, tokPurger, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/purges/%s = %d %s", id, code, b)
	}
	var resp purge.Response
	var held struct {
		Purges []struct {
			Until *time.Time `json:"awaiting_registrations_until"`
		} `json:"purges"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if err := json.Unmarshal(b, &held); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if len(resp.Purges) != 1 || len(held.Purges) != 1 {
		t.Fatalf("GET /v1/purges/%s: %d receipts, want 1: %s", id, len(resp.Purges), b)
	}
	if resp.Complete != resp.Purges[0].Complete {
		t.Errorf("GET /v1/purges/%s: the request's complete %v, its one receipt's %v", id, resp.Complete, resp.Purges[0].Complete)
	}
	return resp.Purges[0], held.Purges[0].Until
}

// nodeAck is node ams/<node>'s line in r, or nil.
func nodeAck(r purge.Receipt, node string) *purge.NodeAck {
	for _, p := range r.PoPs {
		for i := range p.Nodes {
			if p.PoP == "ams" && p.Nodes[i].Node == node {
				return &p.Nodes[i]
			}
		}
	}
	return nil
}

// nodeStatus is node ams/<node>'s status in r, "" when it is not listed.
func nodeStatus(r purge.Receipt, node string) string {
	if n := nodeAck(r, node); n != nil {
		return n.Status
	}
	return ""
}
