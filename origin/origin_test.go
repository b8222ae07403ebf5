// Over 600 lines on purpose: the reference origin is the fixture of every other package's
// tests, and each of its knobs (query parameters, faults, stats) is checked here, in one place.

package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/clocktest"

	"github.com/meridian-cdn/meridian/internal/wait"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// start runs an origin with cfg on the loopback address ip and returns it with its base URL.
// The server is stopped, and Serve's return checked, when the test ends.
func start(t *testing.T, ip string, cfg Config) (*Server, string) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v, want nil after cancel", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

// client returns an HTTP client whose connections are closed when the test ends.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type result struct {
	status int
	header http.Header
	body   []byte
	err    error // from sending or reading the body
}

func do(t *testing.T, c *http.Client, ctx context.Context, method, url string, header http.Header, body string) result {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return result{err: err} // callers check err; do runs on non-test goroutines too
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func TestBody(t *testing.T) {
	tests := []struct {
		path          string
		version, size int
		want          string
	}{
		{"/a", 1, 0, ""},
		{"/a", 1, 3, "/a@"},
		{"/a", 2, 16, "/a@v2:/a@v2:/a@v"},
		{"/x/y", 10, 10, "/x/y@v10:/"},
	}
	for _, tt := range tests {
		if got := string(Body(tt.path, tt.version, tt.size)); got != tt.want {
			t.Errorf("Body(%q, %d, %d) = %q, want %q", tt.path, tt.version, tt.size, got, tt.want)
		}
	}
}

func TestBodyCacheBound(t *testing.T) {
	c := newBodyCache(100, 40)
	for i := 0; i < 20; i++ {
		b := c.get(fmt.Sprintf("/p%d", i), 1, 30)
		if want := Body(fmt.Sprintf("/p%d", i), 1, 30); !bytes.Equal(b, want) {
			t.Fatalf("get(/p%d) = %q, want %q", i, b, want)
		}
	}
	c.get("/big", 1, 50) // over maxEntry: generated, not kept
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bodies.bytes > 100 || c.bodies.len() > 3 {
		t.Errorf("cache holds %d bytes in %d entries, want at most 100 bytes", c.bodies.bytes, c.bodies.len())
	}
	if c.bodies.peek(bodyKey{"/big", 1, 50}) != nil {
		t.Errorf("cache kept a body larger than maxEntry")
	}
}

// TestBodyCacheLRU: the body cache forgets its least recently used bodies first, as a model
// LRU does over a run of gets of hot and cold paths. It forgot them in Go's map order, at
// random, so a hot body could go while cold ones stayed, and which ones the origin
// regenerated differed from run to run.
func TestBodyCacheLRU(t *testing.T) {
	const paths, room, size = 24, 16, 30
	path := func(i int) string { return fmt.Sprintf("/p%02d", i) }
	cost := entryCost(path(0), size)
	c := newBodyCache(room*cost, cost)
	var held []int          // what the cache should hold, most recent first
	last := map[int]*byte{} // the body get last returned for each path
	rnd := rand.New(rand.NewPCG(1, 2))
	for step := range 400 {
		i := min(rnd.IntN(paths), rnd.IntN(paths)) // low numbers hot, high ones cold
		b := c.get(path(i), 1, size)
		if !bytes.Equal(b, Body(path(i), 1, size)) {
			t.Fatalf("step %d: get(%s) = %q, want %q", step, path(i), b, Body(path(i), 1, size))
		}
		at := slices.Index(held, i)
		// A hit returns the body kept, the one returned before; a miss a new one.
		if hit := &b[0] == last[i]; hit != (at >= 0) {
			t.Fatalf("step %d: get(%s) hit = %v, want %v (held, most recent first: %v)", step, path(i), hit, at >= 0, held)
		}
		last[i] = &b[0]
		if at >= 0 {
			held = slices.Delete(held, at, at+1)
		}
		held = slices.Insert(held, 0, i)
		held = held[:min(len(held), room)]
	}
}

func TestQueryConvention(t *testing.T) {
	clk := clocktest.New(epoch)
	_, base := start(t, "127.0.0.31", Config{Clock: clk.Now})
	clk.Advance(time.Hour)
	c := client(t)
	date := func(d time.Duration) string { return epoch.Add(time.Hour + d).Format(http.TimeFormat) }

	tests := []struct {
		name       string
		url        string
		wantStatus int
		wantHeader map[string]string // "" means absent
		wantBody   []byte            // nil: not checked
	}{
		{"defaults", "/a", 200, map[string]string{
			"Content-Type": "application/octet-stream", "Content-Length": "1024", "ETag": ETag("/a", 1, 1024),
			"Last-Modified": epoch.Format(http.TimeFormat), "Date": date(0), "Cache-Control": "", "Expires": "",
			"X-Origin-Version": "1",
		}, Body("/a", 1, 1024)},
		{"size", "/a?size=10", 200, map[string]string{"Content-Length": "10"}, Body("/a", 1, 10)},
		{"size-zero", "/a?size=0", 200, map[string]string{"Content-Length": "0"}, []byte{}},
		{"cache-headers", "/b?cc=max-age%3D60&cdncc=max-age%3D600&sc=max-age%3D6&sk=k1+k2&tag=t1,t2&groups=%22g1%22", 200, map[string]string{
			"Cache-Control": "max-age=60", "CDN-Cache-Control": "max-age=600", "Surrogate-Control": "max-age=6",
			"Surrogate-Key": "k1 k2", "Cache-Tag": "t1,t2", "Cache-Groups": `"g1"`,
		}, nil},
		{"expires", "/c?expires=30", 200, map[string]string{"Expires": date(30 * time.Second)}, nil},
		{"expires-past", "/c?expires=-30", 200, map[string]string{"Expires": date(-30 * time.Second)}, nil},
		{"last-modified", "/c?lm=120", 200, map[string]string{"Last-Modified": date(-2 * time.Minute)}, nil},
		{"no-etag", "/c?etag=0", 200, map[string]string{"ETag": ""}, nil},
		{"content-type", "/c?ct=text/plain", 200, map[string]string{"Content-Type": "text/plain"}, nil},
		{"status", "/d?status=404&size=5", 404, map[string]string{"Content-Length": "5"}, Body("/d", 1, 5)},
		{"status-204", "/d?status=204", 204, nil, []byte{}},
		{"location", "/d?status=302&location=/e&size=0", 302, map[string]string{"Location": "/e"}, []byte{}},
		{"unknown-ignored", "/a?v=2&size=4", 200, nil, Body("/a", 1, 4)},
		{"delay-zero", "/a?delay=0s&stall=0s&size=4", 200, nil, Body("/a", 1, 4)},
		{"stall-body-intact", "/a?stall=1ms&size=100", 200, nil, Body("/a", 1, 100)},
		{"vary-header", "/v?vary=accept-language,X-Dev", 200, map[string]string{"Vary": "Accept-Language, X-Dev"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, context.Background(), "GET", base+tt.url, nil, "")
			if r.err != nil {
				t.Fatalf("GET %s: %v", tt.url, r.err)
			}
			if r.status != tt.wantStatus {
				t.Errorf("GET %s status = %d, want %d", tt.url, r.status, tt.wantStatus)
			}
			for k, want := range tt.wantHeader {
				if got := r.header.Get(k); got != want {
					t.Errorf("GET %s header %s = %q, want %q", tt.url, k, got, want)
				}
			}
			if tt.wantBody != nil && !bytes.Equal(r.body, tt.wantBody) {
				t.Errorf("GET %s body = %.40q (%d bytes), want %.40q (%d bytes)", tt.url, r.body, len(r.body), tt.wantBody, len(tt.wantBody))
			}
		})
	}
}

