package edge

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestH2AnsweredLoggedAndCounted: the requests the edge's HTTP/2 server answers itself, before
// any handler (a 400 for a malformed request, a 431 for a header list over max_header_bytes),
// are in the access log with their status, as the edge's own refusals are (cache "error", a
// note saying why), and in meridian_edge_requests_total under proto "h2". They were in
// neither: an operator looking for why HTTP/2 clients failed saw nothing. Each comes from a
// real Go client, which gets its answer on its one connection: a TE other than trailers and a
// :path with a space (URL.Opaque) were reset with PROTOCOL_ERROR, which Go's client retried on
// a new connection without end, and a 70 KiB field on a new connection got GOAWAY
// COMPRESSION_ERROR instead of its 431.
func TestH2AnsweredLoggedAndCounted(t *testing.T) {
	var out logtest.Buffer
	s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
	})
	for _, tc := range []struct {
		name   string
		path   string // sent as URL.Opaque: as given
		field  [2]string
		status int
		note   string
	}{
		{"white space", "/ws", [2]string{"X-Sp", "a "}, http.StatusBadRequest, "a field value starts or ends with white space"},
		{"te gzip", "/te", [2]string{"TE", "gzip"}, http.StatusBadRequest, "a connection-specific field, or TE other than trailers"},
		{"space in the path", "/a b", [2]string{}, http.StatusBadRequest, "a space in :path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h2, _, _, dials := oneDialClients(t)
			req, err := http.NewRequest(http.MethodGet, "https://"+n.HTTPSAddr()+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL = &url.URL{Scheme: "https", Host: n.HTTPSAddr(), Opaque: tc.path}
			req.Host = testHost
			if tc.field[0] != "" {
				req.Header.Set(tc.field[0], tc.field[1])
			}
			resp, err := h2.RoundTrip(req)
			if err != nil {
				t.Fatalf("%v (%d connections)", err, dials.Load())
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.ProtoMajor != 2 {
				t.Errorf("status %d over HTTP/%d, want %d over HTTP/2", resp.StatusCode, resp.ProtoMajor, tc.status)
			}
			if d := dials.Load(); d != 1 {
				t.Errorf("%d connections, want 1", d)
			}
			var entry map[string]any
			wait.For(t, 5*time.Second, "the access log line", func() bool {
				// The log's path is the URL's RequestURI, as for every request: "/a%20b".
				entry = accessEntry(t, out.String(), http.MethodGet, testHost, (&url.URL{Path: tc.path}).RequestURI())
				return entry != nil
			})
			for field, want := range map[string]any{"status": float64(tc.status), "proto": "h2", "cache": "error", "note": tc.note, "bytes": float64(0)} {
				if entry[field] != want {
					t.Errorf("access log %s = %v, want %v", field, entry[field], want)
				}
			}
		})
	}
	// A header list over max_header_bytes (64 KiB): a 70 KiB field from a Go client on a new
	// connection gets its 431 if it goes out before the client has read the edge's SETTINGS,
	// else the client refuses it itself ("larger than peer's advertised limit"); before, the
	// first ended with GOAWAY COMPRESSION_ERROR. In raw frames (which no limit stops), the
	// same field in three CONTINUATION frames is the 431 logged and counted.
	h2, _, _, dials := oneDialClients(t)
	req, err := http.NewRequest(http.MethodGet, "https://"+n.HTTPSAddr()+"/big-go", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = testHost
	req.Header.Set("X-Big", strings.Repeat("a", 70<<10))
	resp, err := h2.RoundTrip(req)
	switch {
	case err == nil:
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("70 KiB field: status %d, want 431", resp.StatusCode)
		}
	case !strings.Contains(err.Error(), "larger than peer's advertised limit"):
		t.Errorf("70 KiB field: %v, want a 431 or the client's own refusal", err)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("70 KiB field: %d connections, want 1", d)
	}
	raw := dialH2Raw(t, n.HTTPSAddr())
	if status := raw.requestFrames(1, 16000, ":method", "GET", ":scheme", "https", ":authority", testHost, ":path", "/big", "x-big", strings.Repeat("a", 70<<10)); status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("70 KiB field in raw frames: status %d, want 431", status)
	}
	var entry map[string]any
	wait.For(t, 5*time.Second, "the 431's access log line", func() bool {
		entry = accessEntry(t, out.String(), http.MethodGet, testHost, "/big")
		return entry != nil
	})
	for field, want := range map[string]any{"status": float64(431), "proto": "h2", "cache": "error", "note": "request header list over max_header_bytes"} {
		if entry[field] != want {
			t.Errorf("431: access log %s = %v, want %v", field, entry[field], want)
		}
	}
	want431 := 1.0
	if err == nil {
		want431 = 2
	}
	for series, want := range map[string]float64{
		`meridian_edge_requests_total{cache="error",code="400",proto="h2"}`: 3,
		`meridian_edge_requests_total{cache="error",code="431",proto="h2"}`: want431,
	} {
		if got := counterValue(t, n, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := s.origin.Total(); got != 0 {
		t.Errorf("origin saw %d requests, want none", got)
	}
}

// requestFrames is request with the header block in fragments of frag bytes, a HEADERS frame
// and CONTINUATION frames; it returns the status.
func (c *h2Raw) requestFrames(id uint32, frag int, fields ...string) int {
	c.t.Helper()
	c.buf.Reset()
	for i := 0; i < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	block := c.buf.Bytes()
	for first := true; first || len(block) > 0; first = false {
		chunk := block[:min(frag, len(block))]
		block = block[len(chunk):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: true, EndHeaders: len(block) == 0})
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	status, code := c.answer(id)
	if code != http2.ErrCodeNo {
		c.t.Errorf("stream %d: status %d, then reset %v", id, status, code)
	}
	return status
}
