package dnsroute

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestHealthzNamesNATSOutage: a live server cut off from NATS keeps answering from the last
// fleet view it holds (the right service: its nodes still serve), so /healthz stays 200 for a
// load balancer, but its body names the degraded state, as the edge's names why it is not
// ready, and meridian_dns_nats_connected says it for alerts. It answered "ok" throughout.
func TestHealthzNamesNATSOutage(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	_, ejs := ns.ConnectAs(t, natsauth.Edge("lhr", "n1"))
	reg, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Interval: 100 * time.Millisecond,
		Node: wire.Node{PoP: "lhr", ID: "n1", Lat: 51.5074, Lon: -0.1278, IPv4: "192.0.2.11"},
		Load: func() wire.LoadReport { return wire.LoadReport{Healthy: true} }})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = reg.Run(ctx) })

	cfg := testConfig(t)
	cfg.NATS, cfg.PoPs, cfg.Creds = ns.URL(), nil, ns.CredsFile(t, natsauth.DNS("ns1"))
	cfg.Listen, cfg.AdminListen = freeAddr(t, "udp", "127.0.2.240"), freeAddr(t, "tcp", "127.0.2.240")
	wg.Go(func() {
		if err := RunLive(ctx, cfg, 10*time.Second); err != nil {
			t.Errorf("RunLive: %v", err)
		}
	})
	healthz := func() (int, string) {
		r, err := http.Get("http://" + cfg.AdminListen + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, strings.TrimSpace(string(b))
	}
	connected := func() string { // the gauge's value as /metrics writes it ("" when absent)
		r, err := http.Get("http://" + cfg.AdminListen + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		for l := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "meridian_dns_nats_connected "); ok {
				return v
			}
		}
		return ""
	}
	ts := &testServer{addr: cfg.Listen}
	answersNode := func() bool {
		r, err := ts.exchange("www.cdn.example.", dns.TypeA, qopt{})
		if err != nil || len(r.Answer) == 0 {
			return false
		}
		a, ok := r.Answer[len(r.Answer)-1].(*dns.A)
		return ok && a.A.String() == "192.0.2.11"
	}
	wait.For(t, 10*time.Second, "the node in the answers", answersNode)
	if code, body := healthz(); code != http.StatusOK || body != "ok" || connected() != "1" {
		t.Errorf("connected: /healthz %d %q, meridian_dns_nats_connected %q; want 200 \"ok\" and 1", code, body, connected())
	}

	ns.Stop()
	wait.For(t, 10*time.Second, "/healthz naming the NATS outage", func() bool {
		_, body := healthz()
		return strings.HasPrefix(body, "degraded: ")
	})
	if code, body := healthz(); code != http.StatusOK || !strings.Contains(body, "NATS") ||
		!strings.Contains(body, "last fleet view") || connected() != "0" {
		t.Errorf("NATS down: /healthz %d %q, meridian_dns_nats_connected %q; want 200 naming NATS and the last fleet view, and 0",
			code, body, connected())
	}
	if !answersNode() {
		t.Error("NATS down: the node the server last saw is not in the answers")
	}

	ns.Restart()
	wait.For(t, 10*time.Second, "/healthz ok again", func() bool {
		code, body := healthz()
		return code == http.StatusOK && body == "ok"
	})
	if got := connected(); got != "1" { // the same state as the body: no wait of its own
		t.Errorf("NATS back: meridian_dns_nats_connected %q, want 1", got)
	}
}
