// Over 600 lines on purpose: every rule of the header policy between client, edge and origin
// (forwarded, denied, set, cookies, proxies, smuggling) has its case here, so the policy reads in
// one place.

package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// startHTTP serves h on ip until the test ends.
func startHTTP(t *testing.T, ip string, h http.Handler) string {
	t.Helper()
	return startServer(t, ip, &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second})
}

// startServer runs srv on ip until the test ends.
func startServer(t *testing.T, ip string, srv *http.Server) string {
	t.Helper()
	ln := listen(t, ip)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// echoed is what the echo origin received.
type echoed struct {
	Method string
	Header http.Header
}

// echoOrigin answers with the request it received, as JSON; ?cc= sets Cache-Control and
// ?vary= sets Vary.
func echoOrigin(w http.ResponseWriter, r *http.Request) {
	if cc := r.URL.Query().Get("cc"); cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	if v := r.URL.Query().Get("vary"); v != "" {
		w.Header().Set("Vary", v)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(echoed{Method: r.Method, Header: r.Header})
}

// echoEdge starts an origin running h and an edge for testHost in front of it.
func echoEdge(t *testing.T, h http.HandlerFunc, host func(*wire.HostConfig), mod func(*Config)) (*Node, *http.Client) {
	t.Helper()
	originAddr := startHTTP(t, "127.0.0.20", h)
	hc := wire.HostConfig{Host: testHost, Origin: "http://" + originAddr}
	if host != nil {
		host(&hc)
	}
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{hc}, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	n, _ := startEdge(t, listen(t, "127.0.0.21"), cfg)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	t.Cleanup(c.CloseIdleConnections)
	return n, c
}

// echoGet sends a request through the edge and decodes what the origin received (zero if
// the answer came from cache).
func echoGet(t *testing.T, c *http.Client, n *Node, method, path string, hdr ...string) (resp, echoed) {
	t.Helper()
	r := do(t, c, method, n.Addr(), testHost, path, hdr...)
	var e echoed
	if r.status == 200 && !strings.Contains(r.header.Get("Cache-Status"), "hit") {
		if err := json.Unmarshal([]byte(r.body), &e); err != nil {
			t.Fatalf("%s %s: decode echo %q: %v", method, path, r.body, err)
		}
	}
	return r, e
}

// TestOriginRequestPolicy checks what reaches a real origin under the host's policy.
func TestOriginRequestPolicy(t *testing.T) {
	client := []string{
		"User-Agent", "curl/8.0", "Referer", "https://ref.example/", "X-Custom", "c1",
		"Cookie", "session=s1", "X-Forwarded-Host", "evil.example", "Forwarded", "host=evil.example;proto=https",
		"X-Forwarded-Proto", "https", "X-Original-URL", "/admin", "X-HTTP-Method-Override", "DELETE",
		"Via", "1.1 client-proxy",
		// Forged fleet fields: removed before anything goes upstream.
		"Meridian-Fill", "peer", "Meridian-Fill-Auth", "v1;k=x", "Meridian-Purge-Seq", "7",
	}
	tests := []struct {
		name   string
		host   func(*wire.HostConfig)
		cfg    func(*Config)
		method string
		want   map[string]string // "" means absent
	}{
		{"default shared fill", nil, nil, http.MethodGet, map[string]string{
			"User-Agent": "curl/8.0", "Referer": "https://ref.example/", "X-Custom": "c1", "Cookie": "",
			"X-Forwarded-Host": testHost, "X-Forwarded-Proto": "http", "X-Forwarded-For": "127.0.0.1",
			"Forwarded": "for=127.0.0.1;host=" + testHost + ";proto=http", "X-Original-Url": "",
			"X-Http-Method-Override": "", "Via": "1.1 client-proxy, 1.1 tst-e1",
		}},
		{"pass keeps cookies and the client's fields, not its forwarding", nil, nil, http.MethodPost, map[string]string{
			"User-Agent": "curl/8.0", "Cookie": "session=s1", "X-Custom": "c1", "X-Original-Url": "/admin",
			"X-Forwarded-Host": testHost, "Forwarded": "for=127.0.0.1;host=" + testHost + ";proto=http",
			"Via": "1.1 client-proxy, 1.1 tst-e1",
		}},
		{"cookies pass", func(h *wire.HostConfig) { h.Cookies = wire.CookiesPass }, nil, http.MethodGet, map[string]string{
			"Cookie": "session=s1", "User-Agent": "curl/8.0",
		}},
		{"trusted proxy keeps its forwarding fields", nil, func(c *Config) { c.TrustedProxies = []string{"127.0.0.0/8"} }, http.MethodGet, map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https",
			"Forwarded": "host=evil.example;proto=https, for=127.0.0.1;host=" + testHost + ";proto=http",
			// Not on a shared fill: the host is part of the key.
			"X-Forwarded-Host": testHost,
		}},
		{"forward list", func(h *wire.HostConfig) {
			h.RequestHeaders.Forward = wire.HeaderNames{"x-custom", "X-Original-URL"}
		}, nil, http.MethodGet, map[string]string{
			"User-Agent": "", "Referer": "", "X-Custom": "c1", "X-Original-Url": "/admin", "X-Forwarded-Host": testHost,
		}},
		{"deny and set", func(h *wire.HostConfig) {
			h.RequestHeaders.Deny = []string{"Referer"}
			h.RequestHeaders.Set = map[string]string{"X-Custom": "edge", "X-Edge": "1"}
		}, nil, http.MethodGet, map[string]string{"Referer": "", "X-Custom": "edge", "X-Edge": "1", "User-Agent": "curl/8.0"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, c := echoEdge(t, echoOrigin, tt.host, tt.cfg)
			r, e := echoGet(t, c, n, tt.method, fmt.Sprintf("/p%d?cc=max-age%%3D60", i), client...)
			if r.status != 200 {
				t.Fatalf("status = %d, want 200", r.status)
			}
			for k, want := range tt.want {
				if got := strings.Join(e.Header.Values(k), ", "); got != want {
					t.Errorf("origin got %s = %q, want %q", k, got, want)
				}
			}
			for _, k := range []string{hopHeader, hopAuthHeader, purgeSeqHeader} {
				if v := e.Header.Get(k); v != "" {
					t.Errorf("origin got fleet field %s = %q", k, v)
				}
			}
		})
	}
}

// TestVaryOnUnkeyedHeader: an answer that depends on a field no cache keys on is given to
// another client only when it says so in Vary, and then only to a client that sent the same
// value, whether the two ask one after the other or at once (collapsed).
func TestVaryOnUnkeyedHeader(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int64
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			arrived.Add(1)
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "X-Variant")
		fmt.Fprintf(w, "variant=%s", r.Header.Get("X-Variant"))
	}, nil, nil)
	a := do(t, c, http.MethodGet, n.Addr(), testHost, "/v", "X-Variant", "evil")
	if a.body != "variant=evil" {
		t.Fatalf("first client got %q", a.body)
	}
	b := do(t, c, http.MethodGet, n.Addr(), testHost, "/v")
	if b.body != "variant=" {
		t.Errorf("a client without X-Variant got %q, want its own variant", b.body)
	}
	wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, "/v", "X-Variant", "evil"), "hit")

	// At once: the second client waits for the first one's fill and must not take its answer.
	var wg sync.WaitGroup
	got := make([]string, 2)
	for i, v := range []string{"evil", ""} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var hdr []string
			if v != "" {
				hdr = []string{"X-Variant", v}
			}
			got[i] = do(t, c, http.MethodGet, n.Addr(), testHost, "/w?hold=1", hdr...).body
		}()
		if i == 0 {
			wait.For(t, 5*time.Second, "the first fill to reach the origin", func() bool { return arrived.Load() == 1 })
		}
	}
	wait.For(t, 5*time.Second, "both clients connected", func() bool { return n.openConns.Load() >= 2 })
	close(release)
	wg.Wait()
	if got[0] != "variant=evil" || got[1] != "variant=" {
		t.Errorf("collapsed clients got %q and %q, want variant=evil and variant=", got[0], got[1])
	}
}

