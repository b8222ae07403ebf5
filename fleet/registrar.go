package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// RegistrarConfig configures a Registrar.
type RegistrarConfig struct {
	// JS is the JetStream context the node's key is written through. Required.
	JS jetstream.JetStream
	// Prefix is the NATS name prefix; empty means wire.DefaultPrefix.
	Prefix string
	// Node is the node's registration; PoP and ID are required. Its Load and Draining fields
	// are overwritten on every heartbeat.
	Node wire.Node
	// Interval is the time between heartbeats; zero means one second. It must stay well under
	// the fleet bucket's TTL. A heartbeat waits for its answers an interval at most, and never
	// more than two seconds (maxBeatWait).
	Interval time.Duration
	// Load returns the node's current load report; nil reports only a healthy node. A zero At
	// is set to the time of the heartbeat.
	Load func() wire.LoadReport
	// Logger receives failed heartbeats; nil discards.
	Logger *slog.Logger
	// OnWrite, if not nil, is called on Run's goroutine after each heartbeat the server
	// answered; sent is when it was sent (time.Now), so the key lives at least the bucket's
	// TTL from then. shared reports that the key held another write than this process's last one:
	// another process of the node (a restart's overlap), or what a process before this one
	// left (a crashed one's registration, or the delete of a clean stop, until the bucket's
	// TTL removes it). A key with no entry at all (none yet, or the TTL removed it while this
	// process's heartbeats failed) is not shared. A node's acks stand for every process under
	// its id (the edge holds them back meanwhile, docs/purge.md).
	OnWrite func(sent time.Time, shared bool)
}

// Registrar keeps one node's key in the fleet bucket alive: it writes the registration on
// start, rewrites it with a fresh load report every Interval, and deletes it when stopped, so a
// clean stop leaves the fleet at once and a crash leaves it within the bucket's TTL.
//
// While two processes register the same node (a restart whose new process starts before the
// old one has drained and left), the one serving owns the key: each heartbeat after the first
// is written only over this process's own last write, and a draining process that finds
// another write there stops writing (until the key expires, or it is undrained) and does not
// delete the key when it stops, so the registry neither flips between the two (draining, not
// draining) nor loses the node when the old process leaves. Nothing is read: a credential that
// could get a key an edge wrote could have the server publish it anywhere (internal/natsauth).
//
// Each registration carries the process's instance id (wire.Node.Instance, random, made by
// NewRegistrar). A heartbeat the server stored while its answer was lost (a timeout, a
// reconnect) leaves the key at a revision this process does not know, and the next heartbeat
// is refused over its last known one; a watch of the key that hands its entries to KeyWatch
// lets the registrar tell that write for its own, and write over it as over any of its own,
// instead of taking it for another process's (OnWrite's shared). Without that watch, or before
// it delivered the write, the write there counts as another's, as it did before.
type Registrar struct {
	cfg      RegistrarConfig
	key      string
	bucket   string
	instance string
	log      *slog.Logger
	kick     chan struct{} // asks Run for an immediate heartbeat

	seenMu sync.Mutex // guards seen
	// seen is the key's last entry as the watch handed to KeyWatch delivered it.
	seen seenEntry

	// Run's own: the revision of this process's last answered write to its key (0: none
	// yet), and whether it left the key to another process of the node.
	rev     uint64
	yielded bool
	// shared: a write since the last answered heartbeat found another write on the key
	// (OnWrite); set by write, cleared once OnWrite reported it. A write whose answer was lost
	// may have found one: the next answered heartbeat reports it.
	shared bool

	ttl atomic.Int64 // the bucket's TTL (BucketTTL); 0 until read
	// ttlBeats counts the answered heartbeats since the TTL was last read (readTTL), and
	// ttlReconnects is the connection's reconnect count then; Run's goroutine only.
	ttlBeats      int
	ttlReconnects uint64
	// created is when the fleet bucket's stream was made, as the last status read said (zero:
	// not read, or not said); Run's goroutine only. A bucket deleted and made again numbers
	// its revisions from 1 again (readTTL).
	created time.Time

	mu       sync.Mutex // guards draining and lastErr
	draining bool
	lastErr  error
}

