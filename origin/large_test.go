package origin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

func TestOpenBody(t *testing.T) {
	for _, tt := range []struct {
		path    string
		version int
		size    int
	}{
		{"/a", 1, 0}, {"/a", 2, 10}, {"/a", 1, blockExtra + 3}, {"/long/" + string(bytes.Repeat([]byte("x"), 5000)), 7, 300 << 10},
		{"/a", 1, 1 << 20}, {"/v", 123456789, 200 << 10},
	} {
		if got, want := unitLen(tt.path, tt.version), len(unit(tt.path, tt.version)); got != want {
			t.Errorf("unitLen(%.10q, %d) = %d, want %d", tt.path, tt.version, got, want)
		}
		want := Body(tt.path, tt.version, tt.size)
		r := OpenBody(tt.path, tt.version, tt.size)
		if r.Size() != int64(tt.size) {
			t.Errorf("OpenBody(%.10q, %d, %d).Size() = %d", tt.path, tt.version, tt.size, r.Size())
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("OpenBody(%.10q, %d, %d) read %d bytes, err %v; want Body's %d bytes", tt.path, tt.version, tt.size, len(got), err, len(want))
		}
		for _, off := range []int{0, 1, tt.size / 3, tt.size - 7, tt.size - 1} {
			if off < 0 || off >= tt.size {
				continue
			}
			p := make([]byte, min(70000, tt.size-off))
			if n, err := r.ReadAt(p, int64(off)); n != len(p) || (err != nil && err != io.EOF) || !bytes.Equal(p, want[off:off+len(p)]) {
				t.Errorf("OpenBody(%.10q, %d, %d).ReadAt(%d bytes, %d) = %d, %v, or other bytes", tt.path, tt.version, tt.size, len(p), off, n, err)
			}
		}
	}
}

// TestLargeObjectStreams checks that a 64 MiB object comes with the right headers and bytes
// without the origin allocating anything like its size.
func TestLargeObjectStreams(t *testing.T) {
	const size = 64 << 20
	s, base := start(t, "127.0.0.40", Config{})
	c := client(t)
	req, _ := http.NewRequest("GET", base+"/big?size="+strconv.Itoa(size), nil)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /big: %v", err)
	}
	defer resp.Body.Close()
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	runtime.ReadMemStats(&after)
	if err != nil || n != size {
		t.Fatalf("GET /big read %d bytes, %v; want %d", n, err, size)
	}
	want := sha256.New()
	io.Copy(want, OpenBody("/big", 1, size))
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("GET /big body hash differs from OpenBody's")
	}
	if resp.StatusCode != 200 || resp.ContentLength != size || resp.Header.Get("ETag") != ETag("/big", 1, size) ||
		resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("GET /big = %d, Content-Length %d, header %v; want 200, %d, ETag %s, Last-Modified, Accept-Ranges: bytes",
			resp.StatusCode, resp.ContentLength, resp.Header, size, ETag("/big", 1, size))
	}
	// Client and server share the process: both allocate a little per 32 KiB copied, nothing
	// close to the 64 MiB body.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("serving and reading a 64 MiB object allocated %d MiB, want under 16", alloc>>20)
	}
	if got := s.BytesSent("/big"); got != size {
		t.Errorf("BytesSent(/big) = %d, want %d", got, size)
	}
}

func TestLargeRange(t *testing.T) {
	const size = 64 << 20
	_, base := start(t, "127.0.0.41", Config{})
	c := client(t)
	body := OpenBody("/r", 1, size)
	url := base + "/r?size=" + strconv.Itoa(size)
	for _, tt := range []struct {
		rng          string
		first, last  int64
		contentRange string
	}{
		{"bytes=0-1048575", 0, 1<<20 - 1, "bytes 0-1048575/67108864"},
		{"bytes=33554432-34603007", 32 << 20, 33<<20 - 1, "bytes 33554432-34603007/67108864"},
		{"bytes=67108860-", size - 4, size - 1, "bytes 67108860-67108863/67108864"},
		{"bytes=-10", size - 10, size - 1, "bytes 67108854-67108863/67108864"},
		{"bytes=67108000-99999999", 67108000, size - 1, "bytes 67108000-67108863/67108864"},
	} {
		t.Run(tt.rng, func(t *testing.T) {
			r := do(t, c, context.Background(), "GET", url, http.Header{"Range": {tt.rng}}, "")
			want := make([]byte, tt.last-tt.first+1)
			body.ReadAt(want, tt.first)
			if r.err != nil || r.status != http.StatusPartialContent || r.header.Get("Content-Range") != tt.contentRange ||
				r.header.Get("Content-Length") != strconv.Itoa(len(want)) || !bytes.Equal(r.body, want) {
				t.Errorf("GET Range: %s = %d, %v, Content-Range %q, Content-Length %q, %d bytes; want 206, %q, %d matching bytes",
					tt.rng, r.status, r.err, r.header.Get("Content-Range"), r.header.Get("Content-Length"), len(r.body), tt.contentRange, len(want))
			}
			if r.header.Get("ETag") != ETag("/r", 1, size) {
				t.Errorf("GET Range: %s ETag = %q, want the whole object's %q", tt.rng, r.header.Get("ETag"), ETag("/r", 1, size))
			}
		})
	}
	r := do(t, c, context.Background(), "GET", url, http.Header{"Range": {"bytes=67108864-"}}, "")
	if r.status != http.StatusRequestedRangeNotSatisfiable || r.header.Get("Content-Range") != "bytes */67108864" {
		t.Errorf("GET Range past the end = %d, Content-Range %q; want 416, bytes */67108864", r.status, r.header.Get("Content-Range"))
	}
}

