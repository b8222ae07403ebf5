package edge

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// The first fill of a host that slices asks the origin for the first slice only
// (slices.go, firstSlice). These tests hold it to three things: it costs the origin exactly
// the object, it is invisible to clients (an ordinary 200 with the origin's header, whatever
// the size, Vary, Cache-Control), and it never joins two versions.

// wantWhole checks that r is an ordinary 200 of the origin's body (version, size) for path.
func wantWhole(t *testing.T, r resp, path string, version, size int) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200", r.status)
	}
	if got := r.header.Get("Content-Length"); got != strconv.Itoa(size) {
		t.Errorf("Content-Length %q, want %d", got, size)
	}
	if cr := r.header.Get("Content-Range"); cr != "" {
		t.Errorf("Content-Range %q on an answer to a request without Range", cr)
	}
	if sha256.Sum256([]byte(r.body)) != originSum(t, path, version, size) {
		t.Errorf("%d body bytes, not the origin's v%d of %d bytes", len(r.body), version, size)
	}
}

func TestFirstFillAsksForFirstSliceOnly(t *testing.T) {
	const size = 10 << 20 // 5 slices, over the default 8 MiB object limit
	s := slicedEdge(t)
	path := "/first/big.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	r := s.get(t, target)
	wantWhole(t, r, path, 1, size)
	if got := r.header.Get("ETag"); got != origin.ETag(path, 1, size) {
		t.Errorf("ETag %q, want the origin's %q", got, origin.ETag(path, 1, size))
	}
	// One request per slice, the first included, and not a byte more than the object: a
	// whole GET first would have had the origin send more before the edge closed it.
	if got := s.origin.Requests(path); got != 5 {
		t.Errorf("origin saw %d requests, want 5 (one per 2 MiB slice)", got)
	}
	if got := s.origin.BytesSent(path); got != size {
		t.Errorf("origin sent %d body bytes, want exactly the object's %d", got, size)
	}
	// Stored in slices: HEAD and a hit cost nothing more.
	h := do(t, s.client, http.MethodHead, s.edge.Addr(), testHost, target)
	if h.status != http.StatusOK || h.header.Get("Content-Length") != strconv.Itoa(size) || h.body != "" {
		t.Errorf("HEAD: status %d, Content-Length %q; want 200, %d", h.status, h.header.Get("Content-Length"), size)
	}
	wantCacheStatus(t, s.get(t, target), "hit")
	if got := s.origin.Requests(path); got != 5 {
		t.Errorf("HEAD and a hit made the origin requests: %d in all, want 5", got)
	}
}

// TestFirstSliceAnswersAreOrdinary: on a host that slices (the default), every object, of any
// size and caching policy, reaches the client as an ordinary 200 with the origin's header.
func TestFirstSliceAnswersAreOrdinary(t *testing.T) {
	tests := []struct {
		name     string
		size     int
		params   []string
		requests int64 // origin requests for one fill
		bytes    int64 // origin body bytes for one fill; -1: at most size plus one slice
		stored   bool
	}{
		{name: "1 KiB", size: 1024, requests: 1, bytes: 1024, stored: true},
		{name: "one slice exactly", size: 2 << 20, requests: 1, bytes: 2 << 20, stored: true},
		// Over one slice, under the object limit: the rest is fetched bound by the strong ETag.
		{name: "3 MiB", size: 3 << 20, requests: 2, bytes: 3 << 20, stored: true},
		// No strong ETag to bind two parts by: asked for again, whole.
		{name: "3 MiB without ETag", size: 3 << 20, params: []string{"etag", "0"}, requests: 2, bytes: -1, stored: true},
		{name: "no-store", size: 1024, params: []string{"cc", "no-store"}, requests: 1, bytes: 1024},
		{name: "no-store 10 MiB", size: 10 << 20, params: []string{"cc", "no-store"}, requests: 2, bytes: 10 << 20},
		{name: "private 3 MiB", size: 3 << 20, params: []string{"cc", "private, max-age=60"}, requests: 2, bytes: 3 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, nil)
			path := "/small/" + strings.ReplaceAll(tt.name, " ", "-")
			params := append([]string{"size", strconv.Itoa(tt.size), "cc", "max-age=600"}, tt.params...)
			target := obj(path, params...)
			r := s.get(t, target)
			wantWhole(t, r, path, 1, tt.size)
			if tt.params == nil || tt.params[0] != "etag" {
				if got := r.header.Get("ETag"); got != origin.ETag(path, 1, tt.size) {
					t.Errorf("ETag %q, want the origin's %q", got, origin.ETag(path, 1, tt.size))
				}
			}
			wantCC := "max-age=600"
			if len(tt.params) == 2 && tt.params[0] == "cc" {
				wantCC = tt.params[1]
			}
			if got := r.header.Get("Cache-Control"); got != wantCC {
				t.Errorf("Cache-Control %q, want the origin's %q", got, wantCC)
			}
			if got := s.origin.Requests(path); got != tt.requests {
				t.Errorf("origin saw %d requests, want %d", got, tt.requests)
			}
			got := s.origin.BytesSent(path)
			if tt.bytes >= 0 && got != tt.bytes || tt.bytes < 0 && got > int64(tt.size)+defaultSliceBytes {
				t.Errorf("origin sent %d body bytes, want %d", got, tt.bytes)
			}
			if tt.stored {
				wantCacheStatus(t, r, "stored")
				wantCacheStatus(t, s.get(t, target), "hit")
				if got := s.origin.Requests(path); got != tt.requests {
					t.Errorf("the hit went to the origin")
				}
			} else {
				wantWhole(t, s.get(t, target), path, 1, tt.size)
				if got := s.origin.Requests(path); got != 2*tt.requests {
					t.Errorf("origin saw %d requests for two GETs of an answer not stored, want %d", got, 2*tt.requests)
				}
			}
		})
	}
}

