package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// BenchmarkHeartbeatPut is one heartbeat's cost at the node: encode the registration and put
// it into the fleet bucket, waiting for JetStream's ack (embedded NATS on loopback).
func BenchmarkHeartbeatPut(b *testing.B) {
	s := natstest.Start(b)
	_, js := s.Connect(b)
	if err := fleet.EnsureBuckets(b.Context(), js, "", 3*time.Second, 1); err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(b.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		b.Fatal(err)
	}
	n := node("par", "n1")
	b.ReportAllocs()
	for b.Loop() {
		n.Load = wire.LoadReport{At: time.Now(), RequestsPerSec: 100, Healthy: true}
		v, _ := json.Marshal(n)
		if _, err := kv.Put(b.Context(), wire.FleetKey(n.PoP, n.ID), v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewPoPs200 is the cost of reading a 200-node fleet (20 PoPs of 10) from a View, as
// GET /v1/pops and every DNS ranking after a fleet change do.
func BenchmarkViewPoPs200(b *testing.B) {
	s := natstest.Start(b)
	_, js := s.Connect(b)
	if err := fleet.EnsureBuckets(b.Context(), js, "", time.Hour, 1); err != nil {
		b.Fatal(err)
	}
	kv, _ := js.KeyValue(b.Context(), wire.Bucket("", wire.FleetBucket))
	for p := range 20 {
		for i := range 10 {
			n := node(fmt.Sprintf("pop%02d", p), fmt.Sprintf("n%02d", i))
			n.Load = wire.LoadReport{At: time.Now(), Healthy: true}
			v, _ := json.Marshal(n)
			if _, err := kv.Put(b.Context(), wire.FleetKey(n.PoP, n.ID), v); err != nil {
				b.Fatal(err)
			}
		}
	}
	v := fleet.NewView(fleet.ViewConfig{JS: js, TTL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = v.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	wait.For(b, 10*time.Second, "200 nodes", func() bool { return len(v.Nodes()) == 200 })
	b.ReportAllocs()
	for b.Loop() {
		if got := len(v.PoPs()); got != 20 {
			b.Fatalf("PoPs() = %d, want 20", got)
		}
	}
}
