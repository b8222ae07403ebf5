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
