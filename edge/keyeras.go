package edge

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
)

// maxKeyEras bounds the past key options kept per host. Past it, the oldest is forgotten and
// everything of the host stored so far is purged, since a URL purge could no longer name the
// copies keyed under it.
const maxKeyEras = 8

// keyEra is a set of key options a host had until a moment: copies filled under it are keyed
// by it, and become reachable again if the host gets those options back.
type keyEra struct {
	opts  httpcache.KeyOptions
	until time.Time
}

// keyEras remembers, per host, the key options (ignore_query, keep_params, sort_query) the
// node keyed copies under before its current ones, for as long as such a copy may be in the
// store, so that a URL purge, and an unsafe request's invalidation, names the URL under each
// (ApplyPurge, Node.invalidate). Without them, options changed and changed back within a
// copy's TTL left a URL purge or a write made in between unable to reach the older copies,
// which came back as fresh hits.
type keyEras struct {
	mu   sync.Mutex // protects past, and orders Node.hosts swaps with the reads of both
	past map[string][]keyEra
	// hosts is len(past), stored with the lock held: invalidations read it without the lock,
	// which they need only when some host has past options.
	hosts atomic.Int32
}

// swapHosts stores table as the node's hosts, remembering the key options of every host whose
// options it changes or that it drops.
func (n *Node) swapHosts(table map[string]*hostState) {
	e := &n.keyEras
	e.mu.Lock()
	defer e.mu.Unlock()
	now := n.clock()
	// Forget what no stored copy can be keyed under any more, of every host: else a host
	// dropped from the config, which no purge may name again, were kept for ever, and past
	// options that ended long ago counted towards maxKeyEras, purging the host for nothing.
	// Options a host gets back are its current ones again, which every URL purge names: kept
	// as past too, they took a place of the bound (the ninth set, back to the first, purged
	// the host with only eight others past).
	horizon := n.keyEraHorizon()
	for name, eras := range e.past {
		cur := table[name]
		if eras = slices.DeleteFunc(eras, func(k keyEra) bool {
			return k.until.Before(horizon) || cur != nil && sameKeyOptions(k.opts, cur.keyOpts)
		}); len(eras) == 0 {
			delete(e.past, name)
		} else {
			e.past[name] = eras
		}
	}
	if old := n.hosts.Load(); old != nil {
		for name, hs := range *old {
			if nw := table[name]; nw != nil && sameKeyOptions(nw.keyOpts, hs.keyOpts) {
				continue
			}
			if e.past == nil {
				e.past = map[string][]keyEra{}
			}
			eras := slices.DeleteFunc(e.past[name], func(k keyEra) bool { return sameKeyOptions(k.opts, hs.keyOpts) })
			eras = append(eras, keyEra{opts: hs.keyOpts, until: now})
			if len(eras) > maxKeyEras {
				eras = eras[1:]
				n.store.Purge(store.Record{Kind: store.Host, Host: name})
				n.log.Warn("key options of a host changed too often to purge URLs under each; purged the host", "host", name)
			}
			e.past[name] = eras
		}
	}
	e.hosts.Store(int32(len(e.past)))
	n.hosts.Store(&table)
}

// invalidationKeyOptions returns the key options an unsafe request's invalidation names a URL
// of host under (Node.invalidate), appended to buf: cur, those the request was served under,
// then the host's current ones and past ones (keyOptionsLocked) if any host has past ones.
// Duplicates are the caller's to skip.
func (n *Node) invalidationKeyOptions(host string, cur httpcache.KeyOptions, buf []httpcache.KeyOptions) []httpcache.KeyOptions {
	buf = append(buf, cur)
	if n.keyEras.hosts.Load() == 0 {
		return buf // the usual case, without the lock every URL purge takes
	}
	n.keyEras.mu.Lock()
	defer n.keyEras.mu.Unlock()
	return n.keyOptionsLocked(host, buf)
}

// keyOptionsLocked returns host's current key options (the zero value if the node does not
// serve it), then those of its past eras whose copies may still be stored, dropping the
// others, appended to buf (a caller's array keeps a purge without eras from allocating); the
// caller holds keyEras.mu.
func (n *Node) keyOptionsLocked(host string, buf []httpcache.KeyOptions) []httpcache.KeyOptions {
	var opts httpcache.KeyOptions
	if hs := (*n.hosts.Load())[host]; hs != nil {
		opts = hs.keyOpts
	}
	out := append(buf, opts)
	eras := n.keyEras.past[host]
	if len(eras) == 0 {
		return out
	}
	horizon := n.keyEraHorizon()
	eras = slices.DeleteFunc(eras, func(k keyEra) bool { return k.until.Before(horizon) })
	if len(eras) == 0 {
		delete(n.keyEras.past, host)
		n.keyEras.hosts.Store(int32(len(n.keyEras.past)))
		return out
	}
	n.keyEras.past[host] = eras
	for _, k := range eras {
		out = append(out, k.opts)
	}
	return out
}

// keyEraHorizon is the moment before which an era's end leaves no stored copy keyed under it. Such
// a copy was fetched at most a little after the era ended (a request may read the options just
// before the change); twice the life of a purge record covers that and its hold.
func (n *Node) keyEraHorizon() time.Time {
	return n.clock().Add(-2 * n.store.RecordLife())
}

func sameKeyOptions(a, b httpcache.KeyOptions) bool {
	return a.IgnoreQuery == b.IgnoreQuery && a.SortQuery == b.SortQuery && slices.Equal(a.KeepParams, b.KeepParams)
}
