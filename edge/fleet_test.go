package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/tcplink"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// startNATS runs an embedded NATS server with JetStream, with the fleet buckets and the purge
// stream created, until the test ends.
func startNATS(t *testing.T) (url string, js jetstream.JetStream, nc *nats.Conn) {
	t.Helper()
	s := natstest.Start(t)
	natsServers.Store(s.URL(), s)
	nc, js = s.Connect(t)
	ctx := context.Background()
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := purge.EnsureStream(ctx, js, "", time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	return s.URL(), js, nc
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("MERIDIAN_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// natsServers maps the URLs of the tests' NATS servers (and of cutters in front of them) to the
// servers, which issue the edges' credentials.
var natsServers sync.Map // string -> *natstest.Server

// natsCutter starts a cutter in front of the NATS server at url that takes its credentials.
func natsCutter(t *testing.T, ip, url string) *natstest.Cutter {
	t.Helper()
	cut := natstest.NewCutter(t, ip, url)
	s, _ := natsServers.Load(url)
	natsServers.Store(cut.URL(), s)
	return cut
}

// natsLink is natsCutter over a link that delays every byte by delay each way: a node far from
// its NATS server, whose writes are still on the way when the link is cut.
func natsLink(t *testing.T, ip, url string, delay time.Duration) (l *tcplink.Link, linkURL string) {
	t.Helper()
	l, err := tcplink.Listen(ip+":0", strings.TrimPrefix(url, "nats://"), delay)
	if err != nil {
		t.Fatalf("nats link: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	linkURL = "nats://" + l.Addr().String()
	s, _ := natsServers.Load(url)
	natsServers.Store(linkURL, s)
	return l, linkURL
}

// edgeCreds writes the credentials file of edge pop/node on the NATS server at url.
func edgeCreds(t *testing.T, url, pop, node string) string {
	t.Helper()
	s, ok := natsServers.Load(url)
	if !ok {
		t.Fatalf("no NATS server at %s", url)
	}
	return s.(*natstest.Server).CredsFile(t, natsauth.Edge(pop, node))
}

// fleetEdge starts an origin and edges of one PoP joined to NATS at natsURL (one URL per edge).
// They use the real clock: purge records, heartbeats and stream times must agree with NATS.
func fleetEdges(t *testing.T, natsURLs []string, hosts bool) (*single, []*Node) {
	return fleetEdgesTTL(t, natsURLs, hosts, time.Second)
}

func fleetEdgesTTL(t *testing.T, natsURLs []string, hosts bool, ttl time.Duration) (*single, []*Node) {
	return fleetEdgesWith(t, natsURLs, hosts, ttl, nil)
}

// fleetEdgesWith is fleetEdgesTTL with mod applied to each node's config.
func fleetEdgesWith(t *testing.T, natsURLs []string, hosts bool, ttl time.Duration, mod func(*Config)) (*single, []*Node) {
	t.Helper()
	s := &single{}
	s.origin, s.originAddr = startOrigin(t, "127.0.0.10", nil)
	// Every credential first, then the edges.
	creds := make([]string, len(natsURLs))
	for i, u := range natsURLs {
		creds[i] = edgeCreds(t, u, "f1", fmt.Sprintf("n%d", i))
	}
	var nodes []*Node
	for i, u := range natsURLs {
		cfg := Config{PoP: "f1", Node: fmt.Sprintf("n%d", i), Logger: testLogger(t),
			Fleet: FleetConfig{NATS: u, Creds: creds[i],
				Heartbeat: 100 * time.Millisecond, TTL: ttl}}
		if hosts {
			cfg.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr}}
		}
		if mod != nil {
			mod(&cfg)
		}
		n, _ := startEdge(t, listen(t, fmt.Sprintf("127.0.3.%d", 10+i)), cfg)
		nodes = append(nodes, n)
	}
	s.edge = nodes[0]
	s.client = &http.Client{}
	t.Cleanup(s.client.CloseIdleConnections)
	return s, nodes
}

func TestFleetRegistrationAndPeers(t *testing.T) {
	url, js, _ := startNATS(t)
	s, nodes := fleetEdges(t, []string{url, url}, true)
	view := fleet.NewView(fleet.ViewConfig{JS: js, TTL: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go view.Run(ctx)
	wait.For(t, 10*time.Second, "both nodes registered", func() bool { return len(view.PeerSet("f1")) == 2 })
	for _, n := range view.Nodes() {
		if n.HTTPAddr == "" || n.Version == "" || !n.Load.Healthy {
			t.Errorf("registration %+v lacks address, version or health", n)
		}
	}
	wait.For(t, 10*time.Second, "peer sets from the registry", func() bool {
		return len(nodes[0].tiers.Load().peers) == 2 && len(nodes[1].tiers.Load().peers) == 2
	})
	// A cold key asked at its non-owner is filled through the owner.
	var asker *Node
	for k := 0; asker == nil; k++ {
		p := obj(fmt.Sprintf("/fleet%d", k), "cc", "max-age=60")
		if owner := rendezvous(nodes[0].tiers.Load().peers, nodes[0].key(p))[0].ID; owner == "n0" {
			asker = nodes[1]
			r := do(t, s.client, http.MethodGet, asker.Addr(), testHost, p)
			wantCacheStatus(t, r, "detail=peer")
		}
	}
	// Draining shows in the registry at once.
	nodes[1].SetDraining(true)
	wait.For(t, 10*time.Second, "draining visible", func() bool { return len(view.PeerSet("f1")) == 1 })
}

func TestFleetHostsFromConfigBucket(t *testing.T) {
	url, js, _ := startNATS(t)
	s, nodes := fleetEdges(t, []string{url}, false)
	if r := do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, "/x"); r.status != http.StatusMisdirectedRequest {
		t.Fatalf("before the host is configured = %d, want 421", r.status)
	}
	h := wire.HostConfig{Host: testHost, Origin: "http://" + s.originAddr}
	if err := fleet.PutHost(context.Background(), js, "", h); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "host config applied", func() bool {
		return do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, "/x?cc=max-age%3D60").status == 200
	})
	if err := fleet.DeleteHost(context.Background(), js, "", testHost); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "host removed", func() bool {
		return do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, "/x").status == http.StatusMisdirectedRequest
	})
}

