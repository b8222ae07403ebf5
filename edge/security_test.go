package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// raw sends bytes on a fresh connection and reads every response until the server closes the
// connection or goes quiet.
func raw(t *testing.T, addr, payload string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	// The first answer may be slow on a busy machine; after it, a second of quiet ends the read.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var out []*http.Response
	for {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		out = append(out, r)
		c.SetReadDeadline(time.Now().Add(time.Second))
	}
}

func TestBadRequests(t *testing.T) {
	s := newSingle(t, nil)
	big := strings.Repeat("a", 80<<10)
	tests := []struct {
		name    string
		payload string
		want    int // status of the first response
		// maxResponses bounds how many responses the connection may produce: a smuggled
		// second request must never be answered.
		maxResponses int
		originSees   int64
	}{
		{"unknown host", "GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421, 1, 0},
		{"missing host", "GET /x HTTP/1.1\r\n\r\n", 400, 1, 0},
		{"absolute-form to a foreign host", "GET http://evil.example/x HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", 421, 1, 0},
		{"dot-dot segment", "GET /a/../b HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", 400, 1, 0},
		{"encoded dot-dot segment", "GET /a/%2e%2e/b HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", 400, 1, 0},
		{"oversized header", "GET /x HTTP/1.1\r\nHost: " + testHost + "\r\nX-Big: " + big + "\r\n\r\n", 431, 1, 0},
		{"duplicate content-length", "POST /x HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, 1, 0},
		// Transfer-Encoding wins and the connection closes: the smuggled GET is never read.
		{"content-length with transfer-encoding", "POST /x HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", 204, 1, 1},
		{"bad transfer-encoding", "POST /x HTTP/1.1\r\nHost: " + testHost + "\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.origin.Total()
			rs := raw(t, s.edge.Addr(), tt.payload)
			if len(rs) == 0 {
				t.Fatalf("no response")
			}
			if rs[0].StatusCode != tt.want {
				t.Errorf("status = %d, want %d", rs[0].StatusCode, tt.want)
			}
			if len(rs) > tt.maxResponses {
				t.Errorf("got %d responses on one connection, want at most %d (smuggled request answered)", len(rs), tt.maxResponses)
			}
			if got := s.origin.Total() - before; got != tt.originSees {
				t.Errorf("origin saw %d requests, want %d", got, tt.originSees)
			}
			if got := s.origin.Requests("/smuggled"); got != 0 {
				t.Errorf("origin saw the smuggled request")
			}
		})
	}
}

// TestAbsoluteFormWithoutPath: an absolute-form target with an empty path (GET
// http://host HTTP/1.1) is for "/" (RFC 9110 §4.2.3: an empty path is equivalent to "/"), as
// nginx and the reference origin read it. The edge answered 400 "bad request target".
func TestAbsoluteFormWithoutPath(t *testing.T) {
	s := newSingle(t, nil)
	for _, tt := range []struct {
		method, target string
		want           int
	}{
		{"GET", "http://" + testHost, http.StatusOK},
		{"GET", "http://" + testHost + "?v=2", http.StatusOK},
		{"HEAD", "http://" + testHost + ":80?v=3", http.StatusOK},
		{"POST", "http://" + testHost, http.StatusNoContent},
	} {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			before := s.origin.Requests("/")
			rs := raw(t, s.edge.Addr(), tt.method+" "+tt.target+" HTTP/1.1\r\nHost: "+testHost+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			if len(rs) != 1 || rs[0].StatusCode != tt.want {
				var got []int
				for _, r := range rs {
					got = append(got, r.StatusCode)
				}
				t.Fatalf("%s %s: statuses %v, want one %d", tt.method, tt.target, got, tt.want)
			}
			if got := s.origin.Requests("/") - before; got != 1 {
				t.Errorf("%s %s: the origin saw %d requests for /, want 1", tt.method, tt.target, got)
			}
		})
	}
}

