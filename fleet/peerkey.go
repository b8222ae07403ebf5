package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// DefaultPeerKeyGrace is how long after a rotation nodes keep signing with the old key, so
// that every node has learnt the new one before anyone signs with it.
const DefaultPeerKeyGrace = 30 * time.Second

// ensurePeerKeys creates the peer key bucket and, when it holds no keyring yet, a first key.
// Concurrent callers agree: the keyring is created only if absent.
func ensurePeerKeys(ctx context.Context, js jetstream.JetStream, prefix string, replicas int) error {
	if err := ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      wire.Bucket(prefix, wire.PeerKeyBucket),
		Description: "Meridian peer keyring: secrets that sign node-to-node fill requests",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}); err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, wire.Bucket(prefix, wire.PeerKeyBucket))
	if err != nil {
		return fmt.Errorf("bind peer key bucket: %w", err)
	}
	k, err := newPeerKey(time.Time{})
	if err != nil {
		return err
	}
	b, err := json.Marshal(wire.PeerKeyring{Keys: []wire.PeerKey{k}})
	if err != nil {
		return fmt.Errorf("encode peer keyring: %w", err)
	}
	if _, err := kv.Create(ctx, wire.PeerKeyringKey, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("create peer keyring: %w", err)
	}
	return nil
}

func newPeerKey(signFrom time.Time) (wire.PeerKey, error) {
	secret := make([]byte, wire.MinPeerKeyBytes)
	if _, err := rand.Read(secret); err != nil {
		return wire.PeerKey{}, fmt.Errorf("make peer key: %w", err)
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return wire.PeerKey{}, fmt.Errorf("make peer key id: %w", err)
	}
	return wire.PeerKey{ID: hex.EncodeToString(id), Secret: secret, SignFrom: signFrom}, nil
}

// RotatePeerKey adds a new peer key that nodes sign with from now+grace (grace <= 0 means
// DefaultPeerKeyGrace) and drops the keys older than one that has been signing for a grace
// (wire.PeerKeyring.Rotated), so a rotation, or several within a grace, never stops a node
// from verifying a request signed a moment ago. It returns the new key's id. The write is a
// compare-and-set: concurrent rotations do not lose each other's keys.
func RotatePeerKey(ctx context.Context, js jetstream.JetStream, prefix string, grace time.Duration) (string, error) {
	if grace <= 0 {
		grace = DefaultPeerKeyGrace
	}
	kv, err := js.KeyValue(ctx, wire.Bucket(prefix, wire.PeerKeyBucket))
	if err != nil {
		return "", fmt.Errorf("bind peer key bucket: %w", err)
	}
	for {
		e, err := kv.Get(ctx, wire.PeerKeyringKey)
		if err != nil {
			return "", fmt.Errorf("read peer keyring: %w", err)
		}
		ring, err := wire.DecodePeerKeyring(e.Value())
		if err != nil {
			return "", err
		}
		k, err := newPeerKey(time.Now().Add(grace))
		if err != nil {
			return "", err
		}
		ring, err = ring.Rotated(k, time.Now(), grace)
		if err != nil {
			return "", fmt.Errorf("rotate peer keyring: %w", err)
		}
		b, err := json.Marshal(ring)
		if err != nil {
			return "", fmt.Errorf("encode peer keyring: %w", err)
		}
		_, err = kv.Update(ctx, wire.PeerKeyringKey, b, e.Revision())
		if err == nil {
			return k.ID, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("write peer keyring: %w", err)
		}
		// Someone else wrote first: rotate on top of theirs.
	}
}

// PeerKeyViewConfig configures a PeerKeyView.
type PeerKeyViewConfig struct {
	// JS is the JetStream context the peer key bucket is watched through. Required.
	JS jetstream.JetStream
	// Prefix is the NATS name prefix; empty means wire.DefaultPrefix.
	Prefix string
	// OnChange is called with every new valid keyring (from the watch goroutine).
	OnChange func(wire.PeerKeyring)
	// Logger receives watch failures and invalid keyrings; nil discards.
	Logger *slog.Logger
}

// PeerKeyView follows the peer keyring. An invalid keyring in the bucket is logged and
// ignored, keeping the last good one; so is the bucket being unreachable.
type PeerKeyView struct {
	cfg   PeerKeyViewConfig
	log   *slog.Logger
	ready chan struct{}
	once  sync.Once
}

// NewPeerKeyView returns a PeerKeyView; it watches nothing until Run.
func NewPeerKeyView(cfg PeerKeyViewConfig) *PeerKeyView {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PeerKeyView{cfg: cfg, log: log, ready: make(chan struct{})}
}

// Ready is closed once a valid keyring has been seen.
func (v *PeerKeyView) Ready() <-chan struct{} { return v.ready }

// Run watches the bucket until ctx ends and returns nil once it has stopped.
func (v *PeerKeyView) Run(ctx context.Context) error {
	Watch(ctx, v.cfg.JS, wire.Bucket(v.cfg.Prefix, wire.PeerKeyBucket), wire.PeerKeyringKey, v.log, peerKeyHandler{v})
	return nil
}

type peerKeyHandler struct{ v *PeerKeyView }

func (h peerKeyHandler) Snapshot(entries []jetstream.KeyValueEntry) {
	for _, e := range entries {
		h.Update(e)
	}
}

func (h peerKeyHandler) Update(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		h.v.log.Warn("peer keyring deleted from the bucket; keeping the last one")
		return
	}
	ring, err := wire.DecodePeerKeyring(e.Value())
	if err != nil {
		h.v.log.Warn("invalid peer keyring in the bucket; keeping the last one", "err", err)
		return
	}
	if h.v.cfg.OnChange != nil {
		h.v.cfg.OnChange(ring)
	}
	h.v.once.Do(func() { close(h.v.ready) })
}
