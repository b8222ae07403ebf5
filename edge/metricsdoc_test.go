package edge

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsDocumented: every metric the node registers is in docs/edge.md's metrics table,
// and every metric the table names is registered. Names are taken from the registry's
// descriptions, so a vector with no series yet (no stale answer served, no tier skipped)
// counts too. The table may shorten a name after the row's first one (`_store_bytes` after
// `meridian_edge_store_objects`); the Prometheus client's process and Go collectors are
// documented by family (`process_*`, `go_*`).
func TestMetricsDocumented(t *testing.T) {
	n, _ := startEdge(t, listen(t, "127.0.0.1"), Config{})
	registered := map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() {
		n.metrics.reg.Describe(ch) // every registered collector's, series or not
		close(ch)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		if !strings.HasPrefix(m[1], "go_") && !strings.HasPrefix(m[1], "process_") {
			registered[m[1]] = true
		}
	}
	if len(registered) < 20 {
		t.Fatalf("only %d metrics described: %v", len(registered), registered)
	}

	b, err := os.ReadFile("../docs/edge.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start, end := strings.Index(doc, "## Admin endpoints and metrics"), strings.Index(doc, "## Tracing and logs")
	if start < 0 || end < start {
		t.Fatal(`docs/edge.md has no "Admin endpoints and metrics" section before "Tracing and logs"`)
	}
	documented := map[string]bool{}
	code := regexp.MustCompile("`([a-z0-9_]+)[{`]")
	for _, row := range strings.Split(doc[start:end], "\n") {
		if !strings.HasPrefix(row, "| `") {
			continue
		}
		cell := strings.SplitN(row, "|", 3)[1] // the metric column
		var first string
		for _, m := range code.FindAllStringSubmatch(cell, -1) {
			name := m[1]
			switch {
			case strings.HasPrefix(name, "meridian_edge_"):
				if first == "" {
					first = name
				}
				documented[name] = true
			case strings.HasPrefix(name, "_") && first != "":
				// A shortened name: the row's first name's prefix up to one of its
				// underscores, then this. Of those, the one registered is meant.
				expanded := ""
				for i := len("meridian_edge"); i < len(first); i++ {
					if first[i] == '_' && registered[first[:i]+name] {
						expanded = first[:i] + name
					}
				}
				if expanded == "" {
					t.Errorf("docs/edge.md names %s after %s, which expands to no registered metric", name, first)
					continue
				}
				documented[expanded] = true
			}
		}
	}
	for name := range registered {
		if !documented[name] {
			t.Errorf("metric %s is registered but not in docs/edge.md's metrics table", name)
		}
	}
	for name := range documented {
		if !registered[name] {
			t.Errorf("docs/edge.md's metrics table names %s, which the node does not register", name)
		}
	}
}
