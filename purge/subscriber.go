package purge

import (
	"bytes"
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
	// OnJoin, if not nil, is called once on Run's goroutine when the subscriber has joined the
	// stream at sequence seq (its end then), before Ready and before anything is applied. From
	// its return every purge up to seq must be in effect on the node: the edge marks stale
	// whatever it stored before. nil means the node holds nothing yet (a new node's cache is
	// empty). The subscriber then acks everything up to seq with one join ack (Ack.Through):
	// a node restarted under the same id owes the receipts of the purges published while it
	// was down, which its new process never applies.
	OnJoin func(ctx context.Context, seq uint64)
	// Logger receives retries, gaps and lost acks; nil means discard.
	Logger *slog.Logger
	// Clock stamps AppliedAt in acks; nil means time.Now.
	Clock func() time.Time
	// RetryMin is the first delay after a failed Apply or a lost consumer; it doubles up to
	// RetryMax, each delay ±20 % (fleet.Backoff). Zero means 50 ms and 5 s.
	RetryMin, RetryMax time.Duration
	// ConfirmEvery is how often the subscriber asks the stream for its last sequence to confirm
	// that it has applied everything published (see CaughtUpAt); it also asks at once after a
	// reconnect. Messages on the live subject that are not announcements make it ask the
	// stream at most this often too. Zero means 1 s.
	ConfirmEvery time.Duration
	// AckHold, if not nil, is how long an ack queued now (a purge's, the join ack, an answer
	// to the tracker's question) is held before it is sent; 0 sends it as usual. Called on
	// Run's goroutine as each ack is queued. An ack stands for every process under the node's
	// id: the edge holds its acks for purge.max_lag while another process of the node may
	// still serve its own cache (a restart's overlap), which by then has either applied the
	// purge or counts as lagging (docs/purge.md, "Restart overlap").
	AckHold func() time.Duration
}

