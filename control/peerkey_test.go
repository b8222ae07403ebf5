package control

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRotatePeerKey rotates the fleet's peer key through the API and checks that an edge,
// on its own credential, sees the new key beside the old one, signing from after the grace.
func TestRotatePeerKey(t *testing.T) {
	ts := startServer(t, Config{})
	_, js := connectAs(t, ts.NATSURL(), natsauth.Edge("lon", "n1"))
	var mu sync.Mutex
	var ring wire.PeerKeyring
	v := fleet.NewPeerKeyView(fleet.PeerKeyViewConfig{JS: js, OnChange: func(r wire.PeerKeyring) {
		mu.Lock()
		ring = r
		mu.Unlock()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = v.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the edge never saw the peer keyring control created")
	}
	mu.Lock()
	first := ring.Keys
	mu.Unlock()
	if len(first) != 1 {
		t.Fatalf("initial keyring has %d keys, want 1", len(first))
	}

	if code, _ := ts.do(t, "POST", "/v1/peer-keys/rotate?grace=2h", tokConfigurer, nil); code != http.StatusBadRequest {
		t.Errorf("rotate with grace=2h = %d, want 400", code)
	}
	before := time.Now()
	code, b := ts.do(t, "POST", "/v1/peer-keys/rotate?grace=5s", tokConfigurer, nil)
	var got struct {
		Key      string    `json:"key"`
		SignFrom time.Time `json:"sign_from"`
	}
	if err := json.Unmarshal(b, &got); code != http.StatusOK || err != nil || got.Key == "" {
		t.Fatalf("rotate = %d %s, want 200 with the new key", code, b)
	}
	wait.For(t, 10*time.Second, "the new key at the edge", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := ring.Lookup(got.Key)
		return ok
	})
	mu.Lock()
	if _, ok := ring.Lookup(first[0].ID); !ok {
		t.Errorf("after one rotation the old key %s is gone: nodes could not verify requests signed a moment ago", first[0].ID)
	}
	if k, _ := ring.Signing(before); k.ID != first[0].ID {
		t.Errorf("signing key right after the rotation = %s, want the old %s until the grace ends", k.ID, first[0].ID)
	}
	if k, _ := ring.Signing(before.Add(time.Minute)); k.ID != got.Key {
		t.Errorf("signing key after the grace = %s, want the new %s", k.ID, got.Key)
	}
	mu.Unlock()

	// A second rotation within the grace keeps the key every node still signs with (it kept
	// only the newest before, which no node signed with yet).
	code, b = ts.do(t, "POST", "/v1/peer-keys/rotate?grace=5s", tokConfigurer, nil)
	var second struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(b, &second); code != http.StatusOK || err != nil {
		t.Fatalf("second rotate = %d %s, want 200", code, b)
	}
	wait.For(t, 10*time.Second, "the second new key at the edge", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := ring.Lookup(second.Key)
		return ok
	})
	mu.Lock()
	if k, _ := ring.Signing(time.Now()); k.ID != first[0].ID {
		t.Errorf("after two rotations within the grace the edge signs with %s, want %s", k.ID, first[0].ID)
	}
	for _, id := range []string{first[0].ID, got.Key} {
		if _, ok := ring.Lookup(id); !ok {
			t.Errorf("after two rotations within the grace key %s is gone", id)
		}
	}
	n := len(ring.Keys)
	mu.Unlock()
	// Rotations within the grace are bounded: past wire.MaxPeerKeys, 409.
	for ; n < wire.MaxPeerKeys; n++ {
		if code, b := ts.do(t, "POST", "/v1/peer-keys/rotate?grace=5s", tokConfigurer, nil); code != http.StatusOK {
			t.Fatalf("rotation to %d keys = %d %s, want 200", n+1, code, b)
		}
	}
	if code, b := ts.do(t, "POST", "/v1/peer-keys/rotate?grace=5s", tokConfigurer, nil); code != http.StatusConflict {
		t.Errorf("rotation past %d keys = %d %s, want 409", wire.MaxPeerKeys, code, b)
	}
}