// TestCookiesPassNotCached: with cookies: pass a request with a cookie reaches the origin every
// time and its answer is never stored; without cookies the host is cached as usual.
func TestCookiesPassNotCached(t *testing.T) {
	var hits atomic.Int64
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "cookie=%s", r.Header.Get("Cookie"))
	}, func(h *wire.HostConfig) { h.Cookies = wire.CookiesPass }, nil)
	for i, who := range []string{"a", "b"} {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, "/c", "Cookie", "u="+who)
		if r.body != "cookie=u="+who {
			t.Errorf("request %d with a cookie got %q", i, r.body)
		}
		wantCacheStatus(t, r, "fwd=bypass")
	}
	do(t, c, http.MethodGet, n.Addr(), testHost, "/c")
	r := do(t, c, http.MethodGet, n.Addr(), testHost, "/c")
	wantCacheStatus(t, r, "hit")
	if r.body != "cookie=" {
		t.Errorf("cached answer = %q, want the cookie-less one", r.body)
	}
	if got := hits.Load(); got != 3 {
		t.Errorf("origin requests = %d, want 3", got)
	}
}

// TestResponseHeaderPolicy: response_headers deny and set apply to what clients get, hits
// included.
func TestResponseHeaderPolicy(t *testing.T) {
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Server", "secret/1.0")
		w.Header().Set("X-Frame-Options", "ALLOW")
	}, func(h *wire.HostConfig) {
		h.ResponseHeaders.Deny = []string{"Server"}
		h.ResponseHeaders.Set = map[string]string{"X-Frame-Options": "DENY"}
	}, nil)
	for _, method := range []string{http.MethodGet, http.MethodGet, http.MethodPost} {
		r := do(t, c, method, n.Addr(), testHost, "/r")
		if got := r.header.Get("Server"); got != "" {
			t.Errorf("%s: Server = %q, want it removed", method, got)
		}
		if got := r.header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("%s: X-Frame-Options = %q, want DENY", method, got)
		}
	}
}

