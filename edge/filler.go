package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/origin/fetch"
)

// filler owns every fill of a node: collapsing (one fill per key in flight), the tier choice
// (owner peer, shield, origin), purge-sequence ordering, the upstream clients and the
// stale-if-error fallbacks. A collapsed fill runs under the filler's context with its own
// timeout (Config.FillTimeout), not under its first client's: a client that goes away leaves
// the fill to the others waiting for it. Every such fill, and every goroutine the filler
// starts, is counted in its WaitGroup, which close waits for; once close began, new work is
// refused.
//
// The request path is serve (route, key) -> lookup (cache.go) -> filler.get -> deliver.
type filler struct {
	n *Node

	ctx    context.Context // every fill and background goroutine runs under it; it holds no values (fillContext)
	cancel context.CancelFunc

	mu      sync.Mutex // protects closing and the live fills; held around wg.Add so close's Wait sees every Add
	closing bool
	wg      sync.WaitGroup

	// The live collapsed fills' contexts, by deadline, and the timer for the earliest, set
	// for fillTimerAt (zero: not set) (fillctx.go); under mu.
	fillHead, fillTail *fillContext
	fillTimer          *time.Timer
	fillTimerAt        time.Time

	flight singleflight.Group // one fill per key in flight

	// uncacheable holds the keys filled without collapsing for a while, because their last
	// fill's answer could not be shared (uncacheable.go).
	uncacheable uncacheable
	ownFlights  atomic.Uint64 // numbers the flights of one client each (ownFlight)

	upMu      sync.Mutex // protects upstreams
	upstreams map[string]*fetch.Upstream

	// streaming holds the fills whose header is in and whose body is still arriving (stream.go),
	// by flight key: a client asking for the key meanwhile reads the same body.
	streamMu  sync.Mutex // protects streaming
	streaming map[string]*fillResult

	// noRange holds the origin hosts (host:port) seen ignoring Range: their large objects
	// stream through instead of being sliced (slices.go).
	noRange sync.Map

	budget *inflightBudget // memory held by streaming bodies too large to keep (stream.go)

	// runHook, if set before the node serves, is called as every collapsed fill starts:
	// tests use it to make one panic.
	runHook func(flightKey string)
}

// newFiller builds n's filler. It starts nothing.
func newFiller(n *Node) *filler {
	ctx, cancel := context.WithCancel(context.Background())
	return &filler{n: n, ctx: ctx, cancel: cancel, upstreams: map[string]*fetch.Upstream{},
		streaming: map[string]*fillResult{}, budget: &inflightBudget{max: n.cfg.Cache.InFlightBytes}}
}

// close refuses new work, ends the fills in flight, waits for every goroutine the filler
// started and releases the upstream clients. It is idempotent.
func (f *filler) close() {
	f.mu.Lock()
	already := f.closing
	f.closing = true
	f.mu.Unlock()
	if already {
		return
	}
	f.cancel()
	f.endFills()
	f.wg.Wait()
	f.upMu.Lock()
	for _, u := range f.upstreams {
		u.Close()
	}
	f.upMu.Unlock()
}

// errClosing is a fill refused because the node is shutting down.
var errClosing = errors.New("edge node is shutting down")

// fillOptions say why a fill happens and what the node already holds.
type fillOptions struct {
	fwd     string        // Cache-Status fwd reason: "miss", "vary-miss", "stale"
	verdict store.Verdict // what the purge records say about the stale copy passed beside it
	direct  bool          // one client's own fill (Authorization): no collapsing, no peer or shield
	behind  bool          // this node lags the requester's purges: do not share a fill begun for others
	stream  bool          // a collapsed fill: a storable body is handed on as it arrives (stream.go)
	// background: a revalidation no client waits for (revalidate), which asks the fleet for
	// no copy to stand in for a 5xx; the clients that join it ask for their own (get).
	background bool
	// own: a fill of a marked key in a flight of its own (uncacheable), whose streaming body
	// (stream.go) others read along under the key's flight: its answer, one that may be
	// stored, ends the mark.
	own bool
}

