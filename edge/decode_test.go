package edge

import (
	"bufio"
	"bytes"
	"cmp"
	stdgzip "compress/gzip"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// gzipOrigin ignores Accept-Encoding, as a misconfigured server or a store of pre-compressed
// files does: every answer is gzip (or ?ce=br, zstd), ETag "v1", with Content-Length and Range support
// (http.ServeContent over the gzip bytes). The body is gzipPlain(?size=, ?rand=1) under
// Cache-Control ?cc= (default max-age=60). ?stream=1 sends it without a length, flushed in
// pieces; ?corrupt=all sends the plain bytes labelled gzip, ?corrupt=crc spoils the gzip
// checksum (the last member's trailer), which a decoder sees only at the end.
func gzipOrigin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ce := cmp.Or(q.Get("ce"), "gzip")
	plain, coded := originBodies(q.Get("size"), q.Get("rand") == "1", ce)
	switch q.Get("corrupt") {
	case "all":
		coded = plain
	case "crc":
		coded = bytes.Clone(coded)
		coded[len(coded)-8] ^= 0xff
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Encoding", ce)
	h.Set("Cache-Control", cmp.Or(q.Get("cc"), "max-age=60"))
	h.Set("ETag", `"v1"`)
	if q.Get("cut") == "1" {
		// Half the body, then the connection ends: an upstream failure, not a coding one.
		h.Set("Content-Length", strconv.Itoa(len(coded)))
		w.Write(coded[:len(coded)/2])
		panic(http.ErrAbortHandler)
	}
	if q.Get("stream") == "1" {
		for len(coded) > 0 {
			n := min(len(coded), 4096)
			w.Write(coded[:n])
			w.(http.Flusher).Flush()
			coded = coded[n:]
		}
		return
	}
	if r.Header.Get("Range") == "" {
		// ServeContent leaves it out of a whole answer with a Content-Encoding.
		h.Set("Content-Length", strconv.Itoa(len(coded)))
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(coded))
}

// originBody is a body gzipOrigin has made, kept for the next request that asks for it.
type originBody struct {
	once         sync.Once
	plain, coded []byte
}

var originBodyMemo sync.Map // originBodyKey -> *originBody

type originBodyKey struct {
	size   string
	random bool
	ce     string
}

// originBodies is gzipPlain(size, random) and its coding in ce, made once per process: coding
// megabytes again for every request (under -race, on a loaded machine) took the origin past
// the edge's response_header_timeout. The slices are shared; callers must not change them.
func originBodies(size string, random bool, ce string) (plain, coded []byte) {
	v, _ := originBodyMemo.LoadOrStore(originBodyKey{size, random, ce}, new(originBody))
	b := v.(*originBody)
	b.once.Do(func() {
		b.plain = gzipPlain(size, random)
		if ce == "gzip" {
			b.coded = gzipOf(b.plain)
		} else {
			b.coded, _ = compress.Encode(ce, b.plain, 0)
		}
	})
	return b.plain, b.coded
}

// gzipPlain is gzipOrigin's body before coding: ?size= bytes (default 5000) of text that
// compresses well, or with random, hex-encoded bytes that compress to about half.
func gzipPlain(size string, random bool) []byte {
	n, _ := strconv.Atoi(size)
	if n == 0 {
		n = 5000
	}
	if !random {
		return []byte(codingBody(strconv.Itoa(n)))
	}
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	raw := make([]byte, n/2+1)
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	return []byte(hex.EncodeToString(raw)[:n])
}

func gzipOf(b []byte) []byte {
	var buf bytes.Buffer
	zw := stdgzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// gzipEdge is an edge in front of gzipOrigin, with a client that neither asks for a coding by
// itself nor decodes one, and the node's log (access log on).
func gzipEdge(t *testing.T, host func(*wire.HostConfig)) (*Node, *http.Client, *logtest.Buffer) {
	t.Helper()
	var log logtest.Buffer
	n, _ := echoEdge(t, gzipOrigin, host, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&log, nil))
	})
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	return n, c, &log
}

