package edge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRestartOverlapAckWaitsForOldProcess: a node restarted without dropping requests runs a
// new process under its id while the old one still serves (its lame duck, or before it was
// told to stop). The new process's acks stand for the node, so for the old process too: a
// receipt that says acked while the old process, cut off from NATS (or lagging), still serves
// the purged copy as a fresh hit breaks "acknowledged means applied". Before, the new process
// acked at once and the old one served the purged copy fresh for up to purge.max_lag.
func TestRestartOverlapAckWaitsForOldProcess(t *testing.T) {
	for _, tt := range []struct {
		name string
		// expired: the old process is cut off before the new one starts, until its key has
		// expired from the fleet bucket (3 s here): the new one finds no other process.
		expired bool
		maxLag  time.Duration
	}{
		{name: "old process cut off just before the purge", maxLag: 2 * time.Second},
		{name: "old process cut off until its key expired", expired: true, maxLag: 8 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, js, nc := startNATS(t)
			cut := natsCutter(t, "127.0.0.57", url)
			s, nodes := fleetEdgesWith(t, []string{cut.URL()}, true, time.Second, func(c *Config) { c.Purge.MaxLag = tt.maxLag })
			old := nodes[0]
			p := newPurger(t, js, nc)
			waitSubscribed(t, p, nodes)
			path := obj("/overlap", "cc", "max-age=600")
			do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
			wantCacheStatus(t, do(t, s.client, http.MethodGet, old.Addr(), testHost, path), "hit")

			if tt.expired {
				cut.Cut()
				kv, err := js.KeyValue(context.Background(), wire.Bucket("", wire.FleetBucket))
				if err != nil {
					t.Fatal(err)
				}
				wait.For(t, 10*time.Second, "the old process's key to expire", func() bool {
					_, err := kv.Get(context.Background(), wire.FleetKey(old.cfg.PoP, old.cfg.Node))
					return errors.Is(err, jetstream.ErrKeyNotFound)
				})
			}
			// The new process of the same node, beside the old one.
			cfg := old.cfg
			cfg.Fleet.NATS, cfg.Fleet.Creds = url, edgeCreds(t, url, old.cfg.PoP, old.cfg.Node)
			cfg.Logger = testLogger(t)
			restarted, _ := startEdge(t, listen(t, "127.0.3.30"), cfg)
			waitSubscribed(t, p, []*Node{restarted})

			// The old process loses NATS before the purge: it may serve its cache fresh for
			// max_lag after its last confirmation, and never applies the purge.
			cut.Cut()
			s.origin.Bump("/overlap")
			m := p.publish(purge.KindURL, false, []*Node{old}, path)
			r := p.wait(m, 3*tt.maxLag)
			if st := r.PoPs[0].Nodes[0].Status; st != purge.NodeAcked {
				t.Fatalf("receipt's node status %q, want %q", st, purge.NodeAcked)
			}
			got := do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
			if cs := got.header.Get("Cache-Status"); !strings.Contains(got.body, "@v2:") && !strings.Contains(cs, "fwd=") {
				t.Errorf("after the receipt said %s/%s acked, its old process served the purged copy as a fresh hit (Cache-Status %q)",
					old.cfg.PoP, old.cfg.Node, cs)
			}
			if old.purgeSeq.Load() >= r.Seq {
				t.Fatalf("old process applied purge %d while cut off: the cut did not hold", r.Seq)
			}
		})
	}
}
