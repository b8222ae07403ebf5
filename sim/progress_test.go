package sim

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/sim/report"
)

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFormatProgress(t *testing.T) {
	tests := []struct {
		name           string
		live           report.Live
		rate           float64
		elapsed, total time.Duration
		want           string
	}{
		{"half way", report.Live{Requests: 1000, Hits: 873, Errors: 12}, 2150, 30 * time.Second, time.Minute,
			"[##########----------]  30s/60s    2150 req/s  hit  87.3%  errors 12  requests 1000"},
		{"no requests yet", report.Live{}, 0, 0, time.Minute,
			"[--------------------]   0s/60s       0 req/s  hit   0.0%  errors 0  requests 0"},
		{"over time is full", report.Live{Requests: 1, Hits: 1}, 1, 2 * time.Minute, time.Minute,
			"[####################] 120s/60s       1 req/s  hit 100.0%  errors 0  requests 1"},
		{"no total", report.Live{Requests: 4, Hits: 1}, 4, time.Second, 0,
			"  1s       4 req/s  hit  25.0%  errors 0  requests 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatProgress(tt.live, tt.rate, tt.elapsed, tt.total); got != tt.want {
				t.Errorf("FormatProgress = %q, want %q", got, tt.want)
			}
		})
	}
}

// fakeClock advances one second per reading, so rates are exact.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

func TestProgressPlainLines(t *testing.T) {
	var out logtest.Buffer
	var mu sync.Mutex // guards live
	live := report.Live{}
	clock := &fakeClock{now: time.Unix(0, 0)}
	p := &Progress{Out: &out, Total: time.Minute, Interval: time.Millisecond, Now: clock.Now,
		Live: func() report.Live {
			mu.Lock()
			defer mu.Unlock()
			live.Requests += 100 // 100 more per clock second: 100 req/s
			live.Hits += 50
			return live
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	waitFor(t, 5*time.Second, func() bool { return strings.Count(out.String(), "\n") >= 3 })
	cancel()
	<-done
	text := out.String()
	if strings.Contains(text, "\r") {
		t.Errorf("plain output has carriage returns: %q", text)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i, l := range lines[:len(lines)-1] {
		if !strings.Contains(l, " 100 req/s") || !strings.Contains(l, "hit  50.0%") {
			t.Errorf("line %d = %q, want 100 req/s and hit 50.0%%", i, l)
		}
	}
}

// TestProgressFinalRateAfterWarmup: requests are recorded only after the warm-up, so the final
// line's average is over the time after it, the summary's requests/s, not over the warm-up too
// (the world run's last line said 621 req/s beside a summary of 673/s).
func TestProgressFinalRateAfterWarmup(t *testing.T) {
	t0 := time.Unix(0, 0)
	var mu sync.Mutex // guards calls
	calls := 0
	// The first reading starts the line; every later one is the end of the run, 65 s on.
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return t0
		}
		return t0.Add(65 * time.Second)
	}
	var out logtest.Buffer
	p := &Progress{Out: &out, Total: 65 * time.Second, Warmup: 5 * time.Second, Interval: time.Hour, Now: now,
		Live: func() report.Live { return report.Live{Requests: 600} }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx)
	if !strings.Contains(out.String(), "  10 req/s") {
		t.Errorf("final line %q, want 600 requests over the 60 s after the warm-up: 10 req/s", out.String())
	}
}

func TestProgressTerminalRedraws(t *testing.T) {
	var out logtest.Buffer
	p := &Progress{Out: &out, Terminal: true, Interval: time.Millisecond, Live: func() report.Live { return report.Live{Requests: 5} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	waitFor(t, 5*time.Second, func() bool { return strings.Count(out.String(), "\r") >= 2 })
	cancel()
	<-done
	text := out.String()
	if !strings.HasSuffix(text, "\n") || strings.Count(text, "\n") != 1 {
		t.Errorf("terminal output = %q, want redraws with \\r and one final newline", text)
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Errorf("IsTerminal(bytes.Buffer) = true")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Errorf("IsTerminal(regular file) = true")
	}
}
