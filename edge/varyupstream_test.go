package edge

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// getURL is do for a whole URL (an https one), with header pairs.
func getURL(t *testing.T, c *http.Client, url string, hdr ...string) resp {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = testHost
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp{status: r.StatusCode, header: r.Header, body: string(b)}
}

// variantBody is the reference origin's body of path (size 100) for a request whose fields
// named in vary were h's.
func variantBody(path string, vary []string, h http.Header) string {
	return string(origin.Body(origin.VariantPath(path, vary, h), 1, 100))
}

// TestVaryOnForwardedProto: the scheme is not part of the key, but an origin that answers by
// the X-Forwarded-Proto the edge sends (an http-to-https redirect) and says so in Vary gets an
// answer stored per scheme: the variant is the field as the origin saw it, set by the edge
// from the client's connection. Keyed on the client's own field (which browsers never send),
// the answer for http was served to every https client: a redirect loop. A client that forges
// the field over http is served the answer for http, as its fill would have got, whether the
// answer came from a shared fill or from a fill for one client (Authorization, public answer).
func TestVaryOnForwardedProto(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first []string // the fields of the plain-http request that fills
	}{
		{"shared fill", nil},
		{"fill for one client", []string{"Authorization", "Bearer a"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, n := tlsEdge(t, TLSConfig{Dev: true})
			path, vary := "/scheme", []string{"X-Forwarded-Proto"}
			target := obj(path, "size", "100", "cc", "public, max-age=60", "vary", "X-Forwarded-Proto")
			body := func(proto string) string { return variantBody(path, vary, http.Header{"X-Forwarded-Proto": {proto}}) }
			h1tls := insecure(testHost)
			h1tls.NextProtos = []string{"http/1.1"}
			h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
			t.Cleanup(func() { h3t.Close() })
			clients := map[string]*http.Client{
				"http":  {},
				"https": {Transport: &http.Transport{TLSClientConfig: h1tls}},
				"h2":    {Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}},
				"h3":    {Transport: h3t},
			}
			for _, c := range clients {
				t.Cleanup(c.CloseIdleConnections)
			}
			plainURL, tlsURL := "http://"+n.Addr()+target, "https://"+n.HTTPSAddr()+target

			first := getURL(t, clients["http"], plainURL, tt.first...)
			wantCacheStatus(t, first, "fwd=miss", "stored")
			if first.body != body("http") {
				t.Fatalf("the http client got another variant than http's")
			}
			secure := getURL(t, clients["https"], tlsURL)
			wantCacheStatus(t, secure, "fwd=vary-miss", "stored")
			if secure.body != body("https") {
				t.Errorf("the https client got the answer for http")
			}
			for _, c := range []struct {
				client, url string
				hdr         []string
				want        string
			}{
				{"http", plainURL, nil, "http"},
				{"http", plainURL, []string{"X-Forwarded-Proto", "https"}, "http"}, // forged: not what the origin sees
				{"https", tlsURL, nil, "https"},
				{"h2", tlsURL, nil, "https"},
				{"h3", tlsURL, nil, "https"},
			} {
				r := getURL(t, clients[c.client], c.url, c.hdr...)
				wantCacheStatus(t, r, "hit")
				if r.body != body(c.want) {
					t.Errorf("%s client sending %q: got another answer than %s's", c.client, c.hdr, c.want)
				}
			}
			if got := s.origin.Requests(path); got != 2 {
				t.Errorf("origin requests = %d, want 2: one per scheme", got)
			}
		})
	}
}

