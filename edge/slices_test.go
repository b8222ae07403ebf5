package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// originBytes is the reference origin's body for path.
func originBytes(t *testing.T, path string, version, size int) []byte {
	t.Helper()
	b, err := io.ReadAll(origin.OpenBody(path, version, size))
	if err != nil {
		t.Fatalf("read origin body: %v", err)
	}
	return b
}

// slicedEdge is an edge whose store holds a 64 MiB object with room to spare.
func slicedEdge(t *testing.T) *single {
	return newSingle(t, func(c *Config) { c.Cache.MaxBytes = 512 << 20 })
}

func TestSlicedFlashCrowd(t *testing.T) {
	const size = 64 << 20
	s := slicedEdge(t)
	path := "/video.mp4"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600", "ct", "video/mp4")
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(c.CloseIdleConnections)
	want := originSum(t, path, 1, size)
	for i, r := range flashCrowd(t, c, s.edge.Addr(), target, 20, func() bool { return true }) {
		if r.err != nil || r.status != http.StatusOK || r.n != size || r.sum != want {
			t.Fatalf("client %d: status %d, %d bytes, err %v, right bytes %v", i, r.status, r.n, r.err, r.sum == want)
		}
	}
	// The first fill asks for the first slice only, and each slice is fetched once: exactly
	// the object. A slice the store dropped on admission may be fetched again, hence the
	// margin of one slice.
	if got := s.origin.BytesSent(path); got > size+defaultSliceBytes {
		t.Errorf("origin sent %d body bytes for 20 clients, want at most %d (the object and one slice)", got, size+defaultSliceBytes)
	} else if got != size {
		t.Logf("origin sent %d body bytes for 20 clients (object %d)", got, size)
	}
	// Every slice and the manifest are stored: the next client costs the origin nothing.
	before := s.origin.BytesSent(path)
	r := flashCrowd(t, c, s.edge.Addr(), target, 1, func() bool { return true })[0]
	if r.err != nil || r.sum != want || !strings.Contains(r.cacheStatus, "hit") {
		t.Errorf("after the crowd: err %v, right bytes %v, Cache-Status %q; want a hit with the origin's bytes", r.err, r.sum == want, r.cacheStatus)
	}
	if got := s.origin.BytesSent(path) - before; got != 0 {
		t.Errorf("a hit on the sliced object cost the origin %d bytes", got)
	}
}

// fillSliced fills target (size bytes) through the edge and checks the answer.
func fillSliced(t *testing.T, s *single, path, target string, version, size int) {
	t.Helper()
	r := s.get(t, target)
	if r.status != http.StatusOK || sha256.Sum256([]byte(r.body)) != originSum(t, path, version, size) {
		t.Fatalf("fill of %s: status %d, %d bytes; want 200 with the origin's v%d", target, r.status, len(r.body), version)
	}
}

