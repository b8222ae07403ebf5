package edge

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestUnstoredAnswerCutShortShowsItsHead: a small answer the edge does not keep (a no-store
// GET, a POST passed through) whose body the origin cuts short reaches the client as nginx and
// Varnish (streaming) relay it: its head and the bytes that came, then the cut, which the
// client can tell (fewer bytes than Content-Length, no last chunk). The HTTP/1.1 servers held
// such an answer's head back until the body's end, and dropped it at the abort: the client
// got the connection's close and nothing else, while the log said 200; so did a GET of a
// range of it from its first byte, answered as the body arrives (streamRange). Over HTTP/3 the reset
// of the stream may take the head with it (QUIC drops what it has not delivered).
func TestUnstoredAnswerCutShortShowsItsHead(t *testing.T) {
	answers := map[string]string{
		"/nostore-length":  "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nCache-Control: no-store\r\nX-Origin: yes\r\n\r\nhello",
		"/nostore-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: no-store\r\nX-Origin: yes\r\n\r\n5\r\nhello\r\n",
		"/post-length":     "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Origin: yes\r\n\r\nhello",
		"/post-chunked":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Origin: yes\r\n\r\n5\r\nhello\r\n",
	}
	o := startScriptOrigin(t, "127.0.0.68", func(c net.Conn, r *http.Request, _ int) bool {
		io.WriteString(c, answers[r.URL.Path])
		return true // the cut
	})
	var out logtest.Buffer
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}
	})
	for _, pc := range everyProtocol(t, n) {
		for _, tt := range []struct {
			name, path string
			hdr        []string // name, value
			status     int
		}{
			{"", "/nostore-length", nil, http.StatusOK},
			{"", "/nostore-chunked", nil, http.StatusOK},
			{"", "/post-length", nil, http.StatusOK},
			{"", "/post-chunked", nil, http.StatusOK},
			// A range from the first byte: no skip to it flushed the head (rangeSource).
			{"-range", "/nostore-length", []string{"Range", "bytes=0-8"}, http.StatusPartialContent},
		} {
			path := tt.path
			t.Run(pc.name+path+tt.name, func(t *testing.T) {
				method, body := http.MethodGet, io.Reader(nil)
				if strings.HasPrefix(path, "/post") {
					method, body = http.MethodPost, strings.NewReader("x")
				}
				// The path is made the protocol's and the case's own, for its log line.
				target := path + "?" + strings.ReplaceAll(pc.name, " ", "-") + tt.name
				req, err := http.NewRequest(method, pc.url+target, body)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = testHost
				if tt.hdr != nil {
					req.Header.Set(tt.hdr[0], tt.hdr[1])
				}
				r, err := (&http.Client{Transport: pc.rt}).Do(req)
				if err != nil && pc.name == "http/3" {
					// QUIC's reset of the stream may drop what was sent on it before (without
					// RESET_STREAM_AT, which the client must offer): the head may be lost with the
					// rest, never the cut.
					return
				}
				if err != nil {
					t.Fatalf("%s %s: %v; want the answer's head, then its cut", method, path, err)
				}
				got, err := io.ReadAll(r.Body)
				r.Body.Close()
				want := []byte("hello")
				if pc.name == "http/3" && bytes.HasPrefix(want, got) {
					// The reset may drop the bytes sent after the head as well (under -race, one
					// run in a few did): never the cut.
					want = got
				}
				if r.StatusCode != tt.status || r.Header.Get("X-Origin") != "yes" || err == nil || !bytes.Equal(got, want) {
					t.Errorf("%s %s = %d (X-Origin %q), body %q, read error %v; want %d from the origin, %q, then an error",
						method, path, r.StatusCode, r.Header.Get("X-Origin"), got, err, tt.status, "hello")
				}
				note := ""
				wait.For(t, 5*time.Second, "the access log line", func() bool {
					note = accessNote(t, out.String(), method, testHost, target)
					return note != ""
				})
				if !strings.Contains(note, "unexpected EOF") {
					t.Errorf("%s %s logged with note %q, want the origin's cut", method, path, note)
				}
			})
		}
	}
}
