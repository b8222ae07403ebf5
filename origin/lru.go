package origin

import "iter"

// lru maps paths to values of type V and forgets the least recently used paths beyond a bound:
// at most maxLen entries and maxBytes of cost, an entry costing its path's length plus what
// its owner adds with setCost. It is what keeps the origin's memory bounded however many
// distinct paths clients ask for. It is not safe for concurrent use; its owner's mutex guards it.
type lru[V any] struct {
	maxLen, maxBytes int

	m     map[string]*lruEntry[V]
	root  lruEntry[V] // sentinel of the ring: root.next is the most recent, root.prev the least
	bytes int         // the sum of the entries' costs
}

type lruEntry[V any] struct {
	key        string
	val        V
	cost       int
	prev, next *lruEntry[V]
}

func newLRU[V any](maxLen, maxBytes int) *lru[V] {
	c := &lru[V]{maxLen: maxLen, maxBytes: maxBytes, m: map[string]*lruEntry[V]{}}
	c.root.prev, c.root.next = &c.root, &c.root
	return c
}

// len returns how many entries are kept.
func (c *lru[V]) len() int { return len(c.m) }

// peek returns key's entry, or nil, without counting it as used: for observers.
func (c *lru[V]) peek(key string) *lruEntry[V] { return c.m[key] }

// find returns key's entry, made the most recently used, or nil.
func (c *lru[V]) find(key string) *lruEntry[V] {
	e := c.m[key]
	if e != nil {
		c.moveToFront(e)
	}
	return e
}

// add returns key's entry, made the most recently used, creating it with the zero value if
// absent; a new entry may make the lru forget the least recently used others.
func (c *lru[V]) add(key string) *lruEntry[V] {
	if e := c.find(key); e != nil {
		return e
	}
	e := &lruEntry[V]{key: key, cost: len(key)}
	c.m[key] = e
	c.bytes += e.cost
	c.link(e)
	c.shrink(e)
	return e
}

// setCost sets what e costs besides its key, and forgets least recently used entries other
// than e while the total is over maxBytes.
func (c *lru[V]) setCost(e *lruEntry[V], extra int) {
	c.bytes += len(e.key) + extra - e.cost
	e.cost = len(e.key) + extra
	c.shrink(e)
}

// remove forgets e.
func (c *lru[V]) remove(e *lruEntry[V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(c.m, e.key)
	c.bytes -= e.cost
}

// clear forgets every entry.
func (c *lru[V]) clear() {
	clear(c.m)
	c.root.prev, c.root.next = &c.root, &c.root
	c.bytes = 0
}

// all yields every entry's key and value, most recently used first.
func (c *lru[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for e := c.root.next; e != &c.root; e = e.next {
			if !yield(e.key, e.val) {
				return
			}
		}
	}
}

// shrink forgets the least recently used entries while the lru is over a bound, but never
// keep: the entry just added or grown stays even if it alone is over maxBytes.
func (c *lru[V]) shrink(keep *lruEntry[V]) {
	for (len(c.m) > c.maxLen || c.bytes > c.maxBytes) && c.root.prev != keep {
		c.remove(c.root.prev)
	}
}

func (c *lru[V]) moveToFront(e *lruEntry[V]) {
	if c.root.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	c.link(e)
}

// link puts e at the front of the ring.
func (c *lru[V]) link(e *lruEntry[V]) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}