func TestBadParams(t *testing.T) {
	s, base := start(t, "127.0.0.32", Config{})
	c := client(t)
	for _, q := range []string{
		"size=-1", "size=x", fmt.Sprintf("size=%d", MaxSize+1), "expires=soon", "lm=-5", "etag=2",
		"status=99", "status=600", "status=ok", "delay=1", "delay=-1s", "stall=1h", "vary=a%20b",
		"cc=a%0D%0Ab", "ct=%00", "norange=yes",
	} {
		t.Run(q, func(t *testing.T) {
			r := do(t, c, context.Background(), "GET", base+"/bad?"+q, nil, "")
			if r.err != nil || r.status != http.StatusBadRequest {
				t.Errorf("GET /bad?%s = %d, %v, want 400", q, r.status, r.err)
			}
		})
	}
	if got := s.Requests("/bad"); got != 16 {
		t.Errorf("Requests(/bad) = %d, want 16 (bad requests are counted)", got)
	}
}

func TestVaryBody(t *testing.T) {
	_, base := start(t, "127.0.0.33", Config{})
	c := client(t)
	url := base + "/v?vary=Accept-Language&size=64"
	var bodies [][]byte
	for _, lang := range []string{"en", "fr", "en"} {
		r := do(t, c, context.Background(), "GET", url, http.Header{"Accept-Language": {lang}}, "")
		if r.err != nil {
			t.Fatalf("GET: %v", r.err)
		}
		want := Body("/v|Accept-Language="+lang, 1, 64)
		if !bytes.Equal(r.body, want) {
			t.Errorf("body for Accept-Language %s = %q, want %q", lang, r.body, want)
		}
		if got, want := r.header.Get("ETag"), ETag("/v|Accept-Language="+lang, 1, 64); got != want {
			t.Errorf("ETag for Accept-Language %s = %s, want %s", lang, got, want)
		}
		bodies = append(bodies, r.body)
	}
	if bytes.Equal(bodies[0], bodies[1]) || !bytes.Equal(bodies[0], bodies[2]) {
		t.Errorf("variants: en and fr bodies equal = %v, want false; en twice equal = %v, want true",
			bytes.Equal(bodies[0], bodies[1]), bytes.Equal(bodies[0], bodies[2]))
	}
}

