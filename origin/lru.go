package origin

import "iter"

// lru maps keys (paths, or what a path names) to values of type V and forgets the least
// recently used keys beyond a bound: at most maxLen entries and maxBytes of cost, an entry
// costing keyCost of its key plus what its owner adds with setCost. It is what keeps the
// origin's memory bounded however many distinct paths clients ask for. It is not safe for
// concurrent use; its owner's mutex guards it.
type lru[K comparable, V any] struct {
	maxLen, maxBytes int
	keyCost          func(K) int

	m     map[K]*lruEntry[K, V]
	root  lruEntry[K, V] // sentinel of the ring: root.next is the most recent, root.prev the least
	bytes int            // the sum of the entries' costs
}

type lruEntry[K comparable, V any] struct {
	key        K
	val        V
	cost       int
	prev, next *lruEntry[K, V]
}

func newLRU[K comparable, V any](maxLen, maxBytes int, keyCost func(K) int) *lru[K, V] {
	c := &lru[K, V]{maxLen: maxLen, maxBytes: maxBytes, keyCost: keyCost, m: map[K]*lruEntry[K, V]{}}
	c.root.prev, c.root.next = &c.root, &c.root
	return c
}

// pathCost is what a path costs as a key: its bytes.
func pathCost(path string) int { return len(path) }

// len returns how many entries are kept.
func (c *lru[K, V]) len() int { return len(c.m) }

// peek returns key's entry, or nil, without counting it as used: for observers.
func (c *lru[K, V]) peek(key K) *lruEntry[K, V] { return c.m[key] }

// find returns key's entry, made the most recently used, or nil.
func (c *lru[K, V]) find(key K) *lruEntry[K, V] {
	e := c.m[key]
	if e != nil {
		c.moveToFront(e)
	}
	return e
}

// add returns key's entry, made the most recently used, creating it with the zero value if
// absent; a new entry may make the lru forget the least recently used others.
func (c *lru[K, V]) add(key K) *lruEntry[K, V] {
	if e := c.find(key); e != nil {
		return e
	}
	e := &lruEntry[K, V]{key: key, cost: c.keyCost(key)}
	c.m[key] = e
	c.bytes += e.cost
	c.link(e)
	c.shrink(e)
	return e
}

// setCost sets what e costs besides its key, and forgets least recently used entries other
// than e while the total is over maxBytes.
func (c *lru[K, V]) setCost(e *lruEntry[K, V], extra int) {
	cost := c.keyCost(e.key) + extra
	c.bytes += cost - e.cost
	e.cost = cost
	c.shrink(e)
}

// remove forgets e.
func (c *lru[K, V]) remove(e *lruEntry[K, V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(c.m, e.key)
	c.bytes -= e.cost
}

// clear forgets every entry.
func (c *lru[K, V]) clear() {
	clear(c.m)
	c.root.prev, c.root.next = &c.root, &c.root
	c.bytes = 0
}

// all yields every entry's key and value, most recently used first.
func (c *lru[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		for e := c.root.next; e != &c.root; e = e.next {
			if !yield(e.key, e.val) {
				return
			}
		}
	}
}

// shrink forgets the least recently used entries while the lru is over a bound, but never
// keep: the entry just added or grown stays even if it alone is over maxBytes.
func (c *lru[K, V]) shrink(keep *lruEntry[K, V]) {
	for (len(c.m) > c.maxLen || c.bytes > c.maxBytes) && c.root.prev != keep {
		c.remove(c.root.prev)
	}
}

func (c *lru[K, V]) moveToFront(e *lruEntry[K, V]) {
	if c.root.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	c.link(e)
}

// link puts e at the front of the ring.
func (c *lru[K, V]) link(e *lruEntry[K, V]) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}
