package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// Purge API defaults.
const (
	// MaxPurgeWait bounds POST /v1/purge?wait=.
	MaxPurgeWait = 30 * time.Second
	// DefaultPurgeRate is the purge requests per second each token may make.
	DefaultPurgeRate = 50
	// DefaultPurgeBurst is how many purge requests a token may make at once.
	DefaultPurgeBurst = 100
)

// purgeKinds is the order in which a request's receipts are listed (that of Request.Messages).
var purgeKinds = []purge.Kind{purge.KindURL, purge.KindPrefix, purge.KindKey, purge.KindAll}

// routesPurge registers the purge API. Receipts need the purge scope too: whoever may purge may
// follow up on their purge, and a CI job holding only a purge token should not need read.
func (s *Server) routesPurge() {
	s.Handle("POST /v1/purge", ScopePurge, http.HandlerFunc(s.postPurge))
	s.Handle("GET /v1/purges/{id}", ScopePurge, noQuery(http.HandlerFunc(s.getPurge)))
	s.Handle("DELETE /v1/purges/{id}/unreachable", ScopePurge, http.HandlerFunc(s.declareGone))
}

// startPurge starts the tracker that collects purge acks; it runs until ctx ends. Serve calls
// it once NATS is up and the purge stream exists.
func (s *Server) startPurge(ctx context.Context, wg *sync.WaitGroup) error {
	s.mu.Lock()
	nc, js, view := s.nc, s.js, s.view
	s.mu.Unlock()
	expected := newExpectedNodes(view, s.cfg.HeartbeatTTL)
	// A pending node that left the registry reads unreachable in receipts (rule 4).
	tr, err := purge.NewTracker(nc, s.cfg.Prefix, purge.WithRetention(s.cfg.PurgeRetention), purge.WithLogger(s.log),
		purge.WithRegistry(expected.refs))
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	s.mu.Lock()
	s.tracker = tr
	s.expected = expected
	s.publisher = &purge.Publisher{JS: js, Prefix: s.cfg.Prefix, Tracker: tr}
	s.mu.Unlock()
	wg.Go(func() {
		if err := tr.Run(ctx); err != nil {
			s.log.Warn("purge tracker stopped", "err", err)
		}
	})
	return nil
}

// Tracker is the tracker of purge acks; valid once Ready is closed.
func (s *Server) Tracker() *purge.Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tracker
}

func (s *Server) postPurge(w http.ResponseWriter, r *http.Request) {
	// The limit bounds the purges the fleet carries: a request is refused at once when the
	// token has none left, but spends one only once it passed every check, just before it is
	// published, so a client fixing a refused request is not held back by its refusals.
	if !s.limiter.check(w, TokenName(r.Context())) {
		return
	}
	q, ok := checkQuery(w, r, []string{"wait"}, nil)
	if !ok {
		return
	}
	wait, err := parseWait(q.Get("wait"))
	if err != nil {
		WriteError(w, http.StatusBadRequest, "wait", err)
		return
	}
	var req purge.Request
	if DecodeJSON(w, r, s.cfg.MaxBodyBytes, &req) != nil {
		return
	}
	msgs, err := req.Messages(TokenName(r.Context()), time.Now())
	if err != nil {
		WriteError(w, http.StatusBadRequest, "", fmt.Errorf("invalid purge: %w", err))
		return
	}
	if err := s.checkPayload(msgs); err != nil {
		WriteError(w, http.StatusBadRequest, "", err)
		return
	}
	host := msgs[0].Host
	if !HostAllowed(r.Context(), host) {
		// Every kind, all included, names one host: a host-scoped token purges only its own.
		WriteError(w, http.StatusForbidden, "host", errHostScope(r.Context(), host))
		return
	}
	configured, err := s.hostConfigured(r.Context(), host)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("look up host %s: %w", host, err))
		return
	}
	select {
	case <-s.ready:
	default:
		// Until the fleet view is loaded, the expected nodes would be incomplete (rule 4), and
		// the hosts served from the edges' files unknown.
		WriteError(w, http.StatusServiceUnavailable, "", errors.New("the control plane is starting: the fleet view is not loaded yet"))
		return
	}
	if !configured && !s.hostServedFromFile(host) {
		if since, left, reconnected := s.inStartGrace(); left > 0 {
			// Control just started, or its NATS connection just came back, NATS perhaps down
			// longer than the registrations' TTL: the nodes that serve the host from their
			// files may not have registered again yet. Not the client's fault, and over
			// within a heartbeat or so.
			secs := max(1, int(math.Ceil(left.Seconds())))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			WriteError(w, http.StatusServiceUnavailable, "host",
				fmt.Errorf("%s is not in the config bucket nor in a live node's registration, and %s %s ago: nodes that serve it from their config files may not have registered again yet; retry in %ds",
					host, graceCause(reconnected), since.Round(time.Millisecond), secs))
			return
		}
		// Printed after its field ("host: ..."), so the message does not say "host" again.
		WriteError(w, http.StatusBadRequest, "host",
			fmt.Errorf("%s is not configured: not in the config bucket, nor in the config file of any live node", host))
		return
	}
	if !s.limiter.take(w, TokenName(r.Context())) {
		return // another request of the token's took the last one since check
	}
	// A grace over on control's clock ends the hold before this purge is registered.
	s.releaseReceipts()
	s.mu.Lock()
	pub, tr, exp := s.publisher, s.tracker, s.expected
	s.mu.Unlock()
	// Every live node must ack, draining ones too: they still serve what reaches them.
	expected := exp.refs()
	id := purge.RequestID(msgs[0].ID)
	// A client that goes away must not leave a request half published (its urls but not its
	// keys): publishing outlives the request, bounded on its own.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), publishTimeout)
	defer cancel()
	for _, m := range msgs {
		if _, err := pub.Publish(pctx, m, expected); err != nil {
			// Messages published before this one stay published; their receipts remain readable.
			WriteError(w, http.StatusServiceUnavailable, "", fmt.Errorf("publish purge %s: %w", m.ID, err))
			return
		}
	}
	s.log.Info("purge published", "id", id, "host", host, "kinds", len(msgs), "soft", req.Soft,
		"nodes", len(expected), "by", TokenName(r.Context()))
	for _, m := range msgs {
		s.observePurge(tr, m.ID)
	}
	receipts := make([]purge.Receipt, 0, len(msgs))
	if wait > 0 {
		wctx, cancel := context.WithTimeout(r.Context(), wait)
		// Shutdown ends the wait: the answer then says which nodes are still pending.
		stop := context.AfterFunc(s.waits, cancel)
		for _, m := range msgs {
			receipts = append(receipts, tr.Wait(wctx, m.ID))
		}
		stop()
		cancel()
	} else {
		for _, m := range msgs {
			rc, _ := tr.Receipt(m.ID)
			receipts = append(receipts, rc)
		}
	}
	resp := purge.NewResponse(id, receipts)
	code := http.StatusAccepted
	if wait > 0 && resp.Complete {
		code = http.StatusOK
	}
	w.Header().Set("Location", "/v1/purges/"+id)
	writePurgeAnswer(w, code, resp)
}

// kindField is the request field that holds a kind's values.
var kindField = map[purge.Kind]string{purge.KindURL: "urls", purge.KindPrefix: "prefixes", purge.KindKey: "keys", purge.KindAll: "all"}

// publishTimeout bounds publishing one request's messages to the stream.
const publishTimeout = 10 * time.Second

// payloadHeadroom is left for the message's NATS headers and subject.
const payloadHeadroom = 1024

// checkPayload refuses a request any of whose messages is too large for one NATS message
// (max_payload, 1 MiB by default), which 1,000 long URLs can be: the client should split the
// request. Every message is checked before any is published, so a refused request leaves
// nothing in the stream for a retry to purge again under a new id.
func (s *Server) checkPayload(msgs []purge.Message) error {
	limit := s.Conn().MaxPayload() - payloadHeadroom
	for _, m := range msgs {
		if int64(messageBound(m)) <= limit { // cannot be above the limit: skip encoding it twice
			continue
		}
		// Exactly what the stream stores (purge's storedJSON): the normalised message, no seq.
		m.Seq = 0
		data, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode purge: %w", err)
		}
		if int64(len(data)) > limit {
			return &wire.FieldError{Field: kindField[m.Kind], Err: fmt.Errorf("%d values make a %d-byte purge message, above the %d bytes NATS carries: split the request",
				len(m.Values), len(data), limit)}
		}
	}
	return nil
}

