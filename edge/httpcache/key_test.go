package httpcache

import (
	"net/http"
	"strings"
	"testing"
)

func TestKey(t *testing.T) {
	sorted := KeyOptions{SortQuery: true}
	tests := []struct {
		name       string
		host, path string
		query      string
		opts       KeyOptions
		want       string
	}{
		{"plain", "example.com", "/a/b.css", "", KeyOptions{}, "example.com/a/b.css"},
		{"host lower-cased", "WWW.Example.COM", "/x", "", KeyOptions{}, "www.example.com/x"},
		{"path case kept", "example.com", "/X/Y", "", KeyOptions{}, "example.com/X/Y"},
		{"port dropped", "example.com:8080", "/", "", KeyOptions{}, "example.com/"},
		{"ipv6 port dropped", "[::1]:8080", "/", "", KeyOptions{}, "[::1]/"},
		{"ipv6 without port", "[::1]", "/", "", KeyOptions{}, "[::1]/"},
		{"empty path", "example.com", "", "", KeyOptions{}, "example.com/"},
		{"path without slash", "example.com", "a", "", KeyOptions{}, "example.com/a"},
		{"slash in host escaped", "a/b", "/c", "", KeyOptions{}, "a%2Fb/c"},
		{"percent in host escaped", "a%2Fb", "/c", "", KeyOptions{}, "a%252fb/c"},
		{"question mark in path escaped", "example.com", "/a?b", "", KeyOptions{}, "example.com/a%3Fb"},
		{"query kept as is", "example.com", "/p", "b=2&a=1", KeyOptions{}, "example.com/p?b=2&a=1"},
		{"empty query gives no ?", "example.com", "/p", "", sorted, "example.com/p"},
		{"ignore query", "example.com", "/p", "a=1", KeyOptions{IgnoreQuery: true}, "example.com/p"},
		{"ignore query wins over keep", "example.com", "/p", "a=1", KeyOptions{IgnoreQuery: true, KeepParams: []string{"a"}}, "example.com/p"},
		{"sort query", "example.com", "/p", "b=2&a=1&c", sorted, "example.com/p?a=1&b=2&c"},
		{"sort by name then value", "example.com", "/p", "a=2&b=0&a=1", sorted, "example.com/p?a=1&a=2&b=0"},
		{"sort orders a before a=", "example.com", "/p", "a=&a", sorted, "example.com/p?a&a="},
		{"sort drops empty params", "example.com", "/p", "&b=1&&a=2&", sorted, "example.com/p?a=2&b=1"},
		{"keep params", "example.com", "/p", "utm_source=x&id=7&page=2&fbclid=y", KeyOptions{KeepParams: []string{"page", "id"}}, "example.com/p?id=7&page=2"},
		{"keep params none left", "example.com", "/p", "utm_source=x", KeyOptions{KeepParams: []string{"id"}}, "example.com/p"},
		{"keep params matches encoded name", "example.com", "/p", "%69d=7", KeyOptions{KeepParams: []string{"id"}}, "example.com/p?id=7"},
		{"keep params is case-sensitive", "example.com", "/p", "ID=7", KeyOptions{KeepParams: []string{"id"}}, "example.com/p"},
		{"unreserved decoded in path", "example.com", "/%7Euser/%41%2d%5F%2E", "", KeyOptions{}, "example.com/~user/A-_."},
		{"reserved encodings kept, hex in upper case", "example.com", "/a%2Fb%2fc%20d", "", KeyOptions{}, "example.com/a%2Fb%2Fc%20d"},
		{"non-ascii encoding kept", "example.com", "/caf%C3%A9", "", KeyOptions{}, "example.com/caf%C3%A9"},
		{"non-ascii encoding in upper case", "example.com", "/caf%c3%a9", "", KeyOptions{}, "example.com/caf%C3%A9"},
		{"query encodings in upper case", "example.com", "/p", "q=%2f%e2%82%ac&%3d", KeyOptions{}, "example.com/p?q=%2F%E2%82%AC&%3D"},
		{"sort compares upper-cased hex", "example.com", "/p", "x=%2Z&x=%2fA", sorted, "example.com/p?x=%2FA&x=%2Z"},
		{"sort of upper-cased hex whatever the order", "example.com", "/p", "x=%2fA&x=%2Z", sorted, "example.com/p?x=%2FA&x=%2Z"},
		{"keep params matches hex in either case", "example.com", "/p", "%e2%82%ac=1&b=2", KeyOptions{KeepParams: []string{"%E2%82%AC"}}, "example.com/p?%E2%82%AC=1"},
		{"broken encodings kept", "example.com", "/%zz/%4", "x=%", KeyOptions{}, "example.com/%zz/%4?x=%"},
		{"unreserved decoded in query", "example.com", "/p", "q=%61%26b", KeyOptions{}, "example.com/p?q=a%26b"},
		{"sort compares decoded", "example.com", "/p", "%62=1&a=2", sorted, "example.com/p?a=2&b=1"},
		{"semicolon is not a separator", "example.com", "/p", "b=1;a=2", sorted, "example.com/p?b=1;a=2"},
		// A client may send UTF-8 raw; purges and other clients name it percent-encoded.
		{"raw non-ascii in query encoded", "example.com", "/p", "q=caf\xc3\xa9", KeyOptions{}, "example.com/p?q=caf%C3%A9"},
		{"raw non-ascii in path encoded", "example.com", "/caf\xc3\xa9", "", KeyOptions{}, "example.com/caf%C3%A9"},
		{"sort compares raw as encoded", "example.com", "/p", "x=\xc3\xa9&x=%c3%a8", sorted, "example.com/p?x=%C3%A8&x=%C3%A9"},
		{"keep params matches a raw name", "example.com", "/p", "\xe2\x82\xac=1&b=2", KeyOptions{KeepParams: []string{"%E2%82%AC"}}, "example.com/p?%E2%82%AC=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.host, tt.path, tt.query, tt.opts); got != tt.want {
				t.Errorf("Key(%q, %q, %q, %+v) = %q, want %q", tt.host, tt.path, tt.query, tt.opts, got, tt.want)
			}
		})
	}
}

