package httpcache

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestParseDate: the three forms of RFC 9110 §5.6.7 in any case, and what the grammar
// refuses though time.Parse (and so http.ParseTime) reads it. The cache-tests suite's
// freshness-expires-invalid-* inputs are among the refusals.
func TestParseDate(t *testing.T) {
	utc := func(y int, m time.Month, d, hh, mm, ss int) time.Time {
		return time.Date(y, m, d, hh, mm, ss, 0, time.UTC)
	}
	for _, tt := range []struct {
		in   string
		want time.Time // zero: an error
	}{
		{"Sun, 06 Nov 1994 08:49:37 GMT", utc(1994, 11, 6, 8, 49, 37)},
		{"Thu, 29 Feb 2024 23:59:59 GMT", utc(2024, 2, 29, 23, 59, 59)},
		{"Tue, 29 Feb 2000 00:00:00 GMT", utc(2000, 2, 29, 0, 0, 0)},
		{"Mon, 31 Dec 0000 00:00:00 GMT", utc(0, 12, 31, 0, 0, 0)},
		{"Fri, 06 Nov 1994 08:49:37 GMT", utc(1994, 11, 6, 8, 49, 37)}, // the day's name is not checked
		{"sun, 06 nov 1994 08:49:37 gmt", utc(1994, 11, 6, 8, 49, 37)}, // RFC 9111 §4.2: any case
		{"SUN, 06 NOV 1994 08:49:37 GMT", utc(1994, 11, 6, 8, 49, 37)},
		{"Thu, 18 Aug 2050 02:01:18 gMT", utc(2050, 8, 18, 2, 1, 18)},
		{"Thu, 31 Dec 2026 23:59:60 GMT", utc(2026, 12, 31, 23, 59, 59)}, // a leap second: the second before
		// rfc850-date: a two-digit year more than 50 years ahead (of 2026) is the century before.
		{"Sunday, 06-Nov-94 08:49:37 GMT", utc(1994, 11, 6, 8, 49, 37)},
		{"sunday, 06-nov-94 08:49:37 gmt", utc(1994, 11, 6, 8, 49, 37)},
		{"Thursday, 18-Aug-76 02:01:18 GMT", utc(2076, 8, 18, 2, 1, 18)},
		{"Wednesday, 18-Aug-77 02:01:18 GMT", utc(1977, 8, 18, 2, 1, 18)},
		{"Saturday, 05-Dec-26 11:00:00 GMT", utc(2026, 12, 5, 11, 0, 0)},
		// asctime-date: the day as two digits or as a space and one.
		{"Sun Nov  6 08:49:37 1994", utc(1994, 11, 6, 8, 49, 37)},
		{"Sun Nov 06 08:49:37 1994", utc(1994, 11, 6, 8, 49, 37)},
		{"Sun Nov 16 08:49:37 1994", utc(1994, 11, 16, 8, 49, 37)},

		{"Thu, 18 Aug 2050 2:01:18 GMT", time.Time{}},        // one-digit hour
		{"Thu, 18  Aug  2050 02:01:18 GMT", time.Time{}},     // doubled spaces
		{"Thu, 18 Aug 2050 02:01:18 UTC", time.Time{}},       // a zone other than GMT
		{"Thu, 18 Aug 2050 02:01:18 AEST", time.Time{}},      // likewise
		{"Thu, 18 Aug 50 02:01:18 GMT", time.Time{}},         // two-digit year in an IMF-fixdate
		{"Thu 18 Aug 2050 02:01:18 GMT", time.Time{}},        // no comma
		{"Thu, 18-Aug-2050 02:01:18 GMT", time.Time{}},       // dashes
		{"Thu, 18 Aug 2050 02.01.18 GMT", time.Time{}},       // periods
		{"Sun, 06 Nov 1994 08:49:37.5 GMT", time.Time{}},     // a fraction of a second
		{"Sun, 06 Nov 1994 08:49:37 GMT ", time.Time{}},      // a trailing space
		{" Sun, 06 Nov 1994 08:49:37 GMT", time.Time{}},      // a leading one
		{"Sun, 06 Nov 1994 08:49:37", time.Time{}},           // no zone
		{"Sun, 6 Nov 1994 08:49:37 GMT", time.Time{}},        // one-digit day
		{"Wed, 29 Feb 2023 00:00:00 GMT", time.Time{}},       // not a leap year
		{"Mon, 29 Feb 1900 00:00:00 GMT", time.Time{}},       // a century
		{"Sun, 31 Apr 1994 08:49:37 GMT", time.Time{}},       // April has 30
		{"Sun, 00 Nov 1994 08:49:37 GMT", time.Time{}},       // day 0
		{"Sun, 32 Nov 1994 08:49:37 GMT", time.Time{}},       // day 32
		{"Sun, 06 Nov 1994 24:00:00 GMT", time.Time{}},       // hour 24
		{"Sun, 06 Nov 1994 23:60:00 GMT", time.Time{}},       // minute 60
		{"Sun, 06 Nov 1994 23:59:61 GMT", time.Time{}},       // second 61
		{"Sun, 06 Nov 19a4 08:49:37 GMT", time.Time{}},       // not a digit
		{"Sun, 06 Nov +994 08:49:37 GMT", time.Time{}},       // a sign
		{"Xyz, 06 Nov 1994 08:49:37 GMT", time.Time{}},       // no such day
		{"Sun, 06 Nox 1994 08:49:37 GMT", time.Time{}},       // no such month
		{"Sun, 06-Nov-94 08:49:37 GMT", time.Time{}},         // rfc850 wants the day's full name
		{"Sundae, 06-Nov-94 08:49:37 GMT", time.Time{}},      // no such day
		{"\u017funday, 06-Nov-94 08:49:37 GMT", time.Time{}}, // a long s is not an s
		{"Sun, 06 Nov 1994 08:49:37 \u212aMT", time.Time{}},  // nor a Kelvin sign a K
		{"Sunday, 06-Nov-1994 08:49:37 GMT", time.Time{}},    // rfc850 with four digits
		{"Sunday, 06-Nov-94 08:49:37 UTC", time.Time{}},
		{"Sun Nov 6 08:49:37 1994", time.Time{}},   // asctime's one-digit day without its space
		{"Sun Nov  6 08:49:37 94", time.Time{}},    // asctime's two-digit year
		{"Sun Nov  6 08:49:37 1994 ", time.Time{}}, // trailing space
		{"Sun,Nov  6 08:49:37 1994", time.Time{}},
		{"0", time.Time{}},
		{"-1", time.Time{}},
		{"", time.Time{}},
	} {
		got, err := parseDate(tt.in, 2026)
		if tt.want.IsZero() != (err != nil) || !got.Equal(tt.want) || err == nil && got.Location() != time.UTC {
			t.Errorf("parseDate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if ref, ok := refParseDate(tt.in, 2026); ok == tt.want.IsZero() || !ref.Equal(tt.want) {
			t.Errorf("the reference reads %q as %v, %v; the table says %v", tt.in, ref, ok, tt.want)
		}
	}
}

// TestParseDateTwoDigitYear: a two-digit year is the one within 50 years of the current one,
// in 2026 as in 2060.
func TestParseDateTwoDigitYear(t *testing.T) {
	for _, tt := range []struct{ this, yy, want int }{
		{2026, 94, 1994}, {2026, 26, 2026}, {2026, 76, 2076}, {2026, 77, 1977}, {2026, 0, 2000},
		{2060, 5, 2105}, {2060, 10, 2110}, {2060, 11, 2011}, {2060, 99, 2099}, {2099, 49, 2149}, {2099, 50, 2050},
	} {
		s := fmt.Sprintf("Monday, 01-Jan-%02d 00:00:00 GMT", tt.yy)
		got, err := parseDate(s, tt.this)
		if err != nil || got.Year() != tt.want {
			t.Errorf("in %d, parseDate(%q) = %v, %v; want the year %d", tt.this, s, got, err, tt.want)
		}
		if ref, ok := refParseDate(s, tt.this); !ok || ref.Year() != tt.want {
			t.Errorf("in %d, the reference reads %q as %v, %v; want the year %d", tt.this, s, ref, ok, tt.want)
		}
	}
}

// TestParseDateNow: ParseDate reads a two-digit year against the current one.
func TestParseDateNow(t *testing.T) {
	this := time.Now().UTC().Year()
	yy := (this + 50) % 100 // 50 years ahead: still this century's (or the next's)
	got, err := ParseDate(fmt.Sprintf("Monday, 01-Jan-%02d 00:00:00 GMT", yy))
	if err != nil || got.Year() != this+50 {
		t.Errorf("ParseDate of year %02d = %v, %v; want the year %d", yy, got, err, this+50)
	}
	yy = (this + 51) % 100
	got, err = ParseDate(fmt.Sprintf("Monday, 01-Jan-%02d 00:00:00 GMT", yy))
	if err != nil || got.Year() != this+51-100 {
		t.Errorf("ParseDate of year %02d = %v, %v; want the year %d", yy, got, err, this+51-100)
	}
}

// refParseDate is the grammar of RFC 9110 §5.6.7 written as regular expressions, the oracle
// for parseDate: names in any case, fields range-checked, the day checked against its month.
func refParseDate(s string, thisYear int) (time.Time, bool) {
	var day, mon, year, hh, mm, ss string
	s = asciiLower(s)
	if m := refIMF.FindStringSubmatch(s); m != nil {
		day, mon, year, hh, mm, ss = m[1], m[2], m[3], m[4], m[5], m[6]
	} else if m := refRFC850.FindStringSubmatch(s); m != nil {
		day, mon, year, hh, mm, ss = m[1], m[2], m[3], m[4], m[5], m[6]
	} else if m := refASC.FindStringSubmatch(s); m != nil {
		mon, day, hh, mm, ss, year = m[1], m[2], m[3], m[4], m[5], m[6]
	} else {
		return time.Time{}, false
	}
	atoi := func(s string) int {
		n, err := strconv.Atoi(strings.TrimPrefix(s, " "))
		if err != nil {
			panic(err)
		}
		return n
	}
	y, d, h, mi, se := atoi(year), atoi(day), atoi(hh), atoi(mm), atoi(ss)
	if len(year) == 2 {
		// The year ending in yy nearest to thisYear, and of two equally near the later.
		y += thisYear / 100 * 100
		for y > thisYear+50 {
			y -= 100
		}
		for y <= thisYear-50 {
			y += 100
		}
	}
	month := time.Month(strings.Index("janfebmaraprmayjunjulaugsepoctnovdec", mon)/3 + 1)
	daysIn := time.Date(y, month+1, 0, 0, 0, 0, 0, time.UTC).Day()
	if d < 1 || d > daysIn || h > 23 || mi > 59 || se > 60 {
		return time.Time{}, false
	}
	return time.Date(y, month, d, h, mi, min(se, 59), 0, time.UTC), true
}

const (
	refDay  = `(?:mon|tue|wed|thu|fri|sat|sun)`
	refLong = `(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)`
	refMon  = `(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)`
	refTime = `([0-9]{2}):([0-9]{2}):([0-9]{2})`
)

var (
	// Matched against the input with its ASCII letters lower-cased.
	refIMF    = regexp.MustCompile(`^` + refDay + `, ([0-9]{2}) ` + refMon + ` ([0-9]{4}) ` + refTime + ` gmt$`)
	refRFC850 = regexp.MustCompile(`^` + refLong + `, ([0-9]{2})-` + refMon + `-([0-9]{2}) ` + refTime + ` gmt$`)
	refASC    = regexp.MustCompile(`^` + refDay + ` ` + refMon + ` ([0-9]{2}| [0-9]) ` + refTime + ` ([0-9]{4})$`)
)

// FuzzParseDate holds parseDate to the reference reading for any string; where both read a
// date, http.ParseTime (which is laxer, and reads two-digit years and leap seconds its own
// way) reads an IMF-fixdate in canonical case the same.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Thu, 29 Feb 2024 23:59:59 GMT",
		"Wed, 29 Feb 2023 00:00:00 GMT", "Sun, 06 Nov 1994 24:00:00 GMT", "sun, 06 nov 1994 08:49:37 GMT",
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "0", "Thu, 18 Aug 2050 2:01:18 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseDate(s, 2026)
		want, ok := refParseDate(s, 2026)
		if (err == nil) != ok || !got.Equal(want) {
			t.Fatalf("parseDate(%q) = %v, %v; the reference: %v, %v", s, got, err, want, ok)
		}
		if err == nil && refIMF.MatchString(asciiLower(s)) && s[23:25] != "60" {
			if std, err := http.ParseTime(got.Format(http.TimeFormat)); err != nil || !std.Equal(got) {
				t.Fatalf("http.ParseTime reads %q's date as %v, %v; parseDate: %v", s, std, err, got)
			}
		}
	})
}

