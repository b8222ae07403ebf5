// Command gclayout measures what a full cache costs Go's garbage collector per stored object,
// for several ways of laying the objects out in the heap (issue 15, docs/benchmarks.md,
// "Sixteenth pass"). At a full store the collector marks every stored object in every cycle,
// so this cost, times the objects a store holds, is the CPU each cycle takes from requests.
//
// Each layout is built in a process of its own (the command runs itself once per layout and
// run, the layouts alternating), n objects in a map keyed by uint64 as Ristretto keeps its
// entries, each with meta bytes (the packed fields and header) and a body; then complete
// collections are timed (runtime.GC: mark and sweep, on every P) and the time is divided by n.
//
//	go run ./bench/gclayout -n 650000 -runs 2
//
// Layouts: "apart" is the store as it is (a map of pointers to entries, meta and body two
// allocations each); "one" puts meta and body in one allocation; "batch32" 32 objects' bytes in
// one allocation; "slab" every object's bytes in one allocation, still reached through a
// pointer per entry; "values" the same with the entries in the map itself; "offsets" entries
// with no pointers at all (an offset into the slab), which the collector never follows.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"time"
	"unsafe"
)

// packed and entry mirror edge/store's: the fields, and so the pointers, an entry holds (the
// blank ones are only there for their size and pointers).
type packed struct {
	meta string
	body []byte
}

type entry struct {
	_   []string // vary
	_   []packed // variants
	one packed
	_   int64  // cost
	_   uint32 // slot
	_   uint32 // gone
}

// item mirrors Ristretto's storeItem: what its map holds per key.
type item[V any] struct {
	key   uint64
	_     uint64 // conflict
	value V
	_     time.Time // expiration
}

var layouts = []string{"apart", "one", "batch32", "slab", "values", "offsets"}

func main() {
	n := flag.Int("n", 650_000, "stored objects (a full 1 GiB store holds about 650,000 of 1 KiB)")
	metaLen := flag.Int("meta", 480, "meta bytes per object")
	bodyLen := flag.Int("body", 1024, "body bytes per object")
	runs := flag.Int("runs", 2, "processes per layout")
	cycles := flag.Int("cycles", 10, "collections timed per process")
	layout := flag.String("layout", "", "measure this layout in this process (else all, each in its own)")
	flag.Parse()
	if *layout != "" {
		ns, err := measure(*layout, *n, *metaLen, *bodyLen, *cycles)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gclayout:", err)
			os.Exit(2)
		}
		fmt.Printf("%.1f\n", ns)
		return
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gclayout:", err)
		os.Exit(1)
	}
	res := map[string][]float64{}
	for range *runs {
		for _, l := range layouts {
			out, err := exec.Command(self, "-layout", l, "-n", fmt.Sprint(*n), "-meta", fmt.Sprint(*metaLen),
				"-body", fmt.Sprint(*bodyLen), "-cycles", fmt.Sprint(*cycles)).Output()
			if err != nil {
				fmt.Fprintf(os.Stderr, "gclayout: layout %s: %v\n", l, err)
				os.Exit(1)
			}
			var ns float64
			if _, err := fmt.Sscan(string(out), &ns); err != nil {
				fmt.Fprintf(os.Stderr, "gclayout: layout %s printed %q\n", l, out)
				os.Exit(1)
			}
			res[l] = append(res[l], ns)
		}
	}
	fmt.Printf("%d objects (meta %d B, body %d B), ns per object per collection, %d runs:\n", *n, *metaLen, *bodyLen, *runs)
	for _, l := range layouts {
		fmt.Printf("  %-8s %v\n", l, res[l])
	}
}

// measure builds n objects in layout l and returns the median time of a complete collection
// per object.
func measure(l string, n, metaLen, bodyLen, cycles int) (float64, error) {
	size := metaLen + bodyLen
	var slab []byte
	if l == "slab" || l == "values" || l == "offsets" {
		slab = make([]byte, n*size)
	}
	var batch []byte
	bytesOf := func(i int) packed {
		var b []byte
		switch l {
		case "apart":
			m := make([]byte, metaLen)
			return packed{meta: unsafe.String(unsafe.SliceData(m), metaLen), body: make([]byte, bodyLen)}
		case "one":
			b = make([]byte, size)
		case "batch32":
			if i%32 == 0 {
				batch = make([]byte, 32*size)
			}
			j := i % 32
			b = batch[j*size : (j+1)*size : (j+1)*size]
		default:
			b = slab[i*size : (i+1)*size : (i+1)*size]
		}
		return packed{meta: unsafe.String(unsafe.SliceData(b), metaLen), body: b[metaLen:]}
	}
	var keep any
	switch l {
	case "apart", "one", "batch32", "slab":
		m := make(map[uint64]item[*entry], n)
		for i := range n {
			m[uint64(i)] = item[*entry]{key: uint64(i), value: &entry{one: bytesOf(i)}}
		}
		keep = m
	case "values":
		m := make(map[uint64]item[entry], n)
		for i := range n {
			m[uint64(i)] = item[entry]{key: uint64(i), value: entry{one: bytesOf(i)}}
		}
		keep = m
	case "offsets":
		type at struct{ off, len uint32 }
		m := make(map[uint64]item[at], n)
		for i := range n {
			m[uint64(i)] = item[at]{key: uint64(i), value: at{uint32(i * size), uint32(size)}}
		}
		keep = m
	default:
		return 0, fmt.Errorf("unknown layout %q (one of %v)", l, layouts)
	}
	runtime.GC()
	times := make([]float64, cycles)
	for i := range times {
		t := time.Now()
		runtime.GC()
		times[i] = float64(time.Since(t).Nanoseconds()) / float64(n)
	}
	runtime.KeepAlive(keep)
	runtime.KeepAlive(slab)
	slices.Sort(times)
	return times[len(times)/2], nil
}