// Subscriber is the node side of purges: it applies each purge once, in stream order, from
// where the node joined, and acks it on AckSubject. While it is caught up it takes purges from
// the core NATS LiveSubject, on which control announces each one with its stream sequence once
// the stream stored it; a sequence gap, a reconnect, or a stream position it does not reach in
// time makes it replay the missing range from the PURGE stream, which stays the guarantee.
type Subscriber struct {
	cfg    SubscriberConfig
	conn   *nats.Conn
	stream string
	ackSub string
	live   string
	log    *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	// confirmed is closed at the first confirmation (CaughtUpAt); confirmLoop only.
	confirmed chan struct{}
	running   atomic.Bool
	// lastApplied is the stream sequence of the last purge applied (or given up on through
	// OnGap); it is written only by Run's goroutine.
	lastApplied atomic.Uint64
	// created is when the stream that lastApplied counts in was created (Unix nanoseconds):
	// a stream deleted and created again restarts its sequences, and once it has grown past
	// lastApplied only this tells (OnGap then). Written by Run's goroutine, read by confirmLoop.
	created atomic.Int64
	// ackBuf holds the acks encoded and not sent yet, one per line, ackN of them; Run's
	// goroutine only.
	ackBuf []byte
	ackN   int
	ackAt  time.Time // when the oldest queued ack was queued (a replay bounds its wait)
	// held are the acks AckHold holds back, in the order queued (their due times never fall);
	// Run's goroutine only.
	held []heldAck
	// unconfirmed holds the ack messages sent and not yet known to have reached the server,
	// oldest first, unconfirmedBytes of them, and spare the buffers of confirmed ones; Run's
	// goroutine only. A connection cut loses what it was carrying, and a publish while
	// disconnected can fail: these are sent again after a reconnect (resendAcks).
	unconfirmed      []ackBatch
	unconfirmedBytes int
	unconfirmedAcks  atomic.Int64 // the acks in unconfirmed (UnconfirmedAcks)
	spare            [][]byte
	dropping         bool // unconfirmed acks are being dropped for the bound (logged once)
	// sameConn is whether the acks go on the connection confirmLoop asks the stream over:
	// only then does an answer show that the acks sent before the question arrived.
	sameConn bool
	// acksSent counts ack messages sent (Run's goroutine writes it); delivered is the last
	// mark confirmLoop confirmed: every ack message up to it, sent on that connection, reached
	// the server.
	acksSent  atomic.Uint64
	delivered atomic.Pointer[ackMark]
	// mustResend is the last ack message that must be sent again before any confirmation
	// lets it go (0: none): set with resend, when the stream answers after questions that
	// failed, so that a confirmation that comes before Run resent them cannot drop them.
	mustResend atomic.Uint64

	// caughtUpAt (Unix nanoseconds, 0 for never) is the last confirmed time before which every
	// purge published has been applied; confirmedOn is the connection's reconnect count when
	// that confirmation was asked for. Both are written only by confirmLoop.
	caughtUpAt  atomic.Int64
	confirmedOn atomic.Uint64
	// progress wakes confirmLoop when lastApplied reached awaiting, the sequence confirmLoop
	// waits for (0: none), so that a purge applied while nothing is awaited wakes no one
	// (capacity 1, never closed).
	progress chan struct{}
	awaiting atomic.Uint64
	// gapEnd is the last sequence given up on through OnGap (0: none since the join): the
	// purges up to it were not applied here, whatever LastApplied says; Run's goroutine only.
	gapEnd uint64
	// recreated: the stream was deleted and created again since the join (Run's goroutine
	// only). The purges lost with the old one were not applied here, and their receipts keep
	// their old sequences, which the new stream's count past: the node answers no question
	// any more (handleLive), as no After in the new stream's sequences can leave them out.
	recreated bool
	// replays counts replays from the stream that had something to replay.
	replays atomic.Uint64
	// dropped counts the messages on the live subject that were not announcements (Dropped);
	// foreign and unreadable log them, rate limited: anyone who may make a JetStream request
	// can have its answer, or a consumer's deliveries, sent to the live subject.
	dropped             atomic.Uint64
	foreign, unreadable *fleet.RateLog
	// replay asks Run's goroutine to replay from the stream up to a sequence (0: whatever the
	// stream holds, unconditionally); capacity 1, sent without blocking by confirmLoop.
	replay chan uint64
	// resend asks Run's goroutine to send the unconfirmed acks again (capacity 1): the stream
	// answered again after questions that failed, so the path to the server was cut somewhere
	// this connection does not see (a leaf node's link, a route), and what it carried is lost.
	resend chan struct{}
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
	log = log.With("pop", cfg.PoP, "node", cfg.Node)
	return &Subscriber{
		cfg:        cfg,
		conn:       conn,
		stream:     StreamName(cfg.Prefix),
		ackSub:     AckSubject(cfg.Prefix, cfg.PoP, cfg.Node),
		live:       LiveSubject(cfg.Prefix),
		log:        log,
		foreign:    fleet.NewRateLog(log, "dropping a live purge delivered from another subject", 0),
		unreadable: fleet.NewRateLog(log, "dropping an unreadable live purge", 0),
		ready:      make(chan struct{}),
		confirmed:  make(chan struct{}),
		progress:   make(chan struct{}, 1),
		replay:     make(chan uint64, 1),
		resend:     make(chan struct{}, 1),
		sameConn:   cfg.JS.Conn() == conn,
	}, nil
}

// Ready is closed once the subscriber listens for purges and knows the stream's position: from
// then on no purge published can be missed.
// The edge waits for it before serving.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Replays is how many times the subscriber replayed purges from the stream because it missed
// their live announcements (a reconnect, a lost or late announcement).
func (s *Subscriber) Replays() uint64 { return s.replays.Load() }

// Dropped is how many messages came on the live subject that were not control's
// announcements: another subject's deliveries, JetStream answers and status messages aimed
// there by someone allowed to make JetStream requests (docs/security.md).
func (s *Subscriber) Dropped() uint64 { return s.dropped.Load() }

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

// liveBuffer is how many announcements may wait for Run's goroutine; beyond it NATS drops them
// (a slow consumer) and the gap makes the subscriber replay them from the stream.
const liveBuffer = 8192

