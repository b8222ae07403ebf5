package wire

import (
	"maps"
	"slices"
	"strings"
)

// CNAMELoops returns the loops among cnames (owner -> target, every name absolute and lower
// case), each as its names in order from its least one and back to that one, the loops ordered
// by their least names. A name that only leads into a loop is not on it; a chain that ends at
// a name without a CNAME, in the zone or outside it, is no loop. dnsroute and deploy refuse
// a config with a loop, as RFC 1034 section 3.6.2 calls loops an error.
func CNAMELoops(cnames map[string]string) [][]string {
	const (
		onPath = 1 // on the chain being followed
		done   = 2 // followed to its end or its loop from an earlier name
	)
	state := make(map[string]int, len(cnames))
	var loops [][]string
	for _, start := range slices.Sorted(maps.Keys(cnames)) {
		var path []string
		for n := start; ; n = cnames[n] {
			if _, ok := cnames[n]; !ok || state[n] == done {
				break
			}
			if state[n] == onPath {
				loop := path[slices.Index(path, n):]
				least := slices.Index(loop, slices.Min(loop))
				loop = append(slices.Clone(loop[least:]), loop[:least]...)
				loops = append(loops, append(loop, loop[0]))
				break
			}
			state[n] = onPath
			path = append(path, n)
		}
		for _, n := range path {
			state[n] = done
		}
	}
	slices.SortFunc(loops, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return loops
}
