package fleet

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultRateLogEvery is how often a RateLog writes its warning at most when none is given.
const DefaultRateLogEvery = time.Minute

// RateLog writes one recurring warning at most once per interval: the first at once, then at
// the first occurrence after each interval one line with the count of those held back since
// ("suppressed"). Warnings that a peer on the bus can cause at will, with what it aims at a
// subject others listen on or writes under its own key, go through one, so that a hostile or
// broken peer cannot fill the disk. Its methods are safe for concurrent use.
type RateLog struct {
	log   *slog.Logger
	msg   string
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex // guards the fields below
	next       time.Time  // when the next line may be written
	suppressed int        // occurrences held back since the last line
}

// NewRateLog returns a RateLog writing msg to log (nil discards) at most once per every (zero
// means DefaultRateLogEvery), telling the time by now (nil means time.Now).
func NewRateLog(log *slog.Logger, msg string, every time.Duration, now func() time.Time) *RateLog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = DefaultRateLogEvery
	}
	if now == nil {
		now = time.Now
	}
	return &RateLog{log: log, msg: msg, every: every, now: now}
}

// Warn writes the warning with args, with the count held back since the last line if any, or
// only counts it if the last line was written less than the interval ago.
func (l *RateLog) Warn(args ...any) {
	now := l.now()
	l.mu.Lock()
	if now.Before(l.next) {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.suppressed = 0
	l.next = now.Add(l.every)
	l.mu.Unlock()
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n) // never the caller's array
	}
	l.log.Warn(l.msg, args...)
}
