package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// consumerSweepEvery is how often control lists the consumers of the fleet's streams to
// delete the push consumers that deliver outside the fleet's inboxes.
const consumerSweepEvery = time.Minute

// consumerAdvisory is the subject prefix of the advisory the server sends when a consumer is
// created ("<prefix>.<stream>.<consumer>"; nats-server's JSAdvisoryConsumerCreatedPre).
const consumerAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.CREATED"

// consumerSweeper deletes push consumers on the fleet's streams whose deliver subject is not
// where a fleet process receives its own consumer's deliveries. NATS checks neither a push
// consumer's deliver subject against its maker's permissions nor anything in a consumer
// create request but its subject, and an edge or DNS credential must create consumers (a KV
// watch is an ordered push consumer). Such a consumer aimed at the live purge subject or an
// ack subject would send every node its idle heartbeats and deliveries for as long as nodes
// listen, long after its maker's credential is revoked (docs/security.md).
//
// It checks each consumer as its creation is announced, and lists every consumer of the
// streams at start and every interval: an update that changes an existing consumer's deliver
// subject announces nothing, and advisories are not stored, so one missed while control was
// away or busy is found by the next sweep.
type consumerSweeper struct {
	js      jetstream.JetStream
	nc      *nats.Conn
	streams []string
	every   time.Duration
	deleted prometheus.Counter // hostile consumers deleted
	logDel  *fleet.RateLog     // a deletion: a hostile peer can cause one at will
	logFail *fleet.RateLog     // a failed check, list or delete
	logDrop *fleet.RateLog     // announcements dropped from a full queue

	// advisories queues the subjects of the creation advisories for run to check; set by
	// subscribe, read by run.
	advisories chan string
	subs       []*nats.Subscription

	sweeps atomic.Uint64 // sweeps completed, for tests

	// usage, when set, takes each stream's size and consumer count as a sweep looks it up.
	usage *streamUsage
}

// streamUsage is what each of the fleet's streams holds against its bounds, as of the last
// sweep: an operator alerts on a bucket near full (the latency bucket fills on a busy fleet,
// docs/security.md) or a stream near its consumer bound without reaching the NATS monitoring
// port.
type streamUsage struct {
	bytes, maxBytes, consumers, maxConsumers *prometheus.GaugeVec
}

func newStreamUsage() *streamUsage {
	vec := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"stream"})
	}
	return &streamUsage{
		bytes:        vec("meridian_control_stream_bytes", "Bytes each of the fleet's JetStream streams holds, as of control's last consumer sweep (every minute)."),
		maxBytes:     vec("meridian_control_stream_max_bytes", "Each of the fleet's streams' byte bound (0: none)."),
		consumers:    vec("meridian_control_stream_consumers", "Consumers of each of the fleet's streams, as of control's last consumer sweep."),
		maxConsumers: vec("meridian_control_stream_max_consumers", "Each of the fleet's streams' consumer bound (0: none)."),
	}
}

func (u *streamUsage) collectors() []prometheus.Collector {
	return []prometheus.Collector{u.bytes, u.maxBytes, u.consumers, u.maxConsumers}
}

// observe records info of stream name.
func (u *streamUsage) observe(name string, info *jetstream.StreamInfo) {
	u.bytes.WithLabelValues(name).Set(float64(info.State.Bytes))
	u.maxBytes.WithLabelValues(name).Set(float64(max(info.Config.MaxBytes, 0)))
	u.consumers.WithLabelValues(name).Set(float64(info.State.Consumers))
	u.maxConsumers.WithLabelValues(name).Set(float64(max(info.Config.MaxConsumers, 0)))
}

// forget drops the series of stream name, which no longer exists: its last values would say
// it is still there, as full as it was. A zero would too (an empty stream without bounds),
// and the alerts' "max > 0" would leave it out without a word; with no series, `absent()`
// says it is gone (docs/operations.md, "Monitor").
func (u *streamUsage) forget(name string) {
	for _, v := range []*prometheus.GaugeVec{u.bytes, u.maxBytes, u.consumers, u.maxConsumers} {
		v.DeleteLabelValues(name)
	}
}

