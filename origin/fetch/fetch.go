// Package fetch is the client the edge uses to reach one upstream (an origin or a peer node): a
// tuned keep-alive transport, a timeout on every phase, a circuit breaker and a bulkhead.
package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/net/http/httpguts"
)

// ErrBulkheadFull is returned when no concurrency slot freed up within QueueWait; callers map it
// to 503 with Retry-After.
var ErrBulkheadFull = errors.New("bulkhead full")

// ErrBreakerOpen is returned when the circuit breaker refuses a request, either because it is open
// or because it is half-open and its probes are already in flight. The error returned by Do wraps
// both this and gobreaker's own error (gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests).
var ErrBreakerOpen = errors.New("circuit breaker open")

// errBodyTimeout is the cause of the exchange context's cancellation when BodyTimeout expires.
var errBodyTimeout = errors.New("body timeout")

// DefaultMaxHeadBytes is Config.MaxHeadBytes's default, the bound on an answer's heads, its 1xx
// heads and the final one together. Real heads are a few KiB (nginx reads them into
// proxy_buffer_size, 4-8 KiB; Varnish allows 32 KiB, http_resp_size); 64 KiB is the edge's
// own bound on a request head (max_header_bytes) and leaves room for large cookies and CSP
// fields. net/http's 10 MiB default let an origin make the edge hold 10 MiB per exchange.
const DefaultMaxHeadBytes = 64 << 10

const (
	// max1xx bounds the 1xx heads before the final one. None extends a deadline, but the
	// edge forwards each to its client, and without a bound an origin could send them until
	// its response header timeout. net/http's Transport allowed 5 (Go 1.11 to 1.23; quic-go's
	// client still does), and now leaves the number to the Got1xxResponse hook that takes
	// them: here the edge's. Origins send a 100 Continue, or a 103 Early Hints or two (Rails
	// one per asset tag helper): twice Go's old bound leaves them room.
	max1xx = 10
)

// errHeadTooLarge is an answer head longer than the default bound (errors.Is matches any
// bound's), and errTooMany1xx one after more than max1xx interim heads: both are malformed
// answers, the exchange's failure.
var (
	errHeadTooLarge error = headTooLargeError{DefaultMaxHeadBytes}
	errTooMany1xx         = fmt.Errorf("more than %d 1xx informational responses", max1xx)
)

// errUnexpectedSwitch is a 101 Switching Protocols to a request that did not ask for that
// switch: Do never asks for one (upgrades go through UpgradeTransport).
var errUnexpectedSwitch = errors.New("unexpected 101 Switching Protocols")

// errStatusBelow100 is an answer whose status code is below 100: three digits, as
// http.ReadResponse asks, but none that HTTP has (RFC 9110 §15: 100 to 599). It is malformed
// as a head without a status is: neither an interim answer nor a final one that the edge could
// write (net/http's WriteHeader panics below 100).
var errStatusBelow100 = errors.New("status code below 100 (RFC 9110 §15)")

// headTooLargeError is an answer head longer than max bytes (Config.MaxHeadBytes).
type headTooLargeError struct{ max int64 }

func (e headTooLargeError) Error() string {
	return fmt.Sprintf("response header larger than %d bytes", e.max)
}

// Is makes every headTooLargeError match errHeadTooLarge, whatever its bound.
func (headTooLargeError) Is(target error) bool {
	_, ok := target.(headTooLargeError)
	return ok
}

