package control

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// APIError is the body of every error the API returns.
type APIError struct {
	Error string `json:"error"`
	// Field names the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
}

// WriteError writes err as the API's JSON error with status. An empty field is filled from a
// *wire.FieldError in err's chain, if any.
func WriteError(w http.ResponseWriter, status int, field string, err error) {
	var fe *wire.FieldError
	if field == "" && errors.As(err, &fe) {
		field = fe.Field
	}
	msg := http.StatusText(status)
	if err != nil {
		msg = err.Error()
	}
	writeJSON(w, status, APIError{Error: msg, Field: field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// answerBufs holds *[]byte buffers for purge answers: the API writes one per purge, a few KiB
// each in a fleet of tens of nodes.
var answerBufs sync.Pool

// maxPooledAnswer bounds the buffers answerBufs keeps.
const maxPooledAnswer = 64 << 10

// writePurgeAnswer writes the answer to POST /v1/purge: like writeJSON, but compact. It carries
// a receipt per node, and indenting it took more CPU than the rest of the handler.
func writePurgeAnswer(w http.ResponseWriter, status int, resp purge.Response) {
	size := 256 // a node's receipt is about 200 bytes: grow the buffer once at most
	for _, rc := range resp.Purges {
		size += 256
		for _, p := range rc.PoPs {
			size += 96 + 224*len(p.Nodes)
		}
	}
	// The buffer goes back to the pool once Write returned (a Writer does not keep what it is
	// given); a large one is left to the collector, so one huge answer does not stay held.
	bp, _ := answerBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer func() {
		if cap(*bp) <= maxPooledAnswer {
			answerBufs.Put(bp)
		}
	}()
	data, err := purge.AppendResponse(slices.Grow((*bp)[:0], size), resp)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "", err)
		return
	}
	data = append(data, '\n')
	*bp = data[:0]
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data) // the client went away; nothing to do
}

// DecodeJSON decodes the request body into v strictly: at most max bytes (max <= 0 means
// DefaultMaxBodyBytes), exactly one JSON value, no unknown fields, every field named exactly
// as its json tag and none twice in one object (at any depth), and a JSON content type if one
// is given. On failure it has already written an error naming the problem, and returns it: 400,
// 413 for a body over max, 415 for a wrong content type or any content coding.
func DecodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if max <= 0 {
		max = DefaultMaxBodyBytes
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			err = fmt.Errorf("content type %q is not application/json", ct)
			WriteError(w, http.StatusUnsupportedMediaType, "", err)
			return err
		}
	}
	// No content coding is decoded: a gzip body would read as invalid JSON (RFC 9110 15.5.16).
	// A header naming none (empty, or only identity) is an uncompressed body.
	if ce := r.Header.Values("Content-Encoding"); contentCoded(ce) {
		err := fmt.Errorf("content coding %q is not supported: send the body uncompressed", strings.Join(ce, ", "))
		w.Header().Set("Accept-Encoding", "identity")
		WriteError(w, http.StatusUnsupportedMediaType, "", err)
		return err
	}
	// A body over the limit gets 413, as nginx's client_max_body_size answers: before anything
	// is read when Content-Length declares it (a client sending "Expect: 100-continue" never
	// sends it), else once reading passes the limit (below).
	if r.ContentLength > max {
		err := errBodyTooLarge(max)
		WriteError(w, http.StatusRequestEntityTooLarge, "", err)
		return err
	}
	// The body is kept as it is read, for checkKeys once it decoded.
	var body bytes.Buffer
	if r.ContentLength > 0 { // at most max, checked above
		body.Grow(int(r.ContentLength))
	}
	dec := json.NewDecoder(io.TeeReader(http.MaxBytesReader(w, r.Body, max), &body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errTrailing
			if terr != nil && !isSyntax(terr) {
				err = terr
			}
		}
	}
	// JSON is UTF-8 (RFC 8259): encoding/json reads each invalid byte as U+FFFD, so a config
	// would be stored, or a field named, other than the one sent. Checked over what was read
	// (all of it once decoded), and ahead of other errors but the size's, which says the most.
	if mbe := (*http.MaxBytesError)(nil); !errors.As(err, &mbe) {
		if at := invalidUTF8(body.Bytes(), err == nil); at >= 0 {
			err = fmt.Errorf("request body is not valid UTF-8 at byte %d", at+1)
			WriteError(w, http.StatusBadRequest, "", err)
			return err
		}
		// So is an escape of half a surrogate pair ("\ud800"), which it reads as U+FFFD too.
		if at := loneSurrogate(body.Bytes(), err == nil); at >= 0 {
			err = fmt.Errorf("request body has a lone surrogate %s at byte %d: not a character", body.Bytes()[at:at+6], at+1)
			WriteError(w, http.StatusBadRequest, "", err)
			return err
		}
	}
	if err == nil {
		// DisallowUnknownFields lets through a field named in another case, or named twice.
		err = checkKeys(body.Bytes(), reflect.TypeOf(v))
		if err != nil {
			WriteError(w, http.StatusBadRequest, "", err) // a *wire.FieldError names the field
		}
		return err
	}
	status := http.StatusBadRequest
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		status = http.StatusRequestEntityTooLarge
	}
	field, derr := describeDecodeError(err, max)
	if derr == nil {
		// An error of a type that decodes itself, which encoding/json returns unnamed.
		if derr = selfDecodeError(body.Bytes(), reflect.TypeOf(v)); derr == nil {
			derr = fmt.Errorf("invalid value: %w", err)
		}
	}
	WriteError(w, status, field, derr)
	return derr
}