// TestMissAnswerLikeHit: on the HTTP/1.1 fast path a miss's answer (through the header map)
// has the fields its hits have (their stored fields serialised once, blockHeader), but Age
// and Cache-Status, each once and without the surrogate fields, for GET and HEAD; each
// variant of a URL with two (no memo, so through the map too) has its own.
func TestMissAnswerLikeHit(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.28", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "max-age=60")
		h.Set("Content-Type", "text/plain")
		h.Set("Surrogate-Key", "k1")
		h["X-Two"] = []string{"a", "b"}
		lang := r.Header.Get("Accept-Language")
		if r.URL.Path == "/vary" {
			h.Set("Vary", "Accept-Language")
			h.Set("X-Lang", lang)
		}
		io.WriteString(w, "body-"+lang)
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.29"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	for _, tc := range []struct{ path, lang string }{{"/plain", "en"}, {"/vary", "en"}, {"/vary", "fr"}} {
		miss := do(t, c, http.MethodGet, n.Addr(), testHost, tc.path, "Accept-Language", tc.lang)
		wantCacheStatus(t, miss, "miss; fwd-status=200")
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			hit := do(t, c, method, n.Addr(), testHost, tc.path, "Accept-Language", tc.lang)
			wantCacheStatus(t, hit, "; hit")
			for _, k := range []string{"Date", "Content-Type", "Content-Length", "Age", "Cache-Status"} {
				if len(miss.header[k]) != 1 || len(hit.header[k]) != 1 {
					t.Errorf("%s %s: %s %q on the miss, %q on the hit; want one each", tc.path, tc.lang, k, miss.header[k], hit.header[k])
				}
			}
			mh, hh := miss.header.Clone(), hit.header.Clone()
			for _, k := range []string{"Age", "Cache-Status"} {
				delete(mh, k)
				delete(hh, k)
			}
			if !reflect.DeepEqual(mh, hh) || mh.Get("Surrogate-Key") != "" || fmt.Sprint(mh["X-Two"]) != "[a b]" {
				t.Errorf("%s %s %s: miss fields %v, hit fields %v; want the same, X-Two a and b, no Surrogate-Key", method, tc.path, tc.lang, mh, hh)
			}
			if tc.path == "/vary" && mh.Get("X-Lang") != tc.lang {
				t.Errorf("%s variant answered with X-Lang %q", tc.lang, mh.Get("X-Lang"))
			}
		}
	}
}

// TestHitFieldsFollowPolicy: a hit's fields, which the fast HTTP/1.1 path serialises once per
// stored object (blockHeader), are the same as net/http's answer from the same pipeline, keep
// surrogate fields out, give the edge's own Age and Cache-Status whatever the policy sets, and
// follow a change of the host's response policy at once.
func TestHitFieldsFollowPolicy(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "max-age=60")
		h.Set("Content-Type", "text/plain")
		h.Set("Server", "secret/1.0")
		h.Set("Surrogate-Key", "k1 k2")
		h["X-Two"] = []string{"a", "b"}
		io.WriteString(w, "body")
	}))
	host := func(set string) wire.HostConfig {
		hc := wire.HostConfig{Host: testHost, Origin: "http://" + originAddr}
		hc.ResponseHeaders.Deny = []string{"Server"}
		// A policy may set Age and Cache-Status: the edge's own replace them.
		hc.ResponseHeaders.Set = map[string]string{"X-Frame-Options": set, "Age": "7", "Cache-Status": "policy"}
		return hc
	}
	fields := func(r resp) string {
		h := r.header.Clone()
		if h.Get("Date") == "" || len(h["Age"]) != 1 || h.Get("Age") == "7" || len(h["Cache-Status"]) != 1 || !strings.Contains(h.Get("Cache-Status"), "; hit") {
			t.Errorf("hit without Date, or not one Age and one Cache-Status of the edge's: %v", r.header)
		}
		h.Del("Date")
		h.Del("Age")
		h.Del("Cache-Status") // its ttl moves with the clock
		return fmt.Sprint(h)
	}
	var answers []string
	for i, mode := range []string{HTTP1Fast, HTTP1Std} {
		n, _ := startEdge(t, listen(t, fmt.Sprintf("127.0.0.%d", 22+i)), Config{PoP: "tst", Node: "e1", HTTP1: mode,
			Hosts: []wire.HostConfig{host("DENY")}, Logger: testLogger(t)})
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		t.Cleanup(c.CloseIdleConnections)
		do(t, c, http.MethodGet, n.Addr(), testHost, "/p") // the fill
		for _, want := range []string{"DENY", "DENY", "SAMEORIGIN", "SAMEORIGIN"} {
			if want == "SAMEORIGIN" {
				if err := n.SetHosts([]wire.HostConfig{host(want)}); err != nil {
					t.Fatal(err)
				}
			}
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p")
			wantCacheStatus(t, r, "hit")
			if got := r.header.Get("X-Frame-Options"); got != want || r.header.Get("Server") != "" || r.header.Get("Surrogate-Key") != "" ||
				fmt.Sprint(r.header["X-Two"]) != "[a b]" || r.header.Get("Content-Length") != "4" || r.body != "body" {
				t.Errorf("%s: hit %v %q, want X-Frame-Options %s, no Server or Surrogate-Key, X-Two a and b, 4 bytes", mode, r.header, r.body, want)
			}
			if want == "SAMEORIGIN" {
				answers = append(answers, fields(r))
			}
		}
	}
	if answers[0] != answers[1] || answers[0] != answers[2] || answers[2] != answers[3] {
		t.Errorf("hits' fields differ between the servers:\n%s\n%s", answers[0], answers[2])
	}
}