func TestNoRange(t *testing.T) {
	_, base := start(t, "127.0.0.42", Config{})
	c := client(t)
	h := http.Header{"Range": {"bytes=10-19"}}
	r := do(t, c, context.Background(), "GET", base+"/nr?size=100&norange=1", h, "")
	if r.err != nil || r.status != 200 || !bytes.Equal(r.body, Body("/nr", 1, 100)) || r.header.Get("Content-Length") != "100" {
		t.Errorf("GET norange=1 with Range = %d, %v, %d bytes, Content-Length %q; want 200 and the whole 100 bytes",
			r.status, r.err, len(r.body), r.header.Get("Content-Length"))
	}
	if got := r.header.Get("Accept-Ranges"); got != "" {
		t.Errorf("GET norange=1 Accept-Ranges = %q, want none", got)
	}
	r = do(t, c, context.Background(), "GET", base+"/nr?size=100&norange=0", h, "")
	if r.status != http.StatusPartialContent {
		t.Errorf("GET norange=0 with Range = %d, want 206", r.status)
	}
}

// TestBumpAfter checks the mid-fill change: once bump_after bytes are sent the version changes,
// the response in progress stays whole on its version, and ranges asked later carry the new
// ETag and bytes, so a cache that stitched them would be caught.
func TestBumpAfter(t *testing.T) {
	const size = 1 << 20
	s, base := start(t, "127.0.0.43", Config{})
	c := client(t)
	url := base + "/m?size=" + strconv.Itoa(size)
	path, f, err := ParseFault([]byte(`{"path":"/m","bump_after":1000}`))
	if err != nil {
		t.Fatalf("ParseFault: %v", err)
	}
	s.SetFault(path, f)

	first := do(t, c, context.Background(), "GET", url, http.Header{"Range": {"bytes=0-524287"}}, "")
	if first.status != 206 || first.header.Get("ETag") != ETag("/m", 1, size) || !bytes.Equal(first.body, Body("/m", 1, size)[:512<<10]) {
		t.Fatalf("first slice = %d, ETag %q, want 206, version 1's tag and bytes", first.status, first.header.Get("ETag"))
	}
	if v := s.Version("/m"); v != 2 {
		t.Errorf("Version(/m) after %d bytes with bump_after 1000 = %d, want 2", len(first.body), v)
	}
	second := do(t, c, context.Background(), "GET", url, http.Header{"Range": {"bytes=524288-"}}, "")
	if second.status != 206 || second.header.Get("ETag") != ETag("/m", 2, size) || !bytes.Equal(second.body, Body("/m", 2, size)[512<<10:]) {
		t.Errorf("second slice = %d, ETag %q, want 206, version 2's tag %q and bytes", second.status, second.header.Get("ETag"), ETag("/m", 2, size))
	}
	if v := s.Version("/m"); v != 2 {
		t.Errorf("Version(/m) = %d after the fault fired, want 2 (it fires once)", v)
	}

	// The fault fires in the middle of a whole response: that response is all version 2.
	s.SetFault("/m", Fault{BumpAfter: size / 2})
	whole := do(t, c, context.Background(), "GET", url, nil, "")
	if whole.status != 200 || !bytes.Equal(whole.body, Body("/m", 2, size)) {
		t.Errorf("whole GET during the bump = %d, %d bytes; want 200 and version 2's bytes only", whole.status, len(whole.body))
	}
	if v := s.Version("/m"); v != 3 {
		t.Errorf("Version(/m) = %d, want 3", v)
	}
	r := do(t, c, context.Background(), "GET", base+"/_fault", nil, "")
	if !bytes.Equal(bytes.TrimSpace(r.body), []byte("[]")) {
		t.Errorf("GET /_fault after the bumps = %s, want [] (the fault clears itself)", r.body)
	}
	if _, _, err := ParseFault([]byte(`{"bump_after":10}`)); err == nil {
		t.Errorf("ParseFault(bump_after without a path) succeeded, want an error")
	}
}

