package fleet_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRegistrarRecreatedBucketRevision: the fleet bucket is deleted while a registrar runs (its
// heartbeat fails) and made again; another process of the node writes the key in the new
// bucket at the very revision the registrar last wrote in the old one, whose numbers start
// again at 1. The registrar's next heartbeat, a write over that revision, succeeds, but must
// count as shared (another process's write was there), not as a write over its own. Before,
// it reported the key not shared: the node's acks would not have been held while the other
// process may serve.
func TestRegistrarRecreatedBucketRevision(t *testing.T) {
	s, js := setupTTL(t, time.Minute)
	bucket := wire.Bucket("", wire.FleetBucket)
	_, ejs := natstest.ConnectURL(t, s.URL(), s.Options(natsauth.Edge("lon", "n1"))...)
	writes := make(chan bool, 16)
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: ejs, Node: node("lon", "n1"), Interval: time.Hour,
		OnWrite: func(_ time.Time, shared bool) { writes <- shared }})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r.Run)
	if <-writes {
		t.Fatal("first write over no entry: shared, want not")
	}
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), r.Key())
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()

	if err := js.DeleteKeyValue(t.Context(), bucket); err != nil {
		t.Fatalf("delete the fleet bucket: %v", err)
	}
	r.Beat()
	wait.For(t, 10*time.Second, "a heartbeat to fail with the bucket gone", func() bool { return r.Err() != nil })
	if err := fleet.EnsureBuckets(t.Context(), js, "", time.Minute, 1); err != nil {
		t.Fatalf("make the buckets again: %v", err)
	}
	if kv, err = js.KeyValue(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	// Other keys take the revisions below the registrar's last one; the other process's write
	// of the node's key takes that one.
	pad, _ := json.Marshal(node("lon", "pad"))
	for range rev - 1 {
		if _, err := kv.Put(t.Context(), "lon.pad", pad); err != nil {
			t.Fatal(err)
		}
	}
	other := node("lon", "n1")
	other.Instance = "0123456789abcdef"
	other.Load = wire.LoadReport{Healthy: true, At: time.Now()}
	b, _ := json.Marshal(other)
	if orev, err := kv.Put(t.Context(), r.Key(), b); err != nil || orev != rev {
		t.Fatalf("another process's write at revision %d (%v), want %d, the registrar's last", orev, err, rev)
	}
	r.Beat()
	select {
	case shared := <-writes:
		if !shared {
			t.Error("heartbeat over another process's write at the revision of its own last write in the old bucket: not shared, want shared")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat answered within 10s of the bucket made again")
	}
}
