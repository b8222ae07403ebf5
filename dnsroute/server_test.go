package dnsroute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/metricstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

func TestExampleConfig(t *testing.T) {
	cfg, err := LoadConfig("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.prepare()
	if err != nil {
		t.Fatalf("example config does not validate: %v", err)
	}
	if c.Zone != "cdn.example." || len(c.PoPs) != 9 || c.NS[0].Name != "ns1.cdn.example." || c.TTL != 30*time.Second {
		t.Errorf("example config = zone %q, %d PoPs, ns %q, ttl %v", c.Zone, len(c.PoPs), c.NS[0].Name, c.TTL)
	}
}

func TestConfigErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(string) string
		wantErr string
	}{
		{"unknown field", func(s string) string { return s + "colour: blue\n" }, "colour"},
		{"no zone", func(s string) string { return strings.Replace(s, "zone: cdn.example.", "zone: \"\"", 1) }, "zone"},
		{"bad rotation", func(s string) string { return strings.Replace(s, "rotation: roundrobin", "rotation: random", 1) }, "rotation"},
		{"bad policy", func(s string) string { return strings.Replace(s, "policy: nearest", "policy: fastest", 1) }, "policy"},
		{"bad node address", func(s string) string { return strings.Replace(s, "ipv4: 192.0.2.11", "ipv4: 300.0.2.11", 1) }, "ipv4"},
		{"unknown default", func(s string) string { return strings.Replace(s, "default_pop: iad", "default_pop: xyz", 1) }, "default_pop"},
		{"hostname outside", func(s string) string { return strings.Replace(s, "[www,", "[www.example.org.,", 1) }, "hostnames"},
		// A name with two meanings (RFC 2181 sections 10.1 and 10.3) was taken, and the
		// server answered with one of them. The error names both, and where they are.
		{"CNAME on a routed hostname", func(s string) string { return strings.Replace(s, "  alias: www\n", "  alias: www\n  static: www\n", 1) },
			"cnames.static: static.cdn.example. is both a CNAME (to www.cdn.example.) and a routed hostname (hostnames[1]); a CNAME has no other data beside it"},
		{"CNAME on a name server", func(s string) string {
			return strings.Replace(s, "  alias: www\n", "  alias: www\n  NS2.cdn.example.: www\n", 1)
		}, "cnames.NS2.cdn.example.: ns2.cdn.example. is both a CNAME (to www.cdn.example.) and the name of name server ns[1]; a CNAME has no other data beside it"},
		{"CNAME on a routed name server", func(s string) string {
			return strings.Replace(strings.Replace(s, "  alias: www\n", "  alias: www\n  ns1: www\n", 1), "[www,", "[www, ns1,", 1)
		}, "cnames.ns1: ns1.cdn.example. is both a CNAME (to www.cdn.example.) and a routed hostname (hostnames[1]) and the name of name server ns[0]; a CNAME has no other data beside it"},
		{"routed name server", func(s string) string { return strings.Replace(s, "[www,", "[ns1, www,", 1) },
			"hostnames[0]: ns1.cdn.example. is both a routed hostname and the name of name server ns[0], whose glue answers for it"},
		{"glue missing", func(s string) string { return strings.Replace(s, "    ipv4: [127.0.0.53]\n", "", 1) }, "glue"},
		{"negative ttl", func(s string) string { return strings.Replace(s, "ttl: 30s", "ttl: -1s", 1) }, "ttl"},
		{"low watermark above the default high", func(s string) string {
			return strings.Replace(strings.Replace(s, "low_watermark: 0.8", "low_watermark: 1.5", 1), "  high_watermark: 1.0\n", "", 1)
		}, "policy.low_watermark: 1.5 is above high_watermark 1 (the default)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.edit(string(base))))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestConfigReportsEveryProblem: a config file with an unknown field, a value of the wrong
// type and a bad value reports all three at once, each with its file:line:column and field.
func TestConfigReportsEveryProblem(t *testing.T) {
	base, err := os.ReadFile("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(base), "answer_count: 2", "answer_count: many", 1)
	text = strings.Replace(text, "rotation: roundrobin", "rotation: random", 1)
	text = strings.Replace(text, "ttl: 30s", "ttl: 30s\ncolour: blue", 1)
	path := filepath.Join(t.TempDir(), "dns.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// lineOf is the 1-based line of the first line of text starting with prefix.
	lineOf := func(prefix string) int {
		for i, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line starts with %q", prefix)
		return 0
	}
	_, err = LoadConfig(path)
	var errs wire.FieldErrors
	if !errors.As(err, &errs) {
		t.Fatalf("LoadConfig = %v, want wire.FieldErrors", err)
	}
	want := []struct {
		field, mention string
		line, column   int
	}{
		{"colour", "unknown field", lineOf("colour:"), 1},
		{"answer_count", "many", lineOf("answer_count:"), 15},
		{"rotation", "random", lineOf("rotation:"), 1},
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(want), err)
	}
	for _, w := range want {
		i := slices.IndexFunc(errs, func(e *wire.FieldError) bool { return e.Field == w.field })
		if i < 0 {
			t.Errorf("no problem reported for %s in:\n%v", w.field, err)
			continue
		}
		e := errs[i]
		prefix := fmt.Sprintf("%s:%d:", path, w.line)
		if e.File != path || e.Line != w.line || e.Column == 0 || !strings.HasPrefix(e.Error(), prefix) || !strings.Contains(e.Error(), w.mention) {
			t.Errorf("%s: %q (line %d column %d), want %s... mentioning %q", w.field, e.Error(), e.Line, e.Column, prefix, w.mention)
		}
	}
}

func TestExplain(t *testing.T) {
	cfg := testConfig(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	london, _ := geodata.Lookup("London")
	ex, err := s.Explain(london.V4.Addr().Next(), "www", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if ex.PoP != "lhr" || ex.City != "London" || !ex.Located || len(ex.Candidates) != 9 || ex.Candidates[0].PoP != "lhr" || !ex.Candidates[0].Chosen {
		t.Errorf("Explain(London) = %+v, want lhr chosen first of 9", ex)
	}
	if ex.Candidates[1].PoP != "fra" || ex.Candidates[1].DistanceKm < 600 || ex.Candidates[1].DistanceKm > 700 {
		t.Errorf("second candidate = %+v, want fra at ~640 km", ex.Candidates[1])
	}
	if want := []string{"192.0.2.11", "192.0.2.12"}; !slices.Equal(ex.Answer, want) {
		t.Errorf("answer = %v, want %v", ex.Answer, want)
	}
	if _, err := s.Explain(london.V4.Addr(), "nope", dns.TypeA); err == nil {
		t.Error("Explain(nope) = nil error, want not routed")
	}

	// The command prints the same, from the config file.
	dir := t.TempDir()
	yaml, _ := os.ReadFile("testdata/dns.yaml")
	path := dir + "/dns.yaml"
	os.WriteFile(path, bytes.Replace(yaml, []byte("mmdb: test-city.mmdb"), []byte("mmdb: "+cfg.MMDB), 1), 0o644)
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"explain", "--config", path, "--name", "static", "100.72.3.4"}) // Tokyo
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"static.cdn.example. A", "Tokyo", "* ", "nrt", "192.0.2.31"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestGenMMDBCommand(t *testing.T) {
	path := t.TempDir() + "/city.mmdb"
	cmd := NewCommand()
	cmd.SetArgs([]string{"gen-mmdb", path})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	geodata.Write(&want)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want.Bytes()) {
		t.Errorf("gen-mmdb wrote %d bytes, want the %d of geodata.Write", len(got), want.Len())
	}
}

func TestRunServesAndStops(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen = "127.0.3.1:0"
	cfg.AdminListen = "127.0.3.1:0"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	udp, tcp := s.Addrs()
	ts := &testServer{Server: s, addr: udp.String()}
	if udp.String() != tcp.String() {
		t.Errorf("UDP %s and TCP %s differ", udp, tcp)
	}
	for _, network := range []string{"udp", "tcp"} {
		if r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{net: network}); len(r.Answer) == 0 {
			t.Errorf("%s: no answer", network)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := ts.exchange("www.cdn.example.", dns.TypeA, qopt{net: "tcp"}); err == nil {
		t.Error("server still answers after Run returned")
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, nil)
	for range 3 {
		ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, "London", 1)})
	}
	ts.ask(t, "nope.cdn.example.", dns.TypeA, qopt{})
	got := metricstest.Values(t, ts.Registry())
	want := map[string]float64{
		"meridian_dns_queries_total,qtype=A,rcode=NOERROR":  3,
		"meridian_dns_queries_total,qtype=A,rcode=NXDOMAIN": 1,
		"meridian_dns_answers_total,pop=lhr":                3,
		"meridian_dns_cache_hits_total":                     2,
		"meridian_dns_cache_misses_total":                   2,
		"meridian_dns_cache_hit_ratio":                      0.5,
		"meridian_dns_query_duration_seconds":               2, // misses; hits are sampled
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestAdminMetricsEndpoint(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen = "127.0.3.2:0"
	cfg.AdminListen = "127.0.3.2:0"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-s.Ready()
	var body []byte
	wait.For(t, 5*time.Second, "the metrics endpoint", func() bool {
		resp, err := http.Get("http://" + s.AdminAddr().String() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200
	})
	if !bytes.Contains(body, []byte("meridian_dns_cache_hit_ratio")) {
		t.Errorf("/metrics lacks the hit ratio:\n%s", body)
	}
}

func TestMMDBReload(t *testing.T) {
	ts := startServer(t, nil)
	london := qopt{ecs: cityPrefix(t, "London", 1)}
	if got := ts.popOf(t, ts.ask(t, "www.cdn.example.", dns.TypeA, london)); got != "lhr" {
		t.Fatalf("before: PoP = %s, want lhr", got)
	}
	// A new database that puts London's range in Sydney.
	cities := slices.Clone(geodata.Cities)
	for i := range cities {
		if cities[i].Name == "London" {
			syd, _ := geodata.Lookup("Sydney")
			cities[i].Lat, cities[i].Lon = syd.Lat, syd.Lon
		}
		if cities[i].Name == "Sydney" {
			cities[i].V4 = netip.MustParsePrefix("100.127.0.0/16")
		}
	}
	var buf bytes.Buffer
	if err := geodata.WriteCities(&buf, cities); err != nil {
		t.Fatal(err)
	}
	path := ts.geo.Path()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	if ok, err := ts.ReloadMMDB(); !ok || err != nil {
		t.Fatalf("ReloadMMDB = %v, %v; want true, nil", ok, err)
	}
	if got := ts.popOf(t, ts.ask(t, "www.cdn.example.", dns.TypeA, london)); got != "syd" {
		t.Errorf("after reload: PoP = %s, want syd", got)
	}
	// A broken file is refused and the old copy keeps serving.
	os.WriteFile(path, []byte("not an mmdb"), 0o644)
	os.Chtimes(path, time.Now().Add(2*time.Minute), time.Now().Add(2*time.Minute))
	if ok, err := ts.ReloadMMDB(); ok || err == nil {
		t.Errorf("ReloadMMDB(broken) = %v, %v; want false, error", ok, err)
	}
	if got := ts.popOf(t, ts.ask(t, "www.cdn.example.", dns.TypeA, london)); got != "syd" {
		t.Errorf("after a broken reload: PoP = %s, want syd", got)
	}
}

// TestExternalFleet checks that any Fleet works: here one whose nodes send heartbeats.
func TestExternalFleet(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t)
	nodes := cfg.Nodes()
	for i := range nodes {
		nodes[i].Load.At = clock.Now()
	}
	f := NewStaticFleet(nodes)
	cfg.Fleet, cfg.PoPs, cfg.Clock = f, nil, clock.Now
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.StaticFleet() != nil {
		t.Error("StaticFleet() != nil with an external fleet")
	}
	tokyo, _ := geodata.Lookup("Tokyo")
	ex, _ := s.Explain(tokyo.V4.Addr(), "", dns.TypeA)
	if ex.PoP != "nrt" {
		t.Errorf("fresh fleet: PoP = %s, want nrt", ex.PoP)
	}
	clock.Advance(4 * time.Second) // every heartbeat is stale now
	ex, _ = s.Explain(tokyo.V4.Addr(), "", dns.TypeA)
	if !ex.FailOpen || ex.PoP != "nrt" {
		t.Errorf("stale fleet: PoP = %s failOpen = %v, want nrt failing open", ex.PoP, ex.FailOpen)
	}
	n, _ := f.Node("sin", "sin-1")
	n.Load.At = clock.Now()
	f.SetNode(n)
	ex, _ = s.Explain(tokyo.V4.Addr(), "", dns.TypeA)
	if ex.PoP != "sin" || ex.FailOpen {
		t.Errorf("only sin fresh: PoP = %s failOpen = %v, want sin", ex.PoP, ex.FailOpen)
	}
}

// TestMetricsDocumented: every metric on the server's registry is in docs/dns.md's table; the
// Prometheus client's process and Go collectors by family (`process_*`, `go_*`), whose
// members change with the client's version.
func TestMetricsDocumented(t *testing.T) {
	ts := startServer(t, nil)
	ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{})
	doc, err := os.ReadFile("../docs/dns.md")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := ts.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) < 10 {
		t.Fatalf("only %d metrics gathered", len(mfs))
	}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, family := range []string{"process_", "go_"} {
			if strings.HasPrefix(name, family) {
				name = family + "*`"
			}
		}
		if !bytes.Contains(doc, []byte("`"+name)) {
			t.Errorf("metric %s is not documented in docs/dns.md", mf.GetName())
		}
	}
}

