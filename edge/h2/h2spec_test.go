package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// TestH2Spec runs h2spec (pinned in go.mod as a tool) against the server: every one of its
// HTTP/2 and HPACK conformance cases must pass. net/http's own HTTP/2 server fails four of
// them (6.5.3, 8.1.2.2 twice, and 4.2 with its 1 MiB frame size), so this is a bar the
// standard library does not clear.
func TestH2Spec(t *testing.T) {
	body := bytes.Repeat([]byte("h2spec "), 20000) // past the initial window, for the flow-control cases
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	}))
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("h2spec runs as `go tool h2spec`: %v", err)
	}
	_, port, _ := net.SplitHostPort(ts.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "tool", "h2spec", "-t", "-k", "-h", "127.0.0.1", "-p", port, "-o", "5").CombinedOutput()
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("h2spec: %v\n%s", err, out)
	}
	if string(m[4]) != "0" || string(m[3]) != "0" {
		i := bytes.Index(out, []byte("Failures:"))
		if i < 0 {
			i = 0
		}
		t.Fatalf("h2spec: %s\n%s", m[0], out[i:])
	}
	t.Logf("h2spec: %s", m[0])
}
