package store

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// viewOf is a VaryHeader that answers with h and records the Vary lists it was asked for.
type viewOf struct {
	h     http.Header
	asked [][]string
}

func (v *viewOf) VaryHeader(vary []string) http.Header {
	v.asked = append(v.asked, vary)
	return v.h
}

// TestLookupVary: a lookup selects the variant by the header its VaryHeader gives for the URL's
// Vary list, not by the client's own, whether the key holds one variant or several; a URL
// without a Vary does not ask for it.
func TestLookupVary(t *testing.T) {
	vary := []string{"x-forwarded-proto"}
	for _, protos := range [][]string{{"https"}, {"http", "https"}} {
		t.Run(fmt.Sprint(len(protos))+" variants", func(t *testing.T) {
			s, c := newStore(t)
			for _, p := range protos {
				o := object("a.test", "/v", c.t)
				o.Policy.Vary = vary
				o.Variant = httpcache.VaryKey(vary, http.Header{"X-Forwarded-Proto": {p}})
				o.Body = []byte(p)
				if !s.Put(o) {
					t.Fatalf("Put of the %s variant refused", p)
				}
			}
			client := http.Header{"X-Forwarded-Proto": {"ftp"}} // the client's, which the view replaces
			if o, _, got := s.Lookup("a.test/v", client); o != nil || !slices.Equal(got, vary) {
				t.Errorf("client's header: %v, vary %q; want a vary-miss", o, got)
			}
			view := &viewOf{h: http.Header{"X-Forwarded-Proto": {"https"}}}
			o, v, _ := s.LookupVary("a.test/v", view)
			if o == nil || v != Usable || string(o.Body) != "https" {
				t.Fatalf("LookupVary = %v, %v; want the https variant", o, v)
			}
			if len(view.asked) == 0 || !slices.Equal(view.asked[0], vary) {
				t.Errorf("the view was asked for %q, want the URL's Vary %q", view.asked, vary)
			}
			if o, _ := s.LookupPartVary("a.test/v", "", view); o == nil || string(o.Body) != "https" {
				t.Errorf("LookupPartVary = %v; want the https variant", o)
			}
		})
	}
	s, c := newStore(t)
	s.Put(object("a.test", "/plain", c.t))
	view := &viewOf{}
	if o, _, _ := s.LookupVary("a.test/plain", view); o == nil || len(view.asked) > 0 {
		t.Errorf("without a Vary: %v, view asked %q; want the object, nothing asked", o, view.asked)
	}
}