// limitBody holds a route's request body to --max-body-bytes before the route's handler runs,
// whether or not the handler reads a body, as DecodeJSON does for the routes that read one: a
// route that ignores its body (a drain) would otherwise act on a request of any size, and
// net/http would then read up to 256 KiB of it to keep the connection. A body that
// Content-Length declares larger gets 413 before any of it is read (a client that sent
// "Expect: 100-continue" never sends it); one of unknown length (chunked) is read ahead and
// cut with 413 once it passes the limit. Handle puts it behind the auth, so a client without
// a valid token learns nothing of the limit: it gets its 401 as before.
//
// authed says a token was checked before it. A chunked body no token vouches for (/healthz)
// is not read ahead, or anyone could have control read and hold the limit's bytes per
// request: it is cut at the limit as the route reads it, and of one the route ignores
// net/http reads at most 256 KiB after the answer, kept nowhere, as after a 401.
func (s *Server) limitBody(h http.Handler, authed bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		max := s.cfg.MaxBodyBytes
		switch {
		case r.ContentLength > max:
			WriteError(w, http.StatusRequestEntityTooLarge, "", errBodyTooLarge(max))
			return
		case r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody && !authed:
			r.Body = http.MaxBytesReader(w, r.Body, max)
		case r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody:
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				WriteError(w, http.StatusRequestEntityTooLarge, "", errBodyTooLarge(max))
				return
			}
			if err != nil {
				WriteError(w, http.StatusBadRequest, "", fmt.Errorf("read request body: %w", err))
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		h.ServeHTTP(w, r)
	})
}

// checkQuery refuses (400, naming it) a query parameter the route does not take, one of once
// given more than once, and a query that does not parse (net/http's parser drops a pair it
// cannot read, one with a ';' say): ignored, a misspelt "?nodes=" for "?node=" would have the
// request done as if it had not been given, every unreachable node declared gone. once are the
// parameters the route takes once, many those it takes any number of times.
func checkQuery(w http.ResponseWriter, r *http.Request, once, many []string) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "", fmt.Errorf("invalid query %q: %w", r.URL.RawQuery, err))
		return nil, false
	}
	names := slices.Sorted(maps.Keys(q))
	for _, name := range names {
		switch {
		case slices.Contains(many, name):
		case slices.Contains(once, name):
			if len(q[name]) > 1 {
				WriteError(w, http.StatusBadRequest, name, fmt.Errorf("query parameter %q is given %d times, want it once", name, len(q[name])))
				return nil, false
			}
		default:
			want := "none"
			if all := append(slices.Clone(once), many...); len(all) > 0 {
				want = strings.Join(all, ", ")
			}
			WriteError(w, http.StatusBadRequest, name, fmt.Errorf("unknown query parameter %q (%s %s takes %s)", name, r.Method, r.Pattern[strings.IndexByte(r.Pattern, ' ')+1:], want))
			return nil, false
		}
	}
	return q, true
}