// TestAbsoluteFormOptionsWithoutPath: OPTIONS with an absolute-form target that has neither
// path nor query (OPTIONS http://host) is the server-wide OPTIONS *, not one for "/" (RFC 9112
// §3.2.4: the last proxy forwards it as "*"). The edge does not forward an asterisk-form
// target; it answers OPTIONS * itself (200, empty, as net/http does), so this one too: it
// went to the origin as OPTIONS /, a question about another resource. With a query, the
// target's path is "/" like any other method's.
func TestAbsoluteFormOptionsWithoutPath(t *testing.T) {
	s := newSingle(t, nil)
	for _, tt := range []struct {
		target     string
		want       int
		originSees int64 // requests for /
	}{
		{"http://" + testHost, http.StatusOK, 0},
		{"http://" + testHost + ":80", http.StatusOK, 0},
		{"http://" + testHost + "?v=1", 0, 1},
	} {
		t.Run(tt.target, func(t *testing.T) {
			before, total := s.origin.Requests("/"), s.origin.Total()
			rs := raw(t, s.edge.Addr(), "OPTIONS "+tt.target+" HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: close\r\n\r\n")
			if len(rs) != 1 || tt.want != 0 && rs[0].StatusCode != tt.want {
				var got []int
				for _, r := range rs {
					got = append(got, r.StatusCode)
				}
				t.Fatalf("OPTIONS %s: statuses %v, want one %d", tt.target, got, tt.want)
			}
			if got := s.origin.Requests("/") - before; got != tt.originSees {
				t.Errorf("OPTIONS %s: the origin saw %d requests for / (%d in all), want %d", tt.target, got, s.origin.Total()-total, tt.originSees)
			}
		})
	}
}

// TestUnkeyedHeadersDoNotPoison: the fields that make an origin build an answer for another
// host, URL or method never reach a shared fill from a client (docs/edge.md), so the answer a
// clean client gets from cache is the clean one.
func TestUnkeyedHeadersDoNotPoison(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/poison", "cc", "max-age=60")
	s.get(t, p, "X-Forwarded-Host", "evil.example", "X-Original-URL", "/admin", "X-Forwarded-Scheme", "nothttp",
		"Forwarded", "host=evil.example;proto=https", "X-Rewrite-URL", "/admin", "X-HTTP-Method-Override", "DELETE")
	got := s.origin.LastHeader("/poison")
	for _, k := range []string{"X-Original-Url", "X-Forwarded-Scheme", "X-Rewrite-Url", "X-Http-Method-Override"} {
		if v := got.Get(k); v != "" {
			t.Errorf("origin received %s: %q; it must not reach a shared fill", k, v)
		}
	}
	// The forwarding fields are the edge's own view: the configured host, never the client's.
	if v := got.Get("X-Forwarded-Host"); v != testHost {
		t.Errorf("origin received X-Forwarded-Host %q, want %q", v, testHost)
	}
	if v := strings.Join(got.Values("Forwarded"), ", "); strings.Contains(v, "evil") {
		t.Errorf("origin received the client's Forwarded: %q", v)
	}
	clean := s.get(t, p)
	wantCacheStatus(t, clean, "hit")
	if !strings.HasPrefix(clean.body, "/poison@v1:") {
		t.Errorf("clean request got %q", clean.body[:20])
	}
}

