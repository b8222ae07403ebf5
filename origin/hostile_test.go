package origin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestBodyCacheBoundCountsKeys: BodyCacheBytes bounds the memory the body cache keeps, keys
// included. A client that asks for many distinct long paths (or Vary variants of long header
// values) with size=0 or 1 made the cache keep every key while counting only the body bytes,
// none for size=0: its memory grew without bound.
func TestBodyCacheBoundCountsKeys(t *testing.T) {
	const budget = 64 << 10
	s, base := start(t, "127.0.0.91", Config{BodyCacheBytes: budget})
	c := client(t)
	long := strings.Repeat("p", 4<<10)
	get := func(url string, h http.Header) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %.40s...: %d, want 200", url, resp.StatusCode)
		}
	}
	for i := range 64 {
		get(fmt.Sprintf("%s/%d/%s?size=0", base, i, long), nil)
		get(fmt.Sprintf("%s/%d/%s?size=1", base, i, long), nil)
		get(base+"/v?size=1&vary=X-Pad", http.Header{"X-Pad": {fmt.Sprint(i, long)}})
	}
	s.bodies.mu.Lock()
	held := 0
	for k, b := range s.bodies.bodies.all() {
		held += len(k.path) + len(b)
	}
	n := s.bodies.bodies.len()
	s.bodies.mu.Unlock()
	if held > budget {
		t.Errorf("body cache holds %d bytes of keys and bodies in %d entries, want at most BodyCacheBytes %d", held, n, budget)
	}
}