// NewRegistrar validates cfg and returns a Registrar; it starts nothing.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	if cfg.JS == nil {
		return nil, errors.New("new registrar: JS is required")
	}
	if err := wire.ValidatePoPID(cfg.Node.PoP); err != nil {
		return nil, fmt.Errorf("new registrar: pop: %w", err)
	}
	if err := wire.ValidatePoPID(cfg.Node.ID); err != nil {
		return nil, fmt.Errorf("new registrar: node id: %w", err)
	}
	if err := checkNodeSize(cfg.Node); err != nil {
		return nil, fmt.Errorf("new registrar: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Load == nil {
		cfg.Load = func() wire.LoadReport { return wire.LoadReport{Healthy: true} }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var id [instanceBytes]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("new registrar: instance id: %w", err)
	}
	return &Registrar{
		cfg:      cfg,
		key:      wire.FleetKey(cfg.Node.PoP, cfg.Node.ID),
		bucket:   wire.Bucket(cfg.Prefix, wire.FleetBucket),
		instance: hex.EncodeToString(id[:]),
		log:      log,
		kick:     make(chan struct{}, 1),
		draining: cfg.Node.Draining,
	}, nil
}

// instanceBytes is how many random bytes an instance id has (hex in the registration).
const instanceBytes = 8

// checkNodeSize refuses a registration that the fleet bucket could refuse: with the longest
// load report a heartbeat can carry it must fit MaxNodeBytes, or a heartbeat would fail.
func checkNodeSize(n wire.Node) error {
	const long = -1.2345678901234567e-6 // as long as a float64 gets in JSON (25 bytes)
	n.Lat, n.Lon, n.Capacity, n.Draining, n.PurgeMaxLag = long, long, long, true, math.MinInt64
	n.Instance = strings.Repeat("f", 2*instanceBytes)
	n.Load = wire.LoadReport{
		At:             time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(23*3600+59*60))),
		RequestsPerSec: long, EgressBytesPerSec: long, OpenConns: math.MinInt, CPU: long,
		MemoryBytes: math.MaxUint64, HitRatio: long, Healthy: true, Saturation: long,
	}
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node %s.%s: %w", n.PoP, n.ID, err)
	}
	if len(b) > MaxNodeBytes {
		return fmt.Errorf("node %s.%s: its registration takes up to %d bytes, more than the fleet bucket's %d: shorten its region, city, addresses or version",
			n.PoP, n.ID, len(b), MaxNodeBytes)
	}
	return nil
}

// ttlRereadBeats is how many answered heartbeats BucketTTL is read again after: one stream info
// request a minute per node at the default interval.
const ttlRereadBeats = 60

// BucketTTL is how long the fleet bucket keeps a key after its last write (0: never expires,
// or not read yet): the longest a process of the node that stopped writing (cut off from NATS)
// stays there for another process to find.
func (r *Registrar) BucketTTL() time.Duration { return time.Duration(r.ttl.Load()) }

// Key is the node's key in the fleet bucket.
func (r *Registrar) Key() string { return r.key }

// Instance is this process's instance id, which its registrations carry (wire.Node.Instance).
func (r *Registrar) Instance() string { return r.instance }

// seenEntry is an entry of the node's key as a watch delivered it.
type seenEntry struct {
	rev  uint64
	mine bool // a put carrying this process's instance id
}

// KeyWatch returns the handler of a watch of the node's own key (WatchKeys with Key()): each
// entry it delivers tells the registrar which write is the key's last, so that a heartbeat
// stored while its answer was lost is known for this process's own. Its calls may come from
// any one goroutine. An entry without an instance id (a version before it, or anyone else's
// write) is another process's.
func (r *Registrar) KeyWatch() WatchHandler { return keyWatch{r} }

type keyWatch struct{ r *Registrar }

func (w keyWatch) Snapshot(entries []jetstream.KeyValueEntry) {
	var last seenEntry // none: the key has no entry
	for _, e := range entries {
		if e.Key() == w.r.key {
			last = w.r.entry(e)
		}
	}
	w.r.seenMu.Lock()
	w.r.seen = last
	w.r.seenMu.Unlock()
}

func (w keyWatch) Update(e jetstream.KeyValueEntry) {
	if e.Key() != w.r.key {
		return
	}
	s := w.r.entry(e)
	w.r.seenMu.Lock()
	w.r.seen = s
	w.r.seenMu.Unlock()
}

