package edge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/internal/metricstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRTTEligible: only connections from addresses that locate a client network are sampled,
// never loopback (outside tests), private, link-local or unspecified ones, trusted proxies,
// or anything when measuring is disabled.
func TestRTTEligible(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	udp := func(s string) net.Addr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	node := func(rc RTTConfig, proxies ...string) *Node {
		c := Config{RTT: rc, TrustedProxies: proxies}
		c.setDefaults()
		return &Node{cfg: c}
	}
	on, loop, off := node(RTTConfig{}, "198.51.100.7"), node(RTTConfig{allowLoopback: true}), node(RTTConfig{Disable: true, allowLoopback: true})
	tests := []struct {
		name   string
		n      *Node
		remote net.Addr
		want   string // "" for not sampled
	}{
		{"public ipv4", on, tcp("100.64.3.77:50000"), "100.64.3.0/24"},
		{"public ipv6 over quic", on, udp("[2001:db8:1:2::5]:443"), "2001:db8:1::/48"},
		{"ipv4-mapped", on, tcp("[::ffff:203.0.113.9]:1"), "203.0.113.0/24"},
		{"loopback", on, tcp("127.0.0.1:1"), ""},
		{"ipv6 loopback", on, tcp("[::1]:1"), ""},
		{"private", on, tcp("10.1.2.3:1"), ""},
		{"private ipv6", on, tcp("[fd00::1]:1"), ""},
		{"link-local", on, tcp("169.254.1.1:1"), ""},
		{"unspecified", on, tcp("0.0.0.0:1"), ""},
		{"trusted proxy", on, tcp("198.51.100.7:1"), ""},
		{"loopback allowed by the test hook", loop, tcp("127.0.0.1:1"), "127.0.0.0/24"},
		{"private even with the hook", loop, tcp("192.168.1.1:1"), ""},
		{"disabled", off, tcp("100.64.3.77:1"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := tt.n.rttEligible(tt.remote)
			got := ""
			if ok {
				got = p.String()
			}
			if got != tt.want {
				t.Errorf("rttEligible(%v) = %q, want %q", tt.remote, got, tt.want)
			}
		})
	}
}

// metricValues reads the node's metrics as "name,label=value,..." -> value (a histogram's
// sample count).
func metricValues(t *testing.T, n *Node) map[string]float64 {
	return metricstest.Values(t, n.Registry())
}

