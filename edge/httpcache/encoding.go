package httpcache

import (
	"slices"
	"strings"
)

// Codings are the content codings the edge serves, in the server's order of preference: the
// values NormalizeAcceptEncoding returns, besides "" (identity).
var Codings = []string{"br", "zstd", "gzip"}

// NormalizeAcceptEncoding maps a request's Accept-Encoding field lines (RFC 9110 §12.5.3) to the
// coding the edge should serve: "br", "zstd", "gzip", or "" for identity.
//
// The field is a list of codings, each with an optional weight `;q=` (0 to 1, at most three
// decimals); names are case-insensitive, "x-gzip" is "gzip", and whitespace around ',' and ';'
// is allowed. `*` stands for every coding not listed, and q=0 means "not acceptable". The choice:
//
//   - the acceptable coding (q > 0) of Codings with the highest weight wins; equal weights go to
//     the server's order: br, then zstd, then gzip. So "gzip, br", "BR;q=1.0, gzip;q=0.5" and
//     "gzip;q=1, br" give "br", "*" gives "br", "br;q=0, *" gives "zstd", but
//     "gzip;q=1, br;q=0.5" gives "gzip": an explicit client preference is honoured.
//   - identity is chosen ("") when no coding of Codings is acceptable, or when identity itself
//     (explicitly, or through `*`) weighs more than the best of them: "identity, gzip;q=0.5".
//   - an absent field gives "": RFC 9110 allows any coding then, but clients that send none
//     (scripts, health checks) rarely decode one, and nginx and Varnish do the same. An empty
//     field, "identity", "deflate" or "identity;q=0" alone give "" too; the edge never answers 415.
//   - a malformed element (an invalid name, weight or parameter) is ignored, as if absent.
func NormalizeAcceptEncoding(values []string) string {
	best, bestQ := "", -1
	identityQ, starQ := -1, -1   // -1: not listed
	listed := [3]int{-1, -1, -1} // weight of each of Codings, -1 when not listed
	for _, v := range values {
		for elem := range strings.SplitSeq(strings.TrimSpace(v), ",") {
			name, q, ok := parseCoding(elem)
			if !ok {
				continue
			}
			switch name {
			case "identity":
				identityQ = q
			case "*":
				starQ = q
			default:
				if i := slices.Index(Codings, name); i >= 0 {
					listed[i] = q
				}
			}
		}
	}
	for i, c := range Codings {
		q := listed[i]
		if q < 0 {
			q = starQ
		}
		if q > 0 && q > bestQ {
			best, bestQ = c, q
		}
	}
	if identityQ < 0 && starQ >= 0 {
		identityQ = starQ
	}
	if best != "" && identityQ > bestQ {
		return ""
	}
	return best
}

// AcceptsEncoding reports whether a client sending these Accept-Encoding field lines accepts a
// response in coding ("" or "identity" for none; names are case-insensitive, "x-gzip" is "gzip"):
// the coding is listed with q > 0, or not listed and `*` is (with q > 0); identity is acceptable
// unless refused by "identity;q=0" or by "*;q=0" without it. With no field at all, every coding
// is acceptable (RFC 9110 §12.5.3), though NormalizeAcceptEncoding chooses identity then. Malformed
// elements are ignored, as in NormalizeAcceptEncoding.
func AcceptsEncoding(values []string, coding string) bool {
	if len(values) == 0 {
		return true
	}
	if coding == "" {
		coding = "identity"
	}
	coding = codingName(coding)
	q, starQ := -1, -1
	for _, v := range values {
		for elem := range strings.SplitSeq(strings.TrimSpace(v), ",") {
			name, w, ok := parseCoding(elem)
			switch {
			case !ok:
			case name == coding:
				q = w
			case name == "*":
				starQ = w
			}
		}
	}
	switch {
	case q >= 0:
		return q > 0
	case starQ >= 0:
		return starQ > 0
	}
	return coding == "identity"
}

// CanonicalAcceptEncoding rewrites Accept-Encoding field lines into one canonical field value
// with the same meaning, so that spellings that accept exactly the same codings compare equal:
// VaryKey keys Accept-Encoding on it. "gzip, br", "br,gzip", "BR;q=1.0, gzip;q=0.5",
// "gzip;q=1, br" and "br , x-gzip" all give "br, gzip".
//
// The canonical value lists the acceptable codings (q > 0) lower-cased and sorted, without
// weights, each once. With an acceptable `*` it is "*" followed by the codings refused with
// "coding;q=0". "identity;q=0" ends it when identity is not acceptable (refused explicitly, or
// by "*;q=0" without an acceptable "identity"). Weights between 0 and 1 are dropped: two
// clients whose values differ only in weights accept the same codings, so a response chosen
// for one is acceptable to the other, whichever coding the origin picked. That is what makes
// sharing a variant safe while the edge still forwards the client's own field to the origin.
// Once the edge forwards NormalizeAcceptEncoding's choice instead, the keys fall to four.
//
// ok is false when the value is malformed (an invalid name, weight or parameter, or a coding
// listed twice): origins may read such a value in different ways, so it must not share a
// variant with a well-formed one; VaryKey then keys on the value read as a list (only its
// whitespace and empty elements go), which is never equal to a canonical one: a list form that
// is a canonical form would be well-formed. An empty (or all-empty-elements) value gives "",
// true.
func CanonicalAcceptEncoding(values []string) (string, bool) {
	b, ok := appendCanonicalAcceptEncoding(nil, values)
	return string(b), ok
}

