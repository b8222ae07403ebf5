package dnsroute

import (
	"testing"

	"github.com/miekg/dns"
)

// The rcode label of meridian_dns_queries_total names each rcode the server answers with as
// DNS does: 16 is BADVERS in a header and an OPT (miekg/dns's table says BADSIG, TSIG's error
// of that number, which the server never sends).
func TestRcodeLabel(t *testing.T) {
	for _, tt := range []struct {
		rcode int
		want  string
	}{
		{dns.RcodeSuccess, "NOERROR"},
		{dns.RcodeFormatError, "FORMERR"},
		{dns.RcodeNameError, "NXDOMAIN"},
		{dns.RcodeNotImplemented, "NOTIMP"},
		{dns.RcodeRefused, "REFUSED"},
		{dns.RcodeBadVers, "BADVERS"},
		{4095, "other"},
	} {
		if got := rcodeLabel(tt.rcode); got != tt.want {
			t.Errorf("rcodeLabel(%d) = %q, want %q", tt.rcode, got, tt.want)
		}
	}
}