func TestSlicedRanges(t *testing.T) {
	const size = 9<<20 + 12345 // 5 slices, the last one short
	s := slicedEdge(t)
	path := "/installer.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	fillSliced(t, s, path, target, 1, size)
	body := originBytes(t, path, 1, size)
	sent := s.origin.BytesSent(path)
	tests := []struct {
		rng         string
		first, last int // inclusive
	}{
		{"bytes=0-9", 0, 9},
		{"bytes=2097150-2097160", 2097150, 2097160}, // across a slice boundary
		{"bytes=-100", size - 100, size - 1},
		{"bytes=9437000-", 9437000, size - 1},
		{"bytes=1000000-7000000", 1000000, 7000000}, // four slices
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			r := s.get(t, target, "Range", tt.rng)
			wantCR := fmt.Sprintf("bytes %d-%d/%d", tt.first, tt.last, size)
			if r.status != http.StatusPartialContent || r.header.Get("Content-Range") != wantCR {
				t.Fatalf("Range %s: status %d, Content-Range %q; want 206, %q", tt.rng, r.status, r.header.Get("Content-Range"), wantCR)
			}
			if r.body != string(body[tt.first:tt.last+1]) {
				t.Errorf("Range %s: %d bytes, not the origin's bytes %d-%d", tt.rng, len(r.body), tt.first, tt.last)
			}
		})
	}
	t.Run("multipart", func(t *testing.T) {
		r := s.get(t, target, "Range", "bytes=0-4, 5000000-5000009")
		wantParts(t, r, body, [][2]int{{0, 4}, {5000000, 5000009}})
	})
	t.Run("conditional", func(t *testing.T) {
		r := s.get(t, target, "If-None-Match", origin.ETag(path, 1, size))
		if r.status != http.StatusNotModified {
			t.Errorf("If-None-Match with the object's tag: status %d, want 304", r.status)
		}
	})
	t.Run("head", func(t *testing.T) {
		r := do(t, s.client, http.MethodHead, s.edge.Addr(), testHost, target)
		if r.status != http.StatusOK || r.header.Get("Content-Length") != strconv.Itoa(size) || r.body != "" {
			t.Errorf("HEAD: status %d, Content-Length %q, %d body bytes; want 200, %d, none",
				r.status, r.header.Get("Content-Length"), len(r.body), size)
		}
	})
	if got := s.origin.BytesSent(path) - sent; got != 0 {
		t.Errorf("ranges from stored slices cost the origin %d bytes", got)
	}
	// An evicted slice is fetched alone, with Range.
	s.edge.store.Delete(s.edge.key(target) + slicePart(2, defaultSliceBytes, origin.ETag(path, 1, size)))
	r := s.get(t, target, "Range", "bytes=4194304-4194313")
	if r.status != http.StatusPartialContent || r.body != string(body[4194304:4194314]) {
		t.Fatalf("range in an evicted slice: status %d", r.status)
	}
	if got, want := s.origin.BytesSent(path)-sent, int64(defaultSliceBytes); got != want {
		t.Errorf("refetching one slice cost the origin %d bytes, want %d", got, want)
	}
	if got := s.origin.LastHeader(path).Get("Range"); got != "bytes=4194304-6291455" {
		t.Errorf("slice fetch sent Range %q, want bytes=4194304-6291455", got)
	}
}

func TestSlicedNeverStitched(t *testing.T) {
	const size = 12 << 20
	s := slicedEdge(t)
	path := "/changing.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	v1, v2 := originSum(t, path, 1, size), originSum(t, path, 2, size)
	// getWhole reports whether a GET came back complete, failing the test if it mixes versions.
	getWhole := func() bool {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.edge.Addr()+target, nil)
		req.Host = testHost
		r, err := s.client.Do(req)
		if err != nil {
			return false
		}
		h := sha256.New()
		_, rerr := io.Copy(h, r.Body)
		r.Body.Close()
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		if rerr == nil && sum != v1 && sum != v2 {
			t.Fatalf("a complete answer mixes versions (status %d)", r.StatusCode)
		}
		return rerr == nil
	}
	// The object changes after 5 MiB of it were sent: slices fetched after that are v2, and
	// the fill that began with v1 must be cut short, not stitched.
	s.origin.SetFault(path, origin.Fault{BumpAfter: 5 << 20})
	if getWhole() {
		t.Errorf("the fill across the change came back complete, want it cut short")
	}
	if s.origin.Version(path) != 2 {
		t.Fatalf("origin version = %d, want 2 (the fault did not fire)", s.origin.Version(path))
	}
	// Stored v2 now; slice 4 is evicted and the object changes again: the same holds.
	fillSliced(t, s, path, target, 2, size)
	s.edge.store.Delete(s.edge.key(target) + slicePart(4, defaultSliceBytes, origin.ETag(path, 2, size)))
	s.origin.Bump(path)
	v1, v2 = v2, originSum(t, path, 3, size)
	if getWhole() {
		t.Errorf("an answer needing a slice of a changed object came back complete, want it cut short")
	}
	// The next request fetches the new version.
	fillSliced(t, s, path, target, 3, size)
}

