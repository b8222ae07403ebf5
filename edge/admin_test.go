package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestPprofOffByDefault: profiles are served on the admin listener only when enabled.
func TestPprofOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pprof bool
		want  int
	}{{"default", false, http.StatusNotFound}, {"enabled", true, http.StatusOK}} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(Config{PoP: "p", Node: "n1", Pprof: tc.pprof})
			if err != nil {
				t.Fatal(err)
			}
			defer n.store.Close()
			rec := httptest.NewRecorder()
			n.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
			if rec.Code != tc.want {
				t.Errorf("GET /debug/pprof/ with pprof=%v = %d, want %d", tc.pprof, rec.Code, tc.want)
			}
		})
	}
}