// TestHitKeepsEveryHeaderValue: a stored answer with more header values than the response
// writer's scratch for them holds (ValueScratch, store.Object.SetHeader) is served whole, from
// the fill and from the store alike.
func TestHitKeepsEveryHeaderValue(t *testing.T) {
	links := make([]string, 24)
	for i := range links {
		links[i] = fmt.Sprintf("</asset/%d.css>; rel=preload; as=style", i)
	}
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header()["Link"] = links
		w.Header()["X-Three"] = []string{"a", "b", "c"}
	}, nil, nil)
	for i, want := range []string{"miss", "hit", "hit"} {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, "/links")
		if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, want) {
			t.Fatalf("request %d: Cache-Status %q, want a %s", i, cs, want)
		}
		if got := r.header.Values("Link"); !slices.Equal(got, links) {
			t.Errorf("request %d (%s): %d Link values %q, want the origin's %d", i, want, len(got), got, len(links))
		}
		if got := r.header.Values("X-Three"); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("request %d (%s): X-Three %q, want [a b c]", i, want, got)
		}
	}
}

// trickle is a request body that sends one byte per period until stop is closed or n bytes
// went out.
func trickle(n int, period time.Duration, first chan<- struct{}, stop <-chan struct{}) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := range n {
			if _, err := pw.Write([]byte("x")); err != nil {
				return
			}
			if i == 0 {
				first <- struct{}{}
			}
			select {
			case <-tick.C:
			case <-stop:
				pw.CloseWithError(io.ErrUnexpectedEOF)
				return
			}
		}
		pw.Close()
	}()
	return pr
}

// TestSlowBodiesDoNotStarveFills: 66 clients trickling POST bodies (more than the origin's
// 64 slots) hold no origin slot while their bodies come in, so a GET miss is served at once;
// bodies slower than request_body_timeout get 408 and never reach the origin.
func TestSlowBodiesDoNotStarveFills(t *testing.T) {
	var posts atomic.Int64
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		w.Header().Set("Cache-Control", "max-age=60")
	}, nil, func(c *Config) { c.RequestBodyTimeout = 2 * time.Second })
	const clients = 66
	first := make(chan struct{}, clients)
	stop := make(chan struct{})
	defer close(stop)
	statuses := make(chan int, clients)
	for range clients {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, "http://"+n.Addr()+"/upload", trickle(50, 200*time.Millisecond, first, stop))
			req.Host = testHost
			r, err := c.Do(req)
			if err != nil {
				statuses <- 0 // the edge answered and closed while the body was still coming
				return
			}
			r.Body.Close()
			statuses <- r.StatusCode
		}()
	}
	for range clients {
		<-first
	}
	start := time.Now()
	r := do(t, c, http.MethodGet, n.Addr(), testHost, "/page")
	if r.status != 200 {
		t.Fatalf("GET miss while %d bodies trickle = %d, want 200", clients, r.status)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("GET miss took %v", d)
	}
	for range clients {
		if s := <-statuses; s != 0 && s != http.StatusRequestTimeout {
			t.Errorf("trickling POST = %d, want 408", s)
		}
	}
	if got := posts.Load(); got != 0 {
		t.Errorf("origin saw %d POSTs, want none (bodies never arrived)", got)
	}
}

// TestPassUploadToStalledOrigin: an upload to an origin that stops reading it (here one that
// never reads at all, once the sockets' buffers are full) gets a 504 once
// response_header_timeout passes without the body going out, and frees its slot of the pass
// bulkhead. It waited for pass_timeout (an hour by default), holding that slot.
func TestPassUploadToStalledOrigin(t *testing.T) {
	ln := listen(t, "127.0.0.22")
	var held sync.WaitGroup
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // kept open, never read
		}
	})
	t.Cleanup(func() { ln.Close(); held.Wait() })
	n, _ := startEdge(t, listen(t, "127.0.0.23"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts:               []wire.HostConfig{{Host: testHost, Origin: "http://" + ln.Addr().String()}},
		MaxRequestBodyBytes: 64 << 20,
		Upstream:            UpstreamConfig{ResponseHeaderTimeout: 300 * time.Millisecond},
	})
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.Addr()+"/upload", strings.NewReader(strings.Repeat("x", 32<<20)))
	req.Host = testHost
	done := make(chan int, 1)
	go func() {
		r, err := c.Do(req)
		if err != nil {
			done <- 0
			return
		}
		r.Body.Close()
		done <- r.StatusCode
	}()
	select {
	case got := <-done:
		if got != http.StatusGatewayTimeout {
			t.Errorf("upload to an origin that stopped reading it = %d, want 504", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("an upload to an origin that stopped reading it got no answer in 20 s")
	}
	for _, st := range n.upstreamStats() {
		if st.InFlight != 0 {
			t.Errorf("%s: %d in flight, want 0", st.Name, st.InFlight)
		}
	}
}

// TestOptionsMaxForwards: an OPTIONS with Max-Forwards is forwarded with the value one less,
// and one with Max-Forwards: 0 is answered by the edge as its final recipient, never reaching
// the origin (RFC 9110 §7.6.2, a MUST for every intermediary). The edge forwarded the field
// as it came: a client could not ask the edge itself. Other methods carry it unchanged.
func TestOptionsMaxForwards(t *testing.T) {
	got := make(chan string, 1)
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		v, ok := r.Header["Max-Forwards"]
		got <- fmt.Sprint(ok, v)
		w.Header().Set("Allow", "GET, OPTIONS")
	}, nil, nil)
	for _, tt := range []struct {
		method, sent string
		want         string // what the origin got; "" for nothing forwarded
	}{
		{http.MethodOptions, "0", ""},
		{http.MethodOptions, "1", "true [0]"},
		{http.MethodOptions, "10", "true [9]"},
		{http.MethodOptions, "", "false []"},
		{http.MethodPost, "0", "true [0]"},
	} {
		t.Run(tt.method+" "+tt.sent, func(t *testing.T) {
			var hdr []string
			if tt.sent != "" {
				hdr = []string{"Max-Forwards", tt.sent}
			}
			r := do(t, c, tt.method, n.Addr(), testHost, "/api", hdr...)
			if r.status != http.StatusOK {
				t.Fatalf("%s with Max-Forwards %q = %d", tt.method, tt.sent, r.status)
			}
			if tt.want == "" {
				if allow := r.header.Get("Allow"); !strings.Contains(allow, "POST") || strings.Contains(allow, "TRACE") {
					t.Errorf("the edge's answer has Allow %q, want its own methods", allow)
				}
				select {
				case g := <-got:
					t.Errorf("origin got the request (Max-Forwards %s), want the edge to answer it", g)
				default:
				}
				return
			}
			if g := <-got; g != tt.want {
				t.Errorf("origin got Max-Forwards %s, want %s", g, tt.want)
			}
		})
	}
}

