package edge

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/origin/fetch"
)

// upstream returns the client for one upstream base address, creating it on first use; it is
// named kind+" "+id+" "+addr ("origin example.com 10.0.0.5:80", "peer lon-2 10.1.0.2:80"), a
// string built only then, not on every miss. The address is in the name because clients are
// per address: a host whose origin moved, or a peer back on another address, has two, and
// /metrics fails on two series with one label. For every upstream, origin or peer, only
// transport failures trip the breaker (fetch's default): any HTTP answer, 5xx included, means
// it is alive and is passed on or cached per RFC 9111.
func (f *filler) upstream(kind, id, addr string) *fetch.Upstream {
	return f.client(addr, func() fetch.Config {
		fc := f.baseConfig()
		fc.Name = kind + " " + id + " " + addr
		if kind == "peer" {
			// A peer's or shield's answer waits for its own fill from the origin, which may
			// take the origin's whole response_header_timeout: peer_timeout is longer.
			fc.ResponseHeaderTimeout = f.n.cfg.PeerTimeout
			// A node's answer is its origin's head, which took up to fetch's bound, with what
			// the nodes on the way add (Via, Cache-Status, Age: a few hundred bytes a hop).
			// Bounded as the origin's, a head the owner took failed here, against the
			// owner's breaker, and this node went to the origin itself.
			fc.MaxHeadBytes = fetch.DefaultMaxHeadBytes + peerHeadRoom
		}
		return fc
	})
}

// peerHeadRoom is what a peer's or shield's answer head may take beyond an origin's: the
// fields edges add to it, with room to spare.
const peerHeadRoom = 16 << 10

// passUpstream returns the client for the pass-through traffic of a host's origin (and a
// client's own fills: a request with Authorization, a body too large to keep refetched, which
// free their slot at the head too): its own bulkhead and breaker, so requests that
// are never stored (and may stream for long, up to PassTimeout) cannot starve cache fills of
// origin slots. Its slot is freed once the origin's answer head is in (ReleaseAtHead): the
// bulkhead bounds what the origin has yet to answer, not the answers streaming to clients at
// their pace. Held until the body's end, an event stream kept its slot for as long as it
// lasted, and max_concurrent viewers of one left every other pass to the origin (a login, a
// form) a 503; nginx's proxy_pass and Varnish's pass bound neither.
func (f *filler) passUpstream(hs *hostState) *fetch.Upstream {
	return f.client("pass "+hs.origin.Host, func() fetch.Config {
		fc := f.baseConfig()
		fc.Name = "pass origin " + hs.cfg.Host + " " + hs.origin.Host // one per address, as upstream's
		fc.BodyTimeout = f.n.cfg.PassTimeout
		fc.ReleaseAtHead = true
		return fc
	})
}

// client returns the client stored under key, creating it from config() on first use.
func (f *filler) client(key string, config func() fetch.Config) *fetch.Upstream {
	f.upMu.Lock()
	defer f.upMu.Unlock()
	if u, ok := f.upstreams[key]; ok {
		return u
	}
	cfg := config()
	cfg.OnBreakerChange = f.n.breakerLogger()
	u := fetch.New(cfg)
	f.upstreams[key] = u
	return u
}

// breakerLogger logs one upstream's breaker changes that an operator acts on: its opening
// (the upstream cannot be reached: fills to it fail fast, 502 or stale), once per outage and
// not on each half-open probe that fails and opens it again (one every open_timeout), and its
// closing. Without it an origin that went down left no line in the log, only 502s (in the
// access log, when on) and the breaker's gauge. The failure's URL is written without its
// query (withoutQueries). fetch calls it outside the breaker's lock, so a stderr that blocks
// holds up one request to the upstream, not all of them.
func (n *Node) breakerLogger() func(fetch.BreakerChange) {
	var openedAt time.Time // when it left closed; fetch tells the changes one at a time, in order
	return func(c fetch.BreakerChange) {
		switch {
		case c.From == "closed" && c.To == "open":
			openedAt = time.Now()
			n.log.Warn("upstream breaker open", "upstream", c.Name, "err", withoutQueries(c.Err), "open_timeout", c.OpenTimeout.String())
		case c.To == "closed":
			n.log.Info("upstream breaker closed", "upstream", c.Name, "open_for", time.Since(openedAt).Round(time.Millisecond).String())
		}
	}
}

// withoutQueries is err's text with the URL of each *url.Error in its tree cut at its query
// (or fragment): a fill's query may carry a token or a signature, which a log line every
// operator reads must not. The access log, which is off by default, writes the client's
// request target whole.
func withoutQueries(err error) string {
	s := errString(err)
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
			return
		case *url.Error:
			if i := strings.IndexAny(e.URL, "?#"); i >= 0 {
				// Its text quotes the URL (%q), escaping a quote, a backslash or a byte
				// that is not UTF-8 in the query: the quoted form first, then the bare one
				// (a wrapper's own %s).
				s = strings.ReplaceAll(s, strconv.Quote(e.URL), strconv.Quote(e.URL[:i]))
				s = strings.ReplaceAll(s, e.URL, e.URL[:i])
			}
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
			return
		}
		walk(errors.Unwrap(err))
	}
	walk(err)
	return s
}

// errString is err's text, or "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// baseConfig is the node's upstream configuration as fetch takes it.
func (f *filler) baseConfig() fetch.Config {
	n := f.n
	uc := n.cfg.Upstream
	dial := n.cfg.DialContext
	if dial == nil {
		dial = n.sourceBoundDialer(uc.DialTimeout)
	}
	return fetch.Config{
		DialTimeout:           uc.DialTimeout,
		TLSHandshakeTimeout:   uc.TLSHandshakeTimeout,
		ResponseHeaderTimeout: uc.ResponseHeaderTimeout,
		BodyTimeout:           uc.BodyTimeout,
		MaxConcurrent:         uc.MaxConcurrent,
		QueueWait:             uc.QueueWait,
		ConsecutiveFailures:   uc.ConsecutiveFailures,
		FailureRatio:          uc.FailureRatio,
		OpenTimeout:           uc.OpenTimeout,
		DialContext:           dial,
		Clock:                 n.clock,
	}
}

// upstreamStats snapshots every upstream's breaker and bulkhead counters.
func (f *filler) upstreamStats() []fetch.Stats {
	// Stats may tell a queued breaker change (a log write): outside upMu, which every fill's
	// client lookup takes, so that a scrape with a blocked stderr stalls no fill.
	f.upMu.Lock()
	ups := make([]*fetch.Upstream, 0, len(f.upstreams))
	for _, u := range f.upstreams {
		ups = append(ups, u)
	}
	f.upMu.Unlock()
	out := make([]fetch.Stats, 0, len(ups))
	for _, u := range ups {
		out = append(out, u.Stats())
	}
	return out
}