func TestForwardingHeadersAndTrace(t *testing.T) {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name      string
		trusted   []string
		wantXFF   string
		wantFwd   string
		wantAgent string
	}{
		{"client replaced", nil, "127.0.0.1", "for=127.0.0.1;host=" + testHost + ";proto=http", "test-agent/1"},
		{"trusted proxy appended", []string{"127.0.0.0/8"}, "192.0.2.1, 127.0.0.1",
			"for=192.0.2.1, for=127.0.0.1;host=" + testHost + ";proto=http", "test-agent/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.TrustedProxies = tt.trusted })
			s.get(t, obj("/trace", "cc", "max-age=60"), "Traceparent", tp, "X-Forwarded-For", "192.0.2.1",
				"Forwarded", "for=192.0.2.1", "User-Agent", "test-agent/1")
			h := s.origin.LastHeader("/trace")
			if got := h.Get("Traceparent"); got != tp {
				t.Errorf("origin traceparent = %q, want %q", got, tp)
			}
			if got := h.Get("X-Forwarded-For"); got != tt.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tt.wantXFF)
			}
			if got := h.Get("Forwarded"); got != tt.wantFwd {
				t.Errorf("Forwarded = %q, want %q", got, tt.wantFwd)
			}
			if got := h.Get("Via"); got != "1.1 tst-e1" {
				t.Errorf("Via = %q, want the node", got)
			}
			if got := h.Get("User-Agent"); got != tt.wantAgent {
				t.Errorf("User-Agent = %q, want the client's %q", got, tt.wantAgent)
			}
			s.get(t, obj("/trace2", "cc", "max-age=60"))
			if got := s.origin.LastHeader("/trace2").Get("Traceparent"); !validTraceparent(got) {
				t.Errorf("generated traceparent %q is not valid", got)
			}
		})
	}
}

// forwardPolicies are the two kinds of request_headers.forward list: every field (the default)
// and one that names some, which Connection is not among.
var forwardPolicies = []struct {
	name    string
	forward wire.HeaderNames
}{{"every field forwarded", nil}, {"a forward list", wire.HeaderNames{"X-Custom"}}}

// TestHopByHopRemoved: the hop-by-hop fields, and those the client's Connection names, do not
// go upstream (RFC 9110 §7.6.1), also a field the edge would otherwise forward (Accept-Language,
// Authorization on a fill for one client). With a forward list that does not name Connection,
// the fields it named used to go: they were looked for only among the fields forwarded.
func TestHopByHopRemoved(t *testing.T) {
	for _, tt := range forwardPolicies {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.Hosts[0].RequestHeaders.Forward = tt.forward })
			s.get(t, obj("/hop", "cc", "max-age=60"), "Connection", "X-Secret, accept-language", "X-Secret", "1",
				"Proxy-Authorization", "Basic x", "Te", "trailers", "Accept-Language", "de", "Accept", "text/plain")
			h := s.origin.LastHeader("/hop")
			for _, k := range []string{"X-Secret", "Proxy-Authorization", "Te", "Accept-Language", "Connection"} {
				if h.Get(k) != "" {
					t.Errorf("origin received hop-by-hop %s", k)
				}
			}
			if h.Get("Accept") != "text/plain" {
				t.Errorf("origin received Accept %q, want the client's: only the fields Connection names go", h.Get("Accept"))
			}
			s.get(t, obj("/hop-auth", "cc", "public, max-age=60"), "Connection", "Authorization", "Authorization", "Bearer x")
			if got := s.origin.LastHeader("/hop-auth").Get("Authorization"); got != "" {
				t.Errorf("origin received Authorization %q, which the client's Connection named", got)
			}
		})
	}
}

// TestConnectionNamedVaryFieldNotPoisoning: a field the client's Connection names does not go
// upstream, so the answer is the one for a request without it, and must not be stored as the
// variant for the field's value: a German client naming Accept-Language in Connection would
// otherwise have every other client that sends the same Accept-Language served the origin's
// answer for none (a variant poisoned by one request).
func TestConnectionNamedVaryFieldNotPoisoning(t *testing.T) {
	for _, tt := range forwardPolicies {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.Hosts[0].RequestHeaders.Forward = tt.forward })
			path := "/hop-vary"
			target := obj(path, "size", "100", "cc", "max-age=600", "vary", "Accept-Language")
			body := func(lang ...string) string {
				return string(origin.Body(origin.VariantPath(path, []string{"Accept-Language"},
					http.Header{"Accept-Language": lang}), 1, 100))
			}
			if r := s.get(t, target, "Accept-Language", "de", "Connection", "accept-language"); r.body != body() {
				t.Errorf("the client naming Accept-Language in Connection got the variant for %q, want the one for none",
					s.origin.LastHeader(path).Get("Accept-Language"))
			}
			if r := s.get(t, target, "Accept-Language", "de"); r.body != body("de") {
				t.Errorf("a client sending Accept-Language: de got another variant (Cache-Status %q)", r.header.Get("Cache-Status"))
			}
		})
	}
}