// TestMergeHostsControlWins: a host in the control plane's bucket replaces the node file's
// entry for the same name however the file spells it (capitals, Unicode): before, a file host
// written in Unicode was kept beside the bucket's A-label entry, and SetHosts let whichever came
// last in Go's map order win.
func TestMergeHostsControlWins(t *testing.T) {
	for _, written := range []string{"bücher.example", "BÜCHER.example", "XN--BCHER-KVA.example", "xn--bcher-kva.example"} {
		t.Run(written, func(t *testing.T) {
			file := []wire.HostConfig{{Host: written, Origin: "http://file.test"}, {Host: "other.example", Origin: "http://other.test"}}
			bucket := map[string]wire.HostConfig{"xn--bcher-kva.example": {Host: "xn--bcher-kva.example", Origin: "http://control.test"}}
			got := mergeHosts(file, bucket)
			if len(got) != 2 {
				t.Fatalf("merged %d hosts (%v), want 2", len(got), got)
			}
			for _, h := range got {
				if h.Host != "other.example" && h.Origin != "http://control.test" {
					t.Errorf("kept the file's %s (%s) beside the bucket's entry", h.Host, h.Origin)
				}
			}
		})
	}
}

// beatOther writes a fresh report of node x1 of pop to the fleet bucket, as a node of another
// PoP heartbeats (the bucket's keys expire: tests call it again while they wait).
func beatOther(t *testing.T, kv jetstream.KeyValue, pop string) {
	t.Helper()
	b, _ := json.Marshal(wire.Node{PoP: pop, ID: "x1", HTTPAddr: "127.0.0.99:80", Load: wire.LoadReport{Healthy: true, At: time.Now()}})
	if _, err := kv.Put(t.Context(), wire.FleetKey(pop, "x1"), b); err != nil {
		t.Fatal(err)
	}
}