func TestConditionalRangeHead(t *testing.T) {
	clk := clocktest.New(epoch)
	_, base := start(t, "127.0.0.34", Config{Clock: clk.Now})
	clk.Advance(time.Hour)
	c := client(t)
	etag := ETag("/o", 1, 100)
	lm := epoch.Format(http.TimeFormat)

	tests := []struct {
		name       string
		method     string
		url        string
		header     http.Header
		wantStatus int
		wantBody   []byte
		wantRange  string
	}{
		{"inm-match", "GET", "/o?size=100", http.Header{"If-None-Match": {etag}}, 304, []byte{}, ""},
		{"inm-weak-match", "GET", "/o?size=100", http.Header{"If-None-Match": {"W/" + etag}}, 304, []byte{}, ""},
		{"inm-list", "GET", "/o?size=100", http.Header{"If-None-Match": {`"zzz", ` + etag}}, 304, []byte{}, ""},
		{"inm-star", "GET", "/o?size=100", http.Header{"If-None-Match": {"*"}}, 304, []byte{}, ""},
		{"inm-other", "GET", "/o?size=100", http.Header{"If-None-Match": {`"zzz"`}}, 200, Body("/o", 1, 100), ""},
		{"ims-not-modified", "GET", "/o?size=100", http.Header{"If-Modified-Since": {lm}}, 304, []byte{}, ""},
		{"ims-modified", "GET", "/o?size=100", http.Header{"If-Modified-Since": {epoch.Add(-time.Second).Format(http.TimeFormat)}}, 200, Body("/o", 1, 100), ""},
		{"ims-no-etag", "GET", "/o?size=100&etag=0", http.Header{"If-Modified-Since": {lm}}, 304, []byte{}, ""},
		{"range", "GET", "/o?size=100", http.Header{"Range": {"bytes=10-19"}}, 206, Body("/o", 1, 100)[10:20], "bytes 10-19/100"},
		{"range-suffix", "GET", "/o?size=100", http.Header{"Range": {"bytes=-5"}}, 206, Body("/o", 1, 100)[95:], "bytes 95-99/100"},
		{"range-unsatisfiable", "GET", "/o?size=100", http.Header{"Range": {"bytes=200-"}}, 416, nil, "bytes */100"},
		{"range-with-stall", "GET", "/o?size=100&stall=1ms", http.Header{"Range": {"bytes=40-59"}}, 206, Body("/o", 1, 100)[40:60], "bytes 40-59/100"},
		{"head", "HEAD", "/o?size=100", nil, 200, []byte{}, ""},
		{"head-status", "HEAD", "/o?size=100&status=500", nil, 500, []byte{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, context.Background(), tt.method, base+tt.url, tt.header, "")
			if r.err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.url, r.err)
			}
			if r.status != tt.wantStatus {
				t.Errorf("%s %s %v status = %d, want %d", tt.method, tt.url, tt.header, r.status, tt.wantStatus)
			}
			if tt.wantBody != nil && !bytes.Equal(r.body, tt.wantBody) {
				t.Errorf("%s %s body = %q, want %q", tt.method, tt.url, r.body, tt.wantBody)
			}
			if got := r.header.Get("Content-Range"); got != tt.wantRange {
				t.Errorf("%s %s Content-Range = %q, want %q", tt.method, tt.url, got, tt.wantRange)
			}
			if tt.method == "HEAD" && r.header.Get("Content-Length") != "100" {
				t.Errorf("HEAD Content-Length = %q, want 100", r.header.Get("Content-Length"))
			}
		})
	}
}

