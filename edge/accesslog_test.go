package edge

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestAccessLogJSON: with access_log on, each request is one JSON line (the handler the
// command installs) whose fields say what happened.
func TestAccessLogJSON(t *testing.T) {
	var out logtest.Buffer
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

// TestAccessLogNotesFillFailure: a miss whose fill fails is logged with the failure's cause,
// as a failed pass is. The note was the status text alone ("Bad Gateway"): the cause was
// noted, then overwritten with it, so the log never said why.
func TestAccessLogNotesFillFailure(t *testing.T) {
	var out logtest.Buffer
	release := make(chan struct{})
	defer close(release)
	silent := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // no head until the test ends
		case <-release:
		case <-r.Context().Done():
		}
	}))
	gone := freeAddr(t, "127.0.0.22") // nothing listens: connections are refused
	cfg := Config{PoP: "tst", Node: "e1", AccessLog: true, Logger: slog.New(slog.NewJSONHandler(&out, nil)),
		Hosts: []wire.HostConfig{
			{Host: "silent.example.com", Origin: "http://" + silent},
			{Host: "gone.example.com", Origin: "http://" + gone},
		}}
	cfg.Upstream.ResponseHeaderTimeout = 200 * time.Millisecond
	n, _ := startEdge(t, listen(t, "127.0.0.21"), cfg)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	for _, tt := range []struct {
		host, method, path, want string
	}{
		{"silent.example.com", http.MethodGet, "/get", "timeout awaiting response headers"},
		{"silent.example.com", http.MethodPost, "/post", "timeout awaiting response headers"},
		{"gone.example.com", http.MethodGet, "/get", "connection refused"},
		{"gone.example.com", http.MethodHead, "/head", "connection refused"},
	} {
		r := do(t, client, tt.method, n.Addr(), tt.host, tt.path)
		if r.status < 500 {
			t.Fatalf("%s %s%s = %d, want an error", tt.method, tt.host, tt.path, r.status)
		}
		note := ""
		wait.For(t, 5*time.Second, "the failed request's access log line", func() bool {
			note = accessNote(t, out.String(), tt.method, tt.host, tt.path)
			return note != ""
		})
		if !strings.Contains(note, tt.want) {
			t.Errorf("%s %s%s (%d) logged with note %q, want the cause, %q", tt.method, tt.host, tt.path, r.status, note, tt.want)
		}
	}
}

// accessEntry is the first access log line in log for method, host and path, decoded, or nil.
func accessEntry(t *testing.T, log, method, host, path string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		if m["msg"] == "request" && m["method"] == method && m["host"] == host && m["path"] == path {
			return m
		}
	}
	return nil
}

// accessNote is the note of the access log line in log for method, host and path, or "".
func accessNote(t *testing.T, log, method, host, path string) string {
	t.Helper()
	note, _ := accessEntry(t, log, method, host, path)["note"].(string)
	return note
}