// replayTimeout bounds one replay from the stream; a replay that times out is tried again.
const replayTimeout = 10 * time.Second

// Run applies purges until ctx ends, then returns nil once everything it started has stopped.
// It starts after the stream's last sequence (a new node's cache is empty), takes purges from
// the live subject while it is caught up, and replays from the stream at LastApplied()+1
// whenever it may have missed one.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("purge subscriber: Run called twice")
	}
	// Last, once nothing on the live subject reaches handleLive: what they hold back is
	// written now, and no timer of theirs outlives Run.
	defer s.unreadable.Stop()
	defer s.foreign.Stop()
	reconnected := s.conn.StatusChanged(nats.CONNECTED)
	defer s.conn.RemoveStatusListener(reconnected)
	retry := fleet.Backoff(s.cfg.RetryMin, s.cfg.RetryMax)
	// Subscribe before reading the stream's position: a purge stored after that read is
	// announced to this subscription.
	live := make(chan *nats.Msg, liveBuffer)
	var sub *nats.Subscription
	for {
		var err error
		if sub, err = s.conn.ChanSubscribe(s.live, live); err == nil {
			break
		}
		s.log.Warn("subscribe to live purges; retrying", "err", err)
		if !fleet.Wait(ctx, retry) {
			return nil
		}
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		err := s.join(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("read purge stream position; retrying", "err", err)
		if !fleet.Wait(ctx, retry) {
			return nil
		}
	}
	retry.Reset()
	s.joined(ctx)

	cctx, stopConfirm := context.WithCancel(ctx)
	var confirmer sync.WaitGroup
	confirmer.Go(func() { s.confirmLoop(cctx) })
	defer func() {
		stopConfirm()
		confirmer.Wait()
	}()
	s.readyOnce.Do(func() { close(s.ready) })

	needReplay := false
	// Fires when the first held ack is due (AckHold); armed only while one is held.
	holdTimer := time.NewTimer(time.Hour)
	holdTimer.Stop()
	defer holdTimer.Stop()
	// A message on the live subject that is not an announcement makes the node ask the stream
	// where it stands, but at most once per ConfirmEvery: anyone who may make a JetStream
	// request can have the answer sent to the live subject, and must not make every node read
	// the stream once per answer. One dropped within ConfirmEvery of the last read costs
	// nothing: confirmLoop asks the stream that often anyway, and replays a purge it finds
	// missing, announced garbled or not at all.
	var readAt time.Time // when the node last read the stream for a replay
	onLive := func(m *nats.Msg) {
		switch s.handleLive(ctx, m) {
		case liveReplay:
			needReplay = true
		case liveSuspect:
			needReplay = needReplay || time.Since(readAt) >= s.cfg.ConfirmEvery
		}
	}
	for {
		// Under load the acks of the purges already waiting go out together, in one message.
		if s.ackN > 0 && (len(live) == 0 || s.ackN >= maxAckBatch) {
			s.flushAcks()
		}
		if needReplay {
			readAt = time.Now()
			if err := s.replayStream(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.log.Warn("replay purges from the stream; retrying", "last_applied", s.LastApplied(), "err", err)
				if !fleet.Wait(ctx, retry) {
					return nil
				}
				continue
			}
			needReplay = false
			retry.Reset()
		}
		var heldDue <-chan time.Time
		if len(s.held) > 0 {
			holdTimer.Reset(time.Until(s.held[0].due))
			heldDue = holdTimer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case m := <-live:
			onLive(m)
		case now := <-heldDue:
			s.releaseHeld(now)
		case <-reconnected:
			// Announcements made while disconnected are lost, and so may be acks.
			s.resendAcks()
			needReplay = true
		case <-s.resend:
			s.resendAcks()
		case upTo := <-s.replay:
			// Announcements already here may be all that is missing.
			for upTo != 0 && s.LastApplied() < upTo && len(live) > 0 && !needReplay {
				onLive(<-live)
			}
			needReplay = needReplay || upTo == 0 || s.LastApplied() < upTo
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// join reads the stream's last sequence: a new node's cache is empty, so older purges do not
// concern it. Resolving "new purges" to an explicit sequence is what makes gaps detectable.
func (s *Subscriber) join(ctx context.Context) error {
	jctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	stream, err := s.cfg.JS.Stream(jctx, s.stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", s.stream, err)
	}
	info := stream.CachedInfo()
	s.lastApplied.Store(info.State.LastSeq)
	s.created.Store(info.Created.UnixNano())
	return nil
}

// joined calls OnJoin and queues the join ack: every purge up to the join's sequence is in
// effect on this node, none of them applied by this process. It goes out, and again after a
// cut, as the other acks do. A stream without purges needs none.
func (s *Subscriber) joined(ctx context.Context) {
	seq := s.LastApplied()
	if s.cfg.OnJoin != nil {
		s.cfg.OnJoin(ctx, seq)
	}
	if seq == 0 {
		return
	}
	s.queueAck(Ack{PoP: s.cfg.PoP, Node: s.cfg.Node, AppliedAt: s.cfg.Clock(), Through: seq})
	s.flushAcks()
}

// liveOutcome is what a message on the live subject asks of Run.
type liveOutcome int

const (
	liveDone    liveOutcome = iota // applied, or nothing to do
	liveReplay                     // replay from the stream now: a purge before it was missed
	liveSuspect                    // not an announcement: ask the stream (at most once per ConfirmEvery)
)

// handleLive applies one announcement if it is the next purge, and says what Run must do
// besides.
func (s *Subscriber) handleLive(ctx context.Context, msg *nats.Msg) liveOutcome {
	// Only control may publish on the live subject, but a consumer that any reader of a bucket
	// creates may deliver there what it reads (another node's own registry key, say): NATS does
	// not check a deliver subject. Such a delivery keeps the subject it has in its stream.
	if msg.Subject != s.live {
		s.dropped.Add(1)
		s.foreign.Warn("subject", msg.Subject)
		return liveDone
	}
	if names, ok := bytes.CutPrefix(msg.Data, []byte(askPrefix)); ok {
		// The tracker's question: an ack may have been lost beyond what this node can see (a
		// leaf link cut shorter than a confirmation round, control's own connection cut).
		// The answer covers what was applied since the last gap only: a purge skipped in a gap
		// (an undecodable one, say) is below LastApplied and not in effect.
		// After a recreated stream it answers nothing (recreated).
		if last := s.LastApplied(); last > s.gapEnd && !s.recreated && asks(names, s.cfg.PoP, s.cfg.Node) {
			s.queueAck(Ack{PoP: s.cfg.PoP, Node: s.cfg.Node, AppliedAt: s.cfg.Clock(), Through: last, Asked: true,
				After: s.gapEnd})
		}
		return liveDone
	}
	seq, data, err := splitLive(msg.Data)
	if err != nil {
		// Not control's (a JetStream answer or status message aimed here: NATS checks a
		// request's subject, not its reply), or an announcement garbled: the stream decides.
		s.dropped.Add(1)
		s.unreadable.Warn("err", err)
		return liveSuspect
	}
	last := s.LastApplied()
	switch {
	case seq <= last:
		return liveDone // applied already, from the stream
	case seq > last+1:
		return liveReplay
	}
	m, err := decodeOwnedMessage(data) // msg.Data is this message's own
	if err != nil {
		return liveReplay
	}
	m.Seq = seq
	if s.applyAndAck(ctx, m) != nil {
		return liveReplay
	}
	return liveDone
}

// ReplayInactiveThreshold is how long the server keeps a replay's consumer after its last
// use, unless the stream's consumer limit is shorter.
const ReplayInactiveThreshold = 30 * time.Second

// replayStream applies, from the stream, everything after LastApplied() up to the stream's last
// sequence, reporting purges that cannot be replayed to OnGap first.
func (s *Subscriber) replayStream(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	stream, err := s.cfg.JS.Stream(rctx, s.stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", s.stream, err)
	}
	info := stream.CachedInfo()
	state := info.State
	last := s.LastApplied()
	first := state.FirstSeq
	if first == 0 { // an empty, never used stream reports 0
		first = state.LastSeq + 1
	}
	switch {
	case state.LastSeq < last || info.Created.UnixNano() != s.created.Load():
		// The stream was recreated: sequences restarted, so what we applied tells nothing,
		// and whatever it lost is lost. Everything it holds is replayed.
		s.gap(ctx, last, first)
		s.created.Store(info.Created.UnixNano())
		s.recreated = true
	case first > last+1:
		s.gap(ctx, last, first)
	}
	target := state.LastSeq
	if s.LastApplied() >= target {
		return nil
	}
	s.replays.Add(1)
	// Replays are short: the server forgets the consumer soon after it stopped, at once if
	// the stream's limit is shorter (the server refuses a consumer asking more than it).
	inactive := ReplayInactiveThreshold
	if l := info.Config.ConsumerLimits.InactiveThreshold; l > 0 && l < inactive {
		inactive = l
	}
	cons, err := s.cfg.JS.OrderedConsumer(rctx, s.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   s.LastApplied() + 1,
		// Give up after a few internal resets; the next replay re-checks the stream for gaps.
		MaxResetAttempts:  3,
		InactiveThreshold: inactive,
	})
	if err != nil {
		return fmt.Errorf("create consumer on %s at %d: %w", s.stream, s.LastApplied()+1, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("start consuming %s: %w", s.stream, err)
	}
	// Next can block inside the library's consumer reset, which only Stop interrupts.
	stop := context.AfterFunc(rctx, it.Stop)
	defer func() {
		if stop() {
			it.Stop()
		}
	}()
	defer s.flushAcks()
	for s.LastApplied() < target {
		msg, err := s.nextReplayed(rctx, it)
		if err != nil {
			return fmt.Errorf("next purge from %s: %w", s.stream, err)
		}
		if err := s.handle(ctx, msg); err != nil {
			return err
		}
		s.releaseDue() // Run's loop cannot while the replay lasts
		// The next purges of a replay are usually here already (the consumer fetches ahead),
		// so the batch also ends when its oldest ack has waited replayAckWait.
		if s.ackN >= maxAckBatch || time.Since(s.ackAt) >= replayAckWait {
			s.flushAcks()
		}
	}
	return nil
}

// replayAckWait is how long a replay holds an ack for more to join it: the purges of a
// replay come in batches, and their acks go out in batches too (a node back from a partition
// sent one message per purge it had missed), but a slow apply must not hold the first acks.
const replayAckWait = 2 * time.Millisecond

// nextReplayed returns the next purge of a replay; acks still queued go out first unless the
// next purge is already there.
func (s *Subscriber) nextReplayed(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	if s.ackN > 0 {
		msg, err := it.Next(jetstream.NextMaxWait(replayAckWait))
		if !errors.Is(err, nats.ErrTimeout) {
			return msg, err
		}
		s.flushAcks()
	}
	return it.Next(jetstream.NextContext(ctx))
}

// handle applies one message replayed from the stream in order, then acks it.
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
	m, err := decodeOwnedMessage(msg.Data()) // the message's own, as on the live path
	if err != nil {
		// What it would have purged is unknown: the same as having lost it.
		s.log.Error("undecodable purge in stream; treating it as lost", "seq", seq, "err", err)
		s.gap(ctx, seq-1, seq+1)
		return nil
	}
	m.Seq = seq
	return s.applyAndAck(ctx, m)
}

// maxAckBatch bounds how many acks go out in one message.
const maxAckBatch = 64

// applyAndAck applies m (the purge after LastApplied) and queues its ack for flushAcks; it fails
// only when ctx ends.
func (s *Subscriber) applyAndAck(ctx context.Context, m Message) error {
	hits, err := s.apply(ctx, m)
	if err != nil {
		return err
	}
	s.lastApplied.Store(m.Seq)
	s.wakeConfirm()
	s.queueAck(Ack{ID: m.ID, Seq: m.Seq, PoP: s.cfg.PoP, Node: s.cfg.Node, AppliedAt: s.cfg.Clock(), Hits: hits})
	return nil
}

// heldAck is one encoded ack that AckHold holds back until due.
type heldAck struct {
	data []byte
	due  time.Time
}

// queueAck adds a to the acks flushAcks sends, or, if AckHold says so, to those held back.
func (s *Subscriber) queueAck(a Ack) {
	if s.cfg.AckHold != nil {
		if d := s.cfg.AckHold(); d > 0 {
			data, err := appendAck(nil, a)
			if err != nil {
				s.log.Warn("encode purge ack", "id", a.ID, "seq", a.Seq, "through", a.Through, "err", err)
				return
			}
			due := time.Now().Add(d)
			if n := len(s.held); n > 0 && due.Before(s.held[n-1].due) {
				due = s.held[n-1].due
			}
			s.held = append(s.held, heldAck{data: data, due: due})
			return
		}
	}
	buf := s.ackBuf
	if s.ackN > 0 {
		buf = append(buf, '\n')
	}
	data, err := appendAck(buf, a)
	if err != nil {
		// The purge is applied; only the receipt is lost, and the tracker reports the node pending.
		s.log.Warn("encode purge ack", "id", a.ID, "seq", a.Seq, "through", a.Through, "err", err)
		return
	}
	s.ackBuf = data
	if s.ackN == 0 {
		s.ackAt = time.Now()
	}
	s.ackN++
}

// releaseHeld queues the held acks due by now, sending them maxAckBatch to a message: many
// come due at once after a loop busy in a replay (a purge storm held for max_lag is thousands,
// beyond NATS's max_payload in one message).
func (s *Subscriber) releaseHeld(now time.Time) {
	i := 0
	for ; i < len(s.held) && !s.held[i].due.After(now); i++ {
		if s.ackN > 0 {
			s.ackBuf = append(s.ackBuf, '\n')
		} else {
			s.ackAt = now
		}
		s.ackBuf = append(s.ackBuf, s.held[i].data...)
		s.ackN++
		s.held[i].data = nil // for the collector: the slice's array outlives the ack
		if s.ackN >= maxAckBatch {
			s.flushAcks()
		}
	}
	// Resliced, not copied down: a storm holds tens of thousands, released a few at a time,
	// and append moves the rest to a new array when it needs room.
	s.held = s.held[i:]
	if len(s.held) == 0 {
		s.held = nil
	}
}

// releaseDue queues the held acks due by now, if any, where Run's loop cannot (a replay, an
// Apply retried): the purges they are of are applied.
func (s *Subscriber) releaseDue() {
	if len(s.held) > 0 {
		if now := time.Now(); !s.held[0].due.After(now) {
			s.releaseHeld(now)
		}
	}
}

// flushAcks sends the queued acks in one message, one ack per line (Tracker splits them).
func (s *Subscriber) flushAcks() {
	if s.ackN == 0 {
		return
	}
	s.pruneAcks()
	s.sendAcks(ackBatch{data: s.ackBuf, n: s.ackN})
	s.ackBuf, s.ackN = nil, 0
	if n := len(s.spare); n > 0 {
		s.ackBuf, s.spare = s.spare[n-1][:0], s.spare[:n-1]
	}
}

// An ackBatch is one message of acks, kept until it is known to have reached the server.
type ackBatch struct {
	data  []byte
	n     int    // acks in it
	idx   uint64 // acksSent once it was sent
	epoch uint64 // the connection's reconnect count when it was sent; notSent if it was not
}

// ackMark is a confirmation: the ack messages up to idx sent on connection epoch arrived.
type ackMark struct{ idx, epoch uint64 }

// notSent is the epoch of an ack message whose publish failed: no confirmation covers it.
const notSent = ^uint64(0)

// maxUnconfirmedAckBytes bounds the acks kept for sending again: while confirmations come
// (every ConfirmEvery) they hold a second's acks at most; a node that cannot confirm (its
// acks on another connection than its stream questions) drops the oldest beyond this.
const maxUnconfirmedAckBytes = 1 << 20

// sendAcks publishes b and keeps it until a confirmation covers it.
func (s *Subscriber) sendAcks(b ackBatch) {
	b.epoch = s.conn.Stats().Reconnects // read before the publish: a later epoch only resends
	// Publish copies the acks into the connection's buffer; b.data stays ours.
	if err := s.conn.Publish(s.ackSub, b.data); err != nil {
		// The purges are applied; the receipts go out again after a reconnect.
		s.log.Warn("send purge acks; sending again after a reconnect", "acks", b.n, "err", err)
		b.epoch = notSent
	}
	b.idx = s.acksSent.Add(1)
	s.unconfirmed = append(s.unconfirmed, b)
	s.unconfirmedBytes += len(b.data)
	s.unconfirmedAcks.Add(int64(b.n))
	for s.unconfirmedBytes > maxUnconfirmedAckBytes && len(s.unconfirmed) > 1 {
		if !s.dropping {
			s.dropping = true
			s.log.Debug("purge acks not confirmed by the server; the oldest will not be sent again", "bytes", s.unconfirmedBytes)
		}
		s.unconfirmedBytes -= len(s.unconfirmed[0].data)
		s.unconfirmedAcks.Add(-int64(s.unconfirmed[0].n))
		s.unconfirmed = s.unconfirmed[1:]
	}
}

// UnconfirmedAcks is how many acks the node keeps to send again, not yet confirmed by a stream
// answer: under a second's worth while the path to the stream is whole.
func (s *Subscriber) UnconfirmedAcks() int { return int(s.unconfirmedAcks.Load()) }

// pruneAcks lets go of the ack messages the last confirmation covers.
func (s *Subscriber) pruneAcks() {
	m := s.delivered.Load()
	if m == nil {
		return
	}
	floor := s.mustResend.Load()
	i := 0
	for ; i < len(s.unconfirmed); i++ {
		b := s.unconfirmed[i]
		if b.idx > m.idx || b.epoch != m.epoch || b.idx <= floor {
			break
		}
		s.unconfirmedBytes -= len(b.data)
		s.unconfirmedAcks.Add(-int64(b.n))
		if len(s.spare) < 16 {
			s.spare = append(s.spare, b.data[:0])
		}
	}
	if i > 0 {
		s.dropping = false
		n := copy(s.unconfirmed, s.unconfirmed[i:])
		clear(s.unconfirmed[n:])
		s.unconfirmed = s.unconfirmed[:n]
	}
}

// resendAcks sends again, after a reconnect, every ack message not confirmed: the cut may
// have lost it on the way, or its publish failed. The tracker ignores an ack it has.
func (s *Subscriber) resendAcks() {
	s.pruneAcks()
	floor := s.mustResend.Load()
	defer s.mustResend.CompareAndSwap(floor, 0) // all up to it sent again (a newer one stays)
	old := s.unconfirmed
	if len(old) == 0 {
		return
	}
	s.unconfirmed, s.unconfirmedBytes = nil, 0
	s.unconfirmedAcks.Store(0)
	acks := 0
	for _, b := range old {
		acks += b.n
		s.sendAcks(b)
	}
	s.log.Info("purge acks sent again after a reconnect", "acks", acks)
}

// gap reports lost purges to OnGap and moves past them.
func (s *Subscriber) gap(ctx context.Context, last, next uint64) {
	s.log.Warn("purges lost beyond replay; cache treated as stale", "last_applied", last, "next", next)
	s.cfg.OnGap(ctx, last, next)
	s.gapEnd = next - 1
	s.lastApplied.Store(next - 1)
	s.wakeConfirm()
}

// wakeConfirm tells confirmLoop that lastApplied reached the sequence it waits for. Run stores
// lastApplied before it reads awaiting and confirmLoop stores awaiting before it reads
// lastApplied, so one of them sees the other's write.
func (s *Subscriber) wakeConfirm() {
	if w := s.awaiting.Load(); w == 0 || s.lastApplied.Load() < w {
		return
	}
	select {
	case s.progress <- struct{}{}:
	default:
	}
}

// confirmation is a stream last sequence and the time it was asked for: once it is applied,
// everything published before that time is.
type confirmation struct {
	seq     uint64
	created int64 // the stream's creation time (Subscriber.created)
	asked   time.Time
	conn    uint64 // the connection's reconnect count when asked
	ticks   int    // rounds it has been waited for
}

// confirmLoop advances CaughtUpAt until ctx ends: once the subscriber is ready, every
// ConfirmEvery and after each reconnect it asks the stream for its last sequence and confirms
// the time it asked as soon as LastApplied reaches that sequence. A sequence still not reached
// two rounds later was not announced (or its announcement was lost): it asks Run to replay from
// the stream. So does a stream that went back below what was applied (recreated).
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
	await := func(c *confirmation) {
		want = c
		if c == nil {
			s.awaiting.Store(0)
		} else {
			s.awaiting.Store(max(c.seq, 1)) // 0 means none; settle() below covers a seq of 0
		}
	}
	defer await(nil)
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
		await(nil)
	}
	ask := true
	failed := false // the last question went unanswered: the path to the stream was cut
	for {
		settle()
		// A pending sequence that stays out of reach (the stream was recreated, say) is
		// replaced by a fresh one after a few rounds.
		if ask || (want != nil && want.ticks >= 3) {
			before := s.LastApplied()
			c, err := s.askLastSeq(ctx, !failed)
			if err == nil && failed {
				// Answered again after a cut this connection may not have seen (a leaf
				// node's link to the cluster, a route): acks sent meanwhile may be lost there.
				s.mustResend.Store(s.acksSent.Load())
				select {
				case s.resend <- struct{}{}:
				default:
				}
			}
			failed = err != nil && ctx.Err() == nil
			if err != nil {
				s.log.Debug("confirm purge stream position", "err", err)
			} else if c.seq < before || c.created != s.created.Load() {
				// Below what was applied, or another stream's: the stream was recreated. The
				// replay reports the gap.
				s.requestReplay(0)
				await(nil)
			} else {
				await(&c)
			}
			settle()
		}
		ask = false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			ask = want == nil
			if want != nil {
				// Not reached within a whole round, twice: no announcement is coming (it was
				// lost, or its publisher gave up). Two rounds, not one, so that a node merely
				// busy catching up under load does not replay what is on its way.
				if want.ticks++; want.ticks >= 2 {
					s.requestReplay(want.seq)
				}
			}
		case <-reconnected:
			await(nil)
			ask = true
		case <-s.progress:
		}
	}
}

