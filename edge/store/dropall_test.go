package store

import (
	"net/http"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// TestDropAllReachesEveryCopy: DropAll (the purge subscription's join) is a read-time mark,
// so it reaches a copy wherever the store holds it: a view cached for hits, a Put Ristretto
// has not applied yet (pending.go), a record in a segment and an entry, each Vary variant,
// each slice of a sliced object and its head, and a fill stored after DropAll from a fetch
// begun before or at the same reading of the clock (ties purge). A variant stored after it
// keeps none of the dropped ones beside it. The store runs on the real clock, whose readings
// carry the monotonic clock, as in production. No change: checked and held.
func TestDropAllReachesEveryCopy(t *testing.T) {
	s, err := New(Config{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	pol := httpcache.Policy{Storable: true, Lifetime: time.Hour, StaleIfError: time.Hour}
	vary := httpcache.Policy{Storable: true, Lifetime: time.Hour, Vary: []string{"accept-encoding"}}
	enc := func(v string) http.Header { return http.Header{"Accept-Encoding": {v}} }
	put := func(primary, part, variant string, p httpcache.Policy, body []byte, at time.Time) {
		t.Helper()
		o := &Object{Primary: primary, Part: part, Variant: variant, Host: "h", Path: primary[1:], Status: 200,
			Header: http.Header{}, Body: body, StoredAt: at, ResponseTime: at, Policy: p}
		if !s.Put(o) {
			t.Fatalf("Put(%q%q %q) = false", primary, part, variant)
		}
	}
	began := time.Now()
	put("h/view", "", "", pol, []byte("small"), began)
	put("h/entry", "", "", pol, make([]byte, 256<<10), began) // beyond a segment's records
	for _, v := range []string{"br", "gzip"} {
		put("h/vary", "", httpcache.VaryKey(vary.Vary, enc(v)), vary, []byte(v), began)
	}
	for _, part := range []string{"", "\x00slice=0", "\x00slice=1"} {
		put("h/big", part, "", pol, []byte("part"+part), began)
	}
	s.cache.Wait()
	for range 3 { // the view is built and kept in its slot
		if o, _, _ := s.Lookup("h/view", nil); o == nil {
			t.Fatal("h/view not stored")
		}
	}
	put("h/pending", "", "", pol, []byte("pending"), began) // not confirmed by Ristretto yet, likely
	inFlight := time.Now()                                  // a fetch begun before DropAll, stored after
	at := s.DropAll()
	put("h/late", "", "", pol, []byte("late"), inFlight)
	put("h/tie", "", "", pol, []byte("tie"), at)
	put("h/vary", "", httpcache.VaryKey(vary.Vary, enc("zstd")), vary, []byte("zstd"), time.Now())
	for _, tt := range []struct {
		key, part string
		req       http.Header
		want      bool // served
	}{
		{"h/view", "", nil, false},
		{"h/entry", "", nil, false},
		{"h/vary", "", enc("br"), false},
		{"h/vary", "", enc("gzip"), false},
		{"h/vary", "", enc("zstd"), true},
		{"h/big", "", nil, false},
		{"h/big", "\x00slice=0", nil, false},
		{"h/big", "\x00slice=1", nil, false},
		{"h/pending", "", nil, false},
		{"h/late", "", nil, false},
		{"h/tie", "", nil, false},
	} {
		o, v := s.LookupPart(tt.key, tt.part, tt.req)
		if got := o != nil; got != tt.want {
			t.Errorf("Lookup(%q%q, %v) served = %v (verdict %v), want %v", tt.key, tt.part, tt.req, got, v, tt.want)
		}
	}
	if o, v, _ := s.Lookup("h/vary", enc("zstd")); o != nil {
		r, _ := s.get("h/vary")
		if _, held := s.variantsOf(r); len(held) != 1 {
			t.Errorf("h/vary holds %d variants after a new one stored past DropAll (verdict %v), want 1", len(held), v)
		}
	}
}