// TestBumpAfterNotForgotten: a bump_after fault waiting for its bytes is not forgotten when the
// faults table forgets its least recently used paths, by their number or by the bytes of
// their names. It was forgotten like any fault: a test that armed one and then set faults on
// MaxPaths other paths (or a few with long names) saw its object never change.
func TestBumpAfterNotForgotten(t *testing.T) {
	const bound = 4
	long := strings.Repeat("l", 4<<10)
	for _, tt := range []struct {
		name     string
		cfg      Config
		maxBytes int                // the faults table's bound on path bytes; 0 keeps it
		other    func(i int) string // the paths given faults after the bump_after
	}{
		{"paths", Config{MaxPaths: bound}, 0, func(i int) string { return fmt.Sprintf("/o/%d", i) }},
		{"path bytes", Config{}, 16 << 10, func(i int) string { return fmt.Sprintf("/o/%d/%s", i, long) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, base := start(t, "127.0.0.45", tt.cfg)
			if tt.maxBytes > 0 {
				s.mu.Lock()
				s.faults.maxBytes = tt.maxBytes
				s.mu.Unlock()
			}
			c := client(t)
			post := func(fault string) {
				t.Helper()
				if r := do(t, c, context.Background(), "POST", base+"/_fault", nil, fault); r.err != nil || r.status != http.StatusNoContent {
					t.Fatalf("POST /_fault %.40s: %d, %v; want 204", fault, r.status, r.err)
				}
			}
			post(`{"path":"/m","bump_after":100}`)
			for i := range 2 * bound {
				post(`{"path":"` + tt.other(i) + `","status":503}`)
			}
			s.mu.Lock()
			kept := s.faults.len()
			s.mu.Unlock()
			if kept >= 2*bound {
				t.Fatalf("the faults table holds %d paths: none was forgotten, so the test shows nothing", kept)
			}
			r := do(t, c, context.Background(), "GET", base+"/m?size=1000", nil, "")
			if r.err != nil || r.status != 200 || !bytes.Equal(r.body, Body("/m", 1, 1000)) {
				t.Fatalf("GET /m = %d, %v; want 200 and version 1's bytes (the response in progress keeps its version)", r.status, r.err)
			}
			if v := s.Version("/m"); v != 2 {
				t.Errorf("Version(/m) after 1000 bytes with bump_after 100 = %d, want 2", v)
			}
		})
	}
}

// TestBumpAfterBounded: at most MaxPaths bump_after faults wait at once; past that, setting
// another is refused (409 Conflict; SetFault's error) rather than forgetting one, and one
// that fires, is replaced or is cleared makes room.
func TestBumpAfterBounded(t *testing.T) {
	s, base := start(t, "127.0.0.46", Config{MaxPaths: 2})
	c := client(t)
	for _, tt := range []struct {
		name, fault string
		want        int
	}{
		{"first", `{"path":"/a","bump_after":100}`, http.StatusNoContent},
		{"second", `{"path":"/b","bump_after":100}`, http.StatusNoContent},
		{"one too many", `{"path":"/c","bump_after":100}`, http.StatusConflict},
		{"another count for a waiting one", `{"path":"/a","bump_after":50}`, http.StatusNoContent},
		{"another kind of fault", `{"path":"/c","status":503}`, http.StatusNoContent},
	} {
		if r := do(t, c, context.Background(), "POST", base+"/_fault", nil, tt.fault); r.err != nil || r.status != tt.want {
			t.Errorf("%s: POST /_fault %s = %d %s, %v; want %d", tt.name, tt.fault, r.status, bytes.TrimSpace(r.body), r.err, tt.want)
		}
	}
	if err := s.SetFault("/c", Fault{BumpAfter: 100}); !errors.Is(err, errBumpsFull) {
		t.Errorf("SetFault(/c, bump_after) with two waiting = %v, want %v", err, errBumpsFull)
	}
	if r := do(t, c, context.Background(), "GET", base+"/c?size=10", nil, ""); r.status != 503 {
		t.Errorf("GET /c = %d, want 503: a refused fault leaves the path's fault as it was", r.status)
	}
	do(t, c, context.Background(), "GET", base+"/a?size=100", nil, "") // /a's fires
	if v := s.Version("/a"); v != 2 {
		t.Fatalf("Version(/a) = %d, want 2", v)
	}
	if err := s.SetFault("/c", Fault{BumpAfter: 100}); err != nil {
		t.Errorf("SetFault(/c, bump_after) once /a's fired = %v, want nil", err)
	}
	s.ClearFaults()
	for _, p := range []string{"/d", "/e"} {
		if err := s.SetFault(p, Fault{BumpAfter: 100}); err != nil {
			t.Errorf("SetFault(%s, bump_after) after ClearFaults = %v, want nil", p, err)
		}
	}
}

