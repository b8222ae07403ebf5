package edge

import (
	"context"
	"slices"
	"sync"
	"time"
)

// fillContext is the context of one collapsed fill (filler.run): it ends when the node
// closes (filler.close, as the filler's context does), at the fill's own deadline,
// Config.FillTimeout from its start, or when the fill is done, and it holds the values of the
// trace that forwards interim responses to the client waiting for it. It is what
// context.WithTimeout(f.ctx, ...) and httptrace.WithClientTrace gave, without their cost on
// every miss (issue 15): a runtime timer per fill, an entry in the filler context's map of
// children, under the one lock every fill took twice, and another such map for the
// exchange's context.AfterFunc, which fillContext serves itself (AfterFunc below).
//
// Every fill has the same timeout, so fills reach their deadlines in the order they started:
// the filler keeps the live ones in a list, by deadline, and one timer for the earliest
// (filler.expireFills); a shorter timeout is put in its place and the timer moved.
//
// It has no parent for the context package to find: its values are its trace's alone (the
// filler's context carries none), so context.Cause reports its own Err, DeadlineExceeded
// for a fill that timed out even after the node closed, as a context.WithTimeout's did.
type fillContext struct {
	f        *filler
	deadline time.Time
	values   context.Context // its values (the trace's); nil if none

	prev, next *fillContext // in the filler's list of live fills, under f.mu
	listed     bool         // in that list, under f.mu

	mu      sync.Mutex
	done    chan struct{} // made by the first Done, closed when the fill's context ends
	err     error
	afters  []afterFill // functions to run when it ends (AfterFunc)
	inline  [2]afterFill
	afterID uint64
}

// afterFill is one function registered with fillContext.AfterFunc.
type afterFill struct {
	id uint64
	fn func()
}

// closedDone is a done channel for a context that ended before anyone asked for one.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *fillContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *fillContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			c.done = closedDone
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

func (c *fillContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value looks in the fill's own values only (see the type's comment).
func (c *fillContext) Value(key any) any {
	if c.values == nil {
		return nil
	}
	return c.values.Value(key)
}

// AfterFunc is what context.AfterFunc uses for a context that has this method: fn runs in a
// goroutine of its own once the fill's context ends, unless the returned stop is called first
// (it reports whether it kept fn from running), as context.AfterFunc documents.
// context.AfterFunc itself, given this context, adds a context of its own and a done channel
// around the call: origin/fetch calls the method directly (its afterFunc).
func (c *fillContext) AfterFunc(fn func()) func() bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go fn()
		return func() bool { return false }
	}
	if c.afters == nil {
		c.afters = c.inline[:0]
	}
	c.afterID++
	id := c.afterID
	c.afters = append(c.afters, afterFill{id: id, fn: fn})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.IndexFunc(c.afters, func(a afterFill) bool { return a.id == id })
		if i < 0 {
			return false
		}
		c.afters = slices.Delete(c.afters, i, i+1)
		return true
	}
}

// end ends the fill's context with err (context.Canceled or DeadlineExceeded), once: its done
// channel closes and its AfterFunc functions start.
func (c *fillContext) end(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if c.done == nil {
		c.done = closedDone
	} else {
		close(c.done)
	}
	afters := c.afters
	c.afters = nil
	c.mu.Unlock()
	for _, a := range afters {
		go a.fn() // as context.AfterFunc does: its own goroutine
	}
}

// cancel is the fill's CancelFunc: it leaves the filler's list and ends with Canceled.
func (c *fillContext) cancel() {
	c.f.unlistFill(c)
	c.end(context.Canceled)
}

// enterFill is enter for a fill with context c: unless the filler is closing, c gets its
// deadline, timeout from now, and joins the live fills, under the lock that close takes to
// find them, so that none is missed.
func (f *filler) enterFill(c *fillContext, timeout time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.wg.Add(1)
	c.f = f
	c.deadline = time.Now().Add(timeout)
	// In deadline order: at the tail, as every fill of a node has the same timeout.
	after := f.fillTail
	for after != nil && after.deadline.After(c.deadline) {
		after = after.prev
	}
	c.listed, c.prev = true, after
	if after != nil {
		c.next, after.next = after.next, c
	} else {
		c.next, f.fillHead = f.fillHead, c
	}
	if c.next != nil {
		c.next.prev = c
	} else {
		f.fillTail = c
	}
	if f.fillTimerAt.IsZero() || c.deadline.Before(f.fillTimerAt) {
		f.setFillTimer(c.deadline)
	}
	return true
}

// setFillTimer sets the timer for at; f.mu is held.
func (f *filler) setFillTimer(at time.Time) {
	f.fillTimerAt = at
	if f.fillTimer == nil {
		f.fillTimer = time.AfterFunc(time.Until(at), f.expireFills)
	} else {
		f.fillTimer.Reset(time.Until(at))
	}
}

// unlistFill takes c out of the live fills, if it is still there.
func (f *filler) unlistFill(c *fillContext) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unlinkFill(c)
}

// unlinkFill is unlistFill with f.mu held.
func (f *filler) unlinkFill(c *fillContext) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		f.fillHead = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		f.fillTail = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

// expireFills ends the fills past their deadline, the earliest first, and sets the timer for
// the next one. A fill that ended before its deadline left the list then; the timer, set for
// it, finds nothing to do here and moves on to the earliest deadline still running.
func (f *filler) expireFills() {
	now := time.Now()
	var due []*fillContext
	f.mu.Lock()
	for c := f.fillHead; c != nil && !c.deadline.After(now); c = f.fillHead {
		f.unlinkFill(c)
		due = append(due, c)
	}
	if f.fillHead != nil {
		f.setFillTimer(f.fillHead.deadline)
	} else {
		f.fillTimerAt = time.Time{}
	}
	f.mu.Unlock()
	for _, c := range due {
		c.end(context.DeadlineExceeded)
	}
}

// endFills ends every live fill's context: the filler is closing (close has set closing, so
// no fill joins after this).
func (f *filler) endFills() {
	var all []*fillContext
	f.mu.Lock()
	for c := f.fillHead; c != nil; c = f.fillHead {
		f.unlinkFill(c)
		all = append(all, c)
	}
	if f.fillTimer != nil {
		f.fillTimer.Stop()
		f.fillTimerAt = time.Time{}
	}
	f.mu.Unlock()
	for _, c := range all {
		c.end(context.Canceled)
	}
}
