package store

import (
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// TestPackedRoundTrip checks that an object reads back from Lookup with every field it was
// stored with, though the store keeps it packed (packed.go): times (as instants: they read
// back in UTC, without a monotonic reading), zero times, every policy flag and duration, the policy's strings,
// and the strings located in the arena.
func TestPackedRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 3, 11, 0, 0, 123456789, time.UTC)
	full := func() *Object {
		return &Object{
			Primary: "h.test/a/b?q=1", Host: "h.test", Path: "/a/b", Status: 206,
			Header: http.Header{"Content-Type": {"text/plain"}, "X-Two": {"1", "2"}, "X-Empty": {}},
			Body:   []byte("partial body"), StoredAt: at, ResponseTime: at.Add(time.Second),
			InitialAge: 7 * time.Second, LastModified: at.Add(-time.Hour).Truncate(time.Second),
			Part: "\x00slice=3", Size: 1 << 40, Keys: []string{"k1", "k2"}, EdgeCoded: true,
			Policy: httpcache.Policy{Storable: true, Reason: "why not", Lifetime: time.Hour, Heuristic: true,
				StaleWhileRevalidate: time.Minute, StaleIfError: 2 * time.Minute, MustRevalidate: true,
				NoCache: true, Immutable: true, Vary: []string{"accept-encoding"},
				StripFields: []string{"Set-Cookie", "X-Private"}, Target: "CDN-Cache-Control"},
		}
	}
	tests := []struct {
		name string
		edit func(*Object)
	}{
		{"every field", func(*Object) {}},
		{"zero times, no flags", func(o *Object) {
			o.LastModified, o.ResponseTime = time.Time{}, time.Time{}
			o.Policy = httpcache.Policy{Storable: true, Lifetime: time.Hour}
			o.Part, o.Keys, o.Size, o.Status, o.EdgeCoded = "", nil, 0, 200, false
		}},
		{"times from time.Now, another zone", func(o *Object) {
			o.StoredAt, o.ResponseTime = time.Now(), time.Now().In(time.FixedZone("X", 3600)).Round(0)
		}},
		{"some flags, negative age", func(o *Object) {
			o.Policy.Heuristic, o.Policy.MustRevalidate, o.Policy.Immutable = false, false, false
			o.InitialAge, o.Status = -3*time.Second, 304
		}},
		{"other flags", func(o *Object) {
			o.Policy.Storable, o.Policy.NoCache, o.Policy.Lifetime = false, false, 0
			o.Policy.StaleWhileRevalidate = 0
		}},
		{"one strip field, empty body", func(o *Object) {
			o.Policy.StripFields = []string{"Set-Cookie"}
			o.Body = nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			in := full()
			tt.edit(in)
			want := *in
			want.Header, want.Keys = nil, nil
			wantHeader := fmt.Sprint(in.Header)
			wantKeys := fmt.Sprint(in.Keys)
			if in.Policy.Vary != nil {
				in.Variant = httpcache.VaryKey(in.Policy.Vary, http.Header{"Accept-Encoding": {"br"}})
				want.Variant = in.Variant
			}
			if !s.Put(in) {
				t.Fatal("Put refused")
			}
			got, _ := s.LookupPart(want.Primary, want.Part, http.Header{"Accept-Encoding": {"br"}})
			if got == nil {
				t.Fatal("stored object not found")
			}
			for name, o := range map[string]*Object{"Lookup": got, "Put's object": in} {
				if fmt.Sprint(o.HeaderMap()) != wantHeader || fmt.Sprint(o.SurrogateKeys()) != wantKeys {
					t.Errorf("%s: header %v keys %v, want %v and %v", name, o.HeaderMap(), o.SurrogateKeys(), wantHeader, wantKeys)
				}
				for i, pair := range [][2]time.Time{{o.StoredAt, want.StoredAt}, {o.ResponseTime, want.ResponseTime}, {o.LastModified, want.LastModified}} {
					if !pair[0].Equal(pair[1]) || pair[0].IsZero() != pair[1].IsZero() {
						t.Errorf("%s: time %d = %v, want %v", name, i, pair[0], pair[1])
					}
					// A time from time.Now keeps its monotonic reading (monoBase): purges and
					// ages compare by it, whatever the wall clock does.
					if mono := pair[1] != pair[1].Round(0); mono != (pair[0] != pair[0].Round(0)) {
						t.Errorf("%s: time %d = %v: monotonic reading %v, want %v", name, i, pair[0], !mono, mono)
					}
				}
				cp, w := *o, want
				cp.StoredAt, cp.ResponseTime, cp.LastModified = time.Time{}, time.Time{}, time.Time{}
				w.StoredAt, w.ResponseTime, w.LastModified = time.Time{}, time.Time{}, time.Time{}
				cp.arena, cp.ix, cp.nm, cp.nk, cp.memo = "", 0, 0, 0, nil
				if len(w.Body) == 0 {
					w.Body, cp.Body = nil, nil
				}
				if !reflect.DeepEqual(cp, w) {
					t.Errorf("%s:\n got %+v\nwant %+v", name, cp, w)
				}
			}
		})
	}
}

