package fleet

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// DefaultTTL is how long a node's key lives after its last heartbeat when no TTL is given.
const DefaultTTL = 3 * time.Second

// Bounds of a value in the buckets edges write. NATS lets an edge write its own keys, and
// checks a write's subject, not its size: without a bound a compromised edge could write up to
// the server's max payload (1 MiB) on every heartbeat, which every watcher of the bucket
// (control, DNS, every edge) would receive and decode. The server refuses a larger value.
const (
	// MaxNodeBytes bounds one node's registration with its load report (wire.Node as JSON,
	// about 450 bytes, 1.3 KB with every field at its longest; NewRegistrar refuses a
	// registration that could outgrow it).
	MaxNodeBytes = 4096
	// MaxLatencyRecordBytes bounds one latency record (wire.LatencyRecord as JSON).
	MaxLatencyRecordBytes = 2048
)

// EnsureBuckets creates the fleet and config buckets for prefix, idempotently: a bucket that
// already exists with the same configuration is left untouched, one whose configuration
// differs (another TTL, say) is updated in place, keeping its data.
//
// The fleet bucket keeps one value per key and expires keys ttl (default DefaultTTL) after
// their last write, so a node that stops heartbeating disappears; its views drop it once its
// last report is ttl old (View); it refuses rollups and values over MaxNodeBytes, as the
// latency bucket does over MaxLatencyRecordBytes. The latency bucket is made with
// LatencyMaxBytes; an existing one keeps its byte bound, which control sets
// (SetLatencyMaxBytes). The config bucket keeps
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
	if err := ensureNoRollupBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:       wire.Bucket(prefix, wire.FleetBucket),
		Description:  "Meridian fleet registry: one key per edge node, expiring without heartbeats",
		History:      1,
		TTL:          ttl,
		MaxValueSize: MaxNodeBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     replicas,
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
	// and expiring, so that the map forgets networks that stopped reporting. Edges (and
	// leaves) write records of their own, which NATS permits by subject; a write that carries
	// "Nats-Rollup: all" would make the server delete every other record of the bucket,
	// whatever the writer's permissions. Nothing here uses rollups (a KV Purge does; we
	// delete, which leaves a marker), so the bucket refuses them, as the fleet bucket does.
	if err := ensureNoRollupBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:       wire.Bucket(prefix, wire.LatencyBucket),
		Description:  "Meridian latency map: RTTs clients measured to PoPs, per client network",
		History:      1,
		TTL:          LatencyTTL,
		MaxBytes:     LatencyMaxBytes,
		MaxValueSize: MaxLatencyRecordBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     replicas,
	}); err != nil {
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
// bucket holds at most LatencyMaxBytes unless control set another bound (SetLatencyMaxBytes);
// further writes that do not fit are refused until records expire: new keys, and on a cluster
// updates of existing keys too (a single server takes an update no larger than the record it
// replaces; TestLatencyBucketFill, TestLatencyBucketFullOnCluster).
const (
	LatencyTTL      = 15 * time.Minute
	LatencyMaxBytes = 64 << 20
)

// SetLatencyMaxBytes bounds the latency bucket of prefix to maxBytes, raised or lowered, and
// returns the bytes the bucket holds; maxBytes <= 0 leaves the bound as it is (and returns
// 0). The bucket must exist (EnsureBuckets). A lower
// bound than the bucket holds deletes nothing: the bucket discards new writes, not old
// records, so until enough records expire to bring it under the bound it refuses new keys,
// and on a cluster every write, updates of existing keys too (TestLatencyBucketFullOnCluster).
func SetLatencyMaxBytes(ctx context.Context, js jetstream.JetStream, prefix string, maxBytes int64) (held uint64, err error) {
	if maxBytes <= 0 {
		return 0, nil
	}
	bucket := wire.Bucket(prefix, wire.LatencyBucket)
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, fmt.Errorf("look up the stream of kv bucket %s: %w", bucket, err)
	}
	info := stream.CachedInfo()
	cfg := info.Config
	if cfg.MaxBytes == maxBytes {
		return info.State.Bytes, nil
	}
	cfg.MaxBytes = maxBytes
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return 0, fmt.Errorf("bound kv bucket %s to %d bytes: %w", bucket, maxBytes, err)
	}
	return info.State.Bytes, nil
}

