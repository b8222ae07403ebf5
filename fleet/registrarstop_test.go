package fleet_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// stopAtJS binds buckets through the real JetStream and stops the NATS server just before
// the first call named op ("write": the heartbeat's Update or Put; "status": the read of the
// bucket's TTL that follows an answered heartbeat, readTTL), so that this request is the one
// in flight when NATS goes away. The request itself is the real client's, to no server.
type stopAtJS struct {
	jetstream.JetStream
	op   string
	once sync.Once
	stop func()
}

func (j *stopAtJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return stopAtKV{KeyValue: kv, j: j}, nil
}

func (j *stopAtJS) at(op string) {
	if op == j.op {
		j.once.Do(j.stop)
	}
}

type stopAtKV struct {
	jetstream.KeyValue
	j *stopAtJS
}

func (kv stopAtKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	kv.j.at("write")
	return kv.KeyValue.Update(ctx, key, value, last)
}

func (kv stopAtKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	kv.j.at("write")
	return kv.KeyValue.Put(ctx, key, value)
}

func (kv stopAtKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	kv.j.at("status")
	return kv.KeyValue.Status(ctx)
}

// TestRegistrarNATSGoneMidHeartbeat: with an hour between heartbeats (an operator's
// fleet.heartbeat may be a minute), a heartbeat in flight when NATS goes away, its write or the
// bucket status read after it, waits a bounded time, not an interval: the registrar reports
// the failed write (Err) or goes on past the unanswered read (OnWrite), and a stop returns.
// Before, each waited out the interval: the edge's stop, which waits for the registrar, hung.
func TestRegistrarNATSGoneMidHeartbeat(t *testing.T) {
	for _, tc := range []struct {
		op   string
		stop bool // stop the registrar while the request waits, else let it run
	}{
		{"write", false},
		{"write", true},
		{"status", false},
		{"status", true},
	} {
		name := tc.op + " in flight, running"
		if tc.stop {
			name = tc.op + " in flight, stopped"
		}
		t.Run(name, func(t *testing.T) {
			s, _ := setupTTL(t, time.Minute)
			nc, js := s.Connect(t)
			gone := make(chan struct{})
			sj := &stopAtJS{JetStream: js, op: tc.op, stop: func() { s.Stop(); close(gone) }}
			wrote := make(chan struct{}, 1)
			r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: sj, Node: node("lon", "n1"), Interval: time.Hour,
				OnWrite: func(time.Time, bool) { wrote <- struct{}{} }})
			if err != nil {
				t.Fatalf("NewRegistrar: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var runErr error
			done := make(chan struct{}) // closed once Run returned runErr
			go func() { runErr = r.Run(ctx); close(done) }()
			defer func() {
				cancel()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					// Still waiting (the failure below): closing the connection ends the
					// request.
					nc.Close()
					<-done
				}
			}()
			select {
			case <-gone:
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s request within 10s of the start", tc.op)
			}
			switch {
			case tc.stop:
				cancel()
				select {
				case <-done:
					if runErr != nil {
						t.Errorf("Run returned %v, want nil", runErr)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("Run did not return within 10s of its stop, with the %s request to the stopped NATS in flight", tc.op)
				}
			case tc.op == "write":
				wait.For(t, 10*time.Second, "the heartbeat to the stopped NATS to fail (Err)", func() bool { return r.Err() != nil })
			default:
				select {
				case <-wrote: // the write was answered; the status read gave up
				case <-time.After(10 * time.Second):
					t.Error("OnWrite not called within 10s: the unanswered status read holds the heartbeat")
				}
			}
		})
	}
}
