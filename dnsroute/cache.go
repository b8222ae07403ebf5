package dnsroute

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// answerCache maps a cache key (see appendKey) to pre-packed replies, holding at most max
// entries and evicting the least recently used: the hot set of (name, type, client prefix)
// stays while one-off prefixes (scans, spoofed floods) age out, instead of a full cache
// emptying itself.
//
// It is golang-lru (hashicorp/golang-lru/v2) rather than Ristretto: a fleet change that
// alters answers replaces the whole cache, which for golang-lru is a small allocation and for
// Ristretto a set of goroutines and counters to start and close under live readers; entries
// are uniform (a few hundred bytes), so Ristretto's cost-based admission buys nothing; and an
// Add here is visible to the next Get, where Ristretto's buffered Set may land late or not at
// all. golang-lru's Get takes a mutex (it moves the entry to the front), so the cache is split
// into shards by key hash, and a hit reads with Peek (a read lock) and moves its entry to the
// front at most once per promoteEvery: every UDP worker serving the same popular answer
// would otherwise queue on that answer's shard lock.
type answerCache struct {
	shards [cacheShards]cacheShard
}

// cacheShard is one LRU and the bytes its entries hold (entry.cost). A shard over its share
// of cache_bytes evicts its least recently used entries: an entry's size depends on its
// name (up to 255 bytes) and its PoP (a reply per rotation turn, up to 16), so a bound on
// entries alone let a flood of long random names under a wildcard zone hold some 50 times the
// memory typical answers do.
type cacheShard struct {
	*lru.Cache[uint64, *entry]
	mu    sync.Mutex // serialises puts, so that bytes follows every add and eviction
	bytes atomic.Int64
	max   int64
}

// cacheShards is the number of independent LRUs; a power of two.
const cacheShards = 16

// promoteEvery is how often a hit moves its entry to the front of its LRU, in nanoseconds: the
// recency the eviction order sees is that coarse, which is fine for answers that live a TTL.
const promoteEvery = int64(time.Second)

// keySeed seeds the key hash; the map is keyed by the hash (no string allocated per lookup)
// and each entry keeps its key to rule out collisions.
var keySeed = maphash.MakeSeed()

// entry is a cached reply in one or more rotation turns. Each variant is a complete packed
// reply whose ID, RD/CD flags, question name case and ECS address are patched per query.
type entry struct {
	key      []byte
	variants [][]byte
	next     atomic.Uint32
	// rot, when set, rotates the one variant's addresses, whose RDATA start at byte at and
	// every step bytes: a hit writes the next turn's into its copy (rotate). See maxVariants.
	// (Offsets inline, not a slice: the entry stays in the allocator's 128-byte class.)
	at, step uint16
	rot      *rotation
	// ecsAddrLen is the length of the ECS address that ends every variant (0: no ECS).
	ecsAddrLen int
	// touched is when the entry last moved to the front of its LRU (Unix nanoseconds).
	touched atomic.Int64
	// slot and gen are the latency map generation slot of the client's network and its
	// generation when the reply was routed: a later generation means the network's
	// measurements changed and the reply may be wrong.
	slot, gen uint32
	// queries and answers are the metric children a hit increments.
	queries prometheus.Counter
	answers prometheus.Counter
	// cost is what the entry holds in bytes, counted against cache_bytes (set by put).
	cost int64
}

// entryOverhead is an entry's memory besides its key and replies: the struct (the
// allocator's 128-byte class), the LRU's element and map slot, and a variant's slice header.
const entryOverhead = 128 + 96

func newAnswerCache(entries int, bytes int64) *answerCache {
	c := &answerCache{}
	per := max(1, (entries+cacheShards-1)/cacheShards)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.max = max(1, bytes/cacheShards)
		// NewWithEvict fails only for a size below 1. The callback runs inside Add and
		// RemoveOldest, which run under sh.mu.
		sh.Cache, _ = lru.NewWithEvict(per, func(_ uint64, e *entry) { sh.bytes.Add(-e.cost) })
	}
	return c
}

func (c *answerCache) shard(h uint64) *cacheShard {
	return &c.shards[h>>60%cacheShards]
}

// get returns the entry under key at now (Unix nanoseconds), nil when there is none.
func (c *answerCache) get(key []byte, now int64) *entry {
	h := maphash.Bytes(keySeed, key)
	sh := c.shard(h)
	e, ok := sh.Peek(h)
	if !ok || !bytes.Equal(e.key, key) {
		return nil
	}
	if t := e.touched.Load(); now-t >= promoteEvery && e.touched.CompareAndSwap(t, now) {
		sh.Get(h) // moves it to the front
	}
	return e
}

// put stores e under key at now, evicting the least recently used entries of its shard while
// it holds more than its share of entries or bytes.
func (c *answerCache) put(key []byte, e *entry, now int64) {
	e.key = bytes.Clone(key)
	e.touched.Store(now)
	e.cost = int64(entryOverhead + len(key))
	for _, v := range e.variants {
		e.cost += int64(len(v) + 24)
	}
	h := maphash.Bytes(keySeed, key)
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.Peek(h); ok {
		sh.bytes.Add(-old.cost) // replaced: Add calls no eviction callback for it
	}
	sh.Add(h, e)
	sh.bytes.Add(e.cost)
	for sh.bytes.Load() > sh.max && sh.Len() > 1 {
		sh.RemoveOldest()
	}
}

// size returns the bytes the entries hold (entry.cost).
func (c *answerCache) size() int64 {
	var n int64
	for i := range c.shards {
		n += c.shards[i].bytes.Load()
	}
	return n
}

func (c *answerCache) len() int {
	n := 0
	for i := range c.shards {
		n += c.shards[i].Len()
	}
	return n
}

// pick returns the next rotation turn of e, or with rot its one variant (see rotate).
func (e *entry) pick() []byte {
	if len(e.variants) == 1 {
		return e.variants[0]
	}
	return e.variants[int(e.next.Add(1)-1)%len(e.variants)]
}

// rotate writes the addresses of e's next turn into out, a copy of e's variant; e.rot is set.
func (e *entry) rotate(out []byte) {
	e.rot.write(out, e.at, e.step, e.next.Add(1)-1)
}
