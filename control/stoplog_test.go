package control

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
)

// TestStopIsLogged: when its context ends (SIGTERM or SIGINT) control says at once that it is
// stopping and what it waits for, as the edge logs "edge draining"; it used to log nothing
// until it exited, and an operator could not tell a stopping control from a hung one.
func TestStopIsLogged(t *testing.T) {
	for _, tt := range []struct {
		name     string
		external bool
		nats     string // the stop line's nats field
	}{
		{name: "embedded nats", nats: "embedded server shut down last"},
		{name: "external nats", external: true, nats: "connection closed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out logtest.Buffer
			cfg := Config{Logger: slog.New(slog.NewJSONHandler(&out, nil)), ShutdownTimeout: 3 * time.Second}
			if tt.external {
				cfg.NATSURL = startNATS(t).URL()
			}
			ts := startServer(t, cfg)
			ts.stop()
			var line map[string]any
			if lines := logtest.JSONLines(t, out.String(), "control stopping"); len(lines) > 0 {
				line = lines[0]
			}
			if line == nil {
				t.Fatalf("no \"control stopping\" line in the log:\n%s", out.String())
			}
			if line["level"] != "INFO" || line["shutdown_timeout"] != float64(3*time.Second) ||
				!strings.Contains(line["waits_for"].(string), "API requests in flight") || line["nats"] != tt.nats {
				t.Errorf("stop line %v, want INFO with shutdown_timeout 3s, waits_for naming the API requests in flight, nats %q", line, tt.nats)
			}
		})
	}
}
