// Package store is the edge's bounded in-memory object store: cached responses in Ristretto with
// cost counted in bytes (small ones as records in large segments the collector need not scan,
// segment.go), their Vary variants, and the read-time purge records that decide whether a stored
// object may still be used.
package store

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// MaxVariants bounds how many Vary variants one URL may hold; more are not stored.
const MaxVariants = 32

// Object is one stored response. It is immutable once stored: replacing it is a new Put. The
// store keeps it packed (packed.go) and Lookup builds an Object of it that concurrent readers
// share: never modify an Object from Lookup.
type Object struct {
	// Primary is the cache key without the Vary part (httpcache.Key).
	Primary string
	// Variant is the Vary secondary key (httpcache.VaryKey), "" when the response has no Vary.
	Variant string
	Host    string
	// Path is the request path without query; prefix purges match on it.
	Path   string
	Status int
	// Header is the response header to store, as Put's input: hop-by-hop fields removed, Age,
	// Via and Cache-Status left out (they are written per response). Put lays it out compactly
	// and sets it to nil, so read an object's header only with HeaderValue, HeaderValues,
	// HeaderFields or HeaderMap, never from this field (header.go).
	Header http.Header
	Body   []byte
	// StoredAt is when the fetch that produced the object began, not when it finished, so a
	// purge applied during the fetch still matches it (purge rule 2).
	StoredAt time.Time
	// ResponseTime is when the response arrived; with InitialAge it gives the current age.
	ResponseTime time.Time
	InitialAge   time.Duration
	Policy       httpcache.Policy
	// Keys are the surrogate keys the response declared, as Put's input, and go with Header:
	// Put keeps them with the purge matchers and sets both to nil, so read an object's keys
	// with SurrogateKeys.
	Keys []string
	// LastModified is the parsed Last-Modified field (zero if absent).
	LastModified time.Time
	// Part names one part of a larger object (a slice of it), stored as its own entry under
	// Primary+Part; "" for a whole object. A part carries its object's Primary, Host, Path and
	// Keys, so every purge record that matches the object matches each of its parts.
	Part string
	// Size is, for an object kept in slices, its whole length; Body is then empty and the
	// bytes are in parts. 0 for an object held whole.
	Size int64
	// EdgeCoded: an edge encoded Body (edge/encoding.go), this one or the fleet node it was
	// filled from (which says so, edge/fill.go), so its Content-Encoding and the coding's
	// suffix on its ETag are the edge's, not the origin's. The header alone cannot say: an
	// origin may tag its own gzip answer "x-gzip".
	EdgeCoded bool
	// coded is what Coded answers for a stored object, read from its header by compact.
	coded bool
	// urls is what HasURLFields answers for a stored object, read from its header by compact.
	urls bool

	// arena holds every string of a stored object (compact; the part of its packed meta after
	// the fixed fields), then from ix on an index of some of them (entryAt): first the nm
	// purge-record keys that can match the object (computed once at Put, so that the read-time
	// check allocates nothing), then the header once stored (Header is then nil; header.go).
	arena string
	ix    int32
	nm    int32
	nk    int32 // of the nm matchers, the last nk are the surrogate keys
	// memo is the shared view's (Store.shared), nil for any other Object (Memo).
	memo *atomic.Pointer[memo]
}

// SurrogateKeys returns the object's surrogate keys. They go with its header: Keys while the
// header is the Header map (an object not stored, or a copy of a stored one given a new
// header, even with no keys) or while Keys is set; else those Put kept, in a new slice.
func (o *Object) SurrogateKeys() []string {
	if o.Header != nil || o.Keys != nil || o.nk == 0 {
		return o.Keys
	}
	keys := make([]string, o.nk)
	for i := range keys {
		keys[i] = o.entryAt(int(o.nm-o.nk) + i)[3+len(o.Host):] // "k\x00" host "\x00" key
	}
	return keys
}

// Age is the object's current age at now (RFC 9111 §4.2.3).
func (o *Object) Age(now time.Time) time.Duration {
	return httpcache.CurrentAge(o.InitialAge, o.ResponseTime, now)
}

// TTL is the remaining freshness at now; negative once stale.
func (o *Object) TTL(now time.Time) time.Duration { return o.Policy.Lifetime - o.Age(now) }