// TestHopByHopVaryFieldNotKeyed: the hop-by-hop fields never go upstream (TestHopByHopRemoved),
// so an answer whose Vary names one is the answer for a request without it, whatever value the
// client sent. It is stored as that variant and every client shares it, fresh or revalidated
// once stale; keyed on the client's value, each value cost a fill of its own and a variant
// (MaxVariants of them and the URL's real variants were stored no more). The Vary's other
// field is keyed as ever.
func TestHopByHopVaryFieldNotKeyed(t *testing.T) {
	for _, tt := range []struct {
		field   string
		a, b, c string // three clients' values
	}{
		{"Te", "trailers", "trailers, deflate;q=0.5", "gzip"},
		{"Keep-Alive", "timeout=5", "timeout=9, max=100", "x"},
		{"Upgrade", "foo/1", "bar/2", "baz"}, // without Connection: upgrade, a GET like any
	} {
		t.Run(tt.field, func(t *testing.T) {
			s := newSingle(t, nil)
			path := "/hop-vary"
			vary := []string{tt.field, "Accept-Language"}
			target := obj(path, "size", "100", "cc", "max-age=60", "vary", strings.Join(vary, ", "))
			body := func(lang string) string {
				return string(origin.Body(origin.VariantPath(path, vary, http.Header{"Accept-Language": {lang}}), 1, 100))
			}
			first := s.get(t, target, tt.field, tt.a, "Accept-Language", "de")
			wantCacheStatus(t, first, "fwd=miss", "stored")
			if got := s.origin.LastHeader(path).Get(tt.field); got != "" {
				t.Fatalf("origin received %s: %q", tt.field, got)
			}
			for _, hdr := range [][]string{{tt.field, tt.b}, nil} {
				r := s.get(t, target, append(hdr, "Accept-Language", "de")...)
				wantCacheStatus(t, r, "hit")
				if r.body != first.body || r.body != body("de") {
					t.Errorf("a client sending %q got another body than the first", hdr)
				}
			}
			if got := s.origin.Requests(path); got != 1 {
				t.Errorf("origin requests = %d, want 1: one stored object for every value of %s", got, tt.field)
			}
			fr := s.get(t, target, tt.field, tt.a, "Accept-Language", "fr")
			wantCacheStatus(t, fr, "fwd=vary-miss")
			if fr.body != body("fr") {
				t.Errorf("Accept-Language: fr got another variant's body")
			}
			// Stale, the one copy is revalidated for a client with yet another value.
			s.clock.Advance(61 * time.Second)
			wantCacheStatus(t, s.get(t, target, tt.field, tt.c, "Accept-Language", "de"), "fwd=stale", "fwd-status=304")
			if got := s.origin.LastHeader(path).Get("If-None-Match"); got == "" {
				t.Errorf("the stale copy's fill sent no If-None-Match: it was not revalidated")
			}
		})
	}
}

