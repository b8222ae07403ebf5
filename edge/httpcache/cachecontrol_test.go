package httpcache

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   Directives
	}{
		{"empty", nil, Directives{}},
		{"blank line", []string{"  "}, Directives{}},
		{"max-age", []string{"max-age=60"}, Directives{MaxAge: time.Minute, HasMaxAge: true}},
		{"max-age zero", []string{"max-age=0"}, Directives{HasMaxAge: true}},
		{"case-insensitive names", []string{"Max-Age=60, PUBLIC, S-MaxAge=5"},
			Directives{MaxAge: time.Minute, HasMaxAge: true, SMaxAge: 5 * time.Second, HasSMaxAge: true, Public: true}},
		{"quoted delta", []string{`max-age="60"`}, Directives{MaxAge: time.Minute, HasMaxAge: true}},
		{"whitespace around", []string{" \tmax-age = 60 ,  no-store\t"}, Directives{MaxAge: time.Minute, HasMaxAge: true, NoStore: true}},
		{"invalid delta ignored", []string{"max-age=abc, s-maxage=-1, stale-if-error=1.5"}, Directives{InvalidMaxAge: true}},
		{"empty delta ignored", []string{"max-age=, max-age"}, Directives{InvalidMaxAge: true}},
		{"first valid duplicate wins", []string{"max-age=60, max-age=10"}, Directives{MaxAge: time.Minute, HasMaxAge: true}},
		{"invalid then valid", []string{"max-age=x, max-age=10"}, Directives{MaxAge: 10 * time.Second, HasMaxAge: true, InvalidMaxAge: true}},
		{"invalid other delta not noted", []string{"stale-if-error=x, min-fresh=-1"}, Directives{}},
		{"duplicate across lines", []string{"max-age=60", "max-age=10"}, Directives{MaxAge: time.Minute, HasMaxAge: true}},
		{"overflow clamps", []string{"max-age=99999999999999999999999"}, Directives{MaxAge: MaxDelta, HasMaxAge: true}},
		{"2^31 exactly", []string{"max-age=2147483648"}, Directives{MaxAge: MaxDelta, HasMaxAge: true}},
		{"just below 2^31", []string{"max-age=2147483647"}, Directives{MaxAge: MaxDelta - time.Second, HasMaxAge: true}},
		{"unknown ignored", []string{"foo, bar=\"baz, qux\", max-age=1"}, Directives{MaxAge: time.Second, HasMaxAge: true}},
		{"all flags", []string{"no-store, no-cache, private, public, must-revalidate, proxy-revalidate, immutable, only-if-cached, no-transform"},
			Directives{NoStore: true, NoCache: true, Private: true, Public: true, MustRevalidate: true, ProxyRevalidate: true, Immutable: true, OnlyIfCached: true, NoTransform: true}},
		{"rfc 5861", []string{"max-age=600, stale-while-revalidate=30, stale-if-error=86400"},
			Directives{MaxAge: 10 * time.Minute, HasMaxAge: true, StaleWhileRevalidate: 30 * time.Second, HasStaleWhileRevalidate: true, StaleIfError: 24 * time.Hour, HasStaleIfError: true}},
		{"request directives", []string{"max-stale=5, min-fresh=7"},
			Directives{MaxStale: 5 * time.Second, HasMaxStale: true, MinFresh: 7 * time.Second, HasMinFresh: true}},
		{"unvalued max-stale", []string{"max-stale"}, Directives{MaxStale: MaxDelta, HasMaxStale: true}},
		{"qualified no-cache", []string{`no-cache="set-cookie, X-Foo"`}, Directives{NoCacheFields: []string{"Set-Cookie", "X-Foo"}}},
		{"qualified no-cache token", []string{`no-cache=Set-Cookie`}, Directives{NoCacheFields: []string{"Set-Cookie"}}},
		{"qualified private", []string{`private="Set-Cookie", max-age=5`},
			Directives{PrivateFields: []string{"Set-Cookie"}, MaxAge: 5 * time.Second, HasMaxAge: true}},
		{"empty qualified private is unqualified", []string{`private=""`}, Directives{Private: true}},
		{"unqualified and qualified combine", []string{`no-cache, no-cache="A"`}, Directives{NoCache: true, NoCacheFields: []string{"A"}}},
		{"quoted comma does not split", []string{`private="a,b", no-store`}, Directives{PrivateFields: []string{"A", "B"}, NoStore: true}},
		{"escaped quote in argument", []string{`foo="a\"b", max-age=3`}, Directives{MaxAge: 3 * time.Second, HasMaxAge: true}},
		{"unterminated quote", []string{`private="Set-Cookie, max-age=3`}, Directives{PrivateFields: []string{"Set-Cookie", "max-age=3"}}},
		{"garbage after quote", []string{`max-age="5"x, public`}, Directives{MaxAge: 5 * time.Second, HasMaxAge: true, Public: true}},
		{"empty members", []string{",,max-age=1,,"}, Directives{MaxAge: time.Second, HasMaxAge: true}},
		{"long unknown name", []string{strings.Repeat("x", 100) + "=1, public"}, Directives{Public: true}},
		{"flag with argument still counts", []string{"no-store=1"}, Directives{NoStore: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCacheControl(tt.values); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCacheControl(%q) =\n%+v\nwant\n%+v", tt.values, got, tt.want)
			}
		})
	}
}

func TestParseCacheControlAllocs(t *testing.T) {
	values := []string{"public, max-age=3600, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400, must-revalidate"}
	if n := testing.AllocsPerRun(100, func() { ParseCacheControl(values) }); n != 0 {
		t.Errorf("ParseCacheControl allocs = %v, want 0", n)
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", "public, s-maxage=600, stale-while-revalidate=30", `no-cache="Set-Cookie"`,
		`private="a\"b`, "max-age=99999999999999999999", "MAX-AGE=1,,,", "max-stale",
	} {
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		values := []string{a, b}
		d := ParseCacheControl(values)
		checks := []struct {
			name string
			v    time.Duration
			has  bool
		}{
			{"max-age", d.MaxAge, d.HasMaxAge}, {"s-maxage", d.SMaxAge, d.HasSMaxAge},
			{"stale-while-revalidate", d.StaleWhileRevalidate, d.HasStaleWhileRevalidate},
			{"stale-if-error", d.StaleIfError, d.HasStaleIfError},
			{"max-stale", d.MaxStale, d.HasMaxStale}, {"min-fresh", d.MinFresh, d.HasMinFresh},
		}
		for _, c := range checks {
			if c.v < 0 || c.v > MaxDelta || (!c.has && c.v != 0) || c.v%time.Second != 0 {
				t.Errorf("ParseCacheControl(%q): %s = %v (has %v), want whole seconds in [0, 2^31 s], 0 when absent", values, c.name, c.v, c.has)
			}
		}
		if again := ParseCacheControl(values); !reflect.DeepEqual(again, d) {
			t.Errorf("ParseCacheControl(%q) not deterministic: %+v then %+v", values, d, again)
		}
		// Splitting into two field lines is the same as one line joined by a comma, unless a
		// quoted string would span the join.
		if !strings.Contains(a, `"`) {
			if joined := ParseCacheControl([]string{a + "," + b}); !reflect.DeepEqual(joined, d) {
				t.Errorf("ParseCacheControl(%q) = %+v, but joined with a comma = %+v", values, d, joined)
			}
		}
	})
}

func BenchmarkParseCacheControl(b *testing.B) {
	values := []string{"public, max-age=3600, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400"}
	b.ReportAllocs()
	for b.Loop() {
		ParseCacheControl(values)
	}
}