// TestFleetViewFollowsShields: a fleet edge's view holds its own PoP and the shield PoPs its
// hosts name, and follows the hosts: a shield named later through the config bucket brings its
// PoP's nodes in; a PoP no host names stays out.
func TestFleetViewFollowsShields(t *testing.T) {
	url, js, _ := startNATS(t)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	beat := func(pop string) { beatOther(t, kv, pop) }
	s, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, func(c *Config) { c.Hosts[0].Shield = "s1" })
	n := nodes[0]
	shieldIDs := func() map[string]int {
		out := map[string]int{}
		for pop, peers := range n.tiers.Load().shields {
			out[pop] = len(peers)
		}
		return out
	}
	// The bucket's keys expire within a second: every poll reports the other PoPs' nodes again.
	wait.For(t, 10*time.Second, "the shield PoP's node", func() bool {
		beat("s1")
		beat("s2")
		return shieldIDs()["s1"] == 1
	})
	// s2 reported with s1 every time: a view of the whole fleet would hold it by now. (The
	// edge's own node joins its PoP's set once it reports itself ready.)
	if got := shieldIDs(); got["s2"] != 0 {
		t.Fatalf("PoPs in the edge's view = %v, want no s2 (no host names it)", got)
	}
	h := wire.HostConfig{Host: "other.example", Origin: "http://" + s.originAddr, Shield: "s2"}
	if err := fleet.PutHost(t.Context(), js, "", h); err != nil {
		t.Fatal(err)
	}
	// The node serves the new host only once its shield PoP's nodes are in its view.
	wait.For(t, 10*time.Second, "the new host served", func() bool {
		beat("s1")
		beat("s2")
		return do(t, s.client, http.MethodGet, n.Addr(), "other.example", "/x").status != http.StatusMisdirectedRequest
	})
	if got := shieldIDs(); got["s1"] != 1 || got["s2"] != 1 {
		t.Fatalf("when the new host was served, the shield PoPs in view = %v, want s1 and s2", got)
	}
}

// purger publishes purges and waits for every expected node's ack.
type purger struct {
	t       *testing.T
	js      jetstream.JetStream
	tracker *purge.Tracker
}

func newPurger(t *testing.T, js jetstream.JetStream, nc *nats.Conn) *purger {
	tr, err := purge.NewTracker(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &purger{t: t, js: js, tracker: tr}
}

func (p *purger) publish(kind purge.Kind, soft bool, nodes []*Node, values ...string) purge.Message {
	p.t.Helper()
	m := purge.Message{ID: purge.NewID(), Host: testHost, Kind: kind, Values: values, Soft: soft, IssuedAt: time.Now()}
	var expected []purge.NodeRef
	for _, n := range nodes {
		expected = append(expected, purge.NodeRef{PoP: n.cfg.PoP, Node: n.cfg.Node})
	}
	p.tracker.Register(m, expected)
	if _, err := purge.Publish(context.Background(), p.js, "", m); err != nil {
		p.t.Fatal(err)
	}
	return m
}

func (p *purger) wait(m purge.Message, timeout time.Duration) purge.Receipt {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := p.tracker.Wait(ctx, m.ID)
	if !r.Complete {
		p.t.Fatalf("purge %s not acknowledged by every node: pending %v", m.ID, r.Pending)
	}
	return r
}

// waitSubscribed waits until every node consumes purges.
func waitSubscribed(t *testing.T, p *purger, nodes []*Node) {
	t.Helper()
	for _, n := range nodes {
		select {
		case <-n.FleetReady():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s never became fleet-ready", n.Name())
		}
	}
}

// TestPurgeAckMeansApplied is rule 1: when the ack arrives, the object is gone on that node.
func TestPurgeAckMeansApplied(t *testing.T) {
	url, js, nc := startNATS(t)
	s, nodes := fleetEdges(t, []string{url, url}, true)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	paths := map[purge.Kind][2]string{
		purge.KindURL:    {"/u/1?cc=max-age%3D600", "/u/1?cc=max-age%3D600"},
		purge.KindPrefix: {"/pre/a?cc=max-age%3D600", "/pre"},
		purge.KindKey:    {"/k/1?cc=max-age%3D600&sk=red+blue", "blue"},
		purge.KindAll:    {"/all/1?cc=max-age%3D600", ""},
	}
	for kind, pv := range paths {
		for _, n := range nodes {
			do(t, s.client, http.MethodGet, n.Addr(), testHost, pv[0])
			wantCacheStatus(t, do(t, s.client, http.MethodGet, n.Addr(), testHost, pv[0]), "hit")
		}
		var values []string
		if pv[1] != "" {
			values = []string{pv[1]}
		}
		path := strings.SplitN(pv[0], "?", 2)[0]
		s.origin.Bump(path)
		r := p.wait(p.publish(kind, false, nodes, values...), 10*time.Second)
		for _, n := range nodes {
			got := do(t, s.client, http.MethodGet, n.Addr(), testHost, pv[0])
			if !strings.HasPrefix(got.body, path+"@v2:") {
				t.Errorf("%s purge acked (%v ms) but %s still serves %q (Cache-Status %q)", kind, r.DurationMs, n.Name(), got.body[:12], got.header.Get("Cache-Status"))
			}
		}
	}
}

// TestPurgeDuringFill is rule 2: a fetch that began before the purge and ends after it is not
// served as fresh afterwards.
func TestPurgeDuringFill(t *testing.T) {
	url, js, nc := startNATS(t)
	s, nodes := fleetEdges(t, []string{url}, true)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	slow := obj("/slow", "cc", "max-age=600", "delay", "500ms")
	done := make(chan resp)
	go func() { done <- do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, slow) }()
	wait.For(t, 5*time.Second, "fill in flight", func() bool { return s.origin.InFlight() == 1 })
	p.wait(p.publish(purge.KindURL, false, nodes, slow), 10*time.Second)
	<-done
	r := do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, slow)
	wantCacheStatus(t, r, "fwd=miss")
	if got := s.origin.Requests("/slow"); got != 2 {
		t.Errorf("origin requests = %d, want 2: the fill that straddled the purge was served as fresh", got)
	}
}

