// Package logtest is a slog handler for tests that assert what a component logged: how many
// warnings said a thing (a warning that must be written once, not once per message, say), and
// a buffer a logger may write to from several goroutines while the test reads it, and the
// records of a JSON log with a given message.
package logtest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer that a logger (or any writer) may write to from several goroutines
// while the test reads it. Its zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Warnings keeps the messages of the warnings (and worse) logged through it. Its zero value is
// ready; use it as slog.New(w).
type Warnings struct {
	mu   sync.Mutex
	msgs []string
}

// Enabled reports whether l is a warning or worse.
func (w *Warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

// WithAttrs returns w: attributes are not kept.
func (w *Warnings) WithAttrs([]slog.Attr) slog.Handler { return w }

// WithGroup returns w.
func (w *Warnings) WithGroup(string) slog.Handler { return w }

// Handle keeps r's message.
func (w *Warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	w.msgs = append(w.msgs, r.Message)
	w.mu.Unlock()
	return nil
}

// Count is how many warnings mention s.
func (w *Warnings) Count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// JSONLines returns the records of log, a JSON handler's output (one object a line), whose
// message is msg, each as its decoded object; it fails the test on a line that is not JSON.
func JSONLines(t testing.TB, log, msg string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(log), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			recs = append(recs, m)
		}
	}
	return recs
}