// requestReplay asks Run to replay from the stream up to seq (0: unconditionally).
func (s *Subscriber) requestReplay(seq uint64) {
	select {
	case s.replay <- seq:
	default:
	}
}

// askLastSeq asks the stream for its last sequence.
// mark says whether the answer may confirm the acks sent before the question (delivered):
// not after questions that failed, when acks sent meanwhile may have been lost beyond the
// server this connection reaches.
func (s *Subscriber) askLastSeq(ctx context.Context, mark bool) (confirmation, error) {
	c := confirmation{asked: s.cfg.Clock(), conn: s.conn.Stats().Reconnects}
	sent := s.acksSent.Load()
	actx, cancel := context.WithTimeout(ctx, s.cfg.ConfirmEvery)
	defer cancel()
	stream, err := s.cfg.JS.Stream(actx, s.stream)
	if err != nil {
		return c, fmt.Errorf("look up stream %s: %w", s.stream, err)
	}
	// The server answered a question sent after those acks on the same connection, with no
	// reconnect between: it read them first.
	if mark && s.sameConn && s.conn.Stats().Reconnects == c.conn {
		s.delivered.Store(&ackMark{idx: sent, epoch: c.conn})
	}
	info := stream.CachedInfo()
	c.seq, c.created = info.State.LastSeq, info.Created.UnixNano()
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
		// The purges before this one are applied: do not hold their acks, nor those held that
		// came due (AckHold), which go out at the next attempt (RetryMax at the latest).
		s.releaseDue()
		s.flushAcks()
		s.log.Error("apply purge failed; retrying", "id", m.ID, "seq", m.Seq, "attempt", attempt, "err", err)
		if !fleet.Wait(ctx, retry) {
			return 0, fmt.Errorf("apply purge %s: %w", m.ID, ctx.Err())
		}
	}
}