func TestBump(t *testing.T) {
	clk := clocktest.New(epoch)
	s, base := start(t, "127.0.0.35", Config{Clock: clk.Now})
	c := client(t)
	get := func(path string) result {
		t.Helper()
		r := do(t, c, context.Background(), "GET", base+path+"?size=32", nil, "")
		if r.err != nil || r.status != 200 {
			t.Fatalf("GET %s = %d, %v", path, r.status, r.err)
		}
		return r
	}
	check := func(step, path string, version int) {
		t.Helper()
		r := get(path)
		if want := Body(path, version, 32); !bytes.Equal(r.body, want) {
			t.Errorf("%s: GET %s body = %q, want %q", step, path, r.body, want)
		}
		if got, want := r.header.Get("ETag"), ETag(path, version, 32); got != want {
			t.Errorf("%s: GET %s ETag = %s, want %s", step, path, got, want)
		}
	}
	check("initial", "/x", 1)
	check("initial", "/y", 1)
	oldETag := get("/x").header.Get("ETag")

	clk.Advance(time.Minute)
	r := do(t, c, context.Background(), "POST", base+"/_bump?path=/x", nil, "")
	if r.status != 200 || !strings.Contains(string(r.body), `"version": 2`) {
		t.Fatalf("POST /_bump?path=/x = %d %s, want 200 with version 2", r.status, r.body)
	}
	check("after bump /x", "/x", 2)
	check("after bump /x", "/y", 1)
	if got, want := get("/x").header.Get("Last-Modified"), epoch.Add(time.Minute).Format(http.TimeFormat); got != want {
		t.Errorf("Last-Modified after bump = %s, want %s (the bump time)", got, want)
	}
	// The old ETag no longer validates.
	if r := do(t, c, context.Background(), "GET", base+"/x?size=32", http.Header{"If-None-Match": {oldETag}}, ""); r.status != 200 {
		t.Errorf("GET /x with the pre-bump ETag = %d, want 200", r.status)
	}

	do(t, c, context.Background(), "POST", base+"/_bump", nil, "")
	check("after bump all", "/x", 3)
	check("after bump all", "/y", 2)

	for i, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		r := do(t, c, context.Background(), m, base+"/y?location=/y/new", nil, "payload")
		if r.status != 204 || r.header.Get("Location") != "/y/new" {
			t.Errorf("%s /y = %d Location %q, want 204 Location /y/new", m, r.status, r.header.Get("Location"))
		}
		if got := s.Version("/y"); got != 3+i {
			t.Errorf("Version(/y) after %s = %d, want %d", m, got, 3+i)
		}
	}
	if got := s.Requests("/y"); got != 3+4 {
		t.Errorf("Requests(/y) = %d, want 7 (3 GETs, and unsafe methods are counted)", got)
	}
	if r := do(t, c, context.Background(), "GET", base+"/_bump", nil, ""); r.status != 405 {
		t.Errorf("GET /_bump = %d, want 405", r.status)
	}
	if r := do(t, c, context.Background(), "POST", base+"/_bump?path=_stats", nil, ""); r.status != 400 {
		t.Errorf("POST /_bump?path=_stats = %d, want 400", r.status)
	}
	if r := do(t, c, context.Background(), "OPTIONS", base+"/y", nil, ""); r.status != 405 {
		t.Errorf("OPTIONS /y = %d, want 405", r.status)
	}
}