// noQuery refuses, with checkQuery's 400, any query parameter but those named in many (each
// may repeat): for the routes that take none (or, /metrics, promhttp's "name[]" filter). An
// operator's "?host=" (believed to filter) or "?hsot=" would otherwise be answered with
// everything, as if it had not been given, and a "?dry_run=1" on a route that changes
// something would have it done. GET /healthz is left out: probes and load balancers may add a
// query, and a 400 there would read as control being down.
func noQuery(h http.Handler, many ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			if _, ok := checkQuery(w, r, nil, many); !ok {
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// contentCoded reports whether the Content-Encoding field values name a coding other than
// identity; empty list elements are ignored (RFC 9110 5.6.1).
func contentCoded(values []string) bool {
	for _, v := range values {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}

// invalidUTF8 is the index of the first byte of b that is not valid UTF-8, or -1. Unless
// complete, b may end in the middle of a character (a read stopped there), which is not counted.
func invalidUTF8(b []byte, complete bool) int {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			if !complete && !utf8.FullRune(b[i:]) {
				return -1
			}
			return i
		}
		i += n
	}
	return -1
}

// loneSurrogate is the index of the first \u escape in b that is half of a UTF-16 surrogate
// pair without its other half (RFC 8259 §8.2), or -1. A backslash is valid JSON only in a
// string, so b is scanned as a whole. Unless complete, b may end in the middle of a pair (a
// read stopped there), which is not counted.
func loneSurrogate(b []byte, complete bool) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] != 'u' {
			i++ // a two-byte escape: its second byte may be a backslash
			continue
		}
		r, ok := hex4(b[i+2:])
		switch {
		case !ok, !utf16.IsSurrogate(r):
		case r >= 0xdc00: // a low half first
			return i
		default: // a high half: the next escape must be a low one
			next := b[i+6:]
			if len(next) > 0 && next[0] != '\\' || len(next) > 1 && next[1] != 'u' {
				return i
			}
			if len(next) < 6 {
				if !complete {
					return -1
				}
				return i
			}
			if lo, ok := hex4(next[2:]); !ok || utf16.DecodeRune(r, lo) == unicode.ReplacementChar {
				return i
			}
			i += 6
		}
	}
	return -1
}

// hex4 reads the four hex digits at b's start.
func hex4(b []byte) (rune, bool) {
	var v [2]byte
	if len(b) < 4 {
		return 0, false
	}
	if _, err := hex.Decode(v[:], b[:4]); err != nil {
		return 0, false
	}
	return rune(v[0])<<8 | rune(v[1]), true
}

func errBodyTooLarge(max int64) error {
	return fmt.Errorf("request body is larger than %d bytes", max)
}

var errTrailing = errors.New("request body holds more than one JSON value")

func isSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

