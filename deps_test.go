package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/meridian-cdn/meridian"

// The rules below are DESIGN.md's, stated once:
//
//	main -> sim -> {edge, dnsroute, control, deploy, origin} -> {purge, origin/fetch} -> {fleet} -> {wire}
//
// A package may import its own tree and the trees of lower layers, never a tree of its own
// layer (edge, dnsroute, control and deploy never import each other; edge reaches upstreams
// through origin/fetch, not origin); only main imports sim; leaf packages import only the
// standard library and their one domain library. internal/ sits below everything: its
// packages are leaves shared by every server and import nothing of Meridian's outside
// internal/. Every package has a role: a package under no tree below fails the test.

// layers maps each tree (a package and everything under it, unless a longer tree claims it)
// to its layer; imports point to lower layers.
var layers = map[string]int{
	".":            6, // main: dispatches the commands
	"bench":        6, // stand-alone bench tools, beside main
	"sim":          5,
	"edge":         4,
	"dnsroute":     4,
	"control":      4,
	"deploy":       4,
	"origin":       4,
	"purge":        3,
	"origin/fetch": 3,
	"fleet":        2,
	"wire":         1,
	"internal":     0,
}

// leaves maps each leaf tree to the outside modules it imports besides the standard library:
// exactly those, so that a stale entry fails too.
var leaves = map[string][]string{
	"wire":                 nil,
	"edge/httpcache":       nil,
	"dnsroute/geo":         {"github.com/oschwald/maxminddb-golang/v2"},
	"dnsroute/geo/geodata": {"github.com/maxmind/mmdbwriter"},
	"internal/durhist":     {"github.com/HdrHistogram/hdrhistogram-go"},
	"internal/h1fields":    {"golang.org/x/net"},
	"internal/httpdate":    nil,
	"internal/idnhost":     {"golang.org/x/net"},
	"internal/metricstest": {"github.com/prometheus/client_golang"},
	"internal/natsauth":    {"github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go", "github.com/nats-io/nkeys"},
	"internal/natstest":    {"github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go"},
	"internal/prefault":    {"golang.org/x/sys"},
	"internal/proctest":    nil,
	"internal/rawconn":     {"golang.org/x/sys"},
	"internal/tcptest":     {"golang.org/x/sys"},
	"internal/reuseport":   {"golang.org/x/sys"},
	"internal/writegather": nil,
	"internal/yamlconf":    {"go.yaml.in/yaml/v3"},
}

func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		imports[rel(f[0])] = f[1:]
	}
	if len(imports) < 2 {
		t.Fatalf("go list found %d packages; want the whole module", len(imports))
	}
	for pkg, imps := range imports {
		if _, ok := role(pkg); !ok {
			t.Errorf("%s has no role in DESIGN.md's layout", pkg)
			continue
		}
		for _, imp := range imps {
			if msg := forbidden(pkg, imp); msg != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, msg)
			}
		}
		if leaf, ok := leafOf(pkg); ok && leaf == pkg {
			for _, lib := range leaves[leaf] {
				if !slices.ContainsFunc(imps, func(imp string) bool { return within(imp, lib) }) {
					t.Errorf("leaf %s may import %s but does not: drop it from the list", pkg, lib)
				}
			}
		}
	}
	for leaf := range leaves {
		if _, ok := imports[leaf]; !ok {
			t.Errorf("leaf %s is not a package of the module: drop it from the list", leaf)
		}
	}
}

// rel turns a module import path into a path relative to the module root ("." for main).
func rel(p string) string {
	if p == module {
		return "."
	}
	return strings.TrimPrefix(p, module+"/")
}

func within(pkg, tree string) bool {
	return tree == "." && pkg == "." || pkg == tree || strings.HasPrefix(pkg, tree+"/")
}

// longest returns the longest key of m whose tree holds pkg.
func longest[V any](m map[string]V, pkg string) (string, bool) {
	best, found := "", false
	for tree := range m {
		if within(pkg, tree) && (!found || len(tree) > len(best)) {
			best, found = tree, true
		}
	}
	return best, found
}

// role returns the tree that gives pkg its layer.
func role(pkg string) (string, bool) { return longest(layers, pkg) }

