package edge

import (
	"context"
	"net/http"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
)

// serveCacheable runs the cache pipeline for GET and HEAD: lookup, then deliver a fresh hit,
// serve stale while revalidating, revalidate, or fill.
func (n *Node) serveCacheable(w *logWriter, req *request) {
	r := req.r
	cc := httpcache.ParseCacheControl(r.Header["Cache-Control"])
	if r.Header.Get("Authorization") != "" {
		// Authenticated requests bypass the shared tiers; the response is stored only if it
		// says it may be shared (RFC 9111 §3.5), which fill checks.
		n.fillAndDeliver(w, req, nil, fillOptions{direct: true})
		return
	}
	if req.needSeq > 0 && !n.caughtUp(r, req.needSeq) {
		// A peer has applied purges this node has not: nothing in the cache may be trusted
		// for it, so fetch from upstream (see purgeorder.go).
		if cc.OnlyIfCached {
			n.fail(w, req, http.StatusGatewayTimeout, "purges behind")
			w.cacheStatus = "miss"
			return
		}
		n.fillAndDeliver(w, req, nil, fillOptions{fwd: "request", behind: true})
		return
	}
	obj, verdict, vary := n.store.Lookup(req.key, r.Header)
	now := n.clock()
	if obj == nil {
		if cc.OnlyIfCached {
			n.fail(w, req, http.StatusGatewayTimeout, "not cached")
			w.cacheStatus = "miss"
			return
		}
		fwd := "miss"
		if vary != nil {
			fwd = "vary-miss"
		}
		n.fillAndDeliver(w, req, nil, fillOptions{fwd: fwd})
		return
	}
	ttl := obj.TTL(now)
	fresh := ttl > 0 && verdict == store.Usable && !obj.Policy.NoCache
	if fresh {
		w.cacheStatus = "hit"
		n.deliver(w, req, obj, httpcache.Status{Cache: n.name, Proto: req.proto, Hit: true, TTL: ttl, HasTTL: true}, "")
		return
	}
	if cc.OnlyIfCached {
		// A fleet node asking for any copy gets this one and judges it by its Age; a client
		// gets only fresh content.
		if req.fromPeer {
			w.cacheStatus = "stale"
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
	if !req.fromPeer && canServeStale(obj, verdict, staleFor, obj.Policy.StaleWhileRevalidate) {
		w.cacheStatus = "stale"
		n.revalidateInBackground(req, obj)
		n.deliver(w, req, obj, httpcache.Status{Cache: n.name, Proto: req.proto, Hit: true, Fwd: "stale", TTL: ttl, HasTTL: true, Detail: "stale-while-revalidate"}, "")
		return
	}
	n.fillAndDeliver(w, req, obj, fillOptions{fwd: "stale", stale: obj, verdict: verdict})
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

// revalidateInBackground refreshes obj once (collapsed with any other revalidation or fill of
// the key) without holding up the client.
func (n *Node) revalidateInBackground(req *request, obj *store.Object) {
	bg := &request{
		r: req.r.Clone(context.Background()), host: req.host, key: req.key, target: req.target,
		path: req.path, hop: req.hop, fromPeer: req.fromPeer, trace: req.traceID(), start: req.start, proto: req.proto,
	}
	n.goBackground(func(ctx context.Context) {
		bg.r = bg.r.WithContext(ctx)
		res := n.collapsedFill(bg, obj, fillOptions{stale: obj})
		if res.err != nil {
			n.log.Debug("background revalidation failed", "key", req.key, "err", res.err)
		}
		res.closeStream()
	})
}