// describeDecodeError turns encoding/json's errors into messages for API clients; it returns a
// nil error for an error of none of encoding/json's kinds, which a type that decodes itself
// returned (DecodeJSON names its field).
func describeDecodeError(err error, max int64) (field string, _ error) {
	var (
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return "", errBodyTooLarge(max)
	case errors.Is(err, io.EOF):
		return "", errors.New("request body is empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "", errors.New("invalid JSON: the body ends in the middle of a value")
	case errors.As(err, &se):
		return "", fmt.Errorf("invalid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		if te.Field == "" {
			return "", fmt.Errorf("request body is a JSON %s, want a %s", te.Value, te.Type)
		}
		return te.Field, fmt.Errorf("%s: is a JSON %s, want a %s", te.Field, te.Value, te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := shortKey(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
		return name, fmt.Errorf("unknown field %q", name)
	case errors.Is(err, errTrailing):
		return "", err
	}
	return "", nil // none of encoding/json's own: a type that decodes itself refused its value
}

// ServeHTTP routes a request. Unknown paths and methods get the API's JSON errors too.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A path with an empty or dot segment ("/v1//purge", from a base URL with a trailing slash)
	// is no route of the API: the mux would redirect it, with an HTML body (or none), which a
	// script not following redirects took for the answer. The escaped path, as the mux reads it:
	// "%2e" or "%2F" is part of a segment, not a dot segment or a separator.
	if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && canonicalPath(p) != p {
		WriteError(w, http.StatusNotFound, "", fmt.Errorf("no route for %s %s (the path is not in canonical form: did you mean %s?)", r.Method, p, canonicalPath(p)))
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		// Through the mux again: Handler does not set the request's path values.
		s.mux.ServeHTTP(w, r)
		return
	}
	// Let the mux decide between 404, 405 and a redirect, then answer in our format.
	cw := &captureWriter{header: w.Header()}
	h.ServeHTTP(cw, r)
	switch cw.status {
	case http.StatusMethodNotAllowed:
		WriteError(w, cw.status, "", fmt.Errorf("method %s is not allowed on %s", r.Method, r.URL.Path))
	case http.StatusNotFound:
		WriteError(w, cw.status, "", fmt.Errorf("no route for %s %s", r.Method, r.URL.Path))
	default:
		WriteError(w, cw.status, "", nil)
	}
}

// canonicalPath is p as http.ServeMux wants it (it redirects any other form): rooted, without
// empty or dot segments, a trailing slash kept.
func canonicalPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if p[len(p)-1] == '/' && c != "/" {
		c += "/"
	}
	return c
}

// captureWriter records the status the mux's fallback handler chose and drops its body.
type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return len(b), nil
}
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

// hostRoutes are the built-in routes that check each host against the token's hosts
// themselves. Every other route with a scope is fleet-wide, and host-scoped tokens get 403.
var hostRoutes = map[string]bool{
	"GET /v1/hosts":                      true, // lists only the token's hosts
	"GET /v1/hosts/{host}":               true,
	"PUT /v1/hosts/{host}":               true,
	"DELETE /v1/hosts/{host}":            true,
	"POST /v1/purge":                     true,
	"GET /v1/purges/{id}":                true,
	"DELETE /v1/purges/{id}/unreachable": true,
}

// authorize applies the bearer-token check for scope: a client that failed too often gets 429
// before its token is looked at, a missing or unknown token 401, a token without the scope (or
// limited to hosts, on a fleet-wide route) 403.
func (s *Server) authorize(scope string, h http.Handler) http.Handler {
	if scope == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, now := clientAddr(r, s.trusted), time.Now()
		client := clientKey(addr)
		if wait := s.authFails.retryAfter(client, now); wait > 0 {
			s.authFails.refuse(w, wait)
			return
		}
		tok, ok := s.auth.check(r)
		if !ok {
			if s.authFails.fail(client, now) {
				s.log.Warn("control api: client throttled after failed authentications: its requests get 429 until its failures age out",
					"client", addr, "peer", r.RemoteAddr, "retry_after", s.authFails.retryAfter(client, now).Round(time.Second).String())
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian"`)
			WriteError(w, http.StatusUnauthorized, "", errors.New("missing or invalid bearer token"))
			return
		}
		if !slices.Contains(tok.scopes, scope) {
			WriteError(w, http.StatusForbidden, "", fmt.Errorf("token %q lacks the %q scope", tok.name, scope))
			return
		}
		if tok.hosts != nil && !hostRoutes[r.Pattern] {
			WriteError(w, http.StatusForbidden, "", fmt.Errorf("token %q is limited to hosts %s; %s %s is fleet-wide",
				tok.name, strings.Join(tok.hosts, ", "), r.Method, r.URL.Path))
			return
		}
		h.ServeHTTP(w, r.WithContext(withToken(withTokenName(r.Context(), tok.name), tok)))
	})
}

func (s *Server) initMetrics() {
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_control_http_requests_total",
		Help: "API requests by route pattern and status code.",
	}, []string{"route", "code"})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	s.purgeDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meridian_control_purge_duration_seconds",
		Help:    "Time from a purge's publication to the last expected node's ack.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	s.purgeLate = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meridian_control_purges_incomplete_total",
		Help: "Purges not acked by every expected node within 30 s.",
	})
	s.consumersDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meridian_control_hostile_consumers_deleted_total",
		Help: "Push consumers on the fleet's streams deleted for delivering outside the fleet's inboxes (docs/security.md).",
	})
	s.streamUsage = newStreamUsage()
	s.reg.MustRegister(s.streamUsage.collectors()...)
	s.reg.MustRegister(
		s.purgeDur, s.purgeLate, s.consumersDeleted,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.reqs,
		gauge("meridian_control_fleet_nodes", "Live nodes in the fleet.", func() float64 {
			if v := s.Fleet(); v != nil {
				return float64(len(v.Nodes()))
			}
			return 0
		}),
		gauge("meridian_control_fleet_pops", "PoPs with at least one live node.", func() float64 {
			if v := s.Fleet(); v != nil {
				return float64(len(v.PoPs()))
			}
			return 0
		}),
		gauge("meridian_control_fleet_nodes_draining", "Live nodes that are draining.", func() float64 {
			n := 0
			if v := s.Fleet(); v != nil {
				for _, nd := range v.Nodes() {
					if nd.Draining {
						n++
					}
				}
			}
			return float64(n)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meridian_control_purge_acks_dropped_total",
			Help: "Messages on the purge ack subjects dropped as no node's ack: undecodable, or naming another node than their subject (docs/security.md).",
		}, func() float64 {
			if t := s.Tracker(); t != nil {
				return float64(t.Dropped())
			}
			return 0
		}),
		gauge("meridian_control_nats_connected", "1 while the control plane is connected to NATS.", func() float64 {
			if c := s.Conn(); c != nil && c.IsConnected() {
				return 1
			}
			return 0
		}),
	)
}

func (s *Server) instrument(pattern string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(s.reqs.MustCurryWith(prometheus.Labels{"route": pattern}), h)
}

// routesAPI registers the built-in routes.
func (s *Server) routesAPI() {
	s.Handle("GET /healthz", "", http.HandlerFunc(s.healthz))
	s.Handle("GET /metrics", ScopeRead, noQuery(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}), "name[]"))
	s.Handle("GET /v1/pops", ScopeRead, noQuery(http.HandlerFunc(s.getPoPs)))
	s.Handle("POST /v1/pops/{pop}/drain", ScopeConfig, noQuery(s.drainHandler(true)))
	s.Handle("POST /v1/pops/{pop}/undrain", ScopeConfig, noQuery(s.drainHandler(false)))
	s.Handle("GET /v1/hosts", ScopeRead, noQuery(http.HandlerFunc(s.listHosts)))
	s.Handle("GET /v1/hosts/{host}", ScopeRead, noQuery(http.HandlerFunc(s.getHost)))
	s.Handle("PUT /v1/hosts/{host}", ScopeConfig, noQuery(http.HandlerFunc(s.putHost)))
	s.Handle("DELETE /v1/hosts/{host}", ScopeConfig, noQuery(http.HandlerFunc(s.deleteHost)))
	s.Handle("GET /v1/routing", ScopeRead, noQuery(http.HandlerFunc(s.getRouting)))
	s.Handle("PUT /v1/routing", ScopeConfig, noQuery(http.HandlerFunc(s.putRouting)))
	s.Handle("POST /v1/peer-keys/rotate", ScopeConfig, http.HandlerFunc(s.rotatePeerKey))
}