func TestSlicedPurgeRemovesEverySlice(t *testing.T) {
	const size = 10 << 20
	tests := []struct {
		name string
		rec  func(key string) store.Record
	}{
		{"url", func(key string) store.Record { return store.Record{Kind: store.URL, Host: testHost, Value: key} }},
		{"surrogate key", func(string) store.Record { return store.Record{Kind: store.Key, Host: testHost, Value: "movie"} }},
		{"prefix", func(string) store.Record { return store.Record{Kind: store.Prefix, Host: testHost, Value: "/films"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := slicedEdge(t)
			path := "/films/" + strings.ReplaceAll(tt.name, " ", "-")
			target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600", "sk", "movie")
			fillSliced(t, s, path, target, 1, size)
			key := s.edge.key(target)
			parts := []string{""}
			for i := range int64(5) {
				parts = append(parts, slicePart(i, defaultSliceBytes, origin.ETag(path, 1, size)))
			}
			for _, p := range parts {
				if o, _ := s.edge.store.LookupPart(key, p, http.Header{}); o == nil {
					t.Fatalf("part %q not stored after the fill", p)
				}
			}
			s.clock.Advance(1e9)
			s.edge.store.Purge(tt.rec(key))
			for _, p := range parts {
				if o, _ := s.edge.store.LookupPart(key, p, http.Header{}); o != nil {
					t.Errorf("part %q still served after the purge", p)
				}
			}
			before := s.origin.Requests(path)
			fillSliced(t, s, path, target, 1, size)
			if s.origin.Requests(path) == before {
				t.Errorf("the request after the purge did not go to the origin")
			}
		})
	}
}

// TestSlicedOriginIgnoringRange: an origin that answers 200 to Range still gives the right
// bytes, and its large objects then stream through whole instead of being sliced.
func TestSlicedOriginIgnoringRange(t *testing.T) {
	const size = 10 << 20
	s := slicedEdge(t)
	path := "/norange.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600", "norange", "1")
	fillSliced(t, s, path, target, 1, size)
	// The object now streams through like the origin sends it, uncached: a Range gets its
	// bytes cut out of the stream (docs/edge.md, "Streaming miss").
	r := s.get(t, target, "Range", "bytes=5000000-5000009")
	if want := originBytes(t, path, 1, size)[5000000:5000010]; r.status != http.StatusPartialContent || r.body != string(want) ||
		!strings.Contains(r.header.Get("Cache-Status"), "too-large") {
		t.Errorf("Range after the fallback: status %d, %d bytes, right bytes %v, Cache-Status %q; want 206 with the origin's bytes, streamed (too-large)",
			r.status, len(r.body), r.body == string(want), r.header.Get("Cache-Status"))
	}
	other := "/norange-2.bin"
	r = s.get(t, obj(other, "size", strconv.Itoa(size), "cc", "max-age=600"))
	if sha256.Sum256([]byte(r.body)) != originSum(t, other, 1, size) || !strings.Contains(r.header.Get("Cache-Status"), "too-large") {
		t.Errorf("next large object from that origin: Cache-Status %q; want it streamed whole (too-large)", r.header.Get("Cache-Status"))
	}
}

// TestSlicedMultipartFetch: several ranges of a sliced object, one of them in a slice the
// store no longer holds. http.ServeContent reads the slices on a goroutine of its own, so the
// slice fetch runs beside the handler (and may outlive it): under the race detector this fails
// if the fetch reads the client's request state rather than a copy of its own.
func TestSlicedMultipartFetch(t *testing.T) {
	const size = 9<<20 + 12345
	s := slicedEdge(t)
	path := "/multipart-fetch.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	fillSliced(t, s, path, target, 1, size)
	body := originBytes(t, path, 1, size)
	s.edge.store.Delete(s.edge.key(target) + slicePart(2, defaultSliceBytes, origin.ETag(path, 1, size)))
	r := s.get(t, target, "Range", "bytes=0-4, 4194304-4194313")
	wantParts(t, r, body, [][2]int{{0, 4}, {4194304, 4194313}})
	if got := s.origin.LastHeader(path).Get("Range"); got != "bytes=4194304-6291455" {
		t.Errorf("slice fetch sent Range %q, want bytes=4194304-6291455", got)
	}
}