// checkDecoded checks an answer that must be the origin's body decoded (decoded) or its gzip
// bytes as they came.
func checkDecoded(t *testing.T, what string, r resp, plain []byte, decoded bool) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status %d, want 200 (%q)", what, r.status, r.header.Get("Cache-Status"))
	}
	if !decoded {
		coded := gzipOf(plain)
		if ce := r.header.Get("Content-Encoding"); ce != "gzip" || r.body != string(coded) {
			t.Errorf("%s: Content-Encoding %q, %d bytes; want the origin's %d gzip bytes", what, ce, len(r.body), len(coded))
		}
		if cl, ok := r.header["Content-Length"]; ok && cl[0] != strconv.Itoa(len(coded)) {
			t.Errorf("%s: Content-Length %q, want none or %d", what, cl, len(coded))
		}
		if etag := r.header.Get("ETag"); etag != `"v1"` {
			t.Errorf("%s: ETag %s, want the origin's \"v1\"", what, etag)
		}
		return
	}
	if !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("%s: Vary = %q, want Accept-Encoding in it", what, r.header.Get("Vary"))
	}
	if ce := r.header.Get("Content-Encoding"); ce != "" || r.body != string(plain) {
		t.Errorf("%s: Content-Encoding %q, %d bytes (%.20q); want the %d bytes decoded", what, ce, len(r.body), r.body, len(plain))
	}
	// The decoded length is known only at the end; the coded one is not the answer's.
	for _, k := range []string{"Content-Length", "Accept-Ranges"} {
		if v, ok := r.header[k]; ok {
			t.Errorf("%s: %s %q on a decoded answer", what, k, v)
		}
	}
	if etag := r.header.Get("ETag"); etag != `W/"v1"` {
		t.Errorf("%s: ETag %s, want the origin's made weak, W/\"v1\"", what, etag)
	}
}

// TestGzipOriginDecodedForClient: an origin that ignores Accept-Encoding and always answers
// gzip reaches a client that cannot decode it (no Accept-Encoding, identity, gzip;q=0, or
// only another coding) decoded on the way out, as from Varnish and nginx's gunzip, on every
// way an answer takes: a small fill and its hits, a streaming miss, an answer not stored, a
// pass and a sliced object. Before, such a client got the gzip bytes. A client that accepts
// gzip still gets them as they came.
func TestGzipOriginDecodedForClient(t *testing.T) {
	const sliceBytes = 64 << 10
	n, c, _ := gzipEdge(t, func(h *wire.HostConfig) {
		h.Cache.MaxObjectBytes = 100 << 10
		h.Cache.SliceBytes = sliceBytes
	})
	clients := []struct {
		name    string
		ae      []string
		decoded bool
	}{
		{"no Accept-Encoding", nil, true},
		{"identity", []string{"identity"}, true},
		{"gzip;q=0", []string{"gzip;q=0"}, true},
		{"br only", []string{"br"}, true},
		{"gzip", []string{"gzip"}, false},
		{"gzip, br", []string{"gzip, br"}, false},
		{"any", []string{"*"}, false},
	}
	for _, way := range []struct {
		name, method, query string
		hits                bool // a second request is a hit
	}{
		{"small", http.MethodGet, "", true},
		{"streaming miss", http.MethodGet, "size=200000&rand=1", true},
		{"streaming miss without length", http.MethodGet, "size=60000&rand=1&stream=1", true},
		{"not stored", http.MethodGet, "cc=no-store", false},
		{"not stored without length", http.MethodGet, "cc=no-store&stream=1", false},
		{"pass", http.MethodPost, "cc=no-store", false},
		{"pass without length", http.MethodPost, "cc=no-store&stream=1", false},
		{"sliced", http.MethodGet, "size=400000&rand=1", true},
	} {
		t.Run(way.name, func(t *testing.T) {
			q := way.query
			plain := gzipPlain(queryValue(q, "size"), queryValue(q, "rand") == "1")
			if way.name == "sliced" && len(gzipOf(plain)) < 2*sliceBytes {
				t.Fatalf("sliced: %d gzip bytes, too few for slices", len(gzipOf(plain)))
			}
			for _, cl := range clients {
				target := "/" + strings.ReplaceAll(cl.name, " ", "-") + "?" + q
				var hdr []string
				for _, v := range cl.ae {
					hdr = append(hdr, "Accept-Encoding", v)
				}
				for round := range 2 {
					r := do(t, c, way.method, n.Addr(), testHost, target, hdr...)
					what := way.name + ", " + cl.name + ", round " + strconv.Itoa(round)
					checkDecoded(t, what, r, plain, cl.decoded)
					// Sent as it came, it is still an answer another client gets decoded: what
					// a cache downstream may reuse depends on Accept-Encoding, whichever way it
					// took (a pass had no Vary).
					if vary := r.header.Get("Vary"); !strings.Contains(vary, "Accept-Encoding") {
						t.Errorf("%s: Vary = %q, want Accept-Encoding in it", what, vary)
					}
					if cs := r.header.Get("Cache-Status"); way.hits && round == 1 && !strings.Contains(cs, "hit") {
						t.Errorf("%s: Cache-Status %q, want a hit", what, cs)
					}
				}
			}
		})
	}
}

