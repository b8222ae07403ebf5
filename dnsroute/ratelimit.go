package dnsroute

import (
	"hash/maphash"
	"net/netip"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket (golang.org/x/time/rate) per client prefix (/24 or /56 of the
// source address), held in bounded LRUs: past the bound, the prefix that queried least
// recently is forgotten (its bucket would have refilled long ago), so a flood from spoofed
// prefixes costs bounded memory and never the bucket of a prefix that is being limited.
type rateLimiter struct {
	qps   rate.Limit
	burst int
	slip  int
	// shards split the LRUs so that UDP workers do not queue on one lock.
	shards [rlShards]*lru.Cache[netip.Prefix, *prefixLimiter]
}

// prefixLimiter is one prefix's bucket and its count of limited queries (for slip).
type prefixLimiter struct {
	lim     *rate.Limiter
	limited atomic.Uint64
}

// rlShards is the number of LRUs; maxBuckets bounds each.
const (
	rlShards   = 16
	maxBuckets = 1 << 14
)

var rlSeed = maphash.MakeSeed()

func newRateLimiter(c RateLimit) *rateLimiter { return newRateLimiterSized(c, maxBuckets) }

// newRateLimiterSized is newRateLimiter holding at most perShard prefixes per shard.
func newRateLimiterSized(c RateLimit, perShard int) *rateLimiter {
	if c.QPS <= 0 {
		return nil
	}
	// rate.Limiter counts whole tokens; a fractional burst allowed no more whole queries.
	r := &rateLimiter{qps: rate.Limit(c.QPS), burst: max(1, int(c.Burst)), slip: c.Slip}
	for i := range r.shards {
		// New fails only for a size below 1.
		r.shards[i], _ = lru.New[netip.Prefix, *prefixLimiter](max(1, perShard))
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
	sh := r.shards[maphash.Comparable(rlSeed, p)%rlShards]
	pl, ok := sh.Get(p)
	if !ok {
		// A new bucket starts full. Two workers racing on a new prefix keep the first one.
		fresh := &prefixLimiter{lim: rate.NewLimiter(r.qps, r.burst)}
		if prev, found, _ := sh.PeekOrAdd(p, fresh); found {
			pl = prev
		} else {
			pl = fresh
		}
	}
	if pl.lim.AllowN(now, 1) {
		return allow
	}
	n := pl.limited.Add(1)
	if r.slip > 0 && n%uint64(r.slip) == 0 {
		return slip
	}
	return drop
}