// ensureNoRollupBucket creates or updates a bucket that edges write keys of, keeping rollups
// off throughout. A KV create or update turns rollups on (denyRollup turns them off after), so
// an existing bucket is updated as a stream instead: through the KV API, every control start
// would open a moment in which an edge's write to its own key carrying "Nats-Rollup: all"
// deleted every other key. Only a bucket that did not exist is made through the KV API, empty.
//
// A fleet bucket made by an earlier version has delete markers, which the server ties to
// rollups and to message TTLs: the update drops the markers. The server never turns message
// TTLs off again, which a KV update would, so it refused those; a stream update keeps them.
func ensureNoRollupBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	stream, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateKeyValue(ctx, cfg)
		if err == nil {
			return denyRollup(ctx, js, cfg.Bucket)
		}
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("create kv bucket %s: %w", cfg.Bucket, err)
		}
		// Another control made it meanwhile: update that one.
		stream, err = js.Stream(ctx, "KV_"+cfg.Bucket)
	}
	if err != nil {
		return fmt.Errorf("look up the stream of kv bucket %s: %w", cfg.Bucket, err)
	}
	return updateBucket(ctx, js, stream, cfg, true)
}

// updateBucket updates an existing bucket's stream with what a KV update sets from cfg (and,
// if noRollup, no markers and no rollups), keeping everything else: a KV update would also
// reset the stream's consumer bounds (max_consumers, consumer_limits), which control sets
// after it (control's boundConsumers), so every control start would lift them for a moment.
// A byte bound the bucket already has is kept too: control sizes the latency bucket for the
// fleet (SetLatencyMaxBytes), and a start that makes sure of the buckets (another control's,
// or one without the bound) must not shrink it back to cfg's default meanwhile.
func updateBucket(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, cfg jetstream.KeyValueConfig, noRollup bool) error {
	old := stream.CachedInfo().Config
	sc := old
	// What a KV update sets from cfg, as nats.go maps it.
	sc.Description = cfg.Description
	sc.MaxMsgsPerSubject = int64(max(cfg.History, 1))
	sc.MaxAge = cfg.TTL
	sc.MaxBytes = cfg.MaxBytes
	if sc.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	if cfg.MaxBytes > 0 && old.MaxBytes > 0 {
		sc.MaxBytes = old.MaxBytes
	}
	sc.MaxMsgSize = cfg.MaxValueSize
	if sc.MaxMsgSize == 0 {
		sc.MaxMsgSize = -1
	}
	sc.Replicas = max(cfg.Replicas, 1)
	// The duplicates window as a KV update sets it: at most the TTL, which the server
	// requires (a lower TTL than the bucket was made with was refused, and control did not
	// start).
	sc.Duplicates = 2 * time.Minute
	if cfg.TTL > 0 && cfg.TTL < sc.Duplicates {
		sc.Duplicates = cfg.TTL
	}
	if noRollup {
		sc.SubjectDeleteMarkerTTL, sc.AllowRollup = 0, false
	}
	if reflect.DeepEqual(sc, old) {
		return nil
	}
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("update kv bucket %s: %w", cfg.Bucket, err)
	}
	return nil
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	// The server treats a create with an identical configuration as a no-op and refuses one
	// that differs (a bucket whose consumers control bounded differs); only then do we update.
	_, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		stream, err := js.Stream(ctx, "KV_"+cfg.Bucket)
		if err != nil {
			return fmt.Errorf("look up the stream of kv bucket %s: %w", cfg.Bucket, err)
		}
		return updateBucket(ctx, js, stream, cfg, false)
	}
	if err != nil {
		return fmt.Errorf("create kv bucket %s: %w", cfg.Bucket, err)
	}
	return nil
}
