package http1

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// TestReqCtx holds a request context to what handlers get from net/http: the connection's
// values, done once the request ends, with derived contexts and AfterFunc ended with it; and
// to the rule that makes reuse safe: a context anyone asked about is never reused.
func TestReqCtx(t *testing.T) {
	conn := context.WithValue(context.Background(), ctxKey{}, "conn")
	t.Run("values and end", func(t *testing.T) {
		c := &reqCtx{Context: conn}
		if c.Value(ctxKey{}) != "conn" {
			t.Errorf("Value = %v; want the connection's", c.Value(ctxKey{}))
		}
		child, stop := context.WithTimeout(c, time.Hour)
		defer stop()
		ran := make(chan struct{})
		context.AfterFunc(c, func() { close(ran) })
		stopped := context.AfterFunc(c, func() { t.Error("a stopped AfterFunc ran") })
		if !stopped() {
			t.Error("stopping an AfterFunc that has not run: false")
		}
		if c.Err() != nil {
			t.Fatalf("Err before the end: %v", c.Err())
		}
		done := c.Done()
		c.cancel()
		<-done
		<-child.Done()
		<-ran
		if !errors.Is(c.Err(), context.Canceled) || !errors.Is(child.Err(), context.Canceled) {
			t.Errorf("Err = %v, child's %v; want canceled", c.Err(), child.Err())
		}
		if c.reuse() {
			t.Error("reuse of a context whose Done was asked for: true")
		}
	})
	t.Run("done asked after the end", func(t *testing.T) {
		c := &reqCtx{Context: conn}
		c.cancel()
		<-c.Done() // a closed channel, though none was made before
		late := make(chan struct{})
		context.AfterFunc(c, func() { close(late) })
		<-late
	})
	t.Run("reuse", func(t *testing.T) {
		c := &reqCtx{Context: conn}
		_ = c.Value(ctxKey{}) // values say nothing of the request's end
		c.cancel()
		if !c.reuse() {
			t.Fatal("reuse of a context no one asked about: false")
		}
		if c.Err() != nil {
			t.Errorf("Err after reuse: %v; want nil", c.Err())
		}
		c.cancel()
		if c.reuse() {
			t.Error("reuse of a context whose Err was asked for: true")
		}
	})
}
