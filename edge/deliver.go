package edge

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
)

// fillAndDeliver fills the request's object and answers with it; when the upstream fails it
// falls back to the stale copy (stale-if-error), then to a copy elsewhere in the fleet, and only
// then answers with an error.
func (n *Node) fillAndDeliver(w *logWriter, req *request, stale *store.Object, opts fillOptions) {
	var res fillResult
	if opts.direct {
		res = n.fetchAndStore(req, stale, opts)
	} else {
		res = n.collapsedFill(req, stale, opts)
	}
	defer res.closeStream()
	w.tier = res.tier
	fwd := opts.fwd
	if fwd == "" {
		fwd = "miss"
	}
	if res.err != nil {
		now := n.clock()
		status := upstreamErrorStatus(res.err)
		if stale != nil && canServeStale(stale, opts.verdict, -stale.TTL(now), stale.Policy.StaleIfError) {
			w.cacheStatus = "stale"
			n.metrics.staleServed.WithLabelValues("stale-if-error").Inc()
			n.deliver(w, req, stale, httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: "stale", FwdStatus: status,
				TTL: stale.TTL(now), HasTTL: true, Detail: "stale-if-error"}, "")
			return
		}
		if fs := n.fleetStale(req); fs != nil {
			w.cacheStatus = "stale"
			w.tier = "fleet"
			n.metrics.staleServed.WithLabelValues("fleet-stale").Inc()
			n.deliver(w, req, fs.obj, httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: status,
				TTL: fs.obj.TTL(now), HasTTL: true, Detail: "fleet-stale-if-error"}, fs.upstreamCS)
			return
		}
		if res.obj != nil { // the upstream's own 5xx answer
			w.cacheStatus = "miss"
			n.deliver(w, req, res.obj, httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: res.status, Detail: res.tier}, res.upstreamCS)
			return
		}
		w.note = res.err.Error()
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		n.fail(w, req, status, http.StatusText(status))
		w.cacheStatus = "error"
		return
	}
	if res.stream != nil {
		n.deliverStream(w, req, &res, fwd)
		return
	}
	if res.revalidated {
		fwd = "stale"
	}
	cs := httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: res.status, Stored: res.stored,
		Collapsed: res.collapsed, Detail: res.tier}
	if res.stored {
		cs.TTL, cs.HasTTL = res.obj.TTL(n.clock()), true
	}
	w.cacheStatus = "miss"
	n.deliver(w, req, res.obj, cs, res.upstreamCS)
}

// deliver writes obj to the client. It never modifies obj: header value slices are shared
// with the stored object and only replaced, never appended to.
func (n *Node) deliver(w *logWriter, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) {
	h := w.Header()
	for k, v := range obj.Header {
		h[k] = v
	}
	markHop(h, req)
	if !req.fromPeer && !req.host.cfg.Cache.KeepSurrogateHeaders {
		httpcache.StripSurrogateHeaders(h)
	}
	age := obj.Age(n.clock())
	h["Age"] = []string{strconv.FormatInt(int64(age/time.Second), 10)}
	h["Cache-Status"] = []string{httpcache.AppendStatus(upstreamCS, cs)}
	r := req.r
	if obj.Status == http.StatusOK && needsServeContent(r.Header) {
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil // no sniffing: the origin said nothing, so do we
		}
		delete(h, "Content-Length")
		http.ServeContent(w, r, "", obj.LastModified, bytes.NewReader(obj.Body))
		return
	}
	h["Content-Length"] = []string{strconv.Itoa(len(obj.Body))}
	w.WriteHeader(obj.Status)
	if r.Method != http.MethodHead && bodyAllowed(obj.Status) {
		w.Write(obj.Body)
	}
}

