package edge

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// targetOrigin records the request-target of every request it is sent, as it came on the
// wire (r.RequestURI), and answers each with a 200 stored for ten minutes.
type targetOrigin struct {
	mu  sync.Mutex
	got []string
}

func (o *targetOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.got = append(o.got, r.RequestURI)
	o.mu.Unlock()
	w.Header().Set("Cache-Control", "max-age=600")
	fmt.Fprint(w, r.RequestURI)
}

// since returns the targets received after the first n.
func (o *targetOrigin) since(n int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got[n:])
}

func (o *targetOrigin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.got)
}

// targetEdge starts a targetOrigin and an edge with the default configuration serving
// testHost from it over HTTP, HTTPS (HTTP/2 as http2 says) and HTTP/3.
func targetEdge(t *testing.T, http2Server string) (*targetOrigin, *Node) {
	t.Helper()
	o := &targetOrigin{}
	addr := startHTTP(t, "127.0.0.10", o)
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.HTTP2 = http2Server
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}
	})
	return o, n
}

// targetClient sends one GET over one protocol, with a raw request-target (and, for HTTP/2
// and HTTP/3, extra fields as name, value pairs), and returns its status, or "reset".
type targetClient struct {
	name string
	get  func(t *testing.T, target string, fields ...string) string
}

func targetClients(t *testing.T, n *Node) []targetClient {
	h2 := dialH2Raw(t, n.HTTPSAddr())
	var id uint32 = 1
	h3 := dialH3Raw(t, n.HTTPSAddr())
	return []targetClient{
		{"http/1.1", func(t *testing.T, target string, _ ...string) string {
			rs := raw(t, n.Addr(), "GET "+target+" HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: close\r\n\r\n")
			if len(rs) == 0 {
				return "no answer"
			}
			return fmt.Sprint(rs[0].StatusCode)
		}},
		{"http/2", func(t *testing.T, target string, fields ...string) string {
			status, code := h2.request(id, append([]string{":method", "GET", ":scheme", "https", ":authority", testHost, ":path", target}, fields...)...)
			id += 2
			if status == 0 && code == http2.ErrCodeProtocol {
				return "reset"
			}
			return fmt.Sprint(status)
		}},
		{"http/3", func(t *testing.T, target string, fields ...string) string {
			a := h3.request(append([]string{":method", "GET", ":scheme", "https", ":authority", testHost, ":path", target}, fields...)...)
			if a.reset && a.code == http3.ErrCodeMessageError {
				return "reset"
			}
			return fmt.Sprint(a.status)
		}},
	}
}

// TestEmptyQueryKept: a target with an empty query ("/x?") reaches the origin as sent and is
// a URL of its own in the cache, as nginx's proxy_pass and default key ($request_uri) and
// Varnish's req.url keep it: RFC 3986 section 6.2.3 does not let a normaliser assume that
// "/x?" and "/x" are one resource. The edge sent "/x" upstream and served the one's copy for
// the other. Over every protocol; a URL purge of "/x?" purges that copy, not "/x"'s.
func TestEmptyQueryKept(t *testing.T) {
	o, n := targetEdge(t, HTTP2Fast)
	for _, c := range targetClients(t, n) {
		t.Run(c.name, func(t *testing.T) {
			p := "/eq/" + strings.ReplaceAll(c.name, "/", "")
			before := o.count()
			for _, target := range []string{p, p + "?", p + "?", p} {
				if got := c.get(t, target); got != "200" {
					t.Fatalf("GET %s: %s, want 200", target, got)
				}
			}
			if got, want := o.since(before), []string{p, p + "?"}; !slices.Equal(got, want) {
				t.Errorf("origin was sent %q, want %q (each once: two URLs, each stored)", got, want)
			}
			before = o.count()
			hits, err := n.ApplyPurge(t.Context(), purge.Message{ID: "eq" + c.name, Host: testHost, Kind: purge.KindURL, Values: []string{p + "?"}})
			if err != nil || hits != 1 {
				t.Fatalf("purge of %s?: %d hits, %v; want 1", p, hits, err)
			}
			for _, target := range []string{p, p + "?"} {
				if got := c.get(t, target); got != "200" {
					t.Fatalf("GET %s after the purge: %s, want 200", target, got)
				}
			}
			if got, want := o.since(before), []string{p + "?"}; !slices.Equal(got, want) {
				t.Errorf("after a purge of %s?, origin was sent %q, want %q", p, got, want)
			}
		})
	}
}

