package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestJoinAckedHardPurgeNotServedStale: a node started while NATS is out of reach serves its
// file's hosts from the start, so it stores a copy before its purge subscriber joins; a hard
// purge of that copy is stored meanwhile. The subscriber then joins after the purge and sends
// its join ack: the purge is in effect here, the receipt says (joined). A hard-purged copy
// must then never be served again, also not as the stale-if-error answer when the origin
// fails. Before, the join only made the copy Doubtful, which stale-if-error still served: the
// node acked a hard purge whose object it went on serving.
func TestJoinAckedHardPurgeNotServedStale(t *testing.T) {
	url, js, nc := startNATS(t)
	if err := js.DeleteKeyValue(context.Background(), wire.Bucket("", wire.ConfigBucket)); err != nil {
		t.Fatal(err)
	}
	joins := make(chan purge.Ack, 4)
	if _, err := nc.Subscribe(purge.AckSubjects(""), func(m *nats.Msg) {
		for _, line := range strings.Split(string(m.Data), "\n") {
			var a purge.Ack
			if json.Unmarshal([]byte(line), &a) == nil && a.Through != 0 {
				joins <- a
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cut := natsCutter(t, "127.0.0.54", url)
	cut.Cut()
	s, nodes := fleetEdges(t, []string{cut.URL()}, true)
	n := nodes[0]
	path := obj("/joined", "cc", "max-age=600, stale-if-error=600")
	first := do(t, s.client, http.MethodGet, n.Addr(), testHost, path)
	if !strings.Contains(first.body, "@v1:") {
		t.Fatalf("first GET: %d %.12q", first.status, first.body)
	}
	m := purge.Message{ID: purge.NewID(), Host: testHost, Kind: purge.KindURL, Values: []string{path}, IssuedAt: time.Now()}
	seq, err := purge.Publish(context.Background(), js, "", m)
	if err != nil {
		t.Fatal(err)
	}
	cut.Restore()
	select {
	case a := <-joins:
		if a.Through < seq {
			t.Fatalf("join ack through %d, want at least the purge's %d", a.Through, seq)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no join ack within 20s")
	}
	// The hard purge is acked (by the join): the origin failing must not bring the copy back.
	if err := s.origin.SetFault("", origin.Fault{Status: http.StatusServiceUnavailable}); err != nil {
		t.Fatal(err)
	}
	if r := do(t, s.client, http.MethodGet, n.Addr(), testHost, path); r.status == http.StatusOK && r.body == first.body {
		t.Errorf("after the join ack of its hard purge, the copy stored before the join was served (Cache-Status %q)",
			r.header.Get("Cache-Status"))
	}
}

// TestJoinDropIsLogged: the join drops every copy stored before it, the whole cache of a node
// that served long while NATS was out of reach, and the store's gauges go on counting the
// copies until they are evicted or replaced: the node says what it dropped, once, as it says
// when a gap makes its copies stale. A node that stored nothing before its join (the usual
// start) says nothing.
func TestJoinDropIsLogged(t *testing.T) {
	for _, tt := range []struct {
		name   string
		stored int // copies stored while NATS is cut off, before the join
	}{
		{name: "copies stored before the join", stored: 2},
		{name: "nothing stored", stored: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, _, _ := startNATS(t)
			cut := natsCutter(t, "127.0.0.55", url)
			cut.Cut()
			var out logtest.Buffer
			s, nodes := fleetEdgesWith(t, []string{cut.URL()}, true, time.Second, func(c *Config) {
				c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
			})
			n := nodes[0]
			for i := range tt.stored {
				path := obj(fmt.Sprintf("/before-join/%d", i), "cc", "max-age=600")
				if r := do(t, s.client, http.MethodGet, n.Addr(), testHost, path); r.status != http.StatusOK {
					t.Fatalf("GET %s: %d", path, r.status)
				}
			}
			cut.Restore()
			select {
			case <-n.FleetReady():
			case <-time.After(20 * time.Second):
				t.Fatal("not fleet-ready within 20s")
			}
			var lines []map[string]any
			for line := range strings.SplitSeq(out.String(), "\n") {
				var l map[string]any
				if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(fmt.Sprint(l["msg"]), "dropped") {
					lines = append(lines, l)
				}
			}
			switch {
			case tt.stored == 0 && len(lines) != 0:
				t.Errorf("join of an empty store logged %v, want nothing", lines)
			case tt.stored > 0 && (len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["objects"] != float64(tt.stored)):
				t.Errorf("join dropping %d copies logged %v, want one warning with objects=%d", tt.stored, lines, tt.stored)
			}
		})
	}
}

// TestPeerHandsOutNoCopyDroppedAtJoin: a fleet node whose origin fails asks the fleet for a
// stale copy (fleet stale-if-error), and a peer hands out the copy it holds, stale or Doubtful
// (a gap). A copy the peer dropped at its purge subscription's join (purgeJoined) is gone: the
// join ack said the purges before it are in effect there, so the peer must not hand it out.
// The gap's Doubtful copy shows the peer is asked. No change: checked and held.
func TestPeerHandsOutNoCopyDroppedAtJoin(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mark   func(n *Node)
		served bool
	}{
		{"doubtful after a gap", func(n *Node) { n.MarkAllStale() }, true},
		{"dropped at the join", func(n *Node) { n.purgeJoined(7) }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(t, []int{2}, noShield, func(c *Config) { c.FleetStaleTimeout = 5 * time.Second })
			owner, other := f.nodes[0], f.nodes[1]
			p := ""
			for i := 0; p == ""; i++ {
				c := obj(fmt.Sprintf("/joined%d", i), "cc", "max-age=600, stale-if-error=3600")
				if rendezvous(owner.tiers.Load().peers, owner.key(c))[0].ID == owner.cfg.Node {
					p = c
				}
			}
			warm := do(t, f.client, http.MethodGet, owner.Addr(), testHost, p)
			if warm.status != http.StatusOK {
				t.Fatalf("warming the owner = %d", warm.status)
			}
			tt.mark(owner)
			f.clock.Advance(time.Second)
			if err := f.origin.SetFault("", origin.Fault{Status: http.StatusServiceUnavailable}); err != nil {
				t.Fatal(err)
			}
			r := do(t, f.client, http.MethodGet, other.Addr(), testHost, p)
			if served := r.status == http.StatusOK && r.body == warm.body; served != tt.served {
				t.Errorf("during the outage, the other node served the owner's copy = %v (%d, Cache-Status %q), want %v",
					served, r.status, r.header.Get("Cache-Status"), tt.served)
			}
		})
	}
}
