package httpcache

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// HeuristicFraction is the share of (Date - Last-Modified) used as a heuristic freshness
// lifetime (RFC 9111 §4.2.2 suggests 10%).
const HeuristicFraction = 0.1

// HeuristicCap bounds a heuristic freshness lifetime.
const HeuristicCap = 24 * time.Hour

// Canonical forms of the field names this package reads from http.Header maps directly, so
// that no lookup has to canonicalise (and allocate). Headers from net/http are canonical.
const (
	hdrCacheControl     = "Cache-Control"
	hdrCDNCacheControl  = "Cdn-Cache-Control"
	hdrSurrogateControl = "Surrogate-Control"
	hdrExpires          = "Expires"
	hdrDate             = "Date"
	hdrLastModified     = "Last-Modified"
	hdrAge              = "Age"
	hdrVary             = "Vary"
	hdrAuthorization    = "Authorization"
)

// Policy is the cache's reading of one upstream response, computed once when it arrives.
type Policy struct {
	Storable bool
	// Reason says why, when !Storable: "method", "status", "no-store", "private",
	// "authorization", "vary *" or "no freshness".
	Reason string
	// Lifetime is the freshness lifetime, never negative.
	Lifetime time.Duration
	// Heuristic says Lifetime came from the Last-Modified heuristic.
	Heuristic bool
	// StaleWhileRevalidate and StaleIfError are the RFC 5861 windows (0 = none). They are zero
	// whenever must-revalidate, proxy-revalidate or unqualified no-cache is present, since those
	// forbid serving stale (RFC 9111 §4.2.4). An explicit window given with s-maxage is kept:
	// the origin said in so many words how long a stale copy may be used.
	StaleWhileRevalidate, StaleIfError time.Duration
	// MustRevalidate: must-revalidate, proxy-revalidate or s-maxage was present, so the response
	// is never served stale without revalidating, except inside the windows above.
	MustRevalidate bool
	// NoCache: stored, but revalidated before every use (unqualified no-cache).
	NoCache bool
	// Immutable: the origin promises the content will not change while fresh (RFC 8246).
	Immutable bool
	// Vary lists the field names in Vary, lower-cased, sorted and without duplicates.
	Vary []string
	// StripFields are fields the cache must not keep in its copy: those named by a qualified
	// private (a shared cache must not store them) or no-cache (not to be reused without
	// revalidation). Delete them from the stored header, again after every Refresh.
	StripFields []string
	// Target names the field the directives were taken from: "CDN-Cache-Control",
	// "Surrogate-Control" or "Cache-Control" (RFC 9213).
	Target string
}

// TTL is the remaining freshness for a response of the given current age: negative once stale.
func (p Policy) TTL(age time.Duration) time.Duration { return p.Lifetime - age }

// TargetDirectives returns the directives this shared cache obeys, per RFC 9213: a
// CDN-Cache-Control that is a valid, non-empty Structured Fields Dictionary (see
// ParseTargetedCacheControl), else a non-empty Surrogate-Control, replaces Cache-Control (and
// Expires) entirely; otherwise Cache-Control applies. An invalid CDN-Cache-Control is ignored
// (RFC 9213 §2.1), as if it were absent. It also returns the name of the field used.
func TargetDirectives(respHeader http.Header) (Directives, string) {
	if v := respHeader[hdrCDNCacheControl]; len(v) > 0 {
		if d, ok := ParseTargetedCacheControl(v); ok {
			return d, "CDN-Cache-Control"
		}
	}
	if v := respHeader[hdrSurrogateControl]; nonEmpty(v) {
		return ParseCacheControl(v), "Surrogate-Control"
	}
	return ParseCacheControl(respHeader[hdrCacheControl]), "Cache-Control"
}

func nonEmpty(values []string) bool {
	for _, v := range values {
		if trimOWS(v) != "" {
			return true
		}
	}
	return false
}

