package purge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
)

// SubscriberConfig configures a node's Subscriber. JS, PoP, Node, Apply and OnGap are required.
type SubscriberConfig struct {
	JS jetstream.JetStream
	// Conn carries the acks; nil means JS.Conn().
	Conn *nats.Conn
	// Prefix is the subject prefix; empty means wire.DefaultPrefix.
	Prefix string
	// PoP and Node identify this node in its acks.
	PoP, Node string
	// Apply makes the purge take effect on this node and returns how many objects it hit. The
	// ack is sent only after Apply returned nil; an error is logged and Apply is called again
	// for the same message (with backoff) until it succeeds: a purge is never skipped.
	Apply func(ctx context.Context, m Message) (hits int, err error)
	// OnGap is called, before anything newer is applied, when purges between lastApplied and next
	// (exclusive) can no longer be replayed: they expired beyond the stream's retention, the
	// stream was purged or recreated, or one could not be decoded. The node must then treat
	// everything it stored before as stale.
	OnGap func(ctx context.Context, lastApplied, next uint64)
	// Logger receives retries, gaps and lost acks; nil means discard.
	Logger *slog.Logger
	// Clock stamps AppliedAt in acks; nil means time.Now.
	Clock func() time.Time
	// RetryMin is the first delay after a failed Apply or a lost consumer; it doubles up to
	// RetryMax, each delay ±20 % (fleet.Backoff). Zero means 50 ms and 5 s.
	RetryMin, RetryMax time.Duration
	// ConfirmEvery is how often the subscriber asks the stream for its last sequence to confirm
	// that it has applied everything published (see CaughtUpAt); it also asks at once after a
	// reconnect. Zero means 1 s.
	ConfirmEvery time.Duration
}

// Subscriber is the node side of purges: it replays the PURGE stream in order from where the node
// joined, applies each purge once, and acks it on AckSubject.
type Subscriber struct {
	cfg    SubscriberConfig
	conn   *nats.Conn
	stream string
	ackSub string
	log    *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	// confirmed is closed at the first confirmation (CaughtUpAt); confirmLoop only.
	confirmed chan struct{}
	running   atomic.Bool
	// lastApplied is the stream sequence of the last purge applied (or given up on through
	// OnGap); it is written only by Run's goroutine.
	lastApplied atomic.Uint64
	// joined is set once lastApplied was initialised from the stream's state; Run's goroutine only.
	joined bool
	// ackBuf holds the last ack encoded; Run's goroutine only.
	ackBuf []byte

	// caughtUpAt (Unix nanoseconds, 0 for never) is the last confirmed time before which every
	// purge published has been applied; confirmedOn is the connection's reconnect count when
	// that confirmation was asked for. Both are written only by confirmLoop.
	caughtUpAt  atomic.Int64
	confirmedOn atomic.Uint64
	// progress wakes confirmLoop when lastApplied advanced (capacity 1, never closed).
	progress chan struct{}
}

