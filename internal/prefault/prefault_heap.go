//go:build linux && (amd64 || arm64)

package prefault

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// heapWindow is where the Go heap lies around one of its objects: the runtime maps its arenas
// contiguously upward from a (randomised) base, while its own bookkeeping, thread stacks and
// everything else are mapped by the kernel near the top of the address space, tens of
// terabytes away. A terabyte above is more heap than an edge will have.
func heapWindow() (low, high uintptr) {
	probe := make([]byte, 1<<20) // large: it comes from a heap arena, not a cache
	addr := uintptr(unsafe.Pointer(&probe[0]))
	runtime.KeepAlive(probe)
	return addr - min(addr, 1<<34), addr + 1<<40
}

// chunk is how much is populated per system call, so that the mapping lock is held briefly;
// lookahead bounds the memory the runtime has not used yet when Run populates (see step).
const (
	chunk     = 1 << 20
	lookahead = 16 << 20
)

type watcher struct {
	low, top uintptr // heapWindow: where the heap can be
	sample   []metrics.Sample
	total    uint64  // the runtime's mapped memory when step last populated
	seen     uint64  // the runtime's mapped memory at the last look (grew)
	high     uintptr // everything below is either populated or was in use before Run began
}

func newWatcher() (*watcher, bool) {
	w := &watcher{sample: []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}}
	w.low, w.top = heapWindow()
	metrics.Read(w.sample)
	if w.sample[0].Value.Kind() != metrics.KindUint64 || w.sample[1].Value.Kind() != metrics.KindUint64 {
		return nil, false
	}
	w.total = w.sample[0].Value.Uint64()
	w.seen = w.total
	// What the heap holds now was faulted in already: start above it.
	maps, err := heapMappings(w.low, w.top)
	if err != nil {
		return nil, false
	}
	for _, m := range maps {
		w.high = max(w.high, m.end)
	}
	return w, true
}

// step populates heap mappings above high once the runtime has mapped more memory. grew says
// whether it had since the last look; ok is false if populating is not supported. It
// populates only while the runtime holds little memory it has never used (or has returned):
// that is the new memory the allocator is about to touch, and what it counts as released is
// also what a populated page costs in resident memory beyond the runtime's own accounting, so
// that excess stays under lookahead.
func (w *watcher) step() (grew, ok bool) {
	metrics.Read(w.sample)
	total, released := w.sample[0].Value.Uint64(), w.sample[1].Value.Uint64()
	grew = total > w.seen
	w.seen = total
	if total <= w.total {
		return grew, true
	}
	if released > lookahead {
		return grew, true // the runtime maps ahead of use, or has returned memory: leave it be
	}
	w.total = total
	maps, err := heapMappings(w.low, w.top)
	if err != nil {
		return grew, true // try again at the next growth
	}
	for _, m := range maps {
		if m.end <= w.high {
			continue
		}
		for a := max(m.start, w.high); a < m.end; a += chunk {
			n := min(chunk, m.end-a)
			_, _, e := unix.Syscall(unix.SYS_MADVISE, a, n, unix.MADV_POPULATE_WRITE) // Linux 5.14: fault in, writable, without writing
			if e == unix.EINVAL || e == unix.ENOSYS {
				return true, false
			}
			if e != 0 {
				break // the mapping changed under us: the rest of it is left to the allocator
			}
			populated.Add(int64(n))
		}
		w.high = m.end
	}
	return grew, true
}

type mapping struct{ start, end uintptr }

// heapMappings lists the readable and writable anonymous mappings within [low, high), from
// /proc/self/maps.
func heapMappings(low, high uintptr) ([]mapping, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	s := bufio.NewScanner(f)
	for s.Scan() {
		m, ok := parseMapsLine(s.Bytes())
		if ok && m.start >= low && m.end <= high {
			out = append(out, m)
		}
	}
	return out, s.Err()
}

// parseMapsLine reads "start-end perms offset dev inode [path]", keeping private read-write
// anonymous mappings: those without a path, and those the process named. Go 1.25 and later
// name their heap "[anon: Go: heap]" where the kernel allows it (CONFIG_ANON_VMA_NAME, as on
// Ubuntu's kernels), and without this Run found no heap there and did nothing.
func parseMapsLine(line []byte) (mapping, bool) {
	f := bytes.Fields(line)
	if len(f) < 5 || len(f) > 5 && !bytes.HasPrefix(f[5], []byte("[anon:")) || !bytes.Equal(f[1], []byte("rw-p")) {
		return mapping{}, false
	}
	lo, hi, ok := bytes.Cut(f[0], []byte("-"))
	if !ok {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(string(lo), 16, 64)
	end, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return mapping{}, false
	}
	return mapping{uintptr(start), uintptr(end)}, true
}
