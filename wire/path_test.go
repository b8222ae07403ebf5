package wire

import (
	"net/url"
	"testing"
)

func TestEscapedPath(t *testing.T) {
	tests := []struct{ target, want string }{
		{"/a/b", "/a/b"},
		{"/a%2Fb", "/a%2Fb"},
		{"/a%2fb", "/a%2fb"}, // hex case is the key's to fold
		{"/a|b", "/a%7Cb"},
		{"/a%2Fb|c", "/a%2Fb%7Cc"}, // url.URL.EscapedPath: "/a/b%7Cc"
		{`/a%2Fb"c{}^`, "/a%2Fb%22c%7B%7D%5E"},
		{"/a(b)*!'[x]:@;=,+$&", "/a(b)*!'[x]:@;=,+$&"},
		{"/a(b|c", "/a(b%7Cc"},
		{"/caf\xc3\xa9%2F", "/caf%C3%A9%2F"},
		{"/caf\xc3\xa9", "/caf%C3%A9"},
		{"/%7E", "/%7E"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			u, err := url.ParseRequestURI(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if got := EscapedPath(u); got != tt.want {
				t.Errorf("EscapedPath(%q) = %q, want %q", tt.target, got, tt.want)
			}
		})
	}
	// A RawPath that is not Path's any more (Path set since) is not used.
	u, _ := url.ParseRequestURI("/a%2Fb|c")
	u.Path = "/x y"
	if got := EscapedPath(u); got != "/x%20y" {
		t.Errorf("EscapedPath after Path changed = %q, want %q", got, "/x%20y")
	}
}

// FuzzEscapedPath checks that EscapedPath is a spelling of the same path, that it is its own
// escaped form, and that it is url.URL.EscapedPath wherever that keeps the target's escapes.
func FuzzEscapedPath(f *testing.F) {
	for _, s := range []string{"/a%2Fb|c", "/a(b)", "/caf\xc3\xa9", "/a%7cb", "/%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Opaque != "" {
			return
		}
		got := EscapedPath(u)
		back, err := url.PathUnescape(got)
		if err != nil || back != u.Path {
			t.Fatalf("EscapedPath(%q) = %q, which unescapes to %q (%v), want %q", target, got, back, err, u.Path)
		}
		v := &url.URL{Path: back, RawPath: got}
		if v.EscapedPath() != got {
			t.Fatalf("EscapedPath(%q) = %q, which url does not keep as an escaped path (%q)", target, got, v.EscapedPath())
		}
		if p, err := url.PathUnescape(u.EscapedPath()); err == nil && p == u.Path && u.RawPath != "" {
			if e := u.EscapedPath(); e == u.RawPath && got != e {
				t.Fatalf("EscapedPath(%q) = %q, want url's %q", target, got, e)
			}
		}
	})
}