// NewSubscriber checks cfg and returns a Subscriber; it starts nothing.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("new purge subscriber: JS is required")
	case cfg.PoP == "" || cfg.Node == "":
		return nil, errors.New("new purge subscriber: PoP and Node are required")
	case cfg.Apply == nil:
		return nil, errors.New("new purge subscriber: Apply is required")
	case cfg.OnGap == nil:
		return nil, errors.New("new purge subscriber: OnGap is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 50 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryMin)
	if cfg.ConfirmEvery <= 0 {
		cfg.ConfirmEvery = time.Second
	}
	conn := cfg.Conn
	if conn == nil {
		conn = cfg.JS.Conn()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Subscriber{
		cfg:       cfg,
		conn:      conn,
		stream:    StreamName(cfg.Prefix),
		ackSub:    AckSubject(cfg.Prefix, cfg.PoP, cfg.Node),
		log:       log.With("pop", cfg.PoP, "node", cfg.Node),
		ready:     make(chan struct{}),
		confirmed: make(chan struct{}),
		progress:  make(chan struct{}, 1),
	}, nil
}

// Ready is closed once the first consumer exists: from then on no purge published can be missed.
// The edge waits for it before serving.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// LastApplied is the stream sequence of the last purge applied.
func (s *Subscriber) LastApplied() uint64 { return s.lastApplied.Load() }

// CaughtUpAt is the latest time before which, as last confirmed, every purge published has been
// applied (or given up on through OnGap): the subscriber asked the stream for its last sequence
// at that time and has applied up to it since. It is zero until the first confirmation. A node
// cut off from NATS cannot confirm, so CaughtUpAt stops advancing: the edge bounds its
// staleness by how old it may get (purge.max_lag, purge rule 5).
func (s *Subscriber) CaughtUpAt() time.Time {
	ns := s.caughtUpAt.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Confirmed is closed once CaughtUpAt was first confirmed: the subscriber has caught up with the
// stream.
func (s *Subscriber) Confirmed() <-chan struct{} { return s.confirmed }

// ConfirmedSinceReconnect reports whether CaughtUpAt was confirmed over the current NATS
// connection, that is after the last reconnect: a node that comes back from a partition has
// replayed what it missed only once this holds again.
func (s *Subscriber) ConfirmedSinceReconnect() bool {
	return s.caughtUpAt.Load() != 0 && s.confirmedOn.Load() == s.conn.Stats().Reconnects
}

// Run consumes purges until ctx ends, then returns nil once everything it started has stopped.
// It starts after the stream's last sequence (a new node's cache is empty) and, whenever the
// consumer is lost, resumes at LastApplied()+1.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("purge subscriber: Run called twice")
	}
	cctx, stopConfirm := context.WithCancel(ctx)
	var confirmer sync.WaitGroup
	confirmer.Go(func() { s.confirmLoop(cctx) })
	defer func() {
		stopConfirm()
		confirmer.Wait()
	}()
	retry := fleet.Backoff(s.cfg.RetryMin, s.cfg.RetryMax)
	for {
		progressed, err := s.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			retry.Reset()
		}
		s.log.Warn("purge consumer lost; resuming", "last_applied", s.LastApplied(), "err", err)
		if !fleet.Wait(ctx, retry) {
			return nil
		}
	}
}

// consume creates an ordered consumer at LastApplied()+1 and applies what it delivers until an
// error or the end of ctx. progressed says whether the consumer got going, to reset backoff.
func (s *Subscriber) consume(ctx context.Context) (progressed bool, err error) {
	stream, err := s.cfg.JS.Stream(ctx, s.stream)
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", s.stream, err)
	}
	state := stream.CachedInfo().State
	last := s.LastApplied()
	first := state.FirstSeq
	if first == 0 { // an empty, never used stream reports 0
		first = state.LastSeq + 1
	}
	switch {
	case !s.joined:
		// A new node's cache is empty: older purges do not concern it.
		last = state.LastSeq
		s.lastApplied.Store(last)
		s.joined = true
	case state.LastSeq < last:
		// The stream was recreated: sequences restarted, so what we applied tells nothing.
		s.gap(ctx, last, first)
	case first > last+1:
		s.gap(ctx, last, first)
	}
	cons, err := s.cfg.JS.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   s.LastApplied() + 1,
		// Give up after a few internal resets so that Run re-checks the stream for gaps.
		MaxResetAttempts: 3,
	})
	if err != nil {
		return false, fmt.Errorf("create consumer on %s at %d: %w", s.stream, s.LastApplied()+1, err)
	}
	// Library defaults (30 s pull expiry, 5 s heartbeat): a reconnect resets the consumer at once,
	// heartbeats only catch a silently dead connection, and shorter ones cause needless resets
	// on a busy machine.
	it, err := cons.Messages()
	if err != nil {
		return false, fmt.Errorf("start consuming %s: %w", s.stream, err)
	}
	// Next can block inside the library's consumer reset, which only Stop interrupts.
	stopped := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Stop()
	}()
	defer func() {
		close(stopped)
		wg.Wait()
	}()
	s.readyOnce.Do(func() { close(s.ready) })

	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return true, fmt.Errorf("next purge from %s: %w", s.stream, err)
		}
		if err := s.handle(ctx, msg); err != nil {
			return true, err
		}
	}
}

// handle applies one delivered message in order, then acks it.
func (s *Subscriber) handle(ctx context.Context, msg jetstream.Msg) error {
	md, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("read purge metadata: %w", err)
	}
	seq := md.Sequence.Stream
	last := s.LastApplied()
	if seq <= last {
		return nil // already applied before a reconnect
	}
	if seq > last+1 {
		s.gap(ctx, last, seq)
	}
	m, err := DecodeMessage(msg.Data())
	if err != nil {
		// What it would have purged is unknown: the same as having lost it.
		s.log.Error("undecodable purge in stream; treating it as lost", "seq", seq, "err", err)
		s.gap(ctx, seq-1, seq+1)
		return nil
	}
	m.Seq = seq
	hits, err := s.apply(ctx, m)
	if err != nil {
		return err
	}
	s.lastApplied.Store(seq)
	s.wakeConfirm()
	ack := Ack{ID: m.ID, Seq: seq, PoP: s.cfg.PoP, Node: s.cfg.Node, AppliedAt: s.cfg.Clock(), Hits: hits}
	// Publish copies the ack into the connection's buffer, so the next ack can reuse ackBuf.
	data, err := appendAck(s.ackBuf[:0], ack)
	s.ackBuf = data
	if err == nil {
		err = s.conn.Publish(s.ackSub, data)
	}
	if err != nil {
		// The purge is applied; only the receipt is lost, and the tracker reports the node pending.
		s.log.Warn("send purge ack", "id", m.ID, "seq", seq, "err", err)
	}
	return nil
}

