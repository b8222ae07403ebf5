package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

const (
	hostA = "www.example.com"
	hostB = "other.example.com"
	hostC = "third.example.com"
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
	n, err := edge.New(edge.Config{PoP: pop, Node: node,
		Fleet: edge.FleetConfig{NATS: natsURL, Creds: credsFile(t, natsURL, natsauth.Edge(pop, node)),
			Heartbeat: heartbeat, TTL: 3 * heartbeat}})
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, listenOn(t, ip), nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge %s: %v", n.Name(), err)
		}
	})
	select {
	case <-n.FleetReady():
	case err := <-done:
		t.Fatalf("edge %s stopped before joining the fleet: %v", n.Name(), err)
	case <-time.After(30 * time.Second):
		t.Fatalf("edge %s did not join the fleet within 30s", n.Name())
	}
	return n
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
	ts     *testServer
	origin *origin.Server
	nodes  []*edge.Node
	names  []string // "pop/node" of nodes
}

func startPurgeFleet(t *testing.T) *purgeFleet {
	t.Helper()
	ts := startServer(t, Config{PurgeRate: -1})
	o, addr := startOrigin(t, "127.0.5.10")
	f := &purgeFleet{ts: ts, origin: o}
	for i, pn := range [][2]string{{"ams", "n1"}, {"ams", "n2"}, {"fra", "n1"}} {
		f.nodes = append(f.nodes, startEdge(t, fmt.Sprintf("127.0.5.%d", 20+i), pn[0], pn[1], ts.NATSURL()))
		f.names = append(f.names, pn[0]+"/"+pn[1])
	}
	wait.For(t, 10*time.Second, "three nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 3
	})
	putHosts(t, ts, addr, f.nodes, hostA, hostB, hostC)
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

