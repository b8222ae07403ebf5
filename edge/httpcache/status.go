package httpcache

import (
	"strconv"
	"strings"
	"time"
)

// Status is one RFC 9211 Cache-Status list member.
type Status struct {
	Cache string // cache name, e.g. "meridian-lon-1"; emitted as a token, or as a string if it is not one
	Hit   bool   // served from cache without going forward
	// Fwd is why the request went forward: "", "miss", "stale", "uri-miss", "vary-miss",
	// "request", "bypass", "method"; omitted if empty, not a token, or Hit (RFC 9211: a hit was
	// not forwarded, so the two never appear together; a stale hit says so with a negative ttl).
	Fwd       string
	FwdStatus int           // status the next hop answered; 0 = omit
	TTL       time.Duration // remaining freshness; negative when stale; emitted in whole seconds if HasTTL
	HasTTL    bool
	Stored    bool   // the forwarded response was stored
	Collapsed bool   // the request was collapsed into another one's fill
	Key       string // optional, emitted as key="..." if non-empty
	Detail    string // optional, emitted as detail=token-or-string (e.g. "peer", "shield", "origin", "stale-if-error")
	// Proto is the protocol the request came over ("http/1.1", "h2", "h3"), emitted as the
	// extension parameter proto=token (RFC 9211 §2.8) if non-empty.
	Proto string
}

// String serialises s as a Structured Fields list member (RFC 8941), with "; " between
// parameters as in RFC 9211's examples, e.g. `meridian-lon-1; hit; ttl=118` or
// `meridian-lon-1; fwd=miss; fwd-status=200; stored; collapsed; detail=origin`. TTL is
// truncated toward zero to whole seconds.
func (s Status) String() string {
	var buf [128]byte // most values fit: the string is the only allocation
	return string(s.Append(buf[:0]))
}

// Append appends s, serialised as String does, to b.
func (s Status) Append(b []byte) []byte {
	b = appendTokenOrString(b, s.Cache)
	if s.Hit {
		b = append(b, "; hit"...)
	}
	if s.Fwd != "" && !s.Hit && isToken(s.Fwd) {
		b = append(append(b, "; fwd="...), s.Fwd...)
	}
	if s.FwdStatus != 0 {
		b = strconv.AppendInt(append(b, "; fwd-status="...), int64(s.FwdStatus), 10)
	}
	if s.HasTTL {
		const sfMax = 999_999_999_999_999 // largest Structured Fields integer
		secs := min(max(int64(s.TTL/time.Second), -sfMax), sfMax)
		b = strconv.AppendInt(append(b, "; ttl="...), secs, 10)
	}
	if s.Stored {
		b = append(b, "; stored"...)
	}
	if s.Collapsed {
		b = append(b, "; collapsed"...)
	}
	if s.Key != "" {
		b = appendSFString(append(b, "; key="...), s.Key)
	}
	if s.Detail != "" {
		b = appendTokenOrString(append(b, "; detail="...), s.Detail)
	}
	if s.Proto != "" && isToken(s.Proto) {
		b = append(append(b, "; proto="...), s.Proto...)
	}
	return b
}

// AppendStatus returns the new field value when this cache appends s after an upstream's
// Cache-Status value (RFC 9211: list order is from the origin outwards): "upstream, s", or just
// s when upstream is blank.
func AppendStatus(upstream string, s Status) string {
	var buf [128]byte
	return string(AppendStatusTo(buf[:0], upstream, s))
}

// AppendStatusTo appends AppendStatus(upstream, s) to b.
func AppendStatusTo(b []byte, upstream string, s Status) []byte {
	if upstream = strings.TrimRight(trimOWS(upstream), ","); upstream != "" {
		b = append(append(b, upstream...), ", "...)
	}
	return s.Append(b)
}

// isToken reports whether s is a Structured Fields token: ALPHA or "*", then tchar, ":" or "/".
func isToken(s string) bool {
	if s == "" || !(isAlpha(s[0]) || s[0] == '*') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isTchar(s[i]) && s[i] != ':' && s[i] != '/' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isTchar(c byte) bool {
	if isAlpha(c) || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// appendTokenOrString appends s as a Structured Fields token if it is one, else as a string.
func appendTokenOrString(b []byte, s string) []byte {
	if isToken(s) {
		return append(b, s...)
	}
	return appendSFString(b, s)
}

// appendSFString appends s as a Structured Fields string. Bytes outside printable ASCII, which
// an sf-string cannot hold, are written as %XX.
func appendSFString(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
