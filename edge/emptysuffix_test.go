package edge

import "testing"

// TestWithoutEmptySuffixes: only suffix ranges of length 0 are rewritten, and a range set with
// none (every ordinary ranged request) is returned as is, without allocating.
func TestWithoutEmptySuffixes(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		changed  bool
	}{
		{"bytes=0-99", "bytes=0-99", false},
		{"bytes=-5", "bytes=-5", false},
		{"bytes=-10,0-1", "bytes=-10,0-1", false},
		{"bytes=-0", "bytes=10-", true},
		{"bytes=-00", "bytes=10-", true},
		{"bytes=0-1, -0", "bytes=0-1,10-", true},
		{"bytes=-0,-0", "bytes=10-,10-", true},
	} {
		got, changed := withoutEmptySuffixes(tc.in, 10)
		if got != tc.want || changed != tc.changed {
			t.Errorf("withoutEmptySuffixes(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
	if a := testing.AllocsPerRun(100, func() { withoutEmptySuffixes("bytes=0-99,200-299", 1000) }); a != 0 {
		t.Errorf("withoutEmptySuffixes of a range set with no empty suffix: %v allocations, want 0", a)
	}
}