func TestPurgeAPI(t *testing.T) {
	f := startPurgeFleet(t)
	ts, nodes := f.ts, f.nodes
	const long = "max-age=600"
	type object struct {
		host, path string
		hdr        []string
	}
	tests := []struct {
		name   string
		req    purge.Request
		purged []object // hard-purged: a miss on every node afterwards
		kept   []object // still a hit on every node
	}{
		{
			name: "url with its Vary variants",
			req:  purge.Request{Host: hostA, URLs: []string{objPath("/u/v", "cc", long, "vary", "Accept-Language")}},
			purged: []object{
				{hostA, objPath("/u/v", "cc", long, "vary", "Accept-Language"), []string{"Accept-Language", "en"}},
				{hostA, objPath("/u/v", "cc", long, "vary", "Accept-Language"), []string{"Accept-Language", "de"}},
			},
			kept: []object{
				{hostA, objPath("/u/v", "cc", long, "vary", "Accept-Language", "x", "1"), []string{"Accept-Language", "en"}},
				{hostB, objPath("/u/v", "cc", long, "vary", "Accept-Language"), []string{"Accept-Language", "en"}}, // other host
			},
		},
		{
			name:   "absolute url",
			req:    purge.Request{Host: hostA, URLs: []string{"https://www.example.com" + objPath("/u/abs", "cc", long)}},
			purged: []object{{hostA, objPath("/u/abs", "cc", long), nil}},
			kept:   []object{{hostB, objPath("/u/abs", "cc", long), nil}},
		},
		{
			name:   "prefix matches whole segments",
			req:    purge.Request{Host: hostA, Prefixes: []string{"/a"}},
			purged: []object{{hostA, objPath("/a", "cc", long), nil}, {hostA, objPath("/a/b/c", "cc", long), nil}},
			kept:   []object{{hostA, objPath("/ab", "cc", long), nil}, {hostB, objPath("/a/b/c", "cc", long), nil}},
		},
		{
			name: "keys from Surrogate-Key, Cache-Tag and Cache-Groups",
			req:  purge.Request{Host: hostA, Keys: []string{"blue", "t1", "g1"}},
			purged: []object{
				{hostA, objPath("/k/sk", "cc", long, "sk", "red blue"), nil},
				{hostA, objPath("/k/tag", "cc", long, "tag", "t0,t1"), nil},
				{hostA, objPath("/k/groups", "cc", long, "groups", `"g1", "g2"`), nil},
			},
			kept: []object{
				{hostA, objPath("/k/green", "cc", long, "sk", "green"), nil},
				{hostB, objPath("/k/sk", "cc", long, "sk", "red blue"), nil},
			},
		},
		{
			name:   "all of one host",
			req:    purge.Request{Host: hostC, All: true},
			purged: []object{{hostC, objPath("/x", "cc", long), nil}, {hostC, objPath("/y/z", "cc", long), nil}},
			kept:   []object{{hostA, objPath("/x", "cc", long), nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, o := range append(append([]object{}, tt.purged...), tt.kept...) {
				warm(t, nodes, o.host, o.path, o.hdr...)
			}
			// The origin moves on, so that serving the old version would show.
			version := map[string]int{}
			for _, o := range tt.purged {
				p, _, _ := strings.Cut(o.path, "?")
				if _, ok := version[p]; !ok {
					version[p] = f.origin.Bump(p)
				}
			}
			body, _ := json.Marshal(tt.req)
			code, resp, b := postPurge(t, ts, tokPurger, "10s", body)
			f.checkComplete(t, code, resp, b)
			// Rule 1 through the API: once the answer says acked, no node serves the old object.
			// (A node may hold the new one already: a peer in its PoP filled it.)
			for _, n := range nodes {
				for _, o := range tt.kept {
					if r := get(t, n, o.host, o.path, o.hdr...); !isHit(r.cs) {
						t.Errorf("%s %s%s %v not purged: Cache-Status %q, want a hit", n.Name(), o.host, o.path, o.hdr, r.cs)
					}
				}
				for _, o := range tt.purged {
					p, _, _ := strings.Cut(o.path, "?")
					want := fmt.Sprintf("@v%d:", version[p]) // the body repeats "<path>[|vary]@v<version>:"
					if r := get(t, n, o.host, o.path, o.hdr...); !strings.Contains(r.body, want) {
						t.Errorf("%s %s%s %v after purge: body %.40q (Cache-Status %q), want version %q", n.Name(), o.host, o.path, o.hdr, r.body, r.cs, want)
					}
				}
			}
		})
	}

	t.Run("soft versus hard", func(t *testing.T) {
		// The first node asked in each PoP shows the difference; the others may already
		// hold the new version that a peer in their PoP fetched for it.
		first := []*edge.Node{nodes[0], nodes[2]}
		swr := "max-age=600, stale-while-revalidate=60"
		for _, c := range []struct {
			name string
			soft bool
			want string
		}{{"/soft", true, "detail=stale-while-revalidate"}, {"/hard", false, "fwd=miss"}} {
			path := objPath(c.name, "cc", swr)
			warm(t, nodes, hostA, path)
			old := get(t, nodes[0], hostA, path).body[:12]
			f.origin.Bump(c.name)
			body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{path}, Soft: c.soft})
			code, resp, b := postPurge(t, ts, tokPurger, "10s", body)
			f.checkComplete(t, code, resp, b)
			if resp.Purges[0].Soft != c.soft {
				t.Errorf("receipt soft = %v, want %v", resp.Purges[0].Soft, c.soft)
			}
			for _, n := range first {
				if r := get(t, n, hostA, path); !strings.Contains(r.cs, c.want) {
					t.Errorf("%s %s after soft=%v purge: Cache-Status %q, want %q", n.Name(), c.name, c.soft, r.cs, c.want)
				}
			}
			for _, n := range nodes {
				if r := get(t, n, hostA, path); isHit(r.cs) && strings.HasPrefix(r.body, old) {
					t.Errorf("%s serves the old %s as a fresh hit after soft=%v purge (Cache-Status %q)", n.Name(), c.name, c.soft, r.cs)
				}
			}
		}
	})

	t.Run("receipt later", func(t *testing.T) {
		body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{"/later"}, Keys: []string{"later"}})
		code, posted, b := postPurge(t, ts, tokPurger, "10s", body)
		f.checkComplete(t, code, posted, b)
		code, b = ts.do(t, "GET", "/v1/purges/"+posted.ID, tokPurger, nil)
		var got purge.Response
		if err := json.Unmarshal(b, &got); code != http.StatusOK || err != nil {
			t.Fatalf("GET /v1/purges/%s = %d %s, want 200", posted.ID, code, b)
		}
		f.checkComplete(t, code, got, b)
		if got.ID != posted.ID || len(got.Purges) != 2 || got.Purges[0].Kind != purge.KindURL || got.Purges[1].Kind != purge.KindKey {
			t.Errorf("GET receipt id %q with %d purges, want %q with url and key", got.ID, len(got.Purges), posted.ID)
		}
		if !got.CompletedAt.Equal(*posted.CompletedAt) {
			t.Errorf("completed_at later = %v, at POST = %v", got.CompletedAt, posted.CompletedAt)
		}
		// A message id (with its kind) finds the request too.
		if code, _ := ts.do(t, "GET", "/v1/purges/"+posted.ID+"-key", tokPurger, nil); code != http.StatusOK {
			t.Errorf("GET by message id = %d, want 200", code)
		}
	})

	t.Run("no wait answers 202 at once", func(t *testing.T) {
		body, _ := json.Marshal(purge.Request{Host: hostA, Prefixes: []string{"/nowait"}})
		code, resp, b := postPurge(t, ts, tokPurger, "", body)
		if code != http.StatusAccepted || resp.ID == "" || len(resp.Purges) != 1 {
			t.Fatalf("POST without wait = %d %s, want 202 with a receipt", code, b)
		}
		if _, listed := ackedNodes(resp); len(listed) != len(f.names) {
			t.Errorf("receipt lists %d nodes, want all %d (pending ones too): %s", len(listed), len(f.names), b)
		}
		wait.For(t, 10*time.Second, "every node acked", func() bool {
			_, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
			var r purge.Response
			return json.Unmarshal(b, &r) == nil && r.Complete
		})
	})

	t.Run("cli", func(t *testing.T) {
		cmd := purge.NewCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"--api", ts.base, "--token", tokPurger, "--host", hostA, "--url", "/cli", "--key", "cli", "--wait", "10s"})
		if err := cmd.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("meridian purge: %v\n%s", err, out.String())
		}
		got := out.String()
		if !strings.Contains(got, "complete in") {
			t.Errorf("output %q does not say complete", got)
		}
		for _, kind := range []string{"url", "key"} {
			for _, n := range f.names {
				pop, node, _ := strings.Cut(n, "/")
				if !containsRow(got, kind, pop, node) {
					t.Errorf("output lacks a %s row for %s:\n%s", kind, n, got)
				}
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		many := make([]string, purge.MaxValues+1)
		for i := range many {
			many[i] = fmt.Sprintf("/v%d", i)
		}
		manyBody, _ := json.Marshal(purge.Request{Host: hostA, URLs: many})
		// 700 URLs of 1,400 bytes fit the 1 MiB body but not one 1 MiB NATS message once
		// escaped ("é" becomes "%C3%A9").
		long := make([]string, 700)
		for i := range long {
			long[i] = fmt.Sprintf("/%d/%s", i, strings.Repeat("é", 700))
		}
		longBody, _ := json.Marshal(purge.Request{Host: hostA, URLs: long})
		big := []byte(`{"host":"www.example.com","keys":["` + strings.Repeat("k", DefaultMaxBodyBytes) + `"]}`)
		tests := []struct {
			name      string
			wait      string
			body      []byte
			wantCode  int
			wantField string
		}{
			{"unknown host", "", []byte(`{"host":"nowhere.example.com","all":true}`), 400, "host"},
			{"invalid host", "", []byte(`{"host":"bad host","all":true}`), 400, "host"},
			{"url of another host", "", []byte(`{"host":"www.example.com","urls":["https://other.example.com/x"]}`), 400, "urls[0]"},
			{"1,001 values", "", manyBody, 400, "urls"},
			{"too large for one NATS message", "", longBody, 400, "urls"},
			{"nothing to purge", "", []byte(`{"host":"www.example.com"}`), 400, "urls"},
			{"all with values", "", []byte(`{"host":"www.example.com","all":true,"keys":["k"]}`), 400, "all"},
			{"bad prefix", "", []byte(`{"host":"www.example.com","prefixes":["a/b"]}`), 400, "prefixes[0]"},
			{"malformed json", "", []byte(`{"host":"www.example.com",`), 400, ""},
			{"unknown field", "", []byte(`{"host":"www.example.com","all":true,"everything":true}`), 400, "everything"},
			{"wrong type", "", []byte(`{"host":"www.example.com","urls":"/x"}`), 400, "urls"},
			{"empty body", "", nil, 400, ""},
			{"oversized body", "", big, 400, ""},
			{"bad wait", "soon", []byte(`{"host":"www.example.com","all":true}`), 400, "wait"},
			{"wait too long", "31s", []byte(`{"host":"www.example.com","all":true}`), 400, "wait"},
			{"negative wait", "-1s", []byte(`{"host":"www.example.com","all":true}`), 400, "wait"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, _, b := postPurge(t, ts, tokPurger, tt.wait, tt.body)
				var e APIError
				if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
					t.Fatalf("answer %q is not a JSON error: %v", b, err)
				}
				if code != tt.wantCode || e.Field != tt.wantField {
					t.Errorf("POST = %d field %q (%s), want %d field %q", code, e.Field, e.Error, tt.wantCode, tt.wantField)
				}
			})
		}
	})

	t.Run("auth", func(t *testing.T) {
		body := []byte(`{"host":"www.example.com","all":true}`)
		tests := []struct {
			name, method, path, token string
			want                      int
		}{
			{"post without token", "POST", "/v1/purge", "", 401},
			{"post with read scope", "POST", "/v1/purge", tokReader, 403},
			{"post with config scope", "POST", "/v1/purge", tokConfigurer, 403},
			{"get without token", "GET", "/v1/purges/x", "", 401},
			{"get with read scope", "GET", "/v1/purges/x", tokReader, 403},
			{"get unknown id", "GET", "/v1/purges/01KAPZ3W6N8Q1V2R3S4T5V6W7X", tokPurger, 404},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var b []byte
				if tt.method == "POST" {
					b = body
				}
				code, got := ts.do(t, tt.method, tt.path, tt.token, b)
				var e APIError
				if code != tt.want || json.Unmarshal(got, &e) != nil || e.Error == "" {
					t.Errorf("%s %s = %d %s, want %d with a JSON error", tt.method, tt.path, code, got, tt.want)
				}
			})
		}
	})
}