// TestLookupSharesView checks the views Lookup shares (Store.shared): readers share one
// Object; a view never outlives its entry in the store (replaced, deleted); two keys of one
// hash both keep their views, and a third takes one of their slots, after which a Lookup of
// the key that lost it builds a new view that reads the same.
func TestLookupSharesView(t *testing.T) {
	s, c := newStore(t)
	const key = "a.test/x"
	put := func(k string) {
		t.Helper()
		if !s.Put(object("a.test", strings.TrimPrefix(k, "a.test"), c.t, "k")) {
			t.Fatalf("Put %s refused", k)
		}
	}
	lookup := func(k string) *Object {
		t.Helper()
		o, _, _ := s.Lookup(k, nil)
		if o == nil {
			t.Fatalf("Lookup(%s) = nil", k)
		}
		return o
	}
	set := s.views[s.slotOf(key) : s.slotOf(key)+2]
	holds := func(k string) bool { // one of the set's slots holds k's current view
		r, _ := held(s, k)
		for i := range set {
			if v := set[i].Load(); v != nil && v.r == r {
				return true
			}
		}
		return false
	}
	empty := func() bool { return set[0].Load() == nil && set[1].Load() == nil }
	unmemo := func(o Object) Object { o.memo = nil; return o } // a new view has its own
	put(key)
	a, b := lookup(key), lookup(key)
	if a != b {
		t.Fatalf("two Lookups = %p and %p, want one shared Object", a, b)
	}
	want := fmt.Sprintf("%+v", unmemo(*a))

	put(key) // replaced: the old entry's view leaves its slot
	if !empty() {
		t.Fatal("a slot still holds a view after its entry was replaced")
	}
	x := lookup(key)
	if x == a || fmt.Sprintf("%+v", unmemo(*x)) != want || !holds(key) {
		t.Fatalf("Lookup after a replacement = %p %+v, want a new view in the key's slots, reading %s", x, *x, want)
	}

	// Two more keys of the same slots.
	var others []string
	for i := 0; len(others) < 2; i++ {
		if k := fmt.Sprintf("a.test/y%d", i); s.slotOf(k) == s.slotOf(key) {
			others = append(others, k)
			put(k)
		}
	}
	if lookup(others[0]); !holds(key) || !holds(others[0]) {
		t.Fatalf("after Lookups of %s and %s their slots do not hold both views", key, others[0])
	}
	if lookup(key) != x {
		t.Fatalf("Lookup of %s built a new view while its slot kept the old", key)
	}
	lookup(others[1]) // takes one of the two
	if !holds(others[1]) || holds(key) == holds(others[0]) {
		t.Fatalf("after a third key's Lookup: holds %s %v, %s %v, %s %v; want the third and one other",
			others[1], holds(others[1]), key, holds(key), others[0], holds(others[0]))
	}
	if d := lookup(key); fmt.Sprintf("%+v", unmemo(*d)) != want || !holds(key) {
		t.Fatalf("Lookup of %s after the third key = %+v, want a view in its slots reading %s", key, *d, want)
	}

	for _, k := range append(others, key) {
		s.Delete(k) // deleted: views leave the slots, so the store keeps nothing of them
	}
	if !empty() {
		t.Fatal("a slot still holds a view after every key of the set was deleted")
	}
}