// wantParts checks that r is a multipart/byteranges answer whose parts are body's bytes in
// ranges (first and last byte of each, inclusive), in order.
func wantParts(t *testing.T, r resp, body []byte, ranges [][2]int) {
	t.Helper()
	mt, params, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	if r.status != http.StatusPartialContent || mt != "multipart/byteranges" {
		t.Fatalf("%d ranges: status %d, Content-Type %q; want 206 multipart/byteranges", len(ranges), r.status, r.header.Get("Content-Type"))
	}
	mr := multipart.NewReader(strings.NewReader(r.body), params["boundary"])
	for _, want := range ranges {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %v: %v", want, err)
		}
		if got, _ := io.ReadAll(p); string(got) != string(body[want[0]:want[1]+1]) {
			t.Errorf("part %v: wrong bytes", want)
		}
	}
}

// TestSlicesNeedAStrongETag: an object over max_object_bytes is kept in slices only under a
// strong ETag. Under a weak one, or a Last-Modified alone, which can stay the same across a
// change, the slices fetched before and after a change were stitched into one answer (found by
// a review helper); such an object now streams through, whole and of one version.
func TestSlicesNeedAStrongETag(t *testing.T) {
	const size = 3 * 64 << 10
	for _, etag := range []string{`W/"same"`, ""} { // "": Last-Modified only
		t.Run("etag "+etag, func(t *testing.T) {
			var ver atomic.Value
			ver.Store("a")
			mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				if etag != "" {
					w.Header().Set("ETag", etag)
				}
				w.Header().Set("Content-Type", "application/octet-stream")
				http.ServeContent(w, r, "", mod, strings.NewReader(strings.Repeat(ver.Load().(string), size)))
			}))
			cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr,
				Cache: wire.CacheOptions{SliceBytes: 64 << 10}}}}
			cfg.Cache.MaxObjectBytes = 64 << 10
			n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
			c := &http.Client{}
			t.Cleanup(c.CloseIdleConnections)
			// Sliced, this fetches the first slice; streamed through, the whole object.
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/big", "Range", "bytes=0-9"); !strings.HasPrefix(r.body, "aaaaaaaaaa") {
				t.Fatalf("first range: %d %.20q", r.status, r.body)
			}
			ver.Store("b") // a new version under the same validators and length
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/big")
			if a, b := strings.Count(r.body, "a"), strings.Count(r.body, "b"); len(r.body) != size || a != 0 && b != 0 {
				t.Errorf("whole: %d bytes, %d of a and %d of b (Cache-Status %q): want one version", len(r.body), a, b, r.header.Get("Cache-Status"))
			}
		})
	}
}

// TestSlicedSliceSizeChanged: a host's slice_bytes changed (control plane) while an object's
// slices cut at the old size are stored. Slice i of the old size is not slice i of the new:
// the answer must still be the origin's bytes (it used to be other bytes of the object, or a
// handler panic when an old slice was shorter than the new offset into it).
func TestSlicedSliceSizeChanged(t *testing.T) {
	const size = 12 << 20
	s := slicedEdge(t)
	path := "/isos" // a 9-byte unit: slices of different sizes start with different bytes
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
	fillSliced(t, s, path, target, 1, size)
	body := originBytes(t, path, 1, size)
	for _, sb := range []int64{1 << 20, 4 << 20} {
		if err := s.edge.SetHosts([]wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr,
			Cache: wire.CacheOptions{SliceBytes: sb}}}); err != nil {
			t.Fatal(err)
		}
		const first, last = 3<<20 + 5, 5<<20 + 7
		r, err := tryDo(s.client, http.MethodGet, s.edge.Addr(), testHost, target, "Range", fmt.Sprintf("bytes=%d-%d", first, last))
		if err != nil {
			t.Fatalf("slice_bytes %d: %v", sb, err)
		}
		if r.status != http.StatusPartialContent || r.body != string(body[first:last+1]) {
			t.Errorf("slice_bytes %d: status %d, %d bytes, right bytes %v; want 206 with the origin's bytes",
				sb, r.status, len(r.body), r.body == string(body[first:last+1]))
		}
		if r := s.get(t, target); r.status != http.StatusOK || r.body != string(body) {
			t.Errorf("slice_bytes %d: whole object: status %d, right bytes %v", sb, r.status, r.body == string(body))
		}
	}
}