// markHop tells a verified fleet node that we answered it as one (surrogate fields kept), and
// removes any such claim from what anyone else gets.
func markHop(h http.Header, req *request) {
	if req.fromPeer {
		h[hopHeader] = []string{hopTrustedValue}
	} else {
		delete(h, hopHeader)
	}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// needsServeContent reports request fields that http.ServeContent answers: conditionals
// (RFC 9110 §13) and byte ranges. Plain requests take the cheaper direct path.
func needsServeContent(h http.Header) bool {
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "Range", "If-Match", "If-Unmodified-Since"} {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// deliverStream passes a response too large to store straight through.
func (n *Node) deliverStream(w *logWriter, req *request, res *fillResult, fwd string) {
	resp := res.stream
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	markHop(h, req)
	if !req.host.cfg.Cache.KeepSurrogateHeaders && !req.fromPeer {
		httpcache.StripSurrogateHeaders(h)
	}
	h.Set("Cache-Status", httpcache.AppendStatus(res.upstreamCS, httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: resp.StatusCode, Detail: "too-large"}))
	w.cacheStatus = "pass"
	w.WriteHeader(resp.StatusCode)
	if req.r.Method == http.MethodHead {
		return
	}
	w.Write(res.head)
	if _, err := io.Copy(w, resp.Body); err != nil {
		w.note = "stream aborted: " + err.Error()
	}
}

// pass sends a request that the cache does not answer (unsafe methods) to the origin and
// streams the answer back. A successful unsafe request invalidates what the cache holds for
// the target and for same-host Location and Content-Location (RFC 9111 §4.4), and for the
// groups named by Cache-Group-Invalidation (RFC 9875).
func (n *Node) pass(w *logWriter, req *request) {
	r := req.r
	w.cacheStatus = "pass"
	switch r.Method {
	case http.MethodConnect, http.MethodTrace:
		n.fail(w, req, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if r.ContentLength > n.cfg.MaxRequestBodyBytes {
		n.fail(w, req, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	body := http.MaxBytesReader(w, r.Body, n.cfg.MaxRequestBodyBytes)
	o := req.host.origin
	up, err := http.NewRequestWithContext(r.Context(), r.Method, o.Scheme+"://"+o.Host+o.Path+r.URL.RequestURI(), body)
	if err != nil {
		n.fail(w, req, http.StatusBadRequest, "bad request target")
		return
	}
	if r.ContentLength == 0 || r.Body == http.NoBody {
		up.Body = nil
	}
	up.ContentLength = r.ContentLength
	up.Host = req.host.cfg.Host
	if req.host.cfg.OriginHost != "" {
		up.Host = req.host.cfg.OriginHost
	}
	for k, v := range r.Header {
		up.Header[k] = v
	}
	httpcache.RemoveHopByHop(up.Header)
	stripFleetFields(up.Header)
	up.Header.Set("Traceparent", req.traceID())
	setForwarded(up.Header, r)
	up.Header.Set("Via", appendVia(r.Header.Get("Via"), r.ProtoMajor, r.ProtoMinor, n.name))
	resp, err := n.upstream("origin "+req.host.cfg.Host, o.Host, false).Do(up)
	w.tier = "origin"
	if err != nil {
		var mbe *http.MaxBytesError
		status := upstreamErrorStatus(err)
		if errors.As(err, &mbe) {
			status = http.StatusRequestEntityTooLarge
		}
		w.note = err.Error()
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		n.fail(w, req, status, http.StatusText(status))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode < 400 {
		n.invalidate(req, r, resp)
	}
	h := w.Header()
	httpcache.RemoveHopByHop(resp.Header)
	for k, v := range resp.Header {
		h[k] = v
	}
	delete(h, hopHeader)
	if !req.host.cfg.Cache.KeepSurrogateHeaders {
		httpcache.StripSurrogateHeaders(h)
	}
	h.Set("Cache-Status", httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: "method", FwdStatus: resp.StatusCode}.String())
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// invalidate applies RFC 9111 §4.4 and RFC 9875 invalidation after a successful unsafe request.
func (n *Node) invalidate(req *request, r *http.Request, resp *http.Response) {
	host := req.host.cfg.Host
	for _, target := range httpcache.InvalidationTargets(r.Method, r.URL, host, resp.StatusCode, resp.Header) {
		path, query, _ := strings.Cut(target, "?")
		n.store.Purge(store.Record{Kind: store.URL, Host: host, Value: httpcache.Key(host, path, query, req.host.keyOpts)})
	}
	for _, g := range httpcache.CacheGroupInvalidation(resp.Header) {
		n.store.Purge(store.Record{Kind: store.Key, Host: host, Value: g})
	}
}
