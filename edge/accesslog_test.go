package edge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// lockedBuffer is a bytes.Buffer the node's goroutines may write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAccessLogJSON: with access_log on, each request is one JSON line (the handler the
// command installs) whose fields say what happened.
func TestAccessLogJSON(t *testing.T) {
	var out lockedBuffer
	s := newSingle(t, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
	})
	p := obj("/logged", "cc", "max-age=60")
	s.get(t, p, "User-Agent", "log-test")
	s.get(t, p)
	var lines []map[string]any
	wait.For(t, 5*time.Second, "two access log lines", func() bool {
		lines = lines[:0]
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
			}
			if m["msg"] == "request" {
				lines = append(lines, m)
			}
		}
		return len(lines) >= 2
	})
	for i, want := range []string{"miss", "hit"} {
		l := lines[i]
		for field, v := range map[string]any{
			"method": "GET", "host": testHost, "path": p, "status": float64(200), "cache": want, "proto": "http/1.1",
		} {
			if l[field] != v {
				t.Errorf("line %d: %s = %v, want %v", i, field, l[field], v)
			}
		}
		if b, _ := l["bytes"].(float64); b <= 0 {
			t.Errorf("line %d: bytes = %v, want the body size", i, l["bytes"])
		}
		if d, ok := l["duration_ms"].(float64); !ok || d < 0 {
			t.Errorf("line %d: duration_ms = %v, want a non-negative number", i, l["duration_ms"])
		}
		if r, _ := l["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
			t.Errorf("line %d: remote = %v, want the client's address", i, l["remote"])
		}
		if tp, _ := l["traceparent"].(string); len(tp) != 55 || !strings.HasPrefix(tp, "00-") {
			t.Errorf("line %d: traceparent = %v, want a W3C traceparent", i, l["traceparent"])
		}
	}
	if lines[0]["tier"] != "origin" {
		t.Errorf("miss line: tier = %v, want origin", lines[0]["tier"])
	}
}