// edgeSamples is the number of edge RTT samples the node took (the metric).
func edgeSamples(n *Node) float64 {
	mfs, _ := n.Registry().Gather()
	for _, mf := range mfs {
		if mf.GetName() != "meridian_edge_latency_samples_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			ls := m.GetLabel() // sorted by name: result, source
			if len(ls) == 2 && ls[0].GetValue() == "taken" && ls[1].GetValue() == "edge" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// rumRecord is the node's current record for network (zero when none).
func rumRecord(n *Node, network netip.Prefix) wire.LatencyRecord {
	n.rum.mu.Lock()
	defer n.rum.mu.Unlock()
	if st := n.rum.nets[network]; st != nil {
		return st.rec
	}
	return wire.LatencyRecord{}
}

// latencyRecord waits for key's record in the latency bucket to satisfy ok.
func latencyRecord(t *testing.T, js jetstream.JetStream, key string, ok func(wire.LatencyRecord) bool) wire.LatencyRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	var rec wire.LatencyRecord
	wait.For(t, 10*time.Second, "record "+key+" in the latency bucket", func() bool {
		e, err := kv.Get(ctx, key)
		return err == nil && json.Unmarshal(e.Value(), &rec) == nil && ok(rec)
	})
	return rec
}

var loopNet = netip.MustParsePrefix("127.0.0.0/24")

// TestEdgeRTTTCP: real HTTP/1.1 connections to a fleet edge give one kernel RTT sample each —
// at the second response on a kept-alive connection, or when a connection that served one
// closes — for the client's network and the node's own PoP, and the sample lands in the
// node's record in the latency bucket, counted apart from beacon reports.
func TestEdgeRTTTCP(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	url, js, _ := startNATS(t)
	s, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, func(c *Config) { c.RTT.allowLoopback = true })
	n := nodes[0]
	wait.For(t, 10*time.Second, "the node in the fleet", func() bool { return n.rum.sink.Load() != nil })

	// One connection, three requests: one sample, taken when the second response is done
	// (counted below, once every connection closed).
	client := &http.Client{Transport: &http.Transport{}}
	for i := range 3 {
		if r := do(t, client, http.MethodGet, n.Addr(), testHost, "/rtt?cc=max-age%3D600"); r.status != http.StatusOK {
			t.Fatalf("request %d = %d, want 200", i, r.status)
		}
		if i == 0 && edgeSamples(n) != 0 {
			t.Fatalf("after one response on an open connection: %v samples, want 0", edgeSamples(n))
		}
	}
	rec := latencyRecord(t, js, wire.LatencyKey("f1", "n0", loopNet), func(r wire.LatencyRecord) bool { return r.EdgeSamples == 1 })
	if ms := rec.RTTMs["f1"]; !(ms > 0 && ms < 1000) || rec.Samples != 1 || rec.BeaconSamples() != 0 || rec.Network != loopNet {
		t.Errorf("record = %+v, want one edge sample of a loopback RTT for f1 from %v", rec, loopNet)
	}

	// A connection that serves one response and closes gives its sample at the close.
	one := &http.Client{Transport: &http.Transport{}}
	do(t, one, http.MethodGet, n.Addr(), testHost, "/rtt?cc=max-age%3D600")
	one.CloseIdleConnections()
	client.CloseIdleConnections()
	// The server closes its side (and samples, in Close) before it counts the connection closed.
	wait.For(t, 5*time.Second, "the server to close the connections", func() bool { return n.openConns.Load() == 0 })
	if got := edgeSamples(n); got != 2 {
		t.Errorf("after a one-response connection closed: %v samples, want 2", got)
	}
	latencyRecord(t, js, wire.LatencyKey("f1", "n0", loopNet), func(r wire.LatencyRecord) bool { return r.EdgeSamples == 2 })

	// A connection that never completes a response gives nothing, and beacon reports from the
	// same network still get their own tokens.
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	wait.For(t, 5*time.Second, "the server to close the idle connection", func() bool { return n.openConns.Load() == 0 })
	if got := edgeSamples(n); got != 2 {
		t.Errorf("after a connection without a request: %v samples, want 2", got)
	}
	if code := postBeacon(t, s.client, n.Addr(), `{"rtt_ms":{"f1":40}}`); code != http.StatusNoContent {
		t.Errorf("beacon report after edge samples = %d, want 204", code)
	}
	rec = latencyRecord(t, js, wire.LatencyKey("f1", "n0", loopNet), func(r wire.LatencyRecord) bool { return r.Samples == 3 })
	if rec.EdgeSamples != 2 || rec.BeaconSamples() != 1 {
		t.Errorf("record = %+v, want 2 edge samples and 1 beacon report", rec)
	}
}

func postBeacon(t *testing.T, c *http.Client, addr, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+wire.BeaconPath, strings.NewReader(body))
	req.Host = testHost
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode
}

// TestEdgeRTTDisabled: with rtt.disable the same connections give no sample at all.
func TestEdgeRTTDisabled(t *testing.T) {
	s := newSingle(t, func(c *Config) { c.RTT = RTTConfig{Disable: true, allowLoopback: true} })
	for range 3 {
		s.get(t, "/rtt?cc=max-age%3D600")
	}
	s.client.CloseIdleConnections()
	wait.For(t, 5*time.Second, "the server to close the connection", func() bool { return s.edge.openConns.Load() == 0 })
	if got := edgeSamples(s.edge); got != 0 {
		t.Errorf("disabled: %v edge samples, want 0", got)
	}
	if rec := rumRecord(s.edge, loopNet); rec.Samples != 0 {
		t.Errorf("disabled: record %+v, want none", rec)
	}
}

// TestEdgeRTTPeerConnection: a connection carrying fill requests from a fleet node is never
// sampled: its RTT is another PoP's, not a client network's.
func TestEdgeRTTPeerConnection(t *testing.T) {
	s := newSingle(t, func(c *Config) {
		c.RTT.allowLoopback = true
		c.PeerKey = testPeerKey
	})
	c := &http.Client{Transport: &http.Transport{}}
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.edge.Addr()+"/peer?cc=max-age%3D600", nil)
		req.Host = testHost
		req.Header.Set(hopHeader, "peer")
		s.edge.signHop(req)
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.Header.Get(hopHeader) != hopTrustedValue {
			t.Fatalf("the fill request was not verified (hop header %q)", r.Header.Get(hopHeader))
		}
	}
	c.CloseIdleConnections()
	wait.For(t, 5*time.Second, "the server to close the connection", func() bool { return s.edge.openConns.Load() == 0 })
	if got := edgeSamples(s.edge); got != 0 {
		t.Errorf("fill connection: %v edge samples, want 0", got)
	}
}