func queryValue(q, k string) string {
	for kv := range strings.SplitSeq(q, "&") {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v
		}
	}
	return ""
}

// TestBrotliZstdOriginDecodedForClient: br and zstd answers are decoded for a client that
// does not accept them as gzip ones are (their decoders are the edge's already), and reach
// one that does as they came.
func TestBrotliZstdOriginDecodedForClient(t *testing.T) {
	n, c, _ := gzipEdge(t, nil)
	plain := gzipPlain("", false)
	for _, ce := range []string{"br", "zstd"} {
		for _, tt := range []struct {
			ae      string
			decoded bool
		}{{"", true}, {"gzip", true}, {ce, false}, {"gzip, " + ce, false}} {
			for round := range 2 {
				what := ce + " for Accept-Encoding " + tt.ae + ", round " + strconv.Itoa(round)
				var hdr []string
				if tt.ae != "" {
					hdr = []string{"Accept-Encoding", tt.ae}
				}
				r := do(t, c, http.MethodGet, n.Addr(), testHost, "/"+ce+"?ce="+ce, hdr...)
				if !tt.decoded {
					if r.status != http.StatusOK || r.header.Get("Content-Encoding") != ce || r.header.Get("ETag") != `"v1"` {
						t.Errorf("%s: status %d, Content-Encoding %q, ETag %s; want 200, %s, \"v1\"", what, r.status,
							r.header.Get("Content-Encoding"), r.header.Get("ETag"), ce)
					}
					if got := decodeBody(t, ce, []byte(r.body)); !bytes.Equal(got, plain) {
						t.Errorf("%s: body decodes to %d bytes, not the origin's", what, len(got))
					}
					continue
				}
				checkDecoded(t, what, r, plain, true)
			}
		}
	}
}

// TestGzipOriginNoTransform: an answer with Cache-Control: no-transform (or in
// CDN-Cache-Control) keeps its coding whoever asks (RFC 9110 §7.7: a proxy must not change
// it then): the client that cannot decode it gets it as it came.
func TestGzipOriginNoTransform(t *testing.T) {
	n, c, _ := gzipEdge(t, nil)
	plain := gzipPlain("", false)
	for _, cc := range []string{"max-age=60, no-transform", "no-store, no-transform"} {
		for round := range 2 {
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nt?cc="+strings.ReplaceAll(cc, " ", "%20"))
			checkDecoded(t, cc+", round "+strconv.Itoa(round), r, plain, false)
		}
	}
}

