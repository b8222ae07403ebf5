package idnhost

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestToASCII(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"www.example.com", "www.example.com", false},
		{"WWW.Example.COM", "www.example.com", false},
		{"a_b.example", "a_b.example", false},                    // ASCII: left to the caller's check
		{"xn--zz.example", "xn--zz.example", false},              // ASCII: not decoded
		{"bücher.example", "xn--bcher-kva.example", false},       // U-label
		{"BÜCHER.Example", "xn--bcher-kva.example", false},       // mapped to lower case
		{"bücher.example.", "xn--bcher-kva.example.", false},     // the root label stays
		{"ｂücher。example", "xn--bcher-kva.example", false},       // fullwidth letter, ideographic full stop
		{"bu\u0308cher.example", "xn--bcher-kva.example", false}, // NFC
		{"faß.de", "xn--fa-hia.de", false},                       // nontransitional: ß stays ß
		{"bücher.xn--bcher-kva.example", "xn--bcher-kva.xn--bcher-kva.example", false},
		{"b\u2028ücher.example", "", true},                     // disallowed code point
		{"a\u05d0.example", "", true},                          // bidi rule: LTR and RTL in one label
		{"a\u200db.example", "", true},                         // joiner rule: ZWJ not after a virama
		{"-bücher.example", "", true},                          // hyphen rule
		{"bücher.example:80", "", true},                        // STD3: no port
		{"\u00ad.example", "", true},                           // a label that maps to nothing
		{"bücher..example", "", true},                          // an empty label
		{"ü" + strings.Repeat("a", 60) + ".example", "", true}, // a label of 64 bytes once converted
		{strings.Repeat("ü.", 84) + "example", "", true},       // 259 bytes once converted
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ToASCII(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
					t.Fatalf("ToASCII(%q) = %q, %v; want an error naming it", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ToASCII(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestQuoteAndWrap(t *testing.T) {
	errBad := errors.New(`"xn--bcher-kva.example." is not a valid hostname`)
	tests := []struct {
		written, ascii string
		wantQuote      string
		wantWrap       string
	}{
		{"bücher.example.", "xn--bcher-kva.example.", `"bücher.example." (xn--bcher-kva.example.)`, `"bücher.example.": ` + errBad.Error()},
		{"WWW.Example.com", "www.example.com", `"www.example.com"`, errBad.Error()}, // ASCII: named as used, as before
	}
	for _, tt := range tests {
		t.Run(tt.written, func(t *testing.T) {
			if got := Quote(tt.written, tt.ascii); got != tt.wantQuote {
				t.Errorf("Quote(%q, %q) = %s, want %s", tt.written, tt.ascii, got, tt.wantQuote)
			}
			got := Wrap(tt.written, errBad)
			if got.Error() != tt.wantWrap || !errors.Is(got, errBad) {
				t.Errorf("Wrap(%q, err) = %v, want %s wrapping err", tt.written, got, tt.wantWrap)
			}
		})
	}
	if err := Wrap("bücher.example", nil); err != nil {
		t.Errorf("Wrap(bücher.example, nil) = %v, want nil", err)
	}
}