// TestHopByHopVaryFieldPeerFill: a fill from a peer carries no hop-by-hop field either, so the
// owner stores the answer for none, and the node that asked must key it the same way: a client
// with another value is a hit there, not a vary-miss filled again from the owner.
func TestHopByHopVaryFieldPeerFill(t *testing.T) {
	f := newFleet(t, []int{2}, noShield, nil)
	asker := f.nodes[0]
	var target string
	for i := 0; ; i++ { // a path n1 owns, which n0 fills from it
		target = obj(fmt.Sprintf("/hop-peer%d", i), "cc", "max-age=60", "vary", "Te")
		if rendezvous(asker.tiers.Load().peers, asker.key(target))[0].ID == "n1" {
			break
		}
	}
	wantCacheStatus(t, do(t, f.client, http.MethodGet, asker.Addr(), testHost, target, "Te", "trailers"), "fwd=miss", "stored", "detail=peer")
	for _, hdr := range [][]string{{"Te", "gzip"}, nil} {
		wantCacheStatus(t, do(t, f.client, http.MethodGet, asker.Addr(), testHost, target, hdr...), "p0-n0; hit")
	}
	if got := f.origin.Total(); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
}

// TestHopByHopVaryFieldCollapsed: clients that ask at once with different values of a
// hop-by-hop field the answer's Vary names share one fill: its answer is theirs, whichever of
// them led it, and no follower fills its "own" variant again.
func TestHopByHopVaryFieldCollapsed(t *testing.T) {
	checkUnsentVaryFieldCollapsed(t, "Te", []string{"trailers", "gzip", "", "deflate"}, wire.RequestHeaders{})
}

func TestTruncatedOriginResponseNotStored(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/trunc", "cc", "max-age=60", "size", "10000")
	s.origin.SetFault("/trunc", origin.Fault{Truncate: true})
	// A streaming miss has sent its header when the cut comes: the client must then see the
	// body cut short (a read error); before the header, a 502.
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.edge.Addr()+p, nil)
	req.Host = testHost
	if cut, err := s.client.Do(req); err == nil {
		_, rerr := io.Copy(io.Discard, cut.Body)
		cut.Body.Close()
		if rerr == nil && cut.StatusCode != http.StatusBadGateway {
			t.Errorf("truncated origin response = %d read whole, want 502 or a body cut short", cut.StatusCode)
		}
	}
	var r resp
	s.origin.ClearFaults()
	r = s.get(t, p)
	if r.status != 200 || len(r.body) != 10000 {
		t.Fatalf("after the fault = %d with %d bytes", r.status, len(r.body))
	}
	wantCacheStatus(t, r, "fwd=miss")
	if got := s.origin.Requests("/trunc"); got != 2 {
		t.Errorf("origin requests = %d, want 2 (the truncated one was not stored)", got)
	}
}

func TestUnsafeMethodInvalidates(t *testing.T) {
	s := newSingle(t, nil)
	// Without a query the origin sends only Last-Modified (its start): heuristic freshness.
	s.clock.Advance(1000 * time.Second)
	s.get(t, "/item")
	s.get(t, "/list")
	wantCacheStatus(t, s.get(t, "/item"), "hit")
	wantCacheStatus(t, s.get(t, "/list"), "hit")
	post := do(t, s.client, http.MethodPost, s.edge.Addr(), testHost, "/item")
	if post.status >= 400 {
		t.Fatalf("POST = %d", post.status)
	}
	wantCacheStatus(t, post, "fwd=method")
	r := s.get(t, "/item")
	wantCacheStatus(t, r, "fwd=miss")
	if !strings.HasPrefix(r.body, "/item@v2:") {
		t.Errorf("after POST body = %q, want version 2", r.body[:12])
	}
	wantCacheStatus(t, s.get(t, "/list"), "hit")
	// A same-host Location is invalidated too (RFC 9111 §4.4).
	do(t, s.client, http.MethodPut, s.edge.Addr(), testHost, "/other?location=/list")
	wantCacheStatus(t, s.get(t, "/list"), "fwd=miss")
}

func TestOversizedBodyRefused(t *testing.T) {
	s := newSingle(t, func(c *Config) { c.MaxRequestBodyBytes = 1000 })
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.edge.Addr()+"/up", strings.NewReader(strings.Repeat("x", 5000)))
	req.Host = testHost
	r, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", r.StatusCode)
	}
	if got := s.origin.Requests("/up"); got != 0 {
		t.Errorf("origin saw %d requests", got)
	}
}