// Config configures one upstream. The zero value works; every default is stated per field.
type Config struct {
	// Name labels errors and stats, e.g. "origin example.com" or "peer lon-2". Default "upstream".
	Name string
	// DialTimeout bounds establishing a TCP connection. Default 2s.
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake. Default 3s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the time from the request being written to the response
	// header arriving, and while a request body is being written, the time the upstream may
	// spend taking each 32 KiB of it, its last included. Over HTTP/2 it is also how long a
	// connection may bring no frame before it is PINGed, how long the PING's answer may take,
	// and how long a write may take nothing, before the connection is closed as dead. Default
	// 10s. Enforced by the built transport only (not an injected one).
	ResponseHeaderTimeout time.Duration
	// BodyTimeout bounds the whole exchange, including reading the body; it is enforced even if
	// the caller reads slowly. Default 30s.
	BodyTimeout time.Duration
	// IdleConnTimeout is how long an idle keep-alive connection is kept. Default 90s.
	IdleConnTimeout time.Duration
	// MaxIdleConns is the number of idle connections kept per host. Default 256.
	MaxIdleConns int
	// MaxConcurrent is the bulkhead: requests in flight at once, counted from sending until the
	// response body is closed (with ReleaseAtHead, until the response head is in). Default 64;
	// negative means unlimited.
	MaxConcurrent int
	// ReleaseAtHead frees an exchange's bulkhead slot once its answer's head is in, not when
	// its body is closed: MaxConcurrent then bounds the requests the upstream has yet to
	// answer, and an answer that streams for long (an event stream, a large download, passed
	// through to a client at its own pace) holds none. The breaker still gets the exchange's
	// outcome when its body is closed, a body cut short counted as a failure, one BodyTimeout
	// ended not (the caller's own limit, reached by streams opened together). Default false:
	// the slot is held until the body is closed, which bounds the answers read from the
	// upstream at once, bodies included (an edge's cache fills).
	ReleaseAtHead bool
	// QueueWait is how long a request over MaxConcurrent waits for a slot before failing with
	// ErrBulkheadFull. Only a request the breaker admits waits: one it refuses fails at once.
	// Default 50ms.
	QueueWait time.Duration

	// ConsecutiveFailures opens the breaker after that many failures in a row of the kinds that
	// say the upstream as a whole is failing: it cannot be reached (a failed dial or TLS
	// handshake), or it answered with a status FailureStatus counts. An exchange that fails
	// after the upstream was reached (a reset or a close before the answer, a timeout, a body
	// cut short) says that of one request, not of the upstream: it counts in FailureRatio only,
	// so that a few URLs whose handlers drop the connection do not shut every other URL out
	// (nginx, with one upstream server, never marks it down at all). A success ends the run if
	// its exchange was sent after the run's first failure came in: one sent before (a slow body
	// that ends now, on a connection made while the upstream was fine) says nothing of whether
	// it can be reached now, and an upstream that refuses every new connection would otherwise
	// stay closed for as long as old exchanges keep completing. A change of the breaker's
	// state ends the run too. Default 5.
	ConsecutiveFailures uint32
	// MinRequests is the number of requests that ended within Interval before FailureRatio is
	// considered. Default 20.
	MinRequests uint32
	// FailureRatio opens the breaker when at least MinRequests requests that ended in Interval
	// failed at this ratio or more. Requests the caller canceled are not counted. Default 0.5.
	FailureRatio float64
	// Interval is the closed-state window over which FailureRatio's counts are kept, each
	// request counted when it ends (however long ago it was sent). Default 10s.
	Interval time.Duration
	// OpenTimeout is how long the breaker stays open before going half-open. Default 5s.
	OpenTimeout time.Duration
	// HalfOpenRequests is the number of probes let through when half-open; that many successes
	// close the breaker, one failure opens it again. Default 1.
	HalfOpenRequests uint32

	// MaxHeadBytes bounds an answer's heads, every 1xx head and the final one together (over
	// TLS, counted as the records read for them, with a record's room more: tlsRoom; over
	// HTTP/2, each head); past it the answer is malformed (see DefaultMaxHeadBytes). Default
	// DefaultMaxHeadBytes (64 KiB). A client of edge nodes allows more: a node's answer is
	// its origin's heads, which took up to the default, with the fields the nodes on the way
	// add.
	MaxHeadBytes int

	// TLSConfig is used for https upstreams by the built transport. Nil means Go's defaults.
	TLSConfig *tls.Config
	// Transport, if set, replaces the built *http.Transport (the timeouts on dialing, TLS and
	// response headers, and the bounds on response heads, are then the injected transport's
	// business). Nil means the built transport: plain-http requests without a body are
	// exchanged on the caller's goroutine (h1.go), the rest go through a tuned
	// *http.Transport, both from the fields above.
	Transport http.RoundTripper
	// DialContext, if set, is used by the built transport to open connections (the simulator adds
	// WAN delay this way); it should honour ctx. Nil means a net.Dialer with DialTimeout.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// FailureStatus says which response statuses count as breaker failures. Nil means none: any
	// HTTP answer, 5xx included, shows the upstream is alive, so only transport failures (dial
	// errors, resets, TLS failures, timeouts, a body cut short) trip the breaker. An origin that
	// answers 500 on one broken path must not take every other path down with it, and a peer
	// relaying its origin's 503 is itself healthy. A caller that wants otherwise says so, e.g.
	// func(status int) bool { return status >= 500 }.
	FailureStatus func(status int) bool
	// OnBreakerChange, if set, is told of each change of the breaker's state, in order and
	// one call at a time, none lost. It runs after the breaker's lock is released, on the
	// goroutine of a call (Do, a body's Close, Stats) whose admission or outcome changed the
	// state, or of one that found changes waiting (changeQueue): a callback that blocks (a
	// log line on a stderr nobody reads) holds up that goroutine, and the changes after it,
	// but no other request to the upstream. It ran under the breaker's lock, which every
	// request takes. The edge logs an origin going down and coming back with it.
	OnBreakerChange func(BreakerChange)
	// Clock is the time source for the bulkhead queue accounting and the FailureRatio window
	// (Interval). Nil means time.Now. The breaker's OpenTimeout uses gobreaker's wall clock,
	// which cannot be injected.
	Clock func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "upstream"
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&c.DialTimeout, 2*time.Second)
	setDur(&c.TLSHandshakeTimeout, 3*time.Second)
	setDur(&c.ResponseHeaderTimeout, 10*time.Second)
	setDur(&c.BodyTimeout, 30*time.Second)
	setDur(&c.IdleConnTimeout, 90*time.Second)
	setDur(&c.QueueWait, 50*time.Millisecond)
	setDur(&c.Interval, 10*time.Second)
	setDur(&c.OpenTimeout, 5*time.Second)
	if c.MaxIdleConns <= 0 {
		c.MaxIdleConns = 256
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 64
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.MinRequests == 0 {
		c.MinRequests = 20
	}
	if c.FailureRatio <= 0 {
		c.FailureRatio = 0.5
	}
	if c.HalfOpenRequests == 0 {
		c.HalfOpenRequests = 1
	}
	if c.MaxHeadBytes <= 0 {
		c.MaxHeadBytes = DefaultMaxHeadBytes
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Upstream is the client for one upstream. It is safe for concurrent use.
type Upstream struct {
	cfg       Config
	transport http.RoundTripper
	breaker   *gobreaker.TwoStepCircuitBreaker[struct{}]
	slots     chan struct{} // bulkhead semaphore; nil when unlimited

	inFlight           atomic.Int64
	streaming          atomic.Int64 // bodies open whose slot was freed at their head (ReleaseAtHead)
	requests           atomic.Uint64
	failures           atomic.Uint64
	bulkheadRejections atomic.Uint64
	breakerRejections  atomic.Uint64
	// streak is the failures in a row that ConsecutiveFailures counts; a success of an
	// exchange sent after its first failure came in (see streaks), or a change of the
	// breaker's state, ends it. Only the breaker's callbacks touch it, under its mutex and in
	// the order it counts outcomes (a result from before its last change of state is not
	// counted, by it or here).
	streak uint32
	// streaks counts the streaks begun (bumped by the failure that starts one, in the
	// breaker's callbacks). An exchange notes it as it is sent (success.sent): a success that
	// noted the current value was sent after the current streak's first failure came in, and
	// ends it; one that noted less was sent before and does not. Outcomes come in the order
	// exchanges end, not the order they were sent, and an exchange sent while the upstream
	// was fine (a long body) may end well after fresh ones began to fail.
	streaks atomic.Uint64
	// states counts the breaker's changes of state (OnStateChange): Do sees from it whether
	// the breaker changed state while a request it admitted waited for a bulkhead slot.
	states atomic.Uint64
	// window counts the outcomes FailureRatio weighs, by when they came: the ones of the
	// current window of Interval, which starts with its first outcome and ends with the
	// breaker's change of state. The breaker's own counts are by when a request was sent, in
	// windows that end on a new generation, which drops every outcome still to come: an
	// exchange that failed after Interval or longer (a hung upstream's, with
	// response_header_timeout and interval both 10s by default) was never counted, and an
	// upstream that timed out on every request never opened the breaker. So the breaker has
	// no Interval of its own (its generations change with its state only), and only its
	// callbacks touch window, as streak.
	window outcomes
	// halfOpen is set while the breaker is half-open (by its OnStateChange, which runs inside
	// the Allow that admits the probe): Do then reports a probe's outcome at its head.
	halfOpen atomic.Bool
	// changes holds the breaker's changes of state for Config.OnBreakerChange, queued by its
	// OnStateChange (under the breaker's lock) and told after each call of the breaker.
	changes changeQueue
	// lastFailure is the outcome of the last exchange the breaker counted as a failure: the
	// one that opened it, when it opens (Config.OnBreakerChange). Only the breaker's
	// callbacks touch it, as streak.
	lastFailure error
}

// newTransport is the transport c describes (defaults applied): its dialer, TLS and timeouts,
// keeping idle connections for reuse.
func (c Config) newTransport() *http.Transport {
	dial := c.dialer()
	return &http.Transport{
		Proxy: nil, // an edge never goes through an environment proxy
		// Each connection bounds an exchange's heads together (headConn), which the
		// Transport does not once a Got1xxResponse hook takes the 1xx.
		// Each HTTP/1 connection's heads are looked at as h1Transport looks at them
		// (framingConn): over TLS only once the handshake chose HTTP/1.1, so the TLS dial is
		// made here, as the Transport would make it.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &framingConn{Conn: &headConn{Conn: nc}, maxHead: c.MaxHeadBytes}, nil
		},
		DialTLSContext:        c.dialTLS(dial, true),
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		IdleConnTimeout:       c.IdleConnTimeout,
		MaxIdleConns:          0, // no global cap; the per-host cap below is what matters
		MaxIdleConnsPerHost:   c.MaxIdleConns,
		ExpectContinueTimeout: time.Second,
		// Custom dialers and TLS configs turn HTTP/2 off unless asked for; https upstreams
		// should multiplex.
		ForceAttemptHTTP2: true,
		// Every request to the upstream goes onto one HTTP/2 connection, so one that went
		// silent without a FIN or RST (a NAT or firewall that dropped its state, a partition,
		// a host that lost power) failed each of them at ResponseHeaderTimeout, until a whole
		// MaxConcurrentStreams of them had (the transport holds a failed stream's slot until
		// a PING comes back) or the kernel gave up on the socket (some 15 minutes): the
		// breaker's probes failed on it too. A connection that brings no frame for
		// ResponseHeaderTimeout is PINGed, and closed if the answer takes as long. One whose
		// writes take nothing for as long (the upstream stopped reading, while it still sends)
		// is closed too: its writer was held for good, and every request sent on it after
		// waited to write its head, with no timeout of the transport's started. An answer is
		// a frame, so a busy connection sends no PING; an idle one sends one of 17 bytes per
		// ResponseHeaderTimeout until IdleConnTimeout closes it. HTTP/1 is unaffected.
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  c.ResponseHeaderTimeout,
			PingTimeout:      c.ResponseHeaderTimeout,
			WriteByteTimeout: c.ResponseHeaderTimeout,
		},
		// The edge stores and forwards bytes as the upstream sent them.
		DisableCompression: true,
		// Over HTTP/1, one byte more than headConn's bound, which so always meets an overrun
		// first and names it; over TLS, where headConn counts records and has more
		// (tlsRoom), each head's own bound in plaintext; over HTTP/2 the bound on each head
		// (their number: exchangeTrace).
		MaxResponseHeaderBytes: int64(c.MaxHeadBytes) + 1,
		// A connection's read buffer holds a small object's whole answer, header and body,
		// so it arrives in one read system call rather than several (the default buffer is
		// 4 KiB): system calls are most of a miss's cost (issue 15). It is per connection,
		// and connections are kept and reused (MaxIdleConns). No larger than the bound on
		// heads: the read the Transport leaves waiting on an idle connection gets the next
		// answer's first bytes before the exchange's bound is armed (headConn).
		ReadBufferSize: min(32<<10, c.MaxHeadBytes),
	}
}