// fillResult is what one upstream exchange produced. Collapsed callers share it read-only.
type fillResult struct {
	obj         *store.Object // the response as an object (stored or not); nil on error or stream
	stored      bool
	shareable   bool // obj may be given to collapsed followers (it is storable)
	personal    bool // an upstream 5xx (err) that is one user's: followers fetch their own
	dropped     bool // an upstream 5xx (err) left unread, as the stale copy or fleet stands in for it
	fleetAsked  bool // the fleet was asked for a copy to stand in for the 5xx (fleet has it, if any)
	revalidated bool
	status      int    // upstream status, for fwd-status
	tier        string // "peer", "shield" or "origin"
	upstreamCS  string // the upstream's Cache-Status, which ours is appended to
	// fleet is a copy another node of the fleet holds (fleetStale), asked for when the upstream
	// answered a 5xx that no stale copy of ours stood in for: it stands in for the 5xx.
	fleet *fillResult
	// untrusted: a peer or shield gave the answer without marking it trusted (it did not
	// verify our request, or relays an answer no verified chain gave it), so it may lack the
	// object's surrogate keys. It is never stored here, and a fleet node that this node passes
	// it on to is not told it is trusted either (request.untrustedAnswer), or that node would
	// store a copy that purges by key miss.
	untrusted bool
	err       error
	// stream is set when the answer will not be stored (known from its header, or too
	// large): the fill's first client streams it as it arrives (head is what was read before
	// that became clear); the others fetch their own.
	stream   *http.Response
	head     []byte
	tooLarge bool
	cancel   context.CancelFunc // ends the fill's context; a stream's ends when it is closed

	// body is set on a streaming miss: obj is the answer without its body, which arrives in
	// body (read by every client of the fill); pumpResp is the upstream response it comes from
	// and length its declared length (negative if unknown).
	body     *inflight
	pumpResp *http.Response
	length   int64

	collapsed bool // set per caller: this caller waited for another's fill

	// own holds the fields a qualified private="..." or no-cache="..." keeps out of obj: they
	// go to the client whose request this fill is, never to others (collapse drops them).
	own http.Header

	// unshared is set on an answer that may not be shared (or one user's 5xx): it is one
	// variant's (keyUnshared). A waiter of another variant fills its own collapsed (collapse),
	// and the hit-for-miss mark is the variant's (uncacheable).
	unshared *unsharedVariant
}

// unsharedVariant is the variant an answer that may not be shared is: vary is its Vary field
// names as its header gives them (its Policy has none), variant the Vary key of them of the
// request it answers (store.VariantKey), all a Vary: *, every request a variant of its own.
type unsharedVariant struct {
	vary    []string
	variant string
	all     bool
}

// keyUnshared sets r.unshared when it may not be shared, as req's fill's answer.
func (r *fillResult) keyUnshared(req *request) {
	if r.err == nil && r.shareable || r.err != nil && !r.personal {
		return
	}
	var values []string
	switch {
	case r.stream != nil:
		values = r.stream.Header["Vary"]
	case r.obj != nil:
		values = r.obj.HeaderValues("Vary")
	default:
		return
	}
	u := &unsharedVariant{}
	u.vary, u.all = httpcache.ParseVary(values)
	u.variant = store.VariantKey(u.vary, req)
	r.unshared = u
}

// ownStream puts the fields kept out of the object back into a stream, which is this fill's
// client's alone.
func (r *fillResult) ownStream() {
	for k, vs := range r.own {
		r.stream.Header[k] = vs
	}
	r.own = nil
}

// ownObject is obj as this fill's own client gets it: with the fields kept out of the
// stored copy (a copy of obj with a header of its own), or obj itself if there are none.
func (r *fillResult) ownObject() *store.Object {
	if r.own == nil || r.obj == nil {
		return r.obj
	}
	o := *r.obj
	o.Header = r.obj.HeaderMap()
	for k, vs := range r.own {
		o.Header[k] = vs
	}
	return &o
}

func (r *fillResult) closeStream() {
	if r.stream != nil {
		r.stream.Body.Close()
	}
	if r.cancel != nil {
		r.cancel()
	}
}

// answer is what the filler hands to delivery: an object, a stream, or an error status.
type answer struct {
	obj         *store.Object
	body        *bodyReader // a streaming miss: obj has no body, this client reads it from here
	length      int64       // body's declared length, negative if unknown
	tooLarge    bool        // body will not be kept (so it cannot be waited for whole)
	stream      *fillResult
	cs          httpcache.Status
	upstreamCS  string
	cacheStatus string // for the access log and metrics: "miss", "stale", "pass", "error"
	tier        string
	fail        int // the error status to answer with when there is nothing to deliver
	note        string
}

