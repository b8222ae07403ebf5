package edge

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestLostHeartbeatAnswerHoldsNoAcks: a heartbeat the fleet bucket stored while its answer was
// lost leaves the key at a revision the registrar does not know, so the next heartbeat is
// refused over the last one it knows. The write there is the process's own (its instance id):
// the next heartbeat writes over it, and the process, alone on its key, holds no purge acks.
// Before, it took its own write for another process's of the node (a restart's overlap) and
// held every ack for max_lag for the next lame_duck + max_lag + two heartbeats.
func TestLostHeartbeatAnswerHoldsNoAcks(t *testing.T) {
	const hb = 100 * time.Millisecond
	url, js, _ := startNATS(t)
	lose := natstest.NewLoseAnswer(nil, true) // the registrar's JetStream, set below
	cfg := Config{PoP: "f1", Node: "n0", Logger: testLogger(t), Purge: PurgeConfig{MaxLag: 2 * time.Second},
		Fleet: FleetConfig{NATS: url, Creds: edgeCreds(t, url, "f1", "n0"), Heartbeat: hb, TTL: time.Second}}
	n, _ := startEdgeWith(t, listen(t, "127.0.3.40"), cfg, func(n *Node) {
		n.registrarJS = func(js jetstream.JetStream) jetstream.JetStream {
			lose.JetStream = js
			return lose
		}
	})
	select {
	case <-n.FleetReady():
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not join the fleet within 30s")
	}
	if n.sharedAt.Load() != nil || n.ackHold(hb) != 0 {
		t.Fatalf("alone on its key before any answer was lost: shared %v, ackHold %v; want neither", n.sharedAt.Load() != nil, n.ackHold(hb))
	}

	lose.Armed.Store(true)
	var lostRev uint64
	select {
	case lostRev = <-lose.Lost:
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat written within 10s")
	}
	// The registrar waits on the lost answer: no heartbeat is answered meanwhile.
	before := n.writtenAt.Load()
	wait.For(t, 10*time.Second, "a heartbeat answered after the lost one", func() bool { return n.writtenAt.Load() != before })

	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), wire.FleetKey("f1", "n0"))
	if err != nil {
		t.Fatalf("get the node's key: %v", err)
	}
	if e.Revision() <= lostRev {
		t.Fatalf("key at revision %d, want past the lost write's %d", e.Revision(), lostRev)
	}
	if at := n.sharedAt.Load(); at != nil {
		t.Errorf("the heartbeat after one whose answer was lost found another process's write on the key: the process's own was taken for another's")
	}
	if got := n.ackHold(hb); got != 0 {
		t.Errorf("ackHold after a lost heartbeat answer = %v, want 0: the node is alone on its key", got)
	}
}