// TestKeyForced: a query present but empty ("/p?") keeps its '?' in the key, unless the
// options drop or rebuild the query; with forceQuery false or a query not empty, KeyForced is
// Key.
func TestKeyForced(t *testing.T) {
	for _, tt := range []struct {
		name  string
		query string
		force bool
		opts  KeyOptions
		want  string
	}{
		{"empty query kept", "", true, KeyOptions{}, "example.com/p?"},
		{"no query", "", false, KeyOptions{}, "example.com/p"},
		{"query", "a=1", true, KeyOptions{}, "example.com/p?a=1"},
		{"ignore query drops it", "", true, KeyOptions{IgnoreQuery: true}, "example.com/p"},
		{"sort query drops it", "", true, KeyOptions{SortQuery: true}, "example.com/p"},
		{"keep params drops it", "", true, KeyOptions{KeepParams: []string{"a"}}, "example.com/p"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := KeyForced("example.com", "/p", tt.query, tt.force, tt.opts); got != tt.want {
				t.Errorf("KeyForced(%q, %v, %+v) = %q, want %q", tt.query, tt.force, tt.opts, got, tt.want)
			}
		})
	}
}

func TestKeyManyParams(t *testing.T) {
	var params []string
	for c := 'z'; c >= 'a'; c-- {
		params = append(params, string(c)+"=1")
	}
	got := Key("h", "/", strings.Join(params, "&"), KeyOptions{SortQuery: true})
	want := "h/?a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1&j=1&k=1&l=1&m=1&n=1&o=1&p=1&q=1&r=1&s=1&t=1&u=1&v=1&w=1&x=1&y=1&z=1"
	if got != want {
		t.Errorf("Key with 26 params = %q, want %q", got, want)
	}
}

