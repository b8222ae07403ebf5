package dnsroute

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestConfigFieldsDocumented: every field of dns.yaml is in docs/dns.md's configuration table,
// as a row of its own (`soa.refresh`, `pops[].nodes[]`) or, for a field of a list's elements,
// in the row of its list (`{id, city, region, lat, lon, nodes}`); and every row names a field.
func TestConfigFieldsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/dns.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start, end := strings.Index(doc, "## Configuration (`dns.yaml`)"), strings.Index(doc, "## GeoIP data")
	if start < 0 || end < start {
		t.Fatal(`docs/dns.md has no "Configuration" section before "GeoIP data"`)
	}
	rows := map[string]string{} // field path as the table writes it, [] removed -> the row's other cells
	code := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(doc[start:end], "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			rows[strings.ReplaceAll(m[1], "[]", "")] = strings.Join(cells[2:], "|")
		}
	}
	if len(rows) < 30 {
		t.Fatalf("only %d rows read from docs/dns.md's configuration table", len(rows))
	}
	fields := map[string]bool{} // path -> whether the table must name it itself
	var walk func(t reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			path := prefix + name
			// A struct (soa, policy) is named by its fields' rows; a list of them (ns, pops)
			// has a row of its own.
			fields[path] = f.Type.Kind() != reflect.Struct || f.Type.PkgPath() == "time"
			ft := f.Type
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
				walk(ft, path+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	for path, own := range fields {
		if _, ok := rows[path]; ok || !own {
			continue
		}
		parent, leaf := "", path
		if i := strings.LastIndex(path, "."); i >= 0 {
			parent, leaf = path[:i], path[i+1:]
		}
		if row, ok := rows[parent]; ok && regexp.MustCompile(`[{ ,]`+regexp.QuoteMeta(leaf)+`\b`).MatchString(row) {
			continue
		}
		t.Errorf("dns.yaml field %s is not in docs/dns.md's configuration table", path)
	}
	for row := range rows {
		if _, ok := fields[row]; !ok {
			t.Errorf("docs/dns.md's configuration table has a row for %s, which dns.yaml has no field for", row)
		}
	}
}