// TestEdgeRTTHTTP3: an HTTP/3 connection gives its QUIC smoothed RTT the same way, and it
// reaches the latency bucket.
func TestEdgeRTTHTTP3(t *testing.T) {
	url, js, _ := startNATS(t)
	_, originAddr := startOrigin(t, "127.0.0.10", nil)
	cfg := Config{PoP: "f1", Node: "q0", HTTPSListen: "127.0.0.13:0", TLS: TLSConfig{Dev: true},
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}},
		Fleet: FleetConfig{NATS: url, Creds: edgeCreds(t, url, "f1", "q0"), Heartbeat: 100 * time.Millisecond},
		RTT:   RTTConfig{allowLoopback: true}}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	https, pc, err := listenHTTPS(context.Background(), "127.0.0.13:0", true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.ServeListeners(ctx, Listeners{HTTP: listen(t, "127.0.0.13"), HTTPS: https, QUIC: pc})
	}()
	<-n.Ready()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
	})
	wait.For(t, 10*time.Second, "the node in the fleet", func() bool { return n.rum.sink.Load() != nil })

	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	defer h3t.Close()
	h3 := &http.Client{Transport: h3t}
	for i := range 2 {
		r := getWith(t, h3, "https://"+n.HTTPSAddr()+"/q?cc=max-age%3D600")
		if r.status != http.StatusOK {
			t.Fatalf("request %d over HTTP/3 = %d", i, r.status)
		}
	}
	// The client may read the second response before its handler has returned.
	wait.For(t, 5*time.Second, "the second HTTP/3 response to give a sample", func() bool { return edgeSamples(n) == 1 })
	if got := metricValues(t, n); got["meridian_edge_client_rtt_seconds,transport=quic"] != 1 || got["meridian_edge_client_rtt_seconds,transport=tcp"] != 0 {
		t.Errorf("client RTT samples: quic %v, tcp %v; want 1 and 0", got["meridian_edge_client_rtt_seconds,transport=quic"], got["meridian_edge_client_rtt_seconds,transport=tcp"])
	}
	rec := latencyRecord(t, js, wire.LatencyKey("f1", "q0", loopNet), func(r wire.LatencyRecord) bool { return r.EdgeSamples == 1 })
	if ms := rec.RTTMs["f1"]; !(ms > 0 && ms < 1000) {
		t.Errorf("record = %+v, want a loopback RTT for f1", rec)
	}

	// A QUIC connection that served one response gives its sample when it closes.
	once := &http3.Transport{TLSClientConfig: insecure(testHost)}
	getWith(t, &http.Client{Transport: once}, "https://"+n.HTTPSAddr()+"/q?cc=max-age%3D600")
	once.Close()
	wait.For(t, 5*time.Second, "the closed HTTP/3 connection to give a sample", func() bool { return edgeSamples(n) == 2 })

	// HTTP/2 over TLS on the same node: the TCP connection under TLS is sampled.
	if runtime.GOOS != "linux" {
		return
	}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}}
	defer h2.CloseIdleConnections()
	for range 2 {
		if r := getWith(t, h2, "https://"+n.HTTPSAddr()+"/q?cc=max-age%3D600"); !strings.HasSuffix(r.body, "|HTTP/2.0") {
			t.Fatalf("want HTTP/2, got %q", r.body)
		}
	}
	wait.For(t, 5*time.Second, "the second HTTP/2 response to give a sample", func() bool { return edgeSamples(n) == 3 })
	if got := metricValues(t, n)["meridian_edge_client_rtt_seconds,transport=tcp"]; got != 1 {
		t.Errorf("TCP RTT samples after HTTP/2 = %v, want 1", got)
	}
}

// TestRTTAndHitLatencyConfig: the YAML names of the fields, and their defaults.
func TestRTTAndHitLatencyConfig(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/edge.yaml"
	if err := os.WriteFile(path, []byte("rtt:\n  disable: true\nfleet:\n  saturation:\n    hit_latency_target: 5ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if !c.RTT.Disable || c.Fleet.Saturation.HitLatencyTarget != 5*time.Millisecond {
		t.Errorf("loaded rtt %+v, hit_latency_target %v; want disabled, 5ms", c.RTT, c.Fleet.Saturation.HitLatencyTarget)
	}
	var zero Config
	if zero.RTT.Disable || saturationFigure(zero.Fleet.Saturation, 0, 0, DefaultHitLatencyTarget) != 1 {
		t.Error("the zero config must measure RTT and count hit latency against DefaultHitLatencyTarget")
	}
}
