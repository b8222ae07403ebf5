package control

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestMetricsDocumented: every metric family control exports is named in docs/control.md, and
// every meridian_control_* name there is exported; the Prometheus client's process and Go
// collectors are documented as a whole ("the Go and process collectors").
func TestMetricsDocumented(t *testing.T) {
	ts := startServer(t, Config{})
	if code, b := ts.do(t, "GET", "/v1/pops", tokReader, nil); code != http.StatusOK {
		t.Fatalf("GET /v1/pops = %d %s", code, b) // a request, so the requests vector has a series
	}
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../docs/control.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	exported := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		exported[name] = true
		if !regexp.MustCompile("`" + regexp.QuoteMeta(name) + "[{`]").MatchString(doc) {
			t.Errorf("metric %s is exported but not named in docs/control.md", name)
		}
	}
	if len(exported) < 10 {
		t.Fatalf("only %d meridian metrics gathered: %v", len(exported), exported)
	}
	for _, m := range regexp.MustCompile("`(meridian_control_[a-z0-9_]+)[{`]").FindAllStringSubmatch(doc, -1) {
		if !exported[m[1]] {
			t.Errorf("docs/control.md names %s, which control does not export", m[1])
		}
	}
}
