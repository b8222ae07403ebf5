package http1

import (
	"context"
	"sync"
)

// reqCtx is a request's context on the fast path: the connection's values, done when the
// handler returns or its client goes away, as net/http's request contexts are.
//
// A connection reuses it, and the http.Request that carries it, for its next request when
// nothing looked at whether it is done (Done, Err or AfterFunc): no one can then be waiting
// on it. A cache hit never looks, so it costs no allocation for its context or its request
// (issue 15); a request whose handler did look gets a new one. So a handler that hands the
// context to work outliving it must derive from it, or call Done, before it returns (the
// edge's fills do): a context first asked after its request ended may be the next one's.
type reqCtx struct {
	context.Context // the connection's: values only, never done

	mu       sync.Mutex
	done     chan struct{} // made by the first Done
	err      error
	afters   map[*afterFunc]struct{}
	observed bool // Done, Err or AfterFunc was called: not reusable
}

// afterFunc is one function registered with AfterFunc.
type afterFunc struct{ f func() }

// closedDone is the Done of a context cancelled before anyone asked for its channel.
var closedDone = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observed = true
	if c.done == nil {
		if c.err != nil {
			return closedDone
		}
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *reqCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observed = true
	return c.err
}

// AfterFunc is what context.AfterFunc and the context package's derived contexts use on a
// parent of a type of its own: without it each derived context would cost a goroutine
// waiting on Done.
func (c *reqCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observed = true
	a := &afterFunc{f: f}
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	if c.afters == nil {
		c.afters = make(map[*afterFunc]struct{})
	}
	c.afters[a] = struct{}{}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.afters[a]
		delete(c.afters, a)
		return ok
	}
}

func (c *reqCtx) String() string { return "http1 request context" }

// cancel ends the request: its handler returned, or its client went away.
func (c *reqCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	afters := c.afters
	c.afters = nil
	c.mu.Unlock()
	for a := range afters {
		go a.f()
	}
}

// reuse readies c for the connection's next request, reporting false if it cannot be reused
// (someone may still be waiting on it). Call it only once c's request has ended.
func (c *reqCtx) reuse() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.observed {
		return false
	}
	c.err = nil
	return true
}