// dialer opens connections as c says (defaults applied): DialContext bounded by DialTimeout,
// or a net.Dialer with DialTimeout.
func (c Config) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	custom := c.DialContext
	if custom == nil {
		return (&net.Dialer{Timeout: c.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	// A custom dialer is not bounded by net.Dialer.Timeout, so bound it here.
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
		defer cancel()
		return custom(ctx, network, addr)
	}
}

// UpgradeTransport returns a transport for one protocol upgrade (WebSocket) to this kind of
// upstream: the same dialer, TLS, timeouts and bounds on an answer's heads as New's (at most
// max1xx 1xx heads, and MaxHeadBytes for them and the final one together, whatever
// Got1xxResponse hook takes the 1xx), but HTTP/1.1 only and never reusing a connection, since
// an upgraded connection is the client's until either side closes it; a 101 to another
// protocol than the request's Upgrade names fails, the connection closed. It has no bulkhead
// or breaker: an upgrade holds no slot.
func (c Config) UpgradeTransport() http.RoundTripper {
	c = c.withDefaults()
	t := c.newTransport()
	t.DisableKeepAlives = true
	t.ForceAttemptHTTP2 = false
	t.DialTLSContext = c.dialTLS(c.dialer(), false)
	return &upgradeTransport{t: t, maxHead: int64(c.MaxHeadBytes)}
}

// upgradeTransport is UpgradeTransport's: the built *http.Transport, whose exchanges it
// bounds as Upstream.roundTrip does. ReverseProxy relays an upgrade's 1xx to its client with a
// Got1xxResponse hook, which switches net/http's bound on the heads' sum off; bare, the
// Transport let an origin send 1xx heads for as long as ResponseHeaderTimeout allowed.
type upgradeTransport struct {
	t       *http.Transport
	maxHead int64 // Config.MaxHeadBytes
}

func (t *upgradeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	x := &exchangeTrace{maxHead: t.maxHead}
	resp, err := t.t.RoundTrip(req.WithContext(x.trace(req.Context())))
	// A 101's body is the connection, read unbounded from here on: its heads are in.
	if err = x.end(err); err != nil {
		return nil, &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: err}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && !switchAsked(req.Header, resp.Header) {
		// ReverseProxy refuses a switch to another protocol than the one asked with its
		// ErrorHandler, but does not close the answer's body, the connection: it stayed open
		// for as long as the origin kept it.
		resp.Body.Close()
		err = fmt.Errorf("read response header: %w to %q, asked %q", errUnexpectedSwitch, upgradeType(resp.Header), upgradeType(req.Header))
		return nil, &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: err}
	}
	if resp.StatusCode < 100 {
		resp.Body.Close()
		return nil, &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: fmt.Errorf("read response header: %w %d", errStatusBelow100, resp.StatusCode)}
	}
	return resp, nil
}

// switchAsked reports whether a 101 with header resp switches to the protocol that a request
// with header req asked for, as ReverseProxy checks it: the same printable name, in any case.
func switchAsked(req, resp http.Header) bool {
	asked, got := upgradeType(req), upgradeType(resp)
	return got != "" && printable(asked) && printable(got) && strings.EqualFold(asked, got)
}