// clientFrom is an HTTP client whose connections come from ip.
func clientFrom(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestVaryOnForwardedFor: an answer whose Vary names X-Forwarded-For is the answer for the
// address the edge forwards, the client's own: two clients get an answer each, and a client's
// forged field (the edge does not trust it) selects nothing. Keyed on the client's field, absent
// for both, the first client's answer was served to the other. Stale, each copy is revalidated
// as its own variant.
func TestVaryOnForwardedFor(t *testing.T) {
	s := newSingle(t, nil)
	path, vary := "/by-address", []string{"X-Forwarded-For"}
	target := obj(path, "size", "100", "cc", "max-age=60", "vary", "X-Forwarded-For")
	body := func(ip string) string { return variantBody(path, vary, http.Header{"X-Forwarded-For": {ip}}) }
	from := map[string]*http.Client{"127.0.0.2": clientFrom(t, "127.0.0.2"), "127.0.0.3": clientFrom(t, "127.0.0.3")}
	get := func(ip string, hdr ...string) resp {
		t.Helper()
		return do(t, from[ip], http.MethodGet, s.edge.Addr(), testHost, target, hdr...)
	}
	a := get("127.0.0.2")
	wantCacheStatus(t, a, "fwd=miss", "stored")
	if a.body != body("127.0.0.2") {
		t.Fatalf("127.0.0.2 got another answer than its own")
	}
	b := get("127.0.0.3")
	wantCacheStatus(t, b, "fwd=vary-miss", "stored")
	if b.body != body("127.0.0.3") {
		t.Errorf("127.0.0.3 got another client's answer")
	}
	for _, c := range []struct {
		ip  string
		hdr []string
	}{
		{"127.0.0.2", nil},
		{"127.0.0.3", nil},
		{"127.0.0.2", []string{"X-Forwarded-For", "127.0.0.3"}},
	} {
		r := get(c.ip, c.hdr...)
		wantCacheStatus(t, r, "hit")
		if r.body != body(c.ip) {
			t.Errorf("%s sending %q got another client's answer", c.ip, c.hdr)
		}
	}
	if got := s.origin.Requests(path); got != 2 {
		t.Errorf("origin requests = %d, want 2: one per address", got)
	}
	s.clock.Advance(61 * time.Second)
	for _, ip := range []string{"127.0.0.3", "127.0.0.2"} {
		wantCacheStatus(t, get(ip), "fwd=stale", "fwd-status=304")
		if r := get(ip); !strings.Contains(r.header.Get("Cache-Status"), "hit") || r.body != body(ip) {
			t.Errorf("%s after revalidation: %q, its own answer: %v", ip, r.header.Get("Cache-Status"), r.body == body(ip))
		}
	}
}

// notForwarded are host policies under which the client's X-Foo (or the field named) never
// reaches the origin as sent, and what the origin gets instead ("" for nothing).
var notForwarded = []struct {
	name   string
	field  string
	host   func(*wire.HostConfig)
	origin string
}{
	{"forward list without it", "X-Foo", func(h *wire.HostConfig) { h.RequestHeaders.Forward = wire.HeaderNames{"X-Custom"} }, ""},
	{"deny list", "X-Foo", func(h *wire.HostConfig) { h.RequestHeaders.Deny = []string{"x-foo"} }, ""},
	{"set", "X-Foo", func(h *wire.HostConfig) { h.RequestHeaders.Set = map[string]string{"X-Foo": "edge"} }, "edge"},
	{"shared-fill deny list", "X-Original-Url", nil, ""},
	{"a fill's own field", "Pragma", nil, ""},
	// A forward list that names a field of fillDeny sends it, unless deny or set say otherwise.
	{"forwarded shared-fill deny field, set", "X-Original-Url", func(h *wire.HostConfig) {
		h.RequestHeaders.Forward = wire.HeaderNames{"X-Original-URL"}
		h.RequestHeaders.Set = map[string]string{"x-original-url": "edge"}
	}, "edge"},
	{"forwarded shared-fill deny field, denied", "X-Original-Url", func(h *wire.HostConfig) {
		h.RequestHeaders.Forward = wire.HeaderNames{"X-Original-URL"}
		h.RequestHeaders.Deny = []string{"X-Original-URL"}
	}, ""},
}

// TestVaryOnFieldNotForwarded: an answer whose Vary names a field the edge does not send as
// the client sent it (request_headers forward, deny, set; fillDeny; fillOwn) is the answer for
// what the origin got, whatever the client sent: one fill, one variant, every client served
// it. Keyed on the client's values, each value filled a variant of its own, up to the 32 a URL
// may hold.
func TestVaryOnFieldNotForwarded(t *testing.T) {
	for _, tt := range notForwarded {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) {
				if tt.host != nil {
					tt.host(&c.Hosts[0])
				}
			})
			path, vary := "/not-forwarded", []string{tt.field}
			target := obj(path, "size", "100", "cc", "max-age=60", "vary", tt.field)
			want := variantBody(path, vary, http.Header{tt.field: {tt.origin}})
			if tt.origin == "" {
				want = variantBody(path, vary, nil)
			}
			first := s.get(t, target, tt.field, "a")
			wantCacheStatus(t, first, "fwd=miss", "stored")
			if got := s.origin.LastHeader(path).Get(tt.field); got != tt.origin {
				t.Fatalf("origin got %s %q, want %q", tt.field, got, tt.origin)
			}
			for _, hdr := range [][]string{{tt.field, "b"}, nil, {tt.field, "a"}} {
				r := s.get(t, target, hdr...)
				wantCacheStatus(t, r, "hit")
				if r.body != want {
					t.Errorf("a client sending %q got another answer than the origin's for %q", hdr, tt.origin)
				}
			}
			if got := s.origin.Requests(path); got != 1 {
				t.Errorf("origin requests = %d, want 1", got)
			}
		})
	}
}

