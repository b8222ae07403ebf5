package httpcache

// sfKind classifies a Structured Fields member value by what a targeted cache-control directive
// may take (RFC 9213 §2.1).
type sfKind uint8

const (
	sfOther   sfKind = iota // any other type: Token, Decimal, Byte Sequence, Date, inner list, ...
	sfTrue                  // Boolean true, including a key without a value
	sfFalse                 // Boolean false
	sfInteger               // Integer
	sfString                // String
)

// maxTargetedMembers bounds the distinct directives kept from one targeted field; later ones are
// ignored. Real fields carry a handful.
const maxTargetedMembers = 32

// ParseTargetedCacheControl parses the field lines of a targeted cache-control field such as
// CDN-Cache-Control (RFC 9213 §2.1): a Structured Fields Dictionary (RFC 8941 §3.2, with the
// types of RFC 9651) whose members are cache directives. ok is false, and d zero, when the field
// is empty or is not a valid Dictionary: RFC 9213 says the cache then ignores it and falls back
// to the other cache-control mechanisms.
//
// Directive values are read by their Structured Fields type: a directive without a value (or
// ?1) is set and ?0 leaves it unset; delta-seconds directives take a non-negative Integer
// (clamped at MaxDelta); no-cache and private take a String of field names for their qualified
// forms. Other values are not consumed ("SHOULD NOT consume values that violate these inferred
// constraints"), except by restrictive directives, which fail safe (see applyTargeted); a
// max-age or s-maxage not consumed sets InvalidMaxAge, as an invalid one in Cache-Control does.
// Parameters are ignored. For a key given twice the last member wins, as for any Dictionary. At
// most maxTargetedMembers distinct keys are read.
func ParseTargetedCacheControl(values []string) (d Directives, ok bool) {
	p := sfParser{s: joinFieldLines(values)}
	if p.s == "" {
		return Directives{}, false
	}
	type member struct {
		key  string
		kind sfKind
		val  string
	}
	var buf [maxTargetedMembers]member
	members := buf[:0]
	for {
		start := p.s
		if !p.key() {
			return Directives{}, false
		}
		m := member{key: start[:len(start)-len(p.s)], kind: sfTrue}
		if p.s != "" && p.s[0] == '=' {
			p.s = p.s[1:]
			var valid bool
			if m.kind, m.val, valid = p.typedMember(); !valid {
				return Directives{}, false
			}
		} else if !p.params() {
			return Directives{}, false
		}
		replaced := false
		for i := range members {
			if members[i].key == m.key {
				members[i], replaced = m, true
				break
			}
		}
		if !replaced && len(members) < cap(members) {
			members = append(members, m)
		}
		p.skipOWS()
		if p.s == "" {
			break
		}
		if p.s[0] != ',' {
			return Directives{}, false
		}
		p.s = p.s[1:]
		p.skipOWS()
		if p.s == "" {
			return Directives{}, false // trailing comma
		}
	}
	for _, m := range members {
		d.applyTargeted(m.key, m.kind, m.val)
	}
	return d, true
}

// typedMember parses an item or inner list with its parameters and classifies it; val is the
// Integer's digits or the String's unescaped content.
func (p *sfParser) typedMember() (kind sfKind, val string, ok bool) {
	if p.s == "" {
		return sfOther, "", false
	}
	if p.s[0] == '(' {
		_, _, ok = p.member()
		return sfOther, "", ok
	}
	start := p.s
	str, isStr, ok := p.bareItem()
	if !ok {
		return sfOther, "", false
	}
	raw := start[:len(start)-len(p.s)]
	switch c := raw[0]; {
	case isStr:
		kind, val = sfString, str
	case c == '-' || '0' <= c && c <= '9':
		kind, val = sfInteger, raw
		for i := 0; i < len(raw); i++ {
			if raw[i] == '.' {
				kind, val = sfOther, ""
				break
			}
		}
	case raw == "?1":
		kind = sfTrue
	case raw == "?0":
		kind = sfFalse
	}
	if !p.params() {
		return sfOther, "", false
	}
	return kind, val, true
}

// applyTargeted records one targeted directive whose value has the given type. A value of a
// type the directive does not take is dropped, except that the restrictive directives (no-store,
// no-cache, private, must-revalidate, proxy-revalidate) still count, unqualified: reading
// "no-store=1" as no-store fails safe, reading it as absent could store what must not be.
func (d *Directives) applyTargeted(name string, kind sfKind, val string) {
	if kind == sfFalse {
		return
	}
	switch name {
	case "max-age", "s-maxage":
		if kind == sfInteger {
			d.apply(name, val, true)
		} else {
			// Not consumed, but invalid freshness, as max-age="60" or 1.5 is in Cache-Control
			// (and -1 here, which apply reads): no heuristic lifetime either.
			d.InvalidMaxAge = true
		}
	case "stale-while-revalidate", "stale-if-error", "min-fresh":
		if kind == sfInteger {
			d.apply(name, val, true)
		}
	case "max-stale":
		switch kind {
		case sfTrue:
			d.apply(name, "", false)
		case sfInteger:
			d.apply(name, val, true)
		}
	case "no-cache", "private":
		if kind == sfString {
			d.apply(name, val, true)
		} else {
			d.apply(name, "", false)
		}
	case "no-store", "must-revalidate", "proxy-revalidate":
		d.apply(name, "", false)
	default:
		if kind == sfTrue {
			d.apply(name, "", false)
		}
	}
}

// joinFieldLines combines field lines with commas, as RFC 9110 §5.3 does, trimming each and
// skipping empty ones. A single non-empty line is returned without allocating.
func joinFieldLines(values []string) string {
	var s string
	for _, v := range values {
		if v = trimOWS(v); v == "" {
			continue
		}
		if s != "" {
			s += ","
		}
		s += v
	}
	return s
}