// containsRow reports whether the CLI's table has a row with kind, pop and node, acked.
func containsRow(out, kind, pop, node string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// KIND SEQ POP POP-MS NODE ACK-MS HITS
		if len(f) == 7 && f[0] == kind && f[2] == pop && f[4] == node && f[5] != "pending" {
			return true
		}
	}
	return false
}

func TestPurgeRateLimit(t *testing.T) {
	// One request per 100 s refills nothing during the test: the third request is refused.
	ts := startServer(t, Config{PurgeRate: 0.01, PurgeBurst: 2})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"host":"www.example.com","keys":["k"]}`)
	for i := range 2 {
		if code, _, b := postPurge(t, ts, tokPurger, "", body); code != http.StatusAccepted {
			t.Fatalf("purge %d within the burst = %d %s, want 202", i, code, b)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", ts.base+"/v1/purge", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tokPurger)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e APIError
	if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(b, &e) != nil || e.Error == "" {
		t.Fatalf("third purge = %d %s, want 429 with a JSON error", resp.StatusCode, b)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 100 {
		t.Errorf("Retry-After = %q, want whole seconds from 1 to 100", resp.Header.Get("Retry-After"))
	}
	// The limit is per token: another token still purges.
	if code, _, b := postPurge(t, ts, tokAdmin, "", body); code != http.StatusAccepted {
		t.Errorf("purge with another token = %d %s, want 202", code, b)
	}
}

// TestPurgeWaitListsEveryLiveNode is rule 4: ?wait reports every live node and omits none. One
// edge is cut off from NATS (its registration stays live until the heartbeat TTL) and one node
// registers without consuming purges; both must be reported pending. When the cut edge comes
// back it replays the purge (rule 3), and the receipt read later shows its ack.
func TestPurgeWaitListsEveryLiveNode(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1, HeartbeatTTL: 10 * time.Second})
	_, addr := startOrigin(t, "127.0.6.10")
	cut := natstest.NewCutter(t, "127.0.6.50", ts.NATSURL())
	aliasNATS(t, cut.URL(), ts.NATSURL())
	live := startEdge(t, "127.0.6.20", "ams", "n1", ts.NATSURL())
	away := startEdge(t, "127.0.6.21", "ams", "n2", cut.URL())
	runRegistrar(t, ts.NATSURL(), wire.Node{PoP: "fra", ID: "silent", HTTPAddr: "127.0.6.22:80"}, 200*time.Millisecond)
	wait.For(t, 10*time.Second, "three nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 3
	})
	nodes := []*edge.Node{live, away}
	putHosts(t, ts, addr, nodes, hostA)
	path := objPath("/r4", "cc", "max-age=600")
	warm(t, nodes, hostA, path)

	cut.Cut()
	body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{path}})
	code, resp, b := postPurge(t, ts, tokPurger, "1s", body)
	if code != http.StatusAccepted || resp.Complete {
		t.Fatalf("purge with a node cut off = %d complete=%v, want 202 incomplete: %s", code, resp.Complete, b)
	}
	acked, listed := ackedNodes(resp)
	for n, wantAcked := range map[string]bool{"ams/n1": true, "ams/n2": false, "fra/silent": false} {
		if !listed[n] || acked[n] != wantAcked {
			t.Errorf("receipt: %s listed=%v acked=%v, want listed and acked=%v: %s", n, listed[n], acked[n], wantAcked, b)
		}
	}
	pending := map[string]bool{}
	for _, p := range resp.Purges[0].Pending {
		pending[p.PoP+"/"+p.Node] = true
	}
	if len(pending) != 2 || !pending["ams/n2"] || !pending["fra/silent"] {
		t.Errorf("pending = %v, want ams/n2 and fra/silent", resp.Purges[0].Pending)
	}
	for _, p := range resp.Purges[0].PoPs {
		if p.Complete {
			t.Errorf("PoP %s complete, want incomplete (each has a pending node)", p.PoP)
		}
	}

	cut.Restore()
	wait.For(t, 30*time.Second, "the cut edge's ack after it reconnected", func() bool {
		_, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
		var r purge.Response
		if json.Unmarshal(b, &r) != nil {
			return false
		}
		acked, listed := ackedNodes(r)
		return acked["ams/n2"] && !acked["fra/silent"] && listed["fra/silent"] && !r.Complete
	})
	for _, n := range nodes {
		if r := get(t, n, hostA, path); isHit(r.cs) {
			t.Errorf("%s serves the purged object from cache after the purge (Cache-Status %q)", n.Name(), r.cs)
		}
	}
}

// startControlB runs a control plane with embedded NATS for a benchmark.
func startControlB(b *testing.B, cfg Config) (*Server, string) {
	b.Helper()
	cfg.TokensFile = "testdata/tokens.yaml"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.StoreDir = b.TempDir()
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ln := listenOn(b, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	select {
	case <-s.Ready():
	case err := <-done:
		b.Fatalf("control stopped: %v", err)
	}
	registerNATS(s.NATSURL(), s.IssueCredential)
	return s, "http://" + ln.Addr().String()
}

const benchEdges = 20

// startBenchFleet runs a control plane and benchEdges real edge nodes in 10 PoPs, each edge on
// its own NATS connection, with one host configured.
func startBenchFleet(b *testing.B) (*Server, string) {
	b.Helper()
	s, base := startControlB(b, Config{PurgeRate: -1})
	if err := fleet.PutHost(context.Background(), s.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		b.Fatal(err)
	}
	for i := range benchEdges {
		// Heartbeats once a second, as in production (the fleet's default TTL is 3 s).
		startEdgeHB(b, fmt.Sprintf("127.0.7.%d", 10+i), fmt.Sprintf("pop%02d", i/2), fmt.Sprintf("n%d", i%2), s.NATSURL(), time.Second)
	}
	wait.For(b, 20*time.Second, "every edge in the fleet view", func() bool { return len(s.Fleet().Nodes()) == benchEdges })
	return s, base
}

// postPurgeB sends one purge with ?wait=5s and returns the decoded answer.
func postPurgeB(c *http.Client, base string, body []byte) (purge.Response, int, error) {
	req, err := http.NewRequest("POST", base+"/v1/purge?wait=5s", bytes.NewReader(body))
	if err != nil {
		return purge.Response{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tokPurger)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return purge.Response{}, 0, err
	}
	defer res.Body.Close()
	var r purge.Response
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return r, res.StatusCode, err
	}
	return r, res.StatusCode, nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(p*float64(len(sorted)-1))]
}

func msOf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// BenchmarkPurgeAPI measures, per purge, the time from the POST /v1/purge?wait call to the
// control plane's receipt of the last of 20 real edges' acks (ack-*), and to the HTTP answer
// (answer-*), next to the bare core-NATS fan-out floor to 20 connections measured in the same
// run. Run with -benchtime 1000x.
func BenchmarkPurgeAPI(b *testing.B) {
	s, base := startBenchFleet(b)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	var acks, answers, issues, firstApplies, lastApplies, ackBacks []time.Duration
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		body := fmt.Appendf(nil, `{"host":%q,"urls":["/p/%d"]}`, hostA, i)
		i++
		start := time.Now()
		r, code, err := postPurgeB(c, base, body)
		answered := time.Since(start)
		if err != nil || code != http.StatusOK || !r.Complete || r.CompletedAt == nil {
			var pending []purge.NodeRef
			for _, rc := range r.Purges {
				pending = append(pending, rc.Pending...)
			}
			b.Fatalf("purge %d = %d complete=%v after %v: pending %v: %v", i, code, r.Complete, answered, pending, err)
		}
		acks = append(acks, r.CompletedAt.Sub(start))
		answers = append(answers, answered)
		// Where the time went (one process, one clock): the request to its issue, the issue to
		// the first and the last node's apply, the last apply to the control's receipt of the
		// last ack.
		rc := r.Purges[0]
		var first, last time.Time
		for _, p := range rc.PoPs {
			for _, n := range p.Nodes {
				if first.IsZero() || n.AppliedAt.Before(first) {
					first = *n.AppliedAt
				}
				if n.AppliedAt.After(last) {
					last = *n.AppliedAt
				}
			}
		}
		issues = append(issues, rc.IssuedAt.Sub(start))
		firstApplies = append(firstApplies, first.Sub(rc.IssuedAt))
		lastApplies = append(lastApplies, last.Sub(rc.IssuedAt))
		ackBacks = append(ackBacks, r.CompletedAt.Sub(last))
	}
	b.StopTimer()
	fl := natstest.FanoutFloor(b, s.NATSURL(), benchEdges, max(len(acks), 200), natsOptions(b, s.NATSURL(), natsauth.Control())...)
	slices.Sort(acks)
	slices.Sort(answers)
	slices.Sort(fl)
	b.ReportMetric(msOf(pct(acks, 0.50)), "ack-p50-ms")
	b.ReportMetric(msOf(pct(acks, 0.99)), "ack-p99-ms")
	b.ReportMetric(msOf(acks[len(acks)-1]), "ack-max-ms")
	b.ReportMetric(msOf(pct(answers, 0.50)), "answer-p50-ms")
	b.ReportMetric(msOf(pct(answers, 0.99)), "answer-p99-ms")
	b.ReportMetric(msOf(pct(fl, 0.50)), "floor-p50-ms")
	b.ReportMetric(msOf(pct(fl, 0.99)), "floor-p99-ms")
	b.ReportMetric(float64(pct(acks, 0.99))/float64(max(pct(fl, 0.99), 1)), "p99/floor")
	for _, d := range []struct {
		name string
		v    []time.Duration
	}{{"issue", issues}, {"apply-first", firstApplies}, {"apply-last", lastApplies}, {"ack-back", ackBacks}} {
		slices.Sort(d.v)
		b.ReportMetric(msOf(pct(d.v, 0.50)), d.name+"-p50-ms")
		b.ReportMetric(msOf(pct(d.v, 0.99)), d.name+"-p99-ms")
	}
}

// BenchmarkPurgeAPISustained measures purges per second through the API with every purge
// acked by all 20 edges (each POST waits for its acks), from 64 concurrent clients.
func BenchmarkPurgeAPISustained(b *testing.B) {
	s, base := startBenchFleet(b)
	const clients = 64
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer c.CloseIdleConnections()
	var (
		next atomic.Int64
		mu   sync.Mutex // guards late
		late []string   // ids of purges not complete within their 5 s wait
	)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				body := fmt.Appendf(nil, `{"host":%q,"keys":["k%d"]}`, hostA, i)
				r, code, err := postPurgeB(c, base, body)
				if err == nil && code/100 != 2 {
					err = fmt.Errorf("purge %d = %d", i, code)
				}
				if err != nil {
					errs <- err
					return
				}
				if !r.Complete {
					mu.Lock()
					late = append(late, r.Purges[0].ID)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	// A purge that missed its wait must still be acked by every node, late.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range late {
		if r := s.Tracker().Wait(ctx, id); !r.Complete {
			b.Errorf("purge %s never acked by %v", id, r.Pending)
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "purges/s")
	b.ReportMetric(float64(b.N*benchEdges)/elapsed.Seconds(), "acks/s")
	b.ReportMetric(float64(len(late)), "late-acked")
}

func TestParseWait(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"0s", 0, false},
		{"2s", 2 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"30s", MaxPurgeWait, false},
		{"30.001s", 0, true},
		{"-1ms", 0, true},
		{"2", 0, true},
		{"soon", 0, true},
		{"1h", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseWait(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("parseWait(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzParseWait: the wait parameter comes from the query string; any value is either a
// duration within 0 to MaxPurgeWait or an error.
func FuzzParseWait(f *testing.F) {
	for _, s := range []string{"", "2s", "30s", "-1s", "1e9h", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWait(s)
		if err != nil && d != 0 {
			t.Errorf("parseWait(%q) = %v with error %v, want 0", s, d, err)
		}
		if d < 0 || d > MaxPurgeWait {
			t.Errorf("parseWait(%q) = %v, outside 0 to %v", s, d, MaxPurgeWait)
		}
	})
}

// TestPurgeDurationMetric: every purge is timed to its last ack in
// meridian_control_purge_duration_seconds, whether or not the caller waited.
func TestPurgeDurationMetric(t *testing.T) {
	f := startPurgeFleet(t)
	body := []byte(`{"host":"www.example.com","keys":["metric"]}`)
	if code, _, b := postPurge(t, f.ts, tokPurger, "", body); code != http.StatusAccepted {
		t.Fatalf("purge = %d %s", code, b)
	}
	wait.For(t, 10*time.Second, "the purge timed in the metrics", func() bool {
		mfs, err := f.ts.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meridian_control_purge_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount() == 1
			}
		}
		return false
	})
}

// startRegistrar registers n through its own NATS connection, as an edge would (but acks no
// purge), until the returned stop is called, which makes it leave the registry, or the test
// ends.
func startRegistrar(t *testing.T, url string, n wire.Node) (stop func()) {
	t.Helper()
	_, js := connectAs(t, url, natsauth.Edge(n.PoP, n.ID))
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: n, Interval: 200 * time.Millisecond,
		Load: func() wire.LoadReport { return wire.LoadReport{Healthy: true} }})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// nodeStatuses maps "pop/node" to its status across a response's receipts (the first seen).
func nodeStatuses(resp purge.Response) map[string]string {
	out := map[string]string{}
	for _, rc := range resp.Purges {
		for _, p := range rc.PoPs {
			for _, n := range p.Nodes {
				if _, ok := out[p.PoP+"/"+n.Node]; !ok {
					out[p.PoP+"/"+n.Node] = n.Status
				}
			}
		}
	}
	return out
}

// TestPurgeReceiptReportsUnreachable: every node registered when a purge was issued stays in its
// receipt; one that left the registry without acking reads unreachable and keeps the purge
// incomplete until an operator declares it gone (DELETE /v1/purges/{id}/unreachable).
func TestPurgeReceiptReportsUnreachable(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatalf("PutHost: %v", err)
	}
	stopAms := startRegistrar(t, ts.NATSURL(), wire.Node{PoP: "ams", ID: "n1"})
	stopFra := startRegistrar(t, ts.NATSURL(), wire.Node{PoP: "fra", ID: "n1"})
	wait.For(t, 10*time.Second, "two nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 2
	})
	body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{"/a"}, Keys: []string{"k"}})
	code, resp, b := postPurge(t, ts, tokPurger, "50ms", body)
	if code != http.StatusAccepted || resp.Complete {
		t.Fatalf("purge = %d complete=%v %s, want 202 incomplete (the nodes do not ack)", code, resp.Complete, b)
	}
	if got, want := nodeStatuses(resp), map[string]string{"ams/n1": purge.NodePending, "fra/n1": purge.NodePending}; !maps.Equal(got, want) {
		t.Fatalf("statuses = %v, want %v", got, want)
	}
	receipt := func(t *testing.T) purge.Response {
		t.Helper()
		code, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
		var r purge.Response
		if code != http.StatusOK || json.Unmarshal(b, &r) != nil {
			t.Fatalf("GET /v1/purges/%s = %d %s", resp.ID, code, b)
		}
		return r
	}

	stopAms()
	wait.For(t, 10*time.Second, "ams/n1 unreachable in the receipt", func() bool {
		return nodeStatuses(receipt(t))["ams/n1"] == purge.NodeUnreachable
	})
	r := receipt(t)
	if r.Complete || len(r.Purges) != 2 {
		t.Fatalf("receipt complete %v with %d parts, want incomplete with 2", r.Complete, len(r.Purges))
	}
	for _, rc := range r.Purges {
		if want := []purge.NodeRef{{PoP: "ams", Node: "n1"}}; !slices.Equal(rc.Unreachable, want) || len(rc.Pending) != 2 {
			t.Errorf("%s: unreachable %v pending %v, want ams/n1 unreachable and both pending", rc.Kind, rc.Unreachable, rc.Pending)
		}
	}

	refused := []struct {
		name, path string
		want       int
	}{
		{"registered node", "/v1/purges/" + resp.ID + "/unreachable?node=fra/n1", http.StatusConflict},
		{"node not in the receipt", "/v1/purges/" + resp.ID + "/unreachable?node=lhr/n1", http.StatusNotFound},
		{"malformed node", "/v1/purges/" + resp.ID + "/unreachable?node=n1", http.StatusBadRequest},
		{"unknown purge", "/v1/purges/nope/unreachable", http.StatusNotFound},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, "DELETE", tt.path, tokPurger, nil)
			var e APIError
			if code != tt.want || json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Errorf("DELETE %s = %d %s, want %d with a JSON error", tt.path, code, b, tt.want)
			}
		})
	}

	code, b = ts.do(t, "DELETE", "/v1/purges/"+resp.ID+"/unreachable", tokPurger, nil)
	if err := json.Unmarshal(b, &r); code != http.StatusOK || err != nil {
		t.Fatalf("DELETE unreachable = %d %s, want 200 with the receipt", code, b)
	}
	if got, want := nodeStatuses(r), map[string]string{"ams/n1": purge.NodeGone, "fra/n1": purge.NodePending}; !maps.Equal(got, want) || r.Complete {
		t.Errorf("after declaring ams/n1 gone: statuses %v complete %v, want %v and incomplete", got, r.Complete, want)
	}

	stopFra()
	wait.For(t, 10*time.Second, "fra/n1 unreachable in the receipt", func() bool {
		return nodeStatuses(receipt(t))["fra/n1"] == purge.NodeUnreachable
	})
	code, b = ts.do(t, "DELETE", "/v1/purges/"+resp.ID+"/unreachable?node=fra/n1", tokPurger, nil)
	if err := json.Unmarshal(b, &r); code != http.StatusOK || err != nil || !r.Complete || r.CompletedAt == nil {
		t.Fatalf("DELETE unreachable?node=fra/n1 = %d %s, want 200 and complete", code, b)
	}
	for _, rc := range r.Purges {
		if len(rc.Gone) != 2 || len(rc.Pending) != 0 {
			t.Errorf("%s: gone %v pending %v, want both gone and none pending", rc.Kind, rc.Gone, rc.Pending)
		}
	}
	if r := receipt(t); !r.Complete {
		t.Errorf("GET after both declared gone: complete = false, want true")
	}
}
