package origin

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Body returns the deterministic body of an object: the unit "<path>@v<version>:" repeated and cut
// to size bytes. A Vary variant's body is Body(VariantPath(path, ...), version, size). For large
// sizes, OpenBody reads the same bytes without holding them.
func Body(path string, version, size int) []byte {
	if size <= 0 {
		return []byte{}
	}
	unit := unit(path, version)
	b := make([]byte, size)
	n := copy(b, unit)
	for n < size {
		n += copy(b[n:], b[:n]) // doubling: O(log size) copies
	}
	return b
}

func unit(path string, version int) string { return path + "@v" + strconv.Itoa(version) + ":" }

// unitLen is len(unit(path, version)), without building it.
func unitLen(path string, version int) int {
	var buf [20]byte
	return len(path) + len("@v:") + len(strconv.AppendInt(buf[:0], int64(version), 10))
}

// blockExtra is how far past one unit a BodyReader's prefix block reaches: every copy out of the
// block moves at least this many bytes.
const blockExtra = 64 << 10

// blockSize is the length of the prefix of Body(path, version, size) a BodyReader needs.
func blockSize(path string, version, size int) int {
	return min(size, unitLen(path, version)+blockExtra)
}

// OpenBody returns a reader of Body(path, version, size) that holds at most one unit plus 64 KiB
// of it, however large size is: the body repeats with the unit's length, so every offset can be
// copied from a short prefix.
func OpenBody(path string, version, size int) *BodyReader {
	size = max(size, 0)
	return newBodyReader(Body(path, version, blockSize(path, version, size)), unitLen(path, version), size)
}

// newBodyReader reads a body of size bytes with period period from block, a prefix of it of
// blockSize bytes.
func newBodyReader(block []byte, period, size int) *BodyReader {
	return &BodyReader{block: block, period: int64(period), size: int64(size)}
}

// BodyReader reads a generated body: an io.ReadSeeker (for http.ServeContent) and io.ReaderAt.
type BodyReader struct {
	block     []byte // a prefix of the body: all of it, or at least period+blockExtra bytes
	period    int64  // the unit's length: body[i] == body[i%period]
	size, off int64
}

// Size returns the body's length.
func (r *BodyReader) Size() int64 { return r.size }

// ReadAt reads len(p) bytes at off, or fewer and io.EOF at the end of the body.
func (r *BodyReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("origin body: negative offset")
	}
	n := 0
	for n < len(p) && off < r.size {
		src := off
		if src >= int64(len(r.block)) {
			src %= r.period // same byte, one period earlier
		}
		k := copy(p[n:min(int64(len(p)), int64(n)+r.size-off)], r.block[src:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *BodyReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *BodyReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, errors.New("origin body: seek before the start")
	}
	r.off = offset
	return offset, nil
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
// by total bytes and forgets the least recently used bodies first, so the hot ones stay.
type bodyCache struct {
	maxEntry int

	mu     sync.Mutex // guards bodies
	bodies *lru[bodyKey, []byte]
}

func newBodyCache(maxBytes, maxEntry int) *bodyCache {
	// Bounded by bytes alone: an entry costs its body and its path (entryCost).
	return &bodyCache{maxEntry: maxEntry, bodies: newLRU[bodyKey, []byte](math.MaxInt, maxBytes, bodyKeyCost)}
}

// get returns Body(path, version, size), from the cache when possible. Callers must not modify it.
// An entry costs its body and its path: a key is as long as the request's path (and, for a
// Vary variant, its header values), so counting bodies alone let many long paths with short
// bodies (size=0 costs nothing) grow the cache without bound.
func (c *bodyCache) get(path string, version, size int) []byte {
	if entryCost(path, size) > c.maxEntry {
		return Body(path, version, size)
	}
	k := bodyKey{path, version, size}
	c.mu.Lock()
	if e := c.bodies.find(k); e != nil { // a hit is a use
		b := e.val
		c.mu.Unlock()
		return b
	}
	c.mu.Unlock()
	b := Body(path, version, size)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bodies.peek(k) == nil { // another request may have generated it meanwhile
		e := c.bodies.add(k)
		e.val = b
		c.bodies.setCost(e, size)
	}
	return b
}

// entryCost is what a cached body counts against BodyCacheBytes: its bytes and its key's.
func entryCost(path string, size int) int { return len(path) + size }

// bodyKeyCost is what a body's key costs, the rest of entryCost being its size (setCost).
func bodyKeyCost(k bodyKey) int { return len(k.path) }
