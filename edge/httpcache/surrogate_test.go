package httpcache

import (
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestSurrogateKeys(t *testing.T) {
	long := strings.Repeat("k", MaxSurrogateKeyLen+1)
	tests := []struct {
		name string
		h    http.Header
		want []string
	}{
		{"none", hdr("Cache-Control", "max-age=1"), nil},
		{"Surrogate-Key space-separated", hdr("Surrogate-Key", " product-7  category\tshoes ", "Surrogate-Key", "home"),
			[]string{"product-7", "category", "shoes", "home"}},
		{"Cache-Tag comma-separated", hdr("Cache-Tag", "a, b ,,c", "Cache-Tag", "d"), []string{"a", "b", "c", "d"}},
		{"Cache-Groups strings", hdr("Cache-Groups", `"scripts", "shared assets"`), []string{"scripts", "shared assets"}},
		{"Cache-Groups escapes", hdr("Cache-Groups", `"a\"b", "c\\d"`), []string{`a"b`, `c\d`}},
		{"Cache-Groups ignores non-strings and parameters", hdr("Cache-Groups", `"x";p=1, tok, 42, 1.5, ?1, :AAE=:, @1700000000, %"caf%c3%a9", ("in" "list"), "y";a;b="c"`),
			[]string{"x", "y"}},
		{"Cache-Groups across lines", hdr("Cache-Groups", `"a"`, "Cache-Groups", `"b"`), []string{"a", "b"}},
		{"malformed Cache-Groups yields nothing from it", hdr("Surrogate-Key", "k", "Cache-Groups", `"a", "b`), []string{"k"}},
		{"unquoted group is a token, not a string", hdr("Cache-Groups", `a, "b"`), []string{"b"}},
		{"all three, deduplicated in order", hdr("Surrogate-Key", "a b", "Cache-Tag", "b, c", "Cache-Groups", `"c", "d", "a"`),
			[]string{"a", "b", "c", "d"}},
		{"over-long key dropped", hdr("Surrogate-Key", long+" ok"), []string{"ok"}},
		{"empty string group skipped", hdr("Cache-Groups", `"", "x"`), []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SurrogateKeys(tt.h); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SurrogateKeys(%v) = %q, want %q", tt.h, got, tt.want)
			}
		})
	}
}

func TestSurrogateKeysLimit(t *testing.T) {
	var keys []string
	for i := range MaxSurrogateKeys + 50 {
		keys = append(keys, "k"+strconv.Itoa(i))
	}
	got := SurrogateKeys(hdr("Surrogate-Key", strings.Join(keys, " ")))
	if len(got) != MaxSurrogateKeys || got[0] != "k0" || got[len(got)-1] != fmt.Sprintf("k%d", MaxSurrogateKeys-1) {
		t.Errorf("SurrogateKeys(%d keys) = %d keys [%s ... %s], want the first %d", len(keys), len(got), got[0], got[len(got)-1], MaxSurrogateKeys)
	}
}

func TestCacheGroupInvalidation(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want []string
	}{
		{"none", hdr(), nil},
		{"strings", hdr("Cache-Group-Invalidation", `"scripts", "styles", "scripts"`), []string{"scripts", "styles"}},
		{"Cache-Groups is not an invalidation", hdr("Cache-Groups", `"a"`), nil},
		{"malformed", hdr("Cache-Group-Invalidation", `"a",`), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CacheGroupInvalidation(tt.h); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CacheGroupInvalidation(%v) = %q, want %q", tt.h, got, tt.want)
			}
		})
	}
}