// ResponsePolicy decides storability and freshness of a response to a GET (or HEAD) request for
// a SHARED cache (RFC 9111 §3, §4.2.1, §4.2.2).
//
// The directives come from TargetDirectives. reqHeader is the fill request's header; only its
// Authorization matters (§3.5: such a response is stored only with public, s-maxage or
// must-revalidate). Request Cache-Control directives are deliberately not read: a CDN does not
// let clients decide what it stores. now is the response time. Header maps must have canonical
// keys, as net/http produces them.
//
// A response is storable when the method is GET or HEAD; the status is final (200-599), not
// 206 (the edge fills whole objects) and not 304, and understood if must-understand is present
// (RFC 9111 §3: an unknown status with explicit freshness may be stored, as nginx does); there
// is no no-store (unless with must-understand, which limits storing to caches that understand
// the status), no unqualified private and no Vary: *; and it has explicit freshness (s-maxage,
// else max-age, else Expires - Date, Expires being read only when Cache-Control is the target
// field), or else is heuristically cacheable (the statuses of RFC 9110 §15.1, or any
// understood status with public) and has a Last-Modified giving min(HeuristicFraction × (Date -
// Last-Modified), HeuristicCap), or else carries no-cache and is heuristically cacheable
// (Lifetime 0). Meridian has no default TTL: anything else is "no freshness".
//
// An Expires that is not a valid HTTP-date (such as "0", "-1" or an empty value) means already
// expired (RFC 9111 §5.3): the response is stored with Lifetime 0, so it is revalidated before
// use, and no heuristic applies since an expiration time was given. A valid max-age or s-maxage
// still takes precedence over any Expires, valid or not. Of several Expires lines the first is
// used (§4.2). An invalid max-age or s-maxage (max-age=-1; Directives.InvalidMaxAge) without a
// valid one leaves a valid Expires to apply, but never a heuristic: RFC 9111 §4.2.1 encourages
// reading invalid freshness as stale, and the origin did not mean the copy to be kept for a
// tenth of its age (up to a day), as before; nginx does not store such a response.
func ResponsePolicy(method string, reqHeader http.Header, status int, respHeader http.Header, now time.Time) Policy {
	if method != http.MethodGet && method != http.MethodHead {
		return Policy{Reason: "method"}
	}
	if !storableStatus(status) {
		return Policy{Reason: "status"}
	}
	d, target := TargetDirectives(respHeader)
	if d.MustUnderstand && !understood(status) {
		return Policy{Reason: "status", Target: target}
	}
	// must-understand (RFC 9111 §5.2.2.3) comes with no-store, which only caches that do not
	// understand the status obey: this one does (above).
	if d.NoStore && !d.MustUnderstand {
		return Policy{Reason: "no-store", Target: target}
	}
	if d.Private {
		return Policy{Reason: "private", Target: target}
	}
	if _, ok := reqHeader[hdrAuthorization]; ok && !d.Public && !d.HasSMaxAge && !d.MustRevalidate {
		return Policy{Reason: "authorization", Target: target}
	}
	vary, star := ParseVary(respHeader[hdrVary])
	if star {
		return Policy{Reason: "vary *", Target: target}
	}
	p := Policy{
		Storable:       true,
		MustRevalidate: d.MustRevalidate || d.ProxyRevalidate || d.HasSMaxAge,
		NoCache:        d.NoCache,
		Immutable:      d.Immutable,
		Vary:           vary,
		Target:         target,
	}
	if n := len(d.PrivateFields) + len(d.NoCacheFields); n > 0 {
		p.StripFields = make([]string, 0, n)
		p.StripFields = append(append(p.StripFields, d.PrivateFields...), d.NoCacheFields...)
	}
	if !d.MustRevalidate && !d.ProxyRevalidate && !d.NoCache {
		p.StaleWhileRevalidate, p.StaleIfError = d.StaleWhileRevalidate, d.StaleIfError
	}

	date := headerTime(respHeader, hdrDate, now)
	switch {
	case d.HasSMaxAge:
		p.Lifetime = d.SMaxAge
	case d.HasMaxAge:
		p.Lifetime = d.MaxAge
	case target == "Cache-Control" && len(respHeader[hdrExpires]) > 0:
		// An invalid Expires, such as "0", means already expired (RFC 9111 §5.3): Lifetime 0.
		if exp, err := ParseDate(respHeader[hdrExpires][0]); err == nil {
			p.Lifetime = clampLifetime(exp.Sub(date))
		}
	case heuristicStatus(status) || d.Public && understood(status):
		lm, err := time.Time{}, error(nil)
		if v := respHeader[hdrLastModified]; len(v) > 0 {
			lm, err = ParseDate(v[0])
		}
		switch {
		case len(respHeader[hdrLastModified]) > 0 && err == nil && !d.InvalidMaxAge:
			p.Heuristic = true
			p.Lifetime = min(clampLifetime(time.Duration(float64(date.Sub(lm))*HeuristicFraction)), HeuristicCap)
		case d.NoCache:
			// Stored for revalidation only.
		default:
			return Policy{Reason: "no freshness", Target: target}
		}
	default:
		return Policy{Reason: "no freshness", Target: target}
	}
	return p
}