// hold is how long the object can be of use after it was stored: its freshness plus the
// longest stale window, which is also how long a purge record must be kept for it.
func (o *Object) hold() time.Duration {
	return o.Policy.Lifetime + max(o.Policy.StaleWhileRevalidate, o.Policy.StaleIfError)
}

// entry is what Ristretto holds per primary key: every variant of one URL. It is never
// modified after it was stored; adding a variant stores a new entry.
type entry struct {
	vary []string
	// variants are searched in order: there are at most MaxVariants, and most URLs have one,
	// which one then holds (variants nil: no slice, no allocation of its own: issue 15); with
	// more, one is the first of them.
	variants []packed
	one      packed
	cost     int64
	gone     atomic.Bool // the entry has left the store (Store.exit)
}

// The shared views (issue 15). Building an Object from an entry's packed form costs a hit
// about 0.5-0.9 us and 400 B, and the edge keeps the hit's serialised header in the Object's
// memo, so readers of a hot object share one Object: the view. The store keeps the views of
// recently read single-variant objects in a table of slots; a key's view may take either of
// two slots chosen by a hash of the key (two, so that two hot keys of one hash can both keep
// theirs). A slot holds one view and the entry it was built from, and a view is used only
// while its entry is the key's current one. A view leaves its slot when another key's view
// takes the slot, or when its entry leaves the store (replaced, deleted, evicted, expired:
// Ristretto's OnExit), so the table holds at most its size in views (charged to the store:
// viewBytes) and never keeps an object the store dropped.
//
// The thirteenth pass held each entry's view through a weak pointer instead. Converting a
// weak pointer to a strong one blocks while the collector finishes its mark phase (the
// runtime's strongFromWeak.block, set from the first attempt to end the phase), and at a full
// store of 1 GiB that stopped every hit for 225-290 ms in some collections (docs/benchmarks.md,
// "Fifteenth pass").

// shared returns the Object of r: an entry's only variant (e.variants nil), or a record (at
// off in g, its ordinal idx). It is the view in one of r's two slots if it was built from r
// at that place, else a new view, which then takes one of them.
func (s *Store) shared(r ref, g *segment, off uint32, idx uint16) *Object {
	set := s.viewSet(r.slot)
	for i := range set {
		if v := set[i].Load(); v != nil && v.r == r && v.g == g && v.off == off {
			return &v.Object
		}
	}
	v := &view{r: r, g: g, off: off, idx: idx}
	if r.e != nil {
		r.e.one.into(&v.Object, r.e.vary)
	} else {
		vary, p := g.record(off)
		p.into(&v.Object, vary)
	}
	v.Object.memo = &v.memo
	// A free slot, or one whose entry has left the store; else either, in turn, so that of
	// three hot keys of one hash none always loses.
	i := int(s.turn.Add(1) & 1)
	for j := range set {
		if w := set[j].Load(); w == nil || w.gone() {
			i = j
			break
		}
	}
	set[i].Store(v)
	// r may have left the store since the caller found it. exit marks it gone before it
	// looks at the slots, and this looks at gone after storing: one of the two sees the
	// other's write (sync/atomic is sequentially consistent), so the slot never keeps it.
	if v.gone() {
		set[i].CompareAndSwap(v, nil)
	}
	return &v.Object
}

// exit is Ristretto's OnExit: r has left the store (replaced, deleted, evicted, expired, or
// refused). It marks r gone (an entry's gone, a record's live bit) and empties
// r's slots of its view.
func (s *Store) exit(r ref) {
	if s.exitHook != nil {
		s.exitHook(r)
	}
	switch {
	case r.e != nil:
		if !r.e.gone.Swap(true) {
			s.items.Add(-1)
		}
		if r.e.variants != nil {
			return // never shared
		}
	case r.h != 0:
		loc, ok := s.release(r.h, r.hgen) // handle.go: how this meets a move
		if !ok {
			return // exited already
		}
		s.items.Add(-1)
		if g, off, idx, ok := s.atRecord(loc, r.h); ok {
			s.freeRecord(g, idx, off)
		} // else reclaim let go of its segment, and freed it then
	default:
		return // Ristretto's zero value: Del of an absent key
	}
	set := s.viewSet(r.slot)
	for i := range set {
		if v := set[i].Load(); v != nil && v.r == r {
			set[i].CompareAndSwap(v, nil)
		}
	}
}

