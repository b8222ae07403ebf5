package fleet_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// startLeafPoP starts the production topology (deploy/render_nats.go): a hub with JetStream
// in domain "fleet" and a leaf node, without JetStream, that edges connect to.
func startLeafPoP(t *testing.T) (hub, leaf *server.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	hub = natstest.StartOptions(t, &server.Options{ServerName: "hub", Host: "127.0.0.1", Port: -1, JetStream: true,
		JetStreamDomain: "fleet", StoreDir: t.TempDir(), LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort}})
	u, _ := url.Parse(fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort))
	leaf = natstest.StartOptions(t, &server.Options{ServerName: "leaf", Host: "127.0.0.1", Port: -1,
		JsAccDefaultDomain: map[string]string{"$G": "fleet"},
		LeafNode:           server.LeafNodeOpts{ReconnectInterval: 50 * time.Millisecond, Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
	wait.For(t, 10*time.Second, "the leaf link", func() bool { return hub.NumLeafNodes() == 1 })
	return hub, leaf
}

// TestRegistrarRestartOverlapThroughLeaf: the restart overlap (TestRegistrarRestartOverlap) in
// the production topology, where edges write through their PoP's leaf node into the hub's
// JetStream domain: the writes over a revision (the heartbeats and the leave's delete) carry
// their expected revision through the leaf link, so the old process finds the new one's write,
// leaves the key to it and deletes nothing as it stops.
func TestRegistrarRestartOverlapThroughLeaf(t *testing.T) {
	hub, leaf := startLeafPoP(t)
	_, js := natstest.ConnectURL(t, hub.ClientURL())
	if err := fleet.EnsureBuckets(t.Context(), js, "", time.Minute, 1); err != nil {
		t.Fatalf("EnsureBuckets: %v", err)
	}
	updates := fleetKeyWatch(t, js, "lon", "n1")
	var logs logtest.Buffer
	start := func(rps float64) (*fleet.Registrar, func()) {
		_, ejs := natstest.ConnectURL(t, leaf.ClientURL())
		r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: 20 * time.Millisecond,
			Load:   func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: rps, Healthy: true} },
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("NewRegistrar: %v", err)
		}
		return r, run(t, r.Run)
	}
	old, stopOld := start(1)
	for rps, _ := nextWrite(t, updates); rps != 1; rps, _ = nextWrite(t, updates) {
	}
	_, stopNew := start(2)
	for rps, _ := nextWrite(t, updates); rps != 2; rps, _ = nextWrite(t, updates) {
	}
	old.SetDraining(true)
	wait.For(t, 10*time.Second, "the old process to leave the key to the new one", func() bool {
		return strings.Contains(logs.String(), "left to it")
	})
	// Writes the old process made before it yielded may still be queued on the watch, after
	// some of the new one's: the old one's last write (draining, if the new one had not written
	// since its last heartbeat) was stored before the write that found the new one's, so by the
	// key's revision now. Skip through it.
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	last, err := kv.Get(t.Context(), wire.FleetKey("lon", "n1"))
	if err != nil {
		t.Fatalf("read the fleet key: %v", err)
	}
	for _, _, rev := nextWriteRev(t, updates); rev < last.Revision(); _, _, rev = nextWriteRev(t, updates) {
	}
	stopOld()
	for i := range 10 {
		if rps, deleted := nextWrite(t, updates); deleted || rps != 2 {
			t.Fatalf("write %d after the old process yielded: deleted %v, requests/s %v; want the new process's registration", i, deleted, rps)
		}
	}
	stopNew()
	for {
		if _, deleted := nextWrite(t, updates); deleted {
			break // the new process's leave, over its own revision, went through the leaf too
		}
	}
}
