package httpcache

import (
	"net/http"
	"time"
)

// ParseDate is http.ParseTime, with the form nearly every server sends read without
// time.Parse: an IMF-fixdate as http.TimeFormat writes it ("Sun, 06 Nov 1994 08:49:37 GMT",
// names in that case). A miss reads its origin's Date twice and Last-Modified once;
// http.ParseTime, through time.Parse, takes 117-146 ns for each, this 23 (BenchmarkParseDate;
// issue 15). Anything else, other cases of the names included, goes to http.ParseTime;
// FuzzParseDate holds the two to the same answers.
func ParseDate(s string) (time.Time, error) {
	if t, ok := parseIMFFixdate(s); ok {
		return t, nil
	}
	return http.ParseTime(s)
}

// parseIMFFixdate reads s if it is an IMF-fixdate time.Parse accepts with http.TimeFormat:
// a day name, the day of its month (within the month's days), a month name, a four-digit
// year, the hour (below 24), minute and second (below 60), and GMT. Like time.Parse it does
// not check that the day name is the date's.
func parseIMFFixdate(s string) (time.Time, bool) {
	//       0123456789012345678901234567 8
	// e.g. "Sun, 06 Nov 1994 08:49:37 GMT"
	if len(s) != len(http.TimeFormat) || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
		s[16] != ' ' || s[19] != ':' || s[22] != ':' || s[25:] != " GMT" {
		return time.Time{}, false
	}
	switch s[:3] {
	case "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun":
	default:
		return time.Time{}, false
	}
	month := monthOf(s[8:11])
	day, ok1 := digits(s[5:7])
	year, ok2 := digits(s[12:16])
	hour, ok3 := digits(s[17:19])
	minute, ok4 := digits(s[20:22])
	sec, ok5 := digits(s[23:25])
	if month == 0 || !(ok1 && ok2 && ok3 && ok4 && ok5) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	// time.Date normalises a day past the month's end (or 0) into another month: the
	// calendar's own check of the day, leap years included.
	t := time.Date(year, month, day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, false
	}
	return t, true
}

// monthOf is the month a three-letter name (as time.Month's String begins) names; 0 if none.
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
	return 0
}

// digits reads s, ASCII digits only.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
