package natstest

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// LoseAnswer wraps a JetStream for tests of a write whose answer is lost: once Armed, the next
// write to a key-value bucket (Update or Put) is stored by the real server, its revision is
// sent on Lost, and the call fails; with WaitOut it first waits out its context, as a call
// whose answer a cut or a reconnect lost does. A real NATS server cannot drop an answer on
// demand; this seam is the only fake.
type LoseAnswer struct {
	jetstream.JetStream
	WaitOut bool
	Armed   atomic.Bool
	Lost    chan uint64 // the revision of the write whose answer was lost
}

// NewLoseAnswer wraps js (which may be set later, before the first call, as JetStream).
func NewLoseAnswer(js jetstream.JetStream, waitOut bool) *LoseAnswer {
	return &LoseAnswer{JetStream: js, WaitOut: waitOut, Lost: make(chan uint64, 1)}
}

// KeyValue binds the bucket through the wrapped JetStream and wraps the handle.
func (l *LoseAnswer) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := l.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return &loseAnswerKV{KeyValue: kv, l: l}, nil
}

type loseAnswerKV struct {
	jetstream.KeyValue
	l *LoseAnswer
}

func (kv *loseAnswerKV) lose(ctx context.Context, key string, rev uint64, err error) (uint64, error) {
	if err != nil || !kv.l.Armed.CompareAndSwap(true, false) {
		return rev, err
	}
	kv.l.Lost <- rev
	if kv.l.WaitOut {
		<-ctx.Done()
		return 0, fmt.Errorf("write %s stored at revision %d: answer lost: %w", key, rev, ctx.Err())
	}
	return 0, fmt.Errorf("write %s stored at revision %d: answer lost", key, rev)
}

func (kv *loseAnswerKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	rev, err := kv.KeyValue.Update(ctx, key, value, last)
	return kv.lose(ctx, key, rev, err)
}

func (kv *loseAnswerKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := kv.KeyValue.Put(ctx, key, value)
	return kv.lose(ctx, key, rev, err)
}
