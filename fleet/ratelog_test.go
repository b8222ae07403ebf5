package fleet_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
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

// count is how many lines so far have the message msg.
func (l *lines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.got {
		if m["msg"] == msg {
			n++
		}
	}
	return n
}

func (l *lines) take() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.got
	l.got = nil
	return got
}

// checkLine reports, in got/want form, how lines differ from the one warning wanted: call is
// the "call" attribute of the warning written (0: no line wanted), suppressed the count on it
// (0: no such attribute).
func checkLine(t *testing.T, when string, lines []map[string]any, call int, suppressed int) {
	t.Helper()
	switch {
	case call == 0 && len(lines) != 0:
		t.Errorf("%s: wrote %v, want nothing", when, lines)
	case call != 0 && len(lines) != 1:
		t.Errorf("%s: wrote %v, want one line", when, lines)
	case call != 0:
		l := lines[0]
		if l["msg"] != "dropping a thing" || l["level"] != slog.LevelWarn || l["subject"] != "x.y" || l["call"] != int64(call) {
			t.Errorf("%s: wrote %v, want the warning of call %d with its attributes", when, l, call)
		}
		if s, ok := l["suppressed"]; suppressed == 0 && ok || suppressed != 0 && s != int64(suppressed) {
			t.Errorf("%s: suppressed = %v, want %d", when, s, suppressed)
		}
	}
}

// TestRateLog: the first warning is written at once; those within the interval after a line
// are held back, and when the interval ends the latest of them is written with the count of
// the others, though no warning follows; that line starts the next interval. Concurrent
// callers lose no count. testing/synctest fakes the clock and the timer: time.Sleep moves the
// clock to the step's time, synctest.Wait lets a line due then be written.
func TestRateLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &lines{}
		rl := fleet.NewRateLog(slog.New(h), "dropping a thing", time.Minute)
		defer rl.Stop()
		start := time.Now()
		call := 0
		for _, step := range []struct {
			name       string
			at         time.Duration
			calls      int
			line       int // the call whose warning is written at this step; 0: none
			suppressed int
		}{
			{"first", 0, 1, 1, 0},
			{"within the interval", time.Second, 3, 0, 0},
			{"at its end", 59 * time.Second, 1, 0, 0},
			{"interval ended, none followed", time.Minute, 0, 5, 3},
			{"within the interval the line started", time.Minute + time.Second, 1, 0, 0},
			{"one held back, alone", 2 * time.Minute, 0, 6, 0},
			{"after a quiet interval", 5 * time.Minute, 1, 7, 0},
			{"an interval without any", 7 * time.Minute, 0, 0, 0},
			{"later", 10 * time.Minute, 1, 8, 0},
		} {
			time.Sleep(time.Until(start.Add(step.at)))
			for range step.calls {
				call++
				rl.Warn("subject", "x.y", "call", call)
			}
			synctest.Wait()
			checkLine(t, fmt.Sprintf("%s (%v)", step.name, step.at), h.take(), step.line, step.suppressed)
		}

		time.Sleep(time.Until(start.Add(20 * time.Minute)))
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
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := h.take(); len(got) != 1 || got[0]["suppressed"] != int64(798) {
			t.Errorf("the line at the interval's end = %v, want one held back with suppressed 798", got)
		}
	})
}

// TestRateLogStop: Stop writes at once what is held back and leaves no timer, so nothing is
// written when the interval would have ended; a second Stop writes nothing. A warning after
// Stop is still rate limited, and what it holds back is counted in the next line.
func TestRateLogStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &lines{}
		rl := fleet.NewRateLog(slog.New(h), "dropping a thing", time.Minute)
		for call := 1; call <= 3; call++ {
			rl.Warn("subject", "x.y", "call", call)
		}
		checkLine(t, "three warnings", h.take(), 1, 0)
		rl.Stop()
		checkLine(t, "Stop", h.take(), 3, 1)
		rl.Stop()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		checkLine(t, "a second Stop, then the interval's end", h.take(), 0, 0)

		rl.Warn("subject", "x.y", "call", 4)
		rl.Warn("subject", "x.y", "call", 5)
		checkLine(t, "two warnings after Stop", h.take(), 4, 0)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		checkLine(t, "the interval's end after Stop", h.take(), 0, 0)
		rl.Warn("subject", "x.y", "call", 6)
		checkLine(t, "the next warning after Stop", h.take(), 6, 1)
	})
}

// TestRateLogLosesNoCount: however warnings from several goroutines interleave with the ends
// of intervals (a tenth of a millisecond here, on the real clock) and with Stop, each is
// either written or counted in a line, once: once Stop returned, the lines account for all.
func TestRateLogLosesNoCount(t *testing.T) {
	h := &lines{}
	rl := fleet.NewRateLog(slog.New(h), "dropping a thing", 100*time.Microsecond)
	const goroutines, each = 8, 2000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				rl.Warn()
			}
		})
	}
	wg.Wait()
	rl.Stop()
	total := 0
	for _, l := range h.take() {
		total++
		if n, ok := l["suppressed"].(int64); ok {
			total += int(n)
		}
	}
	if total != goroutines*each {
		t.Errorf("the lines account for %d warnings, want %d", total, goroutines*each)
	}
}
