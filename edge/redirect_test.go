package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/wire"
)

// urlOrigin is an origin that answers with the status and fields its request's query names
// ("?s=301&Location=http://{self}/to"), "{self}" read as its own address, "{port}" as its
// port and "{host}" as the Host it was sent: an origin that builds absolute URLs from its own name or address, or
// from the name an origin_host gives it. An answer has Date from clock and, unless the query
// names Cache-Control or Last-Modified, "Cache-Control: max-age=60".
type urlOrigin struct {
	addr string
	mu   sync.Mutex
	reqs map[string]int // protected by mu; requests per path
}

func startURLOrigin(t testing.TB, ip string, clock func() time.Time) *urlOrigin {
	t.Helper()
	o := &urlOrigin{reqs: map[string]int{}}
	ln := listen(t, ip)
	o.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.reqs[r.URL.Path]++
		o.mu.Unlock()
		status := http.StatusOK
		h := w.Header()
		h.Set("Date", clock().UTC().Format(http.TimeFormat))
		q := r.URL.Query()
		if !q.Has("Last-Modified") {
			h.Set("Cache-Control", "max-age=60")
		}
		for k, vs := range q {
			if k == "s" {
				status, _ = strconv.Atoi(vs[0])
				continue
			}
			v := strings.NewReplacer("{self}", o.addr, "{port}", o.port(), "{host}", r.Host).Replace(vs[0])
			h.Set(k, v)
		}
		w.WriteHeader(status)
		w.Write([]byte("moved"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return o
}

func (o *urlOrigin) port() string {
	_, p, _ := net.SplitHostPort(o.addr)
	return p
}

func (o *urlOrigin) requests(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reqs[path]
}

// schemeClient is a client of the edge, named for its protocol, with the edge's URL for its
// scheme.
type schemeClient struct {
	name, base string
	c          *http.Client
}

// schemeClients are an HTTP/1.1 client over plain HTTP and HTTPS, HTTP/2 and HTTP/3 clients,
// then the plain HTTP one again.
func schemeClients(t *testing.T, n *Node) []schemeClient {
	h1tls := insecure(testHost)
	h1tls.NextProtos = []string{"http/1.1"}
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	t.Cleanup(func() { h3t.Close() })
	cs := []schemeClient{
		{"http", "http://" + n.Addr(), &http.Client{}},
		{"https", "https://" + n.HTTPSAddr(), &http.Client{Transport: &http.Transport{TLSClientConfig: h1tls}}},
		{"h2", "https://" + n.HTTPSAddr(), &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}}},
		{"h3", "https://" + n.HTTPSAddr(), &http.Client{Transport: h3t}},
	}
	cs = append(cs, cs[0]) // again, from cache: the HTTP/1.1 server's own way for a hit
	for _, c := range cs {
		c.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		t.Cleanup(c.c.CloseIdleConnections)
	}
	return cs
}

// urlOriginEdge is an edge with TLS serving testHost from a urlOrigin, both on clock, and
// its schemeClients.
func urlOriginEdge(t *testing.T) (*fakeClock, *urlOrigin, []schemeClient) {
	clock := newFakeClock()
	o := startURLOrigin(t, "127.0.0.13", clock.Now)
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.Clock = clock.Now
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + o.addr}}
	})
	return clock, o, schemeClients(t, n)
}

// query encodes "k=v&k=v" (values unescaped, with no '&' of their own) as a URL's query.
func query(kv string) string {
	q := url.Values{}
	for p := range strings.SplitSeq(kv, "&") {
		k, v, _ := strings.Cut(p, "=")
		q.Add(k, v)
	}
	return q.Encode()
}

// getHost is getURL with Host host and the client's redirects not followed.
func getHost(t *testing.T, c *http.Client, url, host string) resp {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	return resp{status: r.StatusCode, header: r.Header}
}

