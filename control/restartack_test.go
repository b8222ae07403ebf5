package control

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
)

// TestAckNotHeldAfterControlRestart: the single-machine fleet of the README (control with its
// embedded NATS and a store dir, one edge) has control restarted, down longer than the fleet
// bucket's TTL, so the edge's registration lapses and its key expires. Once the edge is ready
// again (it re-registered over the empty key and replayed), a purge is acked at once, as an
// idle node alone on its key acks (docs/purge.md). Before, the edge's first heartbeat after
// the restart took the expired key for another process's write (a restart's overlap) and held
// every ack for purge.max_lag (5 s by default) for the next max_lag + two heartbeats, so a
// `meridian purge --wait 2s` issued then listed the node pending and exited non-zero.
func TestAckNotHeldAfterControlRestart(t *testing.T) {
	cfg := restartableConfig(t)
	ts := startServer(t, cfg)
	_, originAddr := startOrigin(t, "127.0.6.210")
	url := ts.NATSURL()
	// max_lag well above the purge's wait below: a held ack cannot complete the receipt in it.
	const maxLag = 10 * time.Second
	n, err := edge.New(edge.Config{PoP: "ams", Node: "n1", Purge: edge.PurgeConfig{MaxLag: maxLag},
		Fleet: edge.FleetConfig{NATS: url, Creds: credsFile(t, url, natsauth.Edge("ams", "n1")),
			Heartbeat: 200 * time.Millisecond, TTL: time.Second}})
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	admin := listenOn(t, "127.0.6.221")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, listenOn(t, "127.0.6.220"), admin) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge: %v", err)
		}
	})
	select {
	case <-n.FleetReady():
	case err := <-done:
		t.Fatalf("edge stopped before joining the fleet: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("edge did not join the fleet within 30s")
	}
	putHosts(t, ts, originAddr, []*edge.Node{n}, hostA)
	health := func() string {
		r, err := http.Get("http://" + admin.Addr().String() + "/healthz")
		if err != nil {
			return err.Error()
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return strings.TrimSpace(string(b))
	}
	purgeAcked := func(ts *testServer, path string) {
		t.Helper()
		body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{path}})
		code, resp, b := postPurge(t, ts, tokPurger, "3s", body)
		if code != http.StatusOK || !resp.Complete {
			t.Fatalf("purge of %s with ?wait=3s = %d complete=%v, want 200 and acked at once: %s", path, code, resp.Complete, b)
		}
	}
	purgeAcked(ts, "/before")

	ts.stop()
	// Down past the bucket's TTL: the edge's registration lapses (and its key expires).
	wait.For(t, 10*time.Second, "the edge's registration lapsed", func() bool {
		return strings.Contains(health(), "no heartbeat answered within the fleet bucket's TTL")
	})
	ts = startServer(t, cfg)
	wait.For(t, 20*time.Second, "the edge ready again", func() bool { return health() == "ok" })
	purgeAcked(ts, "/after")
}

// restartableConfig is a control config that can be started, stopped and started again as the
// same control: a store dir, and a NATS address fixed before the first start (the embedded NATS
// listens there before and after the restart), heartbeat TTL 1 s, no purge rate limit.
func restartableConfig(t *testing.T) Config {
	t.Helper()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := probe.Addr().String()
	probe.Close()
	return Config{StoreDir: t.TempDir(), NATSListen: natsAddr, PurgeRate: -1, HeartbeatTTL: time.Second}
}