// TestBumpAfterWithGlobalFault: a path whose only fault is a bump_after still to fire gets the
// global fault, as a path without a fault of its own does, and its bytes still count towards
// the bump; a path with a fault of its own besides bump_after keeps it. The waiting bump_after
// hid the global fault until it fired: a global 502 left such a path answering 200.
func TestBumpAfterWithGlobalFault(t *testing.T) {
	const size = 1000
	for _, tt := range []struct {
		name        string
		global, own Fault
		wantStatus  int // 0: no response (dropped)
		wantBytes   int // body bytes received
		wantVersion int // the path's version after the GET
	}{
		{"global status", Fault{Status: 502}, Fault{BumpAfter: 100}, 502, size, 2},
		{"global truncate", Fault{Truncate: true}, Fault{BumpAfter: 100}, 200, size / 2, 2},
		{"global drop, nothing sent to count", Fault{Drop: true}, Fault{BumpAfter: 100}, 0, 0, 1},
		{"own fault wins", Fault{Status: 502}, Fault{Status: 503, BumpAfter: 100}, 503, size, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, base := start(t, "127.0.0.49", Config{})
			c := client(t)
			if err := s.SetFault("", tt.global); err != nil {
				t.Fatalf("SetFault(global): %v", err)
			}
			if err := s.SetFault("/m", tt.own); err != nil {
				t.Fatalf("SetFault(/m): %v", err)
			}
			r := do(t, c, context.Background(), "GET", base+"/m?size="+strconv.Itoa(size), nil, "")
			if r.status != tt.wantStatus || len(r.body) != tt.wantBytes {
				t.Errorf("GET /m = %d with %d body bytes (%v), want %d with %d", r.status, len(r.body), r.err, tt.wantStatus, tt.wantBytes)
			}
			if !bytes.Equal(r.body, Body("/m", 1, size)[:len(r.body)]) {
				t.Errorf("GET /m body is not version 1's bytes (the response in progress keeps its version)")
			}
			if v := s.Version("/m"); v != tt.wantVersion {
				t.Errorf("Version(/m) after the GET = %d, want %d", v, tt.wantVersion)
			}
		})
	}
}

func TestBytesSent(t *testing.T) {
	s, base := start(t, "127.0.0.44", Config{})
	c := client(t)
	for _, req := range []struct {
		method, url string
		h           http.Header
	}{
		{"GET", "/b?size=1000", nil},
		{"GET", "/b?size=1000", http.Header{"Range": {"bytes=0-99"}}},
		{"HEAD", "/b?size=1000", nil},
		{"GET", "/b?size=1000&status=503", nil},
		{"GET", "/other?size=5", nil},
	} {
		if r := do(t, c, context.Background(), req.method, base+req.url, req.h, ""); r.err != nil {
			t.Fatalf("%s %s: %v", req.method, req.url, r.err)
		}
	}
	wait.For(t, 5*time.Second, "no request in flight", func() bool { return s.InFlight() == 0 })
	if got := s.BytesSent("/b"); got != 2100 {
		t.Errorf("BytesSent(/b) = %d, want 2100 (1000 + 100 + 0 for HEAD + 1000 for the 503)", got)
	}
	if got := s.TotalBytesSent(); got != 2105 {
		t.Errorf("TotalBytesSent() = %d, want 2105", got)
	}
	var st StatsJSON
	r := do(t, c, context.Background(), "GET", base+"/_stats", nil, "")
	if err := json.Unmarshal(r.body, &st); err != nil || st.Bytes["/b"] != 2100 || st.BytesTotal != 2105 {
		t.Errorf("GET /_stats = %s (%v), want bytes[/b] 2100 and bytes_total 2105", r.body, err)
	}
	s.ResetStats()
	if s.BytesSent("/b") != 0 || s.TotalBytesSent() != 0 {
		t.Errorf("after ResetStats: BytesSent(/b) %d, TotalBytesSent %d, want 0", s.BytesSent("/b"), s.TotalBytesSent())
	}
}

func BenchmarkLargeBody(b *testing.B) {
	r := OpenBody("/bench/object", 1, 64<<20)
	b.SetBytes(r.Size())
	for b.Loop() {
		r.Seek(0, io.SeekStart)
		io.Copy(io.Discard, struct{ io.Reader }{r})
	}
}
