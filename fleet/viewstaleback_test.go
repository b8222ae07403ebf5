package fleet_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/clocktest"
	"github.com/meridian-cdn/meridian/wire"
)

// staleBackView is a view of a fleet bucket whose keys live an hour, with the view TTL ttl,
// on a clock that moves only when the test moves it. With a TTL of an hour the view's check
// for stale reports ticks every TTL/8 (seven and a half minutes), so within a test it never
// marks a node stale by itself and the window between a report going stale and that check is
// open for as long as the test needs. It returns the view, the clock and a put of a node's report made at.
func staleBackView(t *testing.T, ttl time.Duration) (*fleet.View, *clocktest.Clock, func(id string, at time.Time)) {
	t.Helper()
	_, js := setupTTL(t, time.Hour)
	clock := clocktest.New(time.Now())
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: ttl, Clock: clock.Now})
	run(t, v.Run)
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("view not ready within 10s")
	}
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	put := func(id string, at time.Time) {
		t.Helper()
		n := node("fra", id)
		n.Load = wire.LoadReport{At: at, Healthy: true}
		b, _ := json.Marshal(n)
		if _, err := kv.Put(t.Context(), wire.FleetKey("fra", id), b); err != nil {
			t.Fatalf("put fra.%s: %v", id, err)
		}
	}
	return v, clock, put
}

// awaitChange waits for changed, which the view closes after MembersChanged's channel of the
// same change: members is closed by then if that change was one of membership.
func awaitChange(t *testing.T, what string, changed, members <-chan struct{}) bool {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Changed() not closed", what)
	}
	select {
	case <-members:
		return true
	default:
		return false
	}
}

func peerIDs(nodes []wire.Node) []string {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// TestStaleNodeBackIsMembershipChange: a node whose report went stale, and which heartbeats
// again before the view's check for stale reports (every TTL/8) has marked it, comes back
// into Nodes and PeerSet. A reader that read the members at a membership change meanwhile
// (an edge's peer ring, control's expected purge acks) left it out, and keeps that answer
// until the next MembersChanged: the heartbeat that brings the node back must be one.
// Heartbeats of a node fresh before and after, or stale before and after (a node whose clock
// lags by more than the TTL), stay load changes.
func TestStaleNodeBackIsMembershipChange(t *testing.T) {
	v, clock, put := staleBackView(t, time.Hour)
	step := func(what string, want bool, change func()) {
		t.Helper()
		changed, members := v.Changed(), v.MembersChanged()
		change()
		if got := awaitChange(t, what, changed, members); got != want {
			t.Errorf("%s: MembersChanged() closed = %v, want %v", what, got, want)
		}
	}
	step("n1 joins", true, func() { put("n1", clock.Now()) })
	step("n1 heartbeats, fresh before and after", false, func() { put("n1", clock.Now()) })

	// n1 falls silent past the TTL; the view has not marked it stale yet.
	clock.Advance(time.Hour + time.Second)
	if got := peerIDs(v.PeerSet("fra")); len(got) != 0 {
		t.Fatalf("PeerSet(fra) with n1's report stale = %v, want none", got)
	}
	// n2 joins meanwhile: a reader follows (an edge's ring) and reads the members without n1.
	step("n2 joins", true, func() { put("n2", clock.Now()) })
	members := v.MembersChanged()
	ring := peerIDs(v.PeerSet("fra"))
	if !slices.Equal(ring, []string{"n2"}) {
		t.Fatalf("ring read at n2's join = %v, want [n2]", ring)
	}

	// n1 heartbeats again: it is a member again, and the reader must hear of it.
	changed := v.Changed()
	put("n1", clock.Now())
	if !awaitChange(t, "n1 back with a fresh report", changed, members) {
		t.Errorf("n1 back with a fresh report: MembersChanged() not closed; the ring read at the last one stays %v, PeerSet(fra) is %v",
			ring, peerIDs(v.PeerSet("fra")))
	}
	if got := peerIDs(v.PeerSet("fra")); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("PeerSet(fra) after n1's heartbeat = %v, want [n1 n2]", got)
	}
	step("n1 heartbeats again, fresh before and after", false, func() { put("n1", clock.Now()) })

	// A node whose clock lags by more than the TTL: every report is stale when it arrives.
	// Its first is a join (AllNodes holds it); the next ones change nothing a reader sees.
	lag := func() time.Time { return clock.Now().Add(-2 * time.Hour) }
	step("lagging n3 joins", true, func() { put("n3", lag()) })
	step("lagging n3 heartbeats, stale before and after", false, func() { put("n3", lag()) })
	if got := peerIDs(v.PeerSet("fra")); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("PeerSet(fra) with n3's reports stale = %v, want [n1 n2]", got)
	}
}

// TestStaleMarkedNodeHeartbeatsStale: once the view has announced a node as gone (its report
// stale), a heartbeat that is stale too (the node's clock lags by more than the TTL) does not
// bring it back, so it is no membership change: before, each such heartbeat was one, and the
// next check for stale reports announced the node gone again, twice per check for as long as
// the node ran (every edge rebuilt its peer sets for it).
func TestStaleMarkedNodeHeartbeatsStale(t *testing.T) {
	// A short TTL: the check for stale reports ticks every TTL/8 (on the real clock), and
	// marks n1 stale at its first tick after the test moves the clock past n1's report.
	v, clock, putNode := staleBackView(t, testTTL)
	put := func(at time.Time) { t.Helper(); putNode("n1", at) }
	changed, members := v.Changed(), v.MembersChanged()
	put(clock.Now())
	if !awaitChange(t, "n1 joins", changed, members) {
		t.Fatal("n1 joins: MembersChanged() not closed")
	}
	// n1's clock falls behind by two TTLs: the view's next check announces it gone.
	members = v.MembersChanged()
	clock.Advance(2 * testTTL)
	select {
	case <-members:
	case <-time.After(5 * time.Second):
		t.Fatal("MembersChanged() not closed by the check for stale reports")
	}
	lag := func() time.Time { return clock.Now().Add(-2 * testTTL) }
	if len(v.Nodes()) != 0 || len(v.AllNodes()) != 1 {
		t.Fatalf("Nodes() = %v, AllNodes() = %d nodes; want none live, n1 held", peerIDs(v.Nodes()), len(v.AllNodes()))
	}
	for i := range 3 {
		changed, members := v.Changed(), v.MembersChanged()
		put(lag())
		if awaitChange(t, "lagging n1 heartbeats", changed, members) {
			t.Errorf("heartbeat %d of lagging n1, stale before and after: MembersChanged() closed", i+1)
		}
	}
}