// get fills req's object (collapsed with every other fill of the key, unless direct) and
// decides what the client gets: the fill's answer; when the upstream fails, the stale copy
// (stale-if-error), else a copy elsewhere in the fleet, else the upstream's own 5xx, else an
// error.
func (f *filler) get(req *request, stale *store.Object, opts fillOptions) answer {
	n := f.n
	var res fillResult
	switch {
	case opts.direct:
		res = f.direct(req, stale, opts)
	case opts.behind:
		// A fill already in flight may be answered from a tier that also lags; collapse only
		// with other lagging requests for the same sequence (purgeorder.go).
		res = f.collapse(req.key+"\x00seq="+strconv.FormatUint(req.needSeq, 10), req, stale, opts)
	case f.uncacheable.has(req.key, req, n.clock()):
		// Its variant's last answer could not be shared: clients that waited for this fill
		// would only fetch their own after it (hit-for-miss). A fill as any other, in a
		// flight of its own; a body that may be stored is read along under the key's.
		own := opts
		own.own = true
		res = f.collapse(req.key+ownFlight+strconv.FormatUint(f.ownFlights.Add(1), 10), req, stale, own)
		f.noteUncacheable(req, &res)
	default:
		res = f.collapse(req.key, req, stale, opts)
		f.noteUncacheable(req, &res)
	}
	fwd := opts.fwd
	if fwd == "" {
		fwd = "miss"
	}
	a := answer{tier: res.tier, upstreamCS: res.upstreamCS}
	req.untrustedAnswer = res.untrusted
	if res.err != nil {
		now := n.clock()
		status := upstreamErrorStatus(res.err)
		// Asked again: a hard purge applied while the fill ran makes the copy gone, and it
		// must not come back as the stale-if-error answer once the purge is acked.
		// A fleet node stores what it gets as its answer, fresh by its headers: a copy stale
		// only by a purge (soft, or Doubtful after a stream gap) would be served there as a
		// hit. It gets the error; its own stale-if-error asks the fleet (fleetStale), whose
		// copies are served, not stored.
		// An upstream's answer that is no error RFC 5861 names (a 501) is passed on: neither
		// our stale copy nor the fleet's stands in for it.
		failed := staleIfErrorApplies(res.err)
		if failed && n.staleIfErrorServable(req, stale, opts.verdict, now) {
			req.untrustedAnswer = false // our own copy, stored from a verified chain
			n.metrics.staleServed.WithLabelValues("stale-if-error").Inc()
			return answer{obj: stale, cacheStatus: "stale", tier: res.tier, cs: httpcache.Status{Cache: n.name, Proto: req.proto,
				Fwd: "stale", FwdStatus: status, TTL: stale.TTL(now), HasTTL: true, Detail: "stale-if-error"}}
		}
		fs := res.fleet
		if failed && !res.fleetAsked {
			fs = f.fleetStale(req)
		}
		if fs != nil {
			return n.fleetStaleAnswer(req, fs, fwd, status)
		}
		if res.obj != nil { // the upstream's own 5xx answer
			a.obj, a.cacheStatus = res.ownObject(), "miss"
			a.cs = httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: res.status, Detail: res.tier}
			return a
		}
		a.fail, a.note, a.cacheStatus = status, res.err.Error(), "error"
		return a
	}
	if res.revalidated {
		fwd = "stale"
	}
	// A 5xx that streams (too large to keep) is the upstream's answer: the fleet, asked on its
	// head, had no copy to stand in for it (fetchAndStore).
	if res.stream != nil {
		a.stream, a.cacheStatus = &res, "miss"
		a.cs = httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: res.status, Detail: res.tier}
		if res.tooLarge {
			a.cacheStatus, a.cs.Detail = "pass", "too-large"
		}
		return a
	}
	if res.body != nil {
		rd := res.body.attach()
		if rd == nil {
			// Too large to keep, and its start already went by: this client fetches its own.
			opts.direct = true
			return f.get(req, stale, opts)
		}
		a.body, a.length, a.tooLarge = rd, res.length, res.tooLarge
	}
	a.obj, a.cacheStatus = res.ownObject(), "miss"
	a.cs = httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: res.status, Stored: res.stored,
		Collapsed: res.collapsed, Detail: res.tier}
	if res.tooLarge {
		a.cacheStatus, a.cs.Detail = "pass", "too-large"
	}
	if res.stored {
		a.cs.TTL, a.cs.HasTTL = res.obj.TTL(n.clock()), true
	}
	return a
}