// TestGzipOriginDecodedHeadAndConditionals: for a client that cannot decode gzip, HEAD gets the
// decoded answer's header (no Content-Encoding, no Content-Length, the weak tag), a
// conditional request is answered against the decoded answer's weak tag, and a Range gets
// the whole decoded answer (as from nginx's gunzip: ranges of decoded bytes would need all
// the bytes before them decoded). A client that accepts gzip gets the gzip bytes' ranges.
func TestGzipOriginDecodedHeadAndConditionals(t *testing.T) {
	n, c, _ := gzipEdge(t, nil)
	plain := gzipPlain("", false)
	coded := gzipOf(plain)
	const target = "/cond"
	for _, round := range []string{"miss", "hit"} {
		r := do(t, c, http.MethodHead, n.Addr(), testHost, target)
		if r.status != http.StatusOK || r.body != "" || r.header.Get("ETag") != `W/"v1"` {
			t.Errorf("HEAD %s: status %d, %d bytes, ETag %s; want 200, none, W/\"v1\"", round, r.status, len(r.body), r.header.Get("ETag"))
		}
		for _, k := range []string{"Content-Encoding", "Content-Length"} {
			if v, ok := r.header[k]; ok {
				t.Errorf("HEAD %s: %s %q", round, k, v)
			}
		}
	}
	for _, tt := range []struct {
		name       string
		hdr        []string
		wantStatus int
		wantBody   string
		wantETag   string
	}{
		{"If-None-Match weak", []string{"If-None-Match", `W/"v1"`}, http.StatusNotModified, "", `W/"v1"`},
		{"If-None-Match strong", []string{"If-None-Match", `"v1"`}, http.StatusNotModified, "", `W/"v1"`},
		{"If-None-Match other", []string{"If-None-Match", `"v0"`}, http.StatusOK, string(plain), `W/"v1"`},
		{"If-Match", []string{"If-Match", `"v1"`}, http.StatusPreconditionFailed, "", `W/"v1"`}, // strong comparison
		{"Range", []string{"Range", "bytes=0-9"}, http.StatusOK, string(plain), `W/"v1"`},
		{"Range, gzip accepted", []string{"Range", "bytes=0-9", "Accept-Encoding", "gzip"}, http.StatusPartialContent, string(coded[:10]), `"v1"`},
		{"If-None-Match, gzip accepted", []string{"If-None-Match", `W/"v1"`, "Accept-Encoding", "gzip"}, http.StatusNotModified, "", `"v1"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, http.MethodGet, n.Addr(), testHost, target, tt.hdr...)
			if r.status != tt.wantStatus || r.body != tt.wantBody || r.header.Get("ETag") != tt.wantETag {
				t.Errorf("status %d, %d bytes, ETag %s; want %d, %d bytes, %s", r.status, len(r.body), r.header.Get("ETag"),
					tt.wantStatus, len(tt.wantBody), tt.wantETag)
			}
			if tt.wantStatus == http.StatusNotModified && r.header.Get("Content-Encoding") != "" {
				t.Errorf("304 with Content-Encoding %q", r.header.Get("Content-Encoding"))
			}
		})
	}
}

// TestGzipOriginCorrupt: a body labelled gzip that does not decode reaches a client that
// cannot decode it as an error, never as garbage or a complete-looking answer: a 502 when the
// failure comes before the first decoded bytes went out (not gzip at all; a bad checksum on
// a body that fits in the first read), the answer cut short after. The log says why. A
// client that accepts gzip gets the bytes as they came, as before.
func TestGzipOriginCorrupt(t *testing.T) {
	n, c, log := gzipEdge(t, nil)
	for _, tt := range []struct {
		name, query string
		wantStatus  int
		cut         bool // the answer is cut short
		wantNote    string
		upstream    bool // the upstream failed, not the coding: no warning, and gzip clients get a cut answer too
	}{
		{"not gzip", "corrupt=all", http.StatusBadGateway, false, "decode gzip: gzip: invalid header", false},
		{"not gzip, not stored", "corrupt=all&cc=no-store", http.StatusBadGateway, false, "decode gzip: gzip: invalid header", false},
		{"not gzip, pass", "corrupt=all&cc=no-store&method=POST", http.StatusBadGateway, false, "decode gzip: gzip: invalid header", false},
		{"bad checksum", "corrupt=crc", http.StatusBadGateway, false, "decode gzip: gzip: invalid checksum", false},
		{"bad checksum, large", "corrupt=crc&size=200000&rand=1", http.StatusOK, true, "decode gzip: gzip: invalid checksum", false},
		{"bad checksum, large, pass", "corrupt=crc&size=200000&rand=1&cc=no-store&method=POST", http.StatusOK, true, "decode gzip: gzip: invalid checksum", false},
		{"upstream cut", "cut=1&size=200000&rand=1", http.StatusOK, true, "stream aborted", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			method := cmp.Or(queryValue(tt.query, "method"), http.MethodGet)
			target := "/corrupt/" + strings.ReplaceAll(tt.name, " ", "-") + "?" + tt.query
			for round := range 2 {
				req, _ := http.NewRequest(method, "http://"+n.Addr()+target, nil)
				req.Host = testHost
				res, err := c.Do(req)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != tt.wantStatus {
					t.Fatalf("round %d: status %d, want %d", round, res.StatusCode, tt.wantStatus)
				}
				if tt.cut && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("round %d: read the answer: %v, want it cut short (unexpected EOF)", round, err)
				}
				if !tt.cut && (err != nil || res.Header.Get("Content-Encoding") != "") {
					t.Errorf("round %d: %v, Content-Encoding %q; want a whole error answer", round, err, res.Header.Get("Content-Encoding"))
				}
				if tt.cut && len(body) > 200000 {
					t.Errorf("round %d: %d bytes, more than the body", round, len(body))
				}
			}
			wait.For(t, 5*time.Second, "the access log notes why", func() bool {
				return logNote(t, log, "request", target, "note") != ""
			})
			if note := logNote(t, log, "request", target, "note"); !strings.Contains(note, tt.wantNote) {
				t.Errorf("access log note %q, want it to say %q", note, tt.wantNote)
			}
			warned := logNote(t, log, "answer in a coding its client does not accept could not be decoded", strings.Split(target, "?")[0], "err") != ""
			if warned == tt.upstream {
				t.Errorf("warning logged: %v, want %v", warned, !tt.upstream)
			}
			if tt.upstream {
				return
			}
			// A client that accepts gzip is not the edge's to protect: the bytes as they came.
			req, _ := http.NewRequest(method, "http://"+n.Addr()+target, nil)
			req.Host = testHost
			req.Header.Set("Accept-Encoding", "gzip")
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Encoding") != "gzip" {
				t.Errorf("gzip accepted: status %d, Content-Encoding %q; want 200, gzip", res.StatusCode, res.Header.Get("Content-Encoding"))
			}
		})
	}
}

// logNote returns the attribute attr of the last log line with message msg for path.
func logNote(t *testing.T, log *logtest.Buffer, msg, path, attr string) string {
	t.Helper()
	v := ""
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["msg"] == msg && m["path"] == path {
			v, _ = m[attr].(string)
		}
	}
	return v
}

// TestGzipOriginDecodedEveryProtocol: the decoding is the same over HTTP/1.1, HTTP/1.1 over
// TLS, HTTP/2 (the edge's own server and net/http's) and HTTP/3, and so is a body that does not
// decode: a 502 at once, cut short (a reset stream) later.
func TestGzipOriginDecodedEveryProtocol(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(gzipOrigin))
	plain := gzipPlain("200000", true)
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
				c.HTTP2 = h2server
				for i := range c.Hosts {
					c.Hosts[i].Origin = "http://" + originAddr
				}
			})
			h1tls := insecure(testHost)
			h1tls.NextProtos = []string{"http/1.1"}
			h3t := &http3.Transport{TLSClientConfig: insecure(testHost), DisableCompression: true}
			defer h3t.Close()
			for _, p := range []struct {
				name, url string
				rt        http.RoundTripper
			}{
				{"http/1.1", "http://" + n.Addr(), &http.Transport{DisableCompression: true}},
				{"https http/1.1", "https://" + n.HTTPSAddr(), &http.Transport{TLSClientConfig: h1tls, DisableCompression: true}},
				{"http/2", "https://" + n.HTTPSAddr(), &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true, DisableCompression: true}},
				{"http/3", "https://" + n.HTTPSAddr(), h3t},
			} {
				c := &http.Client{Transport: p.rt}
				for _, q := range []string{"size=200000&rand=1", "size=200000&rand=1&cc=no-store", "corrupt=all",
					"corrupt=crc&size=200000&rand=1"} {
					for _, ae := range []string{"", "gzip"} {
						what := p.name + " " + q + " Accept-Encoding " + ae
						req, _ := http.NewRequest(http.MethodGet, p.url+"/p/"+strings.ReplaceAll(p.name, " ", "-")+"?"+q, nil)
						req.Host = testHost
						if ae != "" {
							req.Header.Set("Accept-Encoding", ae)
						}
						res, err := c.Do(req)
						if err != nil && p.name == "http/3" && strings.HasPrefix(q, "corrupt=crc") && ae == "" {
							// The stream's reset can overtake its HEADERS frame: QUIC may drop
							// what a reset stream had sent, so the client sees no answer at all.
							// Cut short either way, never complete.
							continue
						}
						if err != nil {
							t.Fatalf("%s: %v", what, err)
						}
						body, err := io.ReadAll(res.Body)
						res.Body.Close()
						if strings.HasPrefix(q, "corrupt=crc") && ae == "" {
							// Found at the end, after the header and most bytes went out.
							if res.StatusCode != http.StatusOK || err == nil {
								t.Errorf("%s: status %d, read error %v; want a 200 cut short", what, res.StatusCode, err)
							}
							continue
						}
						if err != nil {
							t.Fatalf("%s: read: %v", what, err)
						}
						r := resp{status: res.StatusCode, header: res.Header, body: string(body)}
						if strings.HasPrefix(q, "corrupt=") {
							if ae == "" && r.status != http.StatusBadGateway {
								t.Errorf("%s: status %d, want 502", what, r.status)
							}
							continue
						}
						checkDecoded(t, what, r, plain, ae == "")
					}
				}
			}
		})
	}
}

// TestGzipOriginDecodedOnceInFleet: a fleet node that fills from its peer gets the copy as the
// peer stores it, gzip, stores that, and decodes it for its own client: the node facing the
// client decodes, once, and its copy serves clients that accept gzip as well as others.
func TestGzipOriginDecodedOnceInFleet(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(gzipOrigin))
	f := newFleet(t, []int{2}, noShield, func(c *Config) { c.Hosts[0].Origin = "http://" + originAddr })
	requester, owner := f.nodes[0], f.nodes[1]
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	plain := gzipPlain("", false)
	p := ownedBy(requester, owner.cfg.Node, "/fleet", "size", "5000")
	r := do(t, c, http.MethodGet, requester.Addr(), testHost, p)
	wantCacheStatus(t, r, "fwd=miss", "detail=peer")
	checkDecoded(t, "through the peer", r, plain, true)
	for name, n := range map[string]*Node{"requester": requester, "owner": owner} {
		obj, _, _ := n.store.Lookup(n.key(p), http.Header{})
		if obj == nil {
			t.Fatalf("%s: nothing stored", name)
		}
		if ce, etag := obj.HeaderValue("Content-Encoding"), obj.HeaderValue("ETag"); ce != "gzip" || etag != `"v1"` {
			t.Errorf("%s: stored Content-Encoding %q, ETag %s; want the origin's gzip answer as it came", name, ce, etag)
		}
	}
	r = do(t, c, http.MethodGet, requester.Addr(), testHost, p)
	wantCacheStatus(t, r, "hit")
	checkDecoded(t, "hit", r, plain, true)
}

// TestCodedEmptyBodyDecoded: an answer labelled with a coding but without a byte of body (a
// redirect, a Content-Length: 0: the origin's compression labels what it did not compress)
// reaches a client that does not accept the coding as the empty answer it is, as Go's client
// and browsers read it, on every way an answer takes. Before, gzip's decoder found no header
// and br's no stream, and every such answer, a redirect included, became a 502.
func TestCodedEmptyBodyDecoded(t *testing.T) {
	origin := func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		h := w.Header()
		h.Set("Content-Encoding", q.Get("ce"))
		h.Set("Cache-Control", q.Get("cc"))
		h.Set("ETag", `"v1"`)
		h.Set("Content-Length", "0")
		status := http.StatusOK
		if q.Get("redirect") == "1" {
			h.Set("Location", "/elsewhere")
			status = http.StatusMovedPermanently
		}
		w.WriteHeader(status)
	}
	n, _ := echoEdge(t, origin, nil, nil)
	c := &http.Client{
		Transport:     &http.Transport{DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(c.CloseIdleConnections)
	for _, ce := range []string{"gzip", "br", "zstd"} {
		for _, tt := range []struct {
			name, method, query string
			status              int
		}{
			{"stored", http.MethodGet, "cc=max-age=60", http.StatusOK},
			{"redirect stored", http.MethodGet, "cc=max-age=60&redirect=1", http.StatusMovedPermanently},
			{"not stored", http.MethodGet, "cc=no-store", http.StatusOK},
			{"pass", http.MethodPost, "cc=no-store", http.StatusOK},
			{"redirect passed", http.MethodPost, "cc=no-store&redirect=1", http.StatusMovedPermanently},
		} {
			target := "/empty/" + ce + "/" + strings.ReplaceAll(tt.name, " ", "-") + "?ce=" + ce + "&" + tt.query
			for round := range 2 {
				what := ce + ", " + tt.name + ", round " + strconv.Itoa(round)
				r := do(t, c, tt.method, n.Addr(), testHost, target)
				if r.status != tt.status || r.body != "" || r.header.Get("Content-Encoding") != "" || r.header.Get("ETag") != `W/"v1"` {
					t.Errorf("%s: %d %q, Content-Encoding %q, ETag %s; want %d, no body, none, W/\"v1\"", what, r.status, r.body,
						r.header.Get("Content-Encoding"), r.header.Get("ETag"), tt.status)
				}
			}
			// A client that accepts the coding gets the answer as it came.
			r := do(t, c, tt.method, n.Addr(), testHost, target, "Accept-Encoding", ce)
			if r.status != tt.status || r.body != "" || r.header.Get("Content-Encoding") != ce {
				t.Errorf("%s, %s accepted: %d %q, Content-Encoding %q; want %d, no body, %s", ce, tt.name, r.status, r.body,
					r.header.Get("Content-Encoding"), tt.status, ce)
			}
		}
	}
}

// TestGzipOriginNoTransformUnderResponsePolicy: the origin's no-transform keeps its coding on
// a pass as on every other way, when the host's response policy sets or removes the client's
// Cache-Control: the origin's answer is what RFC 9110 §7.7 protects, not the field the client
// gets. Before, a pass looked at the field after the policy, and decoded.
func TestGzipOriginNoTransformUnderResponsePolicy(t *testing.T) {
	plain := gzipPlain("", false)
	for _, policy := range []struct {
		name string
		p    wire.ResponseHeaders
	}{
		{"set", wire.ResponseHeaders{Set: map[string]string{"Cache-Control": "private, no-cache"}}},
		{"deny", wire.ResponseHeaders{Deny: []string{"Cache-Control"}}},
	} {
		t.Run(policy.name, func(t *testing.T) {
			n, c, _ := gzipEdge(t, func(h *wire.HostConfig) { h.ResponseHeaders = policy.p })
			for _, way := range []struct{ name, method, cc string }{
				{"stored", http.MethodGet, "max-age=60, no-transform"},
				{"not stored", http.MethodGet, "no-store, no-transform"},
				{"pass", http.MethodPost, "no-store, no-transform"},
			} {
				r := do(t, c, way.method, n.Addr(), testHost, "/nt/"+policy.name+"?cc="+strings.ReplaceAll(way.cc, " ", "%20"))
				checkDecoded(t, way.name, r, plain, false)
			}
		})
	}
}