// evicted is Ristretto's OnEvict: an object evicted for room or expired (then its OnExit
// follows); a victim whose key was deleted before has no value, and was no eviction.
func (s *Store) evicted(it *ristretto.Item[ref]) {
	if it.Value != (ref{}) && !s.closing.Load() { // Close clears Ristretto through OnEvict
		s.evictions.Add(1)
	}
}

// viewSet is the two slots in s.views from slot on.
func (s *Store) viewSet(slot uint16) []atomic.Pointer[view] {
	return s.views[slot : slot+2 : slot+2]
}

// hash is key's hash, for its view slots (slotOf) and its lock (Store.locks).
func (s *Store) hash(key string) uint64 { return maphash.String(s.seed, key) }

// lockOf is the lock of the keys of hash h (Store.locks).
func (s *Store) lockOf(h uint64) *sync.Mutex { return &s.locks[h%uint64(len(s.locks))] }

// slotOf is the index of the first of key's two slots in s.views.
func (s *Store) slotOf(key string) uint16 { return slotOfHash(s.hash(key), len(s.views)) }

func slotOfHash(h uint64, slots int) uint16 { return uint16(h&uint64(slots-1)) &^ 1 }

// view is a shared Object (Store.shared), its memo and the ref it was built from, in one
// allocation.
type view struct {
	Object
	memo atomic.Pointer[memo]
	r    ref
	g    *segment // a record's segment, which its live bit is in
	off  uint32   // the record's offset in g
	idx  uint16   // the record's ordinal in g
}

// gone reports whether v's entry or record has left the store (a record: or moved away).
func (v *view) gone() bool {
	if v.r.e != nil {
		return v.r.e.gone.Load()
	}
	return !v.g.isLive(v.idx)
}

// memo is bytes a reader derived from a shared view, under a key (Object.Memo).
type memo struct {
	key any
	b   []byte
}

// Memo returns what build derives from o under key, built once per shared view (Lookup's,
// for a URL with one variant) and reused by every reader of that view while it lives; a
// reader with another key builds and keeps its own in place. The edge keeps a hit's client
// header block in it, keyed by the host's policy, so the fields are not serialised on every
// hit. An object that is not such a view (several variants, a copy given its own Header)
// has no memo: Memo returns nil, and build is not called. build must depend only on o's
// header and key, not on the request: every reader of the view gets its result. A result
// longer than maxMemo is returned but not kept: the store charges each kept view viewCharge.
func (o *Object) Memo(key any, build func() []byte) []byte {
	if o.memo == nil || o.Header != nil {
		return nil
	}
	if m := o.memo.Load(); m != nil && m.key == key {
		return m.b
	}
	b := build()
	if int64(len(b)) <= maxMemo {
		o.memo.Store(&memo{key: key, b: b})
	}
	return b
}

// list is every variant of e.
func (e *entry) list() []packed {
	if e.variants != nil {
		return e.variants
	}
	return []packed{e.one}
}

// variant returns the object stored for the Vary key.
func (e *entry) variant(key string) (packed, bool) {
	if e.variants == nil {
		return e.one, e.one.variant() == key
	}
	for _, p := range e.variants {
		if p.variant() == key {
			return p, true
		}
	}
	return packed{}, false
}

// Config configures a Store.
type Config struct {
	// MaxBytes bounds the heap the store holds: objects with their headers and bookkeeping, and
	// Ristretto's own structures (see cost.go). Default 256 MiB.
	MaxBytes int64
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
}