// upgradeType is the protocol header h asks or switches to (ReverseProxy's rule), or "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// printable reports whether s is printable ASCII: strings.EqualFold then folds as ASCII does.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// New returns the client for one upstream. It starts no goroutines.
func New(cfg Config) *Upstream {
	cfg = cfg.withDefaults()
	u := &Upstream{cfg: cfg}
	u.transport = cfg.Transport
	if u.transport == nil {
		// Plain-http exchanges on the caller's goroutine (h1.go); the rest (https with
		// HTTP/2, request bodies) through net/http's Transport.
		u.transport = cfg.newH1(cfg.newTransport())
	}
	if cfg.MaxConcurrent > 0 {
		u.slots = make(chan struct{}, cfg.MaxConcurrent)
	}
	u.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: cfg.HalfOpenRequests,
		Timeout:     cfg.OpenTimeout, // no Interval: see window
		ReadyToTrip: func(gobreaker.Counts) bool {
			w := u.window
			return u.streak >= cfg.ConsecutiveFailures ||
				w.ended >= cfg.MinRequests && float64(w.failed) >= cfg.FailureRatio*float64(w.ended)
		},
		// A caller that gives up says nothing about the upstream's health, nor does a request
		// that was never sent (it hands its admission back: a half-open breaker then admits
		// another probe in its place): neither is counted in window.
		IsExcluded: func(err error) bool {
			return ignoredOutcome(err)
		},
		IsSuccessful: func(err error) bool {
			s, ok := err.(success)
			u.window.add(cfg.Clock(), cfg.Interval, ok)
			switch {
			case ok:
				if s.b.sent == u.streaks.Load() {
					u.streak = 0 // sent after the streak's first failure came in (or no streak)
				}
				return true
			case inARow(err):
				if u.streak == 0 {
					u.streaks.Add(1)
				}
				u.streak++
			}
			u.lastFailure = err
			return false
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			u.states.Add(1)
			u.streak = 0
			u.window = outcomes{}
			u.halfOpen.Store(to == gobreaker.StateHalfOpen)
			if cfg.OnBreakerChange != nil {
				c := BreakerChange{Name: cfg.Name, From: from.String(), To: to.String(), OpenTimeout: cfg.OpenTimeout}
				if to == gobreaker.StateOpen {
					c.Err = u.lastFailure
				}
				u.changes.push(c) // told once the breaker's lock is released (tellChanges)
			}
			u.lastFailure = nil
		},
	})
	return u
}

// tellChanges tells Config.OnBreakerChange the breaker's changes of state queued so far. It is
// called after every call of the breaker, outside its lock; when nothing is queued (nearly
// always) it is one atomic load.
func (u *Upstream) tellChanges() {
	if u.changes.n.Load() != 0 {
		u.changes.tell(u.cfg.OnBreakerChange)
	}
}

// changeQueue holds the breaker's changes of state between its OnStateChange, which runs
// under the breaker's lock, and Config.OnBreakerChange, which must not: a callback that
// blocked there held up every request to the upstream. The changes are pushed in the order
// the breaker makes them (under its lock), and one goroutine at a time tells them, in that
// order: a caller that finds another telling leaves its changes to it, which looks again
// before it stops, so none waits for a later call of the breaker.
type changeQueue struct {
	n       atomic.Int32 // len(pending), read without mu by tellChanges
	mu      sync.Mutex
	pending []BreakerChange
	telling bool // a goroutine is telling changes
}

// push queues c; it runs under the breaker's lock and only takes q.mu, which nothing holds
// for longer than a slice append or swap.
func (q *changeQueue) push(c BreakerChange) {
	q.mu.Lock()
	q.pending = append(q.pending, c)
	q.n.Add(1)
	q.mu.Unlock()
}

// tell calls f with each change queued, in order, unless another goroutine is at it.
func (q *changeQueue) tell(f func(BreakerChange)) {
	q.mu.Lock()
	if q.telling {
		q.mu.Unlock()
		return
	}
	q.telling = true
	for len(q.pending) > 0 {
		batch := q.pending
		q.pending = nil
		q.n.Add(-int32(len(batch)))
		q.mu.Unlock()
		q.tellBatch(batch, f)
		q.mu.Lock()
	}
	q.telling = false
	q.mu.Unlock()
}

// tellBatch calls f with each of batch. If f panics, the panic goes on to the caller (as
// Do's do), and the changes after the one it panicked on go back to the head of the queue
// for the next caller to tell: with telling left set, no change would be told again.
func (q *changeQueue) tellBatch(batch []BreakerChange, f func(BreakerChange)) {
	i := 0
	defer func() {
		if i < len(batch) { // f panicked on batch[i]
			rest := slices.Clone(batch[i+1:])
			q.mu.Lock()
			q.pending = append(rest, q.pending...)
			q.n.Add(int32(len(rest)))
			q.telling = false
			q.mu.Unlock()
		}
	}()
	for ; i < len(batch); i++ {
		f(batch[i])
	}
}

// BreakerChange is a change of an upstream's breaker state (Config.OnBreakerChange).
type BreakerChange struct {
	Name     string // Config.Name
	From, To string // "closed", "open" or "half-open"
	// Err is, for a change to open, the failure that opened it; nil for other changes.
	Err error
	// OpenTimeout is how long the breaker stays open before its next probe (defaults applied).
	OpenTimeout time.Duration
}

// outcomes counts the exchanges that ended within one window of time.
type outcomes struct {
	start         time.Time // of the window; zero before its first outcome
	ended, failed uint32
}

// add counts an outcome that came at now, in a new window if the current one is interval old.
func (o *outcomes) add(now time.Time, interval time.Duration, ok bool) {
	if o.start.IsZero() || now.Sub(o.start) >= interval {
		*o = outcomes{start: now}
	}
	o.ended++
	if !ok {
		o.failed++
	}
}

// errCallerCanceled marks an outcome the breaker ignores: the caller's context was canceled.
var errCallerCanceled = errors.New("canceled by caller")

// errOwnLimit marks an outcome the breaker ignores: with ReleaseAtHead, BodyTimeout ended an
// answer whose head had come (the edge's pass_timeout on an event stream, a long download):
// the caller's own limit, which says nothing of the upstream's health. Streams opened
// together reach it together, and as failures they opened the breaker.
var errOwnLimit = errors.New("the caller's own limit")

// ignoredOutcome reports whether the breaker ignores err, and Stats counts no failure: the
// caller's cancellation or own limit, or a request not sent.
func ignoredOutcome(err error) bool {
	return errors.Is(err, errCallerCanceled) || errors.Is(err, errNotSent) || errors.Is(err, errOwnLimit)
}

// errNotSent is the outcome of a request the breaker admitted that was then not sent (no
// bulkhead slot, or the caller gave up waiting for one): excluded, it hands the admission back.
var errNotSent = errors.New("not sent")

// success is the outcome of the exchange b, which succeeded, as the breaker is told it: a nil
// error would not say when it was sent (b.sent). A pointer, it is an error without allocating.
type success struct{ b *body }

func (success) Error() string { return "success" }

