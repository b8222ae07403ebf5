package edge

import (
	"slices"
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