// TestSlicedObjectGone: the object behind a manifest shrank (a slice's range is now past its
// end: 416) or was deleted (404, 410) at the origin. The manifest no longer describes anything
// the origin has: it is dropped, so the next request gets the origin's answer, where it used to
// get the old length's 200 cut short at the missing slice on every request until the
// manifest expired.
func TestSlicedObjectGone(t *testing.T) {
	const sliceSize, size = 64 << 10, 1<<20 + 3
	for _, gone := range []int{http.StatusRequestedRangeNotSatisfiable, http.StatusNotFound, http.StatusGone} {
		t.Run(strconv.Itoa(gone), func(t *testing.T) {
			var changed atomic.Bool
			small := strings.Repeat("n", 100<<10)
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				switch {
				case !changed.Load():
					w.Header().Set("ETag", `"old"`)
					http.ServeContent(w, r, "", time.Time{}, strings.NewReader(strings.Repeat("o", size)))
				case gone == http.StatusRequestedRangeNotSatisfiable: // the new version is shorter
					w.Header().Set("ETag", `"new"`)
					http.ServeContent(w, r, "", time.Time{}, strings.NewReader(small))
				default:
					http.Error(w, "gone", gone)
				}
			}))
			cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr,
				Cache: wire.CacheOptions{SliceBytes: sliceSize}}}}
			cfg.Cache.MaxObjectBytes = 4 * sliceSize
			n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
			// No keep-alive: a request cut short is not retried on a fresh connection.
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/obj", "Range", "bytes=0-9"); r.status != http.StatusPartialContent || r.body != "oooooooooo" {
				t.Fatalf("first range: status %d, body %.20q; want 206 of the object's first bytes", r.status, r.body)
			}
			changed.Store(true)
			// A range in a slice not stored yet: its fetch finds the object gone. This answer
			// is cut short (its header may already be out), never another version's bytes.
			if r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/obj", "Range", "bytes=400000-400009"); err == nil &&
				r.status == http.StatusPartialContent && r.body != "oooooooooo" {
				t.Fatalf("range across the change: status %d, body %.20q", r.status, r.body)
			}
			r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/obj")
			switch {
			case err != nil:
				t.Fatalf("the next request: %v; want the origin's answer", err)
			case gone == http.StatusRequestedRangeNotSatisfiable && (r.status != http.StatusOK || r.body != small):
				t.Errorf("the next request: status %d, %d bytes; want 200 with the new version's %d", r.status, len(r.body), len(small))
			case gone != http.StatusRequestedRangeNotSatisfiable && r.status != gone:
				t.Errorf("the next request: status %d; want the origin's %d", r.status, gone)
			}
		})
	}
}