// Do sends req; its context bounds everything. It asks the breaker, waits at most QueueWait for
// a bulkhead slot, and sends: a request the breaker refuses fails at once, without waiting for
// or taking a slot. A transport error or a timeout counts as a breaker failure; an
// HTTP answer of any status is a success unless FailureStatus says otherwise (and is returned as
// a response, not an error, either way); a body that fails or times out mid-read counts as a
// failure when it is closed. The caller canceling its context counts as
// neither success nor failure; its deadline expiring counts as a timeout (never as a failure
// to reach the upstream); a context that has already ended is not sent, and counts nowhere.
// The bulkhead slot (unless ReleaseAtHead freed it at the head) and the breaker outcome are
// released when the response body is closed (or at once on error), so the caller must close it. Errors wrap with %w and name the
// upstream.
func (u *Upstream) Do(req *http.Request) (*http.Response, error) {
	parent := req.Context()
	if parent.Err() != nil {
		// Nothing to send it for: the caller gave up, or its time ran out, before it asked
		// (an edge fill that spent its time on hung peers). It says nothing about the
		// upstream: counted, it opened a healthy origin's breaker (as dials that could not
		// reach it) or failed a half-open probe it took.
		closeBody(req)
		return nil, fmt.Errorf("fetch %s from %s: not sent: %w", req.URL, u.cfg.Name, context.Cause(parent))
	}
	// The breaker before the bulkhead: when the upstream hangs, its exchanges hold every slot
	// (for up to their timeouts) while the breaker is open, and a request asked the other way
	// round waited all of QueueWait to fail with ErrBulkheadFull, reaching a stale copy or
	// the next tier that much later, instead of failing at once with ErrBreakerOpen.
	states := u.states.Load()
	done, err := u.breaker.Allow()
	u.tellChanges()
	if err != nil {
		closeBody(req)
		return nil, u.refused(req, err)
	}
	if err := u.acquire(parent); err != nil {
		// Not sent: the admission goes back as neither success nor failure, so a half-open
		// breaker admits another probe instead of waiting for ever for this one.
		done(errNotSent)
		u.tellChanges()
		closeBody(req)
		return nil, err
	}
	if u.states.Load() != states {
		// The breaker changed state since it admitted this request (while it waited for a
		// slot): the admission was for the old state, whose outcomes the breaker no longer
		// counts, and may let a request through to an upstream now known to be failing, or
		// past a half-open breaker's probes. Hand it back and ask again.
		done(errNotSent)
		done, err = u.breaker.Allow()
		u.tellChanges()
		if err != nil {
			u.release()
			closeBody(req)
			return nil, u.refused(req, err)
		}
	}
	u.requests.Add(1)
	// A panic below (the caller's DialContext, FailureStatus or Transport) goes on to the
	// caller, but not with the slot and the breaker's outcome: a server that recovers it would
	// lose a slot per panic, and a half-open breaker would wait for this probe for ever.
	settled := false
	b := &body{u: u, parent: parent, done: done, sent: u.streaks.Load()}
	var resp *http.Response
	defer func() {
		if !settled {
			if resp != nil {
				resp.Body.Close()
			}
			if b.cancel != nil {
				b.cancel()
			}
			u.finish(done, b, errPanicked)
		}
	}()
	if h1, ok := u.transport.(*h1Transport); ok && h1.handles(req) {
		// The HTTP/1.1 path bounds the exchange with the connection's deadlines rather than a
		// context of its own: a timer context per exchange (its timer, its registration with
		// the caller's context) was a tenth of a miss's allocations (issue 15).
		b.deadline = time.Now().Add(u.cfg.BodyTimeout)
		resp, err = h1.send(parent, b.deadline, req)
		if err != nil {
			err = &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: err}
		}
	} else {
		b.ctx, b.cancel = context.WithTimeoutCause(parent, u.cfg.BodyTimeout, errBodyTimeout)
		resp, err = u.roundTrip(b.ctx, req)
	}
	if err != nil {
		err = u.classify(parent, b.timedOut(), err)
		if b.cancel != nil {
			b.cancel()
		}
		settled = true
		u.finish(done, b, err)
		return nil, fmt.Errorf("fetch %s from %s: %w", req.URL, u.cfg.Name, err)
	}
	b.rc, b.status = resp.Body, u.failureStatus(resp)
	b.whole = resp.Body == http.NoBody // nothing to read: whole already
	if u.halfOpen.Load() {
		// A probe's head says whether the upstream is back. Waiting for its body's end would
		// keep the breaker half-open, refusing every other request, for as long as the body
		// streams: an event stream passed through, under pass_timeout, for up to an hour. (An
		// exchange admitted before the breaker opened reports to an old generation: ignored.)
		u.report(done, b, b.status)
		b.done, b.status = nil, nil
	}
	resp.Body = b
	if u.cfg.ReleaseAtHead {
		// The upstream has answered: what is left is its body, read at the caller's pace.
		u.streaming.Add(1)
		u.release()
		b.freed = true
	}
	settled = true // the body's Close reports it
	return resp, nil
}

// errPanicked is the outcome of an exchange that a panic ended inside Do.
var errPanicked = errors.New("panic during the exchange")

// failureStatus is the breaker failure resp's status counts as (FailureStatus), or nil.
func (u *Upstream) failureStatus(resp *http.Response) error {
	if u.cfg.FailureStatus != nil && u.cfg.FailureStatus(resp.StatusCode) {
		return fmt.Errorf("%w %d", errFailureStatus, resp.StatusCode)
	}
	return nil
}