func TestFaults(t *testing.T) {
	s, base := start(t, "127.0.0.36", Config{})
	c := client(t)
	// Long enough for the exchanges that succeed on a busy machine; the delay and stall cases
	// run into it.
	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 2*time.Second)
	}

	tests := []struct {
		name  string
		fault string // POST /_fault body
		check func(t *testing.T, r result)
	}{
		{"status", `{"path":"/f","status":503}`, func(t *testing.T, r result) {
			if r.err != nil || r.status != 503 || !bytes.Equal(r.body, Body("/f", 1, 64)) {
				t.Errorf("GET with status fault = %d %q, %v, want 503 with the object body", r.status, r.body, r.err)
			}
		}},
		{"drop", `{"path":"/f","drop":true}`, func(t *testing.T, r result) {
			if r.err == nil || r.status != 0 {
				t.Errorf("GET with drop fault = %d, %v, want a transport error", r.status, r.err)
			}
		}},
		{"truncate", `{"path":"/f","truncate":true}`, func(t *testing.T, r result) {
			if !errors.Is(r.err, io.ErrUnexpectedEOF) || r.status != 200 {
				t.Errorf("GET with truncate fault = %d, %v, want 200 then unexpected EOF", r.status, r.err)
			}
			if want := Body("/f", 1, 64)[:32]; !bytes.Equal(r.body, want) {
				t.Errorf("truncated body = %q, want the first half %q", r.body, want)
			}
		}},
		{"delay", `{"path":"/f","delay":"1m"}`, func(t *testing.T, r result) {
			if !errors.Is(r.err, context.DeadlineExceeded) {
				t.Errorf("GET with 1m delay fault and 2s deadline: err = %v, want deadline exceeded", r.err)
			}
		}},
		{"stall", `{"path":"/f","stall":"1m"}`, func(t *testing.T, r result) {
			if r.status != 200 || !errors.Is(r.err, context.DeadlineExceeded) {
				t.Errorf("GET with stall fault = %d, %v, want 200 then deadline exceeded", r.status, r.err)
			}
			if want := Body("/f", 1, 64)[:32]; !bytes.Equal(r.body, want) {
				t.Errorf("body before the stall = %q, want the first half %q", r.body, want)
			}
		}},
		{"global", `{"path":"","status":502}`, func(t *testing.T, r result) {
			if r.status != 502 {
				t.Errorf("GET with global fault = %d, want 502", r.status)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := do(t, c, context.Background(), "POST", base+"/_fault", nil, tt.fault); r.status != 204 {
				t.Fatalf("POST /_fault %s = %d %s, want 204", tt.fault, r.status, r.body)
			}
			ctx, cancel := short()
			defer cancel()
			tt.check(t, do(t, c, ctx, "GET", base+"/f?size=64", nil, ""))
			if r := do(t, c, context.Background(), "DELETE", base+"/_fault", nil, ""); r.status != 204 {
				t.Fatalf("DELETE /_fault = %d, want 204", r.status)
			}
			if r := do(t, c, context.Background(), "GET", base+"/f?size=64", nil, ""); r.err != nil || r.status != 200 {
				t.Errorf("GET after DELETE /_fault = %d, %v, want 200", r.status, r.err)
			}
		})
	}

	t.Run("path-overrides-global", func(t *testing.T) {
		s.SetFault("", Fault{Status: 500})
		s.SetFault("/p", Fault{Status: 503})
		defer s.ClearFaults()
		for path, want := range map[string]int{"/p": 503, "/q": 500} {
			if r := do(t, c, context.Background(), "GET", base+path, nil, ""); r.status != want {
				t.Errorf("GET %s = %d, want %d", path, r.status, want)
			}
		}
		s.SetFault("/p", Fault{})
		if r := do(t, c, context.Background(), "GET", base+"/p", nil, ""); r.status != 500 {
			t.Errorf("GET /p after removing its fault = %d, want the global 500", r.status)
		}
	})

	t.Run("list", func(t *testing.T) {
		s.SetFault("/l", Fault{Status: 503, Delay: time.Second})
		defer s.ClearFaults()
		r := do(t, c, context.Background(), "GET", base+"/_fault", nil, "")
		if !strings.Contains(string(r.body), `"delay": "1s"`) || !strings.Contains(string(r.body), `"/l"`) {
			t.Errorf("GET /_fault = %s, want the /l fault with delay 1s", r.body)
		}
	})

	t.Run("bad", func(t *testing.T) {
		for _, body := range []string{`{"status":"x"}`, `{"delay":"soon"}`, `{"path":"x"}`, `{"bogus":1}`, `{}{}`, `{"status":42}`} {
			if r := do(t, c, context.Background(), "POST", base+"/_fault", nil, body); r.status != 400 {
				t.Errorf("POST /_fault %s = %d, want 400", body, r.status)
			}
		}
	})
}

