package h1fields

import (
	"net/http"
	"reflect"
	"testing"
)

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name, lines string
		want        http.Header // nil: refused
	}{
		{"none", "", http.Header{}},
		{"canonical names, values in order, whitespace trimmed",
			"vary: a\r\nX-ID:  1 \t\r\nVary:b\r\nEMPTY:\r\n",
			http.Header{"Vary": {"a", "b"}, "X-Id": {"1"}, "Empty": {""}}},
		{"a comma stays in its value", "Cache-Control: max-age=1, public\r\n", http.Header{"Cache-Control": {"max-age=1, public"}}},
		{"obs-fold", "X: a\r\n b\r\n", nil},
		{"bare LF", "X: a\nY: b\r\n", nil},
		{"bare CR", "X: a\rb\r\n", nil},
		{"no CRLF at the end", "X: a", nil},
		{"no colon", "X\r\n", nil},
		{"empty name", ": a\r\n", nil},
		{"space before the colon", "X : a\r\n", nil},
		{"control in a value", "X: a\x01\r\n", nil},
		{"invalid name", "X(1): a\r\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := Read(tc.lines, nil)
			if ok != (tc.want != nil) || !reflect.DeepEqual(h, tc.want) {
				t.Errorf("Read(%q) = %q, %v; want %q", tc.lines, h, ok, tc.want)
			}
		})
	}
}

func TestReadCheck(t *testing.T) {
	var seen []string
	check := func(key, value string) (keep, ok bool) {
		seen = append(seen, key+"="+value)
		switch key {
		case "Host":
			return false, true
		case "Transfer-Encoding":
			return false, false
		}
		return true, true
	}
	h, ok := Read("host: a\r\nX: 1\r\n", check)
	if !ok || !reflect.DeepEqual(h, http.Header{"X": {"1"}}) || !reflect.DeepEqual(seen, []string{"Host=a", "X=1"}) {
		t.Errorf("Read with a check that drops Host: %q, %v, check saw %q", h, ok, seen)
	}
	if h, ok := Read("X: 1\r\ntransfer-encoding: chunked\r\n", check); ok || h != nil {
		t.Errorf("Read with a check that refuses Transfer-Encoding: %q, %v; want refused", h, ok)
	}
}

func TestCutLine(t *testing.T) {
	for _, tc := range []struct {
		s, line, rest string
		ok            bool
	}{
		{"a\r\nb\r\n", "a", "b\r\n", true},
		{"\r\n", "", "", true},
		{"a\nb\r\n", "", "", false},
		{"a\rb\r\n", "", "", false},
		{"a", "", "", false},
	} {
		line, rest, ok := CutLine(tc.s)
		if line != tc.line || rest != tc.rest || ok != tc.ok {
			t.Errorf("CutLine(%q) = %q, %q, %v; want %q, %q, %v", tc.s, line, rest, ok, tc.line, tc.rest, tc.ok)
		}
	}
}

func TestCanonicalKey(t *testing.T) {
	for in, want := range map[string]string{"Content-Type": "Content-Type", "content-type": "Content-Type", "ETag": "Etag", "X-ID": "X-Id"} {
		if got := CanonicalKey(in); got != want {
			t.Errorf("CanonicalKey(%q) = %q, want %q", in, got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { CanonicalKey("Content-Type") }); a != 0 {
		t.Errorf("CanonicalKey of a canonical name: %v allocations, want 0", a)
	}
}

// TestReadInto reads heads one after another into one header and one backing array, as a
// connection's requests are read: each gets exactly its own fields, a head with more fields
// than the array holds still reads whole, and a head that fits costs no allocation.
func TestReadInto(t *testing.T) {
	h := make(http.Header)
	var strs [2]string
	for _, tc := range []struct {
		lines string
		want  http.Header
	}{
		{"A: 1\r\nB: 2\r\n", http.Header{"A": {"1"}, "B": {"2"}}},
		{"C: 3\r\n", http.Header{"C": {"3"}}},
		{"A: 1\r\nA: 2\r\nD: 4\r\nE: 5\r\n", http.Header{"A": {"1", "2"}, "D": {"4"}, "E": {"5"}}},
		{"B: 2\r\n", http.Header{"B": {"2"}}},
	} {
		clear(h)
		if !ReadInto(h, strs[:], tc.lines, nil) || !reflect.DeepEqual(h, tc.want) {
			t.Errorf("ReadInto(%q) = %q; want %q", tc.lines, h, tc.want)
		}
	}
	clear(h)
	if ReadInto(h, strs[:], "A: 1\r\nbad\r\n", nil) {
		t.Errorf("ReadInto of a line without a colon: accepted")
	}
	if a := testing.AllocsPerRun(100, func() {
		clear(h)
		ReadInto(h, strs[:], "Host: a\r\nAccept: */*\r\n", nil)
	}); a != 0 {
		t.Errorf("ReadInto into a header with room: %v allocations; want 0", a)
	}
}
