package control

// The real fleet the purge API tests and benchmarks run against: an origin, edges joined
// through the embedded NATS, and helpers to drive them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

const (
	hostA = "www.example.com"
	hostB = "other.example.com"
	hostC = "third.example.com"
	// hostIDN is bücher.example as clients send it (an A-label); purges may name it either way.
	hostIDN = "xn--bcher-kva.example"
)

// listenOn listens on ip, port 0.
func listenOn(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	return ln
}

// startOrigin runs the reference origin on ip until the test ends.
func startOrigin(t testing.TB, ip string) (*origin.Server, string) {
	t.Helper()
	o, err := origin.New(origin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln := listenOn(t, ip)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return o, ln.Addr().String()
}

// startEdge runs a real edge node on ip joined to the fleet at natsURL, and waits until it
// consumes purges. It stops when the test ends.
func startEdge(t testing.TB, ip, pop, node, natsURL string) *edge.Node {
	t.Helper()
	return startEdgeHB(t, ip, pop, node, natsURL, 100*time.Millisecond)
}

// startEdgeHB is startEdge with a heartbeat interval.
func startEdgeHB(t testing.TB, ip, pop, node, natsURL string, heartbeat time.Duration) *edge.Node {
	t.Helper()
	n, _ := startEdgeMod(t, ip, pop, node, natsURL, heartbeat, nil)
	return n
}

// startEdgeMod is startEdgeHB with mod (if not nil) applied to the edge's config; stop stops
// the edge (cleanly: it leaves the fleet) before the test ends.
func startEdgeMod(t testing.TB, ip, pop, node, natsURL string, heartbeat time.Duration, mod func(*edge.Config)) (n *edge.Node, stop func()) {
	t.Helper()
	cfg := edge.Config{PoP: pop, Node: node,
		Fleet: edge.FleetConfig{NATS: natsURL, Creds: credsFile(t, natsURL, natsauth.Edge(pop, node)),
			Heartbeat: heartbeat, TTL: 3 * heartbeat}}
	if mod != nil {
		mod(&cfg)
	}
	n, err := edge.New(cfg)
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, listenOn(t, ip), nil) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge %s: %v", n.Name(), err)
			}
		})
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

// putHosts configures hosts with the origin and waits until every edge serves them.
func putHosts(t *testing.T, ts *testServer, originAddr string, nodes []*edge.Node, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		body, _ := json.Marshal(wire.HostConfig{Host: h, Origin: "http://" + originAddr})
		if code, b := ts.do(t, "PUT", "/v1/hosts/"+h, tokConfigurer, body); code != http.StatusOK {
			t.Fatalf("PUT host %s = %d %s", h, code, b)
		}
	}
	for _, n := range nodes {
		for _, h := range hosts {
			wait.For(t, 10*time.Second, n.Name()+" serves "+h, func() bool {
				return get(t, n, h, "/ready?cc=no-store").status == http.StatusOK
			})
		}
	}
}

// exchange is one response from an edge.
type exchange struct {
	status int
	cs     string // Cache-Status
	body   string
}

var edgeClient = &http.Client{Timeout: 10 * time.Second}

// get asks edge n for path on host, with extra header pairs.
func get(t testing.TB, n *edge.Node, host, path string, hdr ...string) exchange {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s from %s: %v", host, path, n.Name(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return exchange{status: resp.StatusCode, cs: resp.Header.Get("Cache-Status"), body: string(b)}
}

// isHit reports whether Cache-Status says the node that answered served a fresh hit: its
// entry is the last one (RFC 9211 lists the caches from the origin's side to the client's;
// a peer's hit earlier in the list is the peer's), and a stale hit (served under
// stale-while-revalidate) says so and carries a ttl of at most 0.
func isHit(cs string) bool {
	if i := strings.LastIndexByte(cs, ','); i >= 0 {
		cs = cs[i+1:]
	}
	return strings.Contains(cs, "; hit") && !strings.Contains(cs, "ttl=-") && !strings.Contains(cs, "ttl=0;") &&
		!strings.Contains(cs, "detail=stale-")
}

