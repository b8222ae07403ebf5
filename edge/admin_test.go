package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
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

// TestPprofEndpoints: with pprof on, every endpoint `go tool pprof` and a browser use answers,
// not only the index.
func TestPprofEndpoints(t *testing.T) {
	n, err := New(Config{PoP: "p", Node: "n1", Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.store.Close()
	h := n.AdminHandler()
	for _, tc := range []struct {
		method, path, body string
		want               string // in the answer's body
	}{
		{"GET", "/debug/pprof/", "", "goroutine"},
		{"GET", "/debug/pprof/heap?debug=1", "", "heap profile"},
		{"GET", "/debug/pprof/goroutine?debug=1", "", "goroutine profile"},
		{"GET", "/debug/pprof/allocs?debug=1", "", "heap profile"},
		{"GET", "/debug/pprof/threadcreate?debug=1", "", "threadcreate profile"},
		{"GET", "/debug/pprof/cmdline", "", "edge.test"},
		{"GET", "/debug/pprof/symbol", "", "num_symbols"},
		{"POST", "/debug/pprof/symbol", "0x1", "num_symbols"},
		{"GET", "/debug/pprof/trace?seconds=0.01", "", ""},
		{"GET", "/debug/pprof/profile?seconds=1", "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			if rec.Code != http.StatusOK {
				t.Fatalf("%s %s = %d, want 200: %s", tc.method, tc.path, rec.Code, rec.Body)
			}
			if rec.Body.Len() == 0 || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%s %s: body %.200q lacks %q", tc.method, tc.path, rec.Body, tc.want)
			}
		})
	}
}
