package logtest

import (
	"log/slog"
	"testing"
)

// TestWarningsCount: warnings and errors are kept and counted by what they mention; info is
// not kept.
func TestWarningsCount(t *testing.T) {
	w := &Warnings{}
	log := slog.New(w)
	log.Info("dropping a thing")
	log.Warn("dropping a thing", "n", 1)
	log.Error("dropping a thing twice")
	log.With("k", "v").WithGroup("g").Warn("something else")
	for s, want := range map[string]int{"dropping a thing": 2, "twice": 1, "something else": 1, "absent": 0} {
		if got := w.Count(s); got != want {
			t.Errorf("Count(%q) = %d, want %d", s, got, want)
		}
	}
}