// jsonByteBound[c] is the most bytes json.Marshal writes for byte c of a string. '<', '>' and
// '&' (common in query strings) become 6-byte \u escapes, as do control bytes; '"' and '\\'
// take two. A byte of 0x80 or above counts six: valid UTF-8 is written as is, except U+2028
// and U+2029 (3 bytes to 6), and each byte of invalid UTF-8 becomes \ufffd.
var jsonByteBound = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c < 0x20 || c >= 0x80 || c == '<' || c == '>' || c == '&':
			t[c] = 6
		case c == '"' || c == '\\':
			t[c] = 2
		default:
			t[c] = 1
		}
	}
	return t
}()

// messageSyntaxBound bounds what json.Marshal writes of a Message besides its strings' contents:
// names, punctuation, the quotes of every string but the values, seq, soft and issued_at
// (about 150 bytes).
const messageSyntaxBound = 256

// messageBound is an upper bound on len(json.Marshal(m)), at the cost of a table look-up per
// byte: exact enough that an ordinary request is never encoded to be measured.
func messageBound(m purge.Message) int {
	n := messageSyntaxBound
	for _, s := range [...]string{m.ID, m.Host, string(m.Kind), m.Issuer} {
		n += jsonStringBound(s)
	}
	for _, v := range m.Values {
		n += jsonStringBound(v) + 3 // quotes and comma
	}
	return n
}

func jsonStringBound(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n += int(jsonByteBound[s[i]])
	}
	return n
}

// parseWait reads the wait query parameter: a Go duration from 0 (do not wait) to MaxPurgeWait.
func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("wait %q is not a duration such as 2s or 500ms", v)
	}
	if d < 0 || d > MaxPurgeWait {
		return 0, fmt.Errorf("wait %s is outside 0 to %s", d, MaxPurgeWait)
	}
	return d, nil
}