func clampLifetime(d time.Duration) time.Duration {
	return min(max(d, 0), MaxDelta)
}

// headerTime parses the first line of an HTTP-date field, or returns def.
func headerTime(h http.Header, name string, def time.Time) time.Time {
	if v := h[name]; len(v) > 0 {
		if t, err := ParseDate(v[0]); err == nil {
			return t
		}
	}
	return def
}

// storableStatus: a final status (RFC 9110 §15), except 206 (the edge fills whole objects) and
// 304 (not a complete response).
func storableStatus(status int) bool {
	return status >= 200 && status <= 599 && status != http.StatusPartialContent && status != http.StatusNotModified
}

// understood: a status RFC 9110 (or one of the RFCs net/http follows) defines, whose caching
// rules this cache therefore knows.
func understood(status int) bool { return http.StatusText(status) != "" }

// heuristicStatus: the status codes RFC 9110 §15.1 defines as heuristically cacheable.
func heuristicStatus(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// ParseVary returns the lower-cased, sorted, de-duplicated field names of Vary's lines (as
// Policy.Vary lists them), and whether they hold "*".
func ParseVary(values []string) ([]string, bool) {
	var out []string
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			f = trimOWS(f)
			if f == "" {
				continue
			}
			if f == "*" {
				return nil, true
			}
			out = append(out, strings.ToLower(f))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), false
}

// InitialAge is RFC 9111 §4.2.3 corrected_initial_age from the Age and Date fields:
// max(apparent_age, Age + response_delay), where apparent_age = max(0, responseTime - Date) and
// response_delay = max(0, responseTime - requestTime). Age is read as RFC 9111 §5.1 says: of a
// list-based value ("5, 10", or several field lines) only the first member counts; that member
// must be delta-seconds (digits only: no sign, no fraction, no units), else the field is invalid
// and ignored, counting as 0 like a missing Age; a value beyond 2^31 seconds reads as MaxDelta.
// A missing or invalid Date gives apparent_age 0, and a Date ahead of our clock (skew) cannot
// make the age negative.
func InitialAge(respHeader http.Header, requestTime, responseTime time.Time) time.Duration {
	var apparent time.Duration
	if date := headerTime(respHeader, hdrDate, time.Time{}); !date.IsZero() {
		apparent = max(0, responseTime.Sub(date))
	}
	var age time.Duration
	if v := respHeader[hdrAge]; len(v) > 0 {
		first, _, _ := strings.Cut(v[0], ",")
		if a, ok := parseDelta(trimOWS(first)); ok {
			age = a
		}
	}
	delay := max(0, responseTime.Sub(requestTime))
	return clampLifetime(max(apparent, age+delay))
}

// CurrentAge = initialAge + (now - responseTime), never negative. A clock that stepped back
// (now before responseTime) adds nothing rather than making the copy younger.
func CurrentAge(initialAge time.Duration, responseTime, now time.Time) time.Duration {
	return max(0, initialAge) + max(0, now.Sub(responseTime))
}
