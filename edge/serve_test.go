package edge

import (
	"crypto/rand"
	"net/http"
	"testing"
)

// TestTraceparent: a client's well-formed traceparent is kept; anything else is replaced by a
// new one, well-formed and different each time.
func TestTraceparent(t *testing.T) {
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name, in string
		keep     bool
	}{
		{"valid", valid, true},
		{"none", "", false},
		{"upper case", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"short", valid[:54], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "http://h.test/", nil)
			if tc.in != "" {
				r.Header.Set("Traceparent", tc.in)
			}
			a, b := traceparent(r), traceparent(r)
			switch {
			case tc.keep && (a != tc.in || b != tc.in):
				t.Errorf("traceparent of %q: %q, %q; want it kept", tc.in, a, b)
			case !tc.keep && (!validTraceparent(a) || !validTraceparent(b) || a == b || a == tc.in):
				t.Errorf("traceparent of %q: %q, %q; want two new well-formed ones", tc.in, a, b)
			case !tc.keep && (a[:3] != "00-" || a[52:] != "-01"):
				t.Errorf("new traceparent %q: want version 00 and the sampled flag", a)
			}
		})
	}
}

// TestTraceparentAllocs: a new traceparent costs one allocation, its string, beyond what
// reading its random bytes costs (none, but under the race detector, where the buffer
// escapes).
func TestTraceparentAllocs(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "http://h.test/", nil)
	random := testing.AllocsPerRun(100, func() {
		var b [24]byte
		rand.Read(b[:])
	})
	if allocs := testing.AllocsPerRun(100, func() { traceparent(r) }); allocs != random+1 {
		t.Errorf("a new traceparent took %.0f allocations, its random bytes %.0f; want one more", allocs, random)
	}
}