// objPath builds an origin object path with query parameters (docs/origin.md).
func objPath(path string, params ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	return path + "?" + v.Encode()
}

// warm fills path on every node and checks that the next request is a hit.
func warm(t *testing.T, nodes []*edge.Node, host, path string, hdr ...string) {
	t.Helper()
	for _, n := range nodes {
		get(t, n, host, path, hdr...)
		if r := get(t, n, host, path, hdr...); !isHit(r.cs) {
			t.Fatalf("%s %s%s after a fill: Cache-Status %q, want a hit", n.Name(), host, path, r.cs)
		}
	}
}

// postPurge sends POST /v1/purge?wait= with body as token and decodes a receipt when 2xx.
func postPurge(t *testing.T, ts *testServer, token, wait string, body []byte) (int, purge.Response, []byte) {
	t.Helper()
	p := "/v1/purge"
	if wait != "" {
		p += "?wait=" + wait
	}
	code, b := ts.do(t, "POST", p, token, body)
	var resp purge.Response
	if code/100 == 2 {
		if err := json.Unmarshal(b, &resp); err != nil {
			t.Fatalf("decode purge answer %s: %v", b, err)
		}
	}
	return code, resp, b
}

// ackedNodes returns "pop/node" of every acked node in resp and of every node listed at all.
func ackedNodes(resp purge.Response) (acked, listed map[string]bool) {
	acked, listed = map[string]bool{}, map[string]bool{}
	for _, rc := range resp.Purges {
		for _, p := range rc.PoPs {
			for _, n := range p.Nodes {
				listed[p.PoP+"/"+n.Node] = true
				if n.Acked {
					acked[p.PoP+"/"+n.Node] = true
				}
			}
		}
	}
	return acked, listed
}

// purgeFleet is one control plane with three real edges in two PoPs, one origin and three
// configured hosts, shared by the tests that do not change the fleet.
type purgeFleet struct {
	ts         *testServer
	origin     *origin.Server
	originAddr string
	nodes      []*edge.Node
	names      []string // "pop/node" of nodes
}

func startPurgeFleet(t *testing.T) *purgeFleet {
	t.Helper()
	ts := startServer(t, Config{PurgeRate: -1}, pastStartGrace) // an unknown host's purge is refused at once
	o, addr := startOrigin(t, "127.0.5.10")
	f := &purgeFleet{ts: ts, origin: o, originAddr: addr}
	for i, pn := range [][2]string{{"ams", "n1"}, {"ams", "n2"}, {"fra", "n1"}} {
		f.nodes = append(f.nodes, startEdge(t, fmt.Sprintf("127.0.5.%d", 20+i), pn[0], pn[1], ts.NATSURL()))
		f.names = append(f.names, pn[0]+"/"+pn[1])
	}
	wait.For(t, 10*time.Second, "three nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 3
	})
	putHosts(t, ts, addr, f.nodes, hostA, hostB, hostC, hostIDN)
	return f
}

// checkComplete fails unless resp is complete and every fleet node acked.
func (f *purgeFleet) checkComplete(t *testing.T, code int, resp purge.Response, b []byte) {
	t.Helper()
	if code != http.StatusOK || !resp.Complete || resp.CompletedAt == nil {
		t.Fatalf("purge = %d complete=%v %s, want 200 and complete", code, resp.Complete, b)
	}
	acked, listed := ackedNodes(resp)
	for _, n := range f.names {
		if !acked[n] {
			t.Errorf("receipt lacks an ack from %s: %s", n, b)
		}
	}
	if len(listed) != len(f.names) {
		t.Errorf("receipt lists %d nodes %v, want %d", len(listed), listed, len(f.names))
	}
}