// TestPassBulkheadSeparate: pass-through requests held by a slow origin fill their own
// bulkhead; a GET miss still gets an origin slot.
func TestPassBulkheadSeparate(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int64
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			held.Add(1)
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		w.Header().Set("Cache-Control", "max-age=60")
	}, nil, func(c *Config) { c.Upstream.MaxConcurrent = 4 })
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(t, c, http.MethodPost, n.Addr(), testHost, "/slow")
		}()
	}
	wait.For(t, 5*time.Second, "4 POSTs held by the origin", func() bool { return held.Load() == 4 })
	if r := do(t, c, http.MethodPost, n.Addr(), testHost, "/slow"); r.status != http.StatusServiceUnavailable {
		t.Errorf("fifth POST = %d, want 503 (pass bulkhead full)", r.status)
	}
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/page"); r.status != 200 {
		t.Errorf("GET miss with the pass bulkhead full = %d, want 200", r.status)
	}
	close(release)
	wg.Wait()
}

// TestFillSurvivesLeaderDisconnect: the client whose request started a fill goes away; the
// 50 clients waiting for the same key all get the object, fetched once.
func TestFillSurvivesLeaderDisconnect(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	var hits atomic.Int64
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "object")
	}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr()+"/hot", nil)
		req.Host = testHost
		r, err := c.Do(req)
		if err == nil {
			r.Body.Close()
		}
		leaderDone <- err
	}()
	<-arrived
	const followers = 50
	var wg sync.WaitGroup
	got := make([]resp, followers)
	for i := range followers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = do(t, c, http.MethodGet, n.Addr(), testHost, "/hot")
		}()
	}
	wait.For(t, 5*time.Second, "followers connected", func() bool { return n.openConns.Load() >= followers+1 })
	cancel()
	if err := <-leaderDone; err == nil {
		t.Fatalf("leader request succeeded; want it canceled")
	}
	wait.For(t, 5*time.Second, "the edge to see the leader leave", func() bool { return n.openConns.Load() == followers })
	close(release)
	wg.Wait()
	for i, r := range got {
		if r.status != 200 || r.body != "object" {
			t.Fatalf("follower %d: %d %q, want 200 object", i, r.status, r.body)
		}
	}
	if h := hits.Load(); h != 1 {
		t.Errorf("origin requests = %d, want 1", h)
	}
}

// TestFillPanicIsAnError: a fill that panics (only a bug can make one) answers its clients
// with an error, as any failed fill does, and the node goes on serving.
func TestFillPanicIsAnError(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "object")
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}, Logger: testLogger(t)}
	n, _ := startEdgeWith(t, listen(t, "127.0.0.21"), cfg, func(n *Node) {
		n.fill.runHook = func(flightKey string) {
			if strings.Contains(flightKey, "/boom") {
				panic("a bug in the fill")
			}
		}
	})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/boom"); r.status != http.StatusBadGateway {
		t.Errorf("GET /boom: %d, want 502", r.status)
	}
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/fine"); r.status != 200 || r.body != "object" {
		t.Errorf("GET /fine after the panic: %d %q, want 200 object", r.status, r.body)
	}
}

