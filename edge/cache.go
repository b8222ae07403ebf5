package edge

import (
	"net/http"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
)

// serveCacheable runs the cache pipeline for GET and HEAD: lookup, then deliver a fresh hit,
// serve stale while revalidating, revalidate, or fill.
func (n *Node) serveCacheable(w *logWriter, req *request) {
	r := req.r
	if cookiePass(req) || wantsEventStream(r) {
		// Cookies passed (the host asks for it) and event streams are the client's own
		// exchange with the origin: never served from cache, never stored.
		n.pass(w, req)
		return
	}
	// cookies: strip. The Cookie never reaches a fill, so it cannot select a variant either.
	delete(r.Header, "Cookie")
	req.coding = normalizeAcceptEncoding(req)
	cc := httpcache.ParseCacheControl(r.Header["Cache-Control"])
	if req.fromPeer && cc.HasMaxAge {
		// The bound goes on with this node's own fill (fillCacheControl).
		req.maxAge, req.hasMaxAge = cc.MaxAge, true
	}
	fl := n.fill
	if fieldValue(r.Header, "Authorization") != "" {
		// Authenticated requests bypass the shared tiers; the response is stored only if it
		// says it may be shared (RFC 9111 §3.5), which fill checks.
		n.deliverAnswer(w, req, fl.get(req, nil, fillOptions{direct: true}))
		return
	}
	// Nothing since the request's start has waited, so a lookup is judged at that reading of
	// the clock, microseconds old, rather than another (issue 15); but caughtUp may wait.
	now, atStart := w.start, true
	if req.needSeq > 0 {
		if !n.caughtUp(r, req.needSeq) {
			// A peer has applied purges this node has not: nothing in the cache may be
			// trusted for it, so fetch from upstream (see purgeorder.go).
			if cc.OnlyIfCached {
				n.fail(w, req, http.StatusGatewayTimeout, "purges behind")
				w.cacheStatus = "miss"
				return
			}
			n.deliverAnswer(w, req, fl.get(req, nil, fillOptions{fwd: "request", behind: true}))
			return
		}
		now, atStart = n.clock(), false
	}
	req.puts = n.store.Puts(req.key) // before the lookup: a Put after it changes the count
	obj, verdict, vary := n.store.LookupVary(req.key, req)
	if obj == nil {
		req.looked = true
		if cc.OnlyIfCached {
			n.fail(w, req, http.StatusGatewayTimeout, "not cached")
			w.cacheStatus = "miss"
			return
		}
		fwd := "miss"
		if vary != nil && verdict != store.Purged {
			// A variant of the URL is stored, but not the request's. A purged copy's Vary
			// comes with it too: the request's variant was stored, and is purged (a miss).
			fwd = "vary-miss"
		}
		n.deliverAnswer(w, req, fl.get(req, nil, fillOptions{fwd: fwd}))
		return
	}
	obj = n.revalidateWhileLagging(obj) // purge rule 5: behind the purge stream nothing is fresh
	ttl := obj.TTL(now)
	// A fleet node that invalidated the URL asks for nothing older than that (invalidations.go):
	// an older copy is revalidated.
	tooOld := req.hasMaxAge && obj.Age(now) > req.maxAge
	if !tooOld && freshHit(obj, verdict, ttl) {
		w.cacheStatus = "hit"
		req.ageAtStart = atStart
		n.deliver(w, req, obj, httpcache.Status{Cache: n.name, Proto: req.proto, Hit: true, TTL: ttl, HasTTL: true}, "")
		return
	}
	if cc.OnlyIfCached {
		// A fleet node asking for any copy gets this one and judges it by its Age; a client
		// gets only fresh content.
		if req.fromPeer {
			w.cacheStatus = "stale"
			req.ageAtStart = atStart
			n.deliver(w, req, obj, httpcache.Status{Cache: n.name, Proto: req.proto, Hit: true, TTL: ttl, HasTTL: true, Detail: "only-if-cached"}, "")
			return
		}
		n.fail(w, req, http.StatusGatewayTimeout, "not fresh in cache")
		w.cacheStatus = "miss"
		return
	}
	staleFor := -ttl
	// A fleet node asking is revalidating or filling: a stale copy would be stored there as
	// fresh (a soft purge leaves no trace in the headers), so it gets a revalidated answer.
	// A Doubtful copy (purges were missed) may have been hard-purged: revalidated first.
	if !req.fromPeer && verdict != store.Doubtful && canServeStale(obj, verdict, staleFor, obj.Policy.StaleWhileRevalidate) {
		w.cacheStatus = "stale"
		fl.revalidate(req, obj)
		req.ageAtStart = atStart
		// A copy stale only by a soft purge or no-cache still has freshness by age; RFC 9211's
		// ttl says it is stale: at most 0.
		n.deliver(w, req, obj, httpcache.Status{Cache: n.name, Proto: req.proto, Hit: true, TTL: min(ttl, 0), HasTTL: true, Detail: "stale-while-revalidate"}, "")
		return
	}
	n.deliverAnswer(w, req, fl.get(req, obj, fillOptions{fwd: "stale", verdict: verdict}))
}

// freshHit reports whether obj, found with verdict and ttl left, is served as a hit.
func freshHit(obj *store.Object, verdict store.Verdict, ttl time.Duration) bool {
	return ttl > 0 && verdict == store.Usable && !obj.Policy.NoCache
}

// storedFresh returns req's object when the store holds it fresh now (serveCacheable would
// serve it as a hit), else nil. A request whose lookup found nothing, with no Put of its key
// since, is answered without a second lookup: a Ristretto probe of a large table costs a miss
// about a microsecond (docs/benchmarks.md, "Twenty-eighth pass").
func (n *Node) storedFresh(req *request) *store.Object {
	if req.looked && n.store.Puts(req.key) == req.puts {
		return nil
	}
	obj, verdict, _ := n.store.LookupVary(req.key, req)
	if obj == nil {
		return nil
	}
	obj = n.revalidateWhileLagging(obj)
	if !freshHit(obj, verdict, obj.TTL(n.clock())) {
		return nil
	}
	return obj
}

// canServeStale reports whether obj, stale for staleFor, may still be served within window
// (a stale-while-revalidate or stale-if-error window). httpcache already zeroes the windows
// where must-revalidate, proxy-revalidate or no-cache forbid stale; a soft purge allows it
// (that is what makes it soft).
func canServeStale(obj *store.Object, v store.Verdict, staleFor, window time.Duration) bool {
	if v == store.Purged || window <= 0 {
		return false
	}
	if staleFor < 0 { // fresh by age but soft-purged or no-cache: stale from now on
		staleFor = 0
	}
	return staleFor <= window
}