func TestKeyAllocs(t *testing.T) {
	opts := KeyOptions{SortQuery: true, KeepParams: []string{"id", "page", "lang"}}
	if n := testing.AllocsPerRun(100, func() {
		Key("WWW.Example.com:443", "/products/%7Eitem/42", "utm=1&page=2&id=7&lang=en", opts)
	}); n != 1 {
		t.Errorf("Key allocs = %v, want 1", n)
	}
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// swapHexCase swaps the case of the hex letters of s's percent-encodings.
func swapHexCase(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if _, _, ok := upperHexAt(s, i); !ok {
			continue
		}
		for j := i + 1; j <= i+2; j++ {
			switch c := b[j]; {
			case 'a' <= c && c <= 'f':
				b[j] = c - 'a' + 'A'
			case 'A' <= c && c <= 'F':
				b[j] = c - 'A' + 'a'
			}
		}
		i += 2
	}
	return string(b)
}

// keyHost recovers the host part of a key: everything before the first '/'.
func keyHost(key string) string {
	host, _, _ := strings.Cut(key, "/")
	return host
}

func FuzzKey(f *testing.F) {
	f.Add("example.com", "other.com", "/a", "b=1&a=2", uint8(0), "a")
	f.Add("Example.COM:80", "example.com", "/%7E", "", uint8(1), "")
	f.Add("a/b", "a%2Fb", "?", "&&", uint8(2), "x")
	f.Add("[::1]:1", "::1", "", "%", uint8(4), "%")
	f.Fuzz(func(t *testing.T, host, host2, path, query string, flags uint8, keep string) {
		opts := KeyOptions{IgnoreQuery: flags&1 != 0, SortQuery: flags&2 != 0}
		if flags&4 != 0 {
			opts.KeepParams = []string{keep}
		}
		k := Key(host, path, query, opts)
		if again := Key(host, path, query, opts); again != k {
			t.Fatalf("Key(%q, %q, %q) not deterministic: %q then %q", host, path, query, k, again)
		}
		// The host is recoverable, so different hosts never share a key.
		if got, want := keyHost(k), keyHost(Key(host, "/", "", KeyOptions{})); got != want {
			t.Errorf("Key(%q, %q, %q): host part %q, want %q", host, path, query, got, want)
		}
		k2 := Key(host2, path, query, opts)
		if keyHost(k) != keyHost(k2) && k == k2 {
			t.Errorf("Key(%q, ...) == Key(%q, ...) = %q", host, host2, k)
		}
		if asciiLower(stripPort(host)) == asciiLower(stripPort(host2)) && k != k2 {
			t.Errorf("hosts %q and %q differ only in case or port, keys %q and %q", host, host2, k, k2)
		}
		// The hex case of a percent-encoding does not matter (RFC 3986 §6.2.2.1).
		if other := Key(host, swapHexCase(path), swapHexCase(query), opts); other != k {
			t.Errorf("Key(%q, %q, %q) = %q, with the other hex case %q", host, path, query, k, other)
		}
		if opts.IgnoreQuery && strings.Contains(k[len(keyHost(k)):], "?") {
			t.Errorf("Key(%q, %q, %q, IgnoreQuery) = %q has a query", host, path, query, k)
		}
		// Sorting makes parameter order irrelevant.
		if opts.SortQuery && !opts.IgnoreQuery {
			parts := strings.Split(query, "&")
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
			if rev := Key(host, path, strings.Join(parts, "&"), opts); rev != k {
				t.Errorf("sorted Key of %q = %q, of reversed params = %q", query, k, rev)
			}
		}
	})
}

