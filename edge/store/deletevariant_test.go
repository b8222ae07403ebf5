package store

import (
	"net/http"
	"slices"
	"testing"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// TestDeleteVariant: DeleteVariant drops one Vary variant of a URL and leaves its others
// selectable as before, with the store's object count and bytes following: the last variant
// dropped leaves the store as empty as it was. A key that holds the variant in a record (one
// variant, small) and one that holds it in an entry (several) are both covered, as is a URL
// without Vary (its one copy has the variant "").
func TestDeleteVariant(t *testing.T) {
	byLang := []string{"accept-language"}
	lang := func(l string) http.Header { return http.Header{"Accept-Language": {l}} }
	for _, tt := range []struct {
		name  string
		vary  []string
		held  []string // variants put, in order
		drop  string
		after []string // variants selectable after the drop
	}{
		{"one of two", byLang, []string{"en", "fr"}, "fr", []string{"en"}},
		{"first of two", byLang, []string{"en", "fr"}, "en", []string{"fr"}},
		{"one of three", byLang, []string{"en", "fr", "de"}, "fr", []string{"en", "de"}},
		{"the only one", byLang, []string{"en"}, "en", nil},
		{"one not held", byLang, []string{"en", "fr"}, "de", []string{"en", "fr"}},
		{"without vary", nil, []string{""}, "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, c := newStore(t)
			// The objects' bytes: the handles' chunks, once taken, stay (handle.go).
			objectBytes := func() int64 { s.cache.Wait(); return s.Stats().Bytes - s.hbytes.Load() }
			empty := objectBytes()
			for _, l := range tt.held {
				o := object("a.test", "/v", c.t)
				o.Policy.Vary = tt.vary
				o.Variant = httpcache.VaryKey(tt.vary, lang(l))
				o.Body = []byte("body " + l)
				if !s.Put(o) {
					t.Fatalf("Put of variant %q refused", l)
				}
			}
			before := objectBytes()
			s.DeleteVariant("a.test/v", httpcache.VaryKey(tt.vary, lang(tt.drop)))
			for _, l := range tt.held {
				o, _, vary := s.Lookup("a.test/v", lang(l))
				switch kept := slices.Contains(tt.after, l); {
				case kept && (o == nil || string(o.Body) != "body "+l):
					t.Errorf("variant %q after the drop: %v, want its copy", l, o)
				case !kept && o != nil:
					t.Errorf("variant %q after the drop: %q, want gone", l, o.Body)
				case !kept && len(tt.after) > 0 && !slices.Equal(vary, tt.vary):
					t.Errorf("variant %q after the drop: vary %q, want a vary-miss on %q", l, vary, tt.vary)
				}
			}
			if len(tt.after) == 1 {
				// One variant left: held as a URL with one variant is (Store.shared's view).
				o, _, _ := s.Lookup("a.test/v", lang(tt.after[0]))
				if o == nil || o.Memo("k", func() []byte { return []byte("m") }) == nil {
					t.Errorf("the one variant left is not a shared view: %v", o)
				}
			}
			bytes, st := objectBytes(), s.Stats()
			want := int64(1)
			if len(tt.after) == 0 {
				want = 0
			}
			if st.Items != want {
				t.Errorf("Stats.Items = %d, want %d", st.Items, want)
			}
			switch {
			case len(tt.after) == 0 && bytes != empty:
				t.Errorf("object bytes = %d after the last variant went, want the empty store's %d", bytes, empty)
			case len(tt.after) == len(tt.held) && bytes != before:
				t.Errorf("object bytes = %d after dropping no variant, want %d as before", bytes, before)
			case len(tt.after) > 0 && len(tt.after) < len(tt.held) && (bytes >= before || bytes <= empty):
				t.Errorf("object bytes = %d after dropping one of %d variants, want between %d and %d", bytes, len(tt.held), empty, before)
			}
		})
	}
}