func TestParamDelayAndStall(t *testing.T) {
	_, base := start(t, "127.0.0.37", Config{})
	c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if r := do(t, c, ctx, "GET", base+"/d?delay=1m", nil, ""); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("GET ?delay=1m with 2s deadline: err = %v, want deadline exceeded", r.err)
	}
	for _, status := range []string{"200", "404"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r := do(t, c, ctx, "GET", base+"/d?stall=1m&size=10&status="+status, nil, "")
		if !errors.Is(r.err, context.DeadlineExceeded) || !bytes.Equal(r.body, Body("/d", 1, 10)[:5]) {
			t.Errorf("GET ?stall=1m status %s = %q, %v, want the first 5 bytes then deadline exceeded", status, r.body, r.err)
		}
	}
}

func TestStatsConcurrent(t *testing.T) {
	s, base := start(t, "127.0.0.38", Config{})
	c := client(t)
	const n = 8
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(t, c, ctx, "GET", base+"/slow?delay=1m", nil, "")
		}()
	}
	wait.For(t, 5*time.Second, "n requests in flight", func() bool { return s.InFlight() == n })

	var st StatsJSON
	r := do(t, c, context.Background(), "GET", base+"/_stats", nil, "")
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatalf("GET /_stats: %v (%s)", err, r.body)
	}
	if st.Total != n || st.Paths["/slow"] != n || st.InFlight != n || st.MaxConcurrent != n {
		t.Errorf("GET /_stats = %+v, want total, paths[/slow], in_flight and max_concurrent all %d", st, n)
	}
	if _, ok := st.Paths["/_stats"]; ok {
		t.Errorf("GET /_stats counted /_stats itself: %+v", st.Paths)
	}
	cancel()
	wg.Wait()
	wait.For(t, 5*time.Second, "no request in flight", func() bool { return s.InFlight() == 0 })
	if got := s.MaxConcurrent(); got != n {
		t.Errorf("MaxConcurrent() = %d, want %d", got, n)
	}

	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(t, c, context.Background(), "GET", base+fmt.Sprintf("/p%d", i%4), nil, "")
		}()
	}
	wg.Wait()
	if got := s.Total(); got != n+20 {
		t.Errorf("Total() = %d, want %d", got, n+20)
	}
	for i := 0; i < 4; i++ {
		if got := s.Requests(fmt.Sprintf("/p%d", i)); got != 5 {
			t.Errorf("Requests(/p%d) = %d, want 5", i, got)
		}
	}
	// A client has its whole answer a moment before the handler returns.
	wait.For(t, 5*time.Second, "no request in flight", func() bool { return s.InFlight() == 0 })
	s.ResetStats()
	if s.Total() != 0 || s.Requests("/p0") != 0 || s.MaxConcurrent() != 0 {
		t.Errorf("after ResetStats: Total %d, Requests(/p0) %d, MaxConcurrent %d, want 0, 0, 0", s.Total(), s.Requests("/p0"), s.MaxConcurrent())
	}
}

func TestLastHeaderAndMetrics(t *testing.T) {
	s, base := start(t, "127.0.0.39", Config{})
	c := client(t)
	if got := s.LastHeader("/h"); got != nil {
		t.Errorf("LastHeader before any request = %v, want nil", got)
	}
	do(t, c, context.Background(), "GET", base+"/h", http.Header{"X-Forwarded-For": {"192.0.2.1"}, "Via": {"1.1 a"}}, "")
	do(t, c, context.Background(), "GET", base+"/h", http.Header{"Via": {"1.1 b"}}, "")
	h := s.LastHeader("/h")
	if h.Get("Via") != "1.1 b" || h.Get("X-Forwarded-For") != "" {
		t.Errorf("LastHeader(/h) = %v, want the second request's headers (Via 1.1 b, no X-Forwarded-For)", h)
	}
	do(t, c, context.Background(), "GET", base+"/h?status=503", nil, "")
	r := do(t, c, context.Background(), "GET", base+"/metrics", nil, "")
	for _, want := range []string{`origin_requests_total{code="200"} 2`, `origin_requests_total{code="503"} 1`, "origin_requests_in_flight 0"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, r.body)
		}
	}
	if s.Requests("/metrics") != 0 {
		t.Errorf("Requests(/metrics) = %d, want 0 (not an object path)", s.Requests("/metrics"))
	}
	if r := do(t, c, context.Background(), "GET", base+"/_nothing", nil, ""); r.status != 404 {
		t.Errorf("GET /_nothing = %d, want 404", r.status)
	}
}