// TestPurgeReplayAfterPartition is rule 3: a node cut off from NATS during a purge applies it
// when it comes back and never serves the purged object again; with a gap it cannot replay, it
// treats its whole cache as stale.
func TestPurgeReplayAfterPartition(t *testing.T) {
	url, js, nc := startNATS(t)
	cut := natsCutter(t, "127.0.0.50", url)
	s, nodes := fleetEdges(t, []string{cut.URL()}, true)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	a, b := obj("/a", "cc", "max-age=600"), obj("/b", "cc", "max-age=600")
	for _, path := range []string{a, b} {
		do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, path)
	}

	cut.Cut()
	m := p.publish(purge.KindURL, false, nodes, a)
	cut.Restore()
	p.wait(m, 20*time.Second)
	wantCacheStatus(t, do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, a), "fwd=miss")
	wantCacheStatus(t, do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, b), "hit")
	if got := metricValues(t, nodes[0])["meridian_edge_purge_replays_total"]; got < 1 {
		t.Errorf("meridian_edge_purge_replays_total = %v after replaying a missed purge, want at least 1", got)
	}

	// A gap: the purge published while the node was away is gone from the stream.
	cut.Cut()
	p.publish(purge.KindURL, false, nodes, "/elsewhere")
	stream, err := js.Stream(context.Background(), purge.StreamName(""))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	cut.Restore()
	after := p.publish(purge.KindURL, false, nodes, "/after-gap")
	p.wait(after, 20*time.Second)
	r := do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, b)
	wantCacheStatus(t, r, "fwd=stale")
}

// TestPurgeSoft: a soft purge makes objects stale, served under stale-while-revalidate.
func TestPurgeSoft(t *testing.T) {
	url, js, nc := startNATS(t)
	s, nodes := fleetEdges(t, []string{url}, true)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	path := obj("/soft", "cc", "max-age=600, stale-while-revalidate=60")
	do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, path)
	s.origin.Bump("/soft")
	p.wait(p.publish(purge.KindURL, true, nodes, path), 10*time.Second)
	r := do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, path)
	wantCacheStatus(t, r, "; hit; ttl=0;", "stale-while-revalidate") // fresh by age, stale by the purge
	wait.For(t, 5*time.Second, "revalidated new version", func() bool {
		return strings.HasPrefix(do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, path).body, "/soft@v2:")
	})
}

