package natstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Violations collects the errors a server reports to a client asynchronously (permission
// violations among them): give Option to nats.Connect, then Wait for the one a refused
// publish or subscription brings.
type Violations struct{ errs chan error }

// NewViolations returns an empty collector.
func NewViolations() *Violations { return &Violations{errs: make(chan error, 64)} }

// Option is the nats.ErrorHandler that feeds v; errors beyond its buffer are dropped.
func (v *Violations) Option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case v.errs <- err:
		default:
		}
	})
}

// Wait waits up to 5 s for the server's permissions violation for op ("publish" or
// "subscription", any case) to subject, skipping other errors, and fails t without it.
func (v *Violations) Wait(t testing.TB, op, subject string) {
	t.Helper()
	want := strings.ToLower(fmt.Sprintf("permissions violation for %s to %q", op, subject))
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-v.errs:
			if strings.Contains(strings.ToLower(err.Error()), want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q from the server", want)
		}
	}
}
