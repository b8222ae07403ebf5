package control

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// boundWarning is what an edge logs when its file has more hosts than its registration carries.
const boundWarning = "file hosts past the registration's bound are not registered: control refuses their purges unless the config bucket has them"

// TestFileHostsPastRegistrationBound: a real edge whose file has 200 hosts of 19 characters
// (more than wire.MaxNodeHostsBytes of names as JSON) logs the warning once, with how many it
// registered and left out, the first left out and the bound; control's view holds exactly the
// names it registered; purges of a registered host are accepted and of a left-out one refused,
// as the warning says, until the config bucket has it. An edge whose hosts all fit logs none.
func TestFileHostsPastRegistrationBound(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1}, pastStartGrace)
	const origin = "http://127.0.0.1:8080" // never dialled: nothing is requested
	var file, fits []wire.HostConfig
	var names []string
	for i := range 200 {
		h := fmt.Sprintf("host%03d.example.com", i)
		names = append(names, h)
		file = append(file, wire.HostConfig{Host: h, Origin: origin})
	}
	fits = file[:3]
	for _, tt := range []struct {
		name, ip, pop string
		hosts         []wire.HostConfig
		registered    int // names registered; the rest are left out
	}{
		{"past the bound", "127.0.6.71", "ams", file, 93},
		{"within the bound", "127.0.6.72", "fra", fits, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			startEdgeMod(t, tt.ip, tt.pop, "n1", ts.NATSURL(), 100*time.Millisecond, func(c *edge.Config) {
				c.Hosts = tt.hosts
				c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			})
			var got []string
			wait.For(t, 10*time.Second, tt.pop+"/n1 in control's view", func() bool {
				for _, n := range ts.Fleet().Nodes() {
					if n.PoP == tt.pop && n.ID == "n1" {
						got = n.Hosts
						return true
					}
				}
				return false
			})
			if want := names[:tt.registered]; !slices.Equal(got, want) {
				t.Errorf("registered %d hosts %q..., want the first %d sorted", len(got), got[:min(len(got), 3)], len(want))
			}
			recs := logtest.JSONLines(t, logs.String(), boundWarning)
			left := len(tt.hosts) - tt.registered
			if left == 0 {
				if len(recs) != 0 {
					t.Errorf("warning logged %d times with every host registered: %v", len(recs), recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("warning logged %d times, want once:\n%s", len(recs), logs.String())
			}
			r := recs[0]
			if r["level"] != "WARN" || r["registered"] != float64(tt.registered) || r["left_out"] != float64(left) ||
				r["first_left_out"] != names[tt.registered] || r["bound_bytes"] != float64(wire.MaxNodeHostsBytes) ||
				r["pop"] != tt.pop || r["node"] != "n1" {
				t.Errorf("warning %v, want WARN, registered %d, left_out %d, first_left_out %s, bound_bytes %d, pop %s, node n1",
					r, tt.registered, left, names[tt.registered], wire.MaxNodeHostsBytes, tt.pop)
			}
			// What the warning says: a registered host is purged, a left-out one refused
			// until the config bucket has it.
			purge := func(host string) (int, []byte) {
				code, _, b := postPurge(t, ts, tokPurger, "", []byte(`{"host":"`+host+`","all":true}`))
				return code, b
			}
			if code, b := purge(names[tt.registered-1]); code != http.StatusAccepted {
				t.Errorf("purge of registered %s = %d %s, want 202", names[tt.registered-1], code, b)
			}
			firstLeft := names[tt.registered]
			if code, b := purge(firstLeft); code != http.StatusBadRequest || !strings.Contains(string(b), "is not configured") {
				t.Errorf("purge of left-out %s = %d %s, want 400 not configured", firstLeft, code, b)
			}
			putHosts(t, ts, strings.TrimPrefix(origin, "http://"), nil, firstLeft)
			if code, b := purge(firstLeft); code != http.StatusAccepted {
				t.Errorf("purge of left-out %s once in the config bucket = %d %s, want 202", firstLeft, code, b)
			}
		})
	}
}