// TestVariantsRoundTrip checks objects read back from an entry of several variants (built for
// each Lookup, not shared), after one of them was replaced.
func TestVariantsRoundTrip(t *testing.T) {
	s, c := newStore(t)
	vary := []string{"accept-language"}
	put := func(lang string, status int) {
		o := object("a.test", "/v", c.t, "k-"+lang)
		o.Status, o.Body = status, []byte("body in "+lang)
		o.Policy.Vary = vary
		o.Variant = httpcache.VaryKey(vary, http.Header{"Accept-Language": {lang}})
		if !s.Put(o) {
			t.Fatalf("Put of %s refused", lang)
		}
	}
	put("en", 200)
	put("fr", 201)
	put("de", 202)
	put("fr", 203) // replaces fr
	for lang, status := range map[string]int{"en": 200, "fr": 203, "de": 202} {
		o, v, got := s.Lookup("a.test/v", http.Header{"Accept-Language": {lang}})
		if o == nil || v != Usable || o.Status != status || string(o.Body) != "body in "+lang ||
			fmt.Sprint(o.SurrogateKeys()) != "[k-"+lang+"]" || fmt.Sprint(o.Policy.Vary, got) != "[accept-language] [accept-language]" {
			t.Errorf("%s: Lookup = %+v, %v, %v", lang, o, v, got)
		}
	}
	if r, _ := held(s, "a.test/v"); r.e == nil || len(r.e.variants) != 3 {
		t.Errorf("%+v stored, want an entry of 3 variants", r)
	}
}

