package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// PeerKeyBucket is the KV bucket holding the fleet's peer keyring (key PeerKeyringKey): the
// secrets edge nodes sign their node-to-node fill requests with. Only control writes it and
// only edges read it; the DNS server has no business with it.
const PeerKeyBucket = "peerkeys"

// PeerKeyringKey is the one key of PeerKeyBucket.
const PeerKeyringKey = "keyring"

// MinPeerKeyBytes is the shortest peer key secret accepted (256 bits).
const MinPeerKeyBytes = 32

// PeerKey is one secret of the peer keyring.
type PeerKey struct {
	// ID names the key in signatures so that a verifier picks the right secret.
	ID string `json:"id"`
	// Secret is the HMAC-SHA256 key (at least MinPeerKeyBytes).
	Secret []byte `json:"secret"`
	// SignFrom is when nodes start signing with this key. Until then it is only accepted,
	// which gives every node time to learn a new key before anyone depends on it.
	SignFrom time.Time `json:"sign_from"`
}

// PeerKeyring is every peer key the fleet currently accepts, oldest first. Nodes sign with
// the newest key whose SignFrom has passed and accept any key of the ring, so a rotation
// (add a key that signs from a little later, drop the oldest after a while) never leaves a
// node unable to verify a request another node signed.
type PeerKeyring struct {
	Keys []PeerKey `json:"keys"`
}

// Signing returns the key to sign with at now: the newest whose SignFrom is not after now,
// else the oldest (a ring whose every key is in the future still signs).
func (r PeerKeyring) Signing(now time.Time) (PeerKey, bool) {
	if len(r.Keys) == 0 {
		return PeerKey{}, false
	}
	best := r.Keys[0]
	for _, k := range r.Keys[1:] {
		if !k.SignFrom.After(now) && !k.SignFrom.Before(best.SignFrom) {
			best = k
		}
	}
	return best, true
}

// Lookup returns the key with id.
func (r PeerKeyring) Lookup(id string) (PeerKey, bool) {
	for _, k := range r.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return PeerKey{}, false
}

// Validate checks that every key has an id, a long enough secret, and that ids are unique.
func (r PeerKeyring) Validate() error {
	if len(r.Keys) == 0 {
		return errors.New("peer keyring: no keys")
	}
	seen := map[string]bool{}
	for i, k := range r.Keys {
		switch {
		case k.ID == "":
			return &FieldError{Field: fmt.Sprintf("keys[%d].id", i), Err: errors.New("empty")}
		case seen[k.ID]:
			return &FieldError{Field: fmt.Sprintf("keys[%d].id", i), Err: fmt.Errorf("duplicate %q", k.ID)}
		case len(k.Secret) < MinPeerKeyBytes:
			return &FieldError{Field: fmt.Sprintf("keys[%d].secret", i), Err: fmt.Errorf("%d bytes, want at least %d", len(k.Secret), MinPeerKeyBytes)}
		}
		seen[k.ID] = true
	}
	return nil
}

// DecodePeerKeyring parses and validates a keyring.
func DecodePeerKeyring(b []byte) (PeerKeyring, error) {
	var r PeerKeyring
	if err := json.Unmarshal(b, &r); err != nil {
		return PeerKeyring{}, fmt.Errorf("decode peer keyring: %w", err)
	}
	if err := r.Validate(); err != nil {
		return PeerKeyring{}, err
	}
	return r, nil
}