// TestOriginLocationRewritten: an answer's Location, Content-Location and Refresh URL that
// name the origin itself (its URL's authority, or the origin_host it is sent) are given to
// each client as the host's own URL in the client's scheme, as nginx's default
// proxy_redirect does; relative URLs, other hosts, another port and URLs with userinfo are
// left as they are. The stored answer keeps the origin's URL: a client of the other scheme,
// served from cache over HTTP/1.1, HTTP/2 or HTTP/3, gets its own scheme, not the first
// client's. An origin's own change of scheme (http to https) is kept.
func TestOriginLocationRewritten(t *testing.T) {
	clock := newFakeClock()
	o := startURLOrigin(t, "127.0.0.13", clock.Now)
	const named = "named.example" // sent to the origin as origin_host "Bucket.Internal:8080"
	const based = "based.example" // its origin's URL has the path /site
	// An internationalised name, configured in Unicode and asked for in its ASCII form (as
	// clients send it), with an origin_host in Unicode (sent in its ASCII form).
	const idn, idnASCII = "bücher.example", "xn--bcher-kva.example"
	const kept = "kept.example" // response_headers.origin_urls: keep
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.Clock = clock.Now
		c.Hosts = []wire.HostConfig{
			{Host: testHost, Origin: "http://" + o.addr},
			{Host: named, Origin: "http://" + o.addr, OriginHost: "Bucket.Internal:8080"},
			{Host: based, Origin: "http://" + o.addr + "/site/"},
			{Host: idn, Origin: "http://" + o.addr, OriginHost: "Bücher-Origin.example"},
			{Host: kept, Origin: "http://" + o.addr, OriginHost: "bucket.internal",
				ResponseHeaders: wire.ResponseHeaders{OriginURLs: wire.OriginURLsKeep}},
		}
	})
	clients := schemeClients(t, n)
	for _, tt := range []struct {
		name, host, query string
		field             string
		// want is the field's value for a client of scheme "<s>" ("http" or "https").
		want string
	}{
		{"own address", testHost, "s=301&Location=http://{self}/to?q=1%2F#f", "Location", "<s>://www.example.com/to?q=1%2F#f"},
		{"scheme and host in capitals", testHost, "s=302&Location=HTTP://{self}/to", "Location", "<s>://www.example.com/to"},
		{"no path", testHost, "s=308&Location=http://{self}", "Location", "<s>://www.example.com"},
		{"created", testHost, "s=201&Location=http://{self}/new", "Location", "<s>://www.example.com/new"},
		{"content location", testHost, "Content-Location=http://{self}/a.en", "Content-Location", "<s>://www.example.com/a.en"},
		{"refresh", testHost, "Refresh=0; url=http://{self}/to", "Refresh", "0; url=<s>://www.example.com/to"},
		{"refresh quoted", testHost, "Refresh=5;URL='http://{self}/to'", "Refresh", "5;URL='<s>://www.example.com/to'"},
		// HTML's declarative refresh: "url=" is optional, the URL follows the time.
		{"refresh without url=", testHost, "Refresh=0; http://{self}/to", "Refresh", "0; <s>://www.example.com/to"},
		{"refresh, url= in another URL's query", testHost, "Refresh=0; http://elsewhere.example/?url=http://{self}/to", "Refresh", "0; http://elsewhere.example/?url=http://{self}/to"},
		{"refresh, spaces around =", testHost, "Refresh=1.5 , URL = \"http://{self}/to\"", "Refresh", "1.5 , URL = \"<s>://www.example.com/to\""},
		{"refresh with no time", testHost, "Refresh=url=http://{self}/to", "Refresh", "url=http://{self}/to"},
		// A client (WHATWG URL) drops tabs and reads what follows as the authority's.
		{"tab in the authority", testHost, "s=201&Location=http://{self}\t.elsewhere.example/to", "Location", "http://{self}\t.elsewhere.example/to"},
		{"quote in the authority", testHost, "s=301&Location=http://{self}'@elsewhere.example/to", "Location", "http://{self}'@elsewhere.example/to"},
		{"client's host", testHost, "s=301&Location=http://{host}/to", "Location", "http://www.example.com/to"},
		{"relative", testHost, "s=301&Location=/to", "Location", "/to"},
		{"another host", testHost, "s=301&Location=http://elsewhere.example/to", "Location", "http://elsewhere.example/to"},
		// A port is a number: a client reads 080 as 80 (WHATWG URL; Go dials it so).
		{"port with leading zeros", testHost, "s=301&Location=http://127.0.0.13:00{port}/to", "Location", "<s>://www.example.com/to"},
		{"origin_host's port with a leading zero", named, "s=301&Location=http://bucket.internal:08080/to", "Location", "<s>://named.example/to"},
		{"another port", testHost, "s=301&Location=http://127.0.0.13:1/to", "Location", "http://127.0.0.13:1/to"},
		{"userinfo", testHost, "s=301&Location=http://u@{self}/to", "Location", "http://u@{self}/to"},
		{"origin_host", named, "s=301&Location=http://{host}/to", "Location", "<s>://named.example/to"},
		{"origin_host in capitals", named, "s=301&Location=http://BUCKET.internal:8080/to", "Location", "<s>://named.example/to"},
		{"origin_host, another port", named, "s=301&Location=http://bucket.internal/to", "Location", "http://bucket.internal/to"},
		{"origin's own upgrade kept", named, "s=301&Location=https://bucket.internal:8080/to", "Location", "https://named.example/to"},
		{"origin path", based, "s=301&Location=http://{self}/site/to", "Location", "<s>://based.example/to"},
		{"origin path alone", based, "s=301&Location=http://{self}/site?a", "Location", "<s>://based.example?a"},
		{"origin_host internationalised", idnASCII, "s=301&Location=http://{host}/to", "Location", "<s>://xn--bcher-kva.example/to"},
		{"origin_host in Unicode", idnASCII, "s=301&Location=http://BÜCHER-origin.example/to", "Location", "<s>://xn--bcher-kva.example/to"},
		{"outside the origin path", based, "s=301&Location=http://{self}/sitemap", "Location", "http://{self}/sitemap"},
		{"origin_urls keep", kept, "s=301&Location=http://{self}/to", "Location", "http://{self}/to"},
		{"origin_urls keep, origin_host", kept, "s=302&Cache-Control=max-age=60&Location=http://bucket.internal/to", "Location", "http://bucket.internal/to"},
		{"origin_urls keep, refresh", kept, "Refresh=0; url=http://{self}/to", "Refresh", "0; url=http://{self}/to"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := "/" + strings.ReplaceAll(tt.name, " ", "-")
			for i, c := range clients {
				r := getHost(t, c.c, c.base+path+"?"+query(tt.query), tt.host)
				if i == 0 {
					wantCacheStatus(t, r, "fwd=miss", "stored")
				} else {
					wantCacheStatus(t, r, "hit")
				}
				scheme := "http"
				if c.name != "http" {
					scheme = "https"
				}
				want := strings.NewReplacer("<s>", scheme, "{self}", o.addr, "{port}", o.port()).Replace(tt.want)
				if got := r.header.Get(tt.field); got != want {
					t.Errorf("%s client: %s = %q, want %q", c.name, tt.field, got, want)
				}
			}
			if tt.host == based {
				path = "/site" + path
			}
			if got := o.requests(path); got != 1 {
				t.Errorf("origin requests = %d, want 1: the stored answer served every client", got)
			}
		})
	}
}