// fleetStaleAnswer is fs, a copy another node of the fleet holds (fleetStale), as the answer
// to req in place of an upstream failure of status.
func (n *Node) fleetStaleAnswer(req *request, fs *fillResult, fwd string, status int) answer {
	n.metrics.staleServed.WithLabelValues("fleet-stale").Inc()
	return answer{obj: fs.obj, cacheStatus: "stale", tier: "fleet", upstreamCS: fs.upstreamCS, cs: httpcache.Status{
		Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: status, TTL: fs.obj.TTL(n.clock()), HasTTL: true,
		Detail: "fleet-stale-if-error"}}
}

// staleIfErrorServable reports whether stale (nil if none) may be served to req at now in place
// of an upstream failure (stale-if-error), verdict being what the lookup found of it. A fleet
// node is never served a copy stale only by a purge: it would store it as fresh (filler.get).
func (n *Node) staleIfErrorServable(req *request, stale *store.Object, verdict store.Verdict, now time.Time) bool {
	if stale == nil {
		return false
	}
	v := max(verdict, n.store.Verdict(stale))
	return !(req.fromPeer && v != store.Usable) && canServeStale(stale, v, -stale.TTL(now), stale.Policy.StaleIfError)
}

// noteUncacheable records in f.uncacheable what req's fill brought, unless req's client went
// away first: its error then says nothing of the upstream, and must not end a mark.
func (f *filler) noteUncacheable(req *request, res *fillResult) {
	if req.r.Context().Err() == nil {
		f.uncacheable.note(req.key, req, res, f.n.clock())
	}
}

// collapse waits for the fill of flightKey, starting it if none is in flight. A caller whose
// client goes away stops waiting; the fill goes on for the others.
func (f *filler) collapse(flightKey string, req *request, stale *store.Object, opts fillOptions) fillResult {
	im := newInterim(req.w)
	defer im.detach()
	r, leader, ok := f.wait(flightKey, req, stale, opts, im)
	if !ok {
		return fillResult{err: fmt.Errorf("wait for fill of %s: %w", req.target, context.Cause(req.r.Context()))}
	}
	res := *r.Val.(*fillResult)
	if leader {
		return res
	}
	res.collapsed = r.Shared
	res.stream, res.head, res.cancel, res.own = nil, nil, nil, nil
	if u := res.unshared; u != nil && len(u.vary) > 0 && !u.all {
		// One variant's answer that may not be shared (keyUnshared): if not ours, it says
		// nothing of ours, which may be shared. Fill ours, collapsed with others of it, as
		// below for an answer that may be shared.
		if v := store.VariantKey(u.vary, req); v != u.variant {
			return f.collapse(flightKey+"\x00"+v, req, stale, opts)
		}
	}
	if res.dropped && f.n.staleIfErrorServable(req, stale, opts.verdict, f.n.clock()) {
		// The leader's copy stood in for a 5xx whose body was never read, and this follower's
		// stands in too (filler.get), whoever's the 5xx was: it never sees that answer.
		return res
	}
	if res.fleet != nil && res.fleet.fleetCopyFor(req) {
		// The fleet's copy stood in for it, and is this follower's variant: so for it too.
		return res
	}
	// The fleet was asked for the leader's variant: this follower asks for its own (get).
	res.fleet, res.fleetAsked = nil, false
	switch {
	case res.err != nil && res.personal:
		return f.direct(req, stale, opts)
	case res.dropped:
		// The leader's copy stood in for a 5xx whose body was never read: a follower without
		// such a copy of its own gets the upstream's answer from one more fill, collapsed with
		// the others without one, so that a failing upstream is asked once more, not once per
		// waiting client. Once only: a follower of that fill that finds it dropped as well
		// (its leader's copy stood in after all) fetches its own.
		if strings.Contains(flightKey, droppedFlight) {
			return f.direct(req, stale, opts)
		}
		return f.collapse(flightKey+droppedFlight, req, stale, opts)
	case res.err != nil:
		return res
	case res.obj == nil || !res.shareable:
		// Not stored (private, Set-Cookie, too large, ...): this caller fetches its own.
		return f.direct(req, stale, opts)
	case req.hasMaxAge && res.obj.Age(f.n.clock()) > req.maxAge && !strings.Contains(flightKey, boundedFlight):
		// A fleet node asked for nothing this old (invalidations.go), and the fill it joined
		// had no such bound: fill again with it, collapsed with others that carry one. Once
		// only: a flight of bounded fills that still gets an old copy (a node above of an older
		// version, which ignores the bound) is its answer.
		return f.collapse(flightKey+boundedFlight, req, stale, opts)
	case f.n.store.Verdict(res.obj) != store.Usable:
		// A purge (or an unsafe request's invalidation) matched the answer after its fill
		// began: the store keeps it out (purge rule 2), and a request that joined the flight
		// (or read along its body, still streaming) may have arrived after the purge. Fill
		// again, collapsed with others that did. That fill too may have begun before a later
		// purge (its body can stream for long): then again, one level deeper, up to
		// maxPurgedFlights levels, past which this caller fetches its own.
		if strings.Count(flightKey, purgedFlight) >= maxPurgedFlights {
			return f.direct(req, stale, opts)
		}
		return f.collapse(flightKey+purgedFlight, req, stale, opts)
	case len(res.obj.Policy.Vary) > 0:
		// The leader's variant is not ours (keyed as our fill would send its fields, as the
		// leader's was as it sent them): fill ours, collapsed with others of the same variant.
		if v := store.VariantKey(res.obj.Policy.Vary, req); v != res.obj.Variant {
			return f.collapse(flightKey+"\x00"+v, req, stale, opts)
		}
	}
	return res
}