// TestConfigDocumentedDefaults: a config with only the required fields (zone, ns, mmdb) gets
// exactly the defaults of the table in docs/dns.md, so the two cannot drift apart.
func TestConfigDocumentedDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dns.yaml")
	minimal := "zone: cdn.example.\nns:\n  - {name: ns1, ipv4: [192.0.2.53]}\nmmdb: city.mmdb\n"
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.prepare()
	if err != nil {
		t.Fatal(err)
	}
	pol := rankPolicy(c.Policy)
	for _, tt := range []struct {
		key       string
		got, want any
	}{
		{"soa.mname", c.SOA.MName, "ns1.cdn.example."},
		{"soa.rname", c.SOA.RName, "hostmaster.cdn.example."},
		{"soa.serial", c.SOA.Serial, uint32(1)},
		{"soa.refresh", c.SOA.Refresh, time.Hour},
		{"soa.retry", c.SOA.Retry, 10 * time.Minute},
		{"soa.expire", c.SOA.Expire, 168 * time.Hour},
		{"soa.minimum", c.SOA.Minimum, 60 * time.Second},
		{"ttl", c.TTL, 30 * time.Second},
		{"zone_ttl", c.ZoneTTL, time.Hour},
		{"listen", c.Listen, ":53"},
		{"admin_listen", c.AdminListen, ""},
		{"mmdb_reload", c.MMDBReload, 5 * time.Second},
		{"default_pop", c.DefaultPoP, ""}, // "" is the first PoP by id (state.go)
		{"answer_count", c.AnswerCount, 2},
		{"rotation", c.Rotation, "roundrobin"},
		{"fail_closed", c.FailClosed, false},
		{"heartbeat_ttl", c.HeartbeatTTL, 3 * time.Second},
		{"rate_limit.qps", c.RateLimit.QPS, 0.0},
		{"rate_limit.burst", c.RateLimit.Burst, 1.0}, // qps, at least 1
		{"rate_limit.slip", c.RateLimit.Slip, 2},
		{"policy.policy", pol.Name, "nearest"},
		{"policy.explore", pol.Explore, 0.05},
		{"policy.low_watermark", pol.Low, 0.8},
		{"policy.high_watermark", pol.High, 1.0},
		{"policy.radius_km", pol.RadiusKm, 1500.0},
		{"hostnames", strings.Join(c.Hostnames, ","), "*"},
		{"max_udp_size", c.MaxUDPSize, 1232},
		{"cache_entries", c.CacheEntries, 100000},
		{"cache_bytes", c.CacheBytes, int64(134217728)},
		{"latency_records", c.LatencyRecords, 200000},
		{"max_tcp_connections", c.MaxTCPConnections, 1000},
		{"max_tcp_connections_per_source", c.MaxTCPConnectionsPerSource, 32},
		{"udp_workers", c.UDPWorkers, 0}, // 0 is GOMAXPROCS (Server.workers)
		{"prefix", c.Prefix, ""},         // "" is wire.DefaultPrefix
	} {
		if fmt.Sprint(tt.got) != fmt.Sprint(tt.want) || fmt.Sprintf("%T", tt.got) != fmt.Sprintf("%T", tt.want) {
			t.Errorf("%s: default %v (%T), docs/dns.md says %v", tt.key, tt.got, tt.got, tt.want)
		}
	}
}