// entry is what e says of the key: a delete, or a put that does not decode, is not this
// process's.
func (r *Registrar) entry(e jetstream.KeyValueEntry) seenEntry {
	s := seenEntry{rev: e.Revision()}
	if e.Operation() != jetstream.KeyValuePut {
		return s
	}
	var reg struct {
		Instance string `json:"instance"`
	}
	s.mine = json.Unmarshal(e.Value(), &reg) == nil && reg.Instance == r.instance
	return s
}

// ownUnanswered is the revision of the key's last entry the watch saw when it is a write of
// this process's whose answer the registrar did not get (stored, its answer lost), else 0.
// Writing over it (a write over a revision, refused if the key moved on since) is writing over
// this process's own: that write was itself made over the last answered one (or over no
// entry), and whatever another process wrote after it makes the write fail.
func (r *Registrar) ownUnanswered() uint64 {
	r.seenMu.Lock()
	s := r.seen
	r.seenMu.Unlock()
	if s.mine && s.rev != r.rev {
		return s.rev
	}
	return 0
}

// SetDraining marks the node as draining (or not) and sends a heartbeat at once so that DNS
// and peers stop choosing it without waiting for the next tick.
func (r *Registrar) SetDraining(d bool) {
	r.mu.Lock()
	r.draining = d
	r.mu.Unlock()
	r.Beat()
}

// Beat asks for a heartbeat at once, so that a change in the load report (the node became
// ready, say) reaches DNS and peers without waiting for the next tick.
func (r *Registrar) Beat() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Err is the error of the last heartbeat, nil when it was written.
func (r *Registrar) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Run heartbeats until ctx ends, then deletes the node's key and returns nil. Failed writes
// (NATS unreachable, bucket missing) are logged and retried on the next tick; the NATS client
// reconnects by itself.
func (r *Registrar) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	var kv jetstream.KeyValue
	for {
		kv = r.beat(ctx, kv)
		select {
		case <-ctx.Done():
			r.leave(kv)
			return nil
		case <-t.C:
		case <-r.kick:
		}
	}
}

// maxBeatWait bounds how long a heartbeat (binding the bucket, the write, the read of the
// bucket's TTL after it) waits for answers, with any interval: so a stop that comes while NATS
// is away waits at most this, and leave's delete after it.
const maxBeatWait = 2 * time.Second

// beat writes one heartbeat, binding the bucket first if needed, and returns the bucket
// handle to reuse (nil when it could not be bound).
func (r *Registrar) beat(ctx context.Context, kv jetstream.KeyValue) jetstream.KeyValue {
	if ctx.Err() != nil {
		return kv // stopped: Run leaves the fleet next
	}
	// A heartbeat older than one interval is worthless, so don't wait longer for it; nor
	// longer than maxBeatWait, whatever the interval: a server that answers at all answers
	// well within it, and Run, so a stop, waits for the heartbeat in flight (with an interval
	// of an hour, one sent as NATS went away held a stop for the hour). A stop does not cut
	// one short: one the server took while its answer was cut off would leave this process
	// without its revision, and leave would not delete the key.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(max(r.cfg.Interval, 500*time.Millisecond), maxBeatWait))
	defer cancel()
	fail := func(err error) {
		// A heartbeat the stop cut short (a node stopped before its first one was written)
		// is no failure: Run leaves the fleet next.
		if ctx.Err() == nil {
			r.setErr(err)
		}
		// The TTL may change meanwhile (control restarted with another heartbeat_ttl while
		// NATS was out of reach): read it again once a heartbeat is answered (readTTL).
		r.ttlBeats = ttlRereadBeats
	}
	if nc := r.cfg.JS.Conn(); nc != nil && !nc.IsConnected() {
		// The client would buffer the write and send it after reconnecting, a report of how
		// the node was before: skip it, the next tick sends a current one.
		fail(fmt.Errorf("heartbeat %s: nats not connected", r.key))
		return kv
	}
	var err error
	if kv == nil {
		kv, err = r.cfg.JS.KeyValue(bctx, r.bucket)
		if err != nil {
			fail(fmt.Errorf("bind fleet bucket %s: %w", r.bucket, err))
			return nil
		}
		r.ttlBeats = ttlRereadBeats // read it now
	}
	n := r.cfg.Node
	n.Load = r.cfg.Load()
	if n.Load.At.IsZero() {
		n.Load.At = time.Now()
	}
	r.mu.Lock()
	n.Draining = r.draining
	r.mu.Unlock()
	n.Instance = r.instance
	b, err := json.Marshal(n)
	if err != nil {
		fail(fmt.Errorf("encode node %s: %w", r.key, err))
		return kv
	}
	sent := time.Now()
	rev, err := r.write(bctx, kv, b, n.Draining)
	if err == nil {
		r.readTTL(bctx, kv)
		if r.cfg.OnWrite != nil {
			r.cfg.OnWrite(sent, r.shared)
		}
		r.shared = false
	}
	switch {
	case err != nil:
		fail(fmt.Errorf("heartbeat %s: %w", r.key, err))
		return kv
	case rev == 0: // left to another process of the node
		r.setErr(nil)
		return kv
	}
	r.rev, r.yielded = rev, false
	r.setErr(nil)
	return kv
}