// fleetCopyFor reports whether r, a copy of the fleet's that stood in for a fill's 5xx (fleetStale),
// may stand in for req's too: req's variant, and not a fleet node's (fleetStale asks none for it).
func (r *fillResult) fleetCopyFor(req *request) bool {
	o := r.obj
	return !req.fromPeer && (len(o.Policy.Vary) == 0 || store.VariantKey(o.Policy.Vary, req) == o.Variant)
}

// droppedFlight marks the flight key of a fill again for requests that joined a fill whose
// 5xx their leader's stale copy stood in for, unread, and that have no copy of their own to
// serve in its place (filler.collapse).
const droppedFlight = "\x00dropped"

// clientGoneCloser is a ResponseWriter whose connection can be closed as soon as its client
// goes away, while the handler still runs (edge/http1's).
type clientGoneCloser interface{ CloseWhenClientGone(on bool) }

// wait joins the fill of flightKey, starting it if none is in flight, and returns its result
// and whether this caller ran it; ok is false if the client went away first (a stream the
// fill left for this client is then closed).
//
// On a connection that closes itself when its client goes away (edge/http1's fast path) the
// caller runs the fill, or waits for it, on its own goroutine: a new goroutine per fill, its
// stack growth and the hand-over of the result cost 3-7 % of a miss's CPU (docs/benchmarks.md,
// "Eighteenth pass"). The fill still outlives its client: it runs under the filler's context,
// and the client's connection is closed at once when it goes, while the fill finishes here.
// Elsewhere (HTTP/2, HTTP/3, net/http) the fill runs on a goroutine of its own and the
// caller stops waiting when its client goes.
func (f *filler) wait(flightKey string, req *request, stale *store.Object, opts fillOptions, im *interim) (r singleflight.Result, leader bool, ok bool) {
	ctx := req.r.Context()
	if cg, inline := req.lw.ResponseWriter.(clientGoneCloser); inline {
		cg.CloseWhenClientGone(true)
		if ctx.Err() != nil { // gone before it asked: its connection ends when we return
			cg.CloseWhenClientGone(false)
			return r, false, false
		}
		fn, lead := f.fillFunc(flightKey, req, stale, opts, im, false)
		r.Val, r.Err, r.Shared = f.flight.Do(flightKey, fn)
		cg.CloseWhenClientGone(false) // before the check: a client gone after it is answered as before
		if ctx.Err() != nil {
			if *lead {
				res := r.Val.(*fillResult)
				if abandon := func() { f.abandon(res) }; !f.goTracked(abandon) {
					abandon()
				}
			}
			return r, false, false
		}
		return r, *lead, true
	}
	ch, lead := f.launch(flightKey, req, stale, opts, im)
	select {
	case r = <-ch:
		return r, *lead, true
	case <-ctx.Done():
		// A stream meant for this client has no reader left: close it once it arrives.
		wait := func() {
			if r := <-ch; *lead {
				f.abandon(r.Val.(*fillResult))
			}
		}
		if !f.goTracked(wait) {
			wait()
		}
		return r, false, false
	}
}

