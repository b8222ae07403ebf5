package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/clocktest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// fakeClock is the server's clock (Server.now) in tests: it moves only when told.
type fakeClock = clocktest.Clock

func newFakeClock() *fakeClock { return clocktest.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

// pastStartGrace is a startServer setup for tests that purge hosts nobody serves, or whose
// purges' receipts must not be held for registrations until the grace ends: its clock reads
// the real time until Ready is closed (readyAt, and a reconnect of control's NATS before
// it, read it) and a day later ever after, so the start-up grace is over as soon as the server
// is ready (a reconnect of control's NATS connection after that would start it again).
func pastStartGrace(s *Server) {
	s.now = func() time.Time {
		select {
		case <-s.ready:
			return time.Now().Add(24 * time.Hour)
		default:
			return time.Now()
		}
	}
}

// TestPurgeOfFileHostInStartGrace: control (embedded NATS, same store dir) restarts while the
// only node that serves a host from its config file has not registered again (its
// registration outlived the TTL, as after NATS was down longer than it). Until the start-up
// grace (heartbeat TTL + 1 s on control's clock) ends, a purge of a host neither the bucket
// nor a live registration has is answered 503 with Retry-After (the nodes may not have
// registered yet), not 400; a bucket host's purge is accepted meanwhile; once the node
// registers again its file host's purge is accepted; after the grace a host nobody serves is
// 400 again. Before, the file host's purge was 400 "not configured" until the node
// re-registered.
func TestPurgeOfFileHostInStartGrace(t *testing.T) {
	const fileHost = "file.example.com"
	cfg := restartableConfig(t)
	ts := startServer(t, cfg)
	url := ts.NATSURL()
	hc, _ := json.Marshal(wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"})
	if code, b := ts.do(t, "PUT", "/v1/hosts/"+hostA, tokConfigurer, hc); code != http.StatusOK {
		t.Fatalf("PUT host %s = %d %s", hostA, code, b)
	}

	// The node's registrar heartbeats only when kicked (Beat): after the restart it stays
	// unregistered until the test says so.
	reg := kickedRegistrar(t, url, fileHost)
	wait.For(t, 10*time.Second, "ams/n1 in control's view", func() bool { return kickedLive(ts) })

	ts.stop()
	clock := newFakeClock()
	ts = startServer(t, cfg, func(s *Server) { s.now = clock.Now })
	// The registration the restarted view may have loaded goes stale (not live) after the TTL.
	wait.For(t, 10*time.Second, "ams/n1's old registration not live in the restarted view", func() bool { return !kickedLive(ts) })

	grace := startGrace(cfg.HeartbeatTTL)
	for _, host := range []string{fileHost, "nowhere.example.com"} {
		code, h, e := ts.purgeAll(t, host)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("purge of %s right after the restart = %d %+v, want 503", host, code, e)
		}
		if got, want := h.Get("Retry-After"), strconv.Itoa(int(grace/time.Second)); got != want {
			t.Errorf("purge of %s in the grace: Retry-After %q, want %q (the whole grace is left)", host, got, want)
		}
		if !strings.Contains(e.Error, "registered again yet") || e.Field != "host" {
			t.Errorf("purge of %s in the grace: error %+v, want field host and a message saying nodes may not have registered again yet", host, e)
		}
	}
	if code, _, e := ts.purgeAll(t, hostA); code != http.StatusAccepted {
		t.Errorf("purge of bucket host %s in the grace = %d %+v, want 202", hostA, code, e)
	}
	// GET /v1/hosts says the same of the file host: not that nobody serves it.
	if code, b := ts.do(t, "GET", "/v1/hosts/"+fileHost, tokAdmin, nil); code != http.StatusNotFound ||
		!strings.Contains(string(b), "no live node has registered it from its config file: the control plane started") ||
		!strings.Contains(string(b), "nodes may not have registered again yet") {
		t.Errorf("GET /v1/hosts/%s in the grace = %d %s, want 404 saying nodes may not have registered again yet", fileHost, code, b)
	}
	clock.Advance(grace / 2)
	if code, h, _ := ts.purgeAll(t, fileHost); code != http.StatusServiceUnavailable || h.Get("Retry-After") != strconv.Itoa(int((grace/2+time.Second-1)/time.Second)) {
		t.Errorf("purge of %s half way through the grace = %d, Retry-After %q; want 503 and the half left, rounded up", fileHost, code, h.Get("Retry-After"))
	}

	wait.For(t, 10*time.Second, "ams/n1 registered again", func() bool { reg.Beat(); return kickedLive(ts) })
	if code, _, e := ts.purgeAll(t, fileHost); code != http.StatusAccepted {
		t.Errorf("purge of %s once ams/n1 registered again = %d %+v, want 202", fileHost, code, e)
	}

	clock.Advance(grace/2 + time.Nanosecond) // the grace is over
	code, h, e := ts.purgeAll(t, "nowhere.example.com")
	if want := "nowhere.example.com is not configured: not in the config bucket, nor in the config file of any live node"; code != http.StatusBadRequest || e.Error != want || h.Get("Retry-After") != "" {
		t.Errorf("purge of a host nobody serves after the grace = %d %+v (Retry-After %q), want 400 %q and no Retry-After", code, e, h.Get("Retry-After"), want)
	}
	if code, _, e := ts.purgeAll(t, fileHost); code != http.StatusAccepted {
		t.Errorf("purge of %s after the grace = %d %+v, want 202", fileHost, code, e)
	}
}

// TestPurgeOfFileHostAfterNATSReconnect: control runs against an external NATS that stops for
// longer than the heartbeat TTL and starts again. The registrations expired meanwhile, as in a
// restart of control, and the node that serves a host from its config file registers again only
// at its next heartbeat: until then, for the same grace (heartbeat TTL + 1 s) from the moment
// control's connection came back, a purge of a host in neither the bucket nor a live
// registration is 503 with Retry-After, not 400; once the node registered it is accepted, and
// after the grace a host nobody serves is 400 again. Before, the grace ran only from the start,
// long over here, and the file host's purge was 400 "not configured" until the node's heartbeat.
func TestPurgeOfFileHostAfterNATSReconnect(t *testing.T) {
	const fileHost = "file.example.com"
	ns := startNATS(t)
	clock := newFakeClock()
	cfg := Config{NATSURL: ns.URL(), PurgeRate: -1, HeartbeatTTL: time.Second}
	ts := startServer(t, cfg, func(s *Server) { s.now = clock.Now })
	grace := startGrace(cfg.HeartbeatTTL)
	clock.Advance(grace + time.Second) // the start-up grace is long over

	// The node's registrar heartbeats only when kicked (Beat).
	reg := kickedRegistrar(t, ns.URL(), fileHost)
	wait.For(t, 10*time.Second, "ams/n1 in control's view", func() bool { return kickedLive(ts) })
	if code, _, e := ts.purgeAll(t, "nowhere.example.com"); code != http.StatusBadRequest {
		t.Fatalf("purge of a host nobody serves, past the start-up grace = %d %+v, want 400", code, e)
	}

	ns.Stop()
	wait.For(t, 10*time.Second, "ams/n1's registration not live with NATS down", func() bool { return !kickedLive(ts) })
	ns.Restart()
	// Until control's connection is back the host cannot be looked up (503, no Retry-After);
	// then it is the grace's 503.
	var h http.Header
	var e APIError
	var seen []string // the answers while waiting, each once, for a failure to show
	defer func() {
		if t.Failed() {
			t.Logf("answers to the file host's purges after NATS restarted: %q", seen)
		}
	}()
	wait.For(t, 15*time.Second, "a purge of the file host answered 503 with Retry-After after the reconnect", func() bool {
		var code int
		code, h, e = ts.purgeAll(t, fileHost)
		if a := fmt.Sprintf("%d %s", code, e.Error); !slices.Contains(seen, a) {
			seen = append(seen, a)
		}
		return code == http.StatusServiceUnavailable && h.Get("Retry-After") != ""
	})
	if got, want := h.Get("Retry-After"), strconv.Itoa(int(grace/time.Second)); got != want || e.Field != "host" ||
		!strings.Contains(e.Error, "control's NATS connection came back") || !strings.Contains(e.Error, "registered again yet") {
		t.Errorf("purge of %s after the reconnect: Retry-After %q, error %+v; want Retry-After %s, field host, saying the connection came back and nodes may not have registered again yet", fileHost, got, e, want)
	}
	if code, b := ts.do(t, "GET", "/v1/hosts/"+fileHost, tokAdmin, nil); code != http.StatusNotFound ||
		!strings.Contains(string(b), "control's NATS connection came back") {
		t.Errorf("GET /v1/hosts/%s after the reconnect = %d %s, want 404 saying the connection came back", fileHost, code, b)
	}

	wait.For(t, 10*time.Second, "ams/n1 registered again", func() bool { reg.Beat(); return kickedLive(ts) })
	if code, _, e := ts.purgeAll(t, fileHost); code != http.StatusAccepted {
		t.Errorf("purge of %s once ams/n1 registered again = %d %+v, want 202", fileHost, code, e)
	}
	clock.Advance(grace) // the grace is over
	if code, h, e := ts.purgeAll(t, "nowhere.example.com"); code != http.StatusBadRequest || h.Get("Retry-After") != "" {
		t.Errorf("purge of a host nobody serves after the grace = %d %+v (Retry-After %q), want 400 and no Retry-After", code, e, h.Get("Retry-After"))
	}
}

// kickedRegistrar runs the registrar of edge ams/n1, serving host from its config file, against
// the NATS at url until the test ends; it heartbeats only when kicked (Beat).
func kickedRegistrar(t *testing.T, url, host string) *fleet.Registrar {
	t.Helper()
	_, js := connectAs(t, url, natsauth.Edge("ams", "n1"))
	reg, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Interval: time.Hour,
		Node: wire.Node{PoP: "ams", ID: "n1", Hosts: []string{host}}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopReg := context.WithCancel(context.Background())
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		_ = reg.Run(rctx)
	}()
	t.Cleanup(func() { stopReg(); <-regDone })
	return reg
}

// purgeAll asks to purge all of host and returns the answer's status, header and, for an
// error, its body decoded.
func (ts *testServer) purgeAll(t *testing.T, host string) (int, http.Header, APIError) {
	t.Helper()
	code, h, b := ts.doHeader(t, "POST", "/v1/purge", tokPurger, []byte(`{"host":"`+host+`","all":true}`))
	var e APIError
	if code/100 != 2 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("decode error answer %s: %v", b, err)
		}
	}
	return code, h, e
}

// kickedLive reports whether kickedRegistrar's node is live in ts's fleet view.
func kickedLive(ts *testServer) bool {
	return slices.ContainsFunc(ts.Fleet().Nodes(), func(n wire.Node) bool { return n.PoP == "ams" && n.ID == "n1" })
}