// appendCanonicalAcceptEncoding appends CanonicalAcceptEncoding(values) to dst. When !ok, dst is
// returned unchanged.
func appendCanonicalAcceptEncoding(dst []byte, values []string) ([]byte, bool) {
	type coding struct {
		name string // lower-case
		q    int
	}
	var stack [12]coding
	codings := stack[:0]
	identityQ, starQ := -1, -1
	for _, v := range values {
		for elem := range strings.SplitSeq(strings.TrimSpace(v), ",") {
			if strings.Trim(elem, " \t") == "" {
				continue // empty list elements are allowed (RFC 9110 §5.6.1)
			}
			name, q, ok := parseCoding(elem)
			if !ok {
				return dst, false
			}
			switch name {
			case "identity":
				if identityQ >= 0 {
					return dst, false
				}
				identityQ = q
			case "*":
				if starQ >= 0 {
					return dst, false
				}
				starQ = q
			default:
				if slices.ContainsFunc(codings, func(c coding) bool { return c.name == name }) {
					return dst, false
				}
				codings = append(codings, coding{name, q})
			}
		}
	}
	slices.SortFunc(codings, func(a, b coding) int { return strings.Compare(a.name, b.name) })
	identity := identityQ > 0 || identityQ < 0 && starQ != 0
	n := len(dst)
	sep := func() {
		if len(dst) > n {
			dst = append(dst, ", "...)
		}
	}
	if starQ > 0 {
		dst = append(dst, '*')
		for _, c := range codings {
			if c.q == 0 {
				sep()
				dst = append(dst, c.name...)
				dst = append(dst, ";q=0"...)
			}
		}
	} else {
		for _, c := range codings {
			if c.q > 0 {
				sep()
				dst = append(dst, c.name...)
			}
		}
	}
	if !identity {
		sep()
		dst = append(dst, "identity;q=0"...)
	}
	return dst, true
}

// parseCoding parses one element of Accept-Encoding: codings [ OWS ";" OWS "q=" qvalue ]. It
// returns the lower-cased name ("x-gzip" folded to "gzip", "x-compress" to "compress") and the
// weight in thousandths (1000 when absent). ok is false for an empty or malformed element.
func parseCoding(elem string) (name string, q int, ok bool) {
	elem = strings.Trim(elem, " \t")
	raw, param, hasParam := strings.Cut(elem, ";")
	raw = strings.TrimRight(raw, " \t")
	if raw != "*" && !isCodingToken(raw) {
		return "", 0, false
	}
	q = 1000
	if hasParam {
		param = strings.Trim(param, " \t")
		if len(param) < 2 || param[0]|0x20 != 'q' || param[1] != '=' {
			return "", 0, false
		}
		if q, ok = parseQValue(param[2:]); !ok {
			return "", 0, false
		}
	}
	return codingName(raw), q, true
}

// parseQValue parses an RFC 9110 §12.4.2 qvalue: ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ),
// in thousandths.
func parseQValue(s string) (int, bool) {
	if s == "" || s[0] != '0' && s[0] != '1' {
		return 0, false
	}
	q := int(s[0]-'0') * 1000
	if len(s) == 1 {
		return q, true
	}
	if s[1] != '.' || len(s) > 5 {
		return 0, false
	}
	scale := 100
	for i := 2; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' || q == 1000 && c != '0' {
			return 0, false
		}
		q += int(c-'0') * scale
		scale /= 10
	}
	return q, true
}

// codingName lower-cases a coding name without allocating for the common ones and folds the
// "x-" aliases RFC 9110 §8.4.1 asks recipients to treat as equivalent.
func codingName(raw string) string {
	for _, c := range [...]string{"br", "zstd", "gzip", "deflate", "compress", "identity", "*", "dcb", "dcz"} {
		if strings.EqualFold(raw, c) {
			return c
		}
	}
	switch {
	case strings.EqualFold(raw, "x-gzip"):
		return "gzip"
	case strings.EqualFold(raw, "x-compress"):
		return "compress"
	}
	return strings.ToLower(raw)
}

// isCodingToken reports whether s is an RFC 9110 token, the syntax of a content-coding name.
func isCodingToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}
