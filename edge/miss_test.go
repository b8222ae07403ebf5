package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// TestMissesReuseUpstreamConnections: unique-URL misses, 64 at a time as from wrk -c64, go
// over kept-alive origin connections. An idle pool smaller than the concurrency would make
// later misses dial anew (issue 15); a body read short of its end would not give its
// connection back at all.
func TestMissesReuseUpstreamConnections(t *testing.T) {
	const conc, rounds = 64, 3
	var dials atomic.Int64
	originAddr := startHTTPConns(t, "127.0.0.20", &dials, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Length", "1024")
		w.Write(make([]byte, 1024))
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.21"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	t.Cleanup(c.CloseIdleConnections)
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range conc {
			wg.Go(func() {
				r := do(t, c, http.MethodGet, n.Addr(), testHost, fmt.Sprintf("/u/%d/%d", round, i))
				if r.status != 200 || len(r.body) != 1024 {
					t.Errorf("miss %d/%d: %d, %d bytes", round, i, r.status, len(r.body))
				}
				wantCacheStatus(t, r, "fwd=miss", "stored")
			})
		}
		wg.Wait()
	}
	if d := dials.Load(); d > conc {
		t.Errorf("%d misses dialed %d origin connections, want at most %d (one per concurrent miss)", conc*rounds, d, conc)
	}
}

// startHTTPConns serves h on ip until the test ends, counting the connections accepted.
func startHTTPConns(t *testing.T, ip string, conns *atomic.Int64, h http.Handler) string {
	t.Helper()
	return startServer(t, ip, &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}})
}

func TestAppendVia(t *testing.T) {
	for _, tt := range []struct {
		prior        string
		major, minor int
		want         string
	}{
		{"", 1, 1, "1.1 e1"},
		{"", 1, 0, "1.0 e1"},
		{"1.1 origin-proxy", 1, 1, "1.1 origin-proxy, 1.1 e1"},
		{"", 2, 0, "2 e1"},
		{"2 a", 3, 0, "2 a, 3 e1"},
		{"", 0, 9, "0.9 e1"},
	} {
		if got := appendVia(tt.prior, tt.major, tt.minor, "e1"); got != tt.want {
			t.Errorf("appendVia(%q, %d, %d) = %q, want %q", tt.prior, tt.major, tt.minor, got, tt.want)
		}
	}
}

// TestMissesSurviveOriginIdleClose: an origin that closes its kept-alive connections once idle
// (as nginx's keepalive_timeout does) costs no miss an error: the edge's upstream client sends
// the fill again on a new connection, and its breaker counts no failure.
func TestMissesSurviveOriginIdleClose(t *testing.T) {
	var conns atomic.Int64
	closed := make(chan struct{}, 8)
	originAddr := startServer(t, "127.0.0.22", &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=3600")
			w.Write([]byte("fresh"))
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       20 * time.Millisecond,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed:
				closed <- struct{}{}
			}
		},
	})
	n, _ := startEdge(t, listen(t, "127.0.0.23"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	for i := range 3 {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, fmt.Sprintf("/idle/%d", i))
		if r.status != http.StatusOK || string(r.body) != "fresh" {
			t.Fatalf("miss %d after the origin closed its idle connection: %d %q", i, r.status, r.body)
		}
		wantCacheStatus(t, r, "fwd=miss", "stored")
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("the origin did not close its idle connection after miss %d", i)
		}
	}
	if got := conns.Load(); got != 3 {
		t.Errorf("3 misses, each after the origin closed the last connection: %d connections, want 3", got)
	}
	for _, st := range n.fill.upstreamStats() {
		if st.Failures != 0 || st.Requests != 3 {
			t.Errorf("upstream %s: %d requests, %d failures; want 3 and none", st.Name, st.Requests, st.Failures)
		}
	}
}

// TestUpstreamRequestSameURL: the upstream request built from the client's parsed path has the
// URL that parsing the whole string gives: the same request line and the same text in errors.
func TestUpstreamRequestSameURL(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tt := range []struct{ client, target, base string }{
		{"/a/b", "/a/b", ""},
		{"/a%2Fb/c%20d?x=1&y=2", "/a%2Fb/c%20d?x=1&y=2", ""},
		{"/caf%C3%A9/%7euser?q", "/caf%C3%A9/%7euser?q", ""},
		{"/e?", "/e?", ""},
		{"/q?b=2&a=1", "/q?a=1&b=2", ""}, // the key sorted the query
		{"/p?x", "/p?x", "/base"},
		{"/", "/", ""},
	} {
		r, err := http.NewRequest(http.MethodGet, "http://client.example"+tt.client, nil)
		if err != nil {
			t.Fatal(err)
		}
		req := &request{r: r, path: r.URL.EscapedPath(), target: tt.target}
		got, err := upstreamRequest(ctx, req, "http", "o.example:8080", tt.base)
		if err != nil {
			t.Fatalf("upstreamRequest(%q): %v", tt.target, err)
		}
		want, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://o.example:8080"+tt.base+tt.target, nil)
		if got.URL.RequestURI() != want.URL.RequestURI() || got.URL.String() != want.URL.String() ||
			got.Host != want.Host || got.Method != http.MethodGet || got.Context() != ctx ||
			got.Proto != want.Proto || got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor ||
			got.Body != nil || got.ContentLength != 0 {
			t.Errorf("target %q base %q: got %s %q (%q, Host %q), want %q (%q, Host %q)", tt.target, tt.base,
				got.Method, got.URL.RequestURI(), got.URL, got.Host, want.URL.RequestURI(), want.URL, want.Host)
		}
	}
	// The common case costs the request and its URL, nothing more (issue 15).
	r, _ := http.NewRequest(http.MethodGet, "http://client.example/a/b?c", nil)
	req := &request{r: r, path: r.URL.EscapedPath(), target: "/a/b?c"}
	if n := testing.AllocsPerRun(100, func() { upstreamRequest(ctx, req, "http", "o.example", "") }); n > 2 {
		t.Errorf("upstreamRequest: %v allocations, want 2", n)
	}
}

// TestAnswerWithoutDateStoredWithOne: an origin answer without Date is stored with the time
// it came as its Date (RFC 9110 §6.6.1: a recipient that caches it MUST add one), so a hit
// says when the copy was made. It went out with the time it was served, and beside its Age
// a client reading Expires - Date counted the copy's age twice: one 30 s old with 30 s left
// read as already stale.
func TestAnswerWithoutDateStoredWithOne(t *testing.T) {
	clock := newFakeClock()
	filled := clock.Now()
	n, client := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil // net/http's server adds none then, as some origins send none
		w.Header().Set("Expires", filled.Add(time.Minute).Format(http.TimeFormat))
		w.Write([]byte("no date"))
	}, nil, func(c *Config) { c.Clock = clock.Now })
	want := filled.Format(http.TimeFormat)
	for _, tt := range []struct {
		name, method string
		advance      time.Duration
		age          string
	}{
		{"miss", http.MethodGet, 0, "0"},
		{"hit", http.MethodGet, 30 * time.Second, "30"},
		{"HEAD hit", http.MethodHead, 0, "30"},
	} {
		clock.Advance(tt.advance)
		r := do(t, client, tt.method, n.Addr(), testHost, "/nodate")
		if r.status != http.StatusOK || r.header.Get("Date") != want || r.header.Get("Age") != tt.age {
			t.Errorf("%s: %d, Date %q, Age %q (Cache-Status %q); want 200, Date %q (the fill's), Age %s",
				tt.name, r.status, r.header.Get("Date"), r.header.Get("Age"), r.header.Get("Cache-Status"), want, tt.age)
		}
	}
}