// TestFragmentNotSentUpstream: a target holding a fragment ("/x#frag"), which is no part of a
// request-target (RFC 9112 section 3.2) but which nginx and Varnish accept, is the target
// without it, as nginx reads it as an origin ($uri): the origin is sent "/x" and the copy is
// "/x"'s. The edge sent "/x%23frag", another resource (a path whose segment holds a '#'). A
// '#' sent encoded ("%23") is part of the path, and stays.
func TestFragmentNotSentUpstream(t *testing.T) {
	o, n := targetEdge(t, HTTP2Fast)
	for _, c := range targetClients(t, n) {
		t.Run(c.name, func(t *testing.T) {
			p := "/fr/" + strings.ReplaceAll(c.name, "/", "")
			before := o.count()
			for _, tt := range []struct{ target, origin string }{
				{p + "#frag", p},
				{p, ""}, // the same URL: a hit
				{p + "?a=1#f?g#h", p + "?a=1"},
				{p + "?#f", p + "?"},
				{p + "/%23enc", p + "/%23enc"},
			} {
				if got := c.get(t, tt.target); got != "200" {
					t.Fatalf("GET %s: %s, want 200", tt.target, got)
				}
				sent := o.since(before)
				before += len(sent)
				if want := []string{tt.origin}; tt.origin == "" && len(sent) != 0 || tt.origin != "" && !slices.Equal(sent, want) {
					t.Errorf("GET %s: origin was sent %q, want %q", tt.target, sent, tt.origin)
				}
			}
		})
	}
}

// TestTargetWithSpaceRefused: an HTTP/2 :path or HTTP/3 :path holding a space is no valid
// request-target (RFC 9110 section 4.1, RFC 9112 section 3.2), which makes the request
// malformed (RFC 9113 section 8.3.1, RFC 9114 section 4.3.1): it is reset, or answered 400,
// and never sent upstream, as nginx answers 400 and Varnish resets it. The edge sent it to the
// origin with the space as "%20". Over HTTP/1.1 a space ends the target, and the line is 400.
func TestTargetWithSpaceRefused(t *testing.T) {
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			o, n := targetEdge(t, h2server)
			for _, c := range targetClients(t, n) {
				for _, target := range []string{"/sp/a b", "/sp?q=a b", "/sp/a%20b c"} {
					got := c.get(t, target)
					if got != "400" && (got != "reset" || c.name == "http/1.1") {
						t.Errorf("%s: GET %q: %s, want 400 or a reset", c.name, target, got)
					}
				}
			}
			if sent := o.since(0); len(sent) != 0 {
				t.Errorf("origin was sent %q", sent)
			}
		})
	}
}

// TestTEWithoutCaseOverHTTP2: "te: Trailers" is "trailers" (RFC 9110 section 10.1.4 with
// RFC 5234 section 2.3: a literal in ABNF is case-insensitive), the one TE an HTTP/2 request
// may carry (RFC 9113 section 8.2.2), as nginx and Varnish accept it; the edge's HTTP/2 server
// reset the stream. Any other value is still malformed: answered 400, then reset with
// PROTOCOL_ERROR (edge/h2's TestMalformedAnswered400), and never sent upstream. (net/http's
// HTTP/2 server, http2: std, and quic-go's HTTP/3 server compare case-sensitively and reset it.)
func TestTEWithoutCaseOverHTTP2(t *testing.T) {
	o, n := targetEdge(t, HTTP2Fast)
	h2 := dialH2Raw(t, n.HTTPSAddr())
	for i, tt := range []struct {
		te   string
		want int // 400: then a reset, and nothing upstream
	}{
		{"trailers", http.StatusOK},
		{"Trailers", http.StatusOK},
		{"TRAILERS", http.StatusOK},
		{"gzip", http.StatusBadRequest},
		{"trailers, gzip", http.StatusBadRequest},
	} {
		before := o.count()
		status, code := h2.request(uint32(2*i+1), ":method", "GET", ":scheme", "https", ":authority", testHost, ":path", "/te/"+fmt.Sprint(i), "te", tt.te)
		if tt.want == http.StatusBadRequest {
			if status != tt.want || code != http2.ErrCodeProtocol {
				t.Errorf("te %q: %d (reset %v), want 400, then a PROTOCOL_ERROR reset", tt.te, status, code)
			}
			if sent := o.since(before); len(sent) != 0 {
				t.Errorf("te %q: origin was sent %q", tt.te, sent)
			}
			continue
		}
		if status != tt.want {
			t.Errorf("te %q: %d (reset %v), want %d", tt.te, status, code, tt.want)
		}
		if sent := o.since(before); len(sent) != 1 {
			t.Errorf("te %q: origin was sent %q, want the request", tt.te, sent)
		}
	}
}

