//go:build linux && (amd64 || arm64) && !race

// Not under the race detector: its shadow memory takes page faults of its own for every page
// of heap written, which Run does not populate (and need not: no edge runs with -race).

package prefault

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"syscall"
	"testing"
	"time"
)

func minorFaults(t *testing.T) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Minflt
}

// held keeps each run's buffers: a later run (go test -count) must grow the heap again rather
// than reuse their memory, which was resident before its watcher began.
var held [][]byte

// Memory the heap grows into is resident by the time the program writes to it: writing 64 MiB
// of new buffers takes next to no page faults (16,384 without populating). The watcher looks
// after each buffer, as Run's ticks do while a cache fills.
func TestPopulatesNewHeapMemory(t *testing.T) {
	w, ok := newWatcher()
	if !ok {
		t.Fatal("no watcher on Linux")
	}
	before := populated.Load()
	const n, size = 64, 1 << 20
	keep := make([][]byte, 0, n)
	for range n {
		keep = append(keep, make([]byte, size))
		if _, ok := w.step(); !ok {
			t.Skip("this kernel cannot populate (MADV_POPULATE_WRITE needs Linux 5.14): Run does nothing here")
		}
	}
	if got := populated.Load() - before; got < n*size*3/4 {
		t.Fatalf("populated %d bytes of %d new", got, n*size)
	}
	f0 := minorFaults(t)
	for _, b := range keep {
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
	}
	faults := minorFaults(t) - f0
	held = append(held, keep...)
	if pages := int64(n * size / 4096); faults > pages/4 {
		t.Fatalf("writing %d new pages took %d page faults, want under %d", pages, faults, pages/4)
	}
}

// Run looks every interval while the heap grows, and idleFactor times less often once it has
// not grown for idleSteps looks, until it grows again.
func TestPace(t *testing.T) {
	const iv = 5 * time.Millisecond
	p := pace{interval: iv}
	for i := 1; i < idleSteps; i++ {
		if d := p.after(false); d != iv {
			t.Fatalf("look %d without growth: next in %v, want %v", i, d, iv)
		}
	}
	for range 3 {
		if d := p.after(false); d != iv*idleFactor {
			t.Fatalf("after %d looks without growth: next in %v, want %v", idleSteps, d, iv*idleFactor)
		}
	}
	if d := p.after(true); d != iv {
		t.Fatalf("growth after a quiet spell: next in %v, want %v", d, iv)
	}
	if d := p.after(false); d != iv {
		t.Fatalf("the look after a growth: next in %v, want %v", d, iv)
	}
}

// The watcher says when the heap grew, and only then, also while the runtime holds more than
// lookahead released to the system (an edge at its memory limit), when it does not populate.
func TestStepSeesGrowth(t *testing.T) {
	junk := make([]byte, 64<<20)
	junk[0] = 1
	junk = nil
	debug.FreeOSMemory()
	if r := released(); r <= lookahead {
		t.Fatalf("%d bytes released after freeing 64 MiB, want over %d", r, lookahead)
	}
	w, ok := newWatcher()
	if !ok {
		t.Fatal("no watcher on Linux")
	}
	// More than the runtime holds released: it must map more.
	big := make([]byte, released()+64<<20)
	grew, _ := w.step()
	held = append(held, big)
	if !grew {
		t.Fatal("a look after an allocation larger than the released memory saw no growth")
	}
	again := 0
	for range 3 {
		if grew, _ := w.step(); grew {
			again++ // a collection elsewhere in the test binary may map memory once
		}
	}
	if again > 1 {
		t.Fatalf("%d of 3 looks without an allocation saw growth", again)
	}
	// Leave no released memory behind for the next test (go test -count), which would be
	// given it rather than new memory.
	for i := 0; i < 1024 && released() > 1<<20; i++ {
		held = append(held, make([]byte, 1<<20))
	}
}

// released is what the runtime has returned to the system.
func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Run stops when its context ends.
func TestRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, time.Hour)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestParseMapsLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want mapping
		ok   bool
	}{
		{"c000000000-c004000000 rw-p 00000000 00:00 0 ", mapping{0xc000000000, 0xc004000000}, true},
		{"c000000000-c004000000 rw-p 00000000 00:00 0", mapping{0xc000000000, 0xc004000000}, true},
		{"c000000000-c004000000 rw-p 00000000 00:00 0                          [anon: Go: heap]", mapping{0xc000000000, 0xc004000000}, true},
		{"c000000000-c004000000 rw-p 00000000 00:00 0 [anon:", mapping{0xc000000000, 0xc004000000}, true},
		{"c004000000-c008000000 ---p 00000000 00:00 0 [anon: Go: heap reservation]", mapping{}, false},
		{"7ffd000-7ffe000 rw-p 00000000 00:00 0 [heap]", mapping{}, false},
		{"7ffd000-7ffe000 rw-p 00000000 00:00 0 anon:", mapping{}, false},
		{"c004000000-c008000000 ---p 00000000 00:00 0", mapping{}, false},
		{"7f0000000000-7f0000001000 r--p 00000000 08:01 1234 /usr/lib/libc.so", mapping{}, false},
		{"7f0000000000-7f0000001000 rw-p 00000000 08:01 1234 /usr/lib/libc.so", mapping{}, false},
		{"7ffd000-7ffe000 rw-p 00000000 00:00 0 [stack]", mapping{}, false},
		{"a235b400000-a235fc00000 rw-s 00000000 00:05 77", mapping{}, false},
		{"zz-c0 rw-p 0 00:00 0", mapping{}, false},
		{"c1-c0 rw-p 0 00:00 0", mapping{}, false},
		{"", mapping{}, false},
	} {
		got, ok := parseMapsLine([]byte(tc.line))
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMapsLine(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}