// Store holds cached objects and purge records. It is safe for concurrent use.
type Store struct {
	cache   *ristretto.Cache[string, ref]
	fixed   int64                  // heap of the empty store, its views' and segments' reserve, counted in Stats.Bytes
	views   []atomic.Pointer[view] // shared views (Store.shared), a power of two of them
	seed    maphash.Seed
	scratch sync.Pool     // *[]byte of scratchSize, where Put lays out an object's meta
	turn    atomic.Uint32 // picks which of two taken slots a new view replaces
	purges  *purgeSet
	clock   func() time.Time
	maxHold atomic.Int64 // longest Object.hold seen, in nanoseconds; bounds purge record life

	// locks serialise the Puts, Deletes and moves of a key (by hash), so that a move that
	// drops its record (segment.go) never takes out a newer Put's value.
	locks [256]sync.Mutex
	// puts counts, per lock, the Puts that have completed (Puts).
	puts [256]atomic.Uint32

	// The keys whose Set Ristretto may not have applied yet (pending.go).
	pending     pendSet
	pendSeq     atomic.Uint64 // numbers the pending Sets
	pendBytes   atomic.Int64  // their cost
	pendMax     int64         // the most pendBytes may reach; beyond, a Put waits
	confirmed   atomic.Uint64 // confirm's rounds, and settles that forgot a key (get)
	kick        chan struct{}
	stopConfirm chan struct{}
	confirmDone chan struct{}
	closeOnce   sync.Once
	closing     atomic.Bool // Close has begun: what Ristretto drops is no eviction

	// The segments (segment.go).
	segSize    int
	recMax     int                       // the largest record kept in a segment
	segs       []atomic.Pointer[segment] // by index; nil where free
	segMu      sync.Mutex                // guards head, gens, freeSegs and appends
	head       *segment                  // where records are appended
	gens       []uint32                  // the last generation of each index
	freeSegs   []uint32                  // free indexes of segs
	nsegs      atomic.Int64              // segments held
	live       atomic.Int64              // bytes of live records in them
	reclaiming sync.Mutex                // held by the goroutine that reclaims
	moved      atomic.Uint64             // records moved by reclaim

	// The records' handles (handle.go).
	hchunks []atomic.Pointer[hchunk]
	hMu     sync.Mutex   // guards hfree and hnext
	hfree   []uint32     // free handles, less one
	hnext   uint32       // handles below it (less one) have been taken once
	hmax    int          // the handles a store of this size can need
	hbytes  atomic.Int64 // the chunks' charge (hchunkCharge each)
	minCost int64        // the least MaxCost the chunks' charge leaves Ristretto

	items     atomic.Int64  // objects put and not exited yet (Stats)
	evictions atomic.Uint64 // objects evicted for room or expired (Stats)

	// exitHook, if set before the first Put, is called first in every exit: tests use it
	// to hold Ristretto between taking a value out of its map and its OnExit.
	exitHook func(ref)
	// missHook, if set, is called by get between Ristretto's miss and the look at the
	// pending keys: tests use it to act in that gap.
	missHook func(key string)
}

// New builds a Store.
func New(cfg Config) (*Store, error) {
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.MaxBytes < 0 {
		return nil, errors.New("store: max bytes is negative")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	// The store's fixed structures come out of MaxBytes; a store too small for them still
	// keeps a quarter of it for objects (and holds more than MaxBytes).
	fixed := fixedBytes(cfg.MaxBytes) + viewBytes(cfg.MaxBytes) + segReserve(cfg.MaxBytes)
	nseg, nh := maxSegments(cfg.MaxBytes), maxHandles(cfg.MaxBytes)
	s := &Store{fixed: fixed, purges: newPurgeSet(recordCap(cfg.MaxBytes)), clock: cfg.Clock, seed: maphash.MakeSeed(),
		views:   make([]atomic.Pointer[view], viewSlots(cfg.MaxBytes)),
		segSize: segSizeFor(cfg.MaxBytes), segs: make([]atomic.Pointer[segment], nseg),
		gens: make([]uint32, nseg), freeSegs: make([]uint32, nseg),
		hmax: nh, hchunks: make([]atomic.Pointer[hchunk], hchunkCount(nh)),
		minCost: cfg.MaxBytes / 4, pendMax: maxPendBytes(cfg.MaxBytes),
		kick: make(chan struct{}, 1), stopConfirm: make(chan struct{}), confirmDone: make(chan struct{})}
	s.recMax = min(s.segSize/8, maxRecord)
	s.scratch.New = func() any { b := make([]byte, scratchSize); return &b }
	for i := range s.freeSegs {
		s.freeSegs[i] = uint32(nseg - 1 - i) // the lowest index first
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, ref]{
		OnExit:      s.exit,
		OnEvict:     s.evicted,
		NumCounters: counters(cfg.MaxBytes),
		MaxCost:     max(cfg.MaxBytes-fixed, cfg.MaxBytes/4),
		BufferItems: 64,
		// No Metrics: the store counts what Stats reports itself (items, evictions; the bytes
		// are Ristretto's policy's). Ristretto's cost a miss 2 % of its CPU: a map of the last
		// 100,000 admissions with a clock reading each, and counters shared by every core on
		// every Get (issue 15).
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("create ristretto cache: %w", err)
	}
	s.cache = c
	go s.confirm()
	return s, nil
}

// Close releases the store's goroutines and the cache's.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		close(s.stopConfirm)
		<-s.confirmDone
		s.cache.Close()
	})
}

