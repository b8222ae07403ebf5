package fleet

import (
	"context"
	"testing"
	"time"
)

func TestBackoffDoublesToCapWithJitter(t *testing.T) {
	b := Backoff(100*time.Millisecond, time.Second)
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		got := b.NextBackOff()
		if got < w*8/10 || got > w*12/10 {
			t.Fatalf("interval %d = %v, want %v ± 20 %%", i, got, w)
		}
	}
	b.Reset()
	if got := b.NextBackOff(); got > 120*time.Millisecond {
		t.Fatalf("after Reset the interval is %v, want about 100ms", got)
	}
}

func TestWaitStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Wait(ctx, Backoff(time.Hour, time.Hour)) {
		t.Fatal("Wait on an ended context reported go on")
	}
}