// readTTL reads how long a key outlives its last write (BucketTTL) when it is due, after a
// heartbeat was answered and before OnWrite counts it; the bind read it already, but the
// handle does not keep it. Due after the bind, every ttlRereadBeats answered heartbeats (control
// may lower it: a restart with a shorter heartbeat_ttl), after a failed heartbeat or a
// reconnect (such a restart, with control's embedded NATS, which a heartbeat may not see
// fail), and again at the next heartbeat if a read fails: a TTL longer than the bucket's would
// have the edge think its key still there. Read after the write, not before, so heartbeats
// that keep failing cost no reads.
func (r *Registrar) readTTL(ctx context.Context, kv jetstream.KeyValue) {
	var reconnects uint64
	if nc := r.cfg.JS.Conn(); nc != nil {
		reconnects = nc.Stats().Reconnects
	}
	if r.ttlBeats++; r.ttlBeats < ttlRereadBeats && reconnects == r.ttlReconnects {
		return
	}
	if st, err := kv.Status(ctx); err == nil {
		r.ttl.Store(int64(st.TTL()))
		r.ttlBeats, r.ttlReconnects = 0, reconnects
		r.noteCreated(st)
	}
}

// noteCreated notes when the bucket's stream was made. One made since the last read (the bucket
// deleted and made again while this process ran: its heartbeats failed meanwhile, which makes
// the read due) numbers its revisions from 1 again, so the write just made over this process's
// last revision, or over the one the watch showed as its own, may have gone over another
// process's write that took the same number: the write counts as shared (OnWrite), which at
// worst holds the node's acks for nothing once.
func (r *Registrar) noteCreated(st jetstream.KeyValueStatus) {
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil || bs.StreamInfo().Created.IsZero() {
		return
	}
	created := bs.StreamInfo().Created
	if !r.created.IsZero() && !created.Equal(r.created) {
		r.shared = true
		r.log.Info("fleet bucket made again since the last look: this heartbeat counts as shared", "key", r.key, "created", created)
	}
	r.created = created
}

