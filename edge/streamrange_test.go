package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// streamRangeBody is the body of size bytes the range origins below serve: a byte pattern of
// period 251, so a range cut at the wrong offset does not match.
func streamRangeBody(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// TestStreamedRange: an answer the edge passes on without keeping it, too large (over
// max_object_bytes, under a weak ETag, so not sliced: the fill's readers share it as it
// streams) or not storable (private, no-store: the client's own stream), answers a client's
// single Range as nginx's range filter does: a 206 of that range's bytes, cut out of the
// upstream body, or a 416 past the end, If-Range honoured as on a stored object. It used to
// be a 200 of the whole object for every Range: a player seeking 500 MB into a 1 GB video
// got the video from byte 0.
func TestStreamedRange(t *testing.T) {
	const size = 3<<20 + 5
	body := streamRangeBody(size)
	lastModified := time.Now().Add(-time.Hour).UTC().Truncate(time.Second) // strong: an hour before Date
	objects := []struct{ path, cc, etag string }{
		{"/weak", "max-age=600", `W/"w1"`},
		{"/private", "private, max-age=60", `"p1"`}, // over one slice: its first slice and the rest
		{"/no-store", "no-store", `W/"n1"`},
	}
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, o := range objects {
			if o.path == r.URL.Path {
				w.Header().Set("Cache-Control", o.cc)
				w.Header().Set("ETag", o.etag)
			}
		}
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeContent(w, r, "", lastModified, bytes.NewReader(body))
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}}
	cfg.Cache.MaxObjectBytes = 1 << 20
	n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)

	lm := lastModified.Format(http.TimeFormat)
	other := lastModified.Add(-time.Minute).Format(http.TimeFormat)
	tests := []struct {
		name     string
		method   string
		hdr      func(etag string) []string
		want     int
		wantWeak int // want under a weak ETag, where it differs
		first    int // the 206's first and last byte
		last     int
	}{
		{name: "start", hdr: rangeOnly("bytes=0-99"), want: 206, first: 0, last: 99},
		{name: "middle", hdr: rangeOnly("bytes=1048576-2097151"), want: 206, first: 1 << 20, last: 2<<20 - 1},
		{name: "open end", hdr: rangeOnly("bytes=3000000-"), want: 206, first: 3000000, last: size - 1},
		{name: "suffix", hdr: rangeOnly("bytes=-500"), want: 206, first: size - 500, last: size - 1},
		{name: "last byte past the end", hdr: rangeOnly("bytes=3145000-9999999"), want: 206, first: 3145000, last: size - 1},
		{name: "past the end", hdr: rangeOnly(fmt.Sprintf("bytes=%d-", size)), want: 416},
		{name: "empty suffix", hdr: rangeOnly("bytes=-0"), want: 416},
		{name: "one satisfiable of two", hdr: rangeOnly(fmt.Sprintf("bytes=10-19,%d-", size)), want: 206, first: 10, last: 19},
		{name: "several ranges", hdr: rangeOnly("bytes=0-9,100-109"), want: 200},
		{name: "invalid", hdr: rangeOnly("bytes=9-5"), want: 200},
		{name: "other unit", hdr: rangeOnly("items=0-5"), want: 200},
		// Range is defined for GET alone (RFC 9110 §14.2; TestRangeOnHeadIgnored).
		{name: "HEAD", method: http.MethodHead, hdr: rangeOnly("bytes=10-19"), want: 200},
		// An entity-tag is compared strongly (RFC 9110 §13.1.5): a weak one never matches.
		{name: "If-Range entity-tag", hdr: func(etag string) []string { return []string{"Range", "bytes=10-19", "If-Range", etag} },
			want: 206, wantWeak: 200, first: 10, last: 19},
		{name: "If-Range other entity-tag", hdr: func(string) []string { return []string{"Range", "bytes=10-19", "If-Range", `"other"`} }, want: 200},
		{name: "If-Range date", hdr: func(string) []string { return []string{"Range", "bytes=10-19", "If-Range", lm} }, want: 206, first: 10, last: 19},
		{name: "If-Range other date", hdr: func(string) []string { return []string{"Range", "bytes=10-19", "If-Range", other} }, want: 200},
		{name: "If-None-Match first", hdr: func(etag string) []string { return []string{"Range", "bytes=10-19", "If-None-Match", etag} }, want: 304},
		{name: "If-Match fails first", hdr: func(string) []string { return []string{"Range", "bytes=10-19", "If-Match", `"other"`} }, want: 412},
	}
	for _, o := range objects {
		// What the answer whole says of the edge's part in it, which a range of it says too.
		plain := do(t, c, http.MethodGet, n.Addr(), testHost, o.path+"?plain")
		if plain.status != http.StatusOK || plain.body != string(body) {
			t.Fatalf("%s without Range: status %d, right bytes %v", o.path, plain.status, plain.body == string(body))
		}
		for i, tt := range tests {
			t.Run(strings.TrimPrefix(o.path, "/")+"/"+tt.name, func(t *testing.T) {
				method := tt.method
				if method == "" {
					method = http.MethodGet
				}
				want := tt.want
				if tt.wantWeak != 0 && strings.HasPrefix(o.etag, "W/") {
					want = tt.wantWeak
				}
				// A fill of its own: none still streaming for another request to read along.
				r := do(t, c, method, n.Addr(), testHost, o.path+"?row="+strconv.Itoa(i), tt.hdr(o.etag)...)
				cr := r.header.Get("Content-Range")
				switch want {
				case http.StatusPartialContent:
					wantCR := fmt.Sprintf("bytes %d-%d/%d", tt.first, tt.last, size)
					wantBody := string(body[tt.first : tt.last+1])
					if method == http.MethodHead {
						wantBody = ""
					}
					if r.status != want || cr != wantCR || r.header.Get("Content-Length") != strconv.Itoa(tt.last-tt.first+1) || r.body != wantBody {
						t.Errorf("status %d, Content-Range %q, Content-Length %q, %d body bytes, right bytes %v; want 206, %s",
							r.status, cr, r.header.Get("Content-Length"), len(r.body), r.body == wantBody, wantCR)
					}
				case http.StatusRequestedRangeNotSatisfiable:
					if r.status != want || cr != fmt.Sprintf("bytes */%d", size) {
						t.Errorf("status %d, Content-Range %q; want 416, bytes */%d", r.status, cr, size)
					}
				case http.StatusOK:
					wantBody := string(body)
					if method == http.MethodHead {
						wantBody = ""
					}
					if r.status != want || cr != "" || r.header.Get("Content-Length") != strconv.Itoa(size) || r.body != wantBody {
						t.Errorf("status %d, Content-Range %q, Content-Length %q, right bytes %v; want 200 with the whole object",
							r.status, cr, r.header.Get("Content-Length"), r.body == wantBody)
					}
				default:
					if r.status != want || r.body != "" {
						t.Errorf("status %d with %d body bytes, want %d without a body", r.status, len(r.body), want)
					}
				}
				if cs, want := r.header.Get("Cache-Status"), plain.header.Get("Cache-Status"); cs != want {
					t.Errorf("Cache-Status %q, want the whole answer's %q", cs, want)
				}
				if r.status != http.StatusRequestedRangeNotSatisfiable && r.header.Get("Etag") != o.etag {
					t.Errorf("%d: ETag %q, want the origin's %q", r.status, r.header.Get("Etag"), o.etag)
				}
			})
		}
	}
}

