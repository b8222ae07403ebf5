package edge

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
)

// Content codings at the edge (docs/edge.md, "Compression"). A request's Accept-Encoding is
// normalised at recv to the one coding the edge will serve it (br, zstd, gzip or identity):
// the fill asks the upstream for exactly that coding, and Vary: Accept-Encoding keys on it, so
// the many spellings of one preference share one stored variant. When the upstream answers an
// uncompressed compressible type, the edge compresses it once, in that coding, and stores the
// result as the coding's variant; the identity variant of the same object carries
// Vary: Accept-Encoding too, so both live side by side under one primary key.

// normalizeAcceptEncoding rewrites req's Accept-Encoding to the coding the edge serves it and
// returns that coding ("" for identity); the field as sent stays in req.clientAE. Identity is
// no field at all, so that every request for it has the same Vary key, and upstreamHeader asks
// for it explicitly. Adding the field would cost a request with no other field a map table of
// its own, a third of a hit's allocation (issue 15).
func normalizeAcceptEncoding(req *request) string {
	r := req.r
	req.clientAE = r.Header["Accept-Encoding"] // replaced below, never modified
	coding := httpcache.NormalizeAcceptEncoding(req.clientAE)
	switch coding {
	case "":
		delete(r.Header, "Accept-Encoding")
	case "gzip":
		r.Header["Accept-Encoding"] = gzipField
	case "br":
		r.Header["Accept-Encoding"] = brField
	default:
		r.Header["Accept-Encoding"] = []string{coding}
	}
	return coding
}

// The usual Accept-Encoding values, shared by every request: a full slice expression makes any
// append copy, so no request can change another's.
var (
	identityField = []string{"identity"}[:1:1] // upstreamHeader's
	gzipField     = []string{"gzip"}[:1:1]
	brField       = []string{"br"}[:1:1]
)

// compressAnswer compresses a fill's answer for req when it is compressible: the host allows
// it and the answer is worth it, a 200 of a compressible type, uncompressed, without
// no-transform, not tiny (compress.ShouldCompress, which the caller asks).
// h and policy describe the answer; the header and body to store are returned, with policy's
// Vary updated, and whether the edge encoded them. An answer that could be compressed gets
// Vary: Accept-Encoding even when req wants identity, so its variants share one Vary list.
func (n *Node) compressAnswer(req *request, h http.Header, body []byte, policy *httpcache.Policy, compressible bool) (http.Header, []byte, bool) {
	if !compressible {
		return h, body, false
	}
	varyOnCoding(h, policy)
	if req.coding == "" {
		return h, body, false
	}
	ch, cb, err := compress.Transform(h, body, req.coding, 0)
	if err != nil {
		n.log.Warn("compress answer; storing it uncompressed", "host", req.host.cfg.Host, "path", req.path,
			"coding", req.coding, "err", err)
		return h, body, false
	}
	return ch, cb, true
}

// varyOnCoding adds Accept-Encoding to the Vary of an answer (h and its policy), unless it
// has it or "*".
func varyOnCoding(h http.Header, policy *httpcache.Policy) {
	if !slices.Contains(policy.Vary, "*") && !slices.Contains(policy.Vary, "accept-encoding") {
		h.Set("Vary", compress.MergeVary(h.Values("Vary"), "Accept-Encoding"))
		policy.Vary = addVaryField(policy.Vary, "accept-encoding")
	}
}

// varyOnUpstreamCoding gives an answer the upstream encoded itself Vary: Accept-Encoding when
// it lacks it: the fill asked for the one coding the client's field selected
// (normalizeAcceptEncoding), so the answer depends on that field whether or not the origin
// says so, and stored without it, it would be served to clients that cannot decode it.
func varyOnUpstreamCoding(h http.Header, policy *httpcache.Policy) {
	if compress.Encoded(h) {
		varyOnCoding(h, policy)
	}
}

// addVaryField adds field (lower-case) to a Policy.Vary list, which stays sorted and free of
// duplicates. The list is copied: policies may be shared.
func addVaryField(vary []string, field string) []string {
	i, found := slices.BinarySearch(vary, field)
	if found {
		return vary
	}
	return slices.Insert(slices.Clone(vary), i, field)
}

// edgeCoding returns the coding the edge applied to obj ("" if none).
func edgeCoding(obj *store.Object) string {
	if !obj.EdgeCoded {
		return ""
	}
	return obj.HeaderValue("Content-Encoding")
}

