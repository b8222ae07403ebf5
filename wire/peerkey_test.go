package wire

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"
)

func peerKey(id string, signFrom time.Time) PeerKey {
	return PeerKey{ID: id, Secret: bytes.Repeat([]byte(id[:1]), MinPeerKeyBytes), SignFrom: signFrom}
}

// TestPeerKeyringRotated: a rotation keeps the key nodes sign with and every key still to
// come, however many rotations fall within a grace, and drops only keys older than one that
// has been signing for the grace. Before, a rotation kept just the newest key: a second one
// within the grace dropped the key every node was still signing with.
func TestPeerKeyringRotated(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	a := peerKey("a", time.Time{})
	b := peerKey("b", t0.Add(grace))
	c := peerKey("c", t0.Add(10*time.Second+grace))
	tests := []struct {
		name string
		ring []PeerKey
		now  time.Time
		want []string // ids after adding "n"
		sign string   // the key to sign with at now, after the rotation
	}{
		{"first rotation", []PeerKey{a}, t0, []string{"a", "n"}, "a"},
		{"second within the grace", []PeerKey{a, b}, t0.Add(10 * time.Second), []string{"a", "b", "n"}, "a"},
		{"third within the grace", []PeerKey{a, b, c}, t0.Add(20 * time.Second), []string{"a", "b", "c", "n"}, "a"},
		{"the new key signing, not yet for a grace", []PeerKey{a, b}, t0.Add(grace + 10*time.Second), []string{"a", "b", "n"}, "b"},
		{"the new key signing for a grace", []PeerKey{a, b}, t0.Add(2 * grace), []string{"b", "n"}, "b"},
		{"two settled: the newest stays", []PeerKey{a, b, c}, t0.Add(3 * grace), []string{"c", "n"}, "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := peerKey("n", tt.now.Add(grace))
			got, err := PeerKeyring{Keys: tt.ring}.Rotated(n, tt.now, grace)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, k := range got.Keys {
				ids = append(ids, k.ID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("keys %v, want %v", ids, tt.want)
			}
			if k, _ := got.Signing(tt.now); k.ID != tt.sign {
				t.Errorf("signs with %s at now, want %s", k.ID, tt.sign)
			}
		})
	}
}

func TestPeerKeyringRotatedIsBounded(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	ring := PeerKeyring{Keys: []PeerKey{peerKey("a", time.Time{})}}
	var err error
	for i := 1; i < MaxPeerKeys; i++ {
		ring, err = ring.Rotated(peerKey(string(rune('b'+i))+"x", t0.Add(time.Minute)), t0, time.Minute)
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	if _, err := ring.Rotated(peerKey("zz", t0.Add(time.Minute)), t0, time.Minute); !errors.Is(err, ErrPeerKeyringFull) {
		t.Fatalf("rotation past %d keys: %v, want ErrPeerKeyringFull", MaxPeerKeys, err)
	}
	if len(ring.Keys) != MaxPeerKeys {
		t.Errorf("%d keys, want %d", len(ring.Keys), MaxPeerKeys)
	}
}