func TestVaryKey(t *testing.T) {
	tests := []struct {
		name string
		vary []string
		req  http.Header
		want string
	}{
		{"no vary", nil, hdr("Accept-Encoding", "gzip"), ""},
		{"one field", []string{"accept-language"}, hdr("Accept-Language", "fr, en"), `accept-language="fr, en"`},
		{"accept-encoding canonical", []string{"accept-encoding"}, hdr("Accept-Encoding", "gzip, br"), `accept-encoding="br, gzip"`},
		{"accept-encoding lines", []string{"accept-encoding"}, hdr("Accept-Encoding", "GZIP", "Accept-Encoding", " *;q=0 "),
			`accept-encoding="gzip, identity;q=0"`},
		{"accept-encoding malformed kept raw", []string{"accept-encoding"}, hdr("Accept-Encoding", "gzip;q=2, br"),
			`accept-encoding="gzip;q=2, br"`},
		{"absent", []string{"accept-encoding"}, hdr(), `accept-encoding`},
		{"empty", []string{"accept-encoding"}, hdr("Accept-Encoding", ""), `accept-encoding=""`},
		{"whitespace trimmed", []string{"accept-language"}, hdr("Accept-Language", "  en \t"), `accept-language="en"`},
		{"lines combined", []string{"accept"}, hdr("Accept", " text/html", "Accept", "*/* "), `accept="text/html, */*"`},
		{"two fields", []string{"accept-encoding", "origin"}, hdr("Origin", "https://a.example", "Accept-Encoding", "gzip"),
			`accept-encoding="gzip"; origin="https://a.example"`},
		{"quote cannot forge a boundary", []string{"a", "b"}, hdr("A", `x"; b="y`), `a="x\"; b=\"y"; b`},
		{"non-canonical request key missed", []string{"x-foo"}, http.Header{"x-foo": {"1"}}, `x-foo`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VaryKey(tt.vary, tt.req); got != tt.want {
				t.Errorf("VaryKey(%q, %v) = %q, want %q", tt.vary, tt.req, got, tt.want)
			}
		})
	}
}

// TestVaryKeyHopByHopAbsent: the hop-by-hop fields (RemoveHopByHop's) never reach the origin, so
// a Vary that names one is keyed as if the request had none, whatever it sent: the answer is the
// one for none, and a client's value must neither select nor split it. The other fields of the
// Vary are keyed as ever.
func TestVaryKeyHopByHopAbsent(t *testing.T) {
	tests := []struct {
		name  string
		field string // as Vary names it
		value string
	}{
		{"TE", "te", "trailers"},
		{"Keep-Alive", "keep-alive", "timeout=5"},
		{"Upgrade", "upgrade", "foo/1"},
		{"Connection", "connection", "keep-alive"},
		{"Proxy-Connection", "proxy-connection", "keep-alive"},
		{"Proxy-Authorization", "proxy-authorization", "Basic eDp5"},
		{"Proxy-Authenticate", "proxy-authenticate", "Basic"},
		{"Trailer", "trailer", "X-Sum"},
		{"Transfer-Encoding", "transfer-encoding", "chunked"},
		{"any case", "Keep-ALIVE", "timeout=5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vary := []string{"accept-language", tt.field}
			want := `accept-language="de"; ` + tt.field
			for _, values := range [][]string{nil, {tt.value}, {""}, {tt.value, "x"}} {
				h := hdr("Accept-Language", "de")
				if values != nil {
					h[http.CanonicalHeaderKey(tt.field)] = values
				}
				if got := VaryKey(vary, h); got != want {
					t.Errorf("VaryKey(%q) with %s: %q = %q, want %q (as without it)", vary, tt.field, values, got, want)
				}
			}
		})
	}
	// Each field the list holds is covered above, and no other is absent: User-Agent is as
	// long as Connection and Keep-Alive.
	for _, f := range hopByHop {
		covered := false
		for _, tt := range tests {
			covered = covered || strings.EqualFold(tt.field, f)
		}
		if !covered {
			t.Errorf("hop-by-hop field %s has no case", f)
		}
	}
	if got, want := VaryKey([]string{"user-agent"}, hdr("User-Agent", "x")), `user-agent="x"`; got != want {
		t.Errorf("VaryKey(user-agent) = %q, want %q", got, want)
	}
}