// TestVaryOnFieldNotForwardedCollapsed: clients that ask at once with different values of a
// field the host does not forward share one fill, whichever of them leads it: a follower does
// not fill its "own" variant again.
func TestVaryOnFieldNotForwardedCollapsed(t *testing.T) {
	checkUnsentVaryFieldCollapsed(t, "X-Foo", []string{"a", "b", "", "c"},
		wire.RequestHeaders{Forward: wire.HeaderNames{"X-Custom"}})
}

// checkUnsentVaryFieldCollapsed: clients asking at once with values[:len-1] of field (""
// for none), which the fill never sends upstream, share one fill of an answer whose Vary names
// field; a later client with the last value is a hit.
func checkUnsentVaryFieldCollapsed(t *testing.T, field string, values []string, rh wire.RequestHeaders) {
	t.Helper()
	var requests atomic.Int32
	release := make(chan struct{})
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			<-release // the others join this fill meanwhile
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", field)
		fmt.Fprintf(w, "%s=%s", field, r.Header.Get(field))
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr, RequestHeaders: rh}}})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: len(values)}}
	t.Cleanup(c.CloseIdleConnections)
	path := "/collapse-unsent-" + field
	asking := values[:len(values)-1]
	got := collapsedClients(t, c, n, path, len(asking), &requests, release, func(i int) []string {
		if asking[i] == "" {
			return nil
		}
		return []string{field, asking[i]}
	})
	for i, r := range got {
		if r.status != http.StatusOK || r.body != field+"=" {
			t.Errorf("client with %s %q: %d %q, want 200 %s=", field, asking[i], r.status, r.body, field)
		}
	}
	if got := requests.Load(); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
	wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, path, field, values[len(values)-1]), "hit")
}

// TestVaryOnAuthorizationDirectFill: a request with Authorization is filled for its client alone,
// with its credentials; a public answer whose Vary names Authorization is stored as the variant
// for those credentials, which a shared fill never sends. It must never be served to a client
// without them, though a shared fill's view of the request has no Authorization either.
func TestVaryOnAuthorizationDirectFill(t *testing.T) {
	for _, varyOn := range []string{"Authorization", "Authorization, Accept-Language", "Authorization, X-Forwarded-Proto"} {
		t.Run(varyOn, func(t *testing.T) {
			s := newSingle(t, nil)
			path := "/credentials"
			target := obj(path, "size", "100", "cc", "public, max-age=60", "vary", varyOn)
			authed := s.get(t, target, "Authorization", "Bearer a", "Accept-Language", "de")
			wantCacheStatus(t, authed, "fwd=miss", "stored")
			anon := s.get(t, target, "Accept-Language", "de")
			wantCacheStatus(t, anon, "fwd=vary-miss")
			if anon.body == authed.body {
				t.Fatalf("a client without Authorization got the answer for Bearer a")
			}
			again := s.get(t, target, "Accept-Language", "de")
			wantCacheStatus(t, again, "hit")
			if again.body != anon.body {
				t.Errorf("the second client without Authorization got another answer than the first")
			}
			if got := s.origin.Requests(path); got != 2 {
				t.Errorf("origin requests = %d, want 2", got)
			}
		})
	}
}