// abandon closes the stream a fill left for a client that is not there to read it, and reads
// on a body that will be stored (orphan); it may take as long as the body does.
func (f *filler) abandon(res *fillResult) {
	res.closeStream()
	f.orphan(res)
}

// launch starts the fill of flightKey on a goroutine of its own unless one is in flight, and
// returns where its result arrives and whether this call started it (readable once the
// result has arrived).
func (f *filler) launch(flightKey string, req *request, stale *store.Object, opts fillOptions, im *interim) (<-chan singleflight.Result, *bool) {
	fn, leader := f.fillFunc(flightKey, req, stale, opts, im, true)
	return f.flight.DoChan(flightKey, fn), leader
}

// fillFunc returns the function that fills flightKey for the flight, and where it records
// that it ran (it runs for one caller only: that caller leads the fill).
func (f *filler) fillFunc(flightKey string, req *request, stale *store.Object, opts fillOptions, im *interim, ownGoroutine bool) (func() (any, error), *bool) {
	// The fill may outlive the client's request: it gets its own copy of what it reads (the
	// request with its own URL, and its own header on a goroutine of its own; a fill never
	// reads a form, a body or path values, which Request.Clone would copy too), allocated in
	// one piece with the leader flag rather than in four (issue 15).
	st := &struct {
		lead   request
		r      http.Request
		url    url.URL
		fill   fillState
		leader bool
	}{lead: *req, r: *req.r.WithContext(context.Background())}
	if ownGoroutine {
		st.r.Header = req.r.Header.Clone()
	}
	// Inline, the fill ends before its handler goes on, and shares the client's header:
	// edge/http1 reuses its map only for the connection's next request, the handler
	// changes it only before its fill (serveCacheable), and nothing in a fill writes to it or
	// to its values.
	if req.r.URL != nil {
		st.url = *req.r.URL
		st.r.URL = &st.url
	}
	lead := &st.lead
	lead.w, lead.lw = nil, logWriter{} // 1xx responses go through im, while the client waits
	lead.traceID()
	lead.r = &st.r
	return func() (any, error) {
		if p := f.streamingFill(flightKey); p != nil {
			return p, nil // its body is still arriving: read along
		}
		if stale == nil && !opts.behind {
			// A miss looked the store up before the fill it missed had stored its object,
			// and got here after that fill left the flight: what is stored now is its answer,
			// not a second fetch from upstream.
			if obj := f.n.storedFresh(lead); obj != nil && !(lead.hasMaxAge && obj.Age(f.n.clock()) > lead.maxAge) {
				return &fillResult{obj: obj, status: obj.Status, shareable: true}, nil
			}
		}
		st.leader = true
		if ownGoroutine {
			growFillStack()
		}
		return f.runRecovered(flightKey, lead, stale, opts, im, &st.fill), nil
	}, &st.leader
}

// growFillStack grows the stack of a fill's goroutine (singleflight starts a new one per
// fill, whose stack the runtime sizes to the average it saw at the last collection, less than
// a fill needs) to what a fill needs, at once, while the stack holds three frames. Left to
// grow on demand it grew deep in the fill (in upstreamRequest and context.WithTimeoutCause),
// where each growth walks and adjusts a dozen frames: 2.5-3.6 % of the edge's CPU on
// unique-URL misses, 2.0-2.8 % with this (docs/benchmarks.md, "Tenth pass").
func growFillStack() { growStack(growStackIndex) }

// growStackIndex is what the compiler cannot know, so it keeps growStack's frame, which is
// what makes the runtime grow the stack. It is only read.
var growStackIndex int

//go:noinline
func growStack(i int) byte {
	var pad [fillStackBytes]byte
	return pad[i%len(pad)]
}

// fillStackBytes is the frame that makes a fill goroutine's stack 8 KiB, which a fill from
// the origin fits in.
const fillStackBytes = 5 << 10

