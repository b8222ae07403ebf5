package origin

import (
	"slices"
	"testing"
)

// TestLRU: which paths the lru forgets, by count and by cost, and that observers (peek) do not
// count as a use.
func TestLRU(t *testing.T) {
	tests := []struct {
		name   string
		ops    func(c *lru[string, int])
		want   []string // kept, most recent first
		wantSz int      // total cost
	}{
		{"under the bound", func(c *lru[string, int]) { c.add("/a"); c.add("/b") }, []string{"/b", "/a"}, 4},
		{"count: least recent forgotten", func(c *lru[string, int]) {
			c.add("/a")
			c.add("/b")
			c.add("/c")
			c.add("/d")
		}, []string{"/d", "/c", "/b"}, 6},
		{"find is a use", func(c *lru[string, int]) {
			c.add("/a")
			c.add("/b")
			c.add("/c")
			c.find("/a")
			c.add("/d")
		}, []string{"/d", "/a", "/c"}, 6},
		{"peek is not a use", func(c *lru[string, int]) {
			c.add("/a")
			c.add("/b")
			c.add("/c")
			c.peek("/a")
			c.add("/d")
		}, []string{"/d", "/c", "/b"}, 6},
		{"cost: older forgotten", func(c *lru[string, int]) {
			c.add("/a")
			c.add("/b")
			c.setCost(c.add("/c"), 6) // 2 + 2 + 8 = 12 > 10
		}, []string{"/c", "/b"}, 10},
		{"cost: one entry over the bound stays alone", func(c *lru[string, int]) {
			c.add("/a")
			c.setCost(c.add("/b"), 100)
		}, []string{"/b"}, 102},
		{"remove and clear", func(c *lru[string, int]) {
			c.add("/a")
			c.add("/b")
			c.remove(c.peek("/a"))
			c.clear()
			c.add("/c")
		}, []string{"/c"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newLRU[string, int](3, 10, pathCost)
			tt.ops(c)
			var got []string
			for k := range c.all() {
				got = append(got, k)
			}
			if !slices.Equal(got, tt.want) || c.len() != len(tt.want) || c.bytes != tt.wantSz {
				t.Errorf("kept %q (len %d, cost %d), want %q (cost %d)", got, c.len(), c.bytes, tt.want, tt.wantSz)
			}
		})
	}
}
