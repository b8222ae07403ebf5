package fleet

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultRateLogEvery is how often a RateLog writes its warning at most when none is given.
const DefaultRateLogEvery = time.Minute

// RateLog writes one recurring warning at most once per interval: the first at once; those
// within the interval after a line are held back, and when the interval ends the latest of
// them is written with the count of the others ("suppressed"), whether or not another comes,
// so that a burst's count is not lost when the warnings stop. That line starts the next
// interval. Warnings that a peer on the bus can cause at will, with what it aims at a subject
// others listen on or writes under its own key, go through one, so that a hostile or broken
// peer cannot fill the disk. Its methods are safe for concurrent use.
//
// While warnings are held back a timer is armed for the end of the interval: no goroutine
// waits on it, and the one it starts writes the line and returns. Its owner calls Stop when it
// stops, which writes what is held back at once and leaves no timer behind.
type RateLog struct {
	log   *slog.Logger
	msg   string
	every time.Duration

	mu         sync.Mutex  // guards the fields below
	next       time.Time   // when the next line may be written
	suppressed int         // occurrences held back since the last line
	last       []any       // the latest held back's args (a buffer reused while none is)
	timer      *time.Timer // ends the interval while some are held back; nil when not armed
	stopped    bool        // Stop was called: no timer is armed again

	// armed counts the timer while it is armed or its function runs, for Stop to wait for.
	armed sync.WaitGroup
}

// NewRateLog returns a RateLog writing msg to log (nil discards) at most once per every (zero
// means DefaultRateLogEvery). It tells the time by time.Now and times the end of an interval
// with time.AfterFunc, which testing/synctest fakes for tests.
func NewRateLog(log *slog.Logger, msg string, every time.Duration) *RateLog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = DefaultRateLogEvery
	}
	return &RateLog{log: log, msg: msg, every: every}
}

// Warn writes the warning with args, with the count held back since the last line if any, or
// holds it back if the last line was written less than the interval ago (see RateLog).
func (l *RateLog) Warn(args ...any) {
	now := time.Now()
	l.mu.Lock()
	if now.Before(l.next) {
		l.suppressed++
		l.last = append(l.last[:0], args...) // a copy: the caller's array is its own
		if l.timer == nil && !l.stopped {
			l.armed.Add(1)
			l.timer = time.AfterFunc(l.next.Sub(now), l.endInterval)
		}
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.suppressed = 0
	clear(l.last) // let go of what they refer to
	l.last = l.last[:0]
	l.next = now.Add(l.every)
	// This line carries the count: the timer has nothing left to write. One that could not be
	// stopped is already running, and finds the new interval (endInterval).
	if l.timer != nil && l.timer.Stop() {
		l.timer = nil
		l.armed.Done()
	}
	l.mu.Unlock()
	l.write(args, n)
}

// endInterval is the timer's function: it writes what was held back in the interval that
// ended, or waits on for the end of a later one that a line since started.
func (l *RateLog) endInterval() {
	l.mu.Lock()
	now := time.Now()
	if now.Before(l.next) && l.suppressed > 0 && !l.stopped {
		l.timer.Reset(l.next.Sub(now))
		l.mu.Unlock()
		return
	}
	l.timer = nil
	args, others, ok := l.takeLocked(now)
	l.mu.Unlock()
	if ok {
		l.write(args, others)
	}
	l.armed.Done()
}

// Stop writes at once what is held back, and arms no timer again; it returns once a timer
// already running has written its line. Its owner calls it when it stops, so that the
// RateLog writes nothing after it. A warning after Stop is still rate limited, but one it
// holds back is counted only in the next line. Stop may be called more than once.
func (l *RateLog) Stop() {
	l.mu.Lock()
	l.stopped = true
	if l.timer != nil && l.timer.Stop() {
		l.timer = nil
		l.armed.Done()
	}
	l.mu.Unlock()
	l.armed.Wait()
	l.mu.Lock()
	args, others, ok := l.takeLocked(time.Now())
	l.mu.Unlock()
	if ok {
		l.write(args, others)
	}
}

// takeLocked returns the args of the latest warning held back and how many others were, and
// starts the interval of the line they are written in at now; ok is false when none was held
// back.
func (l *RateLog) takeLocked(now time.Time) (args []any, others int, ok bool) {
	if l.suppressed == 0 {
		return nil, 0, false
	}
	args, others = l.last, l.suppressed-1
	l.last, l.suppressed = nil, 0 // the line keeps args; the next held back gets a new buffer
	l.next = now.Add(l.every)
	return args, others, true
}

// write writes the warning with args, and with n as "suppressed" if any were held back.
func (l *RateLog) write(args []any, n int) {
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n) // never the caller's array
	}
	l.log.Warn(l.msg, args...)
}
