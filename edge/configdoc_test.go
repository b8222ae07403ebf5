package edge

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/internal/yamlconf"
)

// TestConfigDocumented: the YAML blocks of docs/edge.md load as an edge.yaml (every key they
// name exists, with a valid value) and, together, name every field of the config file, so a
// field added to Config is shown where operators look for it and a field removed or renamed
// leaves no example behind that the node refuses.
func TestConfigDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/edge.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for rest := string(b); ; {
		i := strings.Index(rest, "\n```yaml\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("\n```yaml\n"):]
		j := strings.Index(rest, "\n```")
		if j < 0 {
			t.Fatal("docs/edge.md: a yaml block is not closed")
		}
		blocks, rest = append(blocks, rest[:j+1]), rest[j:]
	}
	if len(blocks) == 0 {
		t.Fatal("docs/edge.md has no yaml block")
	}
	named := map[string]bool{}
	for i, block := range blocks {
		p := filepath.Join(t.TempDir(), "edge.yaml")
		if err := os.WriteFile(p, []byte(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(p); err != nil {
			t.Errorf("docs/edge.md yaml block %d does not load: %v", i+1, err)
		}
		var doc any
		if _, problems := yamlconf.Decode([]byte(block), &doc); len(problems) > 0 {
			t.Fatalf("docs/edge.md yaml block %d: %v", i+1, problems)
		}
		docKeys(doc, reflect.TypeFor[Config](), "", named)
	}
	var missing []string
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		if !named[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, k := range missing {
		t.Errorf("edge.yaml field %s is in no yaml block of docs/edge.md", k)
	}
}

// configKeys lists the YAML paths of every field of t (a struct), nested fields as a.b; the
// elements of lists and maps add no step.
func configKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range fields(t) {
		keys = append(keys, prefix+f.name)
		if s := structOf(f.typ); s != nil {
			keys = append(keys, configKeys(s, prefix+f.name+".")...)
		}
	}
	return keys
}

// docKeys records in named the paths of the fields of t that v (a decoded YAML value for t)
// sets, following the struct: a Go map's keys are not fields, a struct's are.
func docKeys(v any, t reflect.Type, prefix string, named map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		if l, ok := v.([]any); ok {
			for _, e := range l {
				docKeys(e, t.Elem(), prefix, named)
			}
		}
	case reflect.Map:
		if m, ok := v.(map[string]any); ok {
			for _, e := range m {
				docKeys(e, t.Elem(), prefix, named)
			}
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for f := range fields(t) {
			if e, ok := m[f.name]; ok {
				named[prefix+f.name] = true
				docKeys(e, f.typ, prefix+f.name+".", named)
			}
		}
	}
}

type yamlField struct {
	name string
	typ  reflect.Type
}

// fields yields the YAML fields of struct t, inlined ones included.
func fields(t reflect.Type) func(func(yamlField) bool) {
	return func(yield func(yamlField) bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if strings.Contains(opts, "inline") {
				for g := range fields(f.Type) {
					if !yield(g) {
						return
					}
				}
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if !yield(yamlField{name, f.Type}) {
				return
			}
		}
	}
}

// structOf is the struct a field of type t holds (through pointers, lists and maps), or nil;
// time.Duration and other non-struct leaves are nil.
func structOf(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() == "time" {
		return nil
	}
	return t
}
