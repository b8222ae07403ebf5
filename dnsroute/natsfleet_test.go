package dnsroute

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRunLive: a DNS server fed by the fleet registry in NATS answers with registered nodes and
// follows operator drains.
func TestRunLive(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	for _, n := range []wire.Node{
		{PoP: "lon", ID: "n1", Lat: 51.5, Lon: -0.13, IPv4: "192.0.2.10"},
		{PoP: "syd", ID: "n1", Lat: -33.87, Lon: 151.2, IPv4: "192.0.2.20"},
	} {
		_, js := ns.ConnectAs(t, natsauth.Edge(n.PoP, n.ID))
		r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: n, Interval: 200 * time.Millisecond,
			Load: func() wire.LoadReport { return wire.LoadReport{Healthy: true} }})
		if err != nil {
			t.Fatal(err)
		}
		go r.Run(ctx)
	}

	probe, err := net.ListenPacket("udp", "127.0.2.200:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	cfg := testConfig(t)
	cfg.NATS, cfg.PoPs, cfg.Listen = ns.URL(), nil, addr
	cfg.Creds = ns.CredsFile(t, natsauth.DNS("ns1"))
	done := make(chan error, 1)
	go func() { done <- RunLive(ctx, cfg, 5*time.Second) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunLive: %v", err)
		}
	}()
	ts := &testServer{addr: addr}
	answer := func(city string) string {
		r, err := ts.exchange("www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, city, 1)})
		if err != nil || len(r.Answer) == 0 {
			return ""
		}
		if a, ok := r.Answer[len(r.Answer)-1].(*dns.A); ok {
			return a.A.String()
		}
		return ""
	}
	wait.For(t, 10*time.Second, "London and Sydney answered by their PoPs", func() bool { return answer("London") == "192.0.2.10" && answer("Sydney") == "192.0.2.20" })
	if err := fleet.SetDrain(ctx, js, "", "lon", true); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "London answered by Sydney after the drain", func() bool { return answer("London") == "192.0.2.20" })
}
