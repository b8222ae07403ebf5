package edge

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
)

// TestLogHandlerDurations: the command's JSON log writes a duration as Go writes it ("2s"),
// not as a count of nanoseconds: "edge draining" read lame_duck 2000000000 and
// shutdown_timeout 30000000000. The access log's duration_ms, a number, stays a number.
func TestLogHandlerDurations(t *testing.T) {
	var out logtest.Buffer
	log := slog.New(newLogHandler(&out))
	log.Info("edge draining", "lame_duck", 2*time.Second, "shutdown_timeout", 30*time.Second,
		slog.Group("g", "wait", 1500*time.Millisecond))
	log.Info("request", "duration_ms", 1.5, "status", 200)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log = %q, want 2 lines", out.String())
	}
	var drain, req map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &drain); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &req); err != nil {
		t.Fatal(err)
	}
	g, _ := drain["g"].(map[string]any)
	if drain["lame_duck"] != "2s" || drain["shutdown_timeout"] != "30s" || g["wait"] != "1.5s" {
		t.Errorf("durations logged as %v, %v, %v; want \"2s\", \"30s\", \"1.5s\"", drain["lame_duck"], drain["shutdown_timeout"], g["wait"])
	}
	if req["duration_ms"] != 1.5 || req["status"] != float64(200) {
		t.Errorf("numbers logged as %v, %v; want 1.5 and 200", req["duration_ms"], req["status"])
	}
}