// Health is the body of GET /healthz.
type Health struct {
	Status string `json:"status"` // "ok", "starting", "stopping" or "nats-disconnected"
	NATS   string `json:"nats"`   // the NATS connection's state
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	stopping, nc := s.stopping, s.nc
	s.mu.Unlock()
	h := Health{Status: "ok", NATS: "none"}
	if nc != nil {
		h.NATS = strings.ToLower(nc.Status().String())
	}
	select {
	case <-s.ready:
	default:
		h.Status = "starting"
	}
	switch {
	case stopping:
		h.Status = "stopping"
	case h.Status == "ok" && (nc == nil || !nc.IsConnected()):
		h.Status = "nats-disconnected"
	}
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

// PoPStatus is one PoP in GET /v1/pops.
type PoPStatus struct {
	ID     string  `json:"id"`
	Region string  `json:"region,omitempty"`
	City   string  `json:"city,omitempty"`
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	// Draining is true when an operator drained the PoP or every node is draining.
	Draining bool `json:"draining"`
	// OperatorDrained is true when the PoP was drained through the API.
	OperatorDrained bool `json:"operator_drained"`
	// Healthy is true when at least one node is healthy and not draining.
	Healthy           bool        `json:"healthy"`
	Utilisation       float64     `json:"utilisation"`
	RequestsPerSec    float64     `json:"requests_per_sec"`
	EgressBytesPerSec float64     `json:"egress_bytes_per_sec"`
	Nodes             []wire.Node `json:"nodes"`
}

// Fleet is the body of GET /v1/pops.
type Fleet struct {
	At   time.Time   `json:"at"`
	PoPs []PoPStatus `json:"pops"`
}

func (s *Server) getPoPs(w http.ResponseWriter, _ *http.Request) {
	v := s.Fleet()
	if v == nil {
		WriteError(w, http.StatusServiceUnavailable, "", errors.New("fleet view is not loaded yet"))
		return
	}
	writeJSON(w, http.StatusOK, s.fleetStatus(v))
}

func (s *Server) fleetStatus(v *fleet.View) Fleet {
	out := Fleet{At: time.Now().UTC(), PoPs: []PoPStatus{}}
	seen := map[string]bool{}
	for _, p := range v.PoPs() {
		ps := PoPStatus{ID: p.ID, Region: p.Region, City: p.City, Lat: p.Lat, Lon: p.Lon,
			Draining: p.Draining(), OperatorDrained: v.Drained(p.ID), Healthy: p.Usable(),
			Utilisation: p.Utilisation(), Nodes: p.Nodes}
		for _, n := range p.Nodes {
			ps.RequestsPerSec += n.Load.RequestsPerSec
			ps.EgressBytesPerSec += n.Load.EgressBytesPerSec
		}
		seen[p.ID] = true
		out.PoPs = append(out.PoPs, ps)
	}
	// A PoP drained before any of its nodes joined is still worth showing.
	s.mu.Lock()
	cv := s.config
	s.mu.Unlock()
	if cv != nil {
		for _, id := range cv.DrainedPoPs() {
			if !seen[id] {
				out.PoPs = append(out.PoPs, PoPStatus{ID: id, Draining: true, OperatorDrained: true, Nodes: []wire.Node{}})
			}
		}
	}
	sort.Slice(out.PoPs, func(i, j int) bool { return out.PoPs[i].ID < out.PoPs[j].ID })
	return out
}

// DrainStatus is the body of the drain and undrain responses.
type DrainStatus struct {
	PoP      string `json:"pop"`
	Draining bool   `json:"draining"`
	// Nodes is how many of the PoP's nodes are registered as the change is stored; Note says
	// so when none is, for a PoP id that may be mistyped (the change is stored all the same: a
	// drain may be set before a PoP's nodes join).
	Nodes int    `json:"nodes"`
	Note  string `json:"note,omitempty"`
}

func (s *Server) drainHandler(drain bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pop := r.PathValue("pop")
		if err := wire.ValidatePoPID(pop); err != nil {
			WriteError(w, http.StatusBadRequest, "pop", err)
			return
		}
		if err := fleet.SetDrain(r.Context(), s.JetStream(), s.cfg.Prefix, pop, drain); err != nil {
			WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("store drain: %w", err))
			return
		}
		out := DrainStatus{PoP: pop, Draining: drain}
		if v := s.Fleet(); v != nil {
			for _, n := range v.AllNodes() {
				if n.PoP == pop {
					out.Nodes++
				}
			}
		}
		s.log.Info("pop drain changed", "pop", pop, "draining", drain, "nodes", out.Nodes, "by", tokenName(r.Context()))
		if out.Nodes == 0 {
			out.Note = fmt.Sprintf("no node of PoP %q is registered: stored for nodes that join it later (check the PoP id)", pop)
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// HostList is the body of GET /v1/hosts.
type HostList struct {
	Hosts []wire.HostConfig `json:"hosts"`
}

// listHosts lists the configured hosts the token may see.
func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	cv := s.config
	s.mu.Unlock()
	out := HostList{Hosts: []wire.HostConfig{}}
	if cv != nil {
		for _, h := range cv.Hosts() {
			if HostAllowed(r.Context(), h.Host) {
				out.Hosts = append(out.Hosts, h)
			}
		}
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Host < out.Hosts[j].Host })
	writeJSON(w, http.StatusOK, out)
}

