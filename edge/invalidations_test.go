package edge

import (
	"fmt"
	"testing"
	"time"
)

// TestInvalidationsBounded: the newest invalidationCap keys are remembered, a key invalidated
// again keeps its newest time when its older entry leaves, and the oldest go first.
func TestInvalidationsBounded(t *testing.T) {
	var v invalidations
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	if _, ok := v.since("k0"); ok {
		t.Fatal("an empty set remembers k0")
	}
	v.add("again", t0)
	for i := range invalidationCap {
		v.add(fmt.Sprintf("k%d", i), t0.Add(time.Duration(i)*time.Millisecond))
		if i == 10 {
			v.add("again", t0.Add(time.Hour))
		}
	}
	if _, ok := v.since("k0"); ok {
		t.Error("k0, among the oldest past the cap, is still remembered")
	}
	if at, ok := v.since("again"); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("again = %v, %v; want its newest time", at, ok)
	}
	last := fmt.Sprintf("k%d", invalidationCap-1)
	if _, ok := v.since(last); !ok {
		t.Errorf("%s, the newest, is forgotten", last)
	}
	if n := int(v.n.Load()); n > invalidationCap || n != len(v.at) {
		t.Errorf("n = %d for %d keys, want at most %d", n, len(v.at), invalidationCap)
	}
}

// TestFillCacheControl: a fill asks for nothing older than the node's own invalidation of the
// URL (whole seconds, rounded down) or the bound the fleet node asking it gave, whichever is
// less; otherwise it says nothing.
func TestFillCacheControl(t *testing.T) {
	clock := newFakeClock()
	n := &Node{clock: clock.Now}
	req := &request{key: "h/x"}
	if got := n.fillCacheControl(req); got != "" {
		t.Errorf("nothing invalidated: %q, want none", got)
	}
	n.invalidations.add("h/x", clock.Now())
	clock.Advance(2500 * time.Millisecond)
	if got := n.fillCacheControl(req); got != "max-age=2" {
		t.Errorf("invalidated 2.5 s ago: %q, want max-age=2", got)
	}
	req.maxAge, req.hasMaxAge = time.Second, true
	if got := n.fillCacheControl(req); got != "max-age=1" {
		t.Errorf("asked for 1 s: %q, want max-age=1", got)
	}
	other := &request{key: "h/y", maxAge: 7 * time.Second, hasMaxAge: true}
	if got := n.fillCacheControl(other); got != "max-age=7" {
		t.Errorf("another URL, asked for 7 s: %q, want max-age=7", got)
	}
}
