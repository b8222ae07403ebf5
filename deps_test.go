package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meridian-cdn/meridian"

// TestDeps enforces the import rules in DESIGN.md: dependencies point one way
// (main -> sim -> {edge, dnsroute, control, origin} -> {purge, wire}); edge, dnsroute and
// control never import each other, except the wire records and the fleet bucket client that
// every node shares; only main imports sim; leaf packages import only the standard library and
// their one domain library.
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
		for _, imp := range imps {
			if msg := forbidden(pkg, imp); msg != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, msg)
			}
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

func within(pkg, tree string) bool { return pkg == tree || strings.HasPrefix(pkg, tree+"/") }

// shared lists the packages under control/ that every node may import.
var shared = map[string]bool{"wire": true, "fleet": true}

// leaves maps each leaf package to the outside modules it may import besides the standard library.
var leaves = map[string][]string{
	"wire":           nil,
	"edge/httpcache": nil,
	"edge/compress":  {"github.com/andybalholm/brotli", "github.com/klauspost/compress"},
	"dnsroute/geo":   {"github.com/oschwald/geoip2-golang", "github.com/oschwald/maxminddb-golang", "github.com/maxmind/mmdbwriter"},
}

func forbidden(pkg, imp string) string {
	internal := strings.HasPrefix(imp, module+"/")
	if allowed, ok := leaves[pkg]; ok {
		if internal {
			return "a leaf package imports no other Meridian package"
		}
		if strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
			for _, a := range allowed {
				if within(imp, a) {
					return ""
				}
			}
			return "a leaf package imports only the standard library and its one domain library"
		}
		return ""
	}
	if !internal {
		return ""
	}
	if within(pkg, "internal") && !within(rel(imp), "internal") {
		return "internal packages are leaves shared by every server: they import no Meridian package outside internal/"
	}
	to := rel(imp)
	if within(to, "sim") && pkg != "." && !within(pkg, "sim") {
		return "only main imports sim"
	}
	roles := []string{"edge", "dnsroute", "control", "origin", "purge"}
	for _, from := range roles {
		if !within(pkg, from) {
			continue
		}
		for _, other := range roles {
			if other == from || !within(to, other) || shared[to] {
				continue
			}
			switch {
			case other == "purge" && from != "origin":
				continue // the purge message is shared by edge and control
			case other == "origin" && within(to, "origin/fetch") && from == "edge":
				continue // the edge reaches upstreams through the origin client
			}
			return from + " may not import " + other
		}
	}
	if within(pkg, "purge") && within(to, "control") && !shared[to] {
		return "purge may not import control"
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
		{"edge", module + "/origin/fetch", false},
		{"edge", module + "/origin", true},
		{"edge", module + "/sim", true},
		{".", module + "/sim", false},
		{"wire", module + "/purge", true},
		{"wire", "github.com/nats-io/nats.go", true},
		{"edge/httpcache", "net/http", false},
		{"dnsroute/geo", "github.com/oschwald/geoip2-golang", false},
		{"edge/compress", "github.com/klauspost/compress/zstd", false},
		{"edge/compress", "github.com/meridian-cdn/meridian/edge/httpcache", true},
		{"edge/compress", "github.com/dgraph-io/ristretto/v2", true},
		{"purge", module + "/control", true},
		{"edge", module + "/internal/reuseport", false},
		{"internal/reuseport", module + "/edge", true},
		{"internal/natstest", module + "/internal/natsauth", false},
		{"internal/natstest", module + "/wire", true},
	}
	for _, tt := range tests {
		if got := forbidden(tt.pkg, tt.imp) != ""; got != tt.bad {
			t.Errorf("forbidden(%q, %q) = %v, want %v", tt.pkg, tt.imp, got, tt.bad)
		}
	}
}
