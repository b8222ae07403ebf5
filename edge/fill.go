package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/origin/fetch"
)

// fetchAndStore fetches req's object through the tiers and stores it if it may be stored.
func (f *filler) fetchAndStore(req *request, stale *store.Object, opts fillOptions) fillResult {
	n := f.n
	began := n.clock()
	resp, tier, err := f.fetchTiers(req, stale, opts)
	if err != nil {
		return fillResult{err: err, tier: tier}
	}
	respTime := n.clock()
	n.metrics.fill(tier)
	h := resp.Header
	// A peer or shield answer keeps the surrogate keys, tags and groups a purge matches on
	// only when that node verified our request; an answer without them must not be stored,
	// or later purges by key would silently miss the copy (docs/purge.md). Nor may a fleet
	// node that we pass it on to store it (fillResult.untrusted).
	untrusted := tier != "origin" && h.Get(hopHeader) != hopTrustedValue
	res := fillResult{status: resp.StatusCode, tier: tier, upstreamCS: h.Get("Cache-Status"), untrusted: untrusted}
	// Whether a fleet node's answer is in a coding an edge applied: only that node can say.
	fleetCoded := takeEdgeCoded(h, tier != "origin" && !untrusted)
	fleetKeys, hasFleetKeys := takeFleetKeys(h, tier != "origin" && !untrusted)
	httpcache.RemoveHopByHop(h)
	h.Del("Cache-Status")
	h.Del(hopHeader)
	h.Del("Alt-Svc") // the upstream's endpoints are not ours
	initialAge := httpcache.InitialAge(h, began, respTime)
	h.Del("Age")
	h.Set("Via", n.via(strings.Join(h["Via"], ", "), resp.ProtoMajor, resp.ProtoMinor))
	if _, ok := h["Date"]; !ok {
		// RFC 9110 §6.6.1: a recipient that caches an answer without Date MUST add one. Added
		// only as it went out, a hit's Date was the time it was served, and beside its Age a
		// client reading Expires - Date counted the copy's age twice.
		h["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}

	if resp.StatusCode == http.StatusNotModified && stale != nil {
		resp.Body.Close()
		if n.store.Verdict(stale) == store.Purged ||
			!httpcache.NotModifiedSelects(revalidationETag(stale, tier == "origin"), stale.HeaderValue("Last-Modified"), h) {
			// Fetched whole, once (stale nil: a 304 to that is an error, so a broken upstream
			// cannot loop). A hard purge matched the copy after it was looked up: it is gone,
			// and a 304 must not bring its body back stored as a fetch begun after the purge.
			// Or the 304 names another representation than the copy (RFC 9111 §4.3.4: it
			// MUST NOT update it), and the copy's body is not the upstream's any more.
			n.log.Debug("304 does not refresh the stale copy; fetching it whole", "key", req.key, "tier", tier,
				"etag", h.Get("Etag"), "stored_etag", stale.HeaderValue("ETag"))
			return f.fetchAndStore(req, nil, opts)
		}
		hdr := httpcache.Refresh(stale.HeaderMap(), h)
		if edgeCoding(stale) != "" && compress.NoTransform(hdr) {
			// The 304 brings a no-transform (RFC 9110 §7.7, RFC 9111 §5.2.2.6) that forbids
			// what the edge did to the copy's content: refreshed, the edge's coding went out
			// under it. Fetched whole, once, as above; that answer is stored as it comes.
			n.log.Debug("304 forbids the edge's coding of the stale copy; fetching it whole", "key", req.key, "tier", tier)
			return f.fetchAndStore(req, nil, opts)
		}
		keepEdgeCoding(stale, hdr, h, tier == "origin")
		// The keys are taken before stripFields drops a field that declares them: they still
		// name the object for purges.
		keys, known := refreshedKeys(stale, h, hdr)
		if hasFleetKeys {
			keys = fleetKeys
		} else if !known {
			// The 304 dropped a key of a stored field while the copy keeps keys of a field it
			// does not store: whether that field declares the key too is not known here.
			// Fetched whole, once, as above, so that the copy is named by what is declared.
			n.log.Debug("304 drops a purge key of a copy whose key field is not stored; fetching it whole", "key", req.key, "tier", tier)
			return f.fetchAndStore(req, nil, opts)
		}
		o := *stale
		o.Header = hdr // the object's header from now on, in place of stale's (store.Object.Header)
		o.StoredAt = began
		o.ResponseTime = respTime
		o.InitialAge = initialAge
		// fillPolicy, as for a 200: a 304 may set a cookie, which must not be stored with it.
		o.Policy = fillPolicy(req, stale.Status, hdr, respTime)
		// A 304 may bring another Vary (RFC 9111 §4.3.4 updates every stored field): the
		// copy is then this request's variant under it, or Lookup would never select it.
		o.Variant = n.fillVariant(req, o.Policy.Vary, fillKind(opts))
		stripFields(hdr, o.Policy)
		if len(keys) > httpcache.MaxSurrogateKeys {
			// The copy's keys beside the 304's: more than are kept, as for a 200 declaring them.
			o.Policy.Storable, o.Policy.Reason = false, "too-many-surrogate-keys"
		}
		// A 304 may bring another Last-Modified, which conditional requests are then compared
		// with; read after stripFields, as newObject does, so one the copy must not keep is not.
		o.LastModified, _ = httpcache.ParseDate(hdr.Get("Last-Modified"))
		o.Keys = keys
		switch {
		case untrusted:
			n.refuseUntrusted(&o.Policy, req)
		case !o.Policy.Storable:
			// The upstream's refreshed header says the copy may not be kept (private,
			// no-store): as after a full answer that may not be stored, below, it goes.
			n.store.DeleteVariant(stale.Primary, stale.Variant)
		}
		if o.Status == http.StatusOK && o.Policy.Storable {
			// As on a 200 kept (below): the copy is still served in ranges, whatever
			// Accept-Ranges the 304 brought.
			hdr["Accept-Ranges"] = []string{"bytes"}
		}
		res.obj, res.revalidated, res.shareable = &o, true, o.Policy.Storable
		if o.Policy.Storable {
			res.stored = n.store.Put(&o)
		}
		return res
	}
	if resp.StatusCode == http.StatusNotModified {
		// We sent no validators, so a 304 is the upstream's mistake; never store it.
		resp.Body.Close()
		res.err = fmt.Errorf("%s answered 304 to an unconditional fill", tier)
		return res
	}

	var early *earlyBody
	if failureStatus(resp.StatusCode) {
		// The stale copy stands in for this failure (stale-if-error, filler.get), judged on
		// the head alone: a body past max_object_bytes was streamed to the client as an
		// answer too large to keep, and a trickling one waited for. Without one of ours, one
		// elsewhere in the fleet may, asked for now, on the head too: asked once the body was
		// read, a small 5xx that trickled held the client up to body_timeout first; it is read
		// while the fleet is asked (fleetStaleReading). Ours stands in unread: closing the body
		// keeps the connection only if the rest has already arrived (origin/fetch), else
		// closes it rather than drain a large body.
		own := n.staleIfErrorServable(req, stale, opts.verdict, respTime)
		if !own && !opts.background {
			res.fleet, early = f.fleetStaleReading(req, resp)
			res.fleetAsked = true
		}
		if own || res.fleet != nil {
			resp.Body.Close()
			res.err, res.dropped = &statusError{status: resp.StatusCode, tier: tier}, true
			d, _ := httpcache.TargetDirectives(h)
			res.personal = d.Private || len(h["Set-Cookie"]) > 0
			return res
		}
	}
	policy := fillPolicy(req, resp.StatusCode, h, respTime)
	varyOnUpstreamCoding(h, &policy)
	if stale != nil && supersedes(resp.StatusCode) && !policy.Storable && !untrusted {
		// A full answer to a revalidation: the copy is not the upstream's representation any
		// more (RFC 9111 §4.3.3), and this one may not be kept in its place. Left in the
		// store, it was served again under stale-while-revalidate (with another background
		// fetch each time) and stale-if-error, for as long as their windows ran. Only this
		// variant: the URL's others are other answers, which this one says nothing of.
		n.store.DeleteVariant(stale.Primary, stale.Variant)
	}
	if untrusted {
		n.refuseUntrusted(&policy, req)
	}
	if resp.StatusCode == http.StatusOK && policy.Storable {
		// Kept, it is served in ranges whatever the upstream does (rangeChecked), and every
		// 200 of it says so, as nginx's and Varnish's cached answers do: from an upstream that
		// said nothing (or none), a plain hit said nothing and a conditional one bytes.
		h["Accept-Ranges"] = []string{"bytes"}
	}
	// The keys the object is purged by: taken before takeFields drops a field that declares
	// them (the origin said not to store it, not that the copy has no keys), or as the fleet
	// node that this answer is from holds its copy (fleetKeysHeader).
	var keys []string
	switch {
	case hasFleetKeys:
		keys = fleetKeys
	case stripsSurrogateField(policy.StripFields):
		keys = httpcache.SurrogateKeys(h)
	}
	if policy.Storable {
		// Kept out of the object, for the client whose request this fill is only (res.own).
		res.own = takeFields(h, policy)
	}
	maxObj := req.host.maxObject
	cc := req.host.cfg.Cache
	compressible := !cc.DisableCompression && resp.ContentLength <= maxObj &&
		compress.ShouldCompress(resp.StatusCode, h, resp.ContentLength, cc.CompressMinBytes, cc.CompressTypes)
	small := resp.ContentLength >= 0 && resp.ContentLength <= smallBody
	if opts.stream && policy.Storable && resp.StatusCode < 500 && !compressible && !small {
		// A streaming miss: every client of the fill reads the body as it arrives (stream.go).
		// Compressible answers are read whole instead, to be compressed once, and small ones
		// too: they arrive at once, and their clients then find them stored.
		keep := resp.ContentLength <= maxObj
		res.obj = newObject(req, resp.StatusCode, h, nil, policy, n.fillVariant(req, policy.Vary, fillKind(opts)), began, respTime, initialAge)
		res.obj.EdgeCoded = fleetCoded
		if keys != nil {
			res.obj.Keys = keys
		}
		res.shareable, res.stored, res.tooLarge = true, keep, !keep
		res.body, res.pumpResp, res.length = newInflight(keep, resp.ContentLength, maxObj, f.budget), resp, resp.ContentLength
		if !keep && f.sliced(req.host, resp.StatusCode, h, resp.ContentLength) {
			// Kept in slices instead (slices.go): the first slice comes from this answer.
			res.body, res.pumpResp, res.tooLarge = nil, nil, false
			return f.startSliced(req, resp, res)
		}
		return res
	}
	if resp.ContentLength > maxObj || resp.StatusCode < 500 && !policy.Storable {
		// Known from the header alone not to be stored: the client gets it as it arrives.
		res.stream, res.tooLarge = resp, resp.ContentLength > maxObj
		res.ownStream()
		relayEdgeCoded(h, req, fleetCoded)
		relayFleetKeys(h, req, fleetKeys, hasFleetKeys)
		return res
	}
	var body []byte
	if early != nil {
		body, err = early.body, early.err
	} else {
		body, err = readBody(resp, maxObj)
	}
	if err != nil {
		resp.Body.Close()
		res.err = fmt.Errorf("read body of %s from %s: %w", req.target, tier, err)
		return res
	}
	if int64(len(body)) > maxObj {
		res.stream, res.head, res.tooLarge = resp, body, true
		res.ownStream()
		relayEdgeCoded(h, req, fleetCoded)
		relayFleetKeys(h, req, fleetKeys, hasFleetKeys)
		return res
	}
	resp.Body.Close()
	if compressible && resp.ContentLength < 0 {
		// Decided above without the body's length, which the minimum size needs.
		compressible = compress.ShouldCompress(resp.StatusCode, h, int64(len(body)), cc.CompressMinBytes, cc.CompressTypes)
	}
	h, body, coded := n.compressAnswer(req, h, body, &policy, compressible)
	o := newObject(req, resp.StatusCode, h, body, policy, n.fillVariant(req, policy.Vary, fillKind(opts)), began, respTime, initialAge)
	o.EdgeCoded = coded || fleetCoded
	if keys != nil {
		o.Keys = keys
	}
	res.obj = o
	if resp.StatusCode >= 500 {
		res.err = &statusError{status: resp.StatusCode, tier: tier}
		// Clients that joined this fill get this answer too, so that a failing origin is not
		// asked again by each; but not one user's answer (Set-Cookie, Cache-Control: private):
		// they fetch their own, as nginx and Varnish send waiting requests on.
		d, _ := httpcache.TargetDirectives(h)
		res.personal = d.Private || len(h["Set-Cookie"]) > 0
		return res
	}
	res.shareable = policy.Storable
	if policy.Storable {
		res.stored = n.store.Put(o)
	}
	return res
}

// readBody reads resp's body, up to limit+1 bytes so the caller can tell one too large. A
// declared length is read into one buffer of exactly that size: no growing and no final copy
// as with io.ReadAll, and the store keeps that buffer as it is (issue 15).
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength < 0 || resp.ContentLength > limit {
		return io.ReadAll(io.LimitReader(resp.Body, limit+1))
	}
	body := make([]byte, resp.ContentLength)
	if _, err := io.ReadFull(resp.Body, body); err != nil {
		return nil, err
	}
	// Read on to the end of the body: net/http reuses the connection only once a read has
	// returned io.EOF (usually it came with the last bytes, and this returns at once).
	var extra [1]byte
	switch _, err := io.ReadFull(resp.Body, extra[:]); err {
	case io.EOF:
		return body, nil
	case nil:
		return nil, fmt.Errorf("body longer than its Content-Length %d", resp.ContentLength)
	default:
		return nil, err
	}
}

// fillKind is what a fill with opts sends upstream (originRequest; a fleet node is only
// asked by a shared fill).
func fillKind(opts fillOptions) upstreamKind {
	if opts.direct {
		return directFill
	}
	return sharedFill
}

// fillPolicy is what RFC 9111 and the edge's own rules say of storing a fill's answer.
func fillPolicy(req *request, status int, h http.Header, respTime time.Time) httpcache.Policy {
	policy := httpcache.ResponsePolicy(http.MethodGet, req.r.Header, status, h, respTime)
	if len(h.Values("Set-Cookie")) > 0 {
		// One user's cookie must never be handed to another.
		policy.Storable, policy.Reason = false, "set-cookie"
	}
	if isEventStream(h) {
		policy.Storable, policy.Reason = false, "event-stream"
	}
	if httpcache.TooManySurrogateKeys(h) {
		// Only MaxSurrogateKeys are indexed: a purge by any other key would miss the copy.
		policy.Storable, policy.Reason = false, "too-many-surrogate-keys"
	}
	return policy
}

// newObject is an upstream answer for req as a store object, of Vary key variant
// (Node.fillVariant). Its stored-at time is when the fetch began, so a purge applied while it
// was in flight still matches it (purge rule 2).
func newObject(req *request, status int, h http.Header, body []byte, policy httpcache.Policy, variant string, began, respTime time.Time, initialAge time.Duration) *store.Object {
	lm, _ := httpcache.ParseDate(h.Get("Last-Modified"))
	// The key's path, not the client's spelling of it: a prefix purge matches what the key
	// stores, whichever way a client that filled it spelt it (%70re/a is /pre/a).
	path, _, _ := strings.Cut(req.target, "?")
	return &store.Object{
		Primary:      req.key,
		Variant:      variant,
		Host:         req.host.cfg.Host,
		Path:         path,
		Status:       status,
		Header:       h,
		Body:         body,
		StoredAt:     began,
		ResponseTime: respTime,
		InitialAge:   initialAge,
		Policy:       policy,
		Keys:         httpcache.SurrogateKeys(h),
		LastModified: lm,
	}
}

// refuseUntrusted marks an answer that no verified chain of fleet nodes vouches for as not
// storable: it may lack the purge identity (surrogate keys) of the object. Either the peer or
// shield did not verify our fill request, or it relays such an answer from its own upstream.
func (n *Node) refuseUntrusted(p *httpcache.Policy, req *request) {
	if p.Storable {
		n.metrics.hopUnstored.Inc()
		n.log.Warn("peer or shield answer not from a verified chain of fill requests; serving it uncached",
			"host", req.host.cfg.Host, "path", req.path)
	}
	p.Storable, p.Reason = false, "untrusted-fill"
}

// takeFields removes from h the fields that private="..." and no-cache="..." say a shared
// cache must not keep (stripFields), and returns them (nil if none was there): RFC 9111
// §5.2.2.4 and §5.2.2.7 keep them from other requests, not from the one they answer.
func takeFields(h http.Header, p httpcache.Policy) http.Header {
	var own http.Header
	for _, f := range p.StripFields {
		k := http.CanonicalHeaderKey(f)
		if vs, ok := h[k]; ok {
			if own == nil {
				own = http.Header{}
			}
			own[k] = vs
			delete(h, k)
		}
	}
	return own
}

// stripFields removes the fields that private="..." and no-cache="..." say a shared cache must
// not store or reuse.
func stripFields(h http.Header, p httpcache.Policy) {
	for _, f := range p.StripFields {
		h.Del(f)
	}
}

// statusError is an upstream answering with a server error.
type statusError struct {
	status int
	tier   string
}

func (e *statusError) Error() string { return fmt.Sprintf("%s answered %d", e.tier, e.status) }

// errLoop is a fill that would have to be forwarded past the hop limits.
var errLoop = errors.New("fill would loop: shield fill reached a PoP that is not the shield")

// fetchTiers fetches from the key's owner in this PoP, else the shield PoP, else the origin.
// An owner or shield node that fails or times out is skipped for the next in hash order.
func (f *filler) fetchTiers(req *request, stale *store.Object, opts fillOptions) (*http.Response, string, error) {
	n := f.n
	t := n.tiers.Load()
	if !opts.direct && !req.hop.peer && !req.hop.shield {
		for _, p := range rendezvous(t.peers, req.key) {
			if p.ID == n.cfg.Node {
				break // we own the key (or every better owner failed): go upstream ourselves
			}
			resp, err := f.fetchNode(req, p, "peer", hops{peer: true}, stale, n.fillCacheControl(req), "")
			if err == nil {
				return resp, "peer", nil
			}
			n.metrics.tierSkips.WithLabelValues("peer").Inc()
			n.log.Debug("peer fill failed, trying next", "peer", p.ID, "key", req.key, "err", err)
		}
	}
	if shield := req.host.cfg.Shield; !opts.direct && shield != "" && shield != n.cfg.PoP {
		if req.hop.shield {
			n.log.Warn("fill loop: shield fill arrived at a PoP that is not the host's shield",
				"host", req.host.cfg.Host, "shield", shield, "pop", n.cfg.PoP)
			return nil, "shield", errLoop
		}
		for _, p := range rendezvous(t.shields[shield], req.key) {
			resp, err := f.fetchNode(req, p, "shield", hops{peer: req.hop.peer, shield: true}, stale, n.fillCacheControl(req), "")
			if err == nil {
				return resp, "shield", nil
			}
			n.metrics.tierSkips.WithLabelValues("shield").Inc()
			n.log.Debug("shield fill failed, trying next", "shield", p.ID, "key", req.key, "err", err)
		}
	}
	resp, err := f.fetchOrigin(req, stale, opts)
	return resp, "origin", err
}

// fetchNode asks another edge node for the object. A transport error or timeout is an error
// (the caller moves on); any HTTP answer, even a 5xx, is the node's answer. The time to its
// header (or failure) is timed as tier's ("peer" or "shield"; "" times nothing: the asks for a
// stale copy, which are no fills).
func (f *filler) fetchNode(req *request, p Peer, tier string, h hops, stale *store.Object, cacheControl, rng string) (*http.Response, error) {
	n := f.n
	// The node has peer_timeout to answer with its header. Its body then streams under the
	// fill's own bounds, as an origin's does: a large object through a shield takes as long
	// as the link needs, and a timer left on the body cut it short mid-way.
	// Its end is a timeout, not this caller giving up: fetch counts it against the node's
	// breaker (a plain cancel is excluded, and a hung node was waited for on every miss).
	ctx, cancel := context.WithCancelCause(req.r.Context())
	timer := time.AfterFunc(n.cfg.PeerTimeout, func() { cancel(errPeerTimeout) })
	up, err := upstreamRequest(ctx, req, "http", p.Addr, "")
	if err != nil {
		timer.Stop()
		cancel(nil)
		return nil, fmt.Errorf("build fill request for %s: %w", p.ID, err)
	}
	up.Host = req.host.cfg.Host
	// Validators, hop, purge sequence, signature, Cache-Control, Range.
	up.Header = n.upstreamHeader(req, sharedFill, 7)
	setValidators(up.Header, stale, false)
	up.Header.Set(hopHeader, h.String())
	up.Header.Set(purgeSeqHeader, strconv.FormatUint(n.fillPurgeSeq(req), 10))
	if cacheControl != "" {
		up.Header.Set("Cache-Control", cacheControl)
	}
	if rng != "" {
		up.Header["Range"] = []string{rng}
	}
	n.signHop(up)
	start := n.clock()
	resp, err := f.upstream("peer", p.ID, p.Addr).Do(up)
	if tier != "" {
		n.metrics.fetched(tier, n.clock().Sub(start))
	}
	if !timer.Stop() {
		// peer_timeout passed before the header (or as it came in: the body's context is gone).
		if err == nil {
			resp.Body.Close()
		}
		err = fmt.Errorf("no answer within peer_timeout %v: %w", n.cfg.PeerTimeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("fill %s from %s: %w", req.target, p.ID, err)
	}
	if resp.StatusCode == http.StatusMisdirectedRequest {
		resp.Body.Close()
		cancel(nil)
		return nil, fmt.Errorf("fill %s from %s: %s", req.target, p.ID, resp.Status)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// edgeCodedHeader is a fleet-only field of a node's answer to a verified fill request: the
// content coding the edge applied itself to the object it answers with (store.Object.EdgeCoded),
// so that the node filled from it knows as well as the one that encoded it. Nothing else can
// tell: an origin may tag its own gzip answer "x-gzip", the edge's own suffix. Like the
// surrogate fields, it is believed only on an answer marked trusted (hopTrustedValue).
const edgeCodedHeader = "Meridian-Edge-Coded"

// takeEdgeCoded removes the edge-coded field from an upstream answer's header h and reports
// whether it says the answer's coding is an edge's: only a fleet node's trusted answer
// (trusted) can, and the coding it names must be the answer's Content-Encoding.
func takeEdgeCoded(h http.Header, trusted bool) bool {
	v, ok := h[edgeCodedHeader]
	if !ok {
		return false
	}
	delete(h, edgeCodedHeader)
	return trusted && len(v) == 1 && v[0] != "" && v[0] == h.Get("Content-Encoding")
}

// fleetField reports whether the canonical field name k is one the fleet's nodes send each
// other (hopHeader, edgeCodedHeader, fleetKeysHeader), which no client may get: from an
// origin, it would be taken for the fleet's.
func fleetField(k string) bool {
	return k == hopHeader || k == edgeCodedHeader || k == fleetKeysHeader
}

// deleteFleetFields removes the fleet's own fields (fleetField) from h.
func deleteFleetFields(h http.Header) {
	delete(h, hopHeader)
	delete(h, edgeCodedHeader)
	delete(h, fleetKeysHeader)
}

// fleetKeysHeader is a fleet-only field of a node's answer to a verified fill request: the
// surrogate keys the object is stored under, space-separated, when its stored header lacks a
// field that declared them (the origin's no-cache="..." or private="..." named it, so it is not
// stored, store.Object.Keys). The node filled from it stores its copy under them, or a purge
// by one of them would miss that copy. Like the surrogate fields, it is believed only on an
// answer marked trusted (hopTrustedValue).
const fleetKeysHeader = "Meridian-Surrogate-Keys"

// takeFleetKeys removes the fleet keys field from an upstream answer's header h and returns
// the keys it lists if a trusted fleet node's answer (trusted) carries it.
func takeFleetKeys(h http.Header, trusted bool) (keys []string, ok bool) {
	v, has := h[fleetKeysHeader]
	if !has {
		return nil, false
	}
	delete(h, fleetKeysHeader)
	if !trusted || len(v) != 1 {
		return nil, false
	}
	return strings.Fields(v[0]), true
}

// markFleetKeys tells a verified fleet node (req) the surrogate keys of obj, which h answers
// with, when h may not declare them all: the origin said not to store a field that does
// (fleetKeysHeader). Keys with white space are left out: no purge can name one.
func markFleetKeys(h http.Header, req *request, obj *store.Object) {
	if !req.fromPeer || !stripsSurrogateField(obj.Policy.StripFields) {
		return
	}
	var b strings.Builder
	for _, k := range obj.SurrogateKeys() {
		if strings.ContainsFunc(k, unicode.IsSpace) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
	}
	h[fleetKeysHeader] = []string{b.String()}
}

// stripsSurrogateField reports whether fields (a Policy.StripFields) names a field that
// declares surrogate keys.
func stripsSurrogateField(fields []string) bool {
	return slices.ContainsFunc(fields, httpcache.SurrogateKeyField)
}

// refreshedKeys returns the purge keys of stale once the 304 h refreshed its header into hdr,
// and whether they are known. A 304 that declares none leaves the copy's (whose fields may not
// be stored); one that declares some gives hdr's. But hdr lacks a declaring field the copy did
// not store (its policy strips it): unless the 304 sends that field again, the copy keeps that
// field's keys beside hdr's (found by a bug-hunt helper: a 304 with a Cache-Tag dropped the
// keys of a Surrogate-Key under no-cache="Surrogate-Key", and a purge by one of them left the
// copy a fresh hit). Those are the copy's keys beyond what its stored fields declared, plus
// perhaps some of the latter; so when the 304 drops a key the stored fields declared, the
// keys are not known (false). Keeping every old key instead let a key the origin dropped name
// the copy on, and one Cache-Tag per answer grew its keys by one per revalidation (found by a
// review helper).
func refreshedKeys(stale *store.Object, h, hdr http.Header) (keys []string, known bool) {
	keys = stale.SurrogateKeys()
	if !httpcache.DeclaresSurrogateKeys(h) {
		return keys, true
	}
	fresh := httpcache.SurrogateKeys(hdr)
	if !slices.ContainsFunc(stale.Policy.StripFields, func(f string) bool {
		return httpcache.SurrogateKeyField(f) && len(h[http.CanonicalHeaderKey(f)]) == 0
	}) {
		return fresh, true
	}
	for _, k := range httpcache.SurrogateKeys(stale.HeaderMap()) {
		if !slices.Contains(fresh, k) {
			return nil, false
		}
	}
	for _, k := range keys {
		if !slices.Contains(fresh, k) {
			fresh = append(fresh, k)
		}
	}
	return fresh, true
}

// markEdgeCoded tells a verified fleet node (req) that obj, which h answers with, is in a
// coding an edge applied (edgeCodedHeader). Nobody else gets the field: no stored header has it.
func markEdgeCoded(h http.Header, req *request, obj *store.Object) {
	if !req.fromPeer {
		return
	}
	if c := edgeCoding(obj); c != "" {
		h[edgeCodedHeader] = []string{c}
	}
}

// relayEdgeCoded tells a verified fleet node (req) that the answer h, which this node passes on
// as it streams without storing it, is in a coding an edge applied, when the trusted fleet
// answer it relays said so (coded, from takeEdgeCoded): the node may store what this one did
// not, and must know as well as from markEdgeCoded for an object. Nobody else gets the field.
func relayEdgeCoded(h http.Header, req *request, coded bool) {
	if coded && req.fromPeer {
		h[edgeCodedHeader] = []string{h.Get("Content-Encoding")}
	}
}

// relayFleetKeys tells a verified fleet node (req) the surrogate keys of the answer h, which
// this node passes on as it streams without storing it, when the trusted fleet answer it
// relays listed them (keys and listed, from takeFleetKeys): as for relayEdgeCoded, the node
// may store what this one did not, and without them it stored its copy under no keys.
func relayFleetKeys(h http.Header, req *request, keys []string, listed bool) {
	if listed && req.fromPeer {
		h[fleetKeysHeader] = []string{strings.Join(keys, " ")}
	}
}

// fetchOrigin asks the host's origin. A direct fill (one client's, with Authorization) uses
// the pass-through client, so its bulkhead is not the cache fills'. A collapsed fill for a
// host that slices asks for the first slice only (firstSlice, slices.go) and gets back the
// answer as if it had asked for the whole object.
func (f *filler) fetchOrigin(req *request, stale *store.Object, opts fillOptions) (*http.Response, error) {
	if !f.rangedFill(req, opts) {
		return f.originRequest(req, stale, opts, "", "")
	}
	resp, err := f.originRequest(req, stale, opts, req.host.firstRange, "")
	if err != nil {
		return nil, err
	}
	return f.firstSlice(req, stale, opts, resp)
}

// originRequest sends one GET to the host's origin, with Range (and If-Range) if given.
func (f *filler) originRequest(req *request, stale *store.Object, opts fillOptions, rng, ifRange string) (*http.Response, error) {
	n := f.n
	o := req.host.origin
	up, err := upstreamRequest(req.r.Context(), req, o.Scheme, o.Host, o.Path)
	if err != nil {
		return nil, fmt.Errorf("build origin request: %w", err)
	}
	up.Host = req.host.cfg.Host
	if req.host.cfg.OriginHost != "" {
		up.Host = req.host.cfg.OriginHost
	}
	kind, client := sharedFill, f.upstream("origin", req.host.cfg.Host, o.Host)
	if opts.direct {
		kind, client = directFill, f.passUpstream(req.host)
	}
	up.Header = n.upstreamHeader(req, kind, fillFields(stale, rng, ifRange))
	setValidators(up.Header, stale, true)
	if rng != "" {
		up.Header["Range"] = []string{rng}
	}
	if ifRange != "" {
		up.Header["If-Range"] = []string{ifRange}
	}
	start := n.clock()
	resp, err := client.Do(up)
	n.metrics.originFetches.Inc()
	n.metrics.fetched("origin", n.clock().Sub(start))
	if err != nil {
		return nil, fmt.Errorf("fetch %s from origin %s: %w", req.target, o.Host, err)
	}
	return resp, nil
}

// fillFields is how many fields originRequest adds to the upstream header: the validators
// for stale, Range and If-Range.
func fillFields(stale *store.Object, rng, ifRange string) int {
	n := 0
	if stale != nil {
		n += 2
	}
	if rng != "" {
		n++
	}
	if ifRange != "" {
		n++
	}
	return n
}

// upstreamRequest is a GET of req's target at scheme://host followed by the base path. Without
// a base path, and when the target's path is the client's (a key may rewrite only the query),
// its URL is put together from the client's parsed path and the target's query instead of
// parsing the whole string again: the request line is the same, EscapedPath being computed
// from the same Path and RawPath (issue 15). The caller sets Host and the header (the
// request has none until then).
func upstreamRequest(ctx context.Context, req *request, scheme, host, base string) (*http.Request, error) {
	path, query, hasQuery := strings.Cut(req.target, "?")
	if base != "" || path != req.path || req.r.URL == nil {
		return http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+host+base+req.target, nil)
	}
	// What NewRequestWithContext makes of a URL without a body, but for the header map it
	// would make for the caller to replace and the parse of a URL built here anyway.
	up := http.Request{Method: http.MethodGet, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: host,
		// RawPath is the path as keyed (wire.EscapedPath), not the client's: from a raw path
		// holding a byte that must be escaped, url would write the request line from Path,
		// where "%2F" is "/".
		URL: &url.URL{Scheme: scheme, Host: host, Path: req.r.URL.Path, RawPath: path,
			RawQuery: query, ForceQuery: hasQuery && query == ""}}
	return up.WithContext(ctx), nil
}

// setValidators asks the upstream to revalidate the stale copy, if any. The origin gets back
// its own entity tag for a variant the edge compressed; another edge node stored the same
// variant under the suffixed tag.
func setValidators(h http.Header, stale *store.Object, toOrigin bool) {
	if stale == nil {
		return
	}
	if etag := revalidationETag(stale, toOrigin); etag != "" {
		h.Set("If-None-Match", etag)
	}
	if lm := stale.HeaderValue("Last-Modified"); lm != "" {
		h.Set("If-Modified-Since", lm)
	}
}

// revalidationETag is the entity tag a revalidation of stale sends ("" if it has none): its
// own, or to the origin, for a variant the edge encoded, the origin's (without the suffix).
func revalidationETag(stale *store.Object, toOrigin bool) string {
	etag := stale.HeaderValue("ETag")
	if c := edgeCoding(stale); toOrigin && c != "" && etag != "" {
		etag, _ = compress.UnsuffixETag(etag, c)
	}
	return etag
}

// appendVia adds this hop to a Via field value: "1.1 name", or "2 name" from HTTP/2 on. It
// builds the value in one allocation (it runs twice per miss: issue 15).
func appendVia(prior string, major, minor int, name string) string {
	var proto string
	switch {
	case major == 1 && minor == 1:
		proto = "1.1"
	case major == 1 && minor == 0:
		proto = "1.0"
	case major >= 2:
		proto = strconv.Itoa(major)
	default:
		proto = strconv.Itoa(major) + "." + strconv.Itoa(minor)
	}
	if prior == "" {
		return proto + " " + name
	}
	return prior + ", " + proto + " " + name
}

// via is appendVia for this node, without building the commonest value (the first hop of an
// HTTP/1.1 exchange) again: it runs twice per miss.
func (n *Node) via(prior string, major, minor int) string {
	if prior == "" && major == 1 && minor == 1 {
		return n.via11
	}
	return appendVia(prior, major, minor, n.name)
}

// cancelOnClose releases a request's timeout context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}

// errPeerTimeout ends a fill request to a peer or shield node that sent no answer within
// peer_timeout.
var errPeerTimeout = fmt.Errorf("peer_timeout: %w", context.DeadlineExceeded)

// upstreamErrorStatus maps a fill error to the status a client gets.
func upstreamErrorStatus(err error) int {
	var se *statusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return se.status
	case errors.Is(err, errLoop):
		return http.StatusLoopDetected
	case errors.Is(err, fetch.ErrBulkheadFull):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}

// supersedes reports whether a full answer of status to a revalidation speaks of the resource,
// so that one that may not be stored drops the stale copy: a 2xx or 3xx, or a 404 or 410 (it is
// gone). A 5xx is a failure, which the copy may stand in for; any other 4xx answers the request
// (one client's malformed or oversized header, a firewall's verdict on its address, a 429), and
// must not drop the copy every other client is served (RFC 9111 §4.4 likewise lets only a
// non-error status invalidate).
func supersedes(status int) bool {
	return status < 400 || status == http.StatusNotFound || status == http.StatusGone
}

// staleIfErrorApplies reports whether a fill that failed with err is an error a stale copy may
// stand in for (stale-if-error): any failure to get an answer, and of the upstream's 5xx
// answers the four RFC 5861 §4 names. Another (501 Not Implemented, 505, 507) is the upstream's
// answer to this request, as nginx's proxy_cache_use_stale reads them.
func staleIfErrorApplies(err error) bool {
	var se *statusError
	return !errors.As(err, &se) || failureStatus(se.status)
}

// failureStatus reports whether an upstream's answer with status is a failure a stale copy may
// stand in for (staleIfErrorApplies).
func failureStatus(status int) bool {
	switch status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// fleetStale asks every other node of the PoP and the shield PoP, in parallel and for at most
// FleetStaleTimeout, for any copy they hold (only-if-cached). The first copy still within its
// stale-if-error window wins.
func (f *filler) fleetStale(req *request) *fillResult {
	n := f.n
	t := n.tiers.Load()
	var nodes []Peer
	for _, p := range t.peers {
		if p.ID != n.cfg.Node {
			nodes = append(nodes, p)
		}
	}
	if s := req.host.cfg.Shield; s != "" && s != n.cfg.PoP {
		nodes = append(nodes, t.shields[s]...)
	}
	if len(nodes) == 0 || req.fromPeer {
		return nil // a fleet node asking us already asked the fleet itself
	}
	ctx, cancel := context.WithTimeout(req.r.Context(), n.cfg.FleetStaleTimeout)
	defer cancel()
	// The asks may outlive this handler (they end with ctx), and share sub: its trace ID is
	// made here once, or they would race to make it.
	sub := req.detached(ctx)
	// The asks are the filler's work (goTracked), so closing the node waits for them; the
	// ones still running when a copy arrives end with ctx when this returns.
	results := make(chan *fillResult, len(nodes))
	asked := 0
	for _, p := range nodes {
		if f.goTracked(func() {
			resp, err := f.fetchNode(&sub, p, "", hops{peer: true, shield: true}, nil, "only-if-cached", "")
			if err != nil {
				results <- nil
				return
			}
			results <- f.staleCopy(&sub, resp)
		}) {
			asked++
		}
	}
	for range asked {
		if r := <-results; r != nil {
			return r
		}
	}
	return nil
}

// earlyBody is a 5xx's body read while the fleet was asked for a copy to stand in for it
// (fleetStaleReading), as readBody returned it.
type earlyBody struct {
	body []byte
	err  error
}

// fleetStaleReading asks the fleet for a copy to stand in for resp, an upstream's 5xx
// (fleetStale), while it reads resp's body, if one that may be kept (max_object_bytes): the
// body's exchange is closed as soon as it has all arrived, giving its slot of the upstream's
// bulkhead (max_concurrent) and its connection back, rather than held unread for as long as
// the fleet takes to answer (fleet_stale_timeout); and a body that trickles is closed as
// soon as a copy is found, not waited for. The body is nil if not read here (the fleet asked
// alone, or not at all as the node closes). Before the body was read on the 5xx's head, a
// small failure held its slot while the fleet was asked, and other fills of that upstream
// were refused with the bulkhead full.
func (f *filler) fleetStaleReading(req *request, resp *http.Response) (*fillResult, *earlyBody) {
	maxObj := req.host.maxObject
	if resp.ContentLength > maxObj {
		// Streamed to the client if nothing stands in for it: not read here.
		return f.fleetStale(req), nil
	}
	found := make(chan *fillResult, 1)
	if !f.goTracked(func() {
		fs := f.fleetStale(req)
		if fs != nil {
			// Ends a read still waiting for the body, which nobody will see: the copy stands in.
			resp.Body.Close()
		}
		found <- fs
	}) {
		return nil, nil // the node is closing: no asks
	}
	body, err := readBody(resp, maxObj)
	if err == nil && int64(len(body)) <= maxObj {
		resp.Body.Close() // all of it is here: the exchange is over
	}
	// req is the ask's until it answers: nothing here touches it before.
	return <-found, &earlyBody{body: body, err: err}
}

// staleCopy turns a peer's only-if-cached answer into a result if it may be served under
// stale-if-error.
func (f *filler) staleCopy(req *request, resp *http.Response) *fillResult {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	now := f.n.clock()
	h := resp.Header
	upCS := h.Get("Cache-Status")
	coded := takeEdgeCoded(h, h.Get(hopHeader) == hopTrustedValue)
	takeFleetKeys(h, false) // served, not stored: the keys do not matter, the field must not reach the client
	httpcache.RemoveHopByHop(h)
	h.Del("Cache-Status")
	initialAge := httpcache.InitialAge(h, now, now)
	h.Del("Age")
	policy := httpcache.ResponsePolicy(http.MethodGet, req.r.Header, resp.StatusCode, h, now)
	body, err := io.ReadAll(io.LimitReader(resp.Body, req.host.maxObject+1))
	if err != nil || int64(len(body)) > req.host.maxObject || !policy.Storable {
		return nil
	}
	o := newObject(req, resp.StatusCode, h, body, policy, f.n.fillVariant(req, policy.Vary, sharedFill), now, now, initialAge)
	o.EdgeCoded = coded
	if !canServeStale(o, store.Usable, -o.TTL(now), policy.StaleIfError) {
		return nil
	}
	return &fillResult{obj: o, status: resp.StatusCode, tier: "peer", upstreamCS: upCS}
}
