package httpcache

import (
	"errors"
	"strings"
	"time"
)

// errNotHTTPDate is every refusal: callers only ask whether a value is a date, and an invalid
// Expires ("0") is common enough that the refusal should not allocate.
var errNotHTTPDate = errors.New("not an HTTP-date")

// ParseDate reads an HTTP-date (RFC 9110 §5.6.7): an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
// GMT") or one of the two obsolete forms a recipient must still accept, rfc850-date ("Sunday,
// 06-Nov-94 08:49:37 GMT") and asctime-date ("Sun Nov  6 08:49:37 1994"). The result is in UTC.
//
// It holds to the grammar where http.ParseTime, through time.Parse, does not: a one-digit hour,
// doubled spaces, a fraction of a second or a zone other than GMT make the value invalid, and a
// cache reads an invalid Expires as a time in the past (RFC 9111 §5.3). nginx and Varnish refuse
// these too (the http-tests cache-tests suite's published results; bench/cache-tests.sh).
// Names (of the day, the month, GMT) match in any case, as RFC 9111 §4.2 advises a cache to;
// the day's name is not checked against the date, as time.Parse does not. A leap second (60),
// which time.Time cannot hold, is read as the second before it (RFC 9111 §4.2: the nearest
// time equal to or earlier). A two-digit year is the one within 50 years of now, ahead or
// behind (RFC 9110 §5.6.7: one more than 50 years ahead is the century before).
func ParseDate(s string) (time.Time, error) { return parseDate(s, 0) }

// parseDate is ParseDate with the current year, which the two-digit year of an rfc850-date is
// read against, given; 0 asks the clock (only an rfc850-date needs it).
func parseDate(s string, thisYear int) (time.Time, error) {
	var day, month, year, hms string
	switch {
	case len(s) == 29 && s[3] == ',':
		// 0123456789012345678901234567 8
		// Sun, 06 Nov 1994 08:49:37 GMT
		if !dayName(s[:3]) || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || !gmt(s[25:]) {
			return time.Time{}, errNotHTTPDate
		}
		day, month, year, hms = s[5:7], s[8:11], s[12:16], s[17:25]
	case len(s) == 24 && s[3] == ' ':
		// 012345678901234567890123
		// Sun Nov  6 08:49:37 1994
		if !dayName(s[:3]) || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' {
			return time.Time{}, errNotHTTPDate
		}
		day, month, year, hms = s[8:10], s[4:7], s[20:24], s[11:19]
		if day[0] == ' ' {
			day = day[1:] // ( SP DIGIT )
		}
	default:
		// Sunday, 06-Nov-94 08:49:37 GMT: the day's full name, then 24 bytes.
		i := strings.IndexByte(s, ',')
		if i < 0 || !longDayName(s[:i]) {
			return time.Time{}, errNotHTTPDate
		}
		r := s[i:]
		// 012345678901234567890123
		// , 06-Nov-94 08:49:37 GMT
		if len(r) != 24 || r[1] != ' ' || r[4] != '-' || r[8] != '-' || r[11] != ' ' || !gmt(r[20:]) {
			return time.Time{}, errNotHTTPDate
		}
		day, month, year, hms = r[2:4], r[5:8], r[9:11], r[12:20]
	}
	if hms[2] != ':' || hms[5] != ':' {
		return time.Time{}, errNotHTTPDate
	}
	d, ok1 := digits(day)
	y, ok2 := digits(year)
	hh, ok3 := digits(hms[0:2])
	mm, ok4 := digits(hms[3:5])
	ss, ok5 := digits(hms[6:8])
	m := monthOf(month)
	if m == 0 || !(ok1 && ok2 && ok3 && ok4 && ok5) || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, errNotHTTPDate
	}
	if len(year) == 2 {
		if thisYear == 0 {
			thisYear = time.Now().UTC().Year()
		}
		y += thisYear / 100 * 100
		switch {
		case y > thisYear+50:
			y -= 100
		case y <= thisYear-50:
			y += 100
		}
	}
	if ss == 60 {
		ss = 59
	}
	if d < 1 || d > daysIn(m, y) {
		return time.Time{}, errNotHTTPDate // time.Date would carry it into the next month
	}
	return time.Date(y, m, d, hh, mm, ss, 0, time.UTC), nil
}

// daysIn is the number of days in month m of year y (proleptic Gregorian, as time.Date).
func daysIn(m time.Month, y int) int {
	switch m {
	case time.February:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case time.April, time.June, time.September, time.November:
		return 30
	}
	return 31
}

var (
	dayNames     = [...]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
	longDayNames = [...]string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
	monthNames   = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// foldedIndex is the index of the name s is in another case, or -1. The names are ASCII, and so
// must s be: strings.EqualFold alone would read "ſunday" (a long s) as "sunday", but every
// non-ASCII letter that folds to an ASCII one is longer than it, so equal lengths rule it out.
func foldedIndex(s string, names []string) int {
	for i, n := range names {
		if asciiFold(s, n) {
			return i
		}
	}
	return -1
}

// asciiFold reports whether s is name, an ASCII string, in any case of its letters.
func asciiFold(s, name string) bool { return len(s) == len(name) && strings.EqualFold(s, name) }

// dayName, longDayName and monthOf look at the case nearly every server sends first, with a
// switch (the compiler's search over constants: a date reads in a third of the time a loop
// over the names took), then at any other.
func dayName(s string) bool {
	switch s {
	case "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun":
		return true
	}
	return foldedIndex(s, dayNames[:]) >= 0
}

func longDayName(s string) bool { return foldedIndex(s, longDayNames[:]) >= 0 }

func gmt(s string) bool { return s == " GMT" || asciiFold(s, " GMT") }

// monthOf is the month a three-letter name names, in any case; 0 if none.
func monthOf(name string) time.Month {
	switch name {
	case "Jan":
		return time.January
	case "Feb":
		return time.February
	case "Mar":
		return time.March
	case "Apr":
		return time.April
	case "May":
		return time.May
	case "Jun":
		return time.June
	case "Jul":
		return time.July
	case "Aug":
		return time.August
	case "Sep":
		return time.September
	case "Oct":
		return time.October
	case "Nov":
		return time.November
	case "Dec":
		return time.December
	}
	return time.Month(foldedIndex(name, monthNames[:]) + 1)
}

// digits reads s, ASCII digits only; an empty s is not a number.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(s) > 0
}