// TestObjectRequestWithoutPath: a request in absolute form without a path ("POST
// http://host HTTP/1.1") is for "/", as RFC 9110 §4.2.3 reads an empty path; it bumped every
// object instead (the empty path is Bump's "all"), and a GET of it was a distinct object "".
// A request-target that is not a path ("*") is refused.
func TestObjectRequestWithoutPath(t *testing.T) {
	s, base := start(t, "127.0.0.92", Config{})
	host := strings.TrimPrefix(base, "http://")
	raw := func(head string) *http.Response {
		t.Helper()
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := raw("POST http://" + host + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("POST without a path: %d, want 204", resp.StatusCode)
	}
	if v := s.Version("/x"); v != 1 {
		t.Errorf("version of /x after a POST without a path = %d, want 1 (only / bumped)", v)
	}
	if v := s.Version("/"); v != 2 {
		t.Errorf("version of / after a POST without a path = %d, want 2", v)
	}
	resp = raw("GET http://" + host + "?size=8 HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
	if want := ETag("/", 2, 8); resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != want {
		t.Errorf("GET without a path: %d, ETag %s; want 200, the ETag of / (%s)", resp.StatusCode, resp.Header.Get("ETag"), want)
	}
	if n := s.Requests("/"); n != 2 {
		t.Errorf("Requests(/) = %d, want 2", n)
	}
	resp = raw("GET * HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET *: %d, want 400", resp.StatusCode)
	}
	if n := s.Requests("*"); n != 0 {
		t.Errorf("Requests(*) = %d, want 0: not an object", n)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends nothing after its answer is
// closed after IdleTimeout; before, the server held it (and its goroutine) for good.
func TestIdleConnectionClosed(t *testing.T) {
	_, base := start(t, "127.0.0.92", Config{IdleTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: o\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The server closes the idle connection: the next read ends. The deadline only bounds
	// the test.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read on the idle connection: %d bytes, %v; want EOF (closed by the server)", n, err)
	}
}

// TestPathStateBounded: the state the origin keeps per path (request counts, body bytes and
// last headers; versions of bumped paths; faults) is bounded by MaxPaths, forgetting the least
// recently used paths, and a forgotten path answers as one never seen. Each table kept every
// path ever named: a client asking for ever new URLs (or POSTing to them) grew the origin's
// memory for good.
func TestPathStateBounded(t *testing.T) {
	const bound, rounds = 8, 80
	s, base := start(t, "127.0.0.93", Config{MaxPaths: bound})
	c := client(t)
	send := func(method, path string, h http.Header, body string, want int) result {
		t.Helper()
		r := do(t, c, context.Background(), method, base+path, h, body)
		if r.err != nil || r.status != want {
			t.Fatalf("%s %s = %d, %v; want %d", method, path, r.status, r.err, want)
		}
		return r
	}
	// /keep is used in every round, so it stays recent whatever else comes.
	send("POST", "/_fault", nil, `{"path":"/keep","status":203}`, http.StatusNoContent)
	for i := range rounds {
		p := fmt.Sprintf("/p/%d", i)
		send("POST", "/_fault", nil, `{"path":"`+p+`","status":503}`, http.StatusNoContent)
		send("GET", p+"?size=8", nil, "", http.StatusServiceUnavailable)
		send("POST", p, nil, "", http.StatusNoContent)
		round := http.Header{"X-Round": {strconv.Itoa(i)}}
		send("GET", "/keep?size=8", round, "", 203)
		send("POST", "/keep", round, "", http.StatusNoContent)
	}
	wait.For(t, 5*time.Second, "no request in flight", func() bool { return s.InFlight() == 0 })

	var st StatsJSON
	if err := json.Unmarshal(send("GET", "/_stats", nil, "", 200).body, &st); err != nil {
		t.Fatalf("GET /_stats: %v", err)
	}
	var faults []faultJSON
	if err := json.Unmarshal(send("GET", "/_fault", nil, "", 200).body, &faults); err != nil {
		t.Fatalf("GET /_fault: %v", err)
	}
	s.mu.Lock()
	versions, faultPaths := s.versions.len(), s.faults.len()
	s.mu.Unlock()
	s.stats.mu.Lock()
	statPaths := s.stats.paths.len()
	s.stats.mu.Unlock()
	for _, tt := range []struct {
		name string
		n    int
	}{
		{"stats table", statPaths},
		{"GET /_stats paths", len(st.Paths)},
		{"GET /_stats bytes", len(st.Bytes)},
		{"versions table", versions},
		{"faults table", faultPaths},
		{"GET /_fault", len(faults)},
	} {
		if tt.n > bound {
			t.Errorf("%s holds %d paths after %d distinct ones, want at most MaxPaths %d", tt.name, tt.n, rounds+1, bound)
		}
	}
	if want := int64(4 * rounds); st.Total != want || s.Total() != want {
		t.Errorf("total = %d (GET /_stats), %d (Total()); want %d: totals are never forgotten", st.Total, s.Total(), want)
	}

	// Recent paths keep all their state.
	if got, want := s.Requests("/keep"), int64(2*rounds); got != want {
		t.Errorf("Requests(/keep) = %d, want %d", got, want)
	}
	if got, want := s.Version("/keep"), 1+rounds; got != want {
		t.Errorf("Version(/keep) = %d, want %d", got, want)
	}
	if got, want := s.LastHeader("/keep").Get("X-Round"), strconv.Itoa(rounds-1); got != want {
		t.Errorf("LastHeader(/keep) X-Round = %q, want %q", got, want)
	}
	send("GET", "/keep?size=8", nil, "", 203) // its fault is still set
	last := fmt.Sprintf("/p/%d", rounds-1)
	if r, v, b := s.Requests(last), s.Version(last), s.BytesSent(last); r != 2 || v != 2 || b != 8 {
		t.Errorf("%s: Requests %d, Version %d, BytesSent %d; want 2, 2, 8", last, r, v, b)
	}
	send("GET", last+"?size=8", nil, "", http.StatusServiceUnavailable)

	// A forgotten path is a path never seen: no counts, version 1, no fault.
	for _, p := range []string{"/p/0", "/never"} {
		if r, v, b, h := s.Requests(p), s.Version(p), s.BytesSent(p), s.LastHeader(p); r != 0 || v != 1 || b != 0 || h != nil {
			t.Errorf("%s: Requests %d, Version %d, BytesSent %d, LastHeader %v; want 0, 1, 0, nil", p, r, v, b, h)
		}
		r := send("GET", p+"?size=8", nil, "", 200)
		if r.header.Get("ETag") != ETag(p, 1, 8) || !bytes.Equal(r.body, Body(p, 1, 8)) {
			t.Errorf("GET %s = ETag %s, body %q; want version 1's, %s and %q", p, r.header.Get("ETag"), r.body, ETag(p, 1, 8), Body(p, 1, 8))
		}
	}
}

// TestPathStateBoundedBytes: the per-path tables also bound the bytes of the path names and
// request headers they keep: paths and headers may each be up to a megabyte long, so a count
// of paths alone would still let a client make the origin keep gigabytes.
func TestPathStateBoundedBytes(t *testing.T) {
	const budget = 64 << 10
	s, base := start(t, "127.0.0.93", Config{})
	s.mu.Lock()
	s.versions.maxBytes, s.faults.maxBytes = budget, budget
	s.mu.Unlock()
	s.stats.mu.Lock()
	s.stats.paths.maxBytes = budget
	s.stats.mu.Unlock()
	c := client(t)
	long := strings.Repeat("p", 4<<10)
	path := func(i int) string { return fmt.Sprintf("/%d/%s", i, long) }
	for i := range 64 {
		p := path(i)
		if r := do(t, c, context.Background(), "GET", base+p, http.Header{"X-Pad": {long}}, ""); r.err != nil || r.status != 200 {
			t.Fatalf("GET %.20s...: %d, %v; want 200", p, r.status, r.err)
		}
		do(t, c, context.Background(), "POST", base+p, http.Header{"X-Pad": {long}}, "")
		s.SetFault(p, Fault{Status: 503})
	}
	wait.For(t, 5*time.Second, "no request in flight", func() bool { return s.InFlight() == 0 })

	s.stats.mu.Lock()
	held := 0
	for p, ps := range s.stats.paths.all() {
		held += len(p) + headerCost(ps.last)
	}
	statsBytes := s.stats.paths.bytes
	s.stats.mu.Unlock()
	s.mu.Lock()
	versionBytes, faultBytes := s.versions.bytes, s.faults.bytes
	s.mu.Unlock()
	for _, tt := range []struct {
		name  string
		bytes int
	}{
		{"stats (counted)", statsBytes},
		{"stats (recounted)", held},
		{"versions", versionBytes},
		{"faults", faultBytes},
	} {
		if tt.bytes > budget {
			t.Errorf("%s table holds %d bytes of paths and headers, want at most %d", tt.name, tt.bytes, budget)
		}
	}
	if p := path(63); s.Requests(p) != 2 || s.Version(p) != 2 || s.LastHeader(p).Get("X-Pad") != long {
		t.Errorf("the last path: Requests %d, Version %d; want 2, 2 and its last header kept", s.Requests(p), s.Version(p))
	}
}
