package origin

import (
	"fmt"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Body returns the deterministic body of an object: the unit "<path>@v<version>:" repeated and cut
// to size bytes. A Vary variant's body is Body(VariantPath(path, ...), version, size).
func Body(path string, version, size int) []byte {
	if size <= 0 {
		return []byte{}
	}
	unit := path + "@v" + strconv.Itoa(version) + ":"
	b := make([]byte, size)
	n := copy(b, unit)
	for n < size {
		n += copy(b[n:], b[:n]) // doubling: O(log size) copies
	}
	return b
}

// VariantPath is the path Body is generated for when the response varies on fields: the path,
// then "|Field=value" for each field in order, with the request's values joined by ",".
// Without fields it is path itself.
func VariantPath(path string, fields []string, h http.Header) string {
	if len(fields) == 0 {
		return path
	}
	var sb strings.Builder
	sb.WriteString(path)
	for _, f := range fields {
		sb.WriteString("|")
		sb.WriteString(f)
		sb.WriteString("=")
		sb.WriteString(strings.Join(h.Values(f), ","))
	}
	return sb.String()
}

// ETag is the strong entity tag of the body Body(path, version, size), quoted.
func ETag(path string, version, size int) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s@v%d#%d", path, version, size)
	return fmt.Sprintf("%q", strconv.FormatUint(h.Sum64(), 16))
}

type bodyKey struct {
	path          string
	version, size int
}

// bodyCache keeps generated bodies so hot objects are not regenerated per request. It is bounded
// by total bytes; when full, arbitrary entries are evicted (map order), which is enough for a
// test origin.
type bodyCache struct {
	maxBytes, maxEntry int

	mu    sync.Mutex // guards m and bytes
	m     map[bodyKey][]byte
	bytes int
}

func newBodyCache(maxBytes, maxEntry int) *bodyCache {
	return &bodyCache{maxBytes: maxBytes, maxEntry: maxEntry, m: map[bodyKey][]byte{}}
}

// get returns Body(path, version, size), from the cache when possible. Callers must not modify it.
func (c *bodyCache) get(path string, version, size int) []byte {
	if size > c.maxEntry {
		return Body(path, version, size)
	}
	k := bodyKey{path, version, size}
	c.mu.Lock()
	b, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return b
	}
	b = Body(path, version, size)
	c.mu.Lock()
	defer c.mu.Unlock()
	for old, ob := range c.m {
		if c.bytes+size <= c.maxBytes {
			break
		}
		delete(c.m, old)
		c.bytes -= len(ob)
	}
	if _, ok := c.m[k]; !ok {
		c.m[k] = b
		c.bytes += size
	}
	return b
}
