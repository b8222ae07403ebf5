package edge

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestFieldValuesIndependent: the slices fieldValues hands out share one array, yet appending
// to one (as Header.Add does) never changes another, also once the array has grown.
func TestFieldValuesIndependent(t *testing.T) {
	vals := fieldValues{a: make([]string, 0, 2)}
	var got [][]string
	for _, v := range []string{"a", "b", "c", "d"} {
		got = append(got, vals.one(v))
	}
	got[0] = append(got[0], "a2")
	got[2] = append(got[2], "c2")
	want := [][]string{{"a", "a2"}, {"b"}, {"c", "c2"}, {"d"}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("field %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// TestKeptValuesIndependent: the field values a request keeps in its own bytes (spare, keep)
// each stay as written while later ones are appended, also once one has outgrown those bytes,
// and the small ones cost no allocation.
func TestKeptValuesIndependent(t *testing.T) {
	req := &request{}
	long := strings.Repeat("x", len(req.text)+10)
	var got []string
	for _, v := range []string{"12", "tst-e1; hit; ttl=59", long, "", "4096"} {
		got = append(got, req.keep(append(req.spare(), v...)))
	}
	for i, want := range []string{"12", "tst-e1; hit; ttl=59", long, "", "4096"} {
		if got[i] != want {
			t.Errorf("value %d = %q, want %q", i, got[i], want)
		}
	}
	if req.used != len("12tst-e1; hit; ttl=594096") {
		t.Errorf("%d bytes of the request's used, want %d", req.used, len("12tst-e1; hit; ttl=594096"))
	}
	fresh := &request{}
	if a := testing.AllocsPerRun(100, func() {
		fresh.used = 0
		fresh.keep(strconv.AppendInt(fresh.spare(), 1024, 10))
	}); a != 0 {
		t.Errorf("keeping a short value: %v allocations, want 0", a)
	}
}
