package dnsroute

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// answerCache maps a cache key (see packetKey) to pre-packed replies.
type answerCache struct {
	max int
	mu  sync.RWMutex // guards m
	m   map[string]*entry
}

// entry is a cached reply in one or more rotations. Each variant is a complete packed reply
// whose ID, RD/CD flags, question name case and ECS address are patched per query.
type entry struct {
	variants [][]byte
	next     atomic.Uint32
	// ecsAddrLen is the length of the ECS address that ends every variant (0: no ECS).
	ecsAddrLen int
	// queries and answers are the metric children a hit increments.
	queries prometheus.Counter
	answers prometheus.Counter
}

func newAnswerCache(max int) *answerCache {
	return &answerCache{max: max, m: map[string]*entry{}}
}

func (c *answerCache) get(key []byte) *entry {
	c.mu.RLock()
	e := c.m[string(key)]
	c.mu.RUnlock()
	return e
}

func (c *answerCache) put(key []byte, e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Emptying a full cache is crude but bounded; the hot set refills in one TTL.
		c.m = map[string]*entry{}
	}
	c.m[string(key)] = e
}

func (c *answerCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// pick returns the next rotation of e.
func (e *entry) pick() []byte {
	if len(e.variants) == 1 {
		return e.variants[0]
	}
	return e.variants[int(e.next.Add(1)-1)%len(e.variants)]
}
