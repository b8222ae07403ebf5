package store

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// newStoreOf is a store of maxBytes, closed when t ends.
func newStoreOf(t testing.TB, maxBytes int64) *Store {
	t.Helper()
	s, err := New(Config{MaxBytes: maxBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// held is what the store holds for key, in Ristretto or still pending (pending.go).
func held(s *Store, key string) (ref, bool) { return s.get(key) }

// keyed is an object whose header and body name its key and version, so that a reader can
// tell a record read back from another's.
func keyed(key string, version, size int) *Object {
	now := time.Now()
	unit := fmt.Sprintf("%s@%d;", key, version)
	body := []byte(strings.Repeat(unit, size/len(unit)+1)[:size])
	return &Object{Primary: "h.test/" + key, Host: "h.test", Path: "/" + key, Status: 200,
		Header: http.Header{"X-Key": {key}, "X-Version": {strconv.Itoa(version)}}, Body: body,
		StoredAt: now, ResponseTime: now, Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}}
}

// checkKeyed fails unless o is the object keyed(key, version, size) made, for some version, and
// returns that version.
func checkKeyed(t testing.TB, o *Object, key string, size int) int {
	t.Helper()
	v, err := strconv.Atoi(o.HeaderValue("X-Version"))
	if err != nil || o.HeaderValue("X-Key") != key || string(o.Body) != string(keyed(key, v, size).Body) {
		t.Errorf("Lookup(%s) read %q version %q, body %.40q...", key, o.HeaderValue("X-Key"), o.HeaderValue("X-Version"), o.Body)
	}
	return v
}

// TestReclaimBoundsSegments fills a store with many times what it holds, unique URLs as a
// CDN meets them: reclaim must keep the segments within the records' charge (a quarter more
// than their bytes, and the two segments in hand), move records to do it, and every record
// still stored must read back as it was put.
func TestReclaimBoundsSegments(t *testing.T) {
	const size = 1000
	s := newStoreOf(t, 16<<20)
	const n = 40_000
	for i := range n {
		s.Put(keyed("k"+strconv.Itoa(i), 1, size))
	}
	// The last Puts' admissions and evictions (pending.go), and the reclaim the next Put
	// would run after them.
	s.cache.Wait()
	s.reclaim()
	st := s.Stats()
	seg := int64(s.segSize)
	t.Logf("%d puts: %d items, %d evictions, %d segments of %d KiB, %.1f MiB live, %d moved (%.2f per put)",
		n, st.Items, st.Evictions, st.Segments, seg>>10, mib(st.Live), st.Moved, float64(st.Moved)/n)
	if st.Moved == 0 {
		t.Error("no record moved: reclaim did not run")
	}
	if held, limit := st.Segments*seg, st.Live+slack(st.Live)+2*seg; held > limit {
		t.Errorf("segments hold %d B for %d B of live records, want at most %d", held, st.Live, limit)
	}
	found := 0
	for i := range n {
		key := "k" + strconv.Itoa(i)
		if o, _, _ := s.Lookup("h.test/"+key, nil); o != nil {
			found++
			checkKeyed(t, o, key, size)
		}
	}
	if int64(found) != st.Items {
		t.Errorf("%d keys found, the store reports %d items", found, st.Items)
	}
}

// TestMoveDropsView stores a key, reads it (its view takes a slot), then empties the rest of
// its segment so that reclaim moves it: the view must leave its slot, the key must read back
// the same from its new place, and the Object read before the move must still read as it did
// (the segment it points into is the collector's to free, not the store's to reuse).
func TestMoveDropsView(t *testing.T) {
	const size = 1000
	s := newStoreOf(t, 16<<20)
	s.Put(keyed("k", 1, size))
	before, _, _ := s.Lookup("h.test/k", nil)
	if before == nil {
		t.Fatal("k not found")
	}
	first, _ := held(s, "h.test/k")
	firstSeg := segOfRef(s, first)
	others := putUntilSegments(t, s, "x", 10, size)
	// Delete every other record, and every record of k's segment but k.
	for i, key := range others {
		if r, _ := held(s, "h.test/"+key); i%2 == 0 || segOfRef(s, r) == firstSeg {
			s.Delete("h.test/" + key)
		}
	}
	s.Put(keyed("last", 1, size)) // reclaims
	moved, ok := held(s, "h.test/k")
	if !ok || moved != first || segOfRef(s, moved) == nil || segOfRef(s, moved) == firstSeg || s.Stats().Moved == 0 {
		t.Fatalf("k at %+v after reclaim, first at %+v, %d moved; want k moved, its handle kept", moved, first, s.Stats().Moved)
	}
	set := s.viewSet(first.slot)
	for i := range set {
		if v := set[i].Load(); v != nil && v.g == firstSeg {
			t.Error("the view of k's old record is still in its slot")
		}
	}
	after, _, _ := s.Lookup("h.test/k", nil)
	if after == nil || after == before {
		t.Fatalf("Lookup after the move = %p, before %p; want a new view", after, before)
	}
	checkKeyed(t, after, "k", size)
	checkKeyed(t, before, "k", size)
}

// TestReclaimKeepsNewestPut races reclaim against Puts of the same keys: writers put
// increasing versions of hot keys while a churn of unique keys makes reclaim move records, and
// readers check that every object reads whole and that no key ever goes back to an older
// version (a move that put back a record a newer Put replaced). Run it with -race.
func TestReclaimKeepsNewestPut(t *testing.T) {
	const (
		hot      = 16
		versions = 300
		size     = 700
	)
	s := newStoreOf(t, 4<<20)
	var wg, churn sync.WaitGroup
	stop := make(chan struct{})
	churn.Add(1)
	go func() { // unique keys: evictions, dead bytes, moves
		defer churn.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				s.Put(keyed("c"+strconv.Itoa(i), 1, size))
			}
		}
	}()
	var done atomic.Int32
	for k := range hot {
		key := "hot" + strconv.Itoa(k)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer done.Add(1)
			for v := 1; v <= versions; v++ {
				s.Put(keyed(key, v, size))
			}
		}()
		go func() {
			defer wg.Done()
			last := 0
			for done.Load() < hot {
				if o, _, _ := s.Lookup("h.test/"+key, nil); o != nil {
					if v := checkKeyed(t, o, key, size); v < last {
						t.Errorf("%s read version %d after %d", key, v, last)
						return
					} else {
						last = v
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	churn.Wait()
	st := s.Stats()
	t.Logf("%d moved, %d segments, %.1f MiB live, %d evictions", st.Moved, st.Segments, mib(st.Live), st.Evictions)
	if st.Moved == 0 {
		t.Error("no record moved: the test did not race reclaim")
	}
	for k := range hot {
		key := "hot" + strconv.Itoa(k)
		if o, _, _ := s.Lookup("h.test/"+key, nil); o != nil {
			if v := checkKeyed(t, o, key, size); v != versions {
				t.Errorf("%s reads version %d after the last Put of %d", key, v, versions)
			}
		}
	}
}

// TestMoveInEvictionGap moves a record while Ristretto is evicting its key, between taking the
// value out of its map and calling OnExit (held there by exitHook), and puts a new version of
// the key before that OnExit runs: the new version must win, as if the move had not happened.
func TestMoveInEvictionGap(t *testing.T) {
	s := newStoreOf(t, 4<<20)
	// No Put waits for Ristretto (pending.go), so that the filler below, once it sees the
	// gap, has stopped before version 2 is queued: a big Put of its queued after version 2
	// could evict it (CI saw "K not found" once).
	s.pendMax = 1 << 40
	const key = "K"
	stripe := s.hash("h.test/"+key) % uint64(len(s.locks))
	var target ref
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.exitHook = func(r ref) {
		if r == target {
			once.Do(func() { close(entered); <-release })
		}
	}
	if !s.Put(keyed(key, 1, 500)) {
		t.Fatal("Put refused")
	}
	target, _ = held(s, "h.test/"+key) // the hook reads it only from the next exit on
	if target.h == 0 {
		t.Fatal("K is not a record")
	}
	filled := make(chan struct{})
	go func() { // large objects, entries, until Ristretto evicts K for one of them
		defer close(filled)
		for i := 0; ; i++ {
			select {
			case <-entered:
				return
			default:
			}
			k := "big" + strconv.Itoa(i)
			if s.hash("h.test/"+k)%uint64(len(s.locks)) == stripe {
				continue // its Put would hold K's lock while Ristretto is held
			}
			s.Put(keyed(k, 1, 40<<10))
		}
	}()
	<-entered
	<-filled         // its last Put is queued: nothing follows version 2
	for range 2000 { // K is asked for again: admitted if offered
		s.cache.Get("h.test/" + key)
	}
	for i := range 50 { // and room is made for it
		s.cache.Del("h.test/big" + strconv.Itoa(i))
	}
	g, off, idx, ok := s.place(target)
	if !ok {
		t.Fatal("K's record not found while its exit is held")
	}
	s.move(g, idx, int(off), recordLen(g.b, int(off)), time.Now().UnixNano())
	// Version 2 is put as Put puts it, but queued here rather than in a Put that would then
	// wait for Ristretto.
	o2 := keyed(key, 2, 500)
	p2 := o2.compact()
	h := s.hash("h.test/" + key)
	mu := s.lockOf(h)
	mu.Lock()
	r2, _, ok := s.appendRecord(nil, p2, time.Now().Add(time.Hour), slotOfHash(h, len(s.views)))
	if !ok || !s.cache.SetWithTTL("h.test/"+key, r2, recordCost(recordSize(nil, p2)), time.Hour) {
		t.Fatal("version 2 not queued")
	}
	mu.Unlock()
	close(release)
	s.cache.Wait()
	o, _, _ := s.Lookup("h.test/"+key, nil)
	if o == nil {
		t.Fatal("K not found after the Put of version 2")
	}
	if v := checkKeyed(t, o, key, 500); v != 2 {
		t.Errorf("K reads version %d after the Put of version 2: the move put back the evicted record", v)
	}
}

// putUntilSegments puts objects of size bytes under prefix0, prefix1, ... until s has n
// segments, and returns their keys.
func putUntilSegments(t *testing.T, s *Store, prefix string, n int64, size int) []string {
	t.Helper()
	var keys []string
	for i := 0; s.Stats().Segments < n; i++ {
		k := prefix + strconv.Itoa(i)
		if !s.Put(keyed(k, 1, size)) {
			t.Fatalf("Put %s refused", k)
		}
		keys = append(keys, k)
	}
	return keys
}

// segOfRef returns the segment r's record is in, or nil.
func segOfRef(s *Store, r ref) *segment {
	g, _, _, _ := s.place(r)
	return g
}

// inSegment reports whether p points into one of s's segments.
func inSegment(s *Store, p unsafe.Pointer) bool {
	for i := range s.segs {
		if g := s.segs[i].Load(); g != nil {
			lo := uintptr(unsafe.Pointer(&g.b[0]))
			if a := uintptr(p); a >= lo && a < lo+uintptr(len(g.b)) {
				return true
			}
		}
	}
	return false
}

// TestEntryKeepsNoSegment stores a part of a record's object as an entry (a slice of a
// manifest with a Vary, as edge/slices.go does): nothing of the entry may point into the
// manifest's segment, which it would keep alive.
func TestEntryKeepsNoSegment(t *testing.T) {
	s, _ := newStore(t)
	m := keyed("m", 1, 10)
	m.Policy.Vary = []string{"origin"}
	m.Variant = httpcache.VaryKey(m.Policy.Vary, nil)
	s.Put(m)
	o, _, _ := s.Lookup("h.test/m", nil)
	if o == nil || !inSegment(s, unsafe.Pointer(unsafe.StringData(o.Policy.Vary[0]))) {
		t.Fatal("the manifest is not a record")
	}
	part := *o
	part.Part, part.Body = "#0", make([]byte, 64<<10)
	s.Put(&part)
	r, _ := held(s, "h.test/m#0")
	if r.e == nil {
		t.Fatal("the part is not an entry")
	}
	for _, p := range []unsafe.Pointer{unsafe.Pointer(unsafe.StringData(r.e.vary[0])), unsafe.Pointer(unsafe.StringData(r.e.one.meta)), unsafe.Pointer(unsafe.SliceData(r.e.one.body))} {
		if inSegment(s, p) {
			t.Errorf("the part's entry points into a segment at %p", p)
		}
	}
}

// TestDetached checks Object.Detached: a copy that reads the same and points into no segment.
func TestDetached(t *testing.T) {
	s, _ := newStore(t)
	in := keyed("d", 1, 100)
	in.Keys = []string{"a", "b"}
	in.Policy.Vary = []string{"accept-encoding"}
	in.Variant = httpcache.VaryKey(in.Policy.Vary, nil)
	s.Put(in)
	o, _, _ := s.Lookup("h.test/d", nil)
	if o == nil || !inSegment(s, unsafe.Pointer(unsafe.SliceData(o.Body))) {
		t.Fatal("d is not a record")
	}
	d := o.Detached()
	same := func(x *Object) string {
		return fmt.Sprint(x.Primary, x.Host, x.Path, x.Variant, x.Status, string(x.Body), x.HeaderMap(), x.SurrogateKeys(),
			x.StoredAt, x.ResponseTime, x.Policy.Vary, x.Policy.Lifetime)
	}
	if same(d) != same(o) {
		t.Errorf("Detached reads %s, want %s", same(d), same(o))
	}
	for _, p := range []unsafe.Pointer{unsafe.Pointer(unsafe.SliceData(d.Body)), unsafe.Pointer(unsafe.StringData(d.Primary)),
		unsafe.Pointer(unsafe.StringData(d.Policy.Vary[0])), unsafe.Pointer(unsafe.StringData(d.HeaderValue("X-Key")))} {
		if inSegment(s, p) {
			t.Errorf("the detached copy points into a segment at %p", p)
		}
	}
	if d.Memo(1, func() []byte { return []byte("x") }) != nil {
		t.Error("the detached copy shares the view's memo")
	}
}

// BenchmarkPutChurn stores unique 1 KiB objects into a full store, as a CDN's cache meets
// unique URLs in its steady state: eviction, dead bytes in segments and reclaim's moves are
// part of each Put (moves/op).
func BenchmarkPutChurn(b *testing.B) {
	s := newStoreOf(b, 16<<20)
	objs := make([]*Object, 4096)
	for i := range objs {
		objs[i] = keyed("k", 1, 1000)
	}
	key := func(i int) string { return "h.test/u" + strconv.Itoa(i) }
	for i := range 40_000 { // fill, so that the timed Puts meet a full, churning store
		o := *objs[i%len(objs)]
		o.Primary = key(i)
		s.Put(&o)
	}
	m0 := s.Stats().Moved
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o := *objs[i%len(objs)]
		o.Primary = key(40_000 + i)
		s.Put(&o)
	}
	b.ReportMetric(float64(s.Stats().Moved-m0)/float64(b.N), "moves/op")
}
