package fleet_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRegistrarRestartOverlapThroughLeaf: the restart overlap (TestRegistrarRestartOverlap) in
// the production topology, where edges write through their PoP's leaf node into the hub's
// JetStream domain: the writes over a revision (the heartbeats and the leave's delete) carry
// their expected revision through the leaf link, so the old process finds the new one's write,
// leaves the key to it and deletes nothing as it stops.
//
// An hour between heartbeats: each one is asked for (Beat) and awaited (OnWrite), so every
// write the watch delivers is known for whose it is, and none runs out of its deadline (its
// interval, at least 500ms). Under load one with 20ms between them did, its answer lost: the
// process did not know the revision it had written, and its leave's delete was refused (the
// test waited for a delete that never came), or its heartbeats kept failing past the test's
// waits.
func TestRegistrarRestartOverlapThroughLeaf(t *testing.T) {
	hub, leaf, _ := natstest.StartLeafPoP(t)
	_, js := natstest.ConnectURL(t, hub.ClientURL())
	if err := fleet.EnsureBuckets(t.Context(), js, "", time.Minute, 1); err != nil {
		t.Fatalf("EnsureBuckets: %v", err)
	}
	updates := fleetKeyWatch(t, js, "lon", "n1")
	var logs logtest.Buffer
	// start runs a process of node lon.n1 reporting rps requests/s; its heartbeats' OnWrite
	// (shared) comes on the returned channel.
	start := func(rps float64) (*fleet.Registrar, <-chan bool, func()) {
		_, ejs := natstest.ConnectURL(t, leaf.ClientURL())
		answered := make(chan bool, 16)
		r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: time.Hour,
			Load:    func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: rps, Healthy: true} },
			Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
			OnWrite: func(_ time.Time, shared bool) { answered <- shared }})
		if err != nil {
			t.Fatalf("NewRegistrar: %v", err)
		}
		return r, answered, run(t, r.Run)
	}
	// answer waits for a heartbeat's answer and returns its OnWrite's shared. The wait measures
	// nothing: at a load of 35 on two cores, one heartbeat through the leaf took over 10s.
	answer := func(who string, r *fleet.Registrar, answered <-chan bool) bool {
		t.Helper()
		select {
		case shared := <-answered:
			return shared
		case <-time.After(30 * time.Second):
			t.Fatalf("no heartbeat of the %s process answered within 30s (last error %v)", who, r.Err())
			return false
		}
	}
	// wantWrite reads the key's next update: a registration of the process reporting rps.
	wantWrite := func(what string, rps float64) {
		t.Helper()
		if got, deleted := nextWrite(t, updates); deleted || got != rps {
			t.Fatalf("%s: deleted %v, requests/s %v; want a registration with %v", what, deleted, got, rps)
		}
	}

	old, oldAnswered, stopOld := start(1)
	if answer("old", old, oldAnswered) {
		t.Error("the old process's first heartbeat found the key shared, want alone")
	}
	wantWrite("the old process's first heartbeat", 1)
	newer, newAnswered, stopNew := start(2)
	if !answer("new", newer, newAnswered) {
		t.Error("the new process's first heartbeat found the key alone, want shared (the old process's write)")
	}
	wantWrite("the new process's first heartbeat", 2)

	old.SetDraining(true) // its heartbeat over its last revision finds the new process's write
	answer("old", old, oldAnswered)
	if !strings.Contains(logs.String(), "left to it") {
		t.Fatalf("the draining old process's heartbeat did not leave the key to the new one; log:\n%s", logs.String())
	}
	old.Beat() // yielded, it writes nothing
	answer("old", old, oldAnswered)
	stopOld() // nor does it delete the key as it stops
	for i := range 3 {
		newer.Beat()
		answer("new", newer, newAnswered)
		wantWrite(fmt.Sprintf("update %d after the old process yielded and stopped", i), 2)
	}
	stopNew()
	if _, deleted := nextWrite(t, updates); !deleted {
		t.Fatal("the update after the new process stopped is not a delete; want its leave, over its own revision through the leaf")
	}
}