// TestUpstreamSetsMatchesUpstreamHeader: a field upstreamSets says a shared fill sends as the
// client sent it is keyed on the client's request: upstreamHeader must send it so, for every
// host policy and trust, or a lookup would select a variant by a value the origin never saw.
// The fields a Vary usually names are among them, so that their hits build nothing.
func TestUpstreamSetsMatchesUpstreamHeader(t *testing.T) {
	hosts := []struct {
		name   string
		policy wire.RequestHeaders
		sets   []string // lower-case names it must report set, beside the ones every host sets
	}{
		{"default", wire.RequestHeaders{}, nil},
		{"forward list", wire.RequestHeaders{Forward: wire.HeaderNames{"X-Custom", "X-Original-URL"}}, []string{"referer", "user-agent", "origin"}},
		{"deny and set", wire.RequestHeaders{Deny: []string{"Referer"}, Set: map[string]string{"x-edge": "1"}}, []string{"referer", "x-edge"}},
	}
	every := []string{"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-scheme", "forwarded",
		"via", "traceparent", "authorization", "pragma", "cache-control", "range", "if-none-match", "x-rewrite-url"}
	names := []string{"Accept-Encoding", "Accept-Language", "Accept", "User-Agent", "Origin", "Cookie", "Referer",
		"X-Custom", "X-Edge", "Tracestate", "Sec-Ch-Ua", "Te", "Upgrade"}
	names = append(append(append(names, fillOwn...), fillDeny...), protocolFields...)
	for _, f := range every {
		names = append(names, http.CanonicalHeaderKey(f))
	}
	for _, h := range hosts {
		for _, trusted := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/trusted=%v", h.name, trusted), func(t *testing.T) {
				s := newSingle(t, func(c *Config) {
					c.Hosts[0].RequestHeaders = h.policy
					if trusted {
						c.TrustedProxies = []string{"192.0.2.0/24"}
					}
				})
				hs := (*s.edge.hosts.Load())[testHost]
				for _, want := range append(every, h.sets...) {
					if !hs.setsField(want) {
						t.Errorf("setsField(%q) = false, want true", want)
					}
				}
				if h.name == "default" {
					for _, name := range []string{"accept-encoding", "accept-language", "accept", "user-agent", "origin", "cookie", "x-custom"} {
						if hs.setsField(name) {
							t.Errorf("setsField(%q) = true: a hit of a URL that varies by it would build the upstream header", name)
						}
					}
				}
				for _, name := range names {
					lower := strings.ToLower(name)
					if hs.setsField(lower) {
						continue
					}
					for _, value := range []string{"v1", ""} {
						r := httptest.NewRequest(http.MethodGet, "http://"+testHost+"/a", nil)
						r.RemoteAddr = "192.0.2.7:1234"
						r.Header = http.Header{}
						switch {
						case value == "" && (name == "Accept-Encoding" || name == "User-Agent"):
							continue // absent: upstreamHeader asks for identity, or sends no User-Agent
						case value != "" && name == "Cookie":
							continue // serveCacheable removes it before anything is looked up or filled
						case value != "":
							r.Header[name] = []string{value}
						}
						req := &request{r: r, host: hs, target: "/a", path: "/a"}
						up := s.edge.upstreamHeader(req, sharedFill, 0)
						vary := []string{lower}
						if got, want := httpcache.VaryKey(vary, up), httpcache.VaryKey(vary, r.Header); got != want {
							t.Errorf("%s %q: keyed %q on the client's request, but the fill sends %q", name, value, want, got)
						}
					}
				}
			})
		}
	}
}

// TestVaryHitAllocations: a hit of a URL whose Vary names only fields forwarded as the client
// sent them (the usual ones) allocates what a hit without a Vary does, and its Vary key: it
// builds no upstream header.
func TestVaryHitAllocations(t *testing.T) {
	hit := func(t *testing.T, vary string, hdr ...string) float64 {
		s := newSingle(t, nil)
		p := obj("/allocs", "cc", "max-age=3600", "size", "1024", "vary", vary)
		for range 2 {
			if r := s.get(t, p, hdr...); r.status != 200 {
				t.Fatalf("warm-up GET: %d", r.status)
			}
		}
		req := httptest.NewRequest(http.MethodGet, p, nil)
		req.Host = testHost
		w := &discardWriter{h: http.Header{}}
		fields := http.Header{}
		for i := 0; i+1 < len(hdr); i += 2 {
			fields[hdr[i]] = []string{hdr[i+1]}
		}
		return testing.AllocsPerRun(100, func() {
			clear(w.h)
			maps.Copy(req.Header, fields) // the edge rewrites some as the request arrives
			s.edge.ServeHTTP(w, req)
			if cs := w.h["Cache-Status"]; w.status != 200 || len(cs) != 1 || !strings.Contains(cs[0], "hit") {
				t.Fatalf("status %d, Cache-Status %q", w.status, cs)
			}
		})
	}
	base := hit(t, "")
	for _, vary := range []string{"Accept-Encoding", "Accept-Language", "Accept", "User-Agent", "Origin", "Cookie",
		"Accept-Encoding, Accept-Language, Origin"} {
		t.Run(vary, func(t *testing.T) {
			got := hit(t, vary, "Accept-Encoding", "gzip, br", "Accept-Language", "de", "Accept", "text/html",
				"User-Agent", "curl/8", "Origin", "https://a.example")
			if got > base+1 {
				t.Errorf("a hit varying by %s: %v allocations, want at most %v (without a Vary, and the key)", vary, got, base+1)
			}
		})
	}
}