// TestRedirectFreshness: a redirect is stored as RFC 9111 has it: 301 and 308 are
// heuristically cacheable (RFC 9110 §15.1), so a Last-Modified alone lets them be stored;
// 302, 303 and 307 only with explicit freshness (or public). A stored redirect whose Location
// names the host itself is served as the origin wrote it, to clients of either scheme.
func TestRedirectFreshness(t *testing.T) {
	clock, o, clients := urlOriginEdge(t)
	lastModified := clock.Now().Add(-10 * 24 * time.Hour).Format(http.TimeFormat)
	for i, tt := range []struct {
		status int
		fields string // besides Location; Last-Modified leaves out the origin's Cache-Control
		stored bool
	}{
		{301, "Last-Modified=" + lastModified, true},
		{308, "Last-Modified=" + lastModified, true},
		{302, "Last-Modified=" + lastModified, false},
		{303, "Last-Modified=" + lastModified, false},
		{307, "Last-Modified=" + lastModified, false},
		{302, "Cache-Control=max-age=60", true},
		{303, "Expires=" + clock.Now().Add(time.Minute).Format(http.TimeFormat), true},
		{307, "Cache-Control=public&Last-Modified=" + lastModified, true},
		{301, "Cache-Control=no-store", false},
		{308, "Cache-Control=private, max-age=60", false},
	} {
		name := strconv.Itoa(tt.status) + " " + tt.fields
		t.Run(name, func(t *testing.T) {
			path := "/r" + strconv.Itoa(i)
			loc := "https://www.example.com/to"
			q := "s=" + strconv.Itoa(tt.status) + "&Location=" + loc + "&" + tt.fields
			for i, c := range clients {
				r := getHost(t, c.c, c.base+path+"?"+query(q), testHost)
				if r.status != tt.status {
					t.Fatalf("%s client: status %d, want %d", c.name, r.status, tt.status)
				}
				if got := r.header.Get("Location"); got != loc {
					t.Errorf("%s client: Location = %q, want %q", c.name, got, loc)
				}
				if i > 0 && tt.stored {
					wantCacheStatus(t, r, "hit")
				}
			}
			want := len(clients)
			if tt.stored {
				want = 1
			}
			if got := o.requests(path); got != want {
				t.Errorf("origin requests = %d, want %d (stored: %v)", got, want, tt.stored)
			}
		})
	}
}