// Verdict is what the purge records say about an object.
type Verdict int

const (
	// Usable means no purge record matches the object.
	Usable Verdict = iota
	// SoftPurged means a soft purge matched: the object is stale and must be revalidated,
	// but may still be served under stale-while-revalidate or stale-if-error.
	SoftPurged
	// Doubtful means the object was stored before the node missed purges it could not
	// replay (MarkAllStale): any of them may have been a hard purge of it. It must be
	// revalidated before it is served, never under stale-while-revalidate; stale-if-error
	// may still serve it, marked stale, when the upstream fails (as while a node lags).
	Doubtful
	// Purged means a hard purge matched: the object is gone.
	Purged
)

// A VaryHeader gives the request header that selects a stored variant (httpcache.VaryKey) of a
// URL whose answers vary by vary (lower-case, as httpcache.Policy.Vary). A proxy whose fills
// send the origin other values of those fields than its client's keys on what it sends: the
// answer stored is the answer to that (edge: request.VaryHeader). Object.Variant is to be
// keyed the same way.
type VaryHeader interface {
	VaryHeader(vary []string) http.Header
}

// ClientHeader is a VaryHeader that is the request's header whatever the Vary.
type ClientHeader http.Header

// VaryHeader returns h.
func (h ClientHeader) VaryHeader([]string) http.Header { return http.Header(h) }

// Lookup returns the variant of primary that matches the request header, or nil. A hard-purged
// object is never returned; a soft-purged one is returned with SoftPurged. vary is the Vary field
// list the URL's responses use (nil if none is stored), so a caller can tell a vary-miss. The
// object is shared with other readers (Store.shared): it must not be modified.
func (s *Store) Lookup(primary string, reqHeader http.Header) (obj *Object, v Verdict, vary []string) {
	return s.LookupVary(primary, ClientHeader(reqHeader))
}

// LookupVary is Lookup with the variant selected by req's header for the URL's Vary.
func (s *Store) LookupVary(primary string, req VaryHeader) (obj *Object, v Verdict, vary []string) {
	r, ok := s.get(primary)
	if !ok {
		return nil, Usable, nil
	}
	var o *Object
	if e := r.e; e != nil {
		p, ok := e.variant(VariantKey(e.vary, req))
		if !ok {
			return nil, Usable, e.vary
		}
		if e.variants == nil {
			o = s.shared(r, nil, 0, 0) // p is e.one
		} else {
			o = p.object(e.vary)
		}
	} else {
		g, off, idx, ok := s.place(r)
		// Since Get, the key was replaced (its handle released), or the record moved off a
		// segment reclaim then let go of: look at what the key holds now, a few times (a key
		// replaced again and again may have moved on once more).
		for try := 0; !ok && try < 3; try++ {
			if r, ok = s.get(primary); !ok {
				return nil, Usable, nil
			}
			if r.e != nil {
				return s.LookupVary(primary, req) // replaced by an entry meanwhile
			}
			g, off, idx, ok = s.place(r)
		}
		if !ok {
			return nil, Usable, nil
		}
		o = s.shared(r, g, off, idx)
		if o.Variant != VariantKey(o.Policy.Vary, req) {
			return nil, Usable, o.Policy.Vary
		}
	}
	switch v := s.purges.check(o); v {
	case Purged:
		return nil, v, o.Policy.Vary
	default:
		return o, v, o.Policy.Vary
	}
}

// VariantKey is req's Vary key for vary (the Object.Variant it selects): "" without a Vary,
// req not asked.
func VariantKey(vary []string, req VaryHeader) string {
	if len(vary) == 0 {
		return ""
	}
	return httpcache.VaryKey(vary, req.VaryHeader(vary))
}

// LookupPart is Lookup for one part of primary's object (Object.Part).
func (s *Store) LookupPart(primary, part string, reqHeader http.Header) (*Object, Verdict) {
	return s.LookupPartVary(primary, part, ClientHeader(reqHeader))
}

// LookupPartVary is LookupVary for one part of primary's object (Object.Part).
func (s *Store) LookupPartVary(primary, part string, req VaryHeader) (*Object, Verdict) {
	o, v, _ := s.LookupVary(primary+part, req)
	return o, v
}

