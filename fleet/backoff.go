package fleet

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Backoff is the retry policy every Meridian process uses on the bus: exponential from first,
// doubling up to limit, with ±20 % jitter so that a fleet that lost NATS together does not
// come back in lockstep, and no overall deadline (a node retries for as long as it runs).
// Call Reset after an attempt that made progress.
func Backoff(first, limit time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = first
	b.MaxInterval = max(limit, first)
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.Reset()
	return b
}

// Wait sleeps for b's next interval, or until ctx ends; it reports whether to go on.
func Wait(ctx context.Context, b backoff.BackOff) bool {
	t := time.NewTimer(b.NextBackOff())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
