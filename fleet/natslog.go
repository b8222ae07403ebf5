package fleet

import (
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectLogging returns the options that log a NATS connection's (re)connects and its failed
// attempts, for a connection made with RetryOnFailedConnect: a first connection that fails is
// then retried in the background and only ConnectHandler and ReconnectErrHandler hear of it.
// A failed attempt is logged naming the servers (urls, redacted) and the error, once per
// distinct error since the last connection; the first connection and each reconnection are
// logged when they come.
func ConnectLogging(log *slog.Logger, urls string) []nats.Option {
	r := &natsRetries{log: log, urls: RedactURLs(urls)}
	return []nats.Option{
		nats.ConnectHandler(func(c *nats.Conn) {
			r.connected()
			log.Info("nats connected", "url", RedactURL(c.ConnectedUrl()))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			r.connected()
			log.Info("nats reconnected", "url", RedactURL(c.ConnectedUrl()))
		}),
		nats.ReconnectErrHandler(r.failed),
	}
}

// ErrorLog logs a NATS connection's asynchronous errors (a subscription that fell behind, a
// permission the server refused, and "consumer not active" from every KV watch whose
// heartbeats stop while NATS is away: one per watch at each outage) as the warning "nats
// error", with the subscription's subject when there is one, through one RateLog per kind of
// error (errorKind): the first of a kind at once, the others of that kind within the minute
// after it held back and counted in one line (see RateLog). A noisy kind so hides no other: a
// permission refused amid "consumer not active" is written at once. nats.go's default writes
// each to stderr. Control, the edge and the DNS server connect with it; its methods are safe
// for concurrent use.
type ErrorLog struct {
	log    *slog.Logger
	once   sync.Once
	closed chan struct{} // closed by the connection's ClosedCB

	mu    sync.Mutex          // guards kinds
	kinds map[string]*RateLog // by errorKind; at most maxErrorKinds, then the overflow's ("")
}

// NewErrorLog returns an ErrorLog writing to log (nil discards).
func NewErrorLog(log *slog.Logger) *ErrorLog {
	return &ErrorLog{log: log, closed: make(chan struct{}), kinds: map[string]*RateLog{}}
}

// errorKinds are the errors told apart whatever their text says beyond them (the subject of a
// permission refused, say); other errors are told apart by their text.
var errorKinds = []error{nats.ErrPermissionViolation, nats.ErrSlowConsumer, nats.ErrConsumerNotActive}

// maxErrorKinds bounds the kinds an ErrorLog limits apart, as errors told apart by their text
// could be of any number: those beyond it share one limit.
const maxErrorKinds = 16

// errorKind is what err's rate limit is kept under.
func errorKind(err error) string {
	for _, k := range errorKinds {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// Option is the option to connect with: it sets the connection's error handler, and wraps its
// closed handler (set before it) so that Close knows when the callbacks queued before the
// close have run. Give it to one connection only.
func (e *ErrorLog) Option() nats.Option {
	return func(o *nats.Options) error {
		o.AsyncErrorCB = e.warn
		prev := o.ClosedCB
		o.ClosedCB = func(c *nats.Conn) {
			if prev != nil {
				prev(c)
			}
			e.once.Do(func() { close(e.closed) })
		}
		return nil
	}
}

// rateLog is the RateLog of err's kind.
func (e *ErrorLog) rateLog(err error) *RateLog {
	kind := errorKind(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	rl, ok := e.kinds[kind]
	if ok {
		return rl
	}
	if len(e.kinds) >= maxErrorKinds {
		kind = ""
		if rl, ok = e.kinds[kind]; ok {
			return rl
		}
	}
	rl = NewRateLog(e.log, "nats error", 0)
	e.kinds[kind] = rl
	return rl
}

func (e *ErrorLog) warn(_ *nats.Conn, sub *nats.Subscription, err error) {
	rl := e.rateLog(err)
	if sub != nil {
		rl.Warn("subject", sub.Subject, "err", err)
		return
	}
	rl.Warn("err", err)
}

// closeWait bounds how long Close waits for the connection's queued callbacks.
const closeWait = 5 * time.Second

// Close closes nc, the connection made with Option (nil: none was made), waits (at most a few
// seconds) until nats.go has run the error callbacks it queued before the close, which it runs
// on a goroutine of its own, and then writes the warnings held back (RateLog.Stop): its owner
// calls it instead of nc.Close when it stops, and the ErrorLog writes nothing after it.
func (e *ErrorLog) Close(nc *nats.Conn) {
	if nc != nil {
		nc.Close()
		t := time.NewTimer(closeWait)
		select {
		case <-e.closed:
		case <-t.C:
		}
		t.Stop()
	}
	e.mu.Lock()
	rls := make([]*RateLog, 0, len(e.kinds))
	for _, rl := range e.kinds {
		rls = append(rls, rl)
	}
	e.mu.Unlock()
	for _, rl := range rls {
		rl.Stop()
	}
}

// LogDisconnects returns the option that logs a NATS connection's disconnects as warnings,
// except the one of its own Close: nats.go reports that too, with a nil error, and every clean
// stop of a process logged "nats disconnected" as if it had lost NATS.
func LogDisconnects(log *slog.Logger) nats.Option {
	return nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
		if err == nil && c.IsClosed() {
			return
		}
		log.Warn("nats disconnected", "err", err)
	})
}

// natsRetries logs failed connection attempts: an attempt is logged when its error differs
// from the previous one's since the last connection.
type natsRetries struct {
	log  *slog.Logger
	urls string // redacted
	mu   sync.Mutex
	last string
}

// RedactURLs is a NATS server list (comma-separated URLs) fit for a log or an error: each
// URL's user information is replaced by "xxxxx", all of it where it is a token
// (nats://TOKEN@host), the password where it is user:password. url.URL.Redacted, which
// nats.go's ConnectedUrlRedacted uses, hides only a password and so logs a token. It works on
// the text, so a URL that does not parse (nats.go also takes host:port) is redacted too.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = RedactURL(p)
	}
	return strings.Join(parts, ",")
}

// RedactURL is one URL redacted as RedactURLs does, a comma being part of it: url.URL.String,
// as in nats.go's ConnectedUrl, leaves a comma in user information unescaped
// (nats://tok%2Cen@host is "nats://tok,en@host"), which RedactURLs would split the token at.
func RedactURL(p string) string {
	scheme, rest, found := strings.Cut(p, "://")
	if !found {
		scheme, rest = "", p
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return p
	}
	user := "xxxxx"
	if name, _, ok := strings.Cut(authority[:at], ":"); ok {
		user = name + ":xxxxx"
	}
	p = user + authority[at:]
	if hasPath {
		p += "/" + path
	}
	if found {
		p = scheme + "://" + p
	}
	return p
}

// RedactError is err with the URL of the *url.Error in its chain redacted: nats.Connect
// returns url.Parse's error for a server URL that does not parse, and it quotes the URL whole,
// its token or password too. It changes that error in place.
func RedactError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURL(ue.URL)
	}
	return err
}

func (r *natsRetries) failed(_ *nats.Conn, err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err.Error() == r.last {
		return
	}
	r.last = err.Error()
	r.log.Warn("nats unreachable; retrying", "nats", r.urls, "err", RedactError(err))
}

func (r *natsRetries) connected() {
	r.mu.Lock()
	r.last = ""
	r.mu.Unlock()
}