// keepEdgeCoding carries what the edge added to stale's header across a 304 (notModified) into
// the refreshed header h: the coding and Accept-Encoding in Vary, and the coding's ETag suffix;
// and what it removed: a digest the 304 carries is of the origin's bytes, not the edge's.
// An origin's 304 names the origin's own tag, which gets the suffix whatever it ends with
// ("x-gzip" is the identity answer's tag if the origin sent it so, never the variant's); a
// fleet node's names the variant's tag, suffixed already by the node that encoded it. The
// suffix is the stored tag's, with the mark of the encoder that made the stored bytes (perhaps
// another node's); a copy stored without one gets this node's suffix made weak, since whose
// encoder made its bytes is unknown.
func keepEdgeCoding(stale *store.Object, h, notModified http.Header, fromOrigin bool) {
	if c := edgeCoding(stale); c != "" {
		if etag := notModified.Get("ETag"); etag != "" {
			if _, suffixed := compress.UnsuffixETag(etag, c); fromOrigin || !suffixed {
				old := stale.HeaderValue("ETag")
				tag, ok := compress.ResuffixETag(etag, old, c)
				if !ok {
					if tag, ok = compress.SuffixETag(etag, c); ok && !strings.HasPrefix(tag, "W/") {
						tag = "W/" + tag
					}
				}
				if ok {
					if old == "W/"+tag {
						// As Refresh: the strong form of the copy's weak tag (nginx's 304)
						// does not make the tag of the edge's bytes strong.
						tag = old
					}
					h.Set("ETag", tag)
				} else {
					h.Del("ETag") // as compress.Transform drops a tag it cannot suffix
				}
			}
		}
		h.Set("Content-Encoding", c)
		compress.DropDigests(h)
	}
	if slices.Contains(stale.Policy.Vary, "accept-encoding") {
		h.Set("Vary", compress.MergeVary(h.Values("Vary"), "Accept-Encoding"))
	}
}

// Decoding on delivery (docs/edge.md, "Decoding for clients that cannot"). An origin that
// ignores Accept-Encoding answers gzip (or br, zstd) to a fill that asked for identity, and the
// answer is stored as that variant. A client that does not accept the coding gets it decoded
// on the way out, as from Varnish (http_gzip_support) and nginx's gunzip module; the stored
// copy stays as it came. Fleet nodes get it as stored: the node that answers the client
// decodes, once.

// undoCoding returns the content coding the edge removes from an answer (status, header h) on
// its way to req's client, or "" to send it as it is: the answer has one coding the edge
// decodes (compress.Decodable) that the client does not accept (clientAccepts), has a body
// that can be decoded whole (not a 206, nor a Content-Range) and no no-transform (RFC 9110
// §7.7: a proxy must not change the coding then).
func undoCoding(req *request, status int, h http.Header) string {
	coding := decodableFor(req, status, h)
	if coding == "" || coding == req.coding || clientAccepts(req.clientAE, coding) {
		return ""
	}
	return coding
}

// decodableFor returns the coding the edge would remove from an answer (status, header h) to
// req's client if that client did not accept it (undoCoding), or "": then what the edge sends
// depends on Accept-Encoding, and the answer must say so (Vary) to every client.
func decodableFor(req *request, status int, h http.Header) string {
	if req.fromPeer || status < 200 || status == http.StatusPartialContent ||
		h.Get("Content-Range") != "" || compress.NoTransform(h) {
		return ""
	}
	return compress.Decodable(h)
}

// undoObjectCoding is undoCoding for a stored object, cheap for a hit: an object without a
// coding (store.Object.Coded, a flag) or coded by the edge needs no look at its header. The
// edge codes a variant in the coding that every client of it asked for (compressAnswer;
// Vary: Accept-Encoding keys on that coding), so only an upstream's coding can be one a client
// does not accept, and a client gets the coding it asked for nearly always: a header map is
// built only when it does not.
func undoObjectCoding(req *request, obj *store.Object) string {
	if req.fromPeer || obj.EdgeCoded || !obj.Coded() {
		return ""
	}
	if obj.HeaderValue("Content-Encoding") == req.coding {
		return ""
	}
	return undoCoding(req, obj.Status, obj.HeaderMap())
}

// newDecoder starts decoding src, an answer's body in coding, for a client that does not
// accept it (compress.Budget.NewReader): the window the stream declares is charged to the
// node's decode budget (cache.decode_window_bytes) until the decoder is closed. Past the
// budget it fails with compress.ErrOverBudget, counted, and the caller answers refuseDecode:
// without a bound, clients that each ask for an answer coded with a large window (br's 16 MiB)
// would hold that much each, as many as they open.
func (n *Node) newDecoder(src io.Reader, coding string) (io.ReadCloser, error) {
	dec, err := n.decodes.NewReader(src, coding)
	if errors.Is(err, compress.ErrOverBudget) {
		n.metrics.decodeRefused.Inc()
	}
	return dec, err
}

// refuseDecode answers req, whose answer newDecoder refused (err) for the decode budget, 503
// with Retry-After, as a full bulkhead is: the budget frees as decodes end. Nothing has been
// sent. Cache-Status says why (detail=decode-budget-full), the access log notes err, and
// nothing is logged besides: a flood of such requests must not flood the log.
func (n *Node) refuseDecode(w *logWriter, req *request, err error) {
	w.Header().Set("Retry-After", "1")
	n.fail(w, req, http.StatusServiceUnavailable, "decode budget full")
	w.note = err.Error() // after fail, which notes its own
}

// clientAccepts reports whether a client that sent ae, its Accept-Encoding field lines,
// accepts coding. No field at all accepts none: RFC 9110 §12.5.3 allows any coding then, but
// clients that send none (scripts, health checks, old libraries) rarely decode one, and
// Varnish and nginx decode for them too.
func clientAccepts(ae []string, coding string) bool {
	return len(ae) > 0 && httpcache.AcceptsEncoding(ae, coding)
}
