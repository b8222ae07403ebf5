package origin

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	// DefaultSize is the body size when the query has no size parameter.
	DefaultSize = 1024
	// MaxSize is the largest body the origin generates (1 GiB). Bodies are streamed from a
	// short generated block, so size costs no memory.
	MaxSize = 1 << 30
	// maxWait bounds delay= and stall= so a typo cannot park a handler for hours.
	maxWait = 10 * time.Minute
)

// Params is what an object request's query asks of the response. The zero value is not the
// default; ParseParams fills defaults.
type Params struct {
	Size             int    // size=: body bytes, default DefaultSize, at most MaxSize
	CacheControl     string // cc=: Cache-Control
	CDNCacheControl  string // cdncc=: CDN-Cache-Control
	SurrogateControl string // sc=: Surrogate-Control
	// Expires is set from expires= (seconds from now, may be negative); HasExpires says it was given.
	Expires    time.Duration
	HasExpires bool
	// LastModifiedAgo is set from lm= (seconds before now); HasLastModified says it was given.
	// Without it Last-Modified is when the object's version was created.
	LastModifiedAgo time.Duration
	HasLastModified bool
	NoETag          bool          // etag=0: send no ETag
	Vary            []string      // vary=: canonical header names; the body also depends on their values
	SurrogateKeys   string        // sk=: Surrogate-Key (space separated keys)
	CacheTag        string        // tag=: Cache-Tag
	CacheGroups     string        // groups=: Cache-Groups, sent as given
	Status          int           // status=: response status, default 200
	ContentType     string        // ct=: Content-Type, default application/octet-stream
	Delay           time.Duration // delay=: wait before sending headers
	Stall           time.Duration // stall=: pause after half the body
	Location        string        // location=: Location header
	NoRange         bool          // norange=1: ignore Range and If-Range, answer 200 with the whole body
}

// ParseParams reads the query convention documented in docs/origin.md. Unknown parameters are
// ignored (they still make a distinct cache key, e.g. ?v=2). A malformed value is an error.
func ParseParams(q url.Values) (Params, error) {
	p := Params{Size: DefaultSize, Status: http.StatusOK, ContentType: "application/octet-stream"}
	var err error
	if v, ok := get(q, "size"); ok {
		if p.Size, err = strconv.Atoi(v); err != nil || p.Size < 0 || p.Size > MaxSize {
			return p, fmt.Errorf("parse size=%q: want an integer from 0 to %d", v, MaxSize)
		}
	}
	headers := []struct {
		name string
		dst  *string
	}{
		{"cc", &p.CacheControl}, {"cdncc", &p.CDNCacheControl}, {"sc", &p.SurrogateControl},
		{"sk", &p.SurrogateKeys}, {"tag", &p.CacheTag}, {"groups", &p.CacheGroups},
		{"ct", &p.ContentType}, {"location", &p.Location},
	}
	for _, h := range headers {
		if v, ok := get(q, h.name); ok {
			if !validHeaderValue(v) {
				return p, fmt.Errorf("parse %s=%q: not a valid header value", h.name, v)
			}
			*h.dst = v
		}
	}
	if v, ok := get(q, "expires"); ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return p, fmt.Errorf("parse expires=%q: want seconds from now: %w", v, err)
		}
		p.Expires, p.HasExpires = time.Duration(n)*time.Second, true
	}
	if v, ok := get(q, "lm"); ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			return p, fmt.Errorf("parse lm=%q: want a non-negative number of seconds ago", v)
		}
		p.LastModifiedAgo, p.HasLastModified = time.Duration(n)*time.Second, true
	}
	if v, ok := get(q, "etag"); ok {
		switch v {
		case "0":
			p.NoETag = true
		case "1":
		default:
			return p, fmt.Errorf("parse etag=%q: want 0 or 1", v)
		}
	}
	if v, ok := get(q, "norange"); ok {
		switch v {
		case "1":
			p.NoRange = true
		case "0":
		default:
			return p, fmt.Errorf("parse norange=%q: want 0 or 1", v)
		}
	}
	if v, ok := get(q, "vary"); ok {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if !validToken(f) {
				return p, fmt.Errorf("parse vary=%q: %q is not a header name", v, f)
			}
			p.Vary = append(p.Vary, textproto.CanonicalMIMEHeaderKey(f))
		}
	}
	if v, ok := get(q, "status"); ok {
		if p.Status, err = strconv.Atoi(v); err != nil || p.Status < 200 || p.Status > 599 {
			return p, fmt.Errorf("parse status=%q: want a code from 200 to 599", v)
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"delay", &p.Delay}, {"stall", &p.Stall}} {
		if v, ok := get(q, d.name); ok {
			if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst < 0 || *d.dst > maxWait {
				return p, fmt.Errorf("parse %s=%q: want a Go duration from 0 to %v", d.name, v, maxWait)
			}
		}
	}
	return p, nil
}

// get returns the first value of key and whether the key is present.
func get(q url.Values, key string) (string, bool) {
	vs, ok := q[key]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// validHeaderValue reports whether v can be sent as a field value unchanged (RFC 9110 §5.5:
// visible characters, space and tab; no CR, LF or NUL).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validToken reports whether s is an RFC 9110 token, the syntax of a field name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
