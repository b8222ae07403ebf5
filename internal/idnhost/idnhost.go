// Package idnhost turns a hostname as an operator writes it, in Unicode ("bücher.example") or
// in ASCII, into the ASCII form clients send in Host and :authority ("xn--bcher-kva.example"),
// which is the form the edge serves and keys on.
package idnhost

import (
	"fmt"
	"strconv"
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
	if IsASCII(name) {
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

// Quote names, for an error, a host written as written and used as ascii (ToASCII's result):
// quoted like %q, and for a name written in Unicode followed by its ASCII form, so that the
// operator finds the name they wrote ("\"bücher.example\" (xn--bcher-kva.example)"). An ASCII
// name is named as used: it differs from what was written in case at most, as before.
func Quote(written, ascii string) string {
	if IsASCII(written) {
		return strconv.Quote(ascii)
	}
	return fmt.Sprintf("%q (%s)", written, ascii)
}

// Wrap returns err, a problem found with the ASCII form of a host written as written, naming
// the name as written first when that was Unicode: the ASCII form err names alone is not what
// the operator looks for. err is returned as it is for a name written in ASCII.
func Wrap(written string, err error) error {
	if err == nil || IsASCII(written) {
		return err
	}
	return fmt.Errorf("%q: %w", written, err)
}

// IsASCII reports whether s holds no byte above 0x7f: a name that needs no conversion.
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