// TestPassLocationRewritten: a pass's answer (an unsafe method's, never stored) has the
// origin's own URLs rewritten as a stored answer's are, before RFC 9111 §4.4 invalidation
// reads them, so a POST redirected to the origin's URL of a cached object invalidates it as
// it would if the origin had named the host. Under response_headers.origin_urls: keep the
// client gets the origin's URL, and the object it names is invalidated all the same: keep
// is about what clients are told, and that URL is still the host's copy's (it was kept fresh
// after the POST changed it).
func TestPassLocationRewritten(t *testing.T) {
	for _, tt := range []struct {
		mode string // response_headers.origin_urls
		want string // the POST's Location; {self} the origin's address
	}{
		{"", "http://www.example.com/cached"},
		{wire.OriginURLsKeep, "http://{self}/cached"},
	} {
		t.Run("origin_urls="+tt.mode, func(t *testing.T) {
			clock := newFakeClock()
			o := startURLOrigin(t, "127.0.0.13", clock.Now)
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o.addr,
					ResponseHeaders: wire.ResponseHeaders{OriginURLs: tt.mode}}}})
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			t.Cleanup(c.CloseIdleConnections)
			do(t, c, http.MethodGet, n.Addr(), testHost, "/cached")
			wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, "/cached"), "hit")
			r := do(t, c, http.MethodPost, n.Addr(), testHost, "/form?"+query("s=303&Location=http://{self}/cached"))
			if got, want := r.header.Get("Location"), strings.ReplaceAll(tt.want, "{self}", o.addr); got != want {
				t.Errorf("POST: Location = %q, want %q", got, want)
			}
			wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, "/cached"), "fwd=miss")
		})
	}
}

// TestOriginURLsReloaded: response_headers.origin_urls takes effect at delivery, so a stored
// answer's Location follows the host config as it is reloaded, both ways, on the HTTP/1.1
// server's serialised header block (kept per host config) as on the first answer.
func TestOriginURLsReloaded(t *testing.T) {
	clock := newFakeClock()
	o := startURLOrigin(t, "127.0.0.13", clock.Now)
	host := func(mode string) []wire.HostConfig {
		return []wire.HostConfig{{Host: testHost, Origin: "http://" + o.addr,
			ResponseHeaders: wire.ResponseHeaders{OriginURLs: mode}}}
	}
	n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now, Hosts: host(wire.OriginURLsKeep)})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	path := "/moved?" + query("s=301&Location=http://{self}/to")
	kept, rewritten := "http://"+o.addr+"/to", "http://"+testHost+"/to"
	for i, tt := range []struct {
		mode, status, want string
	}{
		{wire.OriginURLsKeep, "fwd=miss", kept},
		{wire.OriginURLsKeep, "hit", kept},
		{wire.OriginURLsRewrite, "hit", rewritten},
		{"", "hit", rewritten},
		{wire.OriginURLsKeep, "hit", kept},
	} {
		if err := n.SetHosts(host(tt.mode)); err != nil {
			t.Fatalf("SetHosts(origin_urls %q): %v", tt.mode, err)
		}
		r := do(t, c, http.MethodGet, n.Addr(), testHost, path)
		wantCacheStatus(t, r, tt.status)
		if got := r.header.Get("Location"); got != tt.want {
			t.Errorf("answer #%d, origin_urls %q: Location = %q, want %q", i+1, tt.mode, got, tt.want)
		}
	}
}