func FuzzVaryKey(f *testing.F) {
	f.Add("gzip", "br", true, true, "accept-encoding")
	f.Add("", "", false, true, "X-FOO-bar")
	f.Add(`a"b`, `\`, true, false, "a b")
	f.Add("en-US,en;q=0.9", " 1 ,, 2", true, true, "Accept-Language")
	f.Fuzz(func(t *testing.T, v1, v2 string, has1, has2 bool, name string) {
		// The allocation-free lookup agrees with http.CanonicalHeaderKey.
		canon := http.Header{http.CanonicalHeaderKey(name): {"v"}}
		if got := headerValues(canon, name); len(got) != 1 {
			t.Errorf("headerValues(%q) = %q, want the value stored under %q", name, got, http.CanonicalHeaderKey(name))
		}

		vary := []string{"accept-encoding", "origin"}
		build := func(v1, v2 string, has1, has2 bool) http.Header {
			h := http.Header{}
			if has1 {
				h["Accept-Encoding"] = []string{v1}
			}
			if has2 {
				h["Origin"] = []string{v2}
			}
			return h
		}
		k := VaryKey(vary, build(v1, v2, has1, has2))
		if again := VaryKey(vary, build(v1, v2, has1, has2)); again != k {
			t.Fatalf("VaryKey not deterministic: %q then %q", k, again)
		}
		// Different (trimmed) Origin values give different keys; Accept-Encoding values with
		// the same canonical form, or else the same list form, give the same; absent differs
		// from empty.
		norm := func(v string, has bool) string {
			if !has {
				return "\x00absent"
			}
			return strings.TrimSpace(v)
		}
		normAE := func(v string, has bool) string {
			if c, ok := CanonicalAcceptEncoding([]string{v}); ok && has {
				return c
			}
			if !has {
				return norm(v, has)
			}
			return "list " + refList([]string{v}, false)
		}
		other := VaryKey(vary, build(v2, v1, has2, has1))
		same := normAE(v1, has1) == normAE(v2, has2) && norm(v1, has1) == norm(v2, has2)
		if same != (k == other) {
			t.Errorf("VaryKey swapping %q(%v) and %q(%v): %q vs %q, same values %v", v1, has1, v2, has2, k, other, same)
		}
		// Spellings of one list share a key: whitespace around commas and semicolons, and for
		// Accept-Language the case of letters (outside quoted strings). Other fields' do not.
		if !strings.ContainsAny(v1, `"\`) {
			for _, f := range []string{"accept-language", "accept", "x-foo"} {
				base := VaryKey([]string{f}, hdr(http.CanonicalHeaderKey(f), v1))
				spelt := strings.NewReplacer(",", " \t, ", ";", " ; ").Replace(v1)
				if got := VaryKey([]string{f}, hdr(http.CanonicalHeaderKey(f), spelt)); f == "x-foo" && strings.TrimSpace(spelt) != strings.TrimSpace(v1) {
					if got == base {
						t.Errorf("VaryKey(%s: %q) = VaryKey(%s: %q) = %q: an unknown field read as a list", f, v1, f, spelt, got)
					}
					continue
				}
				if f == "accept-language" {
					b := []byte(spelt)
					for i, c := range b { // ASCII letters only: other bytes stay as they are
						if 'a' <= c && c <= 'z' {
							b[i] = c - ('a' - 'A')
						}
					}
					spelt = string(b)
				}
				if got := VaryKey([]string{f}, hdr(http.CanonicalHeaderKey(f), spelt)); got != base {
					t.Errorf("VaryKey(%s: %q) = %q, of %q = %q", f, v1, base, spelt, got)
				}
			}
		}
	})
}

