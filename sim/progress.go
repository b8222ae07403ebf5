package sim

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/sim/report"
)

// Progress draws the progress line of a running simulation: elapsed/total, requests/s over the
// last interval, hit ratio and errors. On a terminal the line is redrawn in place with '\r';
// elsewhere (CI logs) a plain line is written every Interval. Its zero value needs only Out
// and Live set.
type Progress struct {
	// Out receives the progress lines. Required.
	Out io.Writer
	// Live returns the running totals, e.g. Recorder.Live. Required.
	Live func() report.Live
	// Total is the run's length, shown as elapsed/total. Default 0: elapsed only.
	Total time.Duration
	// Warmup is the start of Total during which nothing is recorded: the final line's average
	// rate is over the time after it. Default 0.
	Warmup time.Duration
	// Terminal redraws one line in place; set it with IsTerminal(Out). Default false.
	Terminal bool
	// Interval between draws. Default 250ms on a terminal, 5s otherwise.
	Interval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// IsTerminal reports whether w is a character device (a terminal), where Progress redraws in
// place.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Run draws until ctx ends, then draws a final line (ended with a newline on a terminal) and
// returns. It starts no goroutines.
func (p *Progress) Run(ctx context.Context) {
	now := p.Now
	if now == nil {
		now = time.Now
	}
	interval := p.Interval
	if interval <= 0 {
		interval = 5 * time.Second
		if p.Terminal {
			interval = 250 * time.Millisecond
		}
	}
	start := now()
	last, lastAt := p.Live(), start
	t := time.NewTicker(interval)
	defer t.Stop()
	draw := func(final bool) {
		at := now()
		cur := p.Live()
		rate := 0.0
		if dt := at.Sub(lastAt).Seconds(); dt > 0 {
			rate = float64(cur.Requests-last.Requests) / dt
		}
		if final {
			if total := (at.Sub(start) - p.Warmup).Seconds(); total > 0 {
				rate = float64(cur.Requests) / total
			}
		}
		last, lastAt = cur, at
		line := FormatProgress(cur, rate, at.Sub(start), p.Total)
		if p.Terminal {
			end := ""
			if final {
				end = "\n"
			}
			fmt.Fprintf(p.Out, "\r%s\x1b[K%s", line, end)
		} else {
			fmt.Fprintln(p.Out, line)
		}
	}
	for {
		select {
		case <-ctx.Done():
			draw(true)
			return
		case <-t.C:
			draw(false)
		}
	}
}

// FormatProgress renders one progress line, e.g.
// "[#####-----]  30s/60s  2150 req/s  hit 87.3%  errors 12".
func FormatProgress(l report.Live, rate float64, elapsed, total time.Duration) string {
	var b strings.Builder
	if total > 0 {
		const width = 20
		done := min(max(int(float64(width)*elapsed.Seconds()/total.Seconds()), 0), width)
		b.WriteString("[" + strings.Repeat("#", done) + strings.Repeat("-", width-done) + "] ")
		fmt.Fprintf(&b, "%3.0fs/%.0fs", elapsed.Seconds(), total.Seconds())
	} else {
		fmt.Fprintf(&b, "%3.0fs", elapsed.Seconds())
	}
	hit := 0.0
	if l.Requests > 0 {
		hit = 100 * float64(l.Hits) / float64(l.Requests)
	}
	fmt.Fprintf(&b, "  %6.0f req/s  hit %5.1f%%  errors %d  requests %d", rate, hit, l.Errors, l.Requests)
	return b.String()
}
