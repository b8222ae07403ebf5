package edge

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestNATSErrorsRateLimited: the asynchronous errors of the node's NATS connection are logged
// as control logs its own, through one fleet.RateLog: the first at once, the rest held back and
// counted in one line written when the interval ends or the node stops. Each KV watch logged
// "nats error … consumer not active" on its own when NATS went away (five per control restart),
// with no limit. Here the errors are the server's refusals of subscriptions an edge may not make,
// on the node's own connection.
func TestNATSErrorsRateLimited(t *testing.T) {
	url, _, _ := startNATS(t)
	var out logtest.Buffer
	cfg := Config{PoP: "f1", Node: "n0", Logger: slog.New(slog.NewJSONHandler(&out, nil)),
		Fleet: FleetConfig{NATS: url, Creds: edgeCreds(t, url, "f1", "n0"), Heartbeat: 100 * time.Millisecond, TTL: time.Second}}
	n, stop := startEdge(t, listen(t, "127.0.4.70"), cfg)
	wait.For(t, 10*time.Second, "the node connected to NATS", func() bool {
		s := n.rum.sink.Load()
		return s != nil && s.nc.IsConnected()
	})
	nc := n.rum.sink.Load().nc
	const errs = 3
	for i := range errs {
		if _, err := nc.SubscribeSync(fmt.Sprintf("forbidden.%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil { // the server has answered every subscription
		t.Fatal(err)
	}
	stop()
	checkNATSErrorLines(t, out.String(), errs)
}

// checkNATSErrorLines checks that log (JSON lines) says "nats error" twice for the n refused
// subscriptions forbidden.0 … forbidden.n-1: the first at once, then, when the node stops, the
// last with the count of those held back between them.
func checkNATSErrorLines(t *testing.T, log string, n int) {
	t.Helper()
	lines := logtest.JSONLines(t, log, "nats error")
	if len(lines) != 2 || lines[0]["suppressed"] != nil || lines[1]["suppressed"] != float64(n-2) ||
		!strings.Contains(fmt.Sprint(lines[0]["err"]), `"forbidden.0"`) ||
		!strings.Contains(fmt.Sprint(lines[1]["err"]), fmt.Sprintf(`"forbidden.%d"`, n-1)) {
		t.Errorf("\"nats error\" lines %v; want 2: the first refusal, then the last with suppressed %d (the others between)", lines, n-2)
	}
}
