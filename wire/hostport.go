package wire

import (
	"errors"
	"net"
	"strconv"
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
