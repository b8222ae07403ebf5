// Package prefault populates the Go heap's new memory in bulk, before the allocator touches it.
//
// Why: a process whose heap keeps growing (an edge filling its cache: every unique-URL miss
// stores a new object) takes a page fault for every new 4 KiB page. On some virtual machines a
// fault costs tens of microseconds (19 µs on the 2-core VM of docs/benchmarks.md, where one
// madvise(MADV_POPULATE_WRITE) over a range costs 0.9 µs a page): a 16 KiB miss into a filling
// store took six faults, about 115 µs of its 420. The runtime maps the heap in chunks of a few MiB as it grows; Run watches
// for new heap mappings and populates each once, so the allocator finds its pages resident.
// Populating changes no byte (the pages stay zero, as the runtime expects of fresh memory)
// and never touches memory already in use; it only moves the faults into one system call.
// (On that VM two days later the first write to a populated page still cost 7-8 µs outside
// the guest's kernel, so populating saved about half of each fault: docs/benchmarks.md,
// "Twentieth pass".)
//
// Only new memory at the top of the heap is populated, once, and only while the runtime holds
// at most lookahead (16 MiB) of memory it has not used yet; memory the runtime has released to
// the operating system (its scavenger, under a memory limit) is left released. So the
// process's resident size exceeds the runtime's own accounting by about lookahead at most.
// Linux 5.14 or later on amd64 and arm64; elsewhere Run returns at once.
package prefault

import (
	"context"
	"sync/atomic"
	"time"
)

// populated counts the bytes Run has populated, for the tests.
var populated atomic.Int64

// Run checks for new heap memory every interval until ctx ends, populating it. It returns at
// once where populating is not supported.
func Run(ctx context.Context, interval time.Duration) {
	w, ok := newWatcher()
	if !ok {
		return
	}
	p := pace{interval: interval}
	cur := interval
	t := time.NewTicker(cur)
	defer t.Stop()
	for {
		grew, ok := w.step()
		if !ok {
			return // populating failed for good (an old kernel): stop trying
		}
		if d := p.after(grew); d != cur {
			cur = d
			t.Reset(cur)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// A look costs a read of the runtime's metrics (tens of microseconds): an edge serving hits
// from a store that no longer grows spent 2.9 % of its CPU looking every 5 ms for nothing
// (issue 15). After idleSteps looks without growth Run looks idleFactor times less often,
// until the heap grows again.
const (
	idleSteps  = 200
	idleFactor = 16
)

// pace is Run's interval between looks.
type pace struct {
	interval time.Duration
	idle     int // looks since the heap last grew
}

// after returns the interval until the next look, given whether this one found the heap grown.
func (p *pace) after(grew bool) time.Duration {
	if grew {
		p.idle = 0
		return p.interval
	}
	p.idle = min(p.idle+1, idleSteps)
	if p.idle == idleSteps {
		return p.interval * idleFactor
	}
	return p.interval
}
