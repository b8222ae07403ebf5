package httpcache

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

// TestParseDate: the fast reading gives http.ParseTime's answer, and what it does not read
// (other forms, other cases, dates time.Parse refuses) is still http.ParseTime's to answer.
func TestParseDate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Time // zero: an error
		fast bool      // read without http.ParseTime
	}{
		{"Sun, 06 Nov 1994 08:49:37 GMT", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC), true},
		{"Thu, 29 Feb 2024 23:59:59 GMT", time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC), true},
		{"Tue, 29 Feb 2000 00:00:00 GMT", time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC), true},
		{"Mon, 31 Dec 0000 00:00:00 GMT", time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC), true},
		{"Mon, 02 Jan 2006 15:04:05 GMT", time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC), true},
		{"Fri, 06 Nov 1994 08:49:37 GMT", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC), true}, // day name unchecked, as time.Parse
		{"sun, 06 nov 1994 08:49:37 GMT", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC), false},
		{"Sun, 06 Nov 1994 08:49:37.5 GMT", time.Date(1994, 11, 6, 8, 49, 37, 5e8, time.UTC), false},
		{"Sunday, 06-Nov-94 08:49:37 GMT", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC), false},
		{"Sun Nov  6 08:49:37 1994", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC), false},
		{"Wed, 29 Feb 2023 00:00:00 GMT", time.Time{}, false},
		{"Tue, 29 Feb 2022 00:00:00 GMT", time.Time{}, false},
		{"Sat, 29 Feb 1800 00:00:00 GMT", time.Time{}, false},
		{"Mon, 29 Feb 1900 00:00:00 GMT", time.Time{}, false},
		{"Sun, 31 Apr 1994 08:49:37 GMT", time.Time{}, false},
		{"Sun, 00 Nov 1994 08:49:37 GMT", time.Time{}, false},
		{"Sun, 06 Nov 1994 24:00:00 GMT", time.Time{}, false},
		{"Sun, 06 Nov 1994 23:60:00 GMT", time.Time{}, false},
		{"Sun, 06 Nov 1994 23:59:60 GMT", time.Time{}, false},
		{"Sun, 06 Nov 1994 08:49:37 UTC", time.Time{}, false},
		{"Sun, 06 Nov 19a4 08:49:37 GMT", time.Time{}, false},
		{"Sun, 06 Nov 1994 08:49:37 GMT ", time.Time{}, false},
		{"Xyz, 06 Nov 1994 08:49:37 GMT", time.Time{}, false},
		{"0", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		got, err := ParseDate(tt.in)
		if tt.want.IsZero() != (err != nil) || !got.Equal(tt.want) || tt.fast && got.Location() != time.UTC {
			t.Errorf("ParseDate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if _, fast := parseIMFFixdate(tt.in); fast != tt.fast {
			t.Errorf("parseIMFFixdate(%q) read it: %v, want %v", tt.in, fast, tt.fast)
		}
	}
}

// FuzzParseDate holds ParseDate to http.ParseTime's answer for any string.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Thu, 29 Feb 2024 23:59:59 GMT",
		"Wed, 29 Feb 2023 00:00:00 GMT", "Sun, 06 Nov 1994 24:00:00 GMT", "sun, 06 nov 1994 08:49:37 GMT",
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDate(s)
		want, werr := http.ParseTime(s)
		// RFC 850 dates get a zone of their own per call: compare zones by name.
		if (err != nil) != (werr != nil) || !got.Equal(want) || got.Location().String() != want.Location().String() {
			t.Fatalf("ParseDate(%q) = %v, %v; http.ParseTime: %v, %v", s, got, err, want, werr)
		}
	})
}

// BenchmarkParseDate: an origin's Date, read fast and by http.ParseTime.
func BenchmarkParseDate(b *testing.B) {
	const s = "Fri, 04 Dec 2026 22:27:33 GMT"
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			ParseDate(s)
		}
	})
	b.Run("http.ParseTime", func(b *testing.B) {
		for b.Loop() {
			http.ParseTime(s)
		}
	})
}

// TestParseDateRandom: IMF-fixdates with every field drawn near and past its bounds (and now
// and then a byte changed) read the same by ParseDate and http.ParseTime; random bytes rarely
// make one, so the fuzzer alone would seldom reach the fast reading's checks.
func TestParseDateRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 29))
	names := []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "mon", "SUN", "Xyz"}
	months := []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "jan", "FEB", "Foo"}
	fast := 0
	// Years near the leap-year rule's edges (every fourth, but not centuries but every fourth
	// century), and any year.
	years := []int{0, 1600, 1800, 1900, 2000, 2020, 2100, 2200, 2400, 9996}
	for i := 0; i < 200_000; i++ {
		year := rng.IntN(10_000)
		if rng.IntN(2) == 0 {
			year = years[rng.IntN(len(years))] + rng.IntN(4)
		}
		s := fmt.Sprintf("%s, %02d %s %04d %02d:%02d:%02d GMT", names[rng.IntN(len(names))], rng.IntN(33),
			months[rng.IntN(len(months))], year, rng.IntN(26), rng.IntN(62), rng.IntN(62))
		if rng.IntN(8) == 0 {
			b := []byte(s)
			b[rng.IntN(len(b))] = " ,:0123456789GMTx\t"[rng.IntN(18)]
			s = string(b)
		}
		got, err := ParseDate(s)
		want, werr := http.ParseTime(s)
		if (err != nil) != (werr != nil) || !got.Equal(want) || got.Location().String() != want.Location().String() {
			t.Fatalf("ParseDate(%q) = %v, %v; http.ParseTime: %v, %v", s, got, err, want, werr)
		}
		if _, ok := parseIMFFixdate(s); ok {
			fast++
		}
	}
	if fast < 10_000 {
		t.Errorf("only %d of the dates were read fast: the test hardly reaches the fast reading", fast)
	}
}