func TestGracefulShutdown(t *testing.T) {
	s, err := New(Config{ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.40:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := client(t)
	res := make(chan result, 1)
	go func() {
		res <- do(t, c, context.Background(), "GET", "http://"+ln.Addr().String()+"/g?delay=100ms&size=8", nil, "")
	}()
	wait.For(t, 5*time.Second, "one request in flight", func() bool { return s.InFlight() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if r := <-res; r.err != nil || r.status != 200 || !bytes.Equal(r.body, Body("/g", 1, 8)) {
		t.Errorf("in-flight request during shutdown = %d %q, %v, want 200 with its body", r.status, r.body, r.err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("dial after Serve returned succeeded, want the listener closed")
	}
}

// TestShutdownTimeout checks that Serve returns after ShutdownTimeout even with a handler that
// would wait for a minute, and that the handler has exited by then.
func TestShutdownTimeout(t *testing.T) {
	s, err := New(Config{ShutdownTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.41:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := client(t)
	go do(t, c, context.Background(), "GET", "http://"+ln.Addr().String()+"/g?stall=1m", nil, "")
	wait.For(t, 5*time.Second, "one request in flight", func() bool { return s.InFlight() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if got := s.InFlight(); got != 0 {
		t.Errorf("InFlight() after Serve returned = %d, want 0", got)
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"zero", Config{}, false},
		{"addr", Config{Addr: "127.0.0.1:0"}, false},
		{"bad-addr", Config{Addr: "nohostport"}, true},
		{"negative-shutdown", Config{ShutdownTimeout: -1}, true},
		{"negative-max-paths", Config{MaxPaths: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("New(%+v) error = %v, want error %v", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestRunAndCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.42:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // Run listens itself; free the port it will take

	cmd := NewCommand()
	var stderr bytes.Buffer
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--listen", addr})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	c := client(t)
	wait.For(t, 5*time.Second, "the origin healthy", func() bool {
		r := do(t, c, context.Background(), "GET", "http://"+addr+"/_health", nil, "")
		return r.err == nil && r.status == 200
	})
	if r := do(t, c, context.Background(), "GET", "http://"+addr+"/cmd?size=3", nil, ""); string(r.body) != "/cm" {
		t.Errorf("GET /cmd?size=3 via the command = %q, want %q", r.body, "/cm")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("command returned %v, want nil", err)
	}
	if !strings.Contains(stderr.String(), "origin serving") {
		t.Errorf("command log = %q, want an \"origin serving\" line", stderr.String())
	}
}

func BenchmarkHandler(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	req, _ := http.NewRequest("GET", "/bench?size=16384&cc=max-age%3D60", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.ServeHTTP(discard{header: http.Header{}}, req)
		}
	})
}

// BenchmarkHandlerPaths: the per-request cost with the per-path state at its bound. "one" asks
// for one path; "distinct" cycles over four times MaxPaths paths, so every request adds a path
// and forgets the least recently used one, in all three tables (a GET and a bump per path).
func BenchmarkHandlerPaths(b *testing.B) {
	const maxPaths = 1024
	for _, bc := range []struct {
		name  string
		paths int
	}{{"one", 1}, {"distinct", 4 * maxPaths}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Config{MaxPaths: maxPaths})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			reqs := make([]*http.Request, bc.paths)
			for i := range reqs {
				reqs[i], _ = http.NewRequest("GET", fmt.Sprintf("/bench/%d?size=1024&cc=max-age%%3D60", i), nil)
				reqs[i].Header.Set("User-Agent", "bench")
				s.Bump(reqs[i].URL.Path)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				h.ServeHTTP(discard{header: http.Header{}}, reqs[i])
				if i++; i == len(reqs) {
					i = 0
				}
			}
		})
	}
}

// discard is a minimal ResponseWriter for the handler benchmark.
type discard struct{ header http.Header }

func (d discard) Header() http.Header                 { return d.header }
func (d discard) Write(b []byte) (int, error)         { return len(b), nil }
func (d discard) WriteHeader(int)                     {}
func (d discard) ReadFrom(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }
