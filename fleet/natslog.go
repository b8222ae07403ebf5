package fleet

import (
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// ConnectLogging returns the options that log a NATS connection's (re)connects and its failed
// attempts, for a connection made with RetryOnFailedConnect: a first connection that fails is
// then retried in the background and only ConnectHandler and ReconnectErrHandler hear of it.
// A failed attempt is logged naming the servers (urls, redacted) and the error, once per
// distinct error since the last connection; the first connection and each reconnection are
// logged when they come.
func ConnectLogging(log *slog.Logger, urls string) []nats.Option {
	r := newNATSRetries(log, urls)
	return []nats.Option{
		nats.ConnectHandler(func(c *nats.Conn) {
			r.connected()
			log.Info("nats connected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			r.connected()
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(r.failed),
	}
}

// natsRetries logs failed connection attempts: an attempt is logged when its error differs
// from the previous one's since the last connection.
type natsRetries struct {
	log  *slog.Logger
	urls string // redacted
	mu   sync.Mutex
	last string
}

func newNATSRetries(log *slog.Logger, urls string) *natsRetries {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return &natsRetries{log: log, urls: strings.Join(parts, ",")}
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
	r.log.Warn("nats unreachable; retrying", "nats", r.urls, "err", err)
}

func (r *natsRetries) connected() {
	r.mu.Lock()
	r.last = ""
	r.mu.Unlock()
}
