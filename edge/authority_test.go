package edge

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
)

// TestMalformedAuthorityOverEveryProtocol: a request whose authority (Host over HTTP/1.1,
// :authority over HTTP/2 and HTTP/3) is no URI authority (RFC 3986 section 3.2: invalid
// characters, a port that is not a number, an IP literal without its bracket) is refused over
// every protocol, 400 (RFC 9112 section 3.2) or, over HTTP/2 and HTTP/3, a stream error, and
// never fetched; a well-formed one the edge does not serve gets 421 over all three. Over
// HTTP/3 an invalid character got 421, as for a host not served (quic-go checks no more than
// the userinfo), and a port that is not a number was served everywhere, the port dropped.
func TestMalformedAuthorityOverEveryProtocol(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	for _, tt := range []struct {
		authority string
		want      int // 400: refused, with a 400 or a reset stream
	}{
		{"a b", http.StatusBadRequest},
		{"a/b", http.StatusBadRequest},
		{testHost + ":abc", http.StatusBadRequest},
		{testHost + ":+80", http.StatusBadRequest},
		{testHost + ":1:2", http.StatusBadRequest},
		{"[::1", http.StatusBadRequest},
		{"a]b", http.StatusBadRequest},
		{"[::1]x", http.StatusBadRequest},
		{"u@" + testHost, http.StatusBadRequest},
		{"unknown.example", http.StatusMisdirectedRequest},
		{"unknown.example:443", http.StatusMisdirectedRequest},
		{"[::1]:443", http.StatusMisdirectedRequest},
		{"a%20b", http.StatusMisdirectedRequest}, // a reg-name may hold percent-encodings
		{testHost + ":443", http.StatusOK},
		{testHost + ":", http.StatusOK}, // an empty port is no port (RFC 3986 section 3.2.3)
	} {
		t.Run(tt.authority, func(t *testing.T) {
			before := s.origin.Total()
			path := "/auth?p=" + strings.NewReplacer(" ", "_", "%", "_").Replace(tt.authority)
			got := map[string]string{}
			if rs := raw(t, n.Addr(), "GET "+path+" HTTP/1.1\r\nHost: "+tt.authority+"\r\nConnection: close\r\n\r\n"); len(rs) > 0 {
				got["http/1.1"] = fmt.Sprint(rs[0].StatusCode)
			}
			status, code := dialH2Raw(t, n.HTTPSAddr()).request(1, ":method", "GET", ":scheme", "https", ":authority", tt.authority, ":path", path)
			got["http/2"] = fmt.Sprint(status)
			if status == 0 && code == http2.ErrCodeProtocol {
				got["http/2"] = "reset"
			}
			a := dialH3Raw(t, n.HTTPSAddr()).request(":method", "GET", ":scheme", "https", ":authority", tt.authority, ":path", path)
			got["http/3"] = fmt.Sprint(a.status)
			if a.reset && a.code == http3.ErrCodeMessageError {
				got["http/3"] = "reset"
			}
			for _, proto := range []string{"http/1.1", "http/2", "http/3"} {
				g, want := got[proto], fmt.Sprint(tt.want)
				if g != want && !(tt.want == http.StatusBadRequest && g == "reset" && proto != "http/1.1") {
					t.Errorf("%s: authority %q answered %s, want %s", proto, tt.authority, g, want)
				}
			}
			fetched := s.origin.Total() - before
			if tt.want != http.StatusOK && fetched != 0 {
				t.Errorf("origin saw %d requests for authority %q", fetched, tt.authority)
			}
		})
	}
}

// TestHostFieldBesideAuthority: a Host field sent beside :authority is refused when it names
// another host (RFC 9113 section 8.3.1, RFC 9114 section 4.3.1: malformed), over HTTP/2 and
// HTTP/3 alike, and when it is the same it leaves the header for r.Host, as edge/h2 and
// net/http take it out: quic-go left it in, so that an answer with "Vary: Host" stored for a
// request over HTTP/1.1 or HTTP/2 (no Host in its header) was another variant than the same
// request's over HTTP/3 with a Host field, a miss and a second copy.
func TestHostFieldBesideAuthority(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	const path = "/vh?vary=Host&cc=max-age%3D600"
	if r := getWith(t, &http.Client{}, "http://"+n.Addr()+path); r.status != http.StatusOK {
		t.Fatalf("first request over HTTP/1.1: %d", r.status)
	}
	h2 := dialH2Raw(t, n.HTTPSAddr())
	h3 := dialH3Raw(t, n.HTTPSAddr())
	for i, host := range []string{testHost, "other.example"} {
		status, code := h2.request(uint32(2*i+1), ":method", "GET", ":scheme", "https", ":authority", testHost, ":path", path, "host", host)
		a := h3.request(":method", "GET", ":scheme", "https", ":authority", testHost, ":path", path, "host", host)
		if host != testHost {
			if status != 0 || code != http2.ErrCodeProtocol {
				t.Errorf("http/2: Host %q beside :authority %q: %d (reset %v), want a PROTOCOL_ERROR reset", host, testHost, status, code)
			}
			if !a.reset || a.code != http3.ErrCodeMessageError {
				t.Errorf("http/3: Host %q beside :authority %q: %d (reset %v %v), want an H3_MESSAGE_ERROR reset", host, testHost, a.status, a.reset, a.code)
			}
			continue
		}
		if status != http.StatusOK {
			t.Errorf("http/2: Host %q beside the same :authority: %d (reset %v), want 200", host, status, code)
		}
		if cs := a.header.Get("Cache-Status"); a.status != http.StatusOK || !strings.Contains(cs, "hit") {
			t.Errorf("http/3: Host %q beside the same :authority: %d %q, want a 200 hit (one variant for every protocol)", host, a.status, cs)
		}
	}
	if got := s.origin.Requests("/vh"); got != 1 {
		t.Errorf("origin saw %d requests for /vh, want 1", got)
	}
}