// runRecovered is run, with a panic turned into the fill's error and logged: singleflight
// would re-raise it in every waiter that called Do, and crash the process if one called DoChan,
// so a fill's clients would see it differently by protocol. They all get the error instead.
func (f *filler) runRecovered(flightKey string, req *request, stale *store.Object, opts fillOptions, im *interim, fs *fillState) (res *fillResult) {
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			f.n.log.Error("fill panicked", "key", flightKey, "panic", fmt.Sprint(p), "stack", string(buf))
			res = &fillResult{err: fmt.Errorf("fill of %s: panic: %v", req.target, p)}
		}
	}()
	if f.runHook != nil {
		f.runHook(flightKey)
	}
	return f.run(flightKey, req, stale, opts, im, fs)
}

// fillState is what one collapsed fill keeps while it runs, allocated with its caller's
// state (fillFunc): its context and its result.
type fillState struct {
	ctx fillContext
	res fillResult
}

// run performs one collapsed fill under the filler's context, with fs.ctx, unused until now,
// as its own (fillctx.go), and returns fs.res. A body that streams on (a streaming miss) is
// read by a pump goroutine of the filler, which stores it once complete.
func (f *filler) run(flightKey string, req *request, stale *store.Object, opts fillOptions, im *interim, fs *fillState) *fillResult {
	fc := &fs.ctx
	fc.values = im.values()
	if !f.enterFill(fc, f.n.cfg.FillTimeout) {
		return &fillResult{err: errClosing}
	}
	defer f.wg.Done()
	*req.r = *req.r.WithContext(fc) // in place: the request is this fill's own (launch)
	opts.stream = true
	res := &fs.res
	*res = f.fetchAndStore(req, stale, opts)
	res.keyUnshared(req)
	switch { // fc.cancel as a value only where it outlives run: it is an allocation
	case res.body != nil:
		if opts.own {
			flightKey = req.key
		}
		f.startPump(fc, fc.cancel, flightKey, req.target, res)
	case res.stream != nil:
		res.cancel = fc.cancel
	default:
		fc.cancel()
	}
	return res
}

// startPump reads res's body as it arrives, for every client of the fill, and stores the
// object once it is complete. Until then a fill of flightKey reads along.
func (f *filler) startPump(ctx context.Context, cancel context.CancelFunc, flightKey, what string, res *fillResult) {
	f.streamMu.Lock()
	// A marked key's fill in a flight of its own reads along under the key's flight (run),
	// where another fill's body may still be readable from its start: that one stays, as
	// its clients' variant may not be this one's.
	if old := f.streaming[flightKey]; old == nil || !old.body.fromStart() {
		f.streaming[flightKey] = res
	}
	f.streamMu.Unlock()
	forget := func() {
		f.streamMu.Lock()
		if f.streaming[flightKey] == res {
			delete(f.streaming, flightKey)
		}
		f.streamMu.Unlock()
	}
	body, resp := res.body, res.pumpResp
	started := f.goTracked(func() {
		defer cancel()
		err := pump(ctx, resp, body, what)
		if b, ok := body.kept(); ok && err == nil && res.stored {
			o := *res.obj // res.obj is shared with the fill's clients: store a copy
			o.Body = b
			if !f.n.store.Put(&o) {
				f.n.log.Debug("store refused a streamed object", "key", o.Primary)
			}
		}
		// Stored and forgotten before the clients see the end: one that has read it all and
		// asks again finds the stored object, never this fill (a purge may have come since).
		forget()
		body.finish(err)
	})
	if !started {
		resp.Body.Close()
		forget()
		body.finish(errClosing)
		cancel()
	}
}

// orphan deals with a streaming fill whose first client is gone before reading it: a body
// that will be stored is read to the end, so that it is; any other is left to the clients
// that read it, and ends when none does.
func (f *filler) orphan(res *fillResult) {
	if res.body == nil {
		return
	}
	rd := res.body.attach()
	if rd == nil {
		return
	}
	defer rd.close()
	if res.stored {
		rd.copyTo(f.ctx, io.Discard, func() {})
	}
}

// streamingFill returns the fill of flightKey whose body is still arriving, if a client can
// still read it from its start.
func (f *filler) streamingFill(flightKey string) *fillResult {
	f.streamMu.Lock()
	defer f.streamMu.Unlock()
	res := f.streaming[flightKey]
	if res == nil || !res.body.fromStart() {
		return nil
	}
	return res
}