// TestNoRefillFromLaggingPeer: a node that applied a purge asks the key's owner, which is cut
// off from NATS and has not applied it yet. The owner must not hand back the old copy (the
// asker would store it as fresh after acking the purge); it fetches the new one instead.
func TestNoRefillFromLaggingPeer(t *testing.T) {
	url, js, nc := startNATS(t)
	cut := natsCutter(t, "127.0.0.50", url)
	// A long TTL keeps the cut-off owner in the asker's peer set for the whole test.
	s, nodes := fleetEdgesTTL(t, []string{url, cut.URL()}, true, time.Minute)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	asker, owner := nodes[0], nodes[1]
	wait.For(t, 10*time.Second, "peer sets", func() bool { return len(asker.tiers.Load().peers) == 2 })
	var path string
	for k := 0; path == ""; k++ {
		c := obj(fmt.Sprintf("/lag%d", k), "cc", "max-age=600")
		if rendezvous(asker.tiers.Load().peers, asker.key(c))[0].ID == owner.cfg.Node {
			path = c
		}
	}
	wantCacheStatus(t, do(t, s.client, http.MethodGet, asker.Addr(), testHost, path), "detail=peer")
	cut.Cut()
	s.origin.Bump(strings.SplitN(path, "?", 2)[0])
	p.wait(p.publish(purge.KindURL, false, nodes[:1], path), 10*time.Second)
	r := do(t, s.client, http.MethodGet, asker.Addr(), testHost, path)
	if !strings.Contains(r.body, "@v2:") {
		t.Errorf("after the purge the asker served %q via %q: the lagging owner's old copy came back", r.body[:12], r.header.Get("Cache-Status"))
	}
	if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "fwd=request") {
		t.Errorf("Cache-Status %q: the owner should have bypassed its cache (fwd=request)", cs)
	}
	cut.Restore()
}

// TestPrefixPurgeMatchesEverySpelling: a client fills /pre/a as /%70re/a (%70 is 'p': the
// same key). A prefix purge of /pre, or of /%70re, must reach that copy: stored paths and
// purged prefixes are both read as the key spells paths.
func TestPrefixPurgeMatchesEverySpelling(t *testing.T) {
	url, js, nc := startNATS(t)
	s, nodes := fleetEdges(t, []string{url}, true)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	n := nodes[0]
	for i, tc := range []struct{ fill, prefix string }{
		{"/%70re%31/a", "/pre1"},
		{"/pre2/a", "/%70re2"},
	} {
		q := "?cc=max-age%3D600"
		plain := fmt.Sprintf("/pre%d/a", i+1)
		do(t, s.client, http.MethodGet, n.Addr(), testHost, tc.fill+q)
		wantCacheStatus(t, do(t, s.client, http.MethodGet, n.Addr(), testHost, plain+q), "hit")
		s.origin.Bump(plain)
		p.wait(p.publish(purge.KindPrefix, false, nodes, tc.prefix), 10*time.Second)
		if got := do(t, s.client, http.MethodGet, n.Addr(), testHost, plain+q); !strings.HasPrefix(got.body, plain+"@v2:") {
			t.Errorf("filled as %s, prefix purge %s acked, but %s still served %.20q (Cache-Status %q)",
				tc.fill, tc.prefix, plain, got.body, got.header.Get("Cache-Status"))
		}
	}
}

