package wire

import (
	"errors"
	"net"
	"strconv"
	"strings"
)

// ValidHostPort reports whether addr is host:port with a port net.Listen and net.Dial take: a
// number from 0 to 65535 or a service name ("http", "domain"). net.SplitHostPort alone accepts
// any port, so ":99999" would pass a node's config and fail only when the node starts.
func ValidHostPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return false
	}
	if n, err := strconv.ParseUint(port, 10, 64); err == nil {
		return n <= 65535
	} else if errors.Is(err, strconv.ErrRange) {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// SamePort reports whether listening on a and on b would take the same port: the same non-zero
// port (a service name counts as its number), with the same host or either host unspecified. A
// server opening its listeners with SO_REUSEPORT binds both then, and the kernel splits the
// connections between them instead of refusing the second.
func SamePort(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return false
	}
	na, errA := net.LookupPort("tcp", pa)
	nb, errB := net.LookupPort("tcp", pb)
	if errA != nil || errB != nil || na == 0 || na != nb {
		return false
	}
	unspecified := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || (ip != nil && ip.IsUnspecified())
	}
	if unspecified(ha) || unspecified(hb) {
		return true
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	if ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return strings.EqualFold(ha, hb)
}
