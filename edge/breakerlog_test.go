package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// logLines are the JSON lines in out whose msg is msg.
func logLines(t *testing.T, out string, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		if m["msg"] == msg {
			lines = append(lines, m)
		}
	}
	return lines
}

// TestBreakerOpenLogged: an origin that goes down is logged once when its breaker opens (with
// the upstream and the failure that opened it), not again while its half-open probes keep
// failing, and once when it closes again. An operator saw nothing in the log at all: every
// miss of a dead origin was a 502 with no line unless access_log was on (one a request).
// The failure's URL is logged without its query, which may carry a token or a signature: the
// line carried the whole URL the failed fill asked for.
func TestBreakerOpenLogged(t *testing.T) {
	var out logtest.Buffer
	_, originAddr, stopOrigin := startStoppableOrigin(t, "127.0.33.1", nil)
	cfg := Config{PoP: "tst", Node: "e1", Logger: slog.New(slog.NewJSONHandler(&out, nil)),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	cfg.Upstream.ConsecutiveFailures = 2
	cfg.Upstream.OpenTimeout = 20 * time.Millisecond
	n, _ := startEdge(t, listen(t, "127.0.33.2"), cfg)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	path := 0
	// A quote in it too: url.Error quotes its URL, escaping the quote in the line's text.
	const secret = `sig="s3cret-signature"`
	get := func() resp {
		t.Helper()
		path++
		return do(t, client, http.MethodGet, n.Addr(), testHost, fmt.Sprintf("/b%d?%s", path, secret))
	}
	if r := get(); r.status != http.StatusOK {
		t.Fatalf("GET with the origin up = %d, want 200", r.status)
	}
	stopOrigin() // its address now refuses connections
	state := func() string {
		st, _ := originStats(n)
		return st.State
	}
	// Open it, then let its half-open probes fail a few times: each opens it again.
	for reopened := 0; reopened < 3; {
		if r := get(); r.status < 500 {
			t.Fatalf("GET with the origin down = %d, want an error", r.status)
		}
		if state() == "open" {
			reopened++
			wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return state() == "half-open" })
		}
	}
	opened := logLines(t, out.String(), "upstream breaker open")
	if len(opened) != 1 {
		t.Fatalf("%d lines %q after the breaker opened and reopened twice, want 1; log:\n%s", len(opened), "upstream breaker open", out.String())
	}
	if l := opened[0]; l["level"] != "WARN" || !strings.HasPrefix(fmt.Sprint(l["upstream"]), "origin "+testHost+" ") ||
		!strings.Contains(fmt.Sprint(l["err"]), "connection refused") || l["open_timeout"] != "20ms" {
		t.Errorf("breaker open line = %v, want WARN with upstream origin %s ..., the dial's error and open_timeout 20ms", l, testHost)
	}
	if err := fmt.Sprint(opened[0]["err"]); strings.Contains(err, "s3cret") || !strings.Contains(err, "/b") {
		t.Errorf("breaker open line's err = %q, want the failed fill's URL without its query %q", err, secret)
	}

	// The origin comes back on its address: the next probe closes the breaker.
	ln, err := net.Listen("tcp", originAddr)
	if err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(origin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return state() == "half-open" })
	if r := get(); r.status != http.StatusOK {
		t.Fatalf("GET with the origin back = %d, want 200", r.status)
	}
	if s := state(); s != "closed" {
		t.Fatalf("breaker %s after a successful probe, want closed", s)
	}
	closed := logLines(t, out.String(), "upstream breaker closed")
	if len(closed) != 1 || closed[0]["level"] != "INFO" || closed[0]["upstream"] != opened[0]["upstream"] {
		t.Fatalf("lines %q = %v, want one INFO line for %v", "upstream breaker closed", closed, opened[0]["upstream"])
	}
	if d, err := time.ParseDuration(fmt.Sprint(closed[0]["open_for"])); err != nil || d <= 0 {
		t.Errorf("breaker closed line's open_for = %v, want a duration (%v)", closed[0]["open_for"], err)
	}
	if got := len(logLines(t, out.String(), "upstream breaker open")); got != 1 {
		t.Errorf("%d breaker open lines in all, want 1", got)
	}
}

// TestWithoutQueries: every *url.Error's URL in an error's tree, wrapped or joined, loses its
// query and fragment in the text; the rest of the text is kept.
func TestWithoutQueries(t *testing.T) {
	refused := errors.New("connection refused")
	ue := func(u string) error { return &url.Error{Op: "Get", URL: u, Err: refused} }
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{refused, "connection refused"},
		{ue("http://o/a"), `Get "http://o/a": connection refused`},
		{ue("http://o/a?token=x"), `Get "http://o/a": connection refused`},
		{ue("http://o/a#f?x"), `Get "http://o/a": connection refused`},
		// url.Error quotes its URL (%q): a query holding a quote, a backslash or a byte
		// that is not UTF-8 is escaped in the text, and must be cut there too.
		{ue(`http://o/a?sig="s3cret"`), `Get "http://o/a": connection refused`},
		{ue(`http://o/a?sig=s3cret\x`), `Get "http://o/a": connection refused`},
		{ue("http://o/a?sig=s3cret\xff"), `Get "http://o/a": connection refused`},
		{fmt.Errorf("fill: %w", ue("http://o/a?sig=x&b=1")), `fill: Get "http://o/a": connection refused`},
		{errors.Join(ue("http://o/a?x=1"), fmt.Errorf("then: %w", ue("http://p/b?y=2"))),
			"Get \"http://o/a\": connection refused\nthen: Get \"http://p/b\": connection refused"},
	} {
		if got := withoutQueries(tt.err); got != tt.want {
			t.Errorf("withoutQueries(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
