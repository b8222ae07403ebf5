package wire

import (
	"slices"
	"testing"
)

// TestCNAMELoops: each loop once, from its least name and back to it, whichever name the walk
// starts from; names leading into a loop and chains that end are no loop.
func TestCNAMELoops(t *testing.T) {
	tests := []struct {
		name   string
		cnames map[string]string
		want   [][]string
	}{
		{"none", nil, nil},
		{"chain that ends", map[string]string{"a.": "b.", "b.": "c.", "c.": "out.example."}, nil},
		{"to itself", map[string]string{"a.": "a."}, [][]string{{"a.", "a."}}},
		{"two, from the least", map[string]string{"b.": "a.", "a.": "b."}, [][]string{{"a.", "b.", "a."}}},
		{"three, a tail into it", map[string]string{"t.": "z.", "z.": "x.", "x.": "y.", "y.": "z."},
			[][]string{{"x.", "y.", "z.", "x."}}},
		{"two loops, ordered", map[string]string{"d.": "c.", "c.": "d.", "a.": "a."}, [][]string{{"a.", "a."}, {"c.", "d.", "c."}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CNAMELoops(tt.cnames)
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("CNAMELoops(%v) = %q, want %q", tt.cnames, got, tt.want)
			}
		})
	}
}