// rangeOnly is a TestStreamedRange header of a Range alone.
func rangeOnly(v string) func(string) []string {
	return func(string) []string { return []string{"Range", v} }
}

// TestStreamedRangeEndsAtItsLastByte: the 206 cut out of an answer that streams through ends
// with the range's last byte, without waiting for the rest of the upstream body, and the
// client's connection carries exactly the range (the next answer on it parses); another
// client reading the same fill whole is not affected. The origin sends half of the object and
// then waits until the test ends: the edge used to send such a client the object from byte 0,
// and could not end the answer before the origin did.
func TestStreamedRangeEndsAtItsLastByte(t *testing.T) {
	const size = 4 << 20
	body := streamRangeBody(size)
	for _, tt := range []struct {
		name, cc  string
		shared    bool  // a second client reads the same fill whole, and the ranged ones read along
		wholeGets int64 // origin answers of the whole object
	}{
		{"too large", "max-age=600", true, 1},
		{"private", "private", false, 2}, // one per ranged client
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			var once sync.Once
			releaseOrigin := func() { once.Do(func() { close(release) }) }
			var wholeGets atomic.Int64
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", tt.cc)
				w.Header().Set("ETag", `W/"v1"`) // weak: not sliced, and the first slice is asked for again whole
				w.Header().Set("Content-Type", "video/mp4")
				switch {
				case r.URL.Path == "/small":
					http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body[:1000]))
					return
				case r.Header.Get("Range") != "": // the fill's first slice
					http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
					return
				}
				wholeGets.Add(1)
				w.Header().Set("Content-Length", strconv.Itoa(size))
				w.Write(body[:size/2])
				w.(http.Flusher).Flush()
				select { // the rest only once the test is over
				case <-release:
					w.Write(body[size/2:])
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(releaseOrigin) // before the origin stops: cleanups run last in, first out
			var log logtest.Buffer
			cfg := Config{PoP: "tst", Node: "e1", AccessLog: true, Logger: slog.New(slog.NewJSONHandler(&log, nil)),
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}}
			cfg.Cache.MaxObjectBytes = 1 << 20
			n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)

			var whole *http.Response
			if tt.shared {
				// The first client starts the fill and reads along; the ranged one joins it.
				c, err := net.Dial("tcp", n.Addr())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				whole = rawGet(t, c, "/video", "")
				if _, err := io.ReadFull(whole.Body, make([]byte, 1)); err != nil {
					t.Fatalf("first byte of the whole object: %v", err)
				}
			}
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const first, last = 1_000_000, 1_999_999 // within the half the origin sent
			r := rawGet(t, c, "/video", "Range: bytes=1000000-1999999\r\n")
			if cr := fmt.Sprintf("bytes %d-%d/%d", first, last, size); r.StatusCode != http.StatusPartialContent ||
				r.Header.Get("Content-Range") != cr || r.ContentLength != last-first+1 {
				t.Fatalf("status %d, Content-Range %q, Content-Length %d; want 206, %s, %d",
					r.StatusCode, r.Header.Get("Content-Range"), r.ContentLength, cr, last-first+1)
			}
			got, err := io.ReadAll(r.Body)
			if err != nil {
				t.Fatalf("read the 206 while the origin holds back the rest: %v", err)
			}
			if !bytes.Equal(got, body[first:last+1]) {
				t.Fatalf("206 of %d bytes, not the object's bytes %d-%d", len(got), first, last)
			}
			// Nothing follows the range on the connection but the next answer.
			next := rawGet(t, c, "/small", "")
			if b, err := io.ReadAll(next.Body); err != nil || next.StatusCode != http.StatusOK || !bytes.Equal(b, body[:1000]) {
				t.Fatalf("next answer on the connection: status %d, %d bytes, err %v; want 200 of 1000 bytes", next.StatusCode, len(b), err)
			}
			var line map[string]any
			wait.For(t, 5*time.Second, "the ranged request's access log line", func() bool {
				for l := range strings.SplitSeq(log.String(), "\n") {
					var m map[string]any
					if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["path"] == "/video" && m["status"] == float64(206) {
						line = m
						return true
					}
				}
				return false
			})
			if line["bytes"] != float64(last-first+1) {
				t.Errorf("access log: bytes %v, want %d", line["bytes"], last-first+1)
			}

			// A range past what the origin sent so far: the 206's header comes while the bytes
			// before the range go by, not after them.
			c2, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			const first2, last2 = size - 1000, size - 1
			r2 := rawGet(t, c2, "/video", "Range: bytes=-1000\r\n")
			if cr := fmt.Sprintf("bytes %d-%d/%d", first2, last2, size); r2.StatusCode != http.StatusPartialContent || r2.Header.Get("Content-Range") != cr {
				t.Fatalf("range past the origin's half: status %d, Content-Range %q; want 206, %s", r2.StatusCode, r2.Header.Get("Content-Range"), cr)
			}
			releaseOrigin()
			if got, err := io.ReadAll(r2.Body); err != nil || !bytes.Equal(got, body[first2:]) {
				t.Errorf("range past the origin's half: %d bytes, err %v, right bytes %v", len(got), err, bytes.Equal(got, body[first2:]))
			}
			if tt.shared {
				b, err := io.ReadAll(whole.Body)
				if err != nil || whole.StatusCode != http.StatusOK || !bytes.Equal(append([]byte{body[0]}, b...), body) {
					t.Fatalf("the fill's other reader: status %d, %d bytes, err %v; want the whole object", whole.StatusCode, len(b)+1, err)
				}
			}
			if got := wholeGets.Load(); got != tt.wholeGets {
				t.Errorf("origin answered %d whole GETs, want %d", got, tt.wholeGets)
			}
		})
	}
}

