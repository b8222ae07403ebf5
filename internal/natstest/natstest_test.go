package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/internal/natsauth"
)

// TestFloors runs both floors on a real server with the control identity, as the purge
// benchmarks do: each returns one latency per publish, and each waited for every subscriber
// (a lost message or reply fails the run instead).
func TestFloors(t *testing.T) {
	s := Start(t)
	for _, tc := range []struct {
		name  string
		floor func(testing.TB, string, int, int, []nats.Option, ...nats.Option) []time.Duration
	}{{"fan-out", FanoutFloor}, {"round trip", RoundTripFloor}} {
		t.Run(tc.name, func(t *testing.T) {
			lat := tc.floor(t, s.URL(), 5, 20, nil, s.Options(natsauth.Control())...)
			if len(lat) != 20 {
				t.Fatalf("%d latencies for 20 publishes", len(lat))
			}
			for i, d := range lat {
				if d <= 0 || d > 5*time.Second {
					t.Fatalf("publish %d took %v", i, d)
				}
			}
		})
	}
}