// hostConfigured reports whether host has a config. The config view answers at once; a miss
// is confirmed against the bucket, so that a host stored a moment ago is not refused.
func (s *Server) hostConfigured(ctx context.Context, host string) (bool, error) {
	s.mu.Lock()
	cv := s.config
	s.mu.Unlock()
	if _, ok := cv.Host(host); ok {
		return true, nil
	}
	_, err := fleet.GetHost(ctx, s.JetStream(), s.cfg.Prefix, host)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// startGrace is how long after the fleet view loaded, and after control's NATS connection came
// back from a cut, a purge of a host that is neither in the config bucket nor in a live
// registration is answered 503 (retry) rather than 400. After a restart whose NATS was down
// longer than the heartbeat TTL (control's embedded NATS, say), or an external NATS down that
// long under a running control, the fleet bucket's keys have expired and the view has not the
// nodes, whose file hosts (wire.Node.Hosts) make their purges acceptable. Control cannot tell
// which nodes will come back, so the grace is a time: a live node writes its key every
// heartbeat, well under the TTL (that is what live means to the view), and reconnects within a
// fraction of a second of NATS answering (250 ms between attempts); the second more covers the
// reconnect and a slow write. After it a host nobody registered is refused as before.
func startGrace(ttl time.Duration) time.Duration { return ttl + time.Second }

// inStartGrace returns how long ago the grace began (the fleet view loaded, Ready, or control's
// NATS connection came back since: reconnected), and how much of it is left (0 or less: none).
func (s *Server) inStartGrace() (since, left time.Duration, reconnected bool) {
	from, reconnected := s.graceFrom()
	since = s.clock().Sub(from)
	return since, startGrace(s.cfg.HeartbeatTTL) - since, reconnected
}

// graceFrom is when the grace began: Ready, or control's NATS connection coming back since
// (reconnected).
func (s *Server) graceFrom() (from time.Time, reconnected bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reconnectAt.After(s.readyAt) {
		return s.reconnectAt, true
	}
	return s.readyAt, false
}

// holdReceipts makes the tracker hold the receipts of the purges accepted from now until the
// grace ends (purge.Tracker.HoldNew): the fleet view may lack live nodes that have not
// registered again, which a receipt made now would not list, and would read complete without
// them. A held receipt is not complete before the grace ends; the nodes that register
// meanwhile are added to it (runGrace, and every read of receipts), and those registered when
// it ends too (releaseReceipts). atReady is the call as Ready closes; a reconnect of control's
// NATS connection calls it again, moving the end of a hold under way, and before Ready does
// nothing (the hold at Ready runs from the later of the two).
func (s *Server) holdReceipts(atReady bool) {
	s.graceMu.Lock()
	defer s.graceMu.Unlock()
	if atReady {
		s.graceOn = true
	} else if !s.graceOn {
		return
	}
	from, _ := s.graceFrom()
	until := from.Add(startGrace(s.cfg.HeartbeatTTL))
	if !s.clock().Before(until) {
		return
	}
	s.Tracker().HoldNew(until)
	s.heldUntil.Store(&until)
	select {
	case s.graceWake <- struct{}{}:
	default:
	}
}

// releaseReceipts lifts the hold of holdReceipts once the grace is over on control's clock,
// adding the live nodes to the receipts held (purge.Tracker.Release). It reports whether the
// receipts are still held. After the grace it loads a nil pointer and does nothing more.
func (s *Server) releaseReceipts() (held bool) {
	until := s.heldUntil.Load()
	if until == nil {
		return false
	}
	if s.clock().Before(*until) {
		return true
	}
	s.graceMu.Lock()
	defer s.graceMu.Unlock()
	if until = s.heldUntil.Load(); until == nil || s.clock().Before(*until) {
		return until != nil // released, or moved by a reconnect, meanwhile
	}
	s.Tracker().Release(s.liveRefs())
	s.heldUntil.Store(nil)
	s.log.Info("purge receipts no longer held for registrations", "grace", startGrace(s.cfg.HeartbeatTTL))
	return false
}

// expectRegistered adds the nodes registered so far to the receipts held for the grace, or
// releases them once it is over: a receipt read during the grace lists every node it waits
// for, whether runGrace has seen them register or not.
func (s *Server) expectRegistered() {
	if !s.releaseReceipts() {
		return
	}
	s.Tracker().Expect(s.liveRefs())
}

// liveRefs are the live nodes of the fleet view, read from it now. Only the grace's
// additions use it, which read the view as it is at that moment rather than expectedNodes'
// answer, kept until the view reports a change of membership or a report goes stale.
func (s *Server) liveRefs() []purge.NodeRef {
	nodes := s.Fleet().Nodes()
	refs := make([]purge.NodeRef, len(nodes))
	for i, n := range nodes {
		refs[i] = purge.NodeRef{PoP: n.PoP, Node: n.ID}
	}
	return refs
}

// runGrace, while receipts are held (holdReceipts), adds the nodes that register to them as
// the fleet view reports each change of membership, and releases them when the grace ends;
// it sleeps otherwise. It runs until ctx ends. It times the end on the real clock; with
// another (Server.now, in tests) the receipts are also released by the first read or purge
// after the end on that clock (releaseReceipts).
func (s *Server) runGrace(ctx context.Context, view *fleet.View) {
	for {
		until := s.heldUntil.Load()
		if until == nil {
			select {
			case <-s.graceWake:
				continue
			case <-ctx.Done():
				return
			}
		}
		changed := view.MembersChanged() // before the nodes are read: a change after wakes it
		s.expectRegistered()
		t := time.NewTimer(until.Sub(s.clock()))
		select {
		case <-t.C:
		case <-changed:
		case <-s.graceWake:
		case <-ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// graceCause says what began the grace, for an error message.
func graceCause(reconnected bool) string {
	if reconnected {
		return "control's NATS connection came back"
	}
	return "the control plane started"
}

// hostServedFromFile reports whether a live node of the fleet view (its report fresh, draining
// or not) registered host among the hosts of its config file (wire.Node.Hosts). A host in a
// registration makes purges of it acceptable, nothing more: the token's host scope still
// applies, and an edge credential writes only its own registration (docs/security.md).
func (s *Server) hostServedFromFile(host string) bool {
	for _, n := range s.Fleet().Nodes() {
		if slices.Contains(n.Hosts, host) {
			return true
		}
	}
	return false
}

// fileHostNodes are the live nodes ("pop/node", sorted) whose registrations list host among
// their config file's hosts.
func (s *Server) fileHostNodes(host string) []string {
	var out []string
	for _, n := range s.Fleet().Nodes() {
		if slices.Contains(n.Hosts, host) {
			out = append(out, n.PoP+"/"+n.ID)
		}
	}
	return out
}

// maxNamedNodes is how many nodes an error names before it counts the rest.
const maxNamedNodes = 5

// errNoHostConfig is the error of GET and DELETE /v1/hosts/{host} for a host the config bucket
// has no config for: what is true of it. Live nodes may serve it from their config files,
// which the API neither reads nor deletes; right after control started they may not have
// registered again yet.
func (s *Server) errNoHostConfig(host string) error {
	nodes := s.fileHostNodes(host)
	switch {
	case len(nodes) == 1:
		return fmt.Errorf("host %s has no config in the config bucket; live node %s serves it from its config file, which the API can neither read nor delete", host, nodes[0])
	case len(nodes) > 1:
		named := strings.Join(nodes[:min(len(nodes), maxNamedNodes)], ", ")
		if len(nodes) > maxNamedNodes {
			named += fmt.Sprintf(" and %d more", len(nodes)-maxNamedNodes)
		}
		return fmt.Errorf("host %s has no config in the config bucket; live nodes %s serve it from their config files, which the API can neither read nor delete", host, named)
	}
	select {
	case <-s.ready:
	default:
		return fmt.Errorf("host %s has no config in the config bucket; the control plane is starting: which nodes serve it from their config files is not known yet", host)
	}
	if since, left, reconnected := s.inStartGrace(); left > 0 {
		return fmt.Errorf("host %s has no config in the config bucket, and no live node has registered it from its config file: %s %s ago, and nodes may not have registered again yet", host, graceCause(reconnected), since.Round(time.Millisecond))
	}
	return fmt.Errorf("host %s has no config in the config bucket, and no live node serves it from its config file", host)
}

// requestReceipts returns the receipts of request id, or writes a 404 (or a 403 for a host
// outside the token's hosts) and returns false.
func (s *Server) requestReceipts(w http.ResponseWriter, r *http.Request, id string) ([]purge.Receipt, bool) {
	s.expectRegistered()
	tr := s.Tracker()
	var receipts []purge.Receipt
	for _, k := range purgeKinds {
		if rc, ok := tr.Receipt(id + "-" + string(k)); ok {
			receipts = append(receipts, rc)
		}
	}
	if len(receipts) == 0 {
		WriteError(w, http.StatusNotFound, "id", fmt.Errorf("no purge %q is known (receipts are kept for the last %d purges within the stream retention)", id, purge.DefaultMaxPurges))
		return nil, false
	}
	if host := receipts[0].Host; !HostAllowed(r.Context(), host) {
		WriteError(w, http.StatusForbidden, "id", errHostScope(r.Context(), host))
		return nil, false
	}
	return receipts, true
}

func (s *Server) getPurge(w http.ResponseWriter, r *http.Request) {
	id := purge.RequestID(r.PathValue("id"))
	receipts, ok := s.requestReceipts(w, r, id)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, purge.NewResponse(id, receipts))
}

// declareGone answers DELETE /v1/purges/{id}/unreachable: the operator says that the request's
// unreachable nodes (those that left the registry without acking) are gone for good, so that
// the purge can complete without them. ?node=pop/node (repeatable) limits it to those nodes;
// naming a node that is registered and has not acked is refused with 409, since it may still
// ack. The answer is the updated receipt.
func (s *Server) declareGone(w http.ResponseWriter, r *http.Request) {
	id := purge.RequestID(r.PathValue("id"))
	q, ok := checkQuery(w, r, nil, []string{"node"})
	if !ok {
		return
	}
	var nodes []purge.NodeRef
	for _, v := range q["node"] {
		pop, node, ok := strings.Cut(v, "/")
		if !ok || wire.ValidatePoPID(pop) != nil || node == "" {
			WriteError(w, http.StatusBadRequest, "node", fmt.Errorf("node %q is not pop/node", v))
			return
		}
		nodes = append(nodes, purge.NodeRef{PoP: pop, Node: node})
	}
	receipts, ok := s.requestReceipts(w, r, id)
	if !ok {
		return
	}
	tr := s.Tracker()
	var declared []purge.NodeRef
	for _, rc := range receipts {
		gone, err := tr.DeclareGone(rc.ID, nodes...)
		switch {
		case errors.Is(err, purge.ErrUnknownPurge), errors.Is(err, purge.ErrUnknownNode):
			WriteError(w, http.StatusNotFound, "node", err)
			return
		case errors.Is(err, purge.ErrNodeLive):
			WriteError(w, http.StatusConflict, "node", err)
			return
		case err != nil:
			WriteError(w, http.StatusInternalServerError, "", err)
			return
		}
		for _, g := range gone {
			if !slices.Contains(declared, g) {
				declared = append(declared, g)
			}
		}
	}
	if len(declared) > 0 {
		s.log.Info("purge nodes declared gone", "id", id, "nodes", declared, "by", TokenName(r.Context()))
	}
	if receipts, ok = s.requestReceipts(w, r, id); !ok {
		return
	}
	writeJSON(w, http.StatusOK, purge.NewResponse(id, receipts))
}

// purgeLimiter limits purge requests per token name with a token bucket each.
type purgeLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex               // guards buckets
	buckets map[string]*rate.Limiter // by token name; tokens are configured, so this is bounded
}

// newPurgeLimiter returns a limiter of perSec requests per second per token; +Inf is no limit.
func newPurgeLimiter(perSec float64, burst int) *purgeLimiter {
	limit := rate.Limit(perSec)
	if math.IsInf(perSec, 1) {
		// rate.Inf is a finite sentinel: a bucket of rate +Inf counts NaN tokens after two
		// requests within a nanosecond, which check would read as none left.
		limit = rate.Inf
	}
	return &purgeLimiter{limit: limit, burst: burst, buckets: map[string]*rate.Limiter{}}
}

func (l *purgeLimiter) bucket(name string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[name]
	if !ok {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[name] = b
	}
	return b
}

// check writes a 429 with Retry-After and returns false when name's bucket holds no request
// now. It takes nothing from the bucket: take does, once the request is to be done.
func (l *purgeLimiter) check(w http.ResponseWriter, name string) bool {
	if l.limit == rate.Inf {
		return true
	}
	tokens := l.bucket(name).Tokens()
	if tokens >= 1 {
		return true
	}
	l.refuse(w, name, l.delay(tokens))
	return false
}

// take takes one request from name's bucket, or writes a 429 with Retry-After and returns false.
// A refused take leaves the bucket alone (Allow): a reservation cancelled after another of the
// token's was made gives back less than it took, so concurrent refusals would spend tokens.
func (l *purgeLimiter) take(w http.ResponseWriter, name string) bool {
	b, now := l.bucket(name), time.Now()
	if b.AllowN(now, 1) {
		return true
	}
	l.refuse(w, name, l.delay(b.TokensAt(now)))
	return false
}

// delay is how long a bucket holding tokens takes to hold one request.
func (l *purgeLimiter) delay(tokens float64) time.Duration {
	return time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
}

// refuse writes the 429 for a token that may purge again in delay.
func (l *purgeLimiter) refuse(w http.ResponseWriter, name string, delay time.Duration) {
	secs := max(1, int(math.Ceil(delay.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	WriteError(w, http.StatusTooManyRequests, "", fmt.Errorf("purge rate limit of token %q exceeded (%s/s, burst %d): retry in %s",
		name, strings.TrimSuffix(strconv.FormatFloat(float64(l.limit), 'f', 2, 64), ".00"), l.burst, delay.Round(time.Millisecond)))
}

// observePurge times one purge to its last expected ack for the metrics, in the background, for
// at most MaxPurgeWait or until the server stops.
func (s *Server) observePurge(tr *purge.Tracker, id string) {
	s.observers.Go(func() {
		done, ok := tr.Done(id)
		if !ok {
			return
		}
		t := time.NewTimer(MaxPurgeWait)
		defer t.Stop()
		// Only the duration is wanted: no receipt is built for the metrics.
		select {
		case <-done:
			if _, took, ok := tr.Completion(id); ok {
				s.purgeDur.Observe(took.Seconds())
			}
		case <-t.C:
			s.purgeLate.Inc()
		case <-s.waits.Done():
		}
	})
}
