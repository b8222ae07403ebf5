package purge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LiveSubject is the core NATS subject on which each purge is announced once the stream has
// stored it: "<prefix>.purge.live". It lies outside the stream's subjects on purpose: the
// stream is the log a node replays from, the live subject the fast path of a node that is
// caught up. Only control may publish on it; nodes may only subscribe (docs/security.md).
func LiveSubject(p string) string { return prefixOrDefault(p) + ".purge.live" }

// appendLive appends a live announcement: the stream sequence in decimal, a newline, then the
// message exactly as the stream stores it.
func appendLive(dst []byte, seq uint64, stored []byte) []byte {
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '\n')
	return append(dst, stored...)
}

// splitLive splits a live announcement into the stream sequence and the stored message.
func splitLive(data []byte) (uint64, []byte, error) {
	i := bytes.IndexByte(data, '\n')
	if i <= 0 || i > 20 {
		return 0, nil, errors.New("live purge: no sequence")
	}
	seq, err := strconv.ParseUint(string(data[:i]), 10, 64)
	if err != nil || seq == 0 {
		return 0, nil, fmt.Errorf("live purge: bad sequence %q", data[:i])
	}
	return seq, data[i+1:], nil
}

// askPrefix starts the tracker's question on the live subject: the nodes it names, one
// "<pop>.<node>" a line after it, answer with an ack through the last purge they applied. It
// is no announcement (no sequence line), and only control may publish there.
const askPrefix = "acks?\n"

// appendAsk appends the question for nodes to dst.
func appendAsk(dst []byte, nodes []NodeRef) []byte {
	dst = append(dst, askPrefix...)
	for i, n := range nodes {
		if i > 0 {
			dst = append(dst, '\n')
		}
		dst = append(dst, n.PoP...)
		dst = append(dst, '.')
		dst = append(dst, n.Node...)
	}
	return dst
}

// asks reports whether the question names (after askPrefix) pop.node.
func asks(names []byte, pop, node string) bool {
	for len(names) > 0 {
		line := names
		if i := bytes.IndexByte(names, '\n'); i >= 0 {
			line, names = names[:i], names[i+1:]
		} else {
			names = nil
		}
		if len(line) == len(pop)+1+len(node) && string(line[:len(pop)]) == pop && line[len(pop)] == '.' &&
			string(line[len(pop)+1:]) == node {
			return true
		}
	}
	return false
}

// announce publishes a stored message on the live subject; a failure only costs the nodes a
// replay from the stream, so it is not reported.
func announce(nc *nats.Conn, prefix string, seq uint64, stored []byte) {
	_ = nc.Publish(LiveSubject(prefix), appendLive(make([]byte, 0, 21+len(stored)), seq, stored))
}

// defaultPublishTimeout bounds a publish whose context has no deadline (jetstream's default).
const defaultPublishTimeout = 5 * time.Second

// announcer publishes purges to the stream and announces each on the live subject as soon as
// its PubAck arrives, from the one goroutine that receives the PubAcks. The stream acknowledges
// in the order it stores, so nodes see the announcements in sequence order and a node that is
// caught up never has to ask the stream; the caller of publish is woken after the announcement.
type announcer struct {
	nc     *nats.Conn
	prefix string
	stream string
	inbox  string // reply subject prefix, ending with "."

	mu      sync.Mutex // guards pending and next
	pending map[uint64]*pendingPublish
	next    uint64
}

type pendingPublish struct {
	stored []byte
	done   chan publishResult // capacity 1
}

type publishResult struct {
	seq uint64
	err error
}

func newAnnouncer(nc *nats.Conn, prefix string) (*announcer, error) {
	a := &announcer{
		nc:      nc,
		prefix:  prefix,
		stream:  StreamName(prefix),
		inbox:   nc.NewInbox() + ".",
		pending: make(map[uint64]*pendingPublish),
	}
	sub, err := nc.Subscribe(a.inbox+"*", a.onPubAck)
	if err != nil {
		return nil, fmt.Errorf("purge publisher: subscribe to publish acks: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1) // replies to our own requests: never drop one
	// The subscription lasts as long as nc, as the Publisher does.
	return a, nil
}

// publish stores data (the JSON of a normalised message with id id) in the stream on subject
// and returns its sequence once it is stored and announced. Like jetstream's Publish it tries
// again twice, 250 ms apart, when no stream answers (a leader election in a cluster).
func (a *announcer) publish(ctx context.Context, subject, id string, data []byte) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultPublishTimeout)
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		seq, err := a.publishOnce(ctx, subject, id, data)
		if !errors.Is(err, jetstream.ErrNoStreamResponse) || attempt == 2 {
			return seq, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (a *announcer) publishOnce(ctx context.Context, subject, id string, data []byte) (uint64, error) {
	p := &pendingPublish{stored: data, done: make(chan publishResult, 1)}
	a.mu.Lock()
	a.next++
	tok := a.next
	a.pending[tok] = p
	a.mu.Unlock()
	forget := func() {
		a.mu.Lock()
		delete(a.pending, tok)
		a.mu.Unlock()
	}
	msg := &nats.Msg{
		Subject: subject,
		Reply:   a.inbox + strconv.FormatUint(tok, 10),
		Header:  nats.Header{jetstream.MsgIDHeader: {id}, jetstream.ExpectedStreamHeader: {a.stream}},
		Data:    data,
	}
	if err := a.nc.PublishMsg(msg); err != nil {
		forget()
		return 0, err
	}
	select {
	case r := <-p.done:
		return r.seq, r.err
	case <-ctx.Done():
		forget()
		// A PubAck that comes later is dropped unannounced; nodes replay the purge from the
		// stream when they notice the gap (Subscriber).
		return 0, ctx.Err()
	}
}

// onPubAck handles the stream's answer to one publish: it announces the stored message on the
// live subject, then wakes its publisher. A duplicate is announced again (nodes skip what they
// applied), which also helps after a publish that timed out but was stored.
func (a *announcer) onPubAck(m *nats.Msg) {
	tok, err := strconv.ParseUint(m.Subject[len(a.inbox):], 10, 64)
	if err != nil {
		return
	}
	a.mu.Lock()
	p := a.pending[tok]
	delete(a.pending, tok)
	a.mu.Unlock()
	if p == nil {
		return // the publisher gave up
	}
	seq, err := parsePubAck(m)
	if err == nil {
		announce(a.nc, a.prefix, seq, p.stored)
	}
	p.done <- publishResult{seq, err}
}

// parsePubAck reads the stream's answer to a publish.
func parsePubAck(m *nats.Msg) (uint64, error) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return 0, jetstream.ErrNoStreamResponse
	}
	var r struct {
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
		Error  *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return 0, fmt.Errorf("invalid publish ack %q: %w", m.Data, err)
	}
	if r.Error != nil {
		return 0, r.Error
	}
	if r.Seq == 0 {
		return 0, errors.New("stream returned no sequence")
	}
	return r.Seq, nil
}
