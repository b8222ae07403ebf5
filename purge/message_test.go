package purge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

func values(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func TestMessageValidate(t *testing.T) {
	base := func(kind Kind, v ...string) Message {
		return Message{ID: "01TEST", Host: "www.example.com", Kind: kind, Values: v, IssuedAt: time.Unix(1, 0)}
	}
	tests := []struct {
		name      string
		m         Message
		wantField string // "" means valid
	}{
		{"url path", base(KindURL, "/a/b?c=1"), ""},
		{"url absolute same host", base(KindURL, "https://www.example.com/a"), ""},
		{"url absolute same host with port", base(KindURL, "http://www.example.com:8080/a"), ""},
		{"url foreign host", base(KindURL, "/ok", "https://evil.example.net/a"), "values[1]"},
		{"url relative", base(KindURL, "a/b"), "values[0]"},
		// A message's "//…" is a path (origin-form, as the edge reads request targets); a
		// request refuses one that is also a scheme-relative URL of its host (TestRequestMessages).
		{"url path starting with //", base(KindURL, "//www.example.com/a"), ""},
		{"url triple slash", base(KindURL, "///"), ""},
		{"url absolute with // path", base(KindURL, "https://www.example.com//a"), ""},
		{"url ftp", base(KindURL, "ftp://www.example.com/a"), "values[0]"},
		{"url with space", base(KindURL, "/a b"), "values[0]"},
		{"url userinfo", base(KindURL, "http://u:p@www.example.com/a"), "values[0]"},
		{"url empty", base(KindURL, ""), "values[0]"},
		{"prefix", base(KindPrefix, "/static/"), ""},
		{"prefix with query", base(KindPrefix, "/static?v=1"), "values[0]"},
		{"prefix without slash", base(KindPrefix, "static"), "values[0]"},
		{"prefix double slash", base(KindPrefix, "//x"), ""},
		{"url dot segment", base(KindURL, "/a/./b"), "values[0]"},
		{"url dot-dot segment", base(KindURL, "/a/b/.."), "values[0]"},
		{"url encoded dot-dot segment", base(KindURL, "/a/.%2E/b"), "values[0]"},
		{"url dots in a name", base(KindURL, "/a/..b/c.?d=/../"), ""},
		{"prefix dot-dot segment", base(KindPrefix, "/a/../b"), "values[0]"},
		{"prefix dots in a name", base(KindPrefix, "/.well-known/..x"), ""},
		{"key", base(KindKey, "product-42", "cat:shoes"), ""},
		{"key with space", base(KindKey, "a b"), "values[0]"},
		{"key with comma", base(KindKey, "a,b"), "values[0]"},
		{"key empty", base(KindKey, "ok", ""), "values[1]"},
		{"all", base(KindAll), ""},
		{"all with values", base(KindAll, "/a"), "values"},
		{"no values", base(KindURL), "values"},
		{"1000 values", base(KindKey, values(1000, func(i int) string { return fmt.Sprint("k", i) })...), ""},
		{"1001 values", base(KindKey, values(1001, func(i int) string { return fmt.Sprint("k", i) })...), "values"},
		{"value too long", base(KindKey, strings.Repeat("k", MaxValueBytes+1)), "values[0]"},
		{"value at limit", base(KindKey, strings.Repeat("k", MaxValueBytes)), ""},
		{"unknown kind", base("regex", "/a"), "kind"},
		{"no kind", base("", "/a"), "kind"},
		{"no host", Message{ID: "x", Kind: KindAll}, "host"},
		{"upper-case host", Message{ID: "x", Host: "WWW.example.com", Kind: KindAll}, "host"},
		{"host with port", Message{ID: "x", Host: "example.com:80", Kind: KindAll}, "host"},
		{"no id", Message{Host: "example.com", Kind: KindAll}, "id"},
		{"id with space", Message{ID: "a b", Host: "example.com", Kind: KindAll}, "id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *wire.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *wire.FieldError for %q", err, tt.wantField)
			}
			if fe.Field != tt.wantField {
				t.Errorf("Validate() field = %q (%v), want %q", fe.Field, err, tt.wantField)
			}
		})
	}
}

func TestNormalizeURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/a/b?c=1", "/a/b?c=1"},
		{"/a/b#frag", "/a/b"},
		{"/a%2Fb", "/a%2Fb"},
		{"/a%2Fb|c", "/a%2Fb%7Cc"}, // not "/a/b%7Cc", net/url's EscapedPath of it
		{`https://www.example.com/a%2fb"c{}?d|e`, "/a%2fb%22c%7B%7D?d|e"},
		{"/caf\u00e9", "/caf%C3%A9"},
		{"/s?q=caf\u00e9&r=%c3%a9", "/s?q=caf%C3%A9&r=%c3%a9"}, // as clients send it; the edge's key folds the hex case
		{"/x?", "/x?"},
		{"https://www.example.com", "/"},
		// Origin-form: "//a" is a path, never host a (url.Parse read "//?q" as "/?q").
		{"//a", "//a"},
		{"//?q", "//?q"},
		{"///", "///"},
		{"//a%2fb#f", "//a%2fb"},
		{"https://www.example.com//a/b?c", "//a/b?c"},
		{"https://www.example.com//", "//"},
		{"https://WWW.Example.com/a?b=2", "/a?b=2"},
		{"http://www.example.com:8080/p/q?r", "/p/q?r"},
		{"https://WWW.example.com.:443/t?d", "/t?d"}, // the edge serves the FQDN's requests as the host's
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeURL("www.example.com", tt.in)
			if err != nil || got != tt.want {
				t.Errorf("NormalizeURL(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestNormalizePrefix(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"/a", "/a", false},
		{"/a/", "/a", false},
		{"/a//", "/a", false},
		{"/", "/", false},
		{"/caf\u00e9/", "/caf%C3%A9", false},
		{"/a%2Fb", "/a%2Fb", false},
		{"/a%2Fb|c/", "/a%2Fb%7Cc", false},
		{"a", "", true},
		{"//a", "//a", false},
		{"//a/", "//a", false},
		{"//", "/", false}, // trailing slashes go, as from "/a//"
		{"/a?x", "", true},
		{"/a#x", "", true},
		{"/a b", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizePrefix(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("NormalizePrefix(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPrefixMatches(t *testing.T) {
	tests := []struct {
		prefix, uri string
		want        bool
	}{
		{"/a", "/a", true},
		{"/a", "/a/", true},
		{"/a", "/a/b", true},
		{"/a", "/a?x=1", true},
		{"/a", "/ab", false},
		{"/a", "/ab?x=/a", false},
		{"/a", "/b/a", false},
		{"/a/b", "/a", false},
		{"/", "/anything", true},
		{"/", "/", true},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+" "+tt.uri, func(t *testing.T) {
			if got := PrefixMatches(tt.prefix, tt.uri); got != tt.want {
				t.Errorf("PrefixMatches(%q, %q) = %v, want %v", tt.prefix, tt.uri, got, tt.want)
			}
		})
	}
}

func TestNewIDUniqueAndSorted(t *testing.T) {
	const n = 10000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = NewID()
	}
	if !slices.IsSorted(ids) {
		t.Errorf("NewID() sequence is not sorted")
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if len(id) != 26 {
			t.Fatalf("len(NewID()) = %d (%q), want 26", len(id), id)
		}
		if seen[id] {
			t.Fatalf("NewID() returned %q twice", id)
		}
		seen[id] = true
	}
	// The first 10 characters are the creation time in milliseconds.
	before := time.Now().Add(time.Millisecond)
	var b [16]byte
	ms := uint64(before.UnixMilli()) << 16
	for i := range 8 {
		b[i] = byte(ms >> (56 - 8*i))
	}
	if later := encodeBase32(b)[:10]; ids[n-1][:10] > later {
		t.Errorf("NewID() time part %q, want at most %q (now)", ids[n-1][:10], later)
	}
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    []string
		wantErr bool
	}{
		{"normalises urls", `{"id":"x1","host":"a.example","kind":"url","values":["https://a.example/p?q"],"issued_at":"2026-01-01T00:00:00Z"}`, []string{"/p?q"}, false},
		{"all", `{"id":"x2","host":"a.example","kind":"all","issued_at":"2026-01-01T00:00:00Z"}`, nil, false},
		{"not json", `{"id":`, nil, true},
		{"invalid", `{"id":"x3","host":"a.example","kind":"url"}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMessage([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeMessage() error = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(m.Values, tt.want) {
				t.Errorf("DecodeMessage().Values = %q, want %q", m.Values, tt.want)
			}
		})
	}
}
