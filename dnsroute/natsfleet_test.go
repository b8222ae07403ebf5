package dnsroute

import (
	"context"
	"net"
	"strings"
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

// TestLivePolicyFromConfigBucket: the routing policy in the config bucket is what DNS routes
// by, whenever it changes: one that leaves `policy` empty (nearest, with its own watermarks)
// applies as well as a named one, and deleting it brings back the config file's policy
// instead of leaving the last one from the bucket in force.
func TestLivePolicyFromConfigBucket(t *testing.T) {
	fx := startLive(t, nil)
	_, js := fx.ns.Connect(t)
	ctx := context.Background()
	// moved is the share of 40 London /24s not answered by lhr.
	moved := func() float64 {
		n := 0
		for i := range 40 {
			r := fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, "London", byte(i))})
			if fx.popOf(t, r) != "lhr" {
				n++
			}
		}
		return float64(n) / 40
	}
	put := func(p wire.RoutingPolicy) {
		t.Helper()
		if err := fleet.PutRouting(ctx, js, "", p); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("weighted", func(t *testing.T) {
		put(wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"fra": 1}})
		wait.For(t, 10*time.Second, "London sent to fra by the weights", func() bool { return moved() == 1 })
	})
	t.Run("deleted", func(t *testing.T) {
		kv, err := js.KeyValue(ctx, wire.Bucket("", wire.ConfigBucket))
		if err != nil {
			t.Fatal(err)
		}
		put(wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"fra": 1}})
		wait.For(t, 10*time.Second, "London sent to fra by the weights", func() bool { return moved() == 1 })
		if err := kv.Delete(ctx, wire.RoutingKey); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 10*time.Second, "London back at lhr under the file's policy", func() bool { return moved() == 0 })
	})
	// Last: the shedder keeps lhr's share for an answer TTL after its load falls.
	t.Run("nearest with the bucket's watermarks", func(t *testing.T) {
		put(wire.RoutingPolicy{Policy: "nearest"})
		fx.waitSaturation(t, "lhr", 0.5) // under the default low watermark (0.8): no shedding
		wait.For(t, 10*time.Second, "London at lhr under nearest", func() bool { return moved() == 0 })
		put(wire.RoutingPolicy{LowWatermark: 0.2, HighWatermark: 0.3})
		wait.For(t, 10*time.Second, "lhr over the bucket policy's high watermark shedding London", func() bool { return moved() > 0.8 })
	})
}

// TestExplainLiveFollowsBucketPolicy: `meridian dns explain` against a live fleet explains
// under the routing policy the config bucket holds, as the running server routes, not the
// file's policy it starts with before the bucket is read.
func TestExplainLiveFollowsBucketPolicy(t *testing.T) {
	fx := startLive(t, nil)
	_, js := fx.ns.Connect(t)
	ctx := context.Background()
	if err := fleet.PutRouting(ctx, js, "", wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"fra": 1}}); err != nil {
		t.Fatal(err)
	}
	london := cityPrefix(t, "London", 3)
	wait.For(t, 10*time.Second, "the server sending London to fra by the weights", func() bool {
		return fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: london})) == "fra"
	})
	cfg := testConfig(t)
	cfg.NATS, cfg.PoPs = fx.ns.URL(), nil
	cfg.Creds = fx.ns.CredsFile(t, natsauth.DNS("ns1"))
	// Each run is a new process's race between the bucket and the explanation: several.
	for i := range 10 {
		ex, err := ExplainLive(ctx, cfg, london.Addr(), "www", dns.TypeA, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Policy != "weighted" || ex.PoP != "fra" {
			t.Fatalf("explain %d: policy %s, PoP %s; the server routes London by the bucket's weighted policy to fra", i, ex.Policy, ex.PoP)
		}
	}
}

// TestExplainLiveWithoutBucketPolicy: with no routing policy in the config bucket (never set,
// or deleted) explain does not wait out its timeout for one: the file's policy is the
// server's at once.
func TestExplainLiveWithoutBucketPolicy(t *testing.T) {
	tests := []struct {
		name   string
		delete bool
	}{
		{"never set", false},
		{"deleted", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := startLive(t, nil)
			_, js := fx.ns.Connect(t)
			ctx := context.Background()
			if tt.delete {
				if err := fleet.PutRouting(ctx, js, "", wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"fra": 1}}); err != nil {
					t.Fatal(err)
				}
				kv, err := js.KeyValue(ctx, wire.Bucket("", wire.ConfigBucket))
				if err != nil {
					t.Fatal(err)
				}
				if err := kv.Delete(ctx, wire.RoutingKey); err != nil {
					t.Fatal(err)
				}
			}
			cfg := testConfig(t)
			cfg.NATS, cfg.PoPs = fx.ns.URL(), nil
			cfg.Creds = fx.ns.CredsFile(t, natsauth.DNS("ns1"))
			start := time.Now()
			ex, err := ExplainLive(ctx, cfg, cityPrefix(t, "London", 3).Addr(), "www", dns.TypeA, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("explain took %v: it waited for a policy the bucket does not hold", took)
			}
			if ex.Policy != "nearest" {
				t.Errorf("policy %s, want the file's nearest", ex.Policy)
			}
		})
	}
}