// TestStreamingPassThrough: answers that will not be stored reach the client as they arrive:
// the first server-sent event (or chunk of a long poll) before the origin finishes.
func TestStreamingPassThrough(t *testing.T) {
	tests := []struct {
		name   string
		method string
		hdr    []string
		ctype  string
	}{
		{"event stream on a fill", http.MethodGet, nil, "text/event-stream"},
		{"event stream asked for", http.MethodGet, []string{"Accept", "text/event-stream"}, "text/event-stream"},
		{"no-store without length", http.MethodGet, []string{"X-CC", "no-store"}, "text/plain"},
		{"long poll POST", http.MethodPost, nil, "text/plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotFirst := make(chan struct{})
			var finished atomic.Bool
			n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
				if cc := r.Header.Get("X-CC"); cc != "" {
					w.Header().Set("Cache-Control", cc)
				}
				w.Header().Set("Content-Type", tt.ctype)
				io.WriteString(w, "data: one\n\n")
				http.NewResponseController(w).Flush()
				select {
				case <-gotFirst:
				case <-time.After(5 * time.Second):
				}
				finished.Store(true)
				io.WriteString(w, "data: two\n\n")
			}, nil, nil)
			req, _ := http.NewRequest(tt.method, "http://"+n.Addr()+"/events", nil)
			req.Host = testHost
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			r, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			line, err := bufio.NewReader(r.Body).ReadString('\n')
			if err != nil || line != "data: one\n" {
				t.Fatalf("first line = %q, %v", line, err)
			}
			if finished.Load() {
				t.Errorf("first event arrived only after the origin finished")
			}
			close(gotFirst)
			if rest, _ := io.ReadAll(r.Body); !strings.Contains(string(rest), "data: two") {
				t.Errorf("rest of the stream = %q", rest)
			}
		})
	}
}

// TestWebSocketEcho: an Upgrade: websocket request passes through to the origin, and bytes
// flow both ways on the upgraded connection.
func TestWebSocketEcho(t *testing.T) {
	n, _ := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo every frame's bytes back
	}, nil, nil)
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", testHost)
	br := bufio.NewReader(conn)
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
	}
	// A masked text frame "hello" (RFC 6455 §5.2), and an HTTP/1.0 head with
	// Transfer-Encoding, whose colon the guard beneath net/http (http1.GuardConn), following
	// what net/http read ahead as the request it would be were the upgrade not switched,
	// marks: in a tunnel's bytes it is put back (http1.Unmark).
	mask := []byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x85}
	frame = append(frame, mask...)
	for i, b := range []byte("hello") {
		frame = append(frame, b^mask[i%4])
	}
	for range 2 {
		if _, err := conn.Write(frame); err != nil {
			t.Fatal(err)
		}
		back := make([]byte, len(frame))
		if _, err := io.ReadFull(br, back); err != nil {
			t.Fatalf("read echo: %v", err)
		}
		if string(back) != string(frame) {
			t.Errorf("echo = %x, want %x", back, frame)
		}
	}
}

// TestUpgradeHalfClose: a client that ends its side of an upgraded connection (shutdown of
// its writes) still gets what the origin sends after it has seen that end, as across a TCP
// tunnel: the end goes on to the origin as its own half-close, not as the close of both ways.
// The origin's connection, wrapped by the upstream client's bound on answer heads
// (fetch.headConn), hid its CloseWrite: ReverseProxy then tore the tunnel down at the
// client's end, and what the origin sent after it was lost.
func TestUpgradeHalfClose(t *testing.T) {
	n, _ := echoEdge(t, webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) {
		got, err := io.ReadAll(brw) // to the client's end, passed on by the edge
		if err != nil {
			return
		}
		fmt.Fprintf(conn, "got %q, bye", got)
	}), nil, nil)
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /up HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", testHost)
	br := bufio.NewReader(conn)
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
	}
	io.WriteString(conn, "hello")
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if want := `got "hello", bye`; string(rest) != want {
		t.Errorf("after the client's half-close the origin sent %q (%v), want %q", rest, err, want)
	}
}

// TestEarlyHintsForwarded: a 103 from the origin reaches the client before the final answer,
// and is not part of what is stored; the fleet's own fields in it, from an origin, do not
// reach the client.
func TestEarlyHintsForwarded(t *testing.T) {
	fleetFields := []string{hopHeader, edgeCodedHeader, fleetKeysHeader}
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		for _, k := range fleetFields {
			w.Header().Set(k, "from-origin")
		}
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		for _, k := range fleetFields {
			w.Header().Del(k)
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "page")
	}, nil, nil)
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		var codes []int
		var link string
		var leaked []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			codes = append(codes, code)
			link = h.Get("Link")
			for _, k := range fleetFields {
				if _, ok := h[k]; ok {
					leaked = append(leaked, k)
				}
			}
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, "http://"+n.Addr()+"/hints", nil)
		req.Host = testHost
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 || len(codes) != 1 || codes[0] != 103 || link != "</style.css>; rel=preload" {
			t.Errorf("%s: status %d, interim %v with Link %q; want 200 after one 103 with the Link", method, r.StatusCode, codes, link)
		}
		if got := r.Header.Get("Link"); got != "" {
			t.Errorf("%s: final answer carries the 103's Link %q", method, got)
		}
		if len(leaked) > 0 {
			t.Errorf("%s: the 103 reached the client with the fleet's fields %q", method, leaked)
		}
	}
	// The stored answer has no interim response.
	var codes []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		codes = append(codes, code)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "http://"+n.Addr()+"/hints", nil)
	req.Host = testHost
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if !strings.Contains(r.Header.Get("Cache-Status"), "hit") || len(codes) != 0 {
		t.Errorf("cached answer: Cache-Status %q, interim %v; want a hit with none", r.Header.Get("Cache-Status"), codes)
	}
}