func TestLargeObjectStreamsUncached(t *testing.T) {
	s := newSingle(t, func(c *Config) {
		c.Cache.MaxObjectBytes = 4096
		c.Hosts[0].Cache.DisableSlices = true // else it is kept in slices (slices_test.go)
	})
	p := obj("/big", "cc", "max-age=60", "size", "100000")
	for range 2 {
		r := s.get(t, p)
		if r.status != 200 || len(r.body) != 100000 || !strings.HasPrefix(r.body, "/big@v1:") {
			t.Fatalf("large object = %d with %d bytes", r.status, len(r.body))
		}
		wantCacheStatus(t, r, "detail=too-large")
	}
	if got := s.origin.Requests("/big"); got != 2 {
		t.Errorf("origin requests = %d, want 2 (never stored)", got)
	}
}

// TestSurrogateHeadersStripped: the purge tags and Surrogate-Control are the CDN's alone; a
// CDN-Cache-Control goes on to the client (RFC 9213 §3: a CDN downstream may read it), on a
// miss and on a hit.
func TestSurrogateHeadersStripped(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/sk", "cc", "max-age=60", "sk", "a b", "tag", "c", "sc", "max-age=5", "cdncc", "max-age=30")
	for i := range 2 {
		r := s.get(t, p)
		for _, k := range []string{"Surrogate-Key", "Cache-Tag", "Surrogate-Control"} {
			if r.header.Get(k) != "" {
				t.Errorf("request %d: client received %s", i, k)
			}
		}
		if got := r.header.Get("CDN-Cache-Control"); got != "max-age=30" {
			t.Errorf("request %d: CDN-Cache-Control = %q, want the origin's max-age=30", i, got)
		}
	}
}

// TestOversizedTargetIs414: a request line longer than max_header_bytes is answered 414 URI Too
// Long (RFC 9112 §3: a server that receives a request-target longer than it wishes to parse MUST
// answer 414), as nginx answers it, on the plain-HTTP fast path, whether it is a connection's
// first request or comes after one the fast path served. It got net/http's 431 Request Header
// Fields Too Large, which sends whoever debugs it looking for a large header. A large header
// field is still a 431, and so is an oversized target under `http1: std` (and over TLS), which
// net/http answers before any edge code sees the request.
func TestOversizedTargetIs414(t *testing.T) {
	big := strings.Repeat("a", 80<<10)
	get := func(target string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n"
	}
	for _, tt := range []struct {
		name    string
		http1   string
		payload string
		want    []int
	}{
		{"long target", HTTP1Fast, get("/x?" + big), []int{414}},
		{"long target after a served request", HTTP1Fast, get("/x") + get("/x?"+big), []int{200, 414}},
		{"long header", HTTP1Fast, "GET /x HTTP/1.1\r\nHost: " + testHost + "\r\nX-Big: " + big + "\r\n\r\n", []int{431}},
		{"long header after a served request", HTTP1Fast, get("/x") + "GET /x HTTP/1.1\r\nHost: " + testHost + "\r\nX-Big: " + big + "\r\n\r\n", []int{200, 431}},
		{"long target, http1 std", HTTP1Std, get("/x?" + big), []int{431}},
		// net/http serves a connection from its request with a body on; its own 431 stands.
		{"long target after a request net/http served", HTTP1Fast, "POST /x HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 1\r\n\r\nx" + get("/x?"+big), []int{204, 431}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.HTTP1 = tt.http1 })
			rs := raw(t, s.edge.Addr(), tt.payload)
			var got []int
			for _, r := range rs {
				got = append(got, r.StatusCode)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("statuses = %v, want %v", got, tt.want)
			}
			if last := rs[len(rs)-1]; !last.Close {
				t.Errorf("the %d did not close the connection", last.StatusCode)
			}
			if n := s.origin.Requests("/x?" + big); n != 0 {
				t.Errorf("origin saw the oversized request %d times", n)
			}
		})
	}
}
