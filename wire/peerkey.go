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

// MaxPeerKeys bounds a keyring: each rotation adds a key, and keys leave only once a newer
// one has been signing for a grace.
const MaxPeerKeys = 16

// ErrPeerKeyringFull refuses a rotation that would hold more than MaxPeerKeys keys.
var ErrPeerKeyringFull = errors.New("peer keyring full: too many rotations within their grace; rotate again once the newest key has been signing for the grace")

// Rotated returns the ring with k added and the keys no node signs with any more dropped:
// those older than a key that has been signing for at least grace at now. The key nodes sign
// with at now stays, and so do keys still to come, however many rotations come within a
// grace: a node that has not yet seen the latest ring keeps signing with a key every node
// accepts. Keys are compared by SignFrom, as Signing picks them.
func (r PeerKeyring) Rotated(k PeerKey, now time.Time, grace time.Duration) (PeerKeyring, error) {
	var settled time.Time // the newest SignFrom that has been in use for grace
	found := false
	for _, old := range r.Keys {
		if !old.SignFrom.After(now.Add(-grace)) && (!found || old.SignFrom.After(settled)) {
			settled, found = old.SignFrom, true
		}
	}
	out := PeerKeyring{Keys: make([]PeerKey, 0, len(r.Keys)+1)}
	for _, old := range r.Keys {
		if !found || !old.SignFrom.Before(settled) {
			out.Keys = append(out.Keys, old)
		}
	}
	out.Keys = append(out.Keys, k)
	if len(out.Keys) > MaxPeerKeys {
		return r, ErrPeerKeyringFull
	}
	return out, out.Validate()
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