// refList is appendList written another way: the elements collected in a slice, each split
// at its semicolons into trimmed pieces, then joined.
func refList(values []string, lower bool) string {
	// split cuts v at sep outside quoted strings.
	split := func(v string, sep byte) []string {
		var parts []string
		var cur strings.Builder
		quoted, pair := false, false
		for _, c := range []byte(v) {
			switch {
			case pair:
				pair = false
			case quoted && c == '\\':
				pair = true
			case c == '"':
				quoted = !quoted
			case c == sep && !quoted:
				parts = append(parts, cur.String())
				cur.Reset()
				continue
			case lower && !quoted && 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			}
			cur.WriteByte(c)
		}
		return append(parts, cur.String())
	}
	var elems []string
	for _, v := range values {
		for _, e := range split(v, ',') {
			if e = strings.Trim(e, " \t"); e == "" {
				continue
			}
			pieces := split(e, ';')
			for i := range pieces {
				pieces[i] = strings.Trim(pieces[i], " \t")
			}
			elems = append(elems, strings.Join(pieces, ";"))
		}
	}
	return strings.Join(elems, ", ")
}

// TestVaryKeyListSpellings: spellings of one list that a cache must treat alike (RFC 9111
// §4.1) share a variant, and ones that mean something else, or that the syntax does not allow,
// do not; a field whose syntax the edge does not know is keyed as sent (cache-tests'
// vary-normalise tests, bench/cache-tests.sh).
func TestVaryKeyListSpellings(t *testing.T) {
	tests := []struct {
		name    string
		field   string
		a, b    []string
		sameKey bool
	}{
		{"whitespace after commas", "Accept", []string{"a/b,c/d"}, []string{" a/b, c/d "}, true},
		{"whitespace before commas", "Accept", []string{"a/b ,c/d"}, []string{"a/b, c/d"}, true},
		{"lines combined", "Accept", []string{"a/b, c/d"}, []string{"a/b", "c/d"}, true},
		{"empty elements", "Accept", []string{"a/b,,c/d,"}, []string{"a/b, c/d"}, true},
		{"order kept", "Accept", []string{"a/b, c/d"}, []string{"c/d, a/b"}, false},
		{"inner whitespace kept", "Accept", []string{"a /b"}, []string{"a/b"}, false},
		{"media type parameters", "Accept", []string{"text/html;level=1"}, []string{"text/html ; level=1"}, true},
		{"no whitespace around '=' (RFC 9110 §5.6.6)", "Accept", []string{"text/html;q=0"}, []string{"text/html;q = 0"}, false},
		{"media type case kept", "Accept", []string{"text/html;a=B"}, []string{"text/html;a=b"}, false},
		{"quoted comma is not a boundary", "Accept", []string{`a/b;x="1, 2"`}, []string{`a/b;x="1,2"`}, false},
		{"quoted pair", "Accept", []string{`a/b;x="1\", 2", c/d`}, []string{`a/b;x="1\", 2",c/d`}, true},
		{"client hints", "Sec-CH-UA", []string{`"Chromium";v="124", "Not-A.Brand";v="99"`}, []string{`"Chromium";v="124","Not-A.Brand";v="99"`}, true},
		{"language case", "Accept-Language", []string{"en, de"}, []string{"eN, De"}, true},
		{"language whitespace", "Accept-Language", []string{"en, de"}, []string{" en ,   de"}, true},
		{"language weight whitespace", "Accept-Language", []string{"en-US,en;q=0.9"}, []string{"en-us, en ; Q=0.9"}, true},
		{"language order kept", "Accept-Language", []string{"en, de"}, []string{"de, en"}, false},
		{"language weight kept", "Accept-Language", []string{"en;q=0.9"}, []string{"en;q=0.8"}, false},
		{"unknown field: lines combined", "Foo", []string{"1, 2"}, []string{"1", "2"}, true},
		{"unknown field: ends trimmed", "Foo", []string{"1,2"}, []string{" 1,2 "}, true},
		{"unknown field: as sent", "Foo", []string{"1,2"}, []string{"1, 2"}, false},
		{"unknown field: empty elements kept", "X-Token", []string{"a,b"}, []string{"a,,b"}, false},
		{"user agent as sent", "User-Agent", []string{"(KHTML,like Gecko)"}, []string{"(KHTML, like Gecko)"}, false},
		{"cookie as sent", "Cookie", []string{"a=1,2"}, []string{"a=1, 2"}, false},
		{"authorization as sent", "Authorization", []string{"Basic x,y"}, []string{"Basic x, y"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vary := []string{strings.ToLower(tt.field)}
			build := func(vs []string) http.Header {
				h := http.Header{}
				for _, v := range vs {
					h.Add(tt.field, v)
				}
				return h
			}
			ka, kb := VaryKey(vary, build(tt.a)), VaryKey(vary, build(tt.b))
			if (ka == kb) != tt.sameKey {
				t.Errorf("VaryKey of %q = %q, of %q = %q; same key %v, want %v", tt.a, ka, tt.b, kb, ka == kb, tt.sameKey)
			}
		})
	}
}