// Put stores o, replacing the variant with the same Vary key. It returns false when the
// object was not stored (too many variants, or refused by the cache's admission policy).
// Once Put returns, the object is visible to Lookup (and Delete), so that a request arriving
// after a fill finished finds it, though Ristretto may not have applied it yet (pending.go).
//
// Put takes o: it replaces o's strings, header and body by compact copies of equal value
// (compact; the header no longer in o.Header, see header.go), so o must not be read
// concurrently with Put. For an object kept as a record those are the record's bytes in its
// segment, as for an Object from Lookup (Detached says what that keeps alive). The maps and
// arrays o referred to are only read, never modified, so other objects may still share them.
func (s *Store) Put(o *Object) bool {
	if h := int64(o.hold()); h > s.maxHold.Load() {
		s.maxHold.Store(h) // a lost race only shortens record life by one object's margin
	}
	// The caller's strings: o's own are the stored ones once put returns.
	key := o.Primary + o.Part
	// Most objects are records (segment.go), which copy their meta into a segment: it is
	// laid out in a scratch buffer (the store's, reused), and o then reads the record, as
	// a lookup's Object does. One whose body alone is too large for a record is laid out
	// as compact does.
	var sc *[]byte
	var scratch []byte
	if len(o.Body) < s.recMax {
		sc = s.scratch.Get().(*[]byte)
		scratch = *sc
	}
	p := packed{meta: o.layOut(scratch), body: o.Body}
	h := s.hash(key)
	mu := s.lockOf(h)
	mu.Lock()
	ok, pended := s.put(key, slotOfHash(h, len(s.views)), o, p, scratch)
	s.puts[h%uint64(len(s.puts))].Add(1) // after put: the object is visible to Lookup
	mu.Unlock()
	if sc != nil {
		s.scratch.Put(sc) // nothing points into it: put gave o, and what it stored, bytes of their own
	}
	if pended {
		s.kickConfirm()
	}
	s.reclaim()
	// Fills retire purge records too (without a lock until one is due), so that after a purge
	// storm they go even when no purge follows. The fetch's start stands for now: a little
	// early, so a little late to expire.
	s.expireRecords(o.StoredAt)
	return ok
}

// scratchSize is the meta a Put lays out in its scratch buffer (Store.scratch); a larger one
// (a header of some KiB) gets an allocation of its own, as compact's.
const scratchSize = 4 << 10

// put is Put under key's lock; pended: its Set waits for confirm (pending.go). p is o laid
// out, with its meta maybe in scratch; put points o at the bytes it stores (o.compact's,
// or a record's), never at scratch, whether it stores o or not.
func (s *Store) put(key string, slot uint16, o *Object, p packed, scratch []byte) (ok, pended bool) {
	s.settle(key) // a second Set of a key Ristretto has not stored yet would be refused
	var variants []packed
	// Only an object with a Vary list keeps the key's other variants; one without replaces
	// whatever the key held, so it needs no look at it (a Ristretto probe of a large table
	// costs about a microsecond on a miss, docs/benchmarks.md "Twenty-eighth pass").
	if len(o.Policy.Vary) > 0 || o.Variant != "" {
		if variants, ok = s.keptVariants(key, o, p); !ok {
			own(o, p, scratch)
			return false, false
		}
	}
	ttl := o.hold() + time.Minute // keep a little past the last use so Age math never sees a gap
	if variants == nil {
		if r, stored, ok := s.appendRecord(o.Policy.Vary, p, time.Now().Add(ttl), slot); ok {
			stored.into(o, o.Policy.Vary)
			return s.set(key, r, recordCost(recordSize(o.Policy.Vary, p)), ttl)
		}
	}
	p = own(o, p, scratch)
	if len(p.body) <= s.recMax {
		// A small body may be a stored object's, in a segment (a revalidated copy): an
		// entry must not keep the segment alive.
		p.body = slices.Clone(p.body)
	}
	if variants != nil {
		variants[0] = p
	}
	// The Vary names too: those of a stored object's copy point into its segment.
	e := &entry{vary: cloneStrings(o.Policy.Vary), one: p, variants: variants}
	e.cost = entryBytes(e)
	return s.set(key, ref{e: e, slot: slot}, e.cost, ttl)
}