// TestFleetLocationRewrittenPerNode: a shield gives the node that fills from it the origin's
// URL unchanged, and each node rewrites it for its own clients: the shield's client gets the
// host's URL, and so does each client of the other PoP's node, in its own scheme (here an
// https client behind a trusted proxy, served from that node's copy). Rewritten by the
// shield for its http "client", the node's copy named the host over http for every client.
func TestFleetLocationRewrittenPerNode(t *testing.T) {
	clock := newFakeClock()
	o := startURLOrigin(t, "127.0.0.13", clock.Now)
	f := newFleet(t, []int{1, 1}, func(string) string { return "p0" }, func(c *Config) {
		c.Clock = clock.Now
		c.Hosts[0].Origin = "http://" + o.addr
		c.TrustedProxies = []string{"127.0.0.1/32"} // the test's client
	})
	shield, node := f.nodes[0], f.nodes[1]
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	path := "/moved?" + query("s=301&Location=http://{self}/to")
	for _, tt := range []struct {
		name   string
		n      *Node
		hdr    []string
		status string
		want   string
	}{
		{"other PoP, filled through the shield", node, nil, "fwd=miss", "http://www.example.com/to"},
		{"other PoP, https behind a proxy", node, []string{"X-Forwarded-Proto", "https"}, "hit", "https://www.example.com/to"},
		{"shield", shield, nil, "hit", "http://www.example.com/to"},
		{"shield, https behind a proxy", shield, []string{"X-Forwarded-Proto", "https"}, "hit", "https://www.example.com/to"},
	} {
		r := do(t, c, http.MethodGet, tt.n.Addr(), testHost, path, tt.hdr...)
		wantCacheStatus(t, r, tt.status)
		if got := r.header.Get("Location"); got != tt.want {
			t.Errorf("%s: Location = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := o.requests("/moved"); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
}

// TestOriginURLNeverDowngraded: an https URL that names an https origin reaches a plain-HTTP
// client as https. An origin behind the edge that sends http clients to https by the
// X-Forwarded-Proto it is given ("Location: https://<its name>/x", its own scheme and name
// when the host and its origin share one) was given http://, and the client came back over
// http to be redirected again, for ever. nginx's default proxy_redirect loops so too.
func TestOriginURLNeverDowngraded(t *testing.T) {
	n := newSingle(t, nil).edge
	for _, tt := range []struct {
		origin, location, proto, want string
	}{
		{"https://www.example.com", "https://www.example.com/x", "http", "https://www.example.com/x"},
		{"https://origin.example.net", "https://origin.example.net/x", "http", "https://www.example.com/x"},
		{"https://origin.example.net", "https://origin.example.net/x", "https", "https://www.example.com/x"},
		{"http://origin.example.net", "http://origin.example.net/x", "https", "https://www.example.com/x"},
		{"http://origin.example.net", "http://origin.example.net/x", "http", "http://www.example.com/x"},
	} {
		u, err := url.Parse(tt.origin)
		if err != nil {
			t.Fatal(err)
		}
		hs := &hostState{cfg: wire.HostConfig{Host: testHost, Origin: tt.origin}, origin: u, originNames: originNames(u, ""), node: n}
		r, _ := http.NewRequest(http.MethodGet, tt.proto+"://"+testHost+"/", nil)
		if tt.proto == "https" {
			r.TLS = &tls.ConnectionState{}
		}
		h := http.Header{"Location": {tt.location}}
		clientURLs(h, &request{r: r, host: hs})
		if got := h.Get("Location"); got != tt.want {
			t.Errorf("origin %s, Location %s, %s client: got %s, want %s", tt.origin, tt.location, tt.proto, got, tt.want)
		}
	}
}

// FuzzFieldURL: fieldURL splits any value into parts that make it up again.
func FuzzFieldURL(f *testing.F) {
	for _, v := range []string{"0; url=http://a/b", "5;URL='http://a/b'", "0, http://a/b", "url=http://a/", " http://a/b", "1.5 url = \"x"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, k := range urlFields {
			pre, u, post := fieldURL(k, v)
			if pre+u+post != v {
				t.Fatalf("fieldURL(%q, %q) = %q, %q, %q: not the value", k, v, pre, u, post)
			}
		}
	})
}

// blockWriter is discardWriter with edge/http1's header block: what a hit sets there.
type blockWriter struct {
	discardWriter
	block, fields []byte
}

func (w *blockWriter) SetHeaderBlock(block, fields []byte, _ int64) {
	w.block, w.fields = block, fields
}

// TestOriginURLHitKeepsHeaderBlock: a stored answer whose Location and Content-Location name
// the origin is served, on HTTP/1.1's way for a hit, through the serialised header block, with
// the fields rewritten for each client's scheme beside it, and at one allocation more than
// one whose fields name another host (the rewritten fields' buffer). Served through the
// header map instead, each hit cost four more (a value slice and a string per field) and
// about a third more time.
func TestOriginURLHitKeepsHeaderBlock(t *testing.T) {
	clock := newFakeClock()
	o := startURLOrigin(t, "127.0.0.13", clock.Now)
	n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o.addr}}, TrustedProxies: []string{"127.0.0.1/32"}})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	serve := func(path, proto string) *blockWriter {
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		req.Host = testHost
		req.RemoteAddr = "127.0.0.1:1234"
		req.Header.Set("X-Forwarded-Proto", proto)
		w := &blockWriter{discardWriter: discardWriter{h: http.Header{}}}
		n.ServeHTTP(w, req)
		return w
	}
	elsewhere := "/elsewhere?" + query("s=301&Location=http://elsewhere.example/to&Content-Location=http://elsewhere.example/a")
	origin := "/origin?" + query("s=301&Location=http://{self}/to&Content-Location=http://{self}/a")
	for _, p := range []string{elsewhere, origin} {
		wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, p), "stored")
	}
	for _, proto := range []string{"http", "https"} {
		w := serve(origin, proto)
		if w.block == nil {
			t.Fatalf("%s: served without the header block", proto)
		}
		if bytes.Contains(w.block, []byte(o.addr)) || bytes.Contains(w.block, []byte("Location")) {
			t.Errorf("%s: block %q holds the URL fields", proto, w.block)
		}
		for _, want := range []string{"\r\nLocation: " + proto + "://www.example.com/to\r\n", "\r\nContent-Location: " + proto + "://www.example.com/a\r\n"} {
			if !strings.Contains("\r\n"+string(w.fields), want) {
				t.Errorf("%s: answer's own fields %q lack %q", proto, w.fields, strings.TrimSpace(want))
			}
		}
	}
	allocs := func(path string) float64 {
		return testing.AllocsPerRun(100, func() { serve(path, "https") })
	}
	// One more at most: the answer's own fields, rewritten, outgrow the request's bytes.
	if a, b := allocs(origin), allocs(elsewhere); a > b+1 {
		t.Errorf("a hit naming the origin: %v allocations, want at most %v, one more than for one naming another host", a, b+1)
	}
}

