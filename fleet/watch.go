package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WatchHandler receives what a bucket watch sees: the whole current state after every
// (re)watch, then each change. Watch calls it from one goroutine.
type WatchHandler interface {
	// Snapshot replaces the state with entries (puts only: deleted keys are absent).
	Snapshot(entries []jetstream.KeyValueEntry)
	// Update applies one change; deletes and purges have Operation() != KeyValuePut.
	Update(e jetstream.KeyValueEntry)
}

// WatchFailedHandler is a WatchHandler that also hears why a watch failed, before it is
// retried: one whose snapshot something waits for can tell what it waits on.
type WatchFailedHandler interface {
	WatchHandler
	WatchFailed(err error)
}

// errRewatch ends one watch so that the loop starts a fresh one.
var errRewatch = errors.New("nats reconnected")

// Watch keeps a watch on bucket (keys matching filter) until ctx ends, re-watching from a
// full snapshot after errors and after the NATS connection reconnects: a reconnect may hide
// deletes and expiries that happened meanwhile, and a fresh snapshot cannot miss them. While
// it cannot watch, h keeps its last state.
func Watch(ctx context.Context, js jetstream.JetStream, bucket, filter string, log *slog.Logger, h WatchHandler) {
	WatchKeys(ctx, js, bucket, []string{filter}, log, h)
}

// WatchKeys is Watch for the keys matching any of filters.
func WatchKeys(ctx context.Context, js jetstream.JetStream, bucket string, filters []string, log *slog.Logger, h WatchHandler) {
	retry := Backoff(100*time.Millisecond, 2*time.Second)
	for {
		start := time.Now()
		err := watchOnce(ctx, js, bucket, filters, h)
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, errRewatch) {
			log.Warn("kv watch interrupted; keeping last state", "bucket", bucket, "err", err)
			if f, ok := h.(WatchFailedHandler); ok {
				f.WatchFailed(err)
			}
		}
		if time.Since(start) > 10*time.Second {
			retry.Reset() // the watch ran a while: this is a new failure, not the same one
		}
		if !Wait(ctx, retry) {
			return
		}
	}
}

func watchOnce(ctx context.Context, js jetstream.JetStream, bucket string, filters []string, h WatchHandler) error {
	status := js.Conn().StatusChanged(nats.CONNECTED)
	defer js.Conn().RemoveStatusListener(status)
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	kv, err := js.KeyValue(bctx, bucket)
	cancel()
	if err != nil {
		return fmt.Errorf("bind kv bucket %s: %w", bucket, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// WatchFiltered rewrites the slice it is given into subjects: a re-watch needs the keys.
	w, err := kv.WatchFiltered(wctx, slices.Clone(filters))
	if err != nil {
		return fmt.Errorf("watch kv bucket %s: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()

	var initial []jetstream.KeyValueEntry
	inited := false
	// The initial values must arrive promptly; a watch that stalls before its end-of-initial
	// marker is retried rather than trusted.
	initTimeout := time.NewTimer(10 * time.Second)
	defer initTimeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-status:
			return errRewatch
		case <-initTimeout.C:
			if !inited {
				return fmt.Errorf("watch kv bucket %s: initial values did not arrive", bucket)
			}
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return fmt.Errorf("watch kv bucket %s: watcher closed", bucket)
			case e == nil:
				if !inited {
					inited = true
					h.Snapshot(initial)
					initial = nil
				}
			case !inited:
				if e.Operation() == jetstream.KeyValuePut {
					initial = append(initial, e)
				}
			default:
				h.Update(e)
			}
		}
	}
}

// notifier hands out channels that are closed at the next change.
type notifier struct {
	mu sync.Mutex // guards ch
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