// own returns p as compact would have made it: its meta out of scratch, its body of exact
// capacity; and points o at it.
func own(o *Object, p packed, scratch []byte) packed {
	if inBuf(unsafe.Slice(unsafe.StringData(p.meta), len(p.meta)), scratch) {
		p.meta = strings.Clone(p.meta)
	}
	p.body = exactBody(p.body)
	p.into(o, o.Policy.Vary)
	return p
}

// set gives key the value r in Ristretto, under key's lock; pended: its Set waits for
// confirm (pending.go).
func (s *Store) set(key string, r ref, cost int64, ttl time.Duration) (ok, pended bool) {
	s.items.Add(1) // less one at its exit, whether Ristretto admits it or not
	if !s.cache.SetWithTTL(key, r, cost, ttl) {
		s.exit(r) // dropped: Ristretto never calls OnExit for it
		return false, false
	}
	if s.pendBytes.Load()+cost > s.pendMax {
		s.cache.Wait() // Ristretto's goroutine is behind: wait for it, as all Puts once did
		return true, false
	}
	s.pend(key, r, cost)
	return true, true
}

// keptVariants returns the variants key holds that o, stored as p, leaves in place, with p
// first (nil if none), or false when o would be one variant too many.
func (s *Store) keptVariants(key string, o *Object, p packed) ([]packed, bool) {
	old, ok := s.cache.Get(key)
	if !ok {
		return nil, true
	}
	vary, others := s.variantsOf(old)
	if others == nil || !slices.Equal(vary, o.Policy.Vary) {
		return nil, true
	}
	found := slices.ContainsFunc(others, func(v packed) bool { return v.variant() == o.Variant })
	if len(others) >= MaxVariants && !found {
		return nil, false
	}
	var variants []packed
	for _, v := range others {
		if v.variant() != o.Variant && s.purges.check(v.object(vary)) != Purged {
			if variants == nil {
				variants = append(make([]packed, 0, len(others)+1), p)
			}
			if old.e == nil {
				v = v.clone() // an entry must not keep a segment alive
			}
			variants = append(variants, v)
		}
	}
	return variants, true
}

// cloneStrings copies ss and its strings.
func cloneStrings(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, v := range ss {
		out[i] = strings.Clone(v)
	}
	return out
}

// Puts returns a count that changes whenever a Put of key completes (and with the Puts of
// the other keys that share its count), once the Put's object is visible to Lookup. A caller
// that read it before a Lookup found nothing, and reads the same count later, may skip a
// second Lookup: no object appears in the store without a Put of its own (a move re-points a
// record's handle, which Ristretto already holds: handle.go).
func (s *Store) Puts(key string) uint32 {
	return s.puts[s.hash(key)%uint64(len(s.puts))].Load()
}

// Detached returns a copy of o that keeps nothing of the store alive, for a reader that may
// hold an object far longer than a response takes (a slow client of a sliced object): an
// Object from Lookup points into a segment of the store (1 MiB), which it keeps from the
// collector for as long as it is held.
func (o *Object) Detached() *Object {
	c := *o
	c.memo = nil
	c.Body = slices.Clone(o.Body)
	c.Policy.Vary = cloneStrings(o.Policy.Vary)
	c.compact() // new strings and header; o's header is read, not changed
	return &c
}

// variantsOf returns the Vary list and the variants of what r holds; others nil if r's
// segment is gone.
func (s *Store) variantsOf(r ref) (vary []string, others []packed) {
	if r.e != nil {
		return r.e.vary, r.e.list()
	}
	g, off, _, ok := s.place(r)
	if !ok {
		return nil, nil
	}
	vary, p := g.record(off)
	return vary, []packed{p}
}

// EachVariant calls fn with every variant stored under primary, whatever purges matched them,
// while primary's lock is held: fn must neither call the store nor keep o. It is for a caller
// that frees what hangs off an object under keys of its own (a sliced object's slices) before
// it is deleted.
func (s *Store) EachVariant(primary string, fn func(o *Object)) {
	mu := s.lockOf(s.hash(primary))
	mu.Lock()
	defer mu.Unlock()
	s.settle(primary)
	r, ok := s.get(primary)
	if !ok {
		return
	}
	vary, ps := s.variantsOf(r)
	for _, p := range ps {
		fn(p.object(vary))
	}
}

