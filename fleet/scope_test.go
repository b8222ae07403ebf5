package fleet_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// beat writes a fresh report of node pop/id to the fleet bucket.
func beat(t *testing.T, kv jetstream.KeyValue, pop, id string) {
	t.Helper()
	n := node(pop, id)
	n.Load = wire.LoadReport{Healthy: true, At: time.Now()}
	b, _ := json.Marshal(n)
	if _, err := kv.Put(t.Context(), wire.FleetKey(pop, id), b); err != nil {
		t.Fatalf("put %s.%s: %v", pop, id, err)
	}
}

func popsOf(v *fleet.View) []string {
	var out []string
	for _, p := range v.PoPs() {
		out = append(out, p.ID)
	}
	return out
}

// TestScopedView: a scoped view watches nothing until it is given PoPs, then only their nodes:
// another PoP's heartbeats never wake it, and a new scope's snapshot replaces the nodes.
func TestScopedView(t *testing.T) {
	// Keys that outlive the test: what is in the view follows the scope alone.
	_, js := setupTTL(t, time.Minute)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	for _, pop := range []string{"ams", "fra", "lon"} {
		beat(t, kv, pop, "n1")
	}
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: time.Minute, Scoped: true})
	run(t, v.Run)
	select {
	case <-v.Ready():
		t.Fatal("a scoped view was ready before it had PoPs")
	case <-time.After(200 * time.Millisecond):
	}
	v.SetPoPs([]string{"fra"})
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("scoped view not ready within 10s of SetPoPs")
	}
	if got := popsOf(v); !slices.Equal(got, []string{"fra"}) {
		t.Fatalf("PoPs = %v, want [fra]", got)
	}
	// Heartbeats of a PoP outside the scope do not reach the view; its own PoP's do.
	changed := v.Changed()
	beat(t, kv, "lon", "n1")
	beat(t, kv, "lon", "n2")
	beat(t, kv, "fra", "n1") // the marker: in order after the others
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("a heartbeat in scope did not wake Changed")
	}
	if got := popsOf(v); !slices.Equal(got, []string{"fra"}) {
		t.Fatalf("after heartbeats elsewhere PoPs = %v, want [fra]", got)
	}
	// SetPoPs's channel closes once the new scope's nodes are in: no polling needed.
	select {
	case <-v.SetPoPs([]string{"lon", "fra", "lon"}):
	case <-time.After(10 * time.Second):
		t.Fatal("the new scope was not loaded within 10s")
	}
	if got := popsOf(v); !slices.Equal(got, []string{"fra", "lon"}) {
		t.Fatalf("PoPs once the new scope loaded = %v, want [fra lon]", got)
	}
	if n := len(v.PeerSet("lon")); n != 2 {
		t.Fatalf("lon has %d nodes in view, want 2", n)
	}
	select {
	case <-v.SetPoPs([]string{"fra", "lon"}):
	default:
		t.Fatal("setting the loaded PoPs again gave a channel that is not closed")
	}
	select {
	case <-v.SetPoPs([]string{"ams"}):
	case <-time.After(10 * time.Second):
		t.Fatal("the ams scope was not loaded within 10s")
	}
	if got := popsOf(v); !slices.Equal(got, []string{"ams"}) {
		t.Fatalf("PoPs = %v, want [ams] alone", got)
	}
}

// TestPoPNames: the PoPs with nodes in the bucket are known, from one read of the bucket's
// subjects, and a PoP that appears later is known after the next read.
func TestPoPNames(t *testing.T) {
	_, js := setup(t)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatalf("bind fleet bucket: %v", err)
	}
	beat(t, kv, "fra", "n1")
	beat(t, kv, "fra", "n2")
	p := &fleet.PoPNames{JS: js, Interval: 50 * time.Millisecond}
	if p.Known("fra") {
		t.Fatal("known before the first read")
	}
	run(t, p.Run)
	wait.For(t, 10*time.Second, "fra known", func() bool {
		beat(t, kv, "fra", "n1") // the bucket's keys live testTTL
		return p.Known("fra")
	})
	if p.Known("lon") || p.Known("n1") || p.Known("") {
		t.Fatal("a PoP without nodes is known")
	}
	wait.For(t, 10*time.Second, "lon known after the next read", func() bool {
		beat(t, kv, "lon", "n1")
		return p.Known("lon")
	})
}