// TestConfigBoundsAnswerCount: answer_count takes up to maxAnswerCount (64, as gdnsd's bound
// on an address set) addresses; more is refused naming the field, from a file as from Go.
// Found in review: there was no bound, and past some 2,300 addresses an answer could not go
// even over TCP, while a large one over UDP amplifies.
func TestConfigBoundsAnswerCount(t *testing.T) {
	base := "zone: cdn.example.\nns:\n  - {name: ns1, ipv4: [192.0.2.53]}\nmmdb: city.mmdb\n"
	for _, tt := range []struct {
		count int
		want  string // "" accepted; else the error's text
	}{
		{0, ""}, // the default, 2
		{1, ""},
		{64, ""},
		{65, "answer_count: 65 is more than 64"},
		{2300, "answer_count: 2300 is more than 64"},
		{-1, "answer_count: is negative"},
	} {
		t.Run(strconv.Itoa(tt.count), func(t *testing.T) {
			check := func(how string, err error, line int) {
				t.Helper()
				if tt.want == "" {
					if err != nil {
						t.Errorf("%s: %v, want it accepted", how, err)
					}
					return
				}
				var fes wire.FieldErrors
				if !errors.As(err, &fes) || len(fes) != 1 || fes[0].Field != "answer_count" || fes[0].Line != line ||
					!strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: %v, want one problem: ...%s... on line %d", how, err, tt.want, line)
				}
			}
			_, err := ParseConfig(fmt.Appendf([]byte(base), "answer_count: %d\n", tt.count))
			check("from a file", err, 5)
			cfg := testConfig(t)
			cfg.AnswerCount = tt.count
			_, err = New(cfg)
			check("from Go", err, 0)
		})
	}
}

