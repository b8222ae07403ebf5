package httpcache

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestNormalizeAcceptEncoding(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   string
	}{
		{"absent", nil, ""},
		{"empty", []string{""}, ""},
		{"gzip br", []string{"gzip, br"}, "br"},
		{"br gzip no space", []string{"br,gzip"}, "br"},
		{"case and weights", []string{"BR;q=1.0, gzip;q=0.5"}, "br"},
		{"equal weights server order", []string{"gzip;q=1, br"}, "br"},
		{"client prefers gzip", []string{"gzip;q=1, br;q=0.5"}, "gzip"},
		{"browser", []string{"gzip, deflate, br, zstd"}, "br"},
		{"zstd over gzip", []string{"gzip, zstd"}, "zstd"},
		{"gzip deflate", []string{"gzip, deflate"}, "gzip"},
		{"x-gzip alias", []string{"x-gzip"}, "gzip"},
		{"deflate only", []string{"deflate"}, ""},
		{"star", []string{"*"}, "br"},
		{"star minus br", []string{"br;q=0, *"}, "zstd"},
		{"star minus all", []string{"br;q=0, zstd;q=0, gzip;q=0, *"}, ""},
		{"star low listed high", []string{"*;q=0.5, gzip"}, "gzip"},
		{"star refused", []string{"*;q=0"}, ""},
		{"identity refused only", []string{"identity;q=0"}, ""},
		{"identity preferred", []string{"identity, gzip;q=0.5"}, ""},
		{"identity lower", []string{"identity;q=0.5, gzip"}, "gzip"},
		{"identity through star", []string{"*;q=0.9, gzip;q=0.5"}, "br"},
		{"zero weight", []string{"br;q=0.000, gzip"}, "gzip"},
		{"whitespace", []string{" \tgzip ; q=0.8 ,  br ;Q=0.9 "}, "br"},
		{"lines combined", []string{"gzip", "br"}, "br"},
		{"empty elements", []string{",, gzip ,"}, "gzip"},
		{"malformed weight ignored", []string{"br;q=1.5, gzip"}, "gzip"},
		{"malformed param ignored", []string{"br;level=1, gzip"}, "gzip"},
		{"malformed name ignored", []string{"b r, gzip"}, "gzip"},
		{"three decimals max", []string{"br;q=0.0001, gzip;q=0.001"}, "gzip"},
		{"last listing wins", []string{"br;q=0, br"}, "br"},
		{"low weight beats unlisted identity", []string{"gZip;q=0.1"}, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NormalizeAcceptEncoding(tt.values); got != tt.want {
				t.Errorf("NormalizeAcceptEncoding(%q) = %q, want %q", tt.values, got, tt.want)
			}
		})
	}
}