// TestOriginURLOnEveryAnswer: the origin's URL in Content-Location is the host's in every
// answer a client gets from a stored 200, over HTTP/1.1, 2 and 3: a 304 to a conditional
// request (which carries the Content-Location a 200 would, RFC 9110 §15.4.5), a HEAD and a
// range's 206.
func TestOriginURLOnEveryAnswer(t *testing.T) {
	_, o, clients := urlOriginEdge(t)
	path := "/every?" + query(`ETag="v1"&Content-Location=http://{self}/every.en`)
	for _, tt := range []struct {
		name, method string
		hdr          []string
		status       int
	}{
		{"fill", http.MethodGet, nil, http.StatusOK},
		{"conditional", http.MethodGet, []string{"If-None-Match", `"v1"`}, http.StatusNotModified},
		{"head", http.MethodHead, nil, http.StatusOK},
		{"range", http.MethodGet, []string{"Range", "bytes=1-2"}, http.StatusPartialContent},
	} {
		for _, c := range clients {
			req, err := http.NewRequest(tt.method, c.base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = testHost
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			r, err := c.c.Do(req)
			if err != nil {
				t.Fatalf("%s, %s client: %v", tt.name, c.name, err)
			}
			r.Body.Close()
			scheme := "https"
			if c.name == "http" {
				scheme = "http"
			}
			if r.StatusCode != tt.status {
				t.Errorf("%s, %s client: status %d, want %d", tt.name, c.name, r.StatusCode, tt.status)
			}
			if got, want := r.Header.Get("Content-Location"), scheme+"://www.example.com/every.en"; got != want {
				t.Errorf("%s, %s client: Content-Location = %q, want %q", tt.name, c.name, got, want)
			}
		}
	}
	if got := o.requests("/every"); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
}