// roundTrip sends req under ctx as an http.Client that follows no redirects would, minus the
// client's own per-request work (a copy of the header kept for redirects, the redirect
// bookkeeping): an edge hands 3xx back as they are, and its deadlines are in ctx, so the
// transport alone is enough and a miss is cheaper (issue 15). It sends a copy of req with
// ctx. Errors are *url.Error, as the client returns them.
func (u *Upstream) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	// The built transport reports when it has a connection (dialed, and for https with its
	// handshake done): a failure before that is one to reach the upstream.
	var x *exchangeTrace
	if u.cfg.Transport == nil {
		x = &exchangeTrace{maxHead: int64(u.cfg.MaxHeadBytes)}
		ctx = x.trace(ctx)
	}
	var sw *sendWatch
	if u.cfg.Transport == nil && req.Body != nil && req.Body != http.NoBody {
		ctx, sw = watchSend(ctx, u.cfg.ResponseHeaderTimeout)
		// Written, the request is ResponseHeaderTimeout's.
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { sw.pause() },
		})
	}
	r := req.WithContext(ctx)
	if r.Header == nil {
		r.Header = http.Header{} // the transport refuses a nil header; r is our own copy
	}
	if sw != nil {
		r.Body = sw.watch(req.Body)
		if get := req.GetBody; get != nil {
			r.GetBody = func() (io.ReadCloser, error) {
				b, err := get()
				if err != nil {
					return nil, err
				}
				return sw.watch(b), nil
			}
		}
	}
	resp, err := u.transport.RoundTrip(r)
	if sw != nil && testHookRoundTripped != nil {
		testHookRoundTripped(sw)
	}
	if sw != nil && sw.stop() && (resp == nil || resp.Body != http.NoBody) {
		// An answer that came as the watch fired is read under the context it canceled: its
		// body failed part-way, after the edge had relayed its head. The exchange stalled. One
		// with no body (an HTTP/1 Content-Length: 0) is whole: nothing of it is left to read,
		// and it is the upstream's answer, relayed.
		if resp != nil {
			resp.Body.Close()
			resp = nil
		}
		err = sendStalledError{u.cfg.ResponseHeaderTimeout}
	}
	if err = x.end(err); err != nil {
		return nil, &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: err}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Do asks for no switch (an upgrade goes through UpgradeTransport), as the h1 path
		// refuses it. Its body, the connection, wrapped in Do's, is no upgraded connection:
		// ReverseProxy refused it without closing it, and the bulkhead slot and the
		// connection stayed taken.
		resp.Body.Close()
		return nil, &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: fmt.Errorf("read response header: %w", errUnexpectedSwitch)}
	}
	if resp.StatusCode < 100 {
		// The Transport takes only 100-199 for 1xx and hands back any other three digits as
		// the final answer, as the h1 path refuses them.
		resp.Body.Close()
		return nil, &url.Error{Op: opName(req), URL: req.URL.Redacted(), Err: fmt.Errorf("read response header: %w %d", errStatusBelow100, resp.StatusCode)}
	}
	dropInvalidFields(resp.Header)
	return resp, nil
}

// testHookRoundTripped, if set, runs after the transport's RoundTrip of a request with a body
// returned and before its send watch stops: a test fires the watch there, as its timer may.
var testHookRoundTripped func(*sendWatch)

// sendStalledError ends an exchange whose request body the upstream took nothing of for
// after (ResponseHeaderTimeout): a timeout, as a silent upstream's answer is.
type sendStalledError struct{ after time.Duration }

func (e sendStalledError) Error() string {
	return fmt.Sprintf("write request body: upstream took nothing of it for %v", e.after)
}

func (sendStalledError) Timeout() bool   { return true }
func (sendStalledError) Temporary() bool { return true }

// sendWatch ends an exchange whose request body stops going out. ResponseHeaderTimeout starts
// only once the body is written, and an upstream that stops reading it (hung, its socket's
// buffers full) held the exchange, and its bulkhead slot, until BodyTimeout: a pass's is
// pass_timeout, an hour. The transport reads the body as it sends it (over HTTP/2 as
// flow control lets it), so a read that does not follow the last within the timeout means
// that what the last returned did not go out meanwhile (nginx's proxy_send_timeout). The time
// a read itself takes is the caller's body's, not the upstream's, and is not counted. After
// the body's end, the transport's write of the request ends the watch (httptrace's
// WroteRequest): over HTTP/2 the body's last read and its end come before its last bytes are
// sent, as the upstream's flow-control window opens for them. Over HTTP/1 the Transport
// flushes the head before a body it does not know to be in memory (this one), and then writes
// each read of a body of known length straight to the connection: its last write is watched
// too (only a chunked body's terminator, which Do's callers never send, waits in its buffer).
type sendWatch struct {
	cancel  context.CancelCauseFunc // ends the exchange
	timeout time.Duration

	mu      sync.Mutex // guards timer, stopped and fired
	timer   *time.Timer
	stopped bool // the head came or the exchange failed: nothing more to watch
	fired   bool
}

// watchSend returns ctx, which the returned watch cancels when a body it watches stalls.
func watchSend(ctx context.Context, timeout time.Duration) (context.Context, *sendWatch) {
	ctx, cancel := context.WithCancelCause(ctx)
	return ctx, &sendWatch{cancel: cancel, timeout: timeout}
}

// watch returns body, each of whose reads restarts the timeout.
func (w *sendWatch) watch(body io.ReadCloser) io.ReadCloser {
	return &watchedBody{ReadCloser: body, w: w}
}

// pause stops the timeout while the transport reads the body.
func (w *sendWatch) pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}

// sending starts the timeout for the write of what a read returned.
func (w *sendWatch) sending() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.fired {
		return
	}
	if w.timer == nil {
		w.timer = time.AfterFunc(w.timeout, w.fire)
		return
	}
	w.timer.Reset(w.timeout)
}

func (w *sendWatch) fire() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.fired = true
	w.mu.Unlock()
	w.cancel(sendStalledError{w.timeout})
}

// stop ends the watch once the transport returned, and reports whether it had ended the
// exchange (then even if an answer came meanwhile: roundTrip keeps only one with no body).
// The answer's body reads on under the exchange's context, which a stopped watch leaves alone.
func (w *sendWatch) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
	return w.fired
}

// watchedBody is a request body whose reads tell its sendWatch. Read and Close only: a
// WriterTo would let the transport copy it in one write, unwatched.
type watchedBody struct {
	io.ReadCloser
	w *sendWatch
}

// maxWatchedRead bounds each read of a watched body, and so what the upstream must take
// within the timeout. Over HTTP/2 the transport reads up to 512 KiB at once (against a peer
// allowing large frames, as Go's servers do) and sends it as the flow-control window opens: an
// upstream taking less than that per timeout was cut though it read steadily. 32 KiB is what
// HTTP/1's copy reads already.
const maxWatchedRead = 32 << 10

func (b *watchedBody) Read(p []byte) (int, error) {
	if len(p) > maxWatchedRead {
		p = p[:maxWatchedRead]
	}
	b.w.pause()
	n, err := b.ReadCloser.Read(p)
	if err == nil || err == io.EOF {
		// At the end too: what was read may not be sent yet (HTTP/2's last bytes), until the
		// request is written (WroteRequest). A failed read ends the exchange.
		b.w.sending()
	}
	return n, err
}

// Close stops the timeout: the transport closes the body once it has sent it (over HTTP/1;
// what is left is the wait for the answer, which ResponseHeaderTimeout bounds), or when it
// stops sending it, the answer come (over HTTP/2).
func (b *watchedBody) Close() error {
	b.w.pause()
	return b.ReadCloser.Close()
}

// transportHeadLimit is in the error of net/http's Transport for a head past its
// MaxResponseHeaderBytes ("net/http: server response headers exceeded N bytes; aborted"),
// which it makes with fmt.Errorf: nothing else tells it.
const transportHeadLimit = "server response headers exceeded"

