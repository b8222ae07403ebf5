package dnsroute

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a token bucket per client prefix (/24 or /56 of the source address).
type rateLimiter struct {
	qps, burst float64
	slip       int
	shards     [16]rlShard
}

type rlShard struct {
	mu sync.Mutex // guards m
	m  map[netip.Prefix]*bucket
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited uint64 // limited queries so far, for slip
}

// maxBuckets bounds each shard; past it, idle (full) buckets are forgotten.
const maxBuckets = 1 << 14

func newRateLimiter(c RateLimit) *rateLimiter {
	if c.QPS <= 0 {
		return nil
	}
	r := &rateLimiter{qps: c.QPS, burst: c.Burst, slip: c.Slip}
	for i := range r.shards {
		r.shards[i].m = map[netip.Prefix]*bucket{}
	}
	return r
}

// limitAction is what to do with a query.
type limitAction int

const (
	allow limitAction = iota
	drop
	slip // answer with an empty truncated reply
)

// take spends a token for src at now.
func (r *rateLimiter) take(src netip.Addr, now time.Time) limitAction {
	p := clientPrefix(src, netip.Prefix{})
	b := p.Addr().As16()
	h := b[3] ^ b[5] ^ b[6] ^ b[12] ^ b[13] ^ b[14]
	sh := &r.shards[h%byte(len(r.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	bk := sh.m[p]
	if bk == nil {
		if len(sh.m) >= maxBuckets {
			r.forgetIdleLocked(sh, now)
		}
		bk = &bucket{tokens: r.burst, last: now}
		sh.m[p] = bk
	}
	if el := now.Sub(bk.last).Seconds(); el > 0 {
		bk.tokens = min(r.burst, bk.tokens+el*r.qps)
		bk.last = now
	}
	if bk.tokens >= 1 {
		bk.tokens--
		return allow
	}
	bk.limited++
	if r.slip > 0 && bk.limited%uint64(r.slip) == 0 {
		return slip
	}
	return drop
}

// forgetIdleLocked drops buckets that have refilled; sh.mu must be held.
func (r *rateLimiter) forgetIdleLocked(sh *rlShard, now time.Time) {
	for p, bk := range sh.m {
		if bk.tokens+now.Sub(bk.last).Seconds()*r.qps >= r.burst {
			delete(sh.m, p)
		}
	}
	if len(sh.m) >= maxBuckets {
		sh.m = map[netip.Prefix]*bucket{}
	}
}
