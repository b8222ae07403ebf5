package control

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const specPath = "../docs/api/openapi.yaml"

// specMismatches compares the OpenAPI spec's operations with the server's routes and lists
// every route missing from the spec and every operation the server lacks.
func specMismatches(spec []byte, routes []Route) ([]string, error) {
	var doc struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("parse spec: %w", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		return nil, fmt.Errorf("spec is OpenAPI %q, want 3.x", doc.OpenAPI)
	}
	inSpec := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				inSpec[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	var out []string
	served := map[string]bool{}
	for _, r := range routes {
		served[r.Pattern] = true
		if !inSpec[r.Pattern] {
			out = append(out, "route "+r.Pattern+" is not in the spec")
		}
	}
	for op := range inSpec {
		if !served[op] {
			out = append(out, "spec operation "+op+" is not served")
		}
	}
	slices.Sort(out)
	return out, nil
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	s, err := New(Config{TokensFile: "testdata/tokens.yaml"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got, err := specMismatches(spec, s.Routes())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		t.Error(m)
	}

	// Routes added with Handle count too: an undocumented one is caught.
	s.Handle("POST /v1/undocumented", ScopePurge, http.NotFoundHandler())
	got, _ = specMismatches(spec, s.Routes())
	if want := []string{"route POST /v1/undocumented is not in the spec"}; !slices.Equal(got, want) {
		t.Errorf("after Handle, mismatches = %q, want %q", got, want)
	}
}

// TestOpenAPIRefsResolve keeps the spec self-consistent: every $ref names a component.
func TestOpenAPIRefsResolve(t *testing.T) {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(spec, &root); err != nil {
		t.Fatalf("parse spec: %v", err)
	}
	var doc map[string]any
	if err := root.Decode(&doc); err != nil {
		t.Fatalf("decode spec: %v", err)
	}
	comps, _ := doc["components"].(map[string]any)
	var walk func(n *yaml.Node)
	refs := 0
	walk = func(n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i++ {
			if n.Kind == yaml.MappingNode && i%2 == 0 && n.Content[i].Value == "$ref" {
				refs++
				ref := n.Content[i+1].Value
				parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
				section, _ := comps[parts[0]].(map[string]any)
				if len(parts) != 2 || section[parts[1]] == nil {
					t.Errorf("$ref %q (line %d) names no component", ref, n.Content[i+1].Line)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
	if refs == 0 {
		t.Error("found no $ref in the spec; the walk is broken")
	}
}
