package edge

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/wire"
)

// longName is a 253-character hostname (the longest), distinct for each i < 1000.
func longName(i int) string {
	return fmt.Sprintf("h%03d%s.%s.%s.%s", i, strings.Repeat("a", 59), strings.Repeat("b", 63), strings.Repeat("c", 63), strings.Repeat("d", 61))
}

// TestRegisteredHosts: the registration carries the file's host names sorted, once each, as
// many as fit wire.MaxNodeHostsBytes as JSON, and says which it left out; a registration with
// the most names it carries fits the fleet bucket's bound (NewRegistrar refuses one that may
// not).
func TestRegisteredHosts(t *testing.T) {
	hosts := func(names ...string) []wire.HostConfig {
		var out []wire.HostConfig
		for _, n := range names {
			out = append(out, wire.HostConfig{Host: n})
		}
		return out
	}
	var short, long []string
	for i := range 200 {
		short = append(short, fmt.Sprintf("host%03d.example.com", i)) // 19 characters
		long = append(long, longName(i))
	}
	for _, tt := range []struct {
		name       string
		file       []string
		want, left int
	}{
		{"none", nil, 0, 0},
		{"sorted, once each", []string{"b.example", "a.example", "b.example"}, 2, 0},
		{"short names past the bound", short, 93, 107},
		{"longest names past the bound", long, 7, 193},
	} {
		t.Run(tt.name, func(t *testing.T) {
			names, left := registeredHosts(hosts(tt.file...))
			if len(names) != tt.want || len(left) != tt.left {
				t.Fatalf("registered %d, left out %d; want %d, %d", len(names), len(left), tt.want, tt.left)
			}
			all := slices.Sorted(slices.Values(tt.file))
			if got := slices.Concat(names, left); !slices.Equal(got, slices.Compact(all)) {
				t.Errorf("registered then left out %q, want the file's names sorted once each %q", got, slices.Compact(all))
			}
			if b, _ := json.Marshal(names); len(b) > wire.MaxNodeHostsBytes {
				t.Errorf("registered names take %d bytes as JSON, more than %d", len(b), wire.MaxNodeHostsBytes)
			}
			// The ids and addresses at their longest (a DNS label, the longest IPv6 text),
			// with 256 bytes each of region and city and 128 of version (NewRegistrar takes the
			// load report at its longest).
			label, v6 := strings.Repeat("x", 63), "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
			if _, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: &natstest.LoseAnswer{}, Node: wire.Node{PoP: label, ID: label,
				Region: strings.Repeat("r", 256), City: strings.Repeat("c", 256), IPv4: "255.255.255.255", IPv6: v6,
				HTTPAddr: "[" + v6 + "]:65535", HTTPSAddr: "[" + v6 + "]:65535", AdminAddr: "[" + v6 + "]:65535",
				Version: strings.Repeat("v", 128), Capacity: 1e9, PurgeMaxLag: wire.MaxPurgeMaxLag, Hosts: names}}); err != nil {
				t.Errorf("a registration with the registered names: %v", err)
			}
		})
	}
}
