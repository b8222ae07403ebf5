// Package httpdate keeps the HTTP Date field's value (RFC 9110, section 6.6.1) for the
// edge's own servers: it changes once a second, so it is formatted once a second rather than
// once per response.
package httpdate

import (
	"net/http"
	"sync/atomic"
	"time"
)

type cached struct {
	unix int64
	text string
}

var last atomic.Pointer[cached]

// Now is the current time as an HTTP date.
func Now() string {
	now := time.Now()
	if d := last.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &cached{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	last.Store(d)
	return d.text
}