func TestParseStringList(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   []string
		ok     bool
	}{
		{"no lines", nil, nil, true},
		{"empty line", []string{""}, nil, true},
		{"one", []string{`"a"`}, []string{"a"}, true},
		{"ows around commas", []string{"\"a\" \t,\t \"b\""}, []string{"a", "b"}, true},
		{"leading spaces", []string{`   "a"`}, []string{"a"}, true},
		{"trailing comma", []string{`"a",`}, nil, false},
		{"leading comma", []string{`,"a"`}, nil, false},
		{"double comma", []string{`"a",,"b"`}, nil, false},
		{"unterminated string", []string{`"a`}, nil, false},
		{"bad escape", []string{`"a\n"`}, nil, false},
		{"control char in string", []string{"\"a\tb\""}, nil, false},
		{"non-ascii in string", []string{"\"caf\xc3\xa9\""}, nil, false},
		{"missing comma", []string{`"a" "b"`}, nil, false},
		{"integer too long", []string{`1234567890123456`}, nil, false},
		{"integer max length", []string{`123456789012345, "a"`}, []string{"a"}, true},
		{"decimal", []string{`-12.345, "a"`}, []string{"a"}, true},
		{"decimal too precise", []string{`1.2345`}, nil, false},
		{"decimal trailing dot", []string{`1.`}, nil, false},
		{"lone minus", []string{`-`}, nil, false},
		{"bad boolean", []string{`?2`}, nil, false},
		{"unterminated bytes", []string{`:AAE=`}, nil, false},
		{"bad bytes", []string{`:A*E=:`}, nil, false},
		{"bad parameter key", []string{`"a";Key=1`}, nil, false},
		{"parameter without value", []string{`"a";k, "b"`}, []string{"a", "b"}, true},
		{"inner list", []string{`("a" "b");p=1, "c"`}, []string{"c"}, true},
		{"empty inner list", []string{`(), "c"`}, []string{"c"}, true},
		{"unterminated inner list", []string{`("a" "b"`}, nil, false},
		{"inner list missing space", []string{`("a""b")`}, nil, false},
		{"display string bad escape", []string{`%"%C3"`}, nil, false},
		{"date with decimal", []string{`@1.5`}, nil, false},
		{"garbage", []string{`<a>`}, nil, false},
		{"empty lines between", []string{`"a"`, "", `"b"`}, []string{"a", "b"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseStringList(tt.values)
			if !reflect.DeepEqual(got, tt.want) || ok != tt.ok {
				t.Errorf("ParseStringList(%q) = %q, %v, want %q, %v", tt.values, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// sfList serialises strings as a Structured Fields list of Strings.
func sfList(strs []string) string {
	var b []byte
	for i, s := range strs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendSFString(b, s)
	}
	return string(b)
}

func FuzzCacheGroups(f *testing.F) {
	for _, s := range []string{`"a", "b"`, `"x";p=1, tok, 42, ("in" "list")`, `"a\"b"`, `"a",`, `:AAE=:, ?1, @1, %"%c3%a9"`, `-1.234`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		strs, ok := ParseStringList([]string{v})
		if !ok && strs != nil {
			t.Fatalf("ParseStringList(%q) failed but returned %q", v, strs)
		}
		for _, s := range strs {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					t.Fatalf("ParseStringList(%q) returned %q with byte %#x outside printable ASCII", v, s, s[i])
				}
			}
		}
		// What was parsed serialises and parses back to the same strings.
		if ok && len(strs) > 0 {
			again, ok2 := ParseStringList([]string{sfList(strs)})
			if !ok2 || !reflect.DeepEqual(again, strs) {
				t.Errorf("round trip of %q: %q -> %q (ok %v)", v, strs, again, ok2)
			}
		}
		h := http.Header{"Cache-Groups": {v}, "Cache-Group-Invalidation": {v}}
		keys := SurrogateKeys(h)
		if len(keys) > MaxSurrogateKeys {
			t.Errorf("SurrogateKeys gave %d keys, limit %d", len(keys), MaxSurrogateKeys)
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if k == "" || len(k) > MaxSurrogateKeyLen || seen[k] {
				t.Errorf("SurrogateKeys(Cache-Groups: %q) has bad or duplicate key %q", v, k)
			}
			seen[k] = true
		}
		if inv := CacheGroupInvalidation(h); !reflect.DeepEqual(inv, keys) {
			t.Errorf("Cache-Group-Invalidation %q = %q, Cache-Groups gave %q", v, inv, keys)
		}
	})
}

func BenchmarkSurrogateKeys(b *testing.B) {
	h := hdr("Surrogate-Key", "product-7 category-shoes home", "Cache-Groups", `"scripts", "shared"`)
	b.ReportAllocs()
	for b.Loop() {
		SurrogateKeys(h)
	}
}

// TestTooManySurrogateKeys: more distinct keys than MaxSurrogateKeys, across the three fields,
// is too many; duplicates, keys too long for any purge to name and a malformed Cache-Groups
// are not counted.
func TestTooManySurrogateKeys(t *testing.T) {
	keys := func(n int, sep string) string {
		ks := make([]string, n)
		for i := range ks {
			ks[i] = fmt.Sprintf("k%d", i)
		}
		return strings.Join(ks, sep)
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		want bool
	}{
		{"none", http.Header{}, false},
		{"at the limit", http.Header{"Surrogate-Key": {keys(MaxSurrogateKeys, " ")}}, false},
		{"one past", http.Header{"Cache-Tag": {keys(MaxSurrogateKeys+1, ",")}}, true},
		{"across fields", http.Header{"Surrogate-Key": {keys(MaxSurrogateKeys, " ")}, "Cache-Groups": {`"other"`}}, true},
		{"duplicates", http.Header{"Surrogate-Key": {keys(MaxSurrogateKeys, " "), keys(MaxSurrogateKeys, " ")}}, false},
		{"too long to name", http.Header{"Surrogate-Key": {keys(MaxSurrogateKeys, " ") + " " + strings.Repeat("x", MaxSurrogateKeyLen+1)}}, false},
		{"malformed groups", http.Header{"Surrogate-Key": {keys(MaxSurrogateKeys, " ")}, "Cache-Groups": {`"a",`}}, false},
	} {
		if got := TooManySurrogateKeys(tc.h); got != tc.want {
			t.Errorf("%s: TooManySurrogateKeys = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSurrogateKeyFields: the three fields that declare purge keys, in any case, and no other.
func TestSurrogateKeyFields(t *testing.T) {
	for _, name := range []string{"Surrogate-Key", "cache-tag", "CACHE-GROUPS"} {
		if !SurrogateKeyField(name) {
			t.Errorf("SurrogateKeyField(%q) = false", name)
		}
		if h := (http.Header{http.CanonicalHeaderKey(name): {""}}); !DeclaresSurrogateKeys(h) {
			t.Errorf("DeclaresSurrogateKeys with %s = false", name)
		}
	}
	for _, name := range []string{"Cache-Group-Invalidation", "Surrogate-Control", "Set-Cookie"} {
		if SurrogateKeyField(name) {
			t.Errorf("SurrogateKeyField(%q) = true", name)
		}
		if h := (http.Header{name: {"a"}}); DeclaresSurrogateKeys(h) {
			t.Errorf("DeclaresSurrogateKeys with %s = true", name)
		}
	}
}