// leafOf returns the leaf tree pkg belongs to: leaf sub-packages are leaves too, and every
// internal package is one.
func leafOf(pkg string) (string, bool) {
	if leaf, ok := longest(leaves, pkg); ok {
		return leaf, true
	}
	return pkg, within(pkg, "internal")
}

// forbidden says why pkg may not import imp, or "" when it may.
func forbidden(pkg, imp string) string {
	ours := imp == module || strings.HasPrefix(imp, module+"/")
	outside := !ours && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".")
	if leaf, ok := leafOf(pkg); ok {
		switch {
		case ours && !(within(pkg, "internal") && within(rel(imp), "internal")):
			return "a leaf package imports no other Meridian package"
		case outside && !slices.ContainsFunc(leaves[leaf], func(lib string) bool { return within(imp, lib) }):
			return "a leaf package imports only the standard library and its one domain library"
		}
		return ""
	}
	if !ours {
		return ""
	}
	to := rel(imp)
	if within(to, "sim") && pkg != "." && !within(pkg, "sim") {
		return "only main imports sim"
	}
	from, _ := role(pkg)
	dest, ok := role(to)
	switch {
	case !ok:
		return "the imported package has no role"
	case from == dest:
		return "" // its own tree
	case layers[dest] >= layers[from]:
		return "imports point down DESIGN.md's layers: " + from + " may not import " + dest
	}
	return ""
}

func TestForbidden(t *testing.T) {
	tests := []struct {
		pkg, imp string
		bad      bool
	}{
		{"edge", module + "/wire", false},
		{"edge", module + "/fleet", false},
		{"edge", module + "/control", true},
		{"edge", module + "/dnsroute", true},
		{"dnsroute", module + "/edge/store", true},
		{"control", module + "/purge", false},
		{"control", module + "/deploy", true},
		{"deploy", module + "/control", true},
		{"deploy", module + "/wire", false},
		{"edge", module + "/origin/fetch", false},
		{"edge", module + "/origin", true},
		{"origin", module + "/origin/fetch", false},
		{"edge", module + "/sim", true},
		{"bench/h3load", module + "/sim", true},
		{".", module + "/sim", false},
		{"sim", module + "/sim/report", false},
		{"sim/report", module + "/sim/scenario", false},
		{"sim", module + "/edge", false},
		{"edge/store", module + "/edge/httpcache", false},
		{"purge", module + "/fleet", false},
		{"purge", module + "/control", true},
		{"purge", module + "/origin/fetch", true},
		{"fleet", module + "/purge", true},
		{"fleet", module + "/wire", false},
		{"wire", module + "/fleet", true},
		{"wire", module + "/purge", true},
		{"wire", "github.com/nats-io/nats.go", true},
		{"wire", "net/http", false},
		{"edge/httpcache", "net/http", false},
		{"edge/httpcache", module + "/wire", true},
		{"dnsroute/geo", "github.com/oschwald/maxminddb-golang/v2", false},
		{"dnsroute/geo", "github.com/miekg/dns", true},
		{"dnsroute/geo/geodata", "github.com/maxmind/mmdbwriter/mmdbtype", false},
		{"edge/compress", "github.com/klauspost/compress/zstd", false},
		{"edge", module + "/internal/reuseport", false},
		{"internal/reuseport", module + "/edge", true},
		{"internal/reuseport", "github.com/nats-io/nats.go", true},
		{"internal/natstest", module + "/internal/natsauth", false},
		{"internal/natstest", module + "/wire", true},
		{"internal/yamlconf", "go.yaml.in/yaml/v3", false},
	}
	for _, tt := range tests {
		if got := forbidden(tt.pkg, tt.imp) != ""; got != tt.bad {
			t.Errorf("forbidden(%q, %q) = %v, want %v", tt.pkg, tt.imp, got, tt.bad)
		}
	}
	for _, pkg := range []string{".", "bench/h3load", "deploy", "sim/wan", "origin/fetch", "internal/natstest"} {
		if _, ok := role(pkg); !ok {
			t.Errorf("role(%q) found none", pkg)
		}
	}
	if _, ok := role("tools/x"); ok {
		t.Error(`role("tools/x") found one; a package outside the layout must have none`)
	}
}