// gap reports lost purges to OnGap and moves past them.
func (s *Subscriber) gap(ctx context.Context, last, next uint64) {
	s.log.Warn("purges lost beyond replay; cache treated as stale", "last_applied", last, "next", next)
	s.cfg.OnGap(ctx, last, next)
	s.lastApplied.Store(next - 1)
	s.wakeConfirm()
}

// wakeConfirm tells confirmLoop that lastApplied advanced.
func (s *Subscriber) wakeConfirm() {
	select {
	case s.progress <- struct{}{}:
	default:
	}
}

// confirmation is a stream last sequence and the time it was asked for: once it is applied,
// everything published before that time is.
type confirmation struct {
	seq   uint64
	asked time.Time
	conn  uint64 // the connection's reconnect count when asked
}

// confirmLoop advances CaughtUpAt until ctx ends: once the first consumer exists, every
// ConfirmEvery and after each reconnect it asks the stream for its last sequence and confirms
// the time it asked as soon as LastApplied reaches that sequence.
func (s *Subscriber) confirmLoop(ctx context.Context) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return
	}
	reconnected := s.conn.StatusChanged(nats.CONNECTED)
	defer s.conn.RemoveStatusListener(reconnected)
	tick := time.NewTicker(s.cfg.ConfirmEvery)
	defer tick.Stop()
	var want *confirmation // asked for and not yet applied
	first := true
	settle := func() {
		if want == nil || s.LastApplied() < want.seq {
			return
		}
		if at := want.asked.UnixNano(); at > s.caughtUpAt.Load() {
			s.caughtUpAt.Store(at)
		}
		s.confirmedOn.Store(want.conn)
		if first {
			close(s.confirmed)
			first = false
		}
		want = nil
	}
	ask := true
	for {
		settle()
		// A pending sequence that stays out of reach (the stream was recreated, say) is
		// replaced by a fresh one after a few rounds.
		if ask || (want != nil && s.cfg.Clock().Sub(want.asked) > 3*s.cfg.ConfirmEvery) {
			if c, err := s.askLastSeq(ctx); err != nil {
				s.log.Debug("confirm purge stream position", "err", err)
			} else {
				want = &c
			}
			settle()
		}
		ask = false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			ask = want == nil
		case <-reconnected:
			want, ask = nil, true
		case <-s.progress:
		}
	}
}

// askLastSeq asks the stream for its last sequence.
func (s *Subscriber) askLastSeq(ctx context.Context) (confirmation, error) {
	c := confirmation{asked: s.cfg.Clock(), conn: s.conn.Stats().Reconnects}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ConfirmEvery)
	defer cancel()
	stream, err := s.cfg.JS.Stream(actx, s.stream)
	if err != nil {
		return c, fmt.Errorf("look up stream %s: %w", s.stream, err)
	}
	c.seq = stream.CachedInfo().State.LastSeq
	return c, nil
}

// apply calls Apply until it succeeds; it fails only when ctx ends.
func (s *Subscriber) apply(ctx context.Context, m Message) (int, error) {
	var retry *backoff.ExponentialBackOff // made at the first failure: the usual path needs none
	for attempt := 1; ; attempt++ {
		hits, err := s.cfg.Apply(ctx, m)
		if err == nil {
			return hits, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("apply purge %s: %w", m.ID, ctx.Err())
		}
		if retry == nil {
			retry = fleet.Backoff(s.cfg.RetryMin, s.cfg.RetryMax)
		}
		s.log.Error("apply purge failed; retrying", "id", m.ID, "seq", m.Seq, "attempt", attempt, "err", err)
		if !fleet.Wait(ctx, retry) {
			return 0, fmt.Errorf("apply purge %s: %w", m.ID, ctx.Err())
		}
	}
}
