package edge

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestFailedJoinClosesNATS: a node whose fleet join fails after it connected to NATS (here the
// registrar refuses a registration too large for the fleet bucket) closes the connection it
// made before Serve returns the error; it used to leave it open, reconnecting for ever. Its
// store's goroutines stop too (TestFailedServeStopsStore).
func TestFailedJoinClosesNATS(t *testing.T) {
	for _, tt := range []struct {
		name string
		fc   FleetConfig // NATS and Creds are filled in
		want string      // in Serve's error
	}{
		{name: "registrar refuses the node", fc: FleetConfig{City: strings.Repeat("x", 5000)}, want: "new registrar"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := natstest.Start(t)
			before, stores := s.NS.NumClients(), storeGoroutines()
			fc := tt.fc
			fc.NATS, fc.Creds = s.URL(), s.CredsFile(t, natsauth.Edge("f1", "n0"))
			n, err := New(Config{PoP: "f1", Node: "n0", Logger: slog.New(slog.DiscardHandler), Fleet: fc})
			if err != nil {
				t.Fatal(err)
			}
			err = n.Serve(context.Background(), listen(t, "127.0.4.71"), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Serve: %v, want an error naming %q", err, tt.want)
			}
			wait.For(t, 5*time.Second, "the NATS server to count as many clients as before the join", func() bool {
				return s.NS.NumClients() == before
			})
			wait.For(t, 5*time.Second, "the store's goroutines to stop", func() bool { return storeGoroutines() == stores })
		})
	}
}