// TestSlicedOriginStopsHonouringRange: an origin that answered first slices with a 206 and a
// later slice with its whole object. That slice is cut out of the whole answer, and the
// origin's large objects stream through from then on: a client already reading a sliced
// object is cut short at its next missing slice, rather than each of them costing the origin
// the object up to that slice again (quadratic: about 256 GiB for a 1 GiB object in 2 MiB
// slices, before this), and the next request for any of its objects sliced before streams it.
func TestSlicedOriginStopsHonouringRange(t *testing.T) {
	const sliceSize, size = 64 << 10, 1 << 20 // 16 slices
	body := []byte(strings.Repeat("0123456789abcdef", size/16))
	var honour atomic.Bool
	var whole atomic.Int64
	honour.Store(true)
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"e"`)
		if !honour.Load() {
			r.Header.Del("Range")
		}
		if r.Header.Get("Range") == "" {
			whole.Add(1)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr,
		Cache: wire.CacheOptions{SliceBytes: sliceSize}}}}
	cfg.Cache.MaxObjectBytes = 4 * sliceSize
	n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, p := range []string{"/a", "/b"} { // each stored as a manifest and its first slice
		if r := do(t, c, http.MethodGet, n.Addr(), testHost, p, "Range", "bytes=0-9"); r.status != http.StatusPartialContent || r.body != string(body[:10]) {
			t.Fatalf("%s: first range: status %d, body %q", p, r.status, r.body)
		}
	}
	honour.Store(false)
	r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/a")
	if err == nil && (r.status != http.StatusOK || r.body != string(body)) {
		t.Errorf("GET across the change: status %d, %d bytes, right bytes %v", r.status, len(r.body), r.body == string(body))
	}
	if got := whole.Load(); got > 2 {
		t.Errorf("one GET of a %d-slice object had the origin send it whole %d times; want at most 2", size/sliceSize, got)
	}
	// /b's manifest was stored before: its GET may be cut short, the next one is whole.
	tryDo(c, http.MethodGet, n.Addr(), testHost, "/b")
	for _, p := range []string{"/a", "/b"} {
		if r := do(t, c, http.MethodGet, n.Addr(), testHost, p); r.status != http.StatusOK || r.body != string(body) {
			t.Errorf("%s: next GET: status %d, %d bytes, right bytes %v; want 200 with the object", p, r.status, len(r.body), r.body == string(body))
		}
	}
}

// TestSlicedEncodedContentLength: a sliced object with a Content-Encoding (an origin's
// precompressed or compressed file) is answered with its Content-Length, GET and HEAD, on the
// miss and on hits. http.ServeContent leaves the field out of a whole answer with a
// Content-Encoding; the answer went chunked, and a HEAD said no length at all.
func TestSlicedEncodedContentLength(t *testing.T) {
	const sliceSize, size = 64 << 10, 1<<20 + 3
	body := strings.Repeat("z", size) // the bytes as the origin encoded them
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"gz"`)
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Vary", "Accept-Encoding")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr,
		Cache: wire.CacheOptions{SliceBytes: sliceSize}}}}
	cfg.Cache.MaxObjectBytes = 4 * sliceSize
	n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	for i, m := range []string{http.MethodGet, http.MethodHead, http.MethodGet} {
		r := do(t, c, m, n.Addr(), testHost, "/data.json", "Accept-Encoding", "gzip")
		if r.status != http.StatusOK || r.header.Get("Content-Length") != strconv.Itoa(size) ||
			r.header.Get("Content-Encoding") != "gzip" || m == http.MethodGet && r.body != body {
			t.Errorf("%s %d: status %d, Content-Length %q, Content-Encoding %q, right bytes %v; want 200, %d, gzip",
				m, i, r.status, r.header.Get("Content-Length"), r.header.Get("Content-Encoding"), r.body == body, size)
		}
	}
}

// TestSlicedVariantChangedLeavesOthers: a slice fetch that finds its object changed (another
// validator) drops that variant's manifest only: the URL's other Vary variants are other
// objects, each with its own validator, which their own slice fetches check. Before, every
// variant's manifest went, and each variant's next request fetched its first slice again.
func TestSlicedVariantChangedLeavesOthers(t *testing.T) {
	const sliceSize, size = 64 << 10, 1<<20 + 3
	var deVersion atomic.Int32
	deVersion.Store(1)
	var enFetches atomic.Int32
	addr := startHTTP(t, "127.0.0.93", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := r.Header.Get("Accept-Language")
		if l == "en" {
			enFetches.Add(1)
		} else {
			l = fmt.Sprintf("de-%d", deVersion.Load())
		}
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("ETag", strconv.Quote(l))
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(strings.Repeat(l[:1], size)))
	}))
	cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr,
		Cache: wire.CacheOptions{SliceBytes: sliceSize}}}}
	cfg.Cache.MaxObjectBytes = 4 * sliceSize
	n, _ := startEdge(t, listen(t, "127.0.0.94"), cfg)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	get := func(lang, rng string) resp {
		t.Helper()
		r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/obj", "Accept-Language", lang, "Range", rng)
		if err != nil {
			t.Fatalf("GET %s %s: %v", lang, rng, err)
		}
		return r
	}
	for _, lang := range []string{"en", "de"} {
		if r := get(lang, "bytes=0-9"); r.status != http.StatusPartialContent || r.body != strings.Repeat(lang[:1], 10) {
			t.Fatalf("first range of %s: %d %.20q", lang, r.status, r.body)
		}
	}
	if r := get("en", "bytes=0-9"); !strings.Contains(r.header.Get("Cache-Status"), "; hit") {
		t.Fatalf("en again before de changed: Cache-Status %q, want a hit", r.header.Get("Cache-Status"))
	}
	deVersion.Store(2)
	// A slice of de not stored yet: its fetch finds de changed (another ETag).
	if r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/obj", "Accept-Language", "de", "Range", "bytes=400000-400009"); err == nil &&
		r.status == http.StatusPartialContent && r.body != "dddddddddd" {
		t.Fatalf("range of de across its change: %d %.20q", r.status, r.body)
	}
	before := enFetches.Load()
	r := get("en", "bytes=0-9")
	if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "; hit") || enFetches.Load() != before {
		t.Errorf("en after de changed: Cache-Status %q, %d origin requests more; want a hit, none", cs, enFetches.Load()-before)
	}
}