// fleetStreams are the streams a fleet credential may create consumers on (natsauth's
// permissions): the purge stream and the KV buckets' streams, for prefix.
func fleetStreams(prefix string) []string {
	return []string{
		purge.StreamName(prefix),
		"KV_" + wire.Bucket(prefix, wire.FleetBucket),
		"KV_" + wire.Bucket(prefix, wire.ConfigBucket),
		"KV_" + wire.Bucket(prefix, wire.PeerKeyBucket),
		"KV_" + wire.Bucket(prefix, wire.LatencyBucket),
	}
}

func newConsumerSweeper(js jetstream.JetStream, prefix string, every time.Duration, deleted prometheus.Counter, log *slog.Logger) *consumerSweeper {
	if every <= 0 {
		every = consumerSweepEvery
	}
	return &consumerSweeper{
		js:      js,
		nc:      js.Conn(),
		streams: fleetStreams(prefix),
		every:   every,
		deleted: deleted,
		logDel:  fleet.NewRateLog(log, "deleted a push consumer delivering outside the fleet's inboxes (docs/security.md)", 0),
		logFail: fleet.NewRateLog(log, "checking the consumers of the fleet's streams failed", 0),
		logDrop: fleet.NewRateLog(log, "consumers were created faster than control checks them; the next sweep checks the rest", 0),
	}
}

// inboxDeliverSubject reports whether a push consumer's deliver subject is one a fleet
// process makes for its own consumer, where nothing but that consumer's subscription
// listens. nats.go delivers a watch to a new inbox: the connection's inbox prefix and one
// random token (nats.Conn.NewInbox); each identity may receive only under its own prefix
// (natsauth.Identity.InboxPrefix), and control's is "_INBOX", as is that of every client of
// a NATS without credentials. A subject with more tokens could reach another listener of
// the inbox's owner (nats.go's request multiplexer listens on "<inbox>.<token>.*"), and any
// other subject a listener elsewhere (the live purge subject, the ack subjects). The
// server's own deliver subjects for a mirror or a source of the stream ($JS.M.<token>,
// $JS.S.<token>) pass too: only that server listens there.
func inboxDeliverSubject(subj string) bool {
	rest, ok := strings.CutPrefix(subj, "_INBOX.")
	if !ok {
		for _, p := range []string{"$JS.M.", "$JS.S."} {
			if id, ok := strings.CutPrefix(subj, p); ok {
				return singleToken(id)
			}
		}
		return false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return singleToken(rest) // control's, or any client's without a credential
	}
	owner, last := rest[:i], rest[i+1:]
	id, err := natsauth.ParseIdentity(owner)
	if err != nil || (id.Role != natsauth.RoleEdge && id.Role != natsauth.RoleDNS) {
		// Leaf links only relay their edges' consumers, which deliver to the edges' inboxes.
		return false
	}
	return singleToken(last)
}

// singleToken reports whether s is one non-empty subject token.
func singleToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ". \t\r\n*>")
}

// advisoryQueue is how many announced consumers wait to be checked at most.
const advisoryQueue = 256

// subscribe starts receiving the creation advisories of the fleet's streams, for run to
// check. Serve calls it before the control plane is ready, so that no consumer created once
// it is goes unchecked until the next sweep.
func (w *consumerSweeper) subscribe() {
	w.advisories = make(chan string, advisoryQueue)
	for _, st := range w.streams {
		sub, err := w.nc.Subscribe(consumerAdvisory+"."+st+".*", w.enqueue)
		if err != nil {
			// Only a closed connection refuses: the sweeps still run.
			w.logFail.Warn("err", fmt.Errorf("subscribe to consumer advisories of %s: %w", st, err))
			continue
		}
		w.subs = append(w.subs, sub)
	}
	if err := w.nc.Flush(); err != nil {
		w.logFail.Warn("err", fmt.Errorf("subscribe to consumer advisories: %w", err))
	}
}