// write writes registration b to the node's key: the first time whatever is there (noting in
// shared whether there was anything), after that only over this process's own last write or
// over no entry (the key expired in a cut longer than the TTL: not shared). Another write
// between (another process of the node, a delete) is overwritten by a process that serves; a
// draining one leaves the key to the other, returning 0, and writes again only once the key has
// expired or it is undrained.
func (r *Registrar) write(ctx context.Context, kv jetstream.KeyValue, b []byte, draining bool) (uint64, error) {
	switch {
	case r.yielded && draining:
		// Revision 0: only a key with no entry at all, which its expiry leaves (kv.Create
		// would read the key to see a delete, which an edge may not).
		rev, err := kv.Update(ctx, r.key, b, 0)
		if own := r.ownUnanswered(); own != 0 && wrongLastRevision(err) {
			// This process's own write is there (one of these, its answer lost).
			rev, err = kv.Update(ctx, r.key, b, own)
		}
		if wrongLastRevision(err) {
			r.shared = true
			return 0, nil // still the other process's
		}
		if err == nil {
			r.yielded = false
			r.log.Info("fleet key free again: heartbeats resume", "key", r.key)
		}
		return rev, err
	case r.yielded: // yielded, undrained: it serves again
		r.shared = true // over the other's write
		return kv.Put(ctx, r.key, b)
	}
	// The first write goes over whatever is there, but says whether anything was: another
	// process of the node may still serve (OnWrite).
	rev, err := kv.Update(ctx, r.key, b, r.rev)
	if !wrongLastRevision(err) {
		return rev, err
	}
	if own := r.ownUnanswered(); own != 0 {
		// The write there is this process's own, stored while its answer was lost (a
		// timeout, a reconnect): before, it was taken for another process's, and the edge
		// held its purge acks for lame_duck + max_lag + two heartbeats for nothing
		// (TestLostHeartbeatAnswerHoldsNoAcks, edge). If it found another's write itself
		// (a Put below), shared says so still.
		rev, err = kv.Update(ctx, r.key, b, own)
		if !wrongLastRevision(err) {
			return rev, err
		}
	}
	if r.rev != 0 {
		// Not over this process's last write: is there any entry at all? None (revision 0)
		// is a key the bucket's TTL removed while this process's heartbeats failed (a NATS
		// outage, a restart of control with its embedded NATS), as a first write finds none:
		// every process that wrote it last did so over the TTL ago, and counts as lagging
		// since (its registration lapsed), or wrote nothing yet. Not shared, as for a first
		// write over no entry: before, the edge held its acks for max_lag after every such
		// outage (TestAckNotHeldAfterControlRestart, control).
		rev, err = kv.Update(ctx, r.key, b, 0)
		if !wrongLastRevision(err) {
			return rev, err
		}
	}
	r.shared = true
	if r.rev == 0 {
		return kv.Put(ctx, r.key, b)
	}
	if draining {
		// Also when the write there is this process's own, stored while its answer was lost
		// in a cut, and the watch of the key has not delivered it (or there is none): then the
		// key goes unwritten until it expires (and stays after the stop until then), which
		// costs nothing for a draining node. Writing over it instead would, in a restart, mark
		// the new process draining until its next heartbeat.
		r.yielded = true
		r.log.Info("fleet key written by another process of this node while this one drains: left to it", "key", r.key)
		return 0, nil
	}
	return kv.Put(ctx, r.key, b)
}

func (r *Registrar) setErr(err error) {
	r.mu.Lock()
	prev := r.lastErr
	r.lastErr = err
	r.mu.Unlock()
	switch {
	case err != nil && prev == nil:
		r.log.Warn("fleet heartbeat failing", "key", r.key, "err", err)
	case err == nil && prev != nil:
		r.log.Info("fleet heartbeat restored", "key", r.key)
	}
}

// leave deletes the node's key so that the fleet forgets it at once.
func (r *Registrar) leave(kv jetstream.KeyValue) {
	// Asked before anything is sent: with NATS unreachable since the start (no bucket bound,
	// so nothing written), binding the bucket only waited out the timeout below.
	if kv == nil {
		return // never bound, so never written
	}
	// Only over this process's own writes: another process of the node that wrote since keeps
	// its registration. First over its last answered write (none when it yielded the key to
	// another process), then over its last write stored while its answer was lost, as the
	// watch saw it. Not the other way round: a watch that has not yet delivered the last
	// answered write shows an older one of this process's, and a delete over that would be
	// refused, leaving the key until it expires (TestRegistrarLeaveWatchBehind).
	var revs []uint64
	if !r.yielded && r.rev != 0 {
		revs = append(revs, r.rev)
	}
	if own := r.ownUnanswered(); own != 0 {
		revs = append(revs, own)
	}
	if len(revs) == 0 {
		return // the key is another process's, or this one never wrote it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, rev := range revs {
		err := kv.Delete(ctx, r.key, jetstream.LastRevision(rev))
		if !wrongLastRevision(err) {
			if err != nil {
				r.log.Warn("fleet leave: delete key", "key", r.key, "err", err)
			}
			return
		}
	}
}

// wrongLastRevision reports whether err is JetStream refusing a write made over a revision the
// key is no longer at (replicated streams give the second code).
func wrongLastRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