// TestFirstSliceCompressed: a text object over one slice is joined from two parts, then
// compressed once at the edge as any other.
func TestFirstSliceCompressed(t *testing.T) {
	const size = 3 << 20
	s := newSingle(t, nil)
	path := "/first/text"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600", "ct", "text/plain")
	for _, want := range []string{"stored", "hit"} {
		r := s.get(t, target, "Accept-Encoding", "gzip")
		if r.status != http.StatusOK || r.header.Get("Content-Encoding") != "gzip" || r.header.Get("Content-Range") != "" ||
			r.header.Get("Content-Length") != strconv.Itoa(len(r.body)) {
			t.Fatalf("status %d, Content-Encoding %q, Content-Range %q, Content-Length %q for %d bytes; want a gzip 200",
				r.status, r.header.Get("Content-Encoding"), r.header.Get("Content-Range"), r.header.Get("Content-Length"), len(r.body))
		}
		wantCacheStatus(t, r, want)
		zr, err := gzip.NewReader(strings.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(plain, originBytes(t, path, 1, size)) {
			t.Errorf("gunzipped body: %d bytes, err %v; want the origin's %d bytes", len(plain), err, size)
		}
	}
	if got, reqs := s.origin.BytesSent(path), s.origin.Requests(path); got != size || reqs != 2 {
		t.Errorf("origin sent %d body bytes in %d requests, want %d in 2", got, reqs, size)
	}
}

// TestFirstSliceEmptyObject: an empty object has no first byte. Go's file server answers the
// range with a 200; nginx answers 416, and the fill then asks again without Range. Either way
// the client gets an empty 200, stored.
func TestFirstSliceEmptyObject(t *testing.T) {
	s := newSingle(t, nil)
	path := "/empty"
	target := obj(path, "size", "0", "cc", "max-age=600")
	r := s.get(t, target)
	wantWhole(t, r, path, 1, 0)
	wantCacheStatus(t, r, "fwd-status=200", "stored")
	wantCacheStatus(t, s.get(t, target), "hit")

	// An origin that answers a range of an empty object as nginx does.
	var ranged, plain atomic.Int64
	ln := listen(t, "127.0.0.12")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
			w.Header().Set("Content-Range", "bytes */0")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		plain.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"empty"`)
		w.Header().Set("Content-Length", "0")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e, _ := startEdge(t, listen(t, "127.0.0.13"), Config{PoP: "tst", Node: "e2",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + ln.Addr().String()}}})
	for i, want := range []string{"stored", "hit"} {
		r := do(t, s.client, http.MethodGet, e.Addr(), testHost, "/empty")
		if r.status != http.StatusOK || r.header.Get("Content-Length") != "0" || r.header.Get("Content-Range") != "" ||
			r.header.Get("ETag") != `"empty"` {
			t.Errorf("GET %d: status %d, Content-Length %q, Content-Range %q, ETag %q; want 200, 0, none, \"empty\"",
				i, r.status, r.header.Get("Content-Length"), r.header.Get("Content-Range"), r.header.Get("ETag"))
		}
		wantCacheStatus(t, r, want)
	}
	if ranged.Load() != 1 || plain.Load() != 1 {
		t.Errorf("origin saw %d ranged and %d plain requests, want 1 and 1", ranged.Load(), plain.Load())
	}
}

// TestFirstSliceVary: each variant is filled with its own first-slice request and stored with
// the origin's Vary.
func TestFirstSliceVary(t *testing.T) {
	s := newSingle(t, nil)
	path := "/vary"
	target := obj(path, "size", "5000", "cc", "max-age=600", "vary", "Accept-Language")
	for i, lang := range []string{"en", "fr", "en"} {
		r := s.get(t, target, "Accept-Language", lang)
		want := origin.Body(origin.VariantPath(path, []string{"Accept-Language"}, http.Header{"Accept-Language": {lang}}), 1, 5000)
		if r.status != http.StatusOK || r.body != string(want) || r.header.Get("Content-Range") != "" ||
			r.header.Get("Content-Length") != "5000" {
			t.Fatalf("%s: status %d, Content-Length %q, Content-Range %q, right body %v; want 200, 5000, none, true",
				lang, r.status, r.header.Get("Content-Length"), r.header.Get("Content-Range"), r.body == string(want))
		}
		if !strings.Contains(r.header.Get("Vary"), "Accept-Language") {
			t.Errorf("%s: Vary %q, want Accept-Language", lang, r.header.Get("Vary"))
		}
		if i == 2 {
			wantCacheStatus(t, r, "hit")
		}
	}
	if got := s.origin.Requests(path); got != 2 {
		t.Errorf("origin saw %d requests for two variants, want 2", got)
	}
}

// TestFirstSliceConditionalsAndHead: a miss that is a HEAD or a conditional request is answered
// from the filled object; revalidation sends the validators with the first-slice Range, and
// the origin's 304 refreshes what is stored.
func TestFirstSliceConditionalsAndHead(t *testing.T) {
	s := newSingle(t, nil)
	path := "/cond"
	const size = 4000
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=60")
	etag := origin.ETag(path, 1, size)
	h := do(t, s.client, http.MethodHead, s.edge.Addr(), testHost, target)
	if h.status != http.StatusOK || h.header.Get("Content-Length") != strconv.Itoa(size) || h.body != "" ||
		h.header.Get("Content-Range") != "" {
		t.Errorf("HEAD miss: status %d, Content-Length %q, Content-Range %q; want 200, %d, none",
			h.status, h.header.Get("Content-Length"), h.header.Get("Content-Range"), size)
	}
	if r := s.get(t, target, "If-None-Match", etag); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match with the object's tag: status %d, want 304", r.status)
	}
	if got := s.origin.Requests(path); got != 1 {
		t.Errorf("origin saw %d requests, want 1", got)
	}
	s.clock.Advance(61e9)
	r := s.get(t, target)
	wantWhole(t, r, path, 1, size)
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=304")
	if got := s.origin.LastHeader(path).Get("If-None-Match"); got != etag {
		t.Errorf("revalidation sent If-None-Match %q, want %q", got, etag)
	}
	// The object changed: the revalidation's answer (the whole new version in one part) is
	// an ordinary 200.
	s.origin.Bump(path)
	s.clock.Advance(61e9)
	r = s.get(t, target)
	wantWhole(t, r, path, 2, size)
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=200", "stored")
}

// TestFirstSliceRevalidatesSlices: a stale sliced object is revalidated with one request, and a
// 304 keeps its slices.
func TestFirstSliceRevalidatesSlices(t *testing.T) {
	const size = 10 << 20
	s := slicedEdge(t)
	path := "/first/reval.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=60")
	fillSliced(t, s, path, target, 1, size)
	reqs, sent := s.origin.Requests(path), s.origin.BytesSent(path)
	s.clock.Advance(61e9)
	r := s.get(t, target)
	wantWhole(t, r, path, 1, size)
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=304")
	if got := s.origin.Requests(path) - reqs; got != 1 {
		t.Errorf("revalidation made %d origin requests, want 1", got)
	}
	if got := s.origin.BytesSent(path) - sent; got != 0 {
		t.Errorf("revalidation with a 304 cost the origin %d body bytes", got)
	}
}

// TestFirstSliceNeverJoinsVersions: the object changes after its first part was sent and
// before the rest is asked for; the rest is asked for under If-Range, so the origin sends the
// new version whole and that is what the client gets and the edge stores.
func TestFirstSliceNeverJoinsVersions(t *testing.T) {
	const size = 3 << 20
	s := newSingle(t, nil)
	path := "/first/changing"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	// It changes once its first byte is sent: the first part's header reaches the edge only
	// after that, so the request for the rest always finds the new version.
	s.origin.SetFault(path, origin.Fault{BumpAfter: 1})
	r := s.get(t, target)
	wantWhole(t, r, path, 2, size)
	if s.origin.Version(path) != 2 {
		t.Fatalf("origin version = %d, want 2 (the fault did not fire)", s.origin.Version(path))
	}
	if got := s.origin.LastHeader(path).Get("If-Range"); got != origin.ETag(path, 1, size) {
		t.Errorf("the request for the rest sent If-Range %q, want the first part's tag", got)
	}
	wantWhole(t, s.get(t, target), path, 2, size)
}

// TestFirstSliceOriginIgnoringRange: a small answer of an origin that ignores Range is just
// the answer, and does not stop the origin's large objects being sliced; a large one does.
func TestFirstSliceOriginIgnoringRange(t *testing.T) {
	s := slicedEdge(t)
	small := "/norange/small"
	r := s.get(t, obj(small, "size", "3000", "cc", "max-age=600", "norange", "1"))
	wantWhole(t, r, small, 1, 3000)
	wantCacheStatus(t, r, "stored")
	const size = 10 << 20
	big := "/norange/big"
	fillSliced(t, s, big, obj(big, "size", strconv.Itoa(size), "cc", "max-age=600"), 1, size)
	if got := s.origin.BytesSent(big); got != size {
		t.Errorf("a large object after a small answer without Range cost the origin %d bytes, want %d (sliced)", got, size)
	}
}

// TestSlicesThroughTiers: slices are fetched like fills, through the key's owner and the
// shield PoP, so a large object asked for on every node of two PoPs costs the origin one copy
// (each slice once, from the shield), and every node answers it whole.
func TestSlicesThroughTiers(t *testing.T) {
	const size = 10 << 20 // 5 slices
	f := newFleet(t, []int{2, 2}, func(string) string { return "p0" }, nil)
	path := "/tiers/big.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	want := originSum(t, path, 1, size)
	// The PoP that is not the shield first, so its slices go through it.
	for _, i := range []int{2, 3, 0, 1} {
		n := f.nodes[i]
		r := do(t, f.client, http.MethodGet, n.Addr(), testHost, target)
		if r.status != http.StatusOK || sha256.Sum256([]byte(r.body)) != want {
			t.Fatalf("%s: status %d, %d bytes; want 200 with the origin's bytes", n.Name(), r.status, len(r.body))
		}
	}
	if got, reqs := f.origin.BytesSent(path), f.origin.Requests(path); got != size || reqs != 5 {
		t.Errorf("origin sent %d body bytes in %d requests for 4 nodes, want %d in 5 (one per slice)", got, reqs, size)
	}
	// A range on any node is served from slices held in the fleet.
	r := do(t, f.client, http.MethodGet, f.nodes[3].Addr(), testHost, target, "Range", "bytes=9000000-9000009")
	if r.status != http.StatusPartialContent || r.body != string(originBytes(t, path, 1, size)[9000000:9000010]) {
		t.Errorf("range on %s: status %d; want 206 with the origin's bytes", f.nodes[3].Name(), r.status)
	}
	if reqs := f.origin.Requests(path); reqs != 5 {
		t.Errorf("origin saw %d requests after a range, want 5", reqs)
	}
}

// cannedOrigin answers every request on ip with answer, as it is, until the test ends.
func cannedOrigin(t *testing.T, ip, answer string) string {
	t.Helper()
	ln := listen(t, ip)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if _, err := io.WriteString(c, answer); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// TestFirstSliceWholeContentLength: a first slice that is the whole object keeps its
// Content-Length only when the field says the length as the edge would write it; otherwise
// (leading zeros, the field twice, chunked) the client still gets one Content-Length, the
// object's: on the miss and the hit of a stored answer, and on every pass of a private one,
// which streams the origin's fields through.
func TestFirstSliceWholeContentLength(t *testing.T) {
	const cr = "Content-Range: bytes 0-4/5\r\n"
	for i, tc := range []struct{ name, fields, body string }{
		{"plain", "Content-Length: 5\r\n" + cr, "hello"},
		{"leading zeros", "Content-Length: 0005\r\n" + cr, "hello"},
		{"twice", "Content-Length: 5\r\nContent-Length: 5\r\n" + cr, "hello"},
		{"chunked", "Transfer-Encoding: chunked\r\n" + cr, "5\r\nhello\r\n0\r\n\r\n"},
		{"keep-alive", "Connection: keep-alive\r\nContent-Length: 5\r\n" + cr, "hello"},
	} {
		for _, st := range []struct{ cc, second string }{{"max-age=60", "; hit"}, {"private", "fwd=miss"}} {
			t.Run(tc.name+" "+st.cc, func(t *testing.T) {
				addr := cannedOrigin(t, "127.0.0.10", "HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\n"+
					"Cache-Control: "+st.cc+"\r\nETag: \"e\"\r\n"+tc.fields+"\r\n"+tc.body)
				e, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
					Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
				path := "/w" + strconv.Itoa(i)
				for _, want := range []string{"fwd=miss", st.second} {
					c, err := net.Dial("tcp", e.Addr())
					if err != nil {
						t.Fatal(err)
					}
					io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: close\r\n\r\n")
					raw, err := io.ReadAll(c)
					c.Close()
					if err != nil {
						t.Fatal(err)
					}
					r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
					if err != nil {
						t.Fatalf("%s: %v in %q", want, err, raw)
					}
					body, _ := io.ReadAll(r.Body)
					if r.StatusCode != http.StatusOK || string(body) != "hello" || len(r.Header["Content-Length"]) != 1 ||
						r.Header.Get("Content-Length") != "5" || r.Header.Get("Content-Range") != "" ||
						!strings.Contains(r.Header.Get("Cache-Status"), want) {
						t.Errorf("%q; want a 200 (Cache-Status with %q) of \"hello\" with one Content-Length: 5 and no Content-Range", raw, want)
					}
				}
			})
		}
	}
}

// TestFirstSliceKeepsAcceptRanges: the 200 a first-slice 206 stands for says the object is
// served by ranges, as the origin's own 200 does. nginx sends Accept-Ranges in its 200s but
// not in its 206s, and the edge, which asked it for a range, stored and sent its objects
// without the field, a plain request through the edge seeing less than one to nginx.
func TestFirstSliceKeepsAcceptRanges(t *testing.T) {
	for _, size := range []int{1 << 10, 3 << 20, 10 << 20} { // one part, two joined, slices
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := w.Header()
				h.Set("ETag", `"ng"`)
				h.Set("Cache-Control", "max-age=600")
				h.Set("Content-Type", "application/octet-stream")
				var first, last int
				if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last); err != nil || first >= len(body) {
					h.Set("Accept-Ranges", "bytes") // as nginx: in its 200s only
					h.Set("Content-Length", strconv.Itoa(len(body)))
					w.Write(body)
					return
				}
				last = min(last, len(body)-1)
				h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(body)))
				h.Set("Content-Length", strconv.Itoa(last-first+1))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(body[first : last+1])
			}))
			e, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{}
			defer c.CloseIdleConnections()
			for _, want := range []string{"fwd=miss", "hit"} {
				r := do(t, c, http.MethodGet, e.Addr(), testHost, "/ranged.bin")
				if r.status != http.StatusOK || r.body != string(body) || !strings.Contains(r.header.Get("Cache-Status"), want) {
					t.Fatalf("GET: %d, %d bytes, Cache-Status %q; want 200 of %d bytes, %s", r.status, len(r.body), r.header.Get("Cache-Status"), len(body), want)
				}
				if got := r.header.Get("Accept-Ranges"); got != "bytes" {
					t.Errorf("%s: Accept-Ranges %q, want the origin's 200's bytes", want, got)
				}
			}
		})
	}
}