// TestConfigTCPPerSourceDefault: max_tcp_connections_per_source defaults to a tenth of
// max_tcp_connections, at most 32 and at least 1, and is taken as written otherwise.
func TestConfigTCPPerSourceDefault(t *testing.T) {
	for _, tt := range []struct{ total, perSource, want int }{
		{0, 0, 32}, // 1000
		{5000, 0, 32},
		{320, 0, 32},
		{100, 0, 10},
		{5, 0, 1},
		{1, 0, 1},
		{0, 500, 500},
		{50, 50, 50},
	} {
		c, err := Config{Zone: "cdn.example.", NS: []NameServer{{Name: "ns1", IPv4: []string{"192.0.2.53"}}}, MMDB: "city.mmdb",
			MaxTCPConnections: tt.total, MaxTCPConnectionsPerSource: tt.perSource}.prepare()
		if err != nil {
			t.Errorf("max_tcp_connections %d, per source %d: %v", tt.total, tt.perSource, err)
			continue
		}
		if c.MaxTCPConnectionsPerSource != tt.want {
			t.Errorf("max_tcp_connections %d, per source %d: per source %d, want %d", tt.total, tt.perSource, c.MaxTCPConnectionsPerSource, tt.want)
		}
	}
}

// TestConfigRefusesNonsense: values that mean nothing are refused, each naming its field
// with its position, instead of falling back to a default or failing only at start-up.
func TestConfigRefusesNonsense(t *testing.T) {
	base := "zone: cdn.example.\nns:\n  - {name: ns1, ipv4: [192.0.2.53]}\nmmdb: city.mmdb\n"
	for _, tt := range []struct{ yaml, field, msg string }{
		{"ttl: 30\n", "ttl", "cannot unmarshal"},
		{"cache_bytes: 128MB\n", "cache_bytes", "cannot unmarshal"},
		{"heartbeat_ttl: -1s\n", "heartbeat_ttl", "is negative"},
		{"cache_entries: -1\n", "cache_entries", "is negative"},
		{"cache_bytes: -1\n", "cache_bytes", "is negative"},
		{"udp_workers: -4\n", "udp_workers", "is negative"},
		{"max_tcp_connections: -1\n", "max_tcp_connections", "is negative"},
		{"max_tcp_connections_per_source: -1\n", "max_tcp_connections_per_source", "is negative"},
		{"max_tcp_connections_per_source: 1001\n", "max_tcp_connections_per_source", "more than max_tcp_connections (1000)"},
		{"max_tcp_connections_per_source: 11\nmax_tcp_connections: 10\n", "max_tcp_connections_per_source", "more than max_tcp_connections (10)"},
		{"listen: 127.0.0.1:99999\n", "listen", "not host:port"},
		{"listen: nowhere\n", "listen", "not host:port"},
		{"admin_listen: 127.0.0.1:65536\n", "admin_listen", "not host:port"},
		// Both have SO_REUSEPORT: on one port both would bind and split TCP connections.
		{"admin_listen: 127.0.0.1:5353\nlisten: 127.0.0.1:5353\n", "admin_listen", "same port as listen"},
		{"admin_listen: 127.0.0.1:53\n", "admin_listen", "same port as listen"},
		{"max_udp_size: 100\n", "max_udp_size", "not between"},
		{"ttl: 500ms\n", "ttl", "not a whole number of seconds"},
		{"zone_ttl: 1m30.5s\n", "zone_ttl", "not a whole number of seconds"},
		{"latency_records: -1\n", "latency_records", "is negative"},
		{"latency_records: .nan\n", "latency_records", "cannot unmarshal"},
	} {
		p := filepath.Join(t.TempDir(), "dns.yaml")
		if err := os.WriteFile(p, []byte(base+tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(p)
		var fes wire.FieldErrors
		if !errors.As(err, &fes) {
			t.Errorf("%q: error %v, want a problem with %s", tt.yaml, err, tt.field)
			continue
		}
		found := false
		for _, fe := range fes {
			if fe.Field == tt.field && fe.Line == 5 && strings.Contains(fe.Error(), tt.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: problems %v, want %s: ...%s... on line 5", tt.yaml, err, tt.field, tt.msg)
		}
	}
}

// TestExplainApexAt: explain --name takes the apex as hostnames and cnames spell it ("@"),
// as well as by the zone's name. It read "@" as a relative name, @.cdn.example., and said
// the apex, routed, was not.
func TestExplainApexAt(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hostnames = append(cfg.Hostnames, "@")
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	london, _ := geodata.Lookup("London")
	for _, name := range []string{"@", "cdn.example.", "CDN.Example."} {
		ex, err := s.Explain(london.V4.Addr().Next(), name, dns.TypeA)
		if err != nil || ex.Name != "cdn.example." || ex.PoP != "lhr" {
			t.Errorf("Explain(%q) = %q %q, %v; want cdn.example. to lhr", name, ex.Name, ex.PoP, err)
		}
	}
	// Not routed, the apex is refused however it is spelt.
	s, err = New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Explain(london.V4.Addr(), "@", dns.TypeA); err == nil || !strings.HasPrefix(err.Error(), "explain: cdn.example. is not a routed name") {
		t.Errorf("Explain(@), apex not routed: %v, want explain: cdn.example. is not a routed name", err)
	}
}

// TestNameClashNotWithAnUnnamedServer: a name server without a name is refused for that
// alone. Its empty name read as the apex (as "" does in hostnames), so that a routed apex
// was also refused as "a name server's name", a second, false problem.
func TestNameClashNotWithAnUnnamedServer(t *testing.T) {
	base, err := os.ReadFile("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(base), "  - name: ns1            # relative names are under the zone\n", "  - ipv4: [127.0.0.55]\n  - name: ns1\n", 1)
	text = strings.Replace(text, "[www,", `["@", www,`, 1)
	_, err = ParseConfig([]byte(text))
	var errs wire.FieldErrors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Field != "ns[0].name" {
		t.Errorf("ParseConfig = %v, want one problem, ns[0].name", err)
	}
}

// TestConfigCNAMELoops: CNAMEs that loop (RFC 1034 section 3.6.2: loops are an error) are
// refused when the config is loaded, one problem a loop, on the line of its least name,
// naming every name on it. They were taken, and each query for a name on the loop got the
// loop's CNAMEs and no address. A chain longer than the server follows, a CNAME to a name
// outside the zone or to the apex is no loop and is taken.
func TestConfigCNAMELoops(t *testing.T) {
	base := "zone: cdn.example.\nns:\n  - {name: ns1, ipv4: [192.0.2.53]}\nmmdb: city.mmdb\nhostnames: [www]\ncnames:\n"
	var long strings.Builder // c0 -> c1 -> ... -> c9 -> www: ten CNAMEs
	for i := range 10 {
		fmt.Fprintf(&long, "  c%d: c%d\n", i, i+1)
	}
	longer := strings.Replace(long.String(), "c9: c10", "c9: www", 1)
	type problem struct{ key, msg string } // the cnames key the problem is on
	tests := []struct {
		name   string
		cnames string // the cnames block, "  from: to" a line
		want   []problem
	}{
		{"to itself", "  a: a\n", []problem{{"a", "CNAME loop a.cdn.example. -> a.cdn.example.: no name on it resolves"}}},
		{"to itself, spelt absolute", "  A.cdn.example.: a\n", []problem{{"A.cdn.example.", "CNAME loop a.cdn.example. -> a.cdn.example.: no name on it resolves"}}},
		{"two", "  a: b\n  b: a\n", []problem{{"a", "CNAME loop a.cdn.example. -> b.cdn.example. -> a.cdn.example.: no name on it resolves"}}},
		{"three, from its least name", "  z: x\n  x: Y.cdn.example.\n  y: z\n",
			[]problem{{"x", "CNAME loop x.cdn.example. -> y.cdn.example. -> z.cdn.example. -> x.cdn.example.: no name on it resolves"}}},
		// The name that leads into the loop is fixed with it: the loop is the problem.
		{"a chain into a loop", "  t: a\n  a: b\n  b: a\n", []problem{{"a", "CNAME loop a.cdn.example. -> b.cdn.example. -> a.cdn.example.: no name on it resolves"}}},
		{"two loops", "  a: a\n  c: b\n  b: c\n", []problem{
			{"a", "CNAME loop a.cdn.example. -> a.cdn.example.: no name on it resolves"},
			{"b", "CNAME loop b.cdn.example. -> c.cdn.example. -> b.cdn.example.: no name on it resolves"},
		}},
		{"a chain to a routed name", "  a: b\n  b: www\n", nil},
		// Legal (RFC 1034 section 3.6.2), and resolved: the server answers the first 8 and the
		// resolver asks for the rest. Run warns about it (TestLongCNAMEChainWarned).
		{"longer than the server follows", longer, nil},
		{"to a name outside the zone", "  a: a.example.org.\n", nil},
		{"outside, spelt like a name of the zone", "  a: a.cdn.example.org.\n", nil},
		{"to the apex", "  a: \"@\"\n", nil},
		// A name refused for being outside the zone (or the apex) is not served as an alias,
		// so it is on no loop: one mistake, one problem. The loop was reported as well.
		{"outside the zone, on a loop", "  a.example.org.: b\n  b: a.example.org.\n", []problem{
			{"a.example.org.", "a.example.org. must be a name below the zone cdn.example."},
		}},
		{"the apex, on a loop", "  cdn.example.: b\n  b: \"@\"\n", []problem{
			{"cdn.example.", "cdn.example. must be a name below the zone cdn.example."},
		}},
		// Two CNAMEs for one name (RFC 2181 section 10.1): which one answered would be Go's
		// map order. Reported on the later spelling, naming the first.
		{"one name spelt twice", "  alias: www\n  Alias.cdn.example.: static.example.org.\n", []problem{
			{"alias", "alias.cdn.example. is also cnames.Alias.cdn.example. (to static.example.org.); a name has one CNAME at most"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := base + tt.cnames
			p := filepath.Join(t.TempDir(), "dns.yaml")
			if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("LoadConfig = %v, want nil", err)
				}
				return
			}
			var fes wire.FieldErrors
			if !errors.As(err, &fes) {
				t.Fatalf("LoadConfig = %v, want a CNAME loop", err)
			}
			var got []problem
			for _, fe := range fes {
				got = append(got, problem{strings.TrimPrefix(fe.Field, "cnames."), fe.Err.Error()})
				if line := strings.Count(text[:strings.Index(text, "\n  "+strings.TrimPrefix(fe.Field, "cnames.")+":")+1], "\n") + 1; fe.Line != line {
					t.Errorf("%s: line %d, want %d", fe.Field, fe.Line, line)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLongCNAMEChainWarned: a chain of more CNAMEs than an answer follows (maxCNAMEChain) is
// legal and resolves, the resolver asking for the rest, so it is taken; Run warns once for it,
// naming the chain from its first name, as resolvers bound how far they follow one. A chain
// of exactly maxCNAMEChain, or the tail of a long one, is not warned about.
func TestLongCNAMEChainWarned(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen = "127.0.3.2:0"
	var logs logtest.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.CNAMEs = map[string]string{"alias": "www"}
	var chain []string
	for i := range maxCNAMEChain + 2 { // c0 -> c1 -> ... -> c9 -> www
		cfg.CNAMEs[fmt.Sprintf("c%d", i)] = fmt.Sprintf("c%d", i+1)
		cfg.CNAMEs[fmt.Sprintf("d%d", i)] = fmt.Sprintf("d%d", i+1)
		chain = append(chain, fmt.Sprintf("c%d.cdn.example.", i))
	}
	cfg.CNAMEs[fmt.Sprintf("c%d", maxCNAMEChain+1)] = "www"
	cfg.CNAMEs[fmt.Sprintf("d%d", maxCNAMEChain-1)] = "www" // d0 -> ... -> d7 -> www: 8
	for i := maxCNAMEChain; i < maxCNAMEChain+2; i++ {
		delete(cfg.CNAMEs, fmt.Sprintf("d%d", i))
	}
	chain = append(chain, "www.cdn.example.")
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	out := logs.String()
	want := fmt.Sprintf("level=WARN msg=\"dns CNAME chain longer than an answer follows; resolvers ask for the rest\" cnames=%d followed=%d chain=\"%s\"",
		maxCNAMEChain+2, maxCNAMEChain, strings.Join(chain, " -> "))
	if strings.Count(out, "CNAME chain") != 1 || !strings.Contains(out, want) {
		t.Errorf("log:\n%s\nwant one CNAME chain warning: %s", out, want)
	}
}

// TestConfigCNAMELoopOfASpelling: when a name has two cnames entries (refused), a loop is
// looked for through its first spelling, the one its duplicate problem names: the same
// problems on every load, each on the line it is about. The loop check took whichever
// spelling Go's map order gave last, so a load now and then reported a loop, on the line of
// the entry that was not on it.
func TestConfigCNAMELoopOfASpelling(t *testing.T) {
	base := "zone: cdn.example.\nns:\n  - {name: ns1, ipv4: [192.0.2.53]}\nmmdb: city.mmdb\nhostnames: [www]\ncnames:\n"
	tests := []struct {
		name   string
		cnames string
		want   []string // "field: problem"
	}{
		{"the later spelling loops", "  A: www\n  a: b\n  b: a\n", []string{
			"cnames.a: a.cdn.example. is also cnames.A (to www.cdn.example.); a name has one CNAME at most"}},
		{"the first spelling loops", "  A: b\n  a: www\n  b: a\n", []string{ // in the file's order
			"cnames.A: CNAME loop a.cdn.example. -> b.cdn.example. -> a.cdn.example.: no name on it resolves",
			"cnames.a: a.cdn.example. is also cnames.A (to b.cdn.example.); a name has one CNAME at most"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := base + tt.cnames
			p := filepath.Join(t.TempDir(), "dns.yaml")
			if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			for range 20 { // map order differs from one load to the next
				_, err := LoadConfig(p)
				var fes wire.FieldErrors
				if !errors.As(err, &fes) {
					t.Fatalf("LoadConfig = %v, want field errors", err)
				}
				var got []string
				for _, fe := range fes {
					got = append(got, fe.Field+": "+fe.Err.Error())
					key := strings.TrimPrefix(fe.Field, "cnames.")
					if line := strings.Count(text[:strings.Index(text, "\n  "+key+":")+1], "\n") + 1; fe.Line != line {
						t.Errorf("%s: line %d, want %d", fe.Field, fe.Line, line)
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("problems = %q, want %q", got, tt.want)
				}
			}
		})
	}
}
