// Package idnhost turns a hostname as an operator writes it, in Unicode ("bücher.example") or
// in ASCII, into the ASCII form clients send in Host and :authority ("xn--bcher-kva.example"),
// which is the form the edge serves and keys on.
package idnhost

import (
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// ToASCII returns name with every Unicode label (U-label) converted to its ASCII form
// (A-label), in lower case. A name that is ASCII already is only lower-cased, so that names
// configured before keep their exact form and are checked by the caller's hostname rules as
// before (an xn-- label is not decoded); so does the trailing dot of a fully qualified name.
// A converted name is one a hostname check passes: letters, digits and hyphens (STD3 rules),
// no empty label, labels of at most 63 bytes, 253 in all.
//
// The conversion is UTS #46 ToASCII with the Lookup profile (nontransitional, STD3 rules,
// hyphen, joiner and bidi checks): it maps what a client maps before it sends a name (capitals,
// fullwidth forms, the ideographic full stop, NFC), so the name an operator types matches the
// Host that a browser sends for the same name. The Registration profile would refuse such
// input ("BÜCHER.example") instead of mapping it, and add no safety: what comes out is an
// ASCII name either way. Disallowed code points and bidi or joiner rule violations are errors
// naming name.
func ToASCII(name string) (string, error) {
	if isASCII(name) {
		return strings.ToLower(name), nil
	}
	a, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid internationalised hostname: %w", name, err)
	}
	// Lookup does not verify DNS lengths (Registration would, but maps nothing): a label
	// that maps to nothing ("\u00ad") or grows past 63 bytes is refused here, naming name as
	// given rather than its ASCII form.
	root := strings.TrimSuffix(a, ".")
	if len(root) > 253 {
		return "", fmt.Errorf("%q is not a valid internationalised hostname: its ASCII form is longer than 253 bytes", name)
	}
	for _, l := range strings.Split(root, ".") {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("%q is not a valid internationalised hostname: its ASCII form %q has an empty label or one longer than 63 bytes", name, a)
		}
	}
	return a, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