// gaugeValue reads a gauge of the server's registry whose pop label is pop.
func gaugeValue(t *testing.T, s *Server, name, pop string) (float64, bool) {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "pop" && l.GetValue() == pop {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestExplainLiveStatesShedHistory: explain is a new process and knows no running server's
// shedding history: after lhr's share fell (hysteresis) the server still sheds half of
// London while lhr's load, read now, says shed nothing. The explanation says that it assumes
// no history and names the server's metric that holds the share in use, which the running
// server exports; under least-loaded it says the same of the compared loads, and under
// weighted, which keeps no history, nothing.
func TestExplainLiveStatesShedHistory(t *testing.T) {
	var clock skewClock
	fx := startLive(t, func(c *Config) { c.Clock, c.TTL, c.HeartbeatTTL = clock.Now, time.Second, time.Hour })
	london := cityPrefix(t, "London", 3)
	fx.waitSaturation(t, "lhr", 1.3)
	fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: london}) // the server sheds 95 %
	clock.Advance(1100 * time.Millisecond)                      // a TTL later a fall may come
	fx.waitSaturation(t, "lhr", 0.09)                           // what the kept 5 % load
	fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: london})
	if got := fx.ShedShare("lhr"); got < 0.3 || got > 0.7 {
		t.Fatalf("running server: lhr sheds %.2f after the fall, want about 0.5", got)
	}
	if got, ok := gaugeValue(t, fx.Server, "meridian_dns_pop_shed_ratio", "lhr"); !ok || got < 0.3 || got > 0.7 {
		t.Errorf("meridian_dns_pop_shed_ratio{pop=lhr} = %v (exported %v), want about 0.5 as the server sheds", got, ok)
	}
	if got, ok := gaugeValue(t, fx.Server, "meridian_dns_pop_load_ratio", "lhr"); !ok || got != 0.1 {
		t.Errorf("meridian_dns_pop_load_ratio{pop=lhr} = %v (exported %v), want 0.1 (0.09 in 5 %% steps)", got, ok)
	}
	tests := []struct {
		policy      string
		wantHistory []string // named in the explanation's history; none for no history line
	}{
		// Where every usable PoP sheds, the least utilised by the kept figures (load_hysteresis)
		// keeps whom all shed: those are history too.
		{"nearest", []string{"meridian_dns_pop_shed_ratio", "meridian_dns_pop_load_ratio"}},
		{"latency", []string{"meridian_dns_pop_shed_ratio", "meridian_dns_pop_load_ratio"}},
		{"least-loaded", []string{"meridian_dns_pop_load_ratio"}},
		{"weighted", nil},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.NATS, cfg.PoPs = fx.ns.URL(), nil
			cfg.Creds = fx.ns.CredsFile(t, natsauth.DNS("ns1"))
			cfg.Policy = wire.RoutingPolicy{Policy: tt.policy}
			ex, err := ExplainLive(context.Background(), cfg, london.Addr(), "www", dns.TypeA, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			if err := ex.Write(&out); err != nil {
				t.Fatal(err)
			}
			if len(tt.wantHistory) == 0 {
				if strings.Contains(out.String(), "history:") {
					t.Errorf("explain under %s states a history assumption, want none:\n%s", tt.policy, out.String())
				}
				return
			}
			for _, want := range tt.wantHistory {
				if !strings.Contains(out.String(), "history:") || !strings.Contains(ex.History, want) {
					t.Errorf("explain under %s: history %q, want a statement naming %s:\n%s", tt.policy, ex.History, want, out.String())
				}
			}
			if tt.policy == "nearest" {
				for _, c := range ex.Candidates {
					if c.PoP == "lhr" && c.ShedPercent != 0 {
						t.Errorf("explain: lhr sheds %.0f%%; a new process reads 0.09 as no shedding", c.ShedPercent)
					}
				}
			}
		})
	}
}

// TestPopShedGaugeOnlyWhereAnswersShed: meridian_dns_pop_shed_ratio is the share answers use,
// so under least-loaded and weighted, which never shed, it is 0 whatever the shedder holds
// for a loaded PoP: an alert on it would otherwise fire for clients nobody moves.
func TestPopShedGaugeOnlyWhereAnswersShed(t *testing.T) {
	fx := startLive(t, nil)
	fx.waitSaturation(t, "lhr", 0.9)
	fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, "London", 3)}) // the state sees it
	tests := []struct {
		name   string
		policy wire.RoutingPolicy
		want   float64
	}{
		{"least-loaded", wire.RoutingPolicy{Policy: "least-loaded"}, 0},
		{"weighted", wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"lhr": 1, "fra": 1}}, 0},
		{"nearest", wire.RoutingPolicy{Policy: "nearest"}, 0.5},
		{"latency", wire.RoutingPolicy{Policy: "latency"}, 0.5},
		{"weighted without weights", wire.RoutingPolicy{Policy: "weighted"}, 0}, // nearest without shedding
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := fx.SetPolicy(tt.policy); err != nil {
				t.Fatal(err)
			}
			if got, ok := gaugeValue(t, fx.Server, "meridian_dns_pop_shed_ratio", "lhr"); !ok || got != tt.want {
				t.Errorf("under %+v: meridian_dns_pop_shed_ratio{pop=lhr} = %v (exported %v), want %v", tt.policy, got, ok, tt.want)
			}
		})
	}
}
