package httpcache

import (
	"reflect"
	"testing"
	"time"
)

func TestParseTargetedCacheControl(t *testing.T) {
	minute := Directives{MaxAge: time.Minute, HasMaxAge: true}
	tests := []struct {
		name   string
		values []string
		want   Directives
		ok     bool
	}{
		// Valid Dictionaries.
		{"max-age", []string{"max-age=60"}, minute, true},
		{"typical", []string{"max-age=300, stale-while-revalidate=60"},
			Directives{MaxAge: 5 * time.Minute, HasMaxAge: true, StaleWhileRevalidate: time.Minute, HasStaleWhileRevalidate: true}, true},
		{"flags", []string{"no-store, must-revalidate, public"}, Directives{NoStore: true, MustRevalidate: true, Public: true}, true},
		{"unknown directive only", []string{"none"}, Directives{}, true},
		{"lines combine", []string{"max-age=60", "", "no-transform"}, Directives{MaxAge: time.Minute, HasMaxAge: true, NoTransform: true}, true},
		{"ows around commas", []string{"max-age=60 \t,\t no-transform"}, Directives{MaxAge: time.Minute, HasMaxAge: true, NoTransform: true}, true},
		{"parameters ignored", []string{"max-age=60;a=1, private;b"}, Directives{MaxAge: time.Minute, HasMaxAge: true, Private: true}, true},
		{"last duplicate wins", []string{"max-age=10, max-age=60"}, minute, true},
		{"duplicate across lines", []string{"max-age=10", "max-age=60"}, minute, true},
		{"boolean true", []string{"public=?1"}, Directives{Public: true}, true},
		{"boolean false", []string{"no-store=?0, max-age=60"}, minute, true},
		{"qualified no-cache", []string{`no-cache="set-cookie, x-foo"`}, Directives{NoCacheFields: []string{"Set-Cookie", "X-Foo"}}, true},
		{"qualified private", []string{`private="set-cookie"`}, Directives{PrivateFields: []string{"Set-Cookie"}}, true},
		{"overflow clamps", []string{"max-age=999999999999999"}, Directives{MaxAge: MaxDelta, HasMaxAge: true}, true},
		{"unvalued max-stale", []string{"max-stale"}, Directives{MaxStale: MaxDelta, HasMaxStale: true}, true},
		{"semicolon makes a parameter", []string{"max-age=60; s-maxage=30"}, minute, true},

		// Valid Dictionaries with values of the wrong type: not consumed, or failing safe.
		// A max-age or s-maxage not consumed is invalid freshness whatever its type, as in
		// Cache-Control (InvalidMaxAge); other delta directives are just not consumed.
		{"string delta not consumed", []string{`max-age="60"`}, Directives{InvalidMaxAge: true}, true},
		{"decimal delta not consumed", []string{"max-age=60.5"}, Directives{InvalidMaxAge: true}, true},
		{"negative delta not consumed", []string{"max-age=-1"}, Directives{InvalidMaxAge: true}, true},
		{"token delta not consumed", []string{"max-age=sixty"}, Directives{InvalidMaxAge: true}, true},
		{"inner list delta not consumed", []string{"max-age=(60)"}, Directives{InvalidMaxAge: true}, true},
		{"unvalued s-maxage not consumed", []string{"s-maxage, public"}, Directives{Public: true, InvalidMaxAge: true}, true},
		{"decimal stale-if-error not consumed", []string{"stale-if-error=1.5, min-fresh=x"}, Directives{}, true},
		{"false max-age absent", []string{"max-age=?0"}, Directives{}, true},
		{"public with a value not consumed", []string{"public=1"}, Directives{}, true},
		{"no-store with a value fails safe", []string{"no-store=1"}, Directives{NoStore: true}, true},
		{"private token fails safe", []string{"private=set-cookie"}, Directives{Private: true}, true},

		// Not Dictionaries: the field is ignored.
		{"no lines", nil, Directives{}, false},
		{"empty", []string{" "}, Directives{}, false},
		{"upper-case key", []string{"Max-Age=60"}, Directives{}, false},
		{"space before equals", []string{"max-age =60"}, Directives{}, false},
		{"space after equals", []string{"max-age= 60"}, Directives{}, false},
		{"trailing comma", []string{"max-age=60,"}, Directives{}, false},
		{"empty member", []string{"max-age=60,,public"}, Directives{}, false},
		{"missing comma", []string{"max-age=60 public"}, Directives{}, false},
		{"unterminated string", []string{`private="set-cookie`}, Directives{}, false},
		{"integer too long", []string{"max-age=1234567890123456"}, Directives{}, false},
		{"key starts with digit", []string{"1max-age=60"}, Directives{}, false},
		{"bad line poisons the field", []string{"max-age=60", "s-maxage=x y"}, Directives{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseTargetedCacheControl(tt.values)
			if !reflect.DeepEqual(got, tt.want) || ok != tt.ok {
				t.Errorf("ParseTargetedCacheControl(%q) =\n%+v, %v\nwant\n%+v, %v", tt.values, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestTargetDirectivesInvalid checks RFC 9213 §2.1 through TargetDirectives: an invalid
// CDN-Cache-Control is ignored and the next field in precedence applies.
func TestTargetDirectivesInvalid(t *testing.T) {
	tests := []struct {
		name       string
		h          map[string]string
		wantTarget string
		wantMaxAge time.Duration
	}{
		{"valid wins", map[string]string{"CDN-Cache-Control": "max-age=10", "Cache-Control": "max-age=30"}, "CDN-Cache-Control", 10 * time.Second},
		{"invalid falls back to Cache-Control", map[string]string{"CDN-Cache-Control": "Max-Age=10", "Cache-Control": "max-age=30"}, "Cache-Control", 30 * time.Second},
		{"invalid falls back to Surrogate-Control", map[string]string{"CDN-Cache-Control": "max-age=10,", "Surrogate-Control": "max-age=20", "Cache-Control": "max-age=30"}, "Surrogate-Control", 20 * time.Second},
		{"invalid alone", map[string]string{"CDN-Cache-Control": "max-age=10 public"}, "Cache-Control", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hdr()
			for k, v := range tt.h {
				h.Set(k, v)
			}
			d, target := TargetDirectives(h)
			if target != tt.wantTarget || d.MaxAge != tt.wantMaxAge {
				t.Errorf("TargetDirectives(%v) = max-age %v from %s, want %v from %s", h, d.MaxAge, target, tt.wantMaxAge, tt.wantTarget)
			}
		})
	}
}

func TestParseTargetedCacheControlAllocs(t *testing.T) {
	values := []string{"max-age=300, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400, must-revalidate"}
	if n := testing.AllocsPerRun(100, func() { ParseTargetedCacheControl(values) }); n != 0 {
		t.Errorf("ParseTargetedCacheControl allocs = %v, want 0", n)
	}
}

func FuzzParseTargetedCacheControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", "max-age=300, stale-while-revalidate=60;p", `no-cache="set-cookie", private`,
		"Max-Age=60", "max-age=60,", `max-age="60", no-store=?0`, "max-age=(1 2);a=?1, x=:AAE=:",
	} {
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		values := []string{a, b}
		d, ok := ParseTargetedCacheControl(values)
		if !ok && !reflect.DeepEqual(d, Directives{}) {
			t.Fatalf("ParseTargetedCacheControl(%q) failed but returned %+v", values, d)
		}
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
				t.Errorf("ParseTargetedCacheControl(%q): %s = %v (has %v), want whole seconds in [0, 2^31 s], 0 when absent", values, c.name, c.v, c.has)
			}
		}
		// Two field lines read as one joined by a comma (RFC 9110 §5.3).
		joined := joinFieldLines(values)
		if d2, ok2 := ParseTargetedCacheControl([]string{joined}); ok2 != ok || !reflect.DeepEqual(d2, d) {
			t.Errorf("ParseTargetedCacheControl(%q) = %+v, %v, but joined %q = %+v, %v", values, d, ok, joined, d2, ok2)
		}
	})
}
