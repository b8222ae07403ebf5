package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// DefaultTTL is how long a node's key lives after its last heartbeat when no TTL is given.
const DefaultTTL = 3 * time.Second

// EnsureBuckets creates the fleet and config buckets for prefix, idempotently: a bucket that
// already exists with the same configuration is left untouched, one whose configuration
// differs (another TTL, say) is updated in place, keeping its data.
//
// The fleet bucket keeps one value per key and expires keys ttl (default DefaultTTL) after
// their last write, so a node that stops heartbeating disappears; its views drop it once its
// last report is ttl old (View), and it refuses rollups. The config bucket keeps
// five revisions per key and never expires. The peer key bucket gets a first peer keyring if
// it has none (see RotatePeerKey). All use file storage so that they survive a NATS
// restart. replicas <= 0 means 1.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, prefix string, ttl time.Duration, replicas int) error {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if replicas <= 0 {
		replicas = 1
	}
	// No delete markers (LimitMarkerTTL) on expiry: the server keeps rollups on for a stream
	// with markers, and an edge may write its own key, so one edge's write carrying
	// "Nats-Rollup: all" would empty the registry (NATS checks a publish's subject, not its
	// headers). Watchers learn of an expired node from View's staleness check instead, which
	// drops a node whose last report is older than the TTL, as the key's expiry does.
	if err := ensureFleetBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      wire.Bucket(prefix, wire.FleetBucket),
		Description: "Meridian fleet registry: one key per edge node, expiring without heartbeats",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}); err != nil {
		return err
	}
	if err := ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      wire.Bucket(prefix, wire.ConfigBucket),
		Description: "Meridian configuration: hosts, routing policy, PoP drains",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}); err != nil {
		return err
	}
	// Real-user latency records (edge beacons, read by DNS): bounded in bytes and per value,
	// and expiring, so that the map forgets networks that stopped reporting.
	if err := ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:       wire.Bucket(prefix, wire.LatencyBucket),
		Description:  "Meridian latency map: RTTs clients measured to PoPs, per client network",
		History:      1,
		TTL:          LatencyTTL,
		MaxBytes:     LatencyMaxBytes,
		MaxValueSize: 2048,
		Storage:      jetstream.FileStorage,
		Replicas:     replicas,
	}); err != nil {
		return err
	}
	// Edges (and leaves) write latency records of their own, which NATS permits by subject; a
	// write that carries "Nats-Rollup: all" would make the server delete every other record of
	// the bucket, whatever the writer's permissions. Nothing here uses rollups (a KV Purge
	// does; we delete, which leaves a marker), so the bucket refuses them, as the fleet
	// bucket does.
	if err := denyRollup(ctx, js, wire.Bucket(prefix, wire.LatencyBucket)); err != nil {
		return err
	}
	return ensurePeerKeys(ctx, js, prefix, replicas)
}

// denyRollup turns off rollups on the stream behind the KV bucket (creating or updating a
// bucket turns them on).
func denyRollup(ctx context.Context, js jetstream.JetStream, bucket string) error {
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return fmt.Errorf("look up the stream of kv bucket %s: %w", bucket, err)
	}
	cfg := stream.CachedInfo().Config
	if !cfg.AllowRollup {
		return nil
	}
	cfg.AllowRollup = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("refuse rollups on kv bucket %s: %w", bucket, err)
	}
	return nil
}

// Bounds of the latency bucket: a record lives LatencyTTL after its last write, and the
// bucket holds at most LatencyMaxBytes (further writes are refused until records expire).
const (
	LatencyTTL      = 15 * time.Minute
	LatencyMaxBytes = 64 << 20
)

// ensureFleetBucket creates or updates the fleet bucket and turns rollups off. A bucket made
// by an earlier version has delete markers, which the server ties to rollups and to message
// TTLs. It never turns message TTLs off again, so a KV update, which would, is refused: such
// a stream is updated directly, now and at every later start, dropping the markers and
// rollups and keeping the rest.
func ensureFleetBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	stream, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if err := ensureBucket(ctx, js, cfg); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("look up the stream of kv bucket %s: %w", cfg.Bucket, err)
	case stream.CachedInfo().Config.SubjectDeleteMarkerTTL > 0 || stream.CachedInfo().Config.AllowMsgTTL:
		sc := stream.CachedInfo().Config
		sc.SubjectDeleteMarkerTTL, sc.AllowRollup = 0, false
		sc.MaxAge, sc.Replicas, sc.Description = cfg.TTL, cfg.Replicas, cfg.Description
		// The duplicates window as a KV update sets it: at most the TTL, which the server
		// requires (a lower TTL than the bucket was made with was refused, and control did
		// not start).
		sc.Duplicates = 2 * time.Minute
		if cfg.TTL > 0 && cfg.TTL < sc.Duplicates {
			sc.Duplicates = cfg.TTL
		}
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("drop delete markers and rollups on kv bucket %s: %w", cfg.Bucket, err)
		}
		return nil
	default:
		if err := ensureBucket(ctx, js, cfg); err != nil {
			return err
		}
	}
	return denyRollup(ctx, js, cfg.Bucket)
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	// The server treats a create with an identical configuration as a no-op and refuses one
	// that differs; only then do we update.
	_, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		_, err = js.UpdateKeyValue(ctx, cfg)
		if err != nil {
			return fmt.Errorf("update kv bucket %s: %w", cfg.Bucket, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create kv bucket %s: %w", cfg.Bucket, err)
	}
	return nil
}
