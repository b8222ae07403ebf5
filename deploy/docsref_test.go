package deploy

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestDocsFleetReferenceListsEveryField: docs/deploy.md's "The fleet file" says its YAML block
// lists every field with its default, and a newcomer writes a fleet file from it. Every field
// the parser takes must be in it, at its place (control.nodes[].private_ipv4 beside
// pops[].nodes[].private_ipv4), and every field in it must be one the parser takes. The
// fields of wire.HostConfig and wire.RoutingPolicy (hosts, dns.policy) are the API's, listed in
// docs/control.md and docs/dns.md.
func TestDocsFleetReferenceListsEveryField(t *testing.T) {
	b, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n## The fleet file\n")
	if !ok {
		t.Fatal(`docs/deploy.md has no "## The fleet file" section`)
	}
	_, block, ok := strings.Cut(after, "\n```yaml\n")
	if !ok {
		t.Fatal(`docs/deploy.md "The fleet file" has no yaml block`)
	}
	block, _, _ = strings.Cut(block, "\n```")
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(block), &doc); err != nil {
		t.Fatalf("the reference block is not YAML: %v", err)
	}
	documented := map[string]bool{}
	var walkDoc func(n *yaml.Node, path string)
	walkDoc = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walkDoc(c, path)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walkDoc(c, path+"[]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := strings.TrimPrefix(path+"."+n.Content[i].Value, ".")
				documented[p] = true
				walkDoc(n.Content[i+1], p)
			}
		}
	}
	walkDoc(&doc, "")

	parsed := map[string]bool{}
	var walkType func(t reflect.Type, path string)
	walkType = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			if typ.Kind() == reflect.Slice {
				path += "[]"
			}
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[Fleet]().PkgPath() {
			return // a scalar, a map, time.Duration, or the API's wire types
		}
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := strings.TrimPrefix(path+"."+name, ".")
			parsed[p] = true
			walkType(typ.Field(i).Type, p)
		}
	}
	walkType(reflect.TypeFor[Fleet](), "")

	for p := range parsed {
		if !documented[p] {
			t.Errorf("the fleet file takes %s, which docs/deploy.md's reference block does not list", p)
		}
	}
	for p := range documented {
		if !parsed[p] && !strings.HasPrefix(p, "hosts[].") && !strings.HasPrefix(p, "dns.policy.") && !strings.HasPrefix(p, "dns.cnames.") {
			t.Errorf("docs/deploy.md's reference block lists %s, which the fleet file does not take", p)
		}
	}
}
