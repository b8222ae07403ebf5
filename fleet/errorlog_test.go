package fleet_test

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
)

// TestErrorLog: a connection's asynchronous errors (here the server's refusals of
// subscriptions a DNS credential may not make) are written once, then counted in one line that
// Close writes after the callbacks nats.go queued before the close have run; a closed handler
// set before the ErrorLog's option still runs.
func TestErrorLog(t *testing.T) {
	for _, n := range []int{0, 1, 4} {
		t.Run(fmt.Sprintf("%d errors", n), func(t *testing.T) {
			ns := natstest.Start(t)
			var out logtest.Buffer
			el := fleet.NewErrorLog(slog.New(slog.NewJSONHandler(&out, nil)))
			closed := make(chan struct{})
			nc, err := nats.Connect(ns.URL(), append(ns.Options(natsauth.DNS("ns1")),
				nats.ClosedHandler(func(*nats.Conn) { close(closed) }), el.Option())...)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if _, err := nc.SubscribeSync(fmt.Sprintf("forbidden.%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			el.Close(nc)
			select {
			case <-closed:
			default:
				t.Error("the closed handler set before the ErrorLog's option did not run before Close returned")
			}
			lines := logtest.JSONLines(t, out.String(), "nats error")
			want := min(n, 2)
			if len(lines) != want {
				t.Fatalf("%d \"nats error\" lines for %d errors, want %d: %v", len(lines), n, want, lines)
			}
			if n > 2 && lines[1]["suppressed"] != float64(n-2) {
				t.Errorf("last line %v, want suppressed %d", lines[1], n-2)
			}
			el.Close(nil) // a second Close writes nothing more and returns
			if got := len(logtest.JSONLines(t, out.String(), "nats error")); got != want {
				t.Errorf("%d lines after a second Close, want %d", got, want)
			}
		})
	}
}