// TestVaryOnCodingNotForwarded: the edge codes a compressible answer in the coding its client
// asked for and adds Vary: Accept-Encoding, a variant per coding, even on a host whose
// request_headers deny or set Accept-Encoding (the origin then gets none, or the host's): the
// stored coding is the client's, so the key is too. Keyed on what the origin got, every client
// shared the first one's variant, and a client that accepts no coding was served br.
func TestVaryOnCodingNotForwarded(t *testing.T) {
	for _, tt := range []struct {
		name string
		rh   wire.RequestHeaders
		vary string // the origin's own Vary, beside the edge's Accept-Encoding
	}{
		{"deny", wire.RequestHeaders{Deny: []string{"Accept-Encoding"}}, ""},
		{"set", wire.RequestHeaders{Set: map[string]string{"accept-encoding": "identity"}}, ""},
		{"deny, with an edge-set field", wire.RequestHeaders{Deny: []string{"accept-encoding"}}, "X-Forwarded-Proto"},
		{"default, with an edge-set field", wire.RequestHeaders{}, "X-Forwarded-Proto"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.Hosts[0].RequestHeaders = tt.rh })
			path := "/coded"
			params := []string{"size", "20000", "ct", "text/plain", "cc", "max-age=60"}
			if tt.vary != "" {
				params = append(params, "vary", tt.vary)
			}
			target := obj(path, params...)
			want := origin.Body(path, 1, 20000)
			if tt.vary != "" {
				want = origin.Body(origin.VariantPath(path, []string{tt.vary}, http.Header{tt.vary: {"http"}}), 1, 20000)
			}
			for _, c := range []struct{ ae, coding, cs string }{
				{"br", "br", "fwd=miss"},
				{"identity", "", "fwd=vary-miss"},
				{"gzip", "gzip", "fwd=vary-miss"},
				{"br", "br", "hit"},
				{"identity", "", "hit"},
			} {
				r := s.get(t, target, "Accept-Encoding", c.ae)
				wantCacheStatus(t, r, c.cs)
				if got := r.header.Get("Content-Encoding"); got != c.coding {
					t.Fatalf("a client accepting %s got Content-Encoding %q, want %q", c.ae, got, c.coding)
				}
				if got := decodeBody(t, c.coding, []byte(r.body)); string(got) != string(want) {
					t.Fatalf("a client accepting %s: decoded body differs from the origin's", c.ae)
				}
			}
			if got := s.origin.Requests(path); got != 3 {
				t.Errorf("origin requests = %d, want 3: one per coding", got)
			}
		})
	}
}

// TestURLPurgeHitsVaryingURL: a URL purge counts a URL the store holds whatever variants it
// holds. Looked up as a request without fields, a URL whose variants are keyed on a field the
// edge always sets (X-Forwarded-Proto), or on one its clients all sent, counted as not cached.
func TestURLPurgeHitsVaryingURL(t *testing.T) {
	s := newSingle(t, nil)
	for _, tt := range []struct {
		vary string
		hdr  []string
	}{
		{"X-Forwarded-Proto", nil},
		{"Accept-Language", []string{"Accept-Language", "de"}},
		{"", nil},
	} {
		path := "/purged-" + strings.ToLower(tt.vary)
		target := obj(path, "size", "100", "cc", "max-age=60", "vary", tt.vary)
		wantCacheStatus(t, s.get(t, target, tt.hdr...), "stored")
		url := strings.TrimPrefix(s.edge.key(target), testHost)
		m := purge.Message{ID: "p", Host: testHost, Kind: purge.KindURL, Values: []string{url}}
		for _, want := range []int{1, 0} { // then purged: gone
			if hits, err := s.edge.ApplyPurge(context.Background(), m); err != nil || hits != want {
				t.Errorf("Vary %q: URL purge of %s: %d hits, %v; want %d", tt.vary, url, hits, err, want)
			}
		}
	}
}