// TestMemo checks Object.Memo: built once per shared view and key, rebuilt in place for
// another key, and absent where readers do not share the Object (several variants, a copy
// given a header of its own).
func TestMemo(t *testing.T) {
	s, c := newStore(t)
	if !s.Put(object("a.test", "/m", c.t, "k")) {
		t.Fatal("Put refused")
	}
	builds := 0
	build := func(tag string) func() []byte {
		return func() []byte { builds++; return []byte(tag) }
	}
	a, _, _ := s.Lookup("a.test/m", nil)
	b, _, _ := s.Lookup("a.test/m", nil)
	for i, step := range []struct {
		o        *Object
		key, got string
		builds   int
	}{
		{a, "p1", "p1", 1},
		{b, "p1", "p1", 1}, // the other reader of the view reuses it
		{a, "p2", "p2", 2}, // another policy: rebuilt
		{b, "p2", "p2", 2},
		{a, "p1", "p1", 3},
	} {
		if got := string(step.o.Memo(step.key, build(step.key))); got != step.got || builds != step.builds {
			t.Errorf("step %d: Memo(%s) = %q after %d builds, want %q after %d", i, step.key, got, builds, step.got, step.builds)
		}
	}
	// A result longer than maxMemo is returned, not kept: the view's charge bounds it.
	long := strings.Repeat("h", int(maxMemo)+1)
	for i := range 2 {
		if got := string(a.Memo("long", build(long))); got != long || builds != 4+i {
			t.Errorf("Memo of %d bytes, call %d: %d bytes after %d builds, want it built every time", len(long), i, len(got), builds)
		}
	}
	builds = 3
	cp := *a
	cp.Header = http.Header{"X": {"1"}}
	if got := cp.Memo("p1", build("copy")); got != nil || builds != 3 {
		t.Errorf("Memo of a copy with its own header = %q (%d builds), want none built", got, builds)
	}
	vary := []string{"accept-language"}
	for _, lang := range []string{"en", "fr"} {
		o := object("a.test", "/mv", c.t, "k")
		o.Policy.Vary = vary
		o.Variant = httpcache.VaryKey(vary, http.Header{"Accept-Language": {lang}})
		if !s.Put(o) {
			t.Fatalf("Put of %s refused", lang)
		}
	}
	v, _, _ := s.Lookup("a.test/mv", http.Header{"Accept-Language": {"en"}})
	if got := v.Memo("p1", build("variant")); got != nil || builds != 3 {
		t.Errorf("Memo of a variant = %q (%d builds), want none built", got, builds)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}

// TestPurgeFollowsMonotonicClock checks purge rule 2 with the times a fill really has (from
// time.Now): an object whose fetch began before a purge is gone, one begun after it is not,
// decided by the monotonic readings the stored times keep.
func TestPurgeFollowsMonotonicClock(t *testing.T) {
	s, err := New(Config{MaxBytes: 1 << 20}) // clock: time.Now
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := object("a.test", "/before", time.Now(), "k")
	purgedAt := s.Purge(Record{Kind: Key, Host: "a.test", Value: "k"})
	start := time.Now()
	for !start.After(purgedAt) { // a fetch that begins at the purge's instant counts as before it
		start = time.Now()
	}
	after := object("a.test", "/after", start, "k")
	for _, o := range []*Object{before, after} {
		if !s.Put(o) {
			t.Fatal("Put refused")
		}
	}
	if o, v, _ := s.Lookup("a.test/before", nil); o != nil || v != Purged {
		t.Errorf("object fetched before the purge: %v, %v; want gone", o, v)
	}
	o, v, _ := s.Lookup("a.test/after", nil)
	if o == nil || v != Usable {
		t.Fatalf("object fetched after the purge: %v, %v; want usable", o, v)
	}
	if o.StoredAt == o.StoredAt.Round(0) {
		t.Error("stored StoredAt lost its monotonic reading")
	}
}

// TestCoded: Coded tells a body in a content coding from one without, for an object with its
// Header map and, from the flag compact sets, for a stored one and its detached copy.
func TestCoded(t *testing.T) {
	s, c := newStore(t)
	for i, tt := range []struct {
		ce   []string
		want bool
	}{
		{nil, false},
		{[]string{"gzip"}, true},
		{[]string{"identity"}, false},
		{[]string{" identity , "}, false},
		{[]string{"identity", "br"}, true},
		{[]string{"deflate, gzip"}, true},
	} {
		o := object("a.test", fmt.Sprintf("/%d", i), c.t)
		if tt.ce != nil {
			o.Header["Content-Encoding"] = tt.ce
		}
		if got := o.Coded(); got != tt.want {
			t.Errorf("Content-Encoding %q, not stored: Coded() = %v, want %v", tt.ce, got, tt.want)
		}
		for name, o := range storedCopies(t, s, o) {
			if c := o.Coded(); c != tt.want {
				t.Errorf("Content-Encoding %q, %s: Coded() = %v, want %v", tt.ce, name, c, tt.want)
			}
		}
	}
}

// storedCopies puts o in s and returns what Lookup finds of it, and its detached copy: the two
// forms whose flags compact set, by name.
func storedCopies(t *testing.T, s *Store, o *Object) map[string]*Object {
	t.Helper()
	if !s.Put(o) {
		t.Fatal("Put refused")
	}
	got, _, _ := s.Lookup(o.Primary, nil)
	if got == nil {
		t.Fatal("stored object not found")
	}
	return map[string]*Object{"stored": got, "detached": got.Detached()}
}

// TestHasURLFields: HasURLFields tells a header with Location, Content-Location or Refresh
// from one without, for an object with its Header map and, from the flag compact sets, for a
// stored one and its detached copy.
func TestHasURLFields(t *testing.T) {
	s, c := newStore(t)
	for i, tt := range []struct {
		field string
		want  bool
	}{
		{"", false},
		{"Location", true},
		{"Content-Location", true},
		{"Refresh", true},
		{"Link", false},
	} {
		o := object("a.test", fmt.Sprintf("/urls%d", i), c.t)
		if tt.field != "" {
			o.Header[tt.field] = []string{"http://a.test/x"}
		}
		if got := o.HasURLFields(); got != tt.want {
			t.Errorf("%q, not stored: HasURLFields() = %v, want %v", tt.field, got, tt.want)
		}
		for name, o := range storedCopies(t, s, o) {
			if u := o.HasURLFields(); u != tt.want {
				t.Errorf("%q, %s: HasURLFields() = %v, want %v", tt.field, name, u, tt.want)
			}
		}
	}
}