// TestVaryKeyAllocs: browsers' usual values, and short ones that are normalised, cost only the
// key itself.
func TestVaryKeyAllocs(t *testing.T) {
	for _, c := range []struct{ field, value string }{
		{"accept-language", "en-US,en;q=0.9"},                   // Chrome's: lower-cased
		{"accept-language", "en-US, en;q=0.5"},                  // Firefox's
		{"accept-encoding", "gzip, deflate, br, zstd"},          // canonical
		{"accept", "text/html,application/xhtml+xml,*/*;q=0.8"}, // 41 bytes, as they are
		{"accept", " text/html ,*/*;q=0.8"},
		{"te", "trailers"}, // absent
	} {
		h := hdr(http.CanonicalHeaderKey(c.field), c.value)
		if n := testing.AllocsPerRun(100, func() { VaryKey([]string{c.field}, h) }); n > 1 {
			t.Errorf("VaryKey(%s: %q): %.0f allocations, want 1 (the key)", c.field, c.value, n)
		}
	}
}

func BenchmarkKey(b *testing.B) {
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Key("www.example.com", "/static/js/app.3f2a1b.js", "", KeyOptions{})
		}
	})
	b.Run("sorted", func(b *testing.B) {
		opts := KeyOptions{SortQuery: true}
		b.ReportAllocs()
		for b.Loop() {
			Key("WWW.Example.com:443", "/search", "q=cdn&page=2&lang=en&sort=asc", opts)
		}
	})
	b.Run("keep", func(b *testing.B) {
		opts := KeyOptions{KeepParams: []string{"id", "page"}}
		b.ReportAllocs()
		for b.Loop() {
			Key("www.example.com", "/product", "utm_source=news&id=42&fbclid=abc&page=3", opts)
		}
	})
}

func BenchmarkVaryKey(b *testing.B) {
	for _, c := range []struct{ name, field, value string }{
		{"accept-encoding", "Accept-Encoding", "gzip, deflate, br"},
		{"accept-language", "Accept-Language", "en-US,en;q=0.9"},
	} {
		b.Run(c.name, func(b *testing.B) {
			vary := []string{strings.ToLower(c.field)}
			req := hdr(c.field, c.value)
			b.ReportAllocs()
			for b.Loop() {
				VaryKey(vary, req)
			}
		})
	}
}

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/plain/path", "/plain/path"},
		{"/%70re/%7Euser", "/pre/~user"},
		{"/a%2Fb/%20x", "/a%2Fb/%20x"},     // reserved and other characters stay encoded
		{"/a%2fb/%c3%a9", "/a%2Fb/%C3%A9"}, // in upper case (RFC 3986 §6.2.2.1)
		{"/a?b", "/a%3Fb"},
		{"rel", "/rel"},
	} {
		if got := NormalizePath(tc.in); got != tc.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
		// As Key writes the path.
		if key := Key("h", tc.in, "", KeyOptions{}); key != "h"+tc.want {
			t.Errorf("Key(h, %q) = %q, NormalizePath gives %q", tc.in, key, tc.want)
		}
	}
}
