package store

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// heapObjects is the number of live heap objects after a complete collection.
func heapObjects() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapObjects)
}

// twelveFields is a typical origin header of 12 fields, as a fill stores it.
func twelveFields(i int) http.Header {
	return http.Header{
		"Content-Type":   {"image/webp"},
		"Content-Length": {"1024"},
		"Cache-Control":  {"public, max-age=3600"},
		"Etag":           {fmt.Sprintf(`"%016x"`, i)},
		"Last-Modified":  {"Mon, 02 Nov 2026 10:00:00 GMT"},
		"Date":           {"Tue, 01 Dec 2026 10:00:00 GMT"},
		"Server":         {"origin/1.0"},
		"Accept-Ranges":  {"bytes"},
		"Via":            {"1.1 lon-1"},
		"Surrogate-Key":  {fmt.Sprintf("img product-%d", i%1000)},
		"X-Request-Id":   {fmt.Sprintf("%016x", i)},
		"Set-Cookie":     {"a=1", "b=2"},
	}
}

// TestHeapObjectsPerObject checks what a stored object costs the GC: the live heap objects it
// adds. With its 12-field header held as an http.Header map, it was 9 (the map, its directory,
// table and groups 4 of them); without the map 5, with an array of strings locating the
// header in the arena; then 4: the Object, its arena (with the index), its body and its entry
// (Ristretto's bookkeeping is in large tables); then 3: the entry, its meta (the Object's
// fields and arena, packed.go) and its body, and only the entry has pointers; now none of its
// own: a record in a segment of some hundreds of them (segment.go), and about 0.05 for the
// segments and the growth of Ristretto's tables. Reading objects
// (hits) adds at most one view per slot of the store's view table (Store.shared), not one per
// object read.
func TestHeapObjectsPerObject(t *testing.T) {
	const n = 20_000
	s, err := New(Config{MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	paths := make([]string, n) // the test's own, made before it counts
	for i := range paths {
		paths[i] = fmt.Sprintf("/assets/img/%08d.webp", i)
	}
	before := heapObjects()
	for i, path := range paths {
		// Each object is built as a fill builds it, and is garbage but for what the store keeps.
		o := &Object{Primary: "www.example.com" + path, Host: "www.example.com", Path: path, Status: 200,
			Header: twelveFields(i), Body: make([]byte, 1024), StoredAt: now, ResponseTime: now,
			Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}, Keys: []string{"img", fmt.Sprintf("product-%d", i%1000)}}
		if !s.Put(o) {
			t.Fatal("Put refused an object with room to spare")
		}
	}
	stored := heapObjects()
	per := float64(stored-before) / n
	t.Logf("%.2f heap objects per stored object", per)
	if per > 0.1 {
		t.Errorf("%.2f heap objects per stored object, want at most 0.1, records in shared segments (a map of 12 fields alone is 4: with the map, 9)", per)
	}
	for _, path := range paths {
		if o, _, _ := s.Lookup("www.example.com"+path, nil); o == nil {
			t.Fatalf("%s not found", path)
		}
	}
	read := heapObjects()
	per = float64(read-stored) / n
	t.Logf("%.2f heap objects more per object read once (%d view slots)", per, len(s.views))
	if limit := float64(len(s.views))/n + 0.05; per > limit {
		t.Errorf("%.2f heap objects more per object read once, want at most %.2f: views are kept beyond the table", per, limit)
	}
	runtime.KeepAlive(paths)
	runtime.KeepAlive(s)
}

// BenchmarkCollection is what a full store costs each collection: the time of one complete
// GC of a heap holding 100,000 stored objects (1 KiB bodies, the corpus's 12 to 14 header
// fields), per stored object, with every object read once (read=true) or never. At a full store the collector runs about once per second under
// misses, and marks every stored object each time: the cost grows with the pointers and heap
// objects an object holds, not with its bytes (issue 15, docs/benchmarks.md).
func BenchmarkCollection(b *testing.B) {
	for _, read := range []bool{false, true} {
		b.Run(fmt.Sprintf("read=%v", read), func(b *testing.B) {
			const n = 100_000
			s, err := New(Config{MaxBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			c := newCorpus()
			for range n {
				o := c.object(b, 1024)
				if !s.Put(o) {
					b.Fatal("Put refused an object with room to spare")
				}
				if read { // each object read once, as a hit reads it, and let go
					if got, _, _ := s.Lookup(o.Primary, http.Header{"Accept-Encoding": {"br"}}); got == nil {
						b.Fatal("stored object not found")
					}
				}
			}
			runtime.GC()
			for b.Loop() {
				runtime.GC()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/object")
			runtime.KeepAlive(s)
		})
	}
}
