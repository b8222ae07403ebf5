package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go/http3"
)

// TestEdgeSpaceValueAnswered: a request field whose value starts or ends with white space
// (SP or HTAB) is malformed over HTTP/2 (RFC 9113, section 8.2.1), and the edge's own HTTP/2
// server answers it 400, as section 8.2.1 asks (section 8.1.1 lets a server answer a
// malformed request before it ends the stream), without passing it on. It reset the stream
// with PROTOCOL_ERROR and no answer: Go's HTTP/2 client retries a request so reset on a new
// connection, and did without end (a TLS handshake each time, thousands a second, the
// request never answered); curl reported a stream error. HTTP/1.1 (RFC 9112 §5: the white
// space around a value is no part of it), HTTP/3 and x/net's server (http2: std) serve it
// with the value trimmed.
func TestEdgeSpaceValueAnswered(t *testing.T) {
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.HTTP2 = h2server })
			h2, h1tls, h3t, dials := oneDialClients(t)
			h2want := http.StatusOK
			if h2server == HTTP2Fast {
				h2want = http.StatusBadRequest
			}
			for i, c := range []struct {
				proto protoClient
				want  int
			}{
				{protoClient{"http/1.1", "http://" + n.Addr(), &http.Transport{}}, http.StatusOK},
				{protoClient{"https http/1.1", "https://" + n.HTTPSAddr(), &http.Transport{TLSClientConfig: h1tls}}, http.StatusOK},
				{protoClient{"http/2", "https://" + n.HTTPSAddr(), h2}, h2want},
				{protoClient{"http/3", "https://" + n.HTTPSAddr(), h3t}, http.StatusOK},
			} {
				for _, value := range []string{"a ", " a", "a\t"} {
					path := fmt.Sprintf("/o?cc=max-age%%3D60&p=%d", i)
					r := c.proto.do(t, http.MethodGet, path, "X-Sp", value)
					if r.status != c.want {
						t.Errorf("%s: X-Sp %q: status %d %q, want %d", c.proto.name, value, r.status, r.header.Get("Cache-Status"), c.want)
					}
				}
			}
			if got := dials.Load(); got != 1 {
				t.Errorf("the HTTP/2 client made %d connections, want 1", got)
			}
			if got, want := s.origin.Requests("/o"), int64(3); h2server == HTTP2Fast && got != want {
				t.Errorf("origin saw %d requests, want %d (one for each protocol but HTTP/2, whose requests are refused)", got, want)
			}
		})
	}
}

// TestEdgeSpaceTrailerAnswered: a request trailer field whose value starts or ends with white
// space is malformed over HTTP/2 too (RFC 9113, section 8.2.1), but Go's HTTP/2 client sends
// such trailers, and the edge's own HTTP/2 server reset the stream with PROTOCOL_ERROR: Go's
// client retried the request on a new connection without end (thousands of connections in
// ten seconds, the request never answered), as it did for such a header field before
// d79979a. Now the request's body fails (the trailers come after it), and the edge, which
// reads a body whole before it passes a request on, answers 400 over the one connection,
// without asking the origin (section 8.1.1: a malformed request is not forwarded; section
// 8.2.1: a 400). HTTP/1.1, HTTP/3 and x/net's server (http2: std) serve it (the edge
// forwards no trailers).
func TestEdgeSpaceTrailerAnswered(t *testing.T) {
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.HTTP2 = h2server })
			h2, h1tls, h3t, dials := oneDialClients(t)
			// The origin answers a POST to /o 204; the edge's HTTP/2 server fails the body, which
			// the edge reads whole before it passes a request on: 400, the origin never asked.
			h2want, originWant := http.StatusNoContent, int64(9)
			if h2server == HTTP2Fast {
				h2want, originWant = http.StatusBadRequest, 6
			}
			for _, c := range []struct {
				name string
				rt   http.RoundTripper
				want int
			}{
				{"https http/1.1", &http.Transport{TLSClientConfig: h1tls}, http.StatusNoContent},
				{"http/2", h2, h2want},
				{"http/3", h3t, http.StatusNoContent},
			} {
				for _, value := range []string{"a ", " a", "a\t"} {
					req, err := http.NewRequest(http.MethodPost, "https://"+n.HTTPSAddr()+"/o", strings.NewReader("body"))
					if err != nil {
						t.Fatal(err)
					}
					req.Host = testHost
					req.Trailer = http.Header{"X-T": {value}}
					resp, err := c.rt.RoundTrip(req)
					if err != nil {
						t.Errorf("%s: trailer X-T %q: %v", c.name, value, err)
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != c.want {
						t.Errorf("%s: trailer X-T %q: status %d, want %d", c.name, value, resp.StatusCode, c.want)
					}
				}
			}
			if got := dials.Load(); got != 1 {
				t.Errorf("the HTTP/2 client made %d connections, want 1", got)
			}
			if got := s.origin.Requests("/o"); got != originWant {
				t.Errorf("origin saw %d requests, want %d", got, originWant)
			}
		})
	}
}

// oneDialClients are the TLS clients of the white-space tests: an HTTP/2 transport that fails a
// second dial (Go's client dials again to retry a request whose stream was reset; dials counts
// them), the TLS config of an HTTP/1.1-only client, and an HTTP/3 transport; closed when the
// test ends.
func oneDialClients(t *testing.T) (h2 *http.Transport, h1tls *tls.Config, h3t *http3.Transport, dials *atomic.Int64) {
	dials = new(atomic.Int64)
	h2 = &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: insecure(testHost),
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				return nil, errors.New("a second connection for one request")
			}
			cfg := insecure(testHost)
			cfg.NextProtos = []string{"h2"}
			return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
		}}
	t.Cleanup(h2.CloseIdleConnections)
	h1tls = insecure(testHost)
	h1tls.NextProtos = []string{"http/1.1"}
	h3t = &http3.Transport{TLSClientConfig: insecure(testHost)}
	t.Cleanup(func() { h3t.Close() })
	return h2, h1tls, h3t, dials
}

// TestH2ForbiddenTrailerAnswered: request trailers with a connection-specific field or a TE
// other than trailers make the request malformed (RFC 9113, section 8.2.2); Go's HTTP/2 client
// sends them (all but Transfer-Encoding) as given. The edge's HTTP/2 server reset the stream
// with PROTOCOL_ERROR, and Go's client retried the request on a new connection without end.
// Now the body fails, and the edge, which reads a body whole before it passes a request on,
// answers 400 without asking the origin, as for a trailer value with white space
// (TestEdgeSpaceTrailerAnswered).
func TestH2ForbiddenTrailerAnswered(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	for _, field := range [][2]string{{"Connection", "close"}, {"Keep-Alive", "1"}, {"Te", "gzip"}} {
		h2, _, _, dials := oneDialClients(t)
		req, err := http.NewRequest(http.MethodPost, "https://"+n.HTTPSAddr()+"/o", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = testHost
		req.Trailer = http.Header{field[0]: {field[1]}}
		resp, err := h2.RoundTrip(req)
		if err != nil {
			t.Errorf("trailer %s: %v (%d connections)", field, err, dials.Load())
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || dials.Load() != 1 {
			t.Errorf("trailer %s: status %d over %d connections, want 400 over 1", field, resp.StatusCode, dials.Load())
		}
	}
	if got := s.origin.Requests("/o"); got != 0 {
		t.Errorf("origin saw %d requests, want none", got)
	}
}