// TestHostPolicyYAML: the host policy reads from edge.yaml, "*" or a list for forward, and an
// unknown field is an error.
func TestHostPolicyYAML(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		wantErr bool
		want    wire.HeaderNames
	}{
		{"star", `{forward: "*", deny: [Referer], set: {X-Edge: "1"}}`, false, wire.HeaderNames{"*"}},
		{"list", `{forward: [X-Api-Key]}`, false, wire.HeaderNames{"X-Api-Key"}},
		{"unknown field", `{forwad: [X-Api-Key]}`, true, nil},
		{"bad forward", `{forward: X-Api-Key}`, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := t.TempDir() + "/edge.yaml"
			yaml := "hosts:\n  - host: www.example.com\n    origin: http://127.0.0.1:8080\n    cookies: pass\n    request_headers: " + tt.policy + "\n"
			if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("LoadConfig error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			h := c.Hosts[0]
			if !slices.Equal(h.RequestHeaders.Forward, tt.want) || h.Cookies != wire.CookiesPass {
				t.Errorf("forward = %q, cookies = %q; want %q, pass", h.RequestHeaders.Forward, h.Cookies, tt.want)
			}
		})
	}
}

// TestLargeBodyBufferedToFile: a body over request_buffer_bytes is buffered in a temporary
// file, reaches the origin whole with its length, and the file is gone afterwards.
func TestLargeBodyBufferedToFile(t *testing.T) {
	dir := t.TempDir()
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %d %s", r.ContentLength, len(b), b[len(b)-3:])
	}, nil, func(c *Config) {
		c.RequestBufferBytes = 1024
		c.RequestBufferDir = dir
	})
	tests := []struct {
		name string
		size int
	}{
		{"in memory", 1000},
		{"in a file", 200 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("x", tt.size-3) + "end"
			// Chunked from the client: the edge learns the length only by reading it all.
			req, _ := http.NewRequest(http.MethodPost, "http://"+n.Addr()+"/up", io.MultiReader(strings.NewReader(body)))
			req.Host = testHost
			r, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if want := fmt.Sprintf("%d %d end", tt.size, tt.size); string(got) != want {
				t.Errorf("origin saw %q, want %q", got, want)
			}
			// The handler removes the file as it returns, just after the answer went out.
			wait.For(t, 5*time.Second, "the buffer file removed", func() bool {
				left, _ := os.ReadDir(dir)
				return len(left) == 0
			})
		})
	}
}

// TestBodyBufferFailureIs500: a body the edge cannot buffer for a fault of its own (its
// request_buffer_dir gone, or full) gets a 500, as from nginx, and never reaches the origin.
// It got 400 Bad Request, which tells the client its request was malformed; a body that is
// one (cut short) still gets 400.
func TestBodyBufferFailureIs500(t *testing.T) {
	dir := t.TempDir()
	var posts atomic.Int64
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) { posts.Add(1) }, nil, func(c *Config) {
		c.RequestBufferBytes = 1024
		c.RequestBufferDir = dir
	})
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.Addr()+"/up", strings.NewReader(strings.Repeat("x", 64<<10)))
	req.Host = testHost
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusInternalServerError {
		t.Errorf("POST whose body the edge cannot buffer = %d, want 500", r.StatusCode)
	}
	// A body shorter than its Content-Length is the client's fault, also past what is kept in
	// memory (its read fails as the file is written).
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: 4096\r\n\r\n%s", testHost, strings.Repeat("x", 2000))
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST cut short = %d, want 400", resp.StatusCode)
	}
	if got := posts.Load(); got != 0 {
		t.Errorf("origin saw %d POSTs, want none", got)
	}
}

// TestFillOwnedByNode: a fill whose only client went away keeps running under the node's
// context, and the node's shutdown ends it and waits for it.
func TestFillOwnedByNode(t *testing.T) {
	arrived := make(chan struct{})
	ended := make(chan struct{})
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(ended)
		case <-time.After(10 * time.Second):
		}
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	n, stop := startEdge(t, listen(t, "127.0.0.21"), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr()+"/slow", nil)
		req.Host = testHost
		if r, err := http.DefaultTransport.RoundTrip(req); err == nil {
			r.Body.Close()
		}
	}()
	<-arrived
	cancel()
	<-done
	wait.For(t, 5*time.Second, "the edge to see the client leave", func() bool { return n.openConns.Load() == 0 })
	select {
	case <-ended:
		t.Fatalf("the fill ended with its client")
	default:
	}
	stop()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatalf("shutdown returned but the origin never saw the fill end")
	}
}