// direct performs a fill for one client only, under its request's context.
func (f *filler) direct(req *request, stale *store.Object, opts fillOptions) fillResult {
	req.traceID()
	ctx, cancel := context.WithTimeout(req.r.Context(), f.n.cfg.FillTimeout)
	im := newInterim(req.w)
	defer im.detach()
	own := *req
	own.r = req.r.WithContext(im.trace(ctx))
	res := f.fetchAndStore(&own, stale, opts)
	res.keyUnshared(&own)
	res.cancel = cancel
	if res.stream == nil {
		cancel()
	}
	return res
}

// revalidate refreshes obj once (collapsed with any other fill of the key) without holding
// up the client.
func (f *filler) revalidate(req *request, obj *store.Object) {
	ch, leader := f.launch(req.key, req, obj, fillOptions{background: true}, nil)
	key := req.key // req is the client's, which edge/http1 reuses once the handler returns
	wait := func() {
		r := <-ch
		res := r.Val.(*fillResult)
		if *leader {
			f.abandon(res)
		}
		if res.err != nil {
			f.n.log.Debug("background revalidation failed", "key", key, "err", res.err)
		}
	}
	f.goTracked(wait)
}

// interim forwards the 1xx interim responses of a fill (103 Early Hints) to the client that
// started it, for as long as that client waits for it. They are never stored.
type interim struct {
	mu sync.Mutex          // protects w
	w  http.ResponseWriter // nil once the client stopped waiting
	ct httptrace.ClientTrace
}

// newInterim returns an interim for w, or nil without a client.
func newInterim(w http.ResponseWriter) *interim {
	if w == nil {
		return nil
	}
	i := &interim{w: w}
	i.ct.Got1xxResponse = i.got1xx
	return i
}

// trace adds the 1xx forwarding to ctx. It is called at most once per interim: the trace
// lives in the interim (one allocation less per fill), and WithClientTrace composes it with
// any trace ctx already has.
func (i *interim) trace(ctx context.Context) context.Context {
	if i == nil {
		return ctx
	}
	return httptrace.WithClientTrace(ctx, &i.ct)
}

// values is the 1xx forwarding as values alone, for a fillContext (whose parent, the
// filler's context, has no trace to compose with); nil without a client.
func (i *interim) values() context.Context {
	if i == nil {
		return nil
	}
	return i.trace(context.Background())
}

func (i *interim) got1xx(code int, h textproto.MIMEHeader) error {
	if code == http.StatusSwitchingProtocols {
		return nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.w == nil {
		return nil
	}
	// The client's header map also holds its final answer's fields: lend it the 1xx's.
	wh := i.w.Header()
	saved := make(map[string][]string, len(h))
	for k, v := range h {
		if k == "Cache-Status" || fleetField(k) {
			continue
		}
		saved[k] = wh[k]
		wh[k] = v
	}
	// A client that does not read must not hold up the fill, which other clients may wait for
	// (on HTTP/1.1 in singleflight.Do, without a way out): the interim answer gets
	// interimWriteTimeout to go out, after which the client's connection is given up.
	rc := http.NewResponseController(i.w)
	rc.SetWriteDeadline(time.Now().Add(interimWriteTimeout))
	i.w.WriteHeader(code)
	rc.SetWriteDeadline(time.Time{})
	for k, v := range saved {
		if v == nil {
			delete(wh, k)
		} else {
			wh[k] = v
		}
	}
	return nil
}

// interimWriteTimeout bounds the write of one 1xx interim response to the client waiting for
// a fill.
const interimWriteTimeout = 5 * time.Second

// detach stops forwarding: the client's writer is its own again.
func (i *interim) detach() {
	if i == nil {
		return
	}
	i.mu.Lock()
	i.w = nil
	i.mu.Unlock()
}

// enter counts one more piece of work, unless the filler is closing. The check and the Add
// happen under one lock, so close never starts waiting between them.
func (f *filler) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.wg.Add(1)
	return true
}

// goTracked runs fn in a goroutine counted in the filler's work; it reports false (and runs
// nothing) once the filler is closing.
func (f *filler) goTracked(fn func()) bool {
	if !f.enter() {
		return false
	}
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}
