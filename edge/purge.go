package edge

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/purge"
)

// ApplyPurge records m in the store's read-time purge records, so that from the moment it
// returns no object it matches is served as fresh (purge rule 1: the caller acks only after
// this). hits counts the URLs of a url purge that were in the cache; for prefix, key and
// whole-host purges matching happens at read time and hits is 0.
func (n *Node) ApplyPurge(_ context.Context, m purge.Message) (hits int, err error) {
	host := strings.ToLower(m.Host)
	// A fill that begins once the first record below is in stores its copy as fetched after
	// this purge: it must ask fleet nodes for a copy with the purge applied, though purgeSeq
	// says so only once every record is in. Asked for before the host's key options are read:
	// a fill under options the host changes to after that read is keyed under none the
	// records name, and only its ask keeps a peer's old copy out.
	n.askPurgeSeq(m.Seq)
	var opts []httpcache.KeyOptions
	if m.Kind == purge.KindURL {
		var buf [2]httpcache.KeyOptions
		n.keyEras.mu.Lock()
		opts = n.keyOptionsLocked(host, buf[:0])
		n.keyEras.mu.Unlock()
		if n.keyOptsHook != nil {
			n.keyOptsHook()
		}
	}
	switch m.Kind {
	case purge.KindURL:
		var stack [4]string
		keys := stack[:0]
		for _, v := range m.Values {
			path, query, hasQuery := strings.Cut(v, "?")
			// The URL under the host's key options and under each it had while a copy now
			// stored was filled (keyeras.go): options changed back make those copies its again.
			keys = keys[:0]
			hit := false
			for _, o := range opts {
				key := httpcache.KeyForced(host, path, query, hasQuery, o)
				if slices.Contains(keys, key) {
					continue
				}
				keys = append(keys, key)
				// Any variant counts: a vary-miss (vary set) is a URL the store holds, whose
				// variants are keyed on fields no purge request has (request.VaryHeader).
				if o, verdict, vary := n.store.Lookup(key, nil); o != nil || vary != nil && verdict != store.Purged {
					hit = true
				}
				if !m.Soft {
					n.dropSlices(host, key)
				}
				n.store.Purge(store.Record{Kind: store.URL, Host: host, Value: key, Soft: m.Soft})
			}
			if hit {
				hits++
			}
		}
	case purge.KindPrefix:
		for _, v := range m.Values {
			// Spelt as the key spells paths, as stored objects' paths are (newObject).
			v = httpcache.NormalizePath(v)
			n.store.Purge(store.Record{Kind: store.Prefix, Host: host, Value: v, Soft: m.Soft})
		}
	case purge.KindKey:
		for _, v := range m.Values {
			n.store.Purge(store.Record{Kind: store.Key, Host: host, Value: v, Soft: m.Soft})
		}
	case purge.KindAll:
		n.store.Purge(store.Record{Kind: store.Host, Host: host, Soft: m.Soft})
	default:
		return 0, fmt.Errorf("apply purge %s: unknown kind %q", m.ID, m.Kind)
	}
	n.metrics.purged(m.Kind)
	if n.appliedHook != nil {
		n.appliedHook()
	}
	n.advancePurgeSeq(m.Seq)
	return hits, nil
}

// maxSlicesDropped bounds the slices dropSlices frees of one variant: its first 65,536 (128 GiB
// at the default slice size). A manifest's length is what its origin's Content-Range says, up
// to the largest int64, and the store cannot tell which of its slices it holds but by asking
// for each: walking every slice of such a length held the purge subscriber's goroutine, and
// every later purge and ack of the node, until the process ran out of memory. Slices past it
// are left to expire, as ones cut at an older slice size are.
const maxSlicesDropped = 1 << 16

// dropSlices frees the slices of every sliced variant stored under key, for a hard URL purge,
// which frees the URL's memory: deleting the manifest alone left the object's whole length in
// the store, slices no lookup serves, until evicted or expired (a year, for max-age=31536000),
// and a refill of a changed object, whose slices its new validator names, held both versions.
// Slices cut at a slice size the host no longer has, and those past maxSlicesDropped, are
// left to expire.
func (n *Node) dropSlices(host, key string) {
	sliceSize := int64(defaultSliceBytes)
	if hosts := n.hosts.Load(); hosts != nil {
		if hs := (*hosts)[host]; hs != nil {
			sliceSize = hs.sliceBytes()
		}
	}
	type manifest struct {
		validator string
		slices    int64
	}
	var ms []manifest
	n.store.EachVariant(key, func(o *store.Object) {
		if o.Size <= 0 || o.Part != "" {
			return // not a manifest
		}
		// (Size-1)/sliceSize+1, not a walk while i*sliceSize < Size, which overflows for a
		// Size near the largest int64. The validator is copied: o's strings are the store's.
		ms = append(ms, manifest{strings.Clone(objectValidator(o)), min((o.Size-1)/sliceSize+1, maxSlicesDropped)})
	})
	for _, m := range ms {
		for i := range m.slices {
			n.store.Delete(key + slicePart(i, sliceSize, m.validator))
		}
	}
}

// MarkAllStale treats every object stored so far as stale: the node missed purges it cannot
// replay (purge rule 3).
func (n *Node) MarkAllStale() {
	n.store.MarkAllStale()
	n.log.Warn("purge stream gap: every cached object is now stale")
}

// skipPurges records that purges up to seq were lost and everything stored was marked stale.
func (n *Node) skipPurges(seq uint64) {
	n.MarkAllStale()
	n.advancePurgeSeq(seq)
}

// purgeGap is the subscriber's OnGap: the purges after last and before next cannot be replayed.
// A next at or below last is a stream deleted and created again, whose sequences start over:
// the node's purge sequence, which fleet nodes ask of each other before a fill (purgeorder.go),
// goes back to the new stream's, or the node would claim new purges it has not applied yet.
func (n *Node) purgeGap(last, next uint64) {
	if next > last {
		n.skipPurges(next - 1)
		return
	}
	n.MarkAllStale()
	n.purgeMu.Lock()
	n.purgeSeq.Store(max(next, 1) - 1)
	n.purgeSeqAsked.Store(max(next, 1) - 1)
	n.purgeMu.Unlock()
}
