package store

import (
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// TestStatsCountsItemsAndEvictions: Stats counts the store's objects and evictions itself
// (Ristretto's metrics are off, issue 15): a replacement keeps the count, a Delete (a purge)
// lowers it without being an eviction, and once the store is full the objects it holds are
// the ones put less the ones evicted or refused, each eviction counted.
func TestStatsCountsItemsAndEvictions(t *testing.T) {
	s := newStoreOf(t, 4<<20)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	put := func(key string, size int) bool {
		return s.Put(&Object{Primary: key, StoredAt: now, Body: make([]byte, size),
			Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}})
	}
	for _, k := range []string{"a", "b", "c"} {
		if !put(k, 100) {
			t.Fatalf("Put %s refused", k)
		}
	}
	put("b", 200) // a replacement
	s.Delete("c")
	s.Delete("never stored")
	if st := s.Stats(); st.Items != 2 || st.Evictions != 0 {
		t.Fatalf("after 3 puts, a replacement and a delete: %d items, %d evictions; want 2, 0", st.Items, st.Evictions)
	}

	const n = 4000 // 4 KiB each: four times the store
	for i := range n {
		put("k"+strconv.Itoa(i), 4<<10)
	}
	s.cache.Wait()
	held := 0
	for i := -2; i < n; i++ {
		k := "k" + strconv.Itoa(i)
		if i < 0 {
			k = []string{"a", "b"}[i+2]
		}
		if o, _, _ := s.Lookup(k, nil); o != nil {
			held++
		}
	}
	st := s.Stats()
	if st.Items != int64(held) {
		t.Errorf("Stats.Items %d, but %d objects found", st.Items, held)
	}
	if st.Evictions == 0 || st.Evictions > uint64(n+2-held) {
		t.Errorf("%d evictions with %d of %d objects held; want some, at most the ones gone", st.Evictions, held, n+2)
	}
}

// TestCloseIsNoEviction: closing a store drops what it holds (Ristretto's Clear goes through
// OnEvict), which is no eviction: the count a scrape during a shutdown reads stays as it was.
func TestCloseIsNoEviction(t *testing.T) {
	s := newStoreOf(t, 4<<20)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 100 {
		s.Put(&Object{Primary: "k" + strconv.Itoa(i), StoredAt: now, Body: make([]byte, 100),
			Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}})
	}
	s.cache.Wait()
	before := s.Stats().Evictions
	s.Close()
	if after := s.Stats().Evictions; after != before {
		t.Errorf("evictions %d before Close, %d after", before, after)
	}
}

// TestReclaimDropIsEviction: a record that reclaim finds expired leaves the store as an
// eviction, as it would had Ristretto's own expiry taken it.
func TestReclaimDropIsEviction(t *testing.T) {
	s := newStoreOf(t, 16<<20)
	keys := putUntilSegments(t, s, "k", 2, 1000)
	s.cache.Wait()
	r, _ := held(s, "h.test/"+keys[0])
	g, off, _, ok := s.place(r)
	if !ok || !g.full.Load() {
		t.Fatal("k0 is not a record in a sealed segment")
	}
	binary.LittleEndian.PutUint64(g.b[off+rExpiry:], 1) // expired long ago
	before := s.Stats()
	s.evacuate(g)
	s.cache.Wait()
	after := s.Stats()
	if o, _, _ := s.Lookup("h.test/"+keys[0], nil); o != nil {
		t.Fatal("the expired record is still found")
	}
	if after.Evictions != before.Evictions+1 || after.Items != before.Items-1 {
		t.Errorf("evictions %d -> %d, items %d -> %d; want one more eviction, one item fewer",
			before.Evictions, after.Evictions, before.Items, after.Items)
	}
}
