// Package wait is the one way Meridian's tests wait for something to happen: poll a condition
// until it holds, or fail the test saying what did not happen. It is for conditions no event
// announces (a counter at another process, a view catching up); where a channel or callback
// can be awaited, tests await that instead.
package wait

import (
	"testing"
	"time"
)

// For polls cond every few milliseconds until it holds, or fails t after timeout saying what
// it waited for.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
