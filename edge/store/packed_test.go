package store

import (
	"fmt"
	"net/http"
	"reflect"
	"runtime"
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
			Part: "\x00slice=3", Size: 1 << 40, Keys: []string{"k1", "k2"},
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
			o.Part, o.Keys, o.Size, o.Status = "", nil, 0, 200
		}},
		{"local times", func(o *Object) {
			o.StoredAt, o.ResponseTime = time.Now(), time.Now().In(time.FixedZone("X", 3600))
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
				}
				cp, w := *o, want
				cp.StoredAt, cp.ResponseTime, cp.LastModified = time.Time{}, time.Time{}, time.Time{}
				w.StoredAt, w.ResponseTime, w.LastModified = time.Time{}, time.Time{}, time.Time{}
				cp.arena, cp.ix, cp.nm, cp.nk = "", 0, 0, 0
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

// TestLookupSharesView checks the view Lookup keeps of an object (entry.object): readers at
// the same time share one Object, and one built again after the collector freed it reads the
// same.
func TestLookupSharesView(t *testing.T) {
	s, c := newStore(t)
	if !s.Put(object("a.test", "/x", c.t, "k")) {
		t.Fatal("Put refused")
	}
	a, _, _ := s.Lookup("a.test/x", nil)
	b, _, _ := s.Lookup("a.test/x", nil)
	if a == nil || a != b {
		t.Fatalf("two Lookups while the first is held = %p and %p, want one shared Object", a, b)
	}
	want := fmt.Sprintf("%+v", *a)
	a, b = nil, nil
	runtime.GC()
	runtime.GC()
	got, _, _ := s.Lookup("a.test/x", nil)
	if got == nil || fmt.Sprintf("%+v", *got) != want {
		t.Fatalf("Lookup after the view was freed = %+v, want %s", got, want)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}