// TestRequestWithoutAuthority: a request that names no host (HTTP/2 and HTTP/3 without
// :authority or Host, HTTP/1.1 without Host) is a bad request, 400 (RFC 9110 section 7.2,
// RFC 9112 section 3.2, RFC 9113 section 8.3.1), or over HTTP/2 and HTTP/3 a reset stream, as
// nginx answers it, not 421: it names no other host the edge might have been misdirected to.
// Over HTTP/2 it got 421. A Host field standing in for :authority serves.
func TestRequestWithoutAuthority(t *testing.T) {
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			o, n := targetEdge(t, h2server)
			if rs := raw(t, n.Addr(), "GET /na HTTP/1.1\r\nConnection: close\r\n\r\n"); len(rs) != 1 || rs[0].StatusCode != http.StatusBadRequest {
				t.Errorf("http/1.1 without Host: %d answers, want one 400", len(rs))
				for _, r := range rs {
					t.Errorf("answer: %d", r.StatusCode)
				}
			}
			h2 := dialH2Raw(t, n.HTTPSAddr())
			if status, code := h2.request(1, ":method", "GET", ":scheme", "https", ":path", "/na"); status != http.StatusBadRequest && (status != 0 || code != http2.ErrCodeProtocol) {
				t.Errorf("http/2 without :authority: %d (reset %v), want 400 or a PROTOCOL_ERROR reset", status, code)
			}
			a := dialH3Raw(t, n.HTTPSAddr()).request(":method", "GET", ":scheme", "https", ":path", "/na")
			if a.status != http.StatusBadRequest && !(a.reset && a.code == http3.ErrCodeMessageError) {
				t.Errorf("http/3 without :authority: %d (reset %v %v), want 400 or an H3_MESSAGE_ERROR reset", a.status, a.reset, a.code)
			}
			if sent := o.since(0); len(sent) != 0 {
				t.Errorf("origin was sent %q", sent)
			}
			if status, code := h2.request(3, ":method", "GET", ":scheme", "https", ":path", "/na", "host", testHost); status != http.StatusOK {
				t.Errorf("http/2 with Host for :authority: %d (reset %v), want 200", status, code)
			}
		})
	}
}

// TestPurgeOfPathLeavesEmptyQuery: "/x" and "/x?" being two URLs (TestEmptyQueryKept), a URL
// purge of "/x" leaves "/x?"'s copy, and a prefix purge of "/x" removes both (the prefix
// matches the path; the query takes no part), as docs/purge.md says.
func TestPurgeOfPathLeavesEmptyQuery(t *testing.T) {
	o, n := targetEdge(t, HTTP2Fast)
	c := targetClients(t, n)[0] // http/1.1: the key and the purges are the same over every protocol
	for i, tt := range []struct {
		kind purge.Kind
		want []string // what the origin is sent for p and p+"?" after the purge
	}{
		{purge.KindURL, []string{"/pp/0"}},
		{purge.KindPrefix, []string{"/pp/1", "/pp/1?"}},
	} {
		p := fmt.Sprintf("/pp/%d", i)
		for _, target := range []string{p, p + "?"} {
			if got := c.get(t, target); got != "200" {
				t.Fatalf("GET %s: %s, want 200", target, got)
			}
		}
		if _, err := n.ApplyPurge(t.Context(), purge.Message{ID: fmt.Sprint("pp", i), Host: testHost, Kind: tt.kind, Values: []string{p}}); err != nil {
			t.Fatalf("%s purge of %s: %v", tt.kind, p, err)
		}
		before := o.count()
		for _, target := range []string{p, p + "?"} {
			if got := c.get(t, target); got != "200" {
				t.Fatalf("GET %s after the purge: %s, want 200", target, got)
			}
		}
		if got := o.since(before); !slices.Equal(got, tt.want) {
			t.Errorf("after a %s purge of %s, origin was sent %q, want %q", tt.kind, p, got, tt.want)
		}
	}
}