// TestSlicedHardURLPurgeFreesSlices: a hard URL purge frees the URL's memory (docs/edge.md,
// "Purge"), the slices of a sliced object too. Before, it deleted the manifest alone: the
// object's whole length stayed in the store as slices no lookup would serve, until evicted or
// expired (with max-age=31536000, a year), and a refill of a changed object, whose slices are
// named by its new ETag, held both versions. A soft purge keeps them (they are revalidated).
func TestSlicedHardURLPurgeFreesSlices(t *testing.T) {
	const size = 10 << 20 // 5 slices
	for _, soft := range []bool{false, true} {
		t.Run(fmt.Sprintf("soft=%v", soft), func(t *testing.T) {
			s := slicedEdge(t)
			path := "/big/release.iso"
			target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=31536000")
			fillSliced(t, s, path, target, 1, size)
			if items := s.edge.store.Stats().Items; items != 6 {
				t.Fatalf("store holds %d items after the fill, want 6 (the manifest and 5 slices)", items)
			}
			s.clock.Advance(1e9)
			m := purge.Message{ID: "p", Seq: 1, Host: testHost, Kind: purge.KindURL, Values: []string{target}, Soft: soft}
			if _, err := s.edge.ApplyPurge(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			if soft {
				for i := range int64(5) {
					part := slicePart(i, defaultSliceBytes, origin.ETag(path, 1, size))
					if o, v := s.edge.store.LookupPart(s.edge.key(target), part, http.Header{}); o == nil || v != store.SoftPurged {
						t.Errorf("slice %d after a soft purge: %v, %v; want it kept, soft-purged", i, o != nil, v)
					}
				}
				return
			}
			wait.For(t, 5*time.Second, "the purged object's slices to leave the store", func() bool {
				return s.edge.store.Stats().Items == 0
			})
		})
	}
}

// TestSlicedHardURLPurgeOfHugeManifest: a sliced object's length is what its origin's
// Content-Range says (firstSlice), up to the largest int64. A hard URL purge walks its slices
// by index to free them; it must not walk (or list) every slice such a length names: before,
// it listed them all before deleting one, in the purge subscriber's goroutine, so a manifest of
// 8 EiB (4.4 trillion 2 MiB slices; its last index times the slice size also overflows int64)
// held every later purge and ack of the node until the process ran out of memory. The walk is
// bounded (maxSlicesDropped) and the slices within it are still freed.
func TestSlicedHardURLPurgeOfHugeManifest(t *testing.T) {
	const size = 10 << 20 // 5 slices
	s := slicedEdge(t)
	path := "/big/huge.bin"
	target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=31536000")
	fillSliced(t, s, path, target, 1, size)
	key := s.edge.key(target)
	o, _, _ := s.edge.store.Lookup(key, nil)
	if o == nil || o.Size != size {
		t.Fatalf("manifest after the fill: %v; want one of size %d", o != nil, size)
	}
	m := o.Detached()
	m.Size = math.MaxInt64 // as an origin's "Content-Range: bytes 0-2097151/9223372036854775807" makes it
	if !s.edge.store.Put(m) {
		t.Fatal("the store refused the manifest")
	}
	s.clock.Advance(1e9)
	done := make(chan error, 1)
	go func() {
		_, err := s.edge.ApplyPurge(context.Background(), purge.Message{ID: "p", Seq: 1, Host: testHost, Kind: purge.KindURL, Values: []string{target}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a hard purge of a manifest of 8 EiB did not return in 30 s")
	}
	wait.For(t, 5*time.Second, "the purged object's slices to leave the store", func() bool {
		return s.edge.store.Stats().Items == 0
	})
}
