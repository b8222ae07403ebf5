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

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

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
	s, err := New(Config{MaxBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 40_000
	for i := range n {
		s.Put(keyed("k"+strconv.Itoa(i), 1, size))
	}
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
	s, err := New(Config{MaxBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Put(keyed("k", 1, size))
	before, _, _ := s.Lookup("h.test/k", nil)
	if before == nil {
		t.Fatal("k not found")
	}
	first, _ := s.cache.Get("h.test/k")
	var others []string
	for i := 0; s.Stats().Segments < 10; i++ {
		key := "x" + strconv.Itoa(i)
		if !s.Put(keyed(key, 1, size)) {
			t.Fatalf("Put %s refused", key)
		}
		others = append(others, key)
	}
	// Delete every other record, and every record of k's segment but k.
	for i, key := range others {
		if r, _ := s.cache.Get("h.test/" + key); i%2 == 0 || r.seg == first.seg {
			s.Delete("h.test/" + key)
		}
	}
	s.Put(keyed("last", 1, size)) // reclaims
	moved, ok := s.cache.Get("h.test/k")
	if !ok || moved.seg == first.seg || s.Stats().Moved == 0 {
		t.Fatalf("k at %+v after reclaim, first at %+v, %d moved; want k moved", moved, first, s.Stats().Moved)
	}
	set := s.viewSet(first.slot)
	for i := range set {
		if v := set[i].Load(); v != nil && v.r == first {
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
	s, err := New(Config{MaxBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