// hostName returns a host config's name in the form edges serve and clients send in Host:
// lower case, Unicode labels converted to A-labels ("bücher.example" ->
// "xn--bcher-kva.example", idnhost.ToASCII), and a valid hostname.
func hostName(h string) (string, error) {
	a, err := idnhost.ToASCII(h)
	if err != nil {
		return "", err
	}
	if err := wire.ValidateHostname(a); err != nil {
		return "", idnhost.Wrap(h, err)
	}
	return a, nil
}

// pathHost reads and validates the {host} path value, and checks it against the token's hosts.
func pathHost(w http.ResponseWriter, r *http.Request) (string, bool) {
	host, err := hostName(r.PathValue("host"))
	if err != nil {
		WriteError(w, http.StatusBadRequest, "host", err)
		return "", false
	}
	if !HostAllowed(r.Context(), host) {
		WriteError(w, http.StatusForbidden, "host", errHostScope(r.Context(), host))
		return "", false
	}
	return host, true
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	host, ok := pathHost(w, r)
	if !ok {
		return
	}
	hc, err := fleet.GetHost(r.Context(), s.JetStream(), s.cfg.Prefix, host)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		WriteError(w, http.StatusNotFound, "host", s.errNoHostConfig(host))
	case err != nil:
		WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("read host config: %w", err))
	case hc.Host != host:
		// Written behind the API's back: the config view (edges, GET /v1/hosts) skips it.
		WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("read host config: the stored config names host %q, which does not match its key %s: no node serves it; PUT the host again", hc.Host, wire.HostKey(host)))
	default:
		writeJSON(w, http.StatusOK, hc)
	}
}

