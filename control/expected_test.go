package control

import (
	"slices"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestExpectedNodesFollowsView: the purge API's kept list of expected nodes is the fleet view's
// live nodes, as nodes join and leave, and is reused while nothing changes.
func TestExpectedNodesFollowsView(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1, HeartbeatTTL: time.Second})
	x := newExpectedNodes(ts.Fleet(), time.Second)
	fromView := func() []purge.NodeRef {
		var out []purge.NodeRef
		for _, n := range ts.Fleet().Nodes() {
			out = append(out, purge.NodeRef{PoP: n.PoP, Node: n.ID})
		}
		return out
	}
	agree := func(want ...purge.NodeRef) func() bool {
		return func() bool {
			got := x.refs()
			return slices.Equal(got, want) && slices.Equal(fromView(), want)
		}
	}
	ams := purge.NodeRef{PoP: "ams", Node: "n1"}
	fra := purge.NodeRef{PoP: "fra", Node: "n1"}
	wait.For(t, 10*time.Second, "no nodes", agree())
	startRegistrar(t, ts.NATSURL(), wire.Node{PoP: ams.PoP, ID: ams.Node})
	wait.For(t, 10*time.Second, "ams/n1 expected", agree(ams))
	stopFra := startRegistrar(t, ts.NATSURL(), wire.Node{PoP: fra.PoP, ID: fra.Node})
	wait.For(t, 10*time.Second, "ams/n1 and fra/n1 expected", agree(ams, fra))
	stopFra()
	wait.For(t, 10*time.Second, "fra/n1 no longer expected", agree(ams))

	// Without a change in between, the list is not read again.
	s := x.snap.Load()
	s.changed = make(chan struct{}) // as if the view had not changed since
	s.staleAt = time.Now().Add(time.Hour)
	if got := x.refs(); len(got) == 0 || &got[0] != &s.refs[0] {
		t.Fatalf("refs() = %v read again, want the kept list", got)
	}
	// A node that stops heartbeating leaves the list once its report is older than the TTL,
	// even before the view says so.
	s.staleAt = time.Now().Add(-time.Millisecond)
	if got := x.refs(); len(got) > 0 && &got[0] == &s.refs[0] {
		t.Fatal("refs() kept a list past its staleness")
	}
}