// TestJoinerAsksPeersForPurgedSeq: a node that joins after purge S was published starts its
// subscription after S, but its fills must still ask peers for copies with S applied: the key's
// owner, cut off from NATS before S, must not hand over the purged copy for the new node to
// keep as fresh (it fetches the new one instead).
func TestJoinerAsksPeersForPurgedSeq(t *testing.T) {
	url, js, nc := startNATS(t)
	// The joiner finds the cut-off owner in the registry only: keep its key there as long as
	// the nodes' views keep it (their TTL below), not the 3 s startNATS gives the fleet bucket,
	// which would leave the joiner 3 s from the cut to start and read the registry.
	if err := fleet.EnsureBuckets(context.Background(), js, "", time.Minute, 1); err != nil {
		t.Fatal(err)
	}
	// The owner's writes reach NATS late, as on a loaded machine: cut off right after
	// FleetReady, it would stay registered as joining, never a peer (see below).
	cut, ownerURL := natsLink(t, "127.0.0.51", url, 50*time.Millisecond)
	s := &single{}
	s.origin, s.originAddr = startOrigin(t, "127.0.0.10", nil)
	s.client = &http.Client{}
	t.Cleanup(s.client.CloseIdleConnections)
	mk := func(i int, u string) Config {
		name := fmt.Sprintf("n%d", i)
		return Config{PoP: "f1", Node: name, Logger: testLogger(t),
			Fleet: FleetConfig{NATS: u, Creds: edgeCreds(t, u, "f1", name), Heartbeat: 100 * time.Millisecond, TTL: time.Minute},
			Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr}}}
	}
	registered := registryUpdates(t, js, "f1", "n1")
	owner, _ := startEdge(t, listen(t, "127.0.3.21"), mk(1, ownerURL))
	p := newPurger(t, js, nc)
	// The owner tells the fleet it is ready in a heartbeat sent after FleetReady: wait until
	// the registry holds that before cutting it off.
	for !nextUpdate(t, registered, "the owner registered as usable").Usable() {
	}
	var paths []string
	for k := range 24 {
		path := obj(fmt.Sprintf("/join%d", k), "cc", "max-age=600")
		do(t, s.client, http.MethodGet, owner.Addr(), testHost, path)
		paths = append(paths, path)
	}
	cut.Cut()
	for _, path := range paths {
		s.origin.Bump(strings.SplitN(path, "?", 2)[0])
	}
	m := purge.Message{ID: purge.NewID(), Host: testHost, Kind: purge.KindURL, Values: paths, IssuedAt: time.Now()}
	seq, err := purge.Publish(context.Background(), p.js, "", m)
	if err != nil {
		t.Fatal(err)
	}
	joiner, _ := startEdge(t, listen(t, "127.0.3.20"), mk(0, url))
	<-joiner.FleetReady()
	wait.For(t, 5*time.Second, "peer sets", func() bool { return len(joiner.tiers.Load().peers) == 2 })
	owned := 0
	for _, path := range paths {
		if rendezvous(joiner.tiers.Load().peers, joiner.key(path))[0].ID != owner.cfg.Node {
			continue
		}
		owned++
		if r := do(t, s.client, http.MethodGet, joiner.Addr(), testHost, path); !strings.Contains(r.body, "@v2:") {
			t.Errorf("%s: the joiner got %.12q via %q: the lagging owner's purged copy", path, r.body, r.header.Get("Cache-Status"))
		}
	}
	if owned == 0 {
		t.Fatal("the cut-off node owns none of the paths: nothing was tested")
	}
	cut.Restore()
	wait.For(t, 10*time.Second, "the owner to apply the purge", func() bool { return owner.purgeSeq.Load() >= seq })
}

// TestLiveDroppedMetric: what comes on the live purge subject that is not control's
// announcement (here a JetStream-style JSON answer) is dropped and counted in
// meridian_edge_purge_live_dropped_total, and the node still applies the next real purge.
func TestLiveDroppedMetric(t *testing.T) {
	url, js, nc := startNATS(t)
	s, nodes := fleetEdges(t, []string{url}, true)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	if got := metricValues(t, nodes[0])["meridian_edge_purge_live_dropped_total"]; got != 0 {
		t.Fatalf("meridian_edge_purge_live_dropped_total = %v before anything was aimed at the live subject", got)
	}
	for range 3 {
		if err := nc.Publish(purge.LiveSubject(""), []byte(`{"type":"io.nats.jetstream.api.v1.stream_info_response"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "three dropped messages counted", func() bool {
		return metricValues(t, nodes[0])["meridian_edge_purge_live_dropped_total"] == 3
	})
	a := obj("/a", "cc", "max-age=600")
	do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, a)
	p.wait(p.publish(purge.KindURL, false, nodes, a), 10*time.Second)
	wantCacheStatus(t, do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, a), "fwd=miss")
}
