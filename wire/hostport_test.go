package wire

import "testing"

// TestSamePort: listeners that would share a port under SO_REUSEPORT, and those that would not.
func TestSamePort(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"0.0.0.0:80", "127.0.0.1:80", true},
		{":53", "10.0.0.1:53", true},
		{"[::]:443", "127.0.0.1:443", true},
		{"127.0.0.1:http", "127.0.0.1:80", true},
		{"localhost:80", "LOCALHOST:80", true},
		{"127.0.0.1:8080", "127.0.0.1:9080", false},
		{"127.0.0.1:80", "127.0.0.2:80", false},
		{"127.0.0.1:0", "127.0.0.1:0", false}, // the kernel picks two ports
		{"off", "127.0.0.1:80", false},
	} {
		if got := SamePort(tc.a, tc.b); got != tc.want {
			t.Errorf("SamePort(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