// TestStreamedRangeContentCoding: a Range on an answer that streams through is cut only where
// the bytes sent are the bytes the origin sent. To a client that accepts the origin's gzip, the
// range is of the gzip bytes, as on a stored coded variant; to one that does not, the answer
// is decoded as it arrives and sent whole (a range of decoded bytes would need every byte
// before it decoded), as before.
func TestStreamedRangeContentCoding(t *testing.T) {
	const size = "4000000" // hex of random bytes: about 2 MiB of gzip, over max_object_bytes

	plain, coded := originBodies(size, true, "gzip") // the origin's own bytes, coded once
	n, c, _ := gzipEdge(t, func(h *wire.HostConfig) {
		h.Cache.DisableSlices = true // the ETag is strong
		h.Cache.MaxObjectBytes = 1 << 20
	})
	for _, cc := range []string{"max-age=600", "private"} { // too large to keep; not storable
		tests := []struct {
			name    string
			hdr     []string
			want    int
			body    []byte
			coding  string
			cr      string // Content-Range
			withLen bool   // a Content-Length of body
		}{
			{"range of the coded bytes", []string{"Accept-Encoding", "gzip", "Range", "bytes=100-199"},
				206, coded[100:200], "gzip", fmt.Sprintf("bytes 100-199/%d", len(coded)), true},
			{"If-Range does not match", []string{"Accept-Encoding", "gzip", "Range", "bytes=100-199", "If-Range", `"other"`},
				200, coded, "gzip", "", true},
			{"decoded for the client", []string{"Range", "bytes=100-199"}, 200, plain, "", "", false},
		}
		for i, tt := range tests {
			t.Run(cc+"/"+tt.name, func(t *testing.T) {
				target := obj("/coded", "rand", "1", "size", size, "cc", cc, "row", strconv.Itoa(i))
				r := do(t, c, http.MethodGet, n.Addr(), testHost, target, tt.hdr...)
				if r.status != tt.want || r.header.Get("Content-Encoding") != tt.coding || r.header.Get("Content-Range") != tt.cr ||
					r.body != string(tt.body) {
					t.Errorf("status %d, Content-Encoding %q, Content-Range %q, %d bytes, right bytes %v; want %d, %q, %q, %d bytes",
						r.status, r.header.Get("Content-Encoding"), r.header.Get("Content-Range"), len(r.body), r.body == string(tt.body),
						tt.want, tt.coding, tt.cr, len(tt.body))
				}
				if cl, ok := r.header["Content-Length"]; ok != tt.withLen || ok && cl[0] != strconv.Itoa(len(tt.body)) {
					t.Errorf("Content-Length %q, want one of %d: %v", cl, len(tt.body), tt.withLen)
				}
			})
		}
	}
}
