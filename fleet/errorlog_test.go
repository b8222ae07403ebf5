package fleet_test

import (
	"fmt"
	"log/slog"
	"strings"
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

// TestErrorLogKinds: the limit is per kind of error, so that a noisy one (permission refusals
// here, "consumer not active" from every KV watch at each NATS outage in production) does not
// hide another: a subscription that fell behind between refusals is written at once, and the
// refusals are counted on their own. With one limit for all it was held back and then lost,
// counted as one more refusal in a line that named only the last.
func TestErrorLogKinds(t *testing.T) {
	ns := natstest.Start(t)
	ctl, _ := ns.Connect(t)
	var out logtest.Buffer
	el := fleet.NewErrorLog(slog.New(slog.NewJSONHandler(&out, nil)))
	id := natsauth.DNS("ns1")
	nc, err := nats.Connect(ns.URL(), append(ns.Options(id), el.Option())...)
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(i int) {
		t.Helper()
		if _, err := nc.SubscribeSync(fmt.Sprintf("forbidden.%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil { // the refusal is in before what follows
			t.Fatal(err)
		}
	}
	refuse(0)
	// A subscription that may hold one message and gets three falls behind (ErrSlowConsumer).
	slow, err := nc.SubscribeSync(id.InboxPrefix() + ".slow")
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.SetPendingLimits(1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	for range 3 {
		if err := ctl.Publish(id.InboxPrefix()+".slow", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := ctl.Flush(); err != nil { // the messages are queued to nc before its next PONG
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		refuse(i)
	}
	el.Close(nc)
	lines := logtest.JSONLines(t, out.String(), "nats error")
	var refusals, slowLines []map[string]any
	for _, l := range lines {
		switch err := fmt.Sprint(l["err"]); {
		case strings.Contains(err, "permissions violation"):
			refusals = append(refusals, l)
		case strings.Contains(err, nats.ErrSlowConsumer.Error()):
			slowLines = append(slowLines, l)
		default:
			t.Errorf("unexpected line %v", l)
		}
	}
	if len(slowLines) != 1 || slowLines[0]["subject"] != id.InboxPrefix()+".slow" || slowLines[0]["suppressed"] != nil {
		t.Errorf("slow consumer lines %v, want one naming subject %s.slow with nothing suppressed (all lines: %v)",
			slowLines, id.InboxPrefix(), lines)
	}
	if len(refusals) != 2 || refusals[0]["suppressed"] != nil || refusals[1]["suppressed"] != float64(2) ||
		!strings.Contains(fmt.Sprint(refusals[1]["err"]), `"forbidden.3"`) {
		t.Errorf("refusal lines %v, want 2: the first, then forbidden.3's with suppressed 2", refusals)
	}
}

// TestErrorLogKindsBounded: errors told apart by their text get a limit each up to
// maxErrorKinds of them; those beyond share one, so that errors of ever new texts cannot
// grow the ErrorLog or the log without bound.
func TestErrorLogKindsBounded(t *testing.T) {
	var out logtest.Buffer
	el := fleet.NewErrorLog(slog.New(slog.NewJSONHandler(&out, nil)))
	var o nats.Options
	if err := el.Option()(&o); err != nil {
		t.Fatal(err)
	}
	const kinds = fleet.MaxErrorKinds + 4
	for i := range kinds {
		o.AsyncErrorCB(nil, nil, fmt.Errorf("error %d", i))
	}
	el.Close(nil)
	lines := logtest.JSONLines(t, out.String(), "nats error")
	// One line for each kind up to the bound, the first beyond it, and the last beyond it with
	// the count of the two between.
	if want := fleet.MaxErrorKinds + 2; len(lines) != want {
		t.Fatalf("%d lines for %d kinds, want %d: %v", len(lines), kinds, want, lines)
	}
	if last := lines[len(lines)-1]; last["err"] != fmt.Sprintf("error %d", kinds-1) || last["suppressed"] != float64(2) {
		t.Errorf("last line %v, want error %d with suppressed 2", last, kinds-1)
	}
}
