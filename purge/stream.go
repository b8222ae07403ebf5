package purge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// DefaultRetention is how long the PURGE stream keeps purges when EnsureStream is given 0. A node
// cut off for longer than this cannot replay and treats its whole cache as stale instead.
const DefaultRetention = 24 * time.Hour

// maxDuplicateWindow bounds the window in which a re-published purge id is dropped.
const maxDuplicateWindow = 2 * time.Minute

func prefixOrDefault(p string) string {
	if p == "" {
		return wire.DefaultPrefix
	}
	return p
}

// StreamName is the JetStream stream for prefix p: wire.PurgeStream ("PURGE") for the default
// prefix, otherwise the prefix upper-cased with dots as underscores, then "_PURGE"
// ("edge.eu" -> "EDGE_EU_PURGE"), so that fleets sharing one NATS cluster do not collide.
func StreamName(p string) string {
	p = prefixOrDefault(p)
	if p == wire.DefaultPrefix {
		return wire.PurgeStream
	}
	return strings.ToUpper(strings.ReplaceAll(p, ".", "_")) + "_" + wire.PurgeStream
}

// CommandSubjects is the wildcard the stream captures: "<prefix>.purge.cmd.>".
func CommandSubjects(p string) string { return prefixOrDefault(p) + ".purge.cmd.>" }

// CommandSubject is the subject a purge of host is published on:
// "<prefix>.purge.cmd.<host with dots as underscores>".
func CommandSubject(p, host string) string {
	return prefixOrDefault(p) + ".purge.cmd." + strings.ReplaceAll(host, ".", "_")
}

// AckSubject is the core NATS subject on which node node of PoP pop acknowledges purges:
// "<prefix>.purge.ack.<pop>.<node>". It lies outside the stream on purpose: acks are live
// receipts, not something to replay. An ack names its node in its subject so that NATS
// permissions let each node's credential publish only its own acks (see docs/security.md).
func AckSubject(p, pop, node string) string {
	return prefixOrDefault(p) + ".purge.ack." + pop + "." + node
}

// AckSubjects is the wildcard of every node's acks: "<prefix>.purge.ack.>".
func AckSubjects(p string) string { return prefixOrDefault(p) + ".purge.ack.>" }

// EnsureStream creates the PURGE stream for prefix, or updates it to this configuration; calling
// it again is harmless. retention 0 means DefaultRetention; replicas below 1 mean 1. The stream
// keeps messages on file for retention and drops a re-published purge id within the duplicate
// window (two minutes, or retention if shorter).
func EnsureStream(ctx context.Context, js jetstream.JetStream, prefix string, retention time.Duration, replicas int) error {
	if retention <= 0 {
		retention = DefaultRetention
	}
	replicas = max(replicas, 1)
	cfg := jetstream.StreamConfig{
		Name:        StreamName(prefix),
		Description: "Meridian purge commands",
		Subjects:    []string{CommandSubjects(prefix)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      retention,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Duplicates:  min(maxDuplicateWindow, retention),
	}
	// Keep the consumer bounds control set after an earlier start (control's boundConsumers):
	// an update without them would lift them until this start sets them again.
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case err == nil:
		old := st.CachedInfo().Config
		cfg.MaxConsumers, cfg.ConsumerLimits = old.MaxConsumers, old.ConsumerLimits
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("look up stream %s: %w", cfg.Name, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return nil
}

// Publish validates m, normalises its URLs and stores it in the PURGE stream for prefix, with m.ID
// as the message id so that a retried publish is stored once, then announces it on LiveSubject
// for the nodes that are caught up. It returns the stream sequence (for a duplicate, the
// sequence of the copy already stored). Announcements of concurrent calls may reach nodes out of
// order, which makes them replay from the stream; Publisher keeps the stream's order.
func Publish(ctx context.Context, js jetstream.JetStream, prefix string, m Message) (uint64, error) {
	m, err := m.Normalize()
	if err != nil {
		return 0, fmt.Errorf("publish purge: %w", err)
	}
	data, err := storedJSON(m)
	if err != nil {
		return 0, err
	}
	ack, err := js.Publish(ctx, CommandSubject(prefix, m.Host), data,
		jetstream.WithMsgID(m.ID), jetstream.WithExpectStream(StreamName(prefix)))
	if err != nil {
		return 0, fmt.Errorf("publish purge %s: %w", m.ID, err)
	}
	if ack.Sequence == 0 {
		return 0, fmt.Errorf("publish purge %s: %w", m.ID, errors.New("stream returned no sequence"))
	}
	announce(js.Conn(), prefix, ack.Sequence, data)
	return ack.Sequence, nil
}

// storedJSON is a normalised message as the stream stores it (without its sequence).
func storedJSON(m Message) ([]byte, error) {
	m.Seq = 0
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("publish purge %s: %w", m.ID, err)
	}
	return data, nil
}

// Publisher publishes purges for one prefix, registering each with a Tracker first so that no
// ack can arrive before the tracker expects it. The zero Tracker means acks are not tracked.
// Each purge is announced on LiveSubject as soon as the stream acknowledged it, in the order
// the stream stored them (see announcer). A Publisher must not be copied after first use.
type Publisher struct {
	JS jetstream.JetStream
	// Prefix is the subject prefix; empty means wire.DefaultPrefix.
	Prefix string
	// Tracker, if not nil, is told about each purge before it is published.
	Tracker *Tracker

	mu  sync.Mutex // guards ann
	ann *announcer
}

func (p *Publisher) announcer() (*announcer, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ann == nil {
		a, err := newAnnouncer(p.JS.Conn(), p.Prefix)
		if err != nil {
			return nil, err
		}
		p.ann = a
	}
	return p.ann, nil
}

// Publish registers m with the tracker (expecting acks from expected) and publishes it. It
// returns m with Seq filled in. Publishing the same id again (a retry) keeps its receipt.
func (p *Publisher) Publish(ctx context.Context, m Message, expected []NodeRef) (Message, error) {
	m, err := m.Normalize()
	if err != nil {
		return m, fmt.Errorf("publish purge: %w", err)
	}
	ann, err := p.announcer()
	if err != nil {
		return m, err
	}
	data, err := storedJSON(m)
	if err != nil {
		return m, err
	}
	fresh := false
	if p.Tracker != nil {
		fresh = p.Tracker.register(m, expected)
	}
	seq, err := ann.publish(ctx, CommandSubject(p.Prefix, m.Host), m.ID, data)
	if err != nil {
		// A receipt goes only if this call made it and the purge is surely not stored: one
		// whose caller gave up before the stream answered may be stored, and the acks of the
		// nodes that apply it would be dropped, leaving a retry pending on them for good.
		if fresh && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			p.Tracker.Forget(m.ID)
		}
		return m, fmt.Errorf("publish purge %s: %w", m.ID, err)
	}
	m.Seq = seq
	if p.Tracker != nil {
		p.Tracker.SetSeq(m.ID, seq)
	}
	return m, nil
}