func (s *Server) putHost(w http.ResponseWriter, r *http.Request) {
	host, ok := pathHost(w, r)
	if !ok {
		return
	}
	var hc wire.HostConfig
	if DecodeJSON(w, r, s.cfg.MaxBodyBytes, &hc) != nil {
		return
	}
	written := hc.Host
	if hc.Host == "" {
		hc.Host = host
	} else if name, err := hostName(hc.Host); err != nil {
		WriteError(w, http.StatusBadRequest, "host", err)
		return
	} else {
		hc.Host = name
	}
	if hc.Host != host {
		WriteError(w, http.StatusBadRequest, "host", fmt.Errorf("host %s does not match the path's %s",
			idnhost.Quote(written, hc.Host), idnhost.Quote(r.PathValue("host"), host)))
		return
	}
	if err := hc.ValidateNew(); err != nil {
		WriteError(w, http.StatusBadRequest, "", err)
		return
	}
	if err := fleet.PutHost(r.Context(), s.JetStream(), s.cfg.Prefix, hc); err != nil {
		s.writeStoreError(w, "store host config", err)
		return
	}
	s.log.Info("host config stored", "host", host, "origin", hc.Origin, "by", tokenName(r.Context()))
	writeJSON(w, http.StatusOK, hc)
}

// writeStoreError answers a config write the bucket refused: 503, as NATS may take it once
// it is back, but 413 for a value larger than one NATS message carries (max_payload), which
// a body under a raised --max-body-bytes can be and no retry will store.
func (s *Server) writeStoreError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, nats.ErrMaxPayload) {
		WriteError(w, http.StatusRequestEntityTooLarge, "", fmt.Errorf("%s: its JSON is larger than the %d bytes NATS carries in one message (max_payload): make it smaller", what, s.Conn().MaxPayload()))
		return
	}
	WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("%s: %w", what, err))
}

func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request) {
	host, ok := pathHost(w, r)
	if !ok {
		return
	}
	err := fleet.DeleteHost(r.Context(), s.JetStream(), s.cfg.Prefix, host)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		WriteError(w, http.StatusNotFound, "host", s.errNoHostConfig(host))
	case err != nil:
		WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("delete host config: %w", err))
	default:
		s.log.Info("host config deleted", "host", host, "by", tokenName(r.Context()))
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) getRouting(w http.ResponseWriter, r *http.Request) {
	rp, err := fleet.GetRouting(r.Context(), s.JetStream(), s.cfg.Prefix)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("read routing policy: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, rp)
}

// rotatePeerKey adds a new key to the fleet's peer keyring (the secret edges sign fill
// requests between nodes with). Nodes sign with it after ?grace (default 30s), so every node
// has learnt it before anyone depends on it; keys older than one that has been signing for
// the grace are dropped.
func (s *Server) rotatePeerKey(w http.ResponseWriter, r *http.Request) {
	q, ok := checkQuery(w, r, []string{"grace"}, nil)
	if !ok {
		return
	}
	grace := fleet.DefaultPeerKeyGrace
	if g := q.Get("grace"); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil || d < time.Second || d > time.Hour {
			WriteError(w, http.StatusBadRequest, "grace", fmt.Errorf("want a duration from 1s to 1h, got %q", g))
			return
		}
		grace = d
	}
	id, err := fleet.RotatePeerKey(r.Context(), s.JetStream(), s.cfg.Prefix, grace)
	if errors.Is(err, wire.ErrPeerKeyringFull) {
		WriteError(w, http.StatusConflict, "", err)
		return
	}
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("rotate peer key: %w", err))
		return
	}
	signFrom := time.Now().Add(grace).UTC()
	s.log.Info("peer key rotated", "key", id, "sign_from", signFrom, "by", tokenName(r.Context()))
	writeJSON(w, http.StatusOK, map[string]any{"key": id, "sign_from": signFrom})
}

func (s *Server) putRouting(w http.ResponseWriter, r *http.Request) {
	var rp wire.RoutingPolicy
	if DecodeJSON(w, r, s.cfg.MaxBodyBytes, &rp) != nil {
		return
	}
	if err := rp.ValidateNew(); err != nil {
		WriteError(w, http.StatusBadRequest, "", err)
		return
	}
	if err := fleet.PutRouting(r.Context(), s.JetStream(), s.cfg.Prefix, rp); err != nil {
		s.writeStoreError(w, "store routing policy", err)
		return
	}
	s.log.Info("routing policy stored", "policy", rp.Policy, "by", tokenName(r.Context()))
	writeJSON(w, http.StatusOK, rp)
}
