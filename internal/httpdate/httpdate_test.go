package httpdate

import (
	"net/http"
	"testing"
	"time"
)

// TestNow: the value parses as an HTTP date within a second of the clock, and is the same
// string while the second lasts.
func TestNow(t *testing.T) {
	before := time.Now().Truncate(time.Second)
	got := Now()
	at, err := http.ParseTime(got)
	if err != nil {
		t.Fatalf("%q: %v", got, err)
	}
	if after := time.Now(); at.Before(before) || at.After(after) {
		t.Fatalf("%v is not between %v and %v", at, before, after)
	}
	for range 3 {
		if again := Now(); again != got && time.Now().Unix() == at.Unix() {
			t.Fatalf("%q then %q within one second", got, again)
		}
	}
}
