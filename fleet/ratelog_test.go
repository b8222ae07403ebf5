package fleet_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
)

// lines is a slog handler that keeps each record's message and attributes.
type lines struct {
	mu  sync.Mutex
	got []map[string]any
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"msg": r.Message, "level": r.Level}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Any()
		return true
	})
	l.mu.Lock()
	l.got = append(l.got, m)
	l.mu.Unlock()
	return nil
}

func (l *lines) take() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.got
	l.got = nil
	return got
}

// TestRateLog: the first warning is written at once; those within the interval after a line
// are only counted, and the first one after it is written with that count. Concurrent callers
// lose no count.
func TestRateLog(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := start
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	at := func(d time.Duration) {
		mu.Lock()
		now = start.Add(d)
		mu.Unlock()
	}
	h := &lines{}
	rl := fleet.NewRateLog(slog.New(h), "dropping a thing", time.Minute, clock)

	for _, step := range []struct {
		at         time.Duration
		calls      int
		wantLine   bool
		suppressed int64 // on the line written; 0: no such attribute
	}{
		{0, 1, true, 0},
		{time.Second, 3, false, 0},
		{59 * time.Second, 1, false, 0},
		{time.Minute, 1, true, 4},
		{time.Minute + time.Second, 1, false, 0},
		{5 * time.Minute, 1, true, 1},
		{10 * time.Minute, 1, true, 0},
	} {
		at(step.at)
		for range step.calls {
			rl.Warn("subject", "x.y")
		}
		got := h.take()
		switch {
		case !step.wantLine && len(got) != 0:
			t.Errorf("at %v: wrote %v, want nothing", step.at, got)
		case step.wantLine && len(got) != 1:
			t.Errorf("at %v: wrote %d lines, want 1", step.at, len(got))
		case step.wantLine:
			l := got[0]
			if l["msg"] != "dropping a thing" || l["level"] != slog.LevelWarn || l["subject"] != "x.y" {
				t.Errorf("at %v: wrote %v, want the warning with its attributes", step.at, l)
			}
			if s, ok := l["suppressed"]; step.suppressed == 0 && ok || step.suppressed != 0 && s != step.suppressed {
				t.Errorf("at %v: suppressed = %v, want %d", step.at, s, step.suppressed)
			}
		}
	}

	at(20 * time.Minute)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				rl.Warn()
			}
		})
	}
	wg.Wait()
	if got := h.take(); len(got) != 1 {
		t.Fatalf("800 concurrent warnings wrote %d lines, want 1", len(got))
	}
	at(30 * time.Minute)
	rl.Warn()
	if got := h.take(); len(got) != 1 || got[0]["suppressed"] != int64(799) {
		t.Errorf("the line after them = %v, want suppressed 799", got)
	}
}