// TestParseDateRandom: dates in the three forms with every field drawn near and past its bounds
// (and now and then a byte changed) read as the reference reads them; random bytes rarely make
// a date, so the fuzzer alone would seldom reach the range and calendar checks.
func TestParseDateRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 29))
	names := []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "mon", "SUN", "Xyz"}
	long := []string{"Monday", "Sunday", "wednesday", "SATURDAY", "Sundae"}
	months := []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "jan", "FEB", "Foo"}
	// Years near the leap-year rule's edges (every fourth, but not centuries but every fourth
	// century), and any year.
	years := []int{0, 1600, 1800, 1900, 2000, 2020, 2100, 2200, 2400, 9996}
	read := 0
	for i := 0; i < 50_000; i++ {
		year := rng.IntN(10_000)
		if rng.IntN(2) == 0 {
			year = years[rng.IntN(len(years))] + rng.IntN(4)
		}
		day, mon, hh, mm, ss := rng.IntN(33), months[rng.IntN(len(months))], rng.IntN(26), rng.IntN(62), rng.IntN(62)
		var s string
		switch rng.IntN(3) {
		case 0:
			s = fmt.Sprintf("%s, %02d %s %04d %02d:%02d:%02d GMT", names[rng.IntN(len(names))], day, mon, year, hh, mm, ss)
		case 1:
			s = fmt.Sprintf("%s, %02d-%s-%02d %02d:%02d:%02d GMT", long[rng.IntN(len(long))], day, mon, year%100, hh, mm, ss)
		default:
			s = fmt.Sprintf("%s %s %2d %02d:%02d:%02d %04d", names[rng.IntN(len(names))], mon, day, hh, mm, ss, year)
		}
		if rng.IntN(8) == 0 {
			b := []byte(s)
			b[rng.IntN(len(b))] = " ,:-0123456789GMTx\t"[rng.IntN(19)]
			s = string(b)
		}
		got, err := parseDate(s, 2026)
		want, ok := refParseDate(s, 2026)
		if (err == nil) != ok || !got.Equal(want) {
			t.Fatalf("parseDate(%q) = %v, %v; the reference: %v, %v", s, got, err, want, ok)
		}
		if ok {
			read++
		}
	}
	if read < 5_000 {
		t.Errorf("only %d of the strings were dates: the test hardly reaches the range checks", read)
	}
}

// TestParseDateAllocs: neither a date nor a refusal allocates.
func TestParseDateAllocs(t *testing.T) {
	for _, s := range []string{"Fri, 04 Dec 2026 22:27:33 GMT", "0", "fri, 04 dec 2026 22:27:33 gmt"} {
		if n := testing.AllocsPerRun(100, func() { ParseDate(s) }); n != 0 {
			t.Errorf("ParseDate(%q): %v allocations", s, n)
		}
	}
}

// BenchmarkParseDate: an origin's Date, read by ParseDate and by http.ParseTime.
func BenchmarkParseDate(b *testing.B) {
	const s = "Fri, 04 Dec 2026 22:27:33 GMT"
	b.Run("ParseDate", func(b *testing.B) {
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