// TestClientGoneOnKeptConnection: on a kept-alive HTTP/1.1 connection whose first request ran
// long (so that the connection joined edge/http1's hangup watch, and its later requests start
// no watch of their own), a client that goes away during a later miss is heard at once: its
// connection closes while the fill, under the node's context, finishes and stores the answer.
func TestClientGoneOnKeptConnection(t *testing.T) {
	arrived := make(chan string, 2)
	release := make(chan struct{})
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.URL.Path
		if r.URL.Path == "/second" {
			<-release
		} else {
			time.Sleep(20 * time.Millisecond) // past edge/http1's 5 ms: the connection joins the watch
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "body of "+r.URL.Path)
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	n, _ := startEdge(t, listen(t, "127.0.0.21"), cfg)
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /first HTTP/1.1\r\nHost: %s\r\n\r\n", testHost)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	<-arrived
	fmt.Fprintf(c, "GET /second HTTP/1.1\r\nHost: %s\r\n\r\n", testHost)
	<-arrived
	c.Close()
	wait.For(t, 5*time.Second, "the edge to see the client leave", func() bool { return n.openConns.Load() == 0 })
	close(release)
	hc := &http.Client{Timeout: 10 * time.Second}
	wait.For(t, 5*time.Second, "the fill to store /second", func() bool {
		r := do(t, hc, http.MethodGet, n.Addr(), testHost, "/second")
		return strings.Contains(r.header.Get("Cache-Status"), "hit") && r.body == "body of /second"
	})
	select {
	case p := <-arrived:
		t.Errorf("the origin was asked for %s again", p)
	default:
	}
}

// TestResponseViaKept: an answer that came through proxies keeps every Via line they added,
// in order, with this node's hop after them, when served fresh and from cache.
func TestResponseViaKept(t *testing.T) {
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Via"] = []string{"1.1 origin-proxy", "1.0 inner"}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "v")
	}, nil, nil)
	for _, want := range []string{"miss", "hit"} {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, "/via")
		wantCacheStatus(t, r, want)
		if got := r.header.Get("Via"); got != "1.1 origin-proxy, 1.0 inner, 1.1 tst-e1" {
			t.Errorf("Via of a %s = %q, want the upstream's two hops and this node's", want, got)
		}
	}
}

// TestPassDropsOriginAltSvc: an origin's Alt-Svc names the origin's endpoints, not the edge's,
// and never reaches a client, on a pass as on a fill: a client would otherwise take HTTP/3 (or
// "clear") from the origin, also from an edge that does not serve HTTP/3 at all.
func TestPassDropsOriginAltSvc(t *testing.T) {
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", `h3="origin.internal:443"; ma=2592000`)
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	}, func(h *wire.HostConfig) { h.Cookies = "pass" }, nil)
	for _, tt := range []struct {
		name, method string
		hdr          []string
	}{
		{"POST", http.MethodPost, nil},
		{"GET with a cookie passed", http.MethodGet, []string{"Cookie", "a=1"}},
		{"GET filled", http.MethodGet, nil},
	} {
		r := do(t, c, tt.method, n.Addr(), testHost, "/alt", tt.hdr...)
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d", tt.name, r.status)
		}
		if got := r.header.Values("Alt-Svc"); len(got) != 0 {
			t.Errorf("%s: Alt-Svc %q reached the client", tt.name, got)
		}
	}
}

// TestUpgradeEarlyDataForwarded: bytes a client sends right behind its upgrade's head, before
// the 101 (early data), reach the origin ahead of the rest of the tunnel, unchanged, as nginx
// forwards what it read past the head. net/http hands them to the hijacker in the
// bufio.Reader Hijack returns, which ReverseProxy ignores (golang issue 80875): they were lost.
func TestUpgradeEarlyDataForwarded(t *testing.T) {
	// A masked text frame "hello" (RFC 6455 §5.2), and an HTTP/1.0 head with
	// Transfer-Encoding, whose colon the guard beneath net/http (http1.GuardConn), following
	// what net/http read ahead as the request it would be were the upgrade not switched,
	// marks: in a tunnel's bytes it is put back (http1.Unmark).
	frame := []byte{0x81, 0x85, 1, 2, 3, 4}
	for i, b := range []byte("hello") {
		frame = append(frame, b^frame[2+i%4])
	}
	te := "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	origin := webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) {
		got, err := io.ReadAll(brw) // to the client's end, passed on by the edge
		if err != nil {
			return
		}
		fmt.Fprintf(conn, "got %q", got)
	})
	// dial connects to an edge serving under http1 mode, or over TLS.
	dial := func(t *testing.T, mode string) net.Conn {
		if mode == "tls" {
			originAddr := startHTTP(t, "127.0.0.20", origin)
			_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
				c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
			})
			cfg := insecure(testHost)
			cfg.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", n.HTTPSAddr(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		n, _ := echoEdge(t, origin, nil, func(c *Config) { c.HTTP1 = mode })
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, mode := range []string{HTTP1Fast, HTTP1Std, "tls"} {
		for _, early := range []struct{ name, bytes string }{{"frame", string(frame)}, {"HTTP/1.0 head", te}} {
			t.Run(mode+"/"+early.name, func(t *testing.T) {
				conn := dial(t, mode)
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				// One write: the early bytes arrive with the head, read ahead with it.
				fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
					"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n%s", testHost, early.bytes)
				br := bufio.NewReader(conn)
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
				}
				io.WriteString(conn, "after")
				if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				rest, err := io.ReadAll(br)
				if want := fmt.Sprintf("got %q", early.bytes+"after"); string(rest) != want {
					t.Errorf("the origin sent %q (%v), want %q", rest, err, want)
				}
			})
		}
	}
}

// webSocketOrigin is an origin that switches every request to WebSocket (101) and then runs
// tunnel on the hijacked connection, closed after it.
func webSocketOrigin(tunnel func(conn net.Conn, brw *bufio.ReadWriter)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		tunnel(conn, brw)
	}
}
