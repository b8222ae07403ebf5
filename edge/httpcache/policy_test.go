package httpcache

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

// hdr builds a canonical header from name, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestResponsePolicy(t *testing.T) {
	date := httpDate(now)
	stored := func(p Policy) Policy { p.Storable = true; return p }
	cc := "Cache-Control"
	tests := []struct {
		name   string
		method string
		req    http.Header
		status int
		resp   http.Header
		want   Policy
	}{
		// Explicit freshness and its precedence.
		{"s-maxage beats max-age", "GET", nil, 200, hdr("Cache-Control", "max-age=60, s-maxage=600", "Date", date),
			stored(Policy{Lifetime: 600 * time.Second, MustRevalidate: true, Target: cc})},
		{"max-age beats Expires", "GET", nil, 200, hdr("Cache-Control", "max-age=60", "Expires", httpDate(now.Add(time.Hour)), "Date", date),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"Expires minus Date", "GET", nil, 200, hdr("Expires", httpDate(now.Add(time.Hour)), "Date", date),
			stored(Policy{Lifetime: time.Hour, Target: cc})},
		{"Expires measured from Date, not now", "GET", nil, 200, hdr("Expires", httpDate(now.Add(10*time.Minute)), "Date", httpDate(now.Add(-10*time.Minute))),
			stored(Policy{Lifetime: 20 * time.Minute, Target: cc})},
		{"Expires without Date uses response time", "GET", nil, 200, hdr("Expires", httpDate(now.Add(30*time.Minute))),
			stored(Policy{Lifetime: 30 * time.Minute, Target: cc})},
		{"Expires in the past", "GET", nil, 200, hdr("Expires", httpDate(now.Add(-time.Hour)), "Date", date),
			stored(Policy{Target: cc})},
		{"invalid Expires is already expired", "GET", nil, 200, hdr("Expires", "0", "Date", date),
			stored(Policy{Target: cc})},
		{"Expires -1 is already expired", "GET", nil, 200, hdr("Expires", "-1", "Date", date),
			stored(Policy{Target: cc})},
		{"empty Expires is already expired", "GET", nil, 200, hdr("Expires", "", "Date", date),
			stored(Policy{Target: cc})},
		{"unparseable Expires is already expired", "GET", nil, 200, hdr("Expires", "tomorrow", "Date", date),
			stored(Policy{Target: cc})},
		{"Expires in a non-HTTP date format", "GET", nil, 200, hdr("Expires", "2026-11-22T13:00:00Z", "Date", date),
			stored(Policy{Target: cc})},
		{"invalid Expires, no heuristic", "GET", nil, 200, hdr("Expires", "0", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			stored(Policy{Target: cc})},
		{"invalid Expires on a non-heuristic status", "GET", nil, 302, hdr("Expires", "0", "Date", date),
			stored(Policy{Target: cc})},
		{"max-age beats invalid Expires", "GET", nil, 200, hdr("Cache-Control", "max-age=60", "Expires", "0", "Date", date),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"s-maxage beats invalid Expires", "GET", nil, 200, hdr("Cache-Control", "s-maxage=60", "Expires", "-1", "Date", date),
			stored(Policy{Lifetime: time.Minute, MustRevalidate: true, Target: cc})},
		{"invalid max-age, no heuristic", "GET", nil, 200, hdr("Cache-Control", "max-age=-1", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			Policy{Reason: "no freshness", Target: cc}},
		{"unvalued s-maxage, no heuristic", "GET", nil, 200, hdr("Cache-Control", "s-maxage, public", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			Policy{Reason: "no freshness", Target: cc}},
		{"invalid max-age with no-cache stored for revalidation", "GET", nil, 200, hdr("Cache-Control", "max-age=1.5, no-cache", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			stored(Policy{NoCache: true, Target: cc})},
		{"invalid then valid max-age", "GET", nil, 200, hdr("Cache-Control", "max-age=x, max-age=60", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"invalid CDN-Cache-Control max-age, no heuristic", "GET", nil, 200, hdr("CDN-Cache-Control", "max-age=60.5", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			Policy{Reason: "no freshness", Target: "CDN-Cache-Control"}},
		{"invalid max-age leaves Expires", "GET", nil, 200, hdr("Cache-Control", "max-age=soon", "Expires", httpDate(now.Add(time.Hour)), "Date", date),
			stored(Policy{Lifetime: time.Hour, Target: cc})},
		// What time.Parse accepts and the HTTP-date grammar does not (the http-tests cache-tests
		// suite's freshness-expires-invalid-*): read as a time in the past.
		{"Expires with a one-digit hour", "GET", nil, 200, hdr("Expires", "Thu, 18 Aug 2050 2:01:18 GMT", "Date", date),
			stored(Policy{Target: cc})},
		{"Expires with doubled spaces", "GET", nil, 200, hdr("Expires", "Thu, 18  Aug  2050 02:01:18 GMT", "Date", date),
			stored(Policy{Target: cc})},
		{"Expires with a fraction of a second", "GET", nil, 200, hdr("Expires", "Thu, 18 Aug 2050 02:01:18.5 GMT", "Date", date),
			stored(Policy{Target: cc})},
		{"Expires in lower case", "GET", nil, 200, hdr("Expires", strings.ToLower(httpDate(now.Add(time.Hour))), "Date", date),
			stored(Policy{Lifetime: time.Hour, Target: cc})},
		{"first of several Expires", "GET", nil, 200, hdr("Expires", httpDate(now.Add(time.Hour)), "Expires", "0", "Date", date),
			stored(Policy{Lifetime: time.Hour, Target: cc})},
		{"max-age=0", "GET", nil, 200, hdr("Cache-Control", "max-age=0"), stored(Policy{Target: cc})},
		{"explicit freshness on non-heuristic status", "GET", nil, 302, hdr("Cache-Control", "max-age=10"),
			stored(Policy{Lifetime: 10 * time.Second, Target: cc})},
		{"explicit freshness on 500", "GET", nil, 500, hdr("Cache-Control", "max-age=5"),
			stored(Policy{Lifetime: 5 * time.Second, Target: cc})},
		{"immutable", "GET", nil, 200, hdr("Cache-Control", "max-age=31536000, immutable"),
			stored(Policy{Lifetime: 365 * 24 * time.Hour, Immutable: true, Target: cc})},

		// RFC 9213 targeted fields.
		{"CDN-Cache-Control replaces Cache-Control", "GET", nil, 200, hdr("Cache-Control", "no-store", "CDN-Cache-Control", "max-age=120"),
			stored(Policy{Lifetime: 2 * time.Minute, Target: "CDN-Cache-Control"})},
		// must-understand (RFC 9111 §5.2.2.3): a cache that understands the status ignores
		// no-store; one that does not, does not store.
		{"no-store with must-understand, understood status", "GET", nil, 200, hdr("Cache-Control", "max-age=3600, no-store, must-understand"),
			stored(Policy{Lifetime: time.Hour, Target: cc})},
		{"no-store with must-understand, unknown status", "GET", nil, 599, hdr("Cache-Control", "max-age=3600, no-store, must-understand"),
			Policy{Reason: "status", Target: cc}},
		{"must-understand, unknown status", "GET", nil, 299, hdr("Cache-Control", "max-age=3600, must-understand"),
			Policy{Reason: "status", Target: cc}},
		{"must-understand alone", "GET", nil, 404, hdr("Cache-Control", "max-age=60, MUST-UNDERSTAND"),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"CDN-Cache-Control no-store with must-understand", "GET", nil, 200, hdr("CDN-Cache-Control", "max-age=60, no-store, must-understand"),
			stored(Policy{Lifetime: time.Minute, Target: "CDN-Cache-Control"})},
		{"CDN-Cache-Control no-store wins", "GET", nil, 200, hdr("Cache-Control", "max-age=60", "CDN-Cache-Control", "no-store"),
			Policy{Reason: "no-store", Target: "CDN-Cache-Control"}},
		{"CDN-Cache-Control ignores Expires", "GET", nil, 200, hdr("CDN-Cache-Control", "no-transform", "Expires", httpDate(now.Add(time.Hour))),
			Policy{Reason: "no freshness", Target: "CDN-Cache-Control"}},
		{"CDN-Cache-Control overrides private", "GET", nil, 200, hdr("Cache-Control", "private", "CDN-Cache-Control", "max-age=5"),
			stored(Policy{Lifetime: 5 * time.Second, Target: "CDN-Cache-Control"})},
		{"empty CDN-Cache-Control falls back", "GET", nil, 200, hdr("CDN-Cache-Control", " ", "Cache-Control", "max-age=60"),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"CDN-Cache-Control beats Surrogate-Control", "GET", nil, 200, hdr("CDN-Cache-Control", "max-age=10", "Surrogate-Control", "max-age=20", "Cache-Control", "max-age=30"),
			stored(Policy{Lifetime: 10 * time.Second, Target: "CDN-Cache-Control"})},
		{"Surrogate-Control beats Cache-Control", "GET", nil, 200, hdr("Surrogate-Control", "max-age=300", "Cache-Control", "private"),
			stored(Policy{Lifetime: 5 * time.Minute, Target: "Surrogate-Control"})},
		{"Surrogate-Control no-store", "GET", nil, 200, hdr("Surrogate-Control", "no-store", "Cache-Control", "max-age=60"),
			Policy{Reason: "no-store", Target: "Surrogate-Control"}},
		{"invalid CDN-Cache-Control is ignored", "GET", nil, 200, hdr("CDN-Cache-Control", "Max-Age=600", "Cache-Control", "max-age=60"),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"invalid CDN-Cache-Control no-store is ignored", "GET", nil, 200, hdr("CDN-Cache-Control", "no-store,", "Cache-Control", "max-age=60"),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"invalid CDN-Cache-Control falls back to Surrogate-Control", "GET", nil, 200, hdr("CDN-Cache-Control", "max-age = 5", "Surrogate-Control", "max-age=300", "Cache-Control", "private"),
			stored(Policy{Lifetime: 5 * time.Minute, Target: "Surrogate-Control"})},
		{"invalid CDN-Cache-Control lets Expires apply", "GET", nil, 200, hdr("CDN-Cache-Control", `private="a`, "Expires", httpDate(now.Add(time.Hour)), "Date", date),
			stored(Policy{Lifetime: time.Hour, Target: cc})},
		{"CDN-Cache-Control string max-age not consumed", "GET", nil, 200, hdr("CDN-Cache-Control", `max-age="600"`, "Cache-Control", "max-age=60"),
			Policy{Reason: "no freshness", Target: "CDN-Cache-Control"}},
		{"CDN-Cache-Control ignores invalid Expires", "GET", nil, 200, hdr("CDN-Cache-Control", "max-age=60", "Expires", "0", "Date", date),
			stored(Policy{Lifetime: time.Minute, Target: "CDN-Cache-Control"})},
		{"CDN-Cache-Control qualified no-cache", "GET", nil, 200, hdr("CDN-Cache-Control", `max-age=60, no-cache="set-cookie"`),
			stored(Policy{Lifetime: time.Minute, StripFields: []string{"Set-Cookie"}, Target: "CDN-Cache-Control"})},

		// Not storable.
		{"no-store", "GET", nil, 200, hdr("Cache-Control", "max-age=60, no-store"), Policy{Reason: "no-store", Target: cc}},
		{"private", "GET", nil, 200, hdr("Cache-Control", "private, max-age=60"), Policy{Reason: "private", Target: cc}},
		{"vary star", "GET", nil, 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept-Encoding, *"), Policy{Reason: "vary *", Target: cc}},
		{"POST", "POST", nil, 200, hdr("Cache-Control", "max-age=60"), Policy{Reason: "method"}},
		{"206", "GET", nil, 206, hdr("Cache-Control", "max-age=60"), Policy{Reason: "status"}},
		{"304", "GET", nil, 304, hdr("Cache-Control", "max-age=60"), Policy{Reason: "status"}},
		{"1xx", "GET", nil, 103, hdr("Cache-Control", "max-age=60"), Policy{Reason: "status"}},
		{"unknown status, explicit freshness", "GET", nil, 299, hdr("Cache-Control", "max-age=60"), stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"unknown 4xx, explicit freshness", "GET", nil, 499, hdr("Expires", httpDate(now.Add(time.Hour)), "Date", date), stored(Policy{Lifetime: time.Hour, Target: cc})},
		{"unknown status, not heuristic", "GET", nil, 299, hdr("Last-Modified", httpDate(now.Add(-100*time.Hour)), "Date", date), Policy{Reason: "no freshness", Target: cc}},
		{"unknown status, not heuristic with public", "GET", nil, 299, hdr("Cache-Control", "public", "Last-Modified", httpDate(now.Add(-100*time.Hour)), "Date", date),
			Policy{Reason: "no freshness", Target: cc}},
		{"unknown status, not stored for no-cache alone", "GET", nil, 499, hdr("Cache-Control", "public, no-cache"), Policy{Reason: "no freshness", Target: cc}},
		{"status 600", "GET", nil, 600, hdr("Cache-Control", "max-age=60"), Policy{Reason: "status"}},

		// Qualified private and no-cache, no-cache, revalidation.
		{"qualified private is storable without the field", "GET", nil, 200, hdr("Cache-Control", `private="Set-Cookie", no-cache="X-Debug", max-age=60`),
			stored(Policy{Lifetime: time.Minute, StripFields: []string{"Set-Cookie", "X-Debug"}, Target: cc})},
		{"no-cache without freshness", "GET", nil, 200, hdr("Cache-Control", "no-cache", "ETag", `"v1"`),
			stored(Policy{NoCache: true, Target: cc})},
		{"no-cache with freshness forbids stale", "GET", nil, 200, hdr("Cache-Control", "no-cache, max-age=60, stale-if-error=60, stale-while-revalidate=5"),
			stored(Policy{NoCache: true, Lifetime: time.Minute, Target: cc})},
		{"no-cache on non-heuristic status", "GET", nil, 302, hdr("Cache-Control", "no-cache"),
			Policy{Reason: "no freshness", Target: cc}},
		{"must-revalidate forbids stale windows", "GET", nil, 200, hdr("Cache-Control", "max-age=60, must-revalidate, stale-while-revalidate=30, stale-if-error=30"),
			stored(Policy{Lifetime: time.Minute, MustRevalidate: true, Target: cc})},
		{"proxy-revalidate forbids stale windows", "GET", nil, 200, hdr("Cache-Control", "max-age=60, proxy-revalidate, stale-if-error=30"),
			stored(Policy{Lifetime: time.Minute, MustRevalidate: true, Target: cc})},
		{"s-maxage keeps explicit windows", "GET", nil, 200, hdr("Cache-Control", "s-maxage=60, stale-while-revalidate=30, stale-if-error=600"),
			stored(Policy{Lifetime: time.Minute, MustRevalidate: true, StaleWhileRevalidate: 30 * time.Second, StaleIfError: 10 * time.Minute, Target: cc})},
		{"swr and sie", "GET", nil, 200, hdr("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=3600"),
			stored(Policy{Lifetime: time.Minute, StaleWhileRevalidate: 30 * time.Second, StaleIfError: time.Hour, Target: cc})},
		{"invalid swr ignored", "GET", nil, 200, hdr("Cache-Control", "max-age=60, stale-while-revalidate=soon"),
			stored(Policy{Lifetime: time.Minute, Target: cc})},

		// Heuristic freshness.
		{"heuristic 10 percent", "GET", nil, 200, hdr("Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			stored(Policy{Lifetime: 10 * time.Hour, Heuristic: true, Target: cc})},
		{"heuristic capped", "GET", nil, 200, hdr("Date", date, "Last-Modified", httpDate(now.Add(-1000*time.Hour))),
			stored(Policy{Lifetime: HeuristicCap, Heuristic: true, Target: cc})},
		{"heuristic without Date uses response time", "GET", nil, 404, hdr("Last-Modified", httpDate(now.Add(-10*time.Hour))),
			stored(Policy{Lifetime: time.Hour, Heuristic: true, Target: cc})},
		{"heuristic Last-Modified in the future", "GET", nil, 200, hdr("Date", date, "Last-Modified", httpDate(now.Add(time.Hour))),
			stored(Policy{Heuristic: true, Target: cc})},
		{"no Last-Modified, no freshness", "GET", nil, 200, hdr("Date", date), Policy{Reason: "no freshness", Target: cc}},
		{"invalid Last-Modified", "GET", nil, 200, hdr("Date", date, "Last-Modified", "yesterday"), Policy{Reason: "no freshness", Target: cc}},
		{"non-heuristic status", "GET", nil, 302, hdr("Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			Policy{Reason: "no freshness", Target: cc}},
		{"public makes any status heuristic", "GET", nil, 302, hdr("Cache-Control", "public", "Date", date, "Last-Modified", httpDate(now.Add(-100*time.Hour))),
			stored(Policy{Lifetime: 10 * time.Hour, Heuristic: true, Target: cc})},
		{"public without validator", "GET", nil, 200, hdr("Cache-Control", "public"), Policy{Reason: "no freshness", Target: cc}},

		// Vary.
		{"vary canonical", "GET", nil, 200, hdr("Cache-Control", "max-age=1", "Vary", "Origin, accept-encoding", "Vary", " Accept-Encoding ,,"),
			stored(Policy{Lifetime: time.Second, Vary: []string{"accept-encoding", "origin"}, Target: cc})},

		// Authorization (RFC 9111 §3.5).
		{"authorization without permission", "GET", hdr("Authorization", "Bearer x"), 200, hdr("Cache-Control", "max-age=60"),
			Policy{Reason: "authorization", Target: cc}},
		{"authorization with public", "GET", hdr("Authorization", "Bearer x"), 200, hdr("Cache-Control", "public, max-age=60"),
			stored(Policy{Lifetime: time.Minute, Target: cc})},
		{"authorization with s-maxage", "GET", hdr("Authorization", "Bearer x"), 200, hdr("Cache-Control", "s-maxage=60"),
			stored(Policy{Lifetime: time.Minute, MustRevalidate: true, Target: cc})},
		{"authorization with must-revalidate", "GET", hdr("Authorization", "Bearer x"), 200, hdr("Cache-Control", "max-age=60, must-revalidate"),
			stored(Policy{Lifetime: time.Minute, MustRevalidate: true, Target: cc})},
		{"authorization with proxy-revalidate only", "GET", hdr("Authorization", "Bearer x"), 200, hdr("Cache-Control", "max-age=60, proxy-revalidate"),
			Policy{Reason: "authorization", Target: cc}},

		{"HEAD", "HEAD", nil, 200, hdr("Cache-Control", "max-age=60"), stored(Policy{Lifetime: time.Minute, Target: cc})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ResponsePolicy(tt.method, tt.req, tt.status, tt.resp, now)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ResponsePolicy(%s, %d, %v) =\n%+v\nwant\n%+v", tt.method, tt.status, tt.resp, got, tt.want)
			}
		})
	}
}

// TestResponsePolicyFixtures reads real-world-shaped responses from testdata/responses.
func TestResponsePolicyFixtures(t *testing.T) {
	tests := []struct {
		file     string
		storable bool
		reason   string
		lifetime time.Duration
		vary     []string
		target   string
	}{
		{"static-asset.http", true, "", 365 * 24 * time.Hour, []string{"accept-encoding"}, "Cache-Control"},
		{"html-cdn-targeted.http", true, "", 5 * time.Minute, nil, "CDN-Cache-Control"},
		{"api-private.http", false, "private", 0, nil, "Cache-Control"},
		{"legacy-expires.http", true, "", 2 * time.Hour, nil, "Cache-Control"},
		{"heuristic-404.http", true, "", 12 * time.Hour, nil, "Cache-Control"},
		{"surrogate-control.http", true, "", 10 * time.Minute, nil, "Surrogate-Control"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "responses", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			resp, err := http.ReadResponse(bufio.NewReader(f), nil)
			if err != nil {
				t.Fatalf("read %s: %v", tt.file, err)
			}
			resp.Body.Close()
			date, err := http.ParseTime(resp.Header.Get("Date"))
			if err != nil {
				t.Fatalf("%s: Date: %v", tt.file, err)
			}
			p := ResponsePolicy("GET", nil, resp.StatusCode, resp.Header, date)
			if p.Storable != tt.storable || p.Reason != tt.reason || p.Lifetime != tt.lifetime || !reflect.DeepEqual(p.Vary, tt.vary) || p.Target != tt.target {
				t.Errorf("ResponsePolicy(%s) = %+v, want storable %v reason %q lifetime %v vary %q target %s",
					tt.file, p, tt.storable, tt.reason, tt.lifetime, tt.vary, tt.target)
			}
		})
	}
}

func TestPolicyTTL(t *testing.T) {
	p := Policy{Lifetime: time.Minute}
	if got, want := p.TTL(90*time.Second), -30*time.Second; got != want {
		t.Errorf("TTL(90s) = %v, want %v", got, want)
	}
}

func TestInitialAge(t *testing.T) {
	req := now.Add(-2 * time.Second) // a 2 s round trip
	tests := []struct {
		name     string
		resp     http.Header
		reqTime  time.Time
		respTime time.Time
		want     time.Duration
	}{
		{"nothing", hdr(), now, now, 0},
		{"response delay only", hdr(), req, now, 2 * time.Second},
		{"Age plus delay", hdr("Age", "30"), req, now, 32 * time.Second},
		{"Age without delay", hdr("Age", "30"), now, now, 30 * time.Second},
		{"apparent age from Date", hdr("Date", httpDate(now.Add(-10*time.Second))), now, now, 10 * time.Second},
		{"larger of apparent and corrected", hdr("Date", httpDate(now.Add(-10*time.Second)), "Age", "3"), req, now, 10 * time.Second},
		{"Age larger than apparent", hdr("Date", httpDate(now.Add(-10*time.Second)), "Age", "100"), req, now, 102 * time.Second},
		{"Date ahead of our clock", hdr("Date", httpDate(now.Add(time.Minute)), "Age", "5"), now, now, 5 * time.Second},
		{"Date ahead, no Age", hdr("Date", httpDate(now.Add(time.Hour))), now, now, 0},
		{"invalid Age ignored", hdr("Age", "-5", "Date", httpDate(now.Add(-4*time.Second))), now, now, 4 * time.Second},
		{"signed Age ignored", hdr("Age", "+5"), now, now, 0},
		{"fractional Age ignored", hdr("Age", "5.0"), now, now, 0},
		{"Age with units ignored", hdr("Age", "5s"), now, now, 0},
		{"Age with inner space ignored", hdr("Age", "5 0"), now, now, 0},
		{"hex Age ignored", hdr("Age", "0x10"), now, now, 0},
		{"empty Age ignored", hdr("Age", ""), now, now, 0},
		{"Age with spaces around", hdr("Age", " 7 "), now, now, 7 * time.Second},
		{"list-based Age uses the first member", hdr("Age", "5, 10"), now, now, 5 * time.Second},
		{"list-based Age with invalid first member ignored", hdr("Age", "x, 10"), now, now, 0},
		{"several Age lines use the first", hdr("Age", "3", "Age", "9"), now, now, 3 * time.Second},
		{"Age 2^31 exactly", hdr("Age", "2147483648"), now, now, MaxDelta},
		{"invalid Date ignored", hdr("Date", "soon", "Age", "7"), now, now, 7 * time.Second},
		{"Age overflow clamps", hdr("Age", "99999999999999999999"), now, now, MaxDelta},
		{"response before request", hdr(), now, now.Add(-time.Second), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InitialAge(tt.resp, tt.reqTime, tt.respTime); got != tt.want {
				t.Errorf("InitialAge(%v) = %v, want %v", tt.resp, got, tt.want)
			}
		})
	}
}

func TestCurrentAge(t *testing.T) {
	tests := []struct {
		name    string
		initial time.Duration
		nowAt   time.Time
		want    time.Duration
	}{
		{"resident time adds", 10 * time.Second, now.Add(5 * time.Second), 15 * time.Second},
		{"at response time", 10 * time.Second, now, 10 * time.Second},
		{"clock stepped back", 10 * time.Second, now.Add(-time.Minute), 10 * time.Second},
		{"negative initial", -time.Second, now.Add(time.Second), time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CurrentAge(tt.initial, now, tt.nowAt); got != tt.want {
				t.Errorf("CurrentAge(%v, %v, %v) = %v, want %v", tt.initial, now, tt.nowAt, got, tt.want)
			}
		})
	}
}

func BenchmarkResponsePolicy(b *testing.B) {
	resp := hdr(
		"Cache-Control", "public, max-age=3600, stale-while-revalidate=30",
		"Date", httpDate(now),
		"Last-Modified", httpDate(now.Add(-time.Hour)),
		"Content-Type", "text/html",
		"Vary", "Accept-Encoding",
	)
	req := hdr("Accept-Encoding", "gzip")
	b.ReportAllocs()
	for b.Loop() {
		ResponsePolicy("GET", req, 200, resp, now)
	}
}