// Delete drops every variant of primary. It frees memory only; purges are read-time records.
func (s *Store) Delete(primary string) {
	mu := s.lockOf(s.hash(primary))
	mu.Lock()
	defer mu.Unlock()
	s.settle(primary)
	// Del hands Ristretto's goroutine an item even for a key it does not hold, and a node is
	// asked to purge mostly URLs it never stored: waking that goroutine on every node for
	// nothing is in each purge's fan-out. Under the key's lock no Set of primary is pending
	// (settled above; a move sets nothing).
	if _, ok := s.cache.GetTTL(primary); !ok {
		return
	}
	s.cache.Del(primary)
}

// DeleteVariant drops the variant of primary whose Vary key is variant (Object.Variant) and
// leaves its others, as they were: one answer that may not be stored in a variant's place
// says nothing of the others. Dropping the last, or the copy of a URL without Vary (variant
// ""), drops the key as Delete does.
func (s *Store) DeleteVariant(primary, variant string) {
	h := s.hash(primary)
	mu := s.lockOf(h)
	mu.Lock()
	pended := s.deleteVariant(primary, slotOfHash(h, len(s.views)), variant)
	mu.Unlock()
	if pended {
		s.kickConfirm()
	}
}

// deleteVariant is DeleteVariant under primary's lock; pended: the key's new value waits for
// confirm (pending.go).
func (s *Store) deleteVariant(primary string, slot uint16, variant string) (pended bool) {
	s.settle(primary)
	ttl, ok := s.cache.GetTTL(primary) // as Delete: no Get (an access) for a key not held
	if !ok {
		return false
	}
	r, ok := s.cache.Get(primary)
	if !ok {
		return false
	}
	vary, held := s.variantsOf(r)
	i := slices.IndexFunc(held, func(p packed) bool { return p.variant() == variant })
	switch {
	case held == nil: // a record whose segment is gone: nothing left to drop
		return false
	case i < 0:
		return false
	case len(held) == 1:
		s.cache.Del(primary)
		return false
	}
	// Several variants are an entry's (a record holds one), whose packed copies keep no
	// segment alive: the new entry shares them, and the old one's Vary list, all immutable.
	rest := slices.Delete(slices.Clone(held), i, i+1)
	e := &entry{vary: vary, one: rest[0]}
	if len(rest) > 1 {
		e.variants = rest
	}
	e.cost = entryBytes(e)
	// The key keeps the time to live it had: its variants were kept for that long.
	ok, pended = s.set(primary, ref{e: e, slot: slot}, e.cost, ttl)
	if !ok {
		// Refused: the old entry, with the variant, may still be held; better every variant
		// gone than that one served.
		s.cache.Del(primary)
	}
	return pended
}

// Stats are the store's counters.
type Stats struct {
	Items     int64  // objects (URLs, with all their variants) currently admitted
	Bytes     int64  // heap held: objects with their bookkeeping, and the store's fixed structures
	Evictions uint64 // objects evicted for room or expired (a purge or a replacement is no eviction)
	Records   int    // live purge records
	Retired   uint64 // purge records retired because there were too many (purgeSet.floors)
	Segments  int64  // segments of records held (segment.go)
	Live      int64  // bytes of the records in them still stored
	Moved     uint64 // records moved to reclaim dead bytes
}

// Stats reports the store's counters.
func (s *Store) Stats() Stats {
	records, retired := s.purges.len()
	return Stats{
		Items:     s.items.Load(),
		Bytes:     s.cache.MaxCost() - s.cache.RemainingCost() + s.fixed + s.hbytes.Load(),
		Evictions: s.evictions.Load(),
		Records:   records,
		Retired:   retired,
		Segments:  s.nsegs.Load(),
		Live:      s.live.Load(),
		Moved:     s.moved.Load(),
	}
}

// appendPathPrefixes appends to out the path-segment prefixes of p in the form Purge records
// them (no trailing slash; "/" is a purge of the host, matched separately): "/a/b/c" and
// "/a/b/c/" -> "/a", "/a/b", "/a/b/c". A prefix purge of "/a" thus matches "/a", "/a/" and
// "/a/x" but never the sibling "/ab".
func appendPathPrefixes(out []string, p string) []string {
	p = strings.TrimSuffix(p, "/")
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[:i])
		}
	}
	if p != "" {
		out = append(out, p)
	}
	return out
}
