package dnsroute

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestNATSErrorsRateLimited: the asynchronous errors of the server's NATS connection are
// logged as control logs its own, through one fleet.RateLog: the first at once, the rest held
// back and counted in one line written when the interval ends or the server stops. Each of its
// KV watches logged "nats error … consumer not active" on its own when NATS went away (four per
// control restart), with no limit. Here the errors are the NATS server's refusals of
// subscriptions a DNS server may not make, on the server's own connection.
func TestNATSErrorsRateLimited(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	if err := fleet.EnsureBuckets(context.Background(), js, "", 3*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	var out logtest.Buffer
	cfg := testConfig(t)
	cfg.NATS, cfg.PoPs, cfg.Creds = ns.URL(), nil, ns.CredsFile(t, natsauth.DNS("ns1"))
	cfg.Logger = slog.New(slog.NewJSONHandler(&out, nil))
	l, err := newLiveFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Fleet = l.fleet()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := l.start(s)
	wait.For(t, 10*time.Second, "the server connected to NATS", l.nc.IsConnected)
	const errs = 3
	for i := range errs {
		if _, err := l.nc.SubscribeSync(fmt.Sprintf("forbidden.%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.nc.Flush(); err != nil { // the server has answered every subscription
		t.Fatal(err)
	}
	stop()
	lines := logtest.JSONLines(t, out.String(), "nats error")
	if len(lines) != 2 || lines[0]["suppressed"] != nil || lines[1]["suppressed"] != float64(errs-2) ||
		!strings.Contains(fmt.Sprint(lines[0]["err"]), `"forbidden.0"`) ||
		!strings.Contains(fmt.Sprint(lines[1]["err"]), fmt.Sprintf(`"forbidden.%d"`, errs-1)) {
		t.Errorf("\"nats error\" lines %v; want 2: the first refusal, then the last with suppressed %d (the others between)", lines, errs-2)
	}
}