// enqueue queues an advisory for run, or drops it when the queue is full. Advisories come in
// faster than they are checked only when consumers are created in bulk (every watch of the
// fleet made again after a NATS restart, or a peer making them at will); the next sweep finds
// whatever was dropped. Dropped here, not by nats.go as a slow consumer (a channel
// subscription): it reports each burst to the connection's error handler, unthrottled (on
// stderr by default), which while the queue stays full is nearly a line per consumer made.
func (w *consumerSweeper) enqueue(m *nats.Msg) {
	select {
	case w.advisories <- m.Subject:
	default:
		w.logDrop.Warn("queue", cap(w.advisories))
	}
}

// run sweeps at once and every interval, and checks each consumer whose creation is
// announced, until ctx ends; then it unsubscribes and writes the warnings it held back.
func (w *consumerSweeper) run(ctx context.Context) {
	defer func() {
		for _, sub := range w.subs {
			_ = sub.Unsubscribe()
		}
		// What is held back is written now, and no timer of theirs outlives run.
		w.logDel.Stop()
		w.logFail.Stop()
		w.logDrop.Stop()
	}()
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	w.sweep(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.sweep(ctx)
		case subj := <-w.advisories:
			// "$JS.EVENT.ADVISORY.CONSUMER.CREATED.<stream>.<consumer>"
			t := strings.Split(subj, ".")
			if len(t) != 7 {
				continue
			}
			w.check(ctx, t[5], t[6])
		}
	}
}

// sweep lists the consumers of every fleet stream and deletes the hostile ones.
func (w *consumerSweeper) sweep(ctx context.Context) {
	for _, st := range w.streams {
		if ctx.Err() != nil {
			return
		}
		if err := w.sweepStream(ctx, st); err != nil && ctx.Err() == nil {
			w.logFail.Warn("stream", st, "err", err)
		}
	}
	w.sweeps.Add(1)
}

func (w *consumerSweeper) sweepStream(ctx context.Context, name string) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := w.js.Stream(rctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Deleted by hand: control makes it again only at its next start.
		if w.usage != nil {
			w.usage.forget(name)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", name, err)
	}
	if w.usage != nil {
		w.usage.observe(name, st.CachedInfo())
	}
	// Listed first, deleted after: deleting while the list pages by offset would skip some.
	var hostile []*jetstream.ConsumerInfo
	l := st.ListConsumers(rctx)
	for ci := range l.Info() { // read to the end: the lister's goroutine ends when it has sent all
		if ci.Config.DeliverSubject != "" && !inboxDeliverSubject(ci.Config.DeliverSubject) {
			hostile = append(hostile, ci)
		}
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("list consumers of stream %s: %w", name, err)
	}
	for _, ci := range hostile {
		if err := w.delete(rctx, name, ci.Name, ci.Config.DeliverSubject); err != nil && ctx.Err() == nil {
			w.logFail.Warn("stream", name, "err", err)
		}
	}
	return nil
}

// check looks up one consumer whose creation was announced and deletes it if it is hostile.
func (w *consumerSweeper) check(ctx context.Context, stream, name string) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := w.js.PushConsumer(rctx, stream, name)
	switch {
	case errors.Is(err, jetstream.ErrNotPushConsumer), errors.Is(err, jetstream.ErrConsumerNotFound):
		return // a pull consumer, or one already gone (an ordered consumer is short-lived)
	case err != nil:
		if ctx.Err() == nil {
			w.logFail.Warn("stream", stream, "consumer", name, "err", fmt.Errorf("look up consumer: %w", err))
		}
		return
	}
	if d := c.CachedInfo().Config.DeliverSubject; !inboxDeliverSubject(d) {
		if err := w.delete(rctx, stream, name, d); err != nil && ctx.Err() == nil {
			w.logFail.Warn("stream", stream, "err", err)
		}
	}
}

func (w *consumerSweeper) delete(ctx context.Context, stream, name, deliver string) error {
	err := w.js.DeleteConsumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // gone meanwhile: deleted by its maker, or by another control
	}
	if err != nil {
		return fmt.Errorf("delete consumer %s of stream %s delivering to %q: %w", name, stream, deliver, err)
	}
	w.deleted.Inc()
	w.logDel.Warn("stream", stream, "consumer", name, "deliver_subject", deliver)
	return nil
}