// exchangeTrace is what roundTrip learns of an exchange from the built *http.Transport.
type exchangeTrace struct {
	maxHead   int64                  // Config.MaxHeadBytes
	connected atomic.Bool            // GotConn came
	interim   atomic.Int32           // 1xx heads read (by the Transport's goroutine)
	armed     atomic.Pointer[arming] // the HTTP/1 connection whose heads are bounded, if any
}

// arming is an exchange's bound on the heads read from a connection (headConn.arm).
type arming struct {
	conn *headConn
	gen  uint64
}

// disarm ends the bound on the exchange's heads and reports whether a read went past it.
func (x *exchangeTrace) disarm() bool {
	a := x.armed.Load()
	return a != nil && a.conn.disarm(a.gen)
}

// end is called once the Transport's RoundTrip returned err: it disarms the bound and
// returns err as the bounds name it, or as notReachedError before a connection. x may be nil
// (an injected Transport's exchange): err is returned as it is.
func (x *exchangeTrace) end(err error) error {
	if x == nil {
		return err
	}
	// The head is in (or the exchange failed): the body's reads are not bounded. A read past
	// the bound that came after a head that fitted is the Transport's wait for the next
	// answer on a connection it then closes, not this exchange's failure.
	over := x.disarm()
	switch {
	case err == nil:
	case x.interim.Load() > max1xx:
		// The bound's own error: HTTP/2 gives it as the cause of a stream error, which does
		// not unwrap.
		err = fmt.Errorf("read response header: %w", errTooMany1xx)
	case over || strings.Contains(err.Error(), transportHeadLimit):
		// The Transport words it its own way, or not at all (a TLS record's error). Beneath
		// TLS, where headConn has tlsRoom more, the Transport's own bound on each head may
		// come first, naming MaxResponseHeaderBytes, one byte more.
		err = fmt.Errorf("read response header: %w", headTooLargeError{x.maxHead})
	case !x.connected.Load():
		err = &notReachedError{err}
	}
	return err
}

// trace returns ctx with the client trace that tells x, and fails the exchange after max1xx
// 1xx heads, and arms the bound on the heads' bytes (headConn). The Transport bounds each head
// (MaxResponseHeaderBytes) but, since Go 1.24 (golang.org/issue/65035), neither their number
// nor their sum once a Got1xxResponse hook takes them, as the edge's does to forward them. httptrace.WithClientTrace would call both that hook and this
// one and keep only the caller's result, losing the bound's error: this trace takes the
// place of a caller's that has a Got1xxResponse (withoutTrace hides it) and calls the
// caller's hooks itself.
func (x *exchangeTrace) trace(ctx context.Context) context.Context {
	gotConn := func(info httptrace.GotConnInfo) {
		x.connected.Store(true)
		if fc, ok := info.Conn.(*framingConn); ok {
			fc.arm()
		}
		if hc, overTLS := headConnOf(info.Conn); hc != nil {
			x.armed.Store(&arming{hc, hc.arm(armBound(x.maxHead, overTLS), x.maxHead)})
		}
	}
	bound := func(int, textproto.MIMEHeader) error {
		if x.interim.Add(1) > max1xx {
			return errTooMany1xx
		}
		return nil
	}
	old := httptrace.ContextClientTrace(ctx)
	if old == nil || old.Got1xxResponse == nil {
		return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: gotConn, Got1xxResponse: bound})
	}
	ct := *old
	if callerConn := old.GotConn; callerConn != nil {
		ct.GotConn = func(info httptrace.GotConnInfo) {
			gotConn(info)
			callerConn(info)
		}
	} else {
		ct.GotConn = gotConn
	}
	ct.Got1xxResponse = func(code int, h textproto.MIMEHeader) error {
		if err := bound(code, h); err != nil {
			return err
		}
		return old.Got1xxResponse(code, h)
	}
	return httptrace.WithClientTrace(withoutTrace{ctx}, &ct)
}

// withoutTrace is a context without its parent's client trace, for one that takes its place.
type withoutTrace struct{ context.Context }

func (c withoutTrace) Value(key any) any {
	v := c.Context.Value(key)
	if _, ok := v.(*httptrace.ClientTrace); ok {
		return nil
	}
	return v
}

// opName is the operation a *url.Error names for req, as http.Client words it: "Get", "Post".
func opName(req *http.Request) string {
	if m := req.Method; m != "" && m != http.MethodGet {
		return m[:1] + strings.ToLower(m[1:])
	}
	return "Get"
}

// closeBody closes the body of a request that will not be sent, as http.Client.Do would.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// classify turns an exchange error into the error reported to the caller and the breaker:
// the caller's own cancellation is excluded from the breaker, unless its cause is a deadline
// (a timer of the caller's: the edge's peer_timeout), which is a timeout like the context's
// own deadline, but never a failure to reach the upstream (callerTimeoutError); the body
// timeout (timedOut: it has expired) is named.
func (u *Upstream) classify(parent context.Context, timedOut bool, err error) error {
	switch {
	case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled) &&
		!errors.Is(context.Cause(parent), context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", errCallerCanceled, err)
	case parent.Err() != nil || callerDeadlinePassed(parent):
		return &callerTimeoutError{err}
	case timedOut:
		return fmt.Errorf("%w after %v: %w", errBodyTimeout, u.cfg.BodyTimeout, err)
	}
	return err
}

// callerDeadlinePassed reports whether ctx's deadline has passed, which a dial bounded by it
// (net.Dialer's own timer) may see a moment before ctx.Err does.
func callerDeadlinePassed(ctx context.Context) bool {
	d, _ := ctx.Deadline()
	return pastDeadline(d)
}