func TestCanonicalAcceptEncoding(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   string
		ok     bool
	}{
		{"empty", []string{""}, "", true},
		{"sorted", []string{"gzip, br"}, "br, gzip", true},
		{"weights dropped", []string{"BR;q=1.0, gzip;q=0.5"}, "br, gzip", true},
		{"refused dropped", []string{"gzip, br;q=0"}, "gzip", true},
		{"alias", []string{"x-gzip, Deflate"}, "deflate, gzip", true},
		{"identity explicit is default", []string{"gzip, identity;q=0.2"}, "gzip", true},
		{"identity refused", []string{"gzip, identity;q=0"}, "gzip, identity;q=0", true},
		{"star refused", []string{"gzip, *;q=0"}, "gzip, identity;q=0", true},
		{"star refused identity kept", []string{"gzip, *;q=0, identity"}, "gzip", true},
		{"star", []string{"gzip, *"}, "*", true},
		{"star minus", []string{"*, zstd;q=0, br;q=0"}, "*, br;q=0, zstd;q=0", true},
		{"star minus identity", []string{"identity;q=0, *"}, "*, identity;q=0", true},
		{"unknown coding lower-cased", []string{"Foo, gzip"}, "foo, gzip", true},
		{"lines", []string{"gzip", " br "}, "br, gzip", true},
		{"duplicate", []string{"gzip, GZIP;q=0"}, "", false},
		{"duplicate alias", []string{"gzip, x-gzip"}, "", false},
		{"bad weight", []string{"gzip;q=1.001"}, "", false},
		{"bad param", []string{"gzip;foo=bar"}, "", false},
		{"bad name", []string{`"gzip"`}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := CanonicalAcceptEncoding(tt.values)
			if got != tt.want || ok != tt.ok {
				t.Errorf("CanonicalAcceptEncoding(%q) = %q, %v, want %q, %v", tt.values, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestAcceptsEncoding(t *testing.T) {
	tests := []struct {
		values []string
		coding string
		want   bool
	}{
		{nil, "gzip", true},
		{nil, "", true},
		{[]string{""}, "gzip", false},
		{[]string{""}, "", true},
		{[]string{"gzip, br"}, "br", true},
		{[]string{"gzip, br"}, "zstd", false},
		{[]string{"gzip, br"}, "identity", true},
		{[]string{"x-gzip"}, "GZIP", true},
		{[]string{"gzip"}, "x-gzip", true},
		{[]string{"br;q=0, *"}, "br", false},
		{[]string{"br;q=0, *"}, "zstd", true},
		{[]string{"*;q=0"}, "", false},
		{[]string{"*;q=0, identity"}, "", true},
		{[]string{"gzip, identity;q=0"}, "identity", false},
		{[]string{"gzip;q=2, br"}, "gzip", false},
	}
	for _, tt := range tests {
		if got := AcceptsEncoding(tt.values, tt.coding); got != tt.want {
			t.Errorf("AcceptsEncoding(%q, %q) = %v, want %v", tt.values, tt.coding, got, tt.want)
		}
	}
}

// TestVaryKeyAcceptEncodingSpellings is the issue's check: five spellings of "gzip, br" share one
// variant, and values that accept other codings do not.
func TestVaryKeyAcceptEncodingSpellings(t *testing.T) {
	vary := []string{"accept-encoding"}
	want := VaryKey(vary, hdr("Accept-Encoding", "gzip, br"))
	for _, v := range []string{"br,gzip", "BR;q=1.0, gzip;q=0.5", "gzip;q=1, br", " x-gzip ,br ", "br;q=0.9, gzip;q=0.8, identity"} {
		if got := VaryKey(vary, hdr("Accept-Encoding", v)); got != want {
			t.Errorf("VaryKey(Accept-Encoding: %q) = %q, want %q (as for \"gzip, br\")", v, got, want)
		}
	}
	for _, v := range []string{"br", "gzip", "gzip, br, zstd", "gzip, br;q=0", "gzip, br, identity;q=0", "*", ""} {
		if got := VaryKey(vary, hdr("Accept-Encoding", v)); got == want {
			t.Errorf("VaryKey(Accept-Encoding: %q) = %q, the key of \"gzip, br\"; want another", v, got)
		}
	}
	if absent := VaryKey(vary, http.Header{}); absent == VaryKey(vary, hdr("Accept-Encoding", "")) {
		t.Errorf("VaryKey: absent and empty Accept-Encoding share key %q", absent)
	}
}

// codingRE is the grammar of one Accept-Encoding element (RFC 9110 §12.5.3, §12.4.2), written
// independently of parseCoding.
var codingRE = regexp.MustCompile("^[ \t]*([-!#$%&'*+.^_`|~0-9A-Za-z]+)[ \t]*(?:;[ \t]*[qQ]=(0(?:\\.[0-9]{0,3})?|1(?:\\.0{0,3})?)[ \t]*)?$")

// refWeights is a reference reading of Accept-Encoding: the weight of each listed coding (last
// listing wins), whether the value is malformed (a bad element or a coding listed twice).
func refWeights(values []string) (weights map[string]int, malformed bool) {
	weights = map[string]int{}
	for _, v := range values {
		for _, elem := range strings.Split(strings.TrimSpace(v), ",") {
			if strings.Trim(elem, " \t") == "" {
				continue
			}
			m := codingRE.FindStringSubmatch(elem)
			if m == nil {
				malformed = true
				continue
			}
			name := strings.ToLower(m[1])
			if name == "x-gzip" || name == "x-compress" {
				name = name[2:]
			}
			q := 1000
			if m[2] != "" {
				f, _ := strconv.ParseFloat(m[2], 64)
				q = int(f*1000 + 0.5)
			}
			if _, dup := weights[name]; dup {
				malformed = true
			}
			weights[name] = q
		}
	}
	return weights, malformed
}

// refWeight is the weight of coding under weights: listed, else through "*", else 1000 for
// identity and 0 for the others.
func refWeight(weights map[string]int, coding string) int {
	if q, ok := weights[coding]; ok {
		return q
	}
	if q, ok := weights["*"]; ok {
		return q
	}
	if coding == "identity" {
		return 1000
	}
	return 0
}

func FuzzNormalizeAcceptEncoding(f *testing.F) {
	f.Add("gzip, deflate, br, zstd", "")
	f.Add("BR;q=1.0, gzip;q=0.5", "identity;q=0")
	f.Add("br;q=0, *", "x-gzip")
	f.Add("*;q=0", "identity")
	f.Add("gzip;q=1.", " br ; Q=0.001 ")
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		values := []string{line1, line2}
		got := NormalizeAcceptEncoding(values)
		weights, malformed := refWeights(values)

		// The choice is the reference's: highest weight, ties in server order, identity if it
		// weighs more or nothing else is acceptable.
		want, best := "", 0
		for _, c := range Codings {
			if q := refWeight(weights, c); q > best {
				want, best = c, q
			}
		}
		// An unlisted identity is acceptable but states no preference over a listed coding.
		_, idListed := weights["identity"]
		_, starListed := weights["*"]
		if (idListed || starListed) && refWeight(weights, "identity") > best {
			want = ""
		}
		if got != want {
			t.Errorf("NormalizeAcceptEncoding(%q) = %q, want %q (weights %v)", values, got, want, weights)
		}
		for _, c := range append([]string{"identity", "deflate"}, Codings...) {
			if a, ref := AcceptsEncoding(values, c), refWeight(weights, c) > 0; a != ref {
				t.Errorf("AcceptsEncoding(%q, %q) = %v, want %v (weights %v)", values, c, a, ref, weights)
			}
		}

		canon, ok := CanonicalAcceptEncoding(values)
		if ok == malformed {
			t.Fatalf("CanonicalAcceptEncoding(%q) ok = %v, but malformed = %v", values, ok, malformed)
		}
		if !ok {
			return
		}
		again, ok := CanonicalAcceptEncoding([]string{canon})
		if !ok || again != canon {
			t.Errorf("CanonicalAcceptEncoding(%q) = %q, not canonical: again %q, %v", values, canon, again, ok)
		}
		// The canonical value accepts exactly the same codings.
		cw, _ := refWeights([]string{canon})
		probes := append([]string{"identity", "deflate", "compress", "unknown-coding"}, Codings...)
		for name := range weights {
			probes = append(probes, name)
		}
		slices.Sort(probes)
		for _, p := range slices.Compact(probes) {
			if p == "*" {
				continue
			}
			if a, b := refWeight(weights, p) > 0, refWeight(cw, p) > 0; a != b {
				t.Errorf("CanonicalAcceptEncoding(%q) = %q: %s acceptable %v, canonical says %v", values, canon, p, a, b)
			}
		}
	})
}

func BenchmarkNormalizeAcceptEncoding(b *testing.B) {
	values := []string{"gzip, deflate, br, zstd"}
	b.ReportAllocs()
	for b.Loop() {
		NormalizeAcceptEncoding(values)
	}
}

func ExampleNormalizeAcceptEncoding() {
	for _, v := range []string{"gzip, deflate, br, zstd", "gzip;q=1, br;q=0.5", "br;q=0, *", "deflate"} {
		fmt.Printf("%q -> %q\n", v, NormalizeAcceptEncoding([]string{v}))
	}
	// Output:
	// "gzip, deflate, br, zstd" -> "br"
	// "gzip;q=1, br;q=0.5" -> "gzip"
	// "br;q=0, *" -> "zstd"
	// "deflate" -> ""
}

func ExampleCanonicalAcceptEncoding() {
	c, ok := CanonicalAcceptEncoding([]string{"BR;q=1.0, x-gzip;q=0.5, identity;q=0"})
	fmt.Println(c, ok)
	// Output: br, gzip, identity;q=0 true
}