// pastDeadline reports whether deadline is set and has passed.
func pastDeadline(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

// errFailureStatus marks an answer whose status FailureStatus counts as a failure.
var errFailureStatus = errors.New("status")

// refused is Do's error for a request the breaker refused (err is gobreaker's), counted.
func (u *Upstream) refused(req *http.Request, err error) error {
	u.breakerRejections.Add(1)
	return fmt.Errorf("fetch %s from %s: %w: %w", req.URL, u.cfg.Name, ErrBreakerOpen, err)
}

// finish reports the outcome to the breaker and frees the bulkhead slot.
func (u *Upstream) finish(done func(error), b *body, err error) {
	u.report(done, b, err)
	u.release()
}

// report tells the breaker the outcome of the exchange b: err, or a success if nil.
func (u *Upstream) report(done func(error), b *body, err error) {
	switch {
	case err == nil:
		err = success{b}
	case !ignoredOutcome(err):
		u.failures.Add(1)
	}
	done(err)
	u.tellChanges()
}

// notReachedError is a failure before a connection to the upstream was ready: its dial
// (DialTimeout included; one the caller's deadline cut short is a callerTimeoutError too) or,
// for https, its TLS handshake.
type notReachedError struct{ err error }

func (e *notReachedError) Error() string { return e.err.Error() }
func (e *notReachedError) Unwrap() error { return e.err }

// Timeout is the wrapped error's: url.Error.Timeout asks its Err directly, not through Unwrap.
func (e *notReachedError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

// callerTimeoutError is an exchange the caller's deadline ended (or a cancellation whose
// cause is one). A dial or TLS handshake it cut short had less than its own timeout to
// finish (the caller had little time left): that says nothing of whether the upstream can be
// reached, so it counts as a timeout only, not toward ConsecutiveFailures.
type callerTimeoutError struct{ err error }

func (e *callerTimeoutError) Error() string { return e.err.Error() }
func (e *callerTimeoutError) Unwrap() error { return e.err }

// inARow reports whether err is a failure ConsecutiveFailures counts: the upstream was not
// reached, or answered with a status counted as a failure. With an injected Transport, whose
// connections this package does not see, a failed dial is the one sign of the first.
func inARow(err error) bool {
	var nr *notReachedError
	var op *net.OpError
	var ct *callerTimeoutError
	if errors.As(err, &ct) {
		return false
	}
	return errors.Is(err, errFailureStatus) || errors.As(err, &nr) || errors.As(err, &op) && op.Op == "dial"
}

// acquire takes a bulkhead slot, waiting at most QueueWait.
func (u *Upstream) acquire(ctx context.Context) error {
	if u.slots == nil {
		u.inFlight.Add(1)
		return nil
	}
	select {
	case u.slots <- struct{}{}:
		u.inFlight.Add(1)
		return nil
	default:
	}
	start := u.cfg.Clock()
	t := time.NewTimer(u.cfg.QueueWait)
	defer t.Stop()
	select {
	case u.slots <- struct{}{}:
		u.inFlight.Add(1)
		return nil
	case <-t.C:
		u.bulkheadRejections.Add(1)
		return fmt.Errorf("fetch from %s: %w (%d in flight, waited %v)",
			u.cfg.Name, ErrBulkheadFull, u.cfg.MaxConcurrent, u.cfg.Clock().Sub(start).Round(time.Millisecond))
	case <-ctx.Done():
		return fmt.Errorf("fetch from %s: waiting for a bulkhead slot: %w", u.cfg.Name, context.Cause(ctx))
	}
}

func (u *Upstream) release() {
	u.inFlight.Add(-1)
	if u.slots != nil {
		<-u.slots
	}
}

// Stats is a snapshot of one upstream's counters.
type Stats struct {
	Name  string
	State string // "closed", "open" or "half-open"
	// InFlight is the number of requests holding a bulkhead slot: sent, and their response
	// body not yet closed, or with ReleaseAtHead their response head not yet in.
	InFlight int
	// Streaming is the number of answers whose slot ReleaseAtHead freed at their head and
	// whose body is not yet closed (always 0 without ReleaseAtHead).
	Streaming int
	// Requests counts requests sent (admitted by bulkhead and breaker); Failures counts those the
	// breaker saw fail; the rejections count requests refused before sending.
	Requests, Failures, BulkheadRejections, BreakerRejections uint64
}

// Stats returns a snapshot of the upstream's counters and breaker state.
func (u *Upstream) Stats() Stats {
	state := u.breaker.State() // which moves an open breaker past its timeout to half-open
	u.tellChanges()
	return Stats{
		Name:               u.cfg.Name,
		State:              state.String(),
		InFlight:           int(u.inFlight.Load()),
		Streaming:          int(u.streaming.Load()),
		Requests:           u.requests.Load(),
		Failures:           u.failures.Load(),
		BulkheadRejections: u.bulkheadRejections.Load(),
		BreakerRejections:  u.breakerRejections.Load(),
	}
}

// Close closes idle connections. In-flight requests are not affected.
func (u *Upstream) Close() {
	if t, ok := u.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// body wraps a response body so that closing it reports the outcome to the breaker, releases the
// bulkhead slot (unless freed at the head) and stops the body timer (the exchange context's, off
// the HTTP/1.1 path).
type body struct {
	rc       io.ReadCloser
	u        *Upstream
	ctx      context.Context // the exchange context, canceled with errBodyTimeout on BodyTimeout; nil on the HTTP/1.1 path
	parent   context.Context // the caller's context
	cancel   context.CancelFunc
	deadline time.Time   // when BodyTimeout expires, on the HTTP/1.1 path (the connection's read deadline)
	done     func(error) // nil once reported (a half-open probe's, at its head)
	sent     uint64      // Upstream.streaks when the exchange was sent
	status   error       // non-nil for a status FailureStatus counts as a failure
	freed    bool        // the slot was freed at the head (ReleaseAtHead): Close frees none

	mu      sync.Mutex // guards readErr, whole and closing
	readErr error      // first read error other than io.EOF, before Close
	whole   bool       // the body was read to its end (or had none): the exchange succeeded
	// closing: Close was called. A Read it ended (one blocked while the caller dropped the
	// body) fails by the caller's doing, which says nothing of the upstream: its error is not
	// the outcome. Recorded, it raced Close's report and mostly won, counted as a failure.
	closing bool

	closeOnce sync.Once
}

// timedOut reports whether BodyTimeout has expired: the exchange context's cause, or on the
// HTTP/1.1 path the deadline.
func (b *body) timedOut() bool {
	if b.ctx != nil {
		return context.Cause(b.ctx) == errBodyTimeout
	}
	return pastDeadline(b.deadline)
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		b.whole = true
		b.mu.Unlock()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = b.u.classify(b.parent, b.timedOut(), err)
		b.mu.Lock()
		if b.readErr == nil && !b.closing {
			b.readErr = err
		}
		b.mu.Unlock()
		err = fmt.Errorf("read body from %s: %w", b.u.cfg.Name, err)
	}
	return n, err
}

func (b *body) Close() error {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	err := b.rc.Close()
	b.closeOnce.Do(func() {
		b.mu.Lock()
		outcome, whole := b.readErr, b.whole
		b.mu.Unlock()
		if outcome == nil && !whole && b.timedOut() && b.parent.Err() == nil {
			// The timeout expired while the caller held the body without reading to the end
			// (a body read to its end is a success, however late the caller closes it).
			outcome = fmt.Errorf("%w after %v", errBodyTimeout, b.u.cfg.BodyTimeout)
		}
		if outcome == nil {
			outcome = b.status
		} else if b.freed && errors.Is(outcome, errBodyTimeout) {
			outcome = fmt.Errorf("%w: %w", errOwnLimit, outcome)
		}
		if b.cancel != nil {
			b.cancel()
		}
		if b.done != nil {
			b.u.report(b.done, b, outcome)
		}
		if b.freed {
			b.u.streaming.Add(-1)
			return
		}
		b.u.release()
	})
	return err
}
