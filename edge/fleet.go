package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/rusage"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// FleetConfig joins the node to a fleet through NATS: it registers and heartbeats in the fleet
// bucket, takes its hosts from the config bucket and its peers from the registry, and applies
// purges from the PURGE stream. With NATS empty (and no Conn) the node runs standalone.
type FleetConfig struct {
	// NATS is the server URL list (comma-separated), e.g. "nats://127.0.0.1:4222".
	NATS string `yaml:"nats"`
	// Creds is the node's NATS credentials file (mode 0600), from `meridian control creds
	// edge` or `meridian deploy render`; empty means none, which only a NATS server without
	// authentication accepts. The node's identity in it must match its PoP and node id.
	Creds string `yaml:"creds"`
	// Prefix of every subject and bucket. Default "meridian".
	Prefix string `yaml:"prefix"`
	// Where the node is and how it is reached, as registered for DNS and peers.
	Region   string  `yaml:"region"`
	City     string  `yaml:"city"`
	Lat      float64 `yaml:"lat"`
	Lon      float64 `yaml:"lon"`
	IPv4     string  `yaml:"ipv4"`
	IPv6     string  `yaml:"ipv6"`
	Capacity float64 `yaml:"capacity"` // requests/s the node is sized for; optional, overrides Saturation
	// Saturation says what counts as full when the node measures its own load (saturation.go).
	Saturation SaturationConfig `yaml:"saturation"`
	// Heartbeat is the registration interval. Default 1s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// TTL is how long a silent node stays in the peer set. Default 3s.
	TTL time.Duration `yaml:"ttl"`

	// Conn is an existing connection to use instead of dialling NATS (the simulator).
	Conn *nats.Conn `yaml:"-"`
}

func (f FleetConfig) enabled() bool { return f.NATS != "" || f.Conn != nil }

// joinFleet connects to NATS and starts the fleet members; they run until ctx ends. It returns
// a function that waits for them to stop.
func (n *Node) joinFleet(ctx context.Context) (wait func(), err error) {
	fc := n.cfg.Fleet
	nc := fc.Conn
	var natsErrs *fleet.ErrorLog // the errors of the connection the node makes itself
	if nc == nil {
		var auth []nats.Option
		if fc.Creds != "" {
			cred, err := natsauth.LoadCredential(fc.Creds)
			if err != nil {
				return nil, err
			}
			if want := natsauth.Edge(n.cfg.PoP, n.cfg.Node); cred.ID != want {
				return nil, fmt.Errorf("nats credentials %s are %s's, not this node's (%s)", fc.Creds, cred.ID, want)
			}
			if auth, err = cred.Options(); err != nil {
				return nil, err
			}
		}
		opts := append(auth,
			nats.Name("meridian-edge "+n.name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond),
			nats.RetryOnFailedConnect(true),
			// A credential issued a moment after the node started, or re-issued after a
			// revocation, is accepted on a later attempt: keep trying.
			nats.IgnoreAuthErrorAbort(),
			fleet.LogDisconnects(n.log))
		natsErrs = fleet.NewErrorLog(n.log)
		opts = append(opts, natsErrs.Option())
		// With RetryOnFailedConnect a first connection that fails is retried in the background:
		// say which server cannot be reached and why, and when it finally answers.
		nc, err = nats.Connect(fc.NATS, append(opts, fleet.ConnectLogging(n.log, fc.NATS)...)...)
		if err != nil {
			return nil, fmt.Errorf("connect to nats %s: %w", fleet.RedactURLs(fc.NATS), fleet.RedactError(err))
		}
		// A join that fails from here on closes the connection it made: it would go on
		// reconnecting (MaxReconnects(-1)) with no owner.
		defer func() {
			if err != nil {
				natsErrs.Close(nc)
			}
		}()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	hb, ttl := fc.Heartbeat, fc.TTL
	if hb == 0 {
		hb = time.Second
	}
	if ttl == 0 {
		ttl = 3 * time.Second
	}
	self := wire.Node{
		PoP: n.cfg.PoP, ID: n.cfg.Node, Region: fc.Region, City: fc.City, Lat: fc.Lat, Lon: fc.Lon,
		IPv4: fc.IPv4, IPv6: fc.IPv6, HTTPAddr: advertised(n.Addr(), fc), AdminAddr: advertised(n.adminAddr, fc),
		HTTPSAddr: advertised(n.HTTPSAddr(), fc), Capacity: fc.Capacity,
		Version: wire.Version(), PurgeMaxLag: n.cfg.Purge.MaxLag,
	}
	var left []string
	self.Hosts, left = registeredHosts(n.cfg.Hosts)
	if len(left) > 0 {
		n.log.Warn("file hosts past the registration's bound are not registered: control refuses their purges unless the config bucket has them",
			"registered", len(self.Hosts), "left_out", len(left), "first_left_out", left[0], "bound_bytes", wire.MaxNodeHostsBytes)
	}
	regJS := js
	if n.registrarJS != nil {
		regJS = n.registrarJS(js)
	}
	reg, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: regJS, Prefix: fc.Prefix, Node: self, Interval: hb,
		Load: n.TakeLoadReport, Logger: n.log, OnWrite: n.registered})
	if err != nil {
		return nil, err
	}
	// The node watches its own PoP and its hosts' shield PoPs only (follow sets them).
	view := fleet.NewView(fleet.ViewConfig{JS: js, Prefix: fc.Prefix, TTL: ttl, Clock: n.clock, Logger: n.log, Scoped: true})
	cfgView := fleet.NewConfigView(fleet.ConfigViewConfig{JS: js, Prefix: fc.Prefix, Logger: n.log})
	// The fleet's peer keyring replaces a static peer key: fills between nodes are signed
	// with the keys control distributes (and rotates).
	keys := fleet.NewPeerKeyView(fleet.PeerKeyViewConfig{JS: js, Prefix: fc.Prefix, Logger: n.log,
		OnChange: n.SetPeerKeyring})
	sub, err := purge.NewSubscriber(purge.SubscriberConfig{
		JS: js, Conn: nc, Prefix: fc.Prefix, PoP: n.cfg.PoP, Node: n.cfg.Node,
		Apply: n.ApplyPurge,
		OnGap: func(_ context.Context, last, next uint64) { n.purgeGap(last, next) },
		// Before the subscriber acks the purges up to its join (its join ack), they must be
		// in effect here.
		OnJoin: func(_ context.Context, seq uint64) { n.purgeJoined(seq) },
		Logger: n.log, Clock: n.clock,
		// Confirm well within max_lag, so that a connected node never seems to lag.
		ConfirmEvery: min(max(n.cfg.Purge.MaxLag/5, 20*time.Millisecond), time.Second),
		// Its acks stand for every process under the node's id (a restart's overlap).
		AckHold: func() time.Duration { return n.ackHold(hb) },
	})
	if err != nil {
		return nil, err
	}
	n.registrar.Store(reg)
	n.purgeSub.Store(sub)
	// Beacon reports from clients go to the latency bucket (beacon.go), naming PoPs of the
	// fleet (the view holds only the node's own and shield PoPs).
	pops := &fleet.PoPNames{JS: js, Prefix: fc.Prefix, Logger: n.log}
	n.setRUMSink(nc, fc.Prefix, pops)
	applied := make(chan struct{}) // closed once follow applied the first hosts and peers

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				n.log.Error("fleet member stopped", "member", name, "err", err)
			}
		}()
	}
	// What is on the node's key before this process writes it: a restart's old process, cut
	// off, may have written there last and write no more (keyLags). So the first heartbeat
	// waits for the watch's first snapshot; a node that cannot watch the fleet bucket cannot
	// load its peers either, and never becomes ready.
	own := &ownKeyWatch{n: n, hb: hb, reg: reg.KeyWatch(), loaded: make(chan struct{})}
	n.ownKey.Store(own)
	run("own key", func(ctx context.Context) error {
		fleet.WatchKeys(ctx, js, wire.Bucket(fc.Prefix, wire.FleetBucket), []string{reg.Key()}, n.log, own)
		return nil
	})
	run("registrar", func(ctx context.Context) error {
		select {
		case <-own.loaded:
		case <-ctx.Done():
			return nil // nothing written: nothing to leave
		}
		return reg.Run(ctx)
	})
	run("view", view.Run)
	run("pops", pops.Run)
	run("config", cfgView.Run)
	run("peerkeys", keys.Run)
	run("purge", sub.Run)
	run("follow", func(ctx context.Context) error { return n.follow(ctx, nc, view, cfgView, applied) })
	// The node registers at once but reports itself healthy only from here on (see ready).
	run("ready", func(ctx context.Context) error {
		for _, c := range []<-chan struct{}{sub.Ready(), applied, keys.Ready(), sub.Confirmed(), n.registeredCh} {
			select {
			case <-c:
			case <-ctx.Done():
				return nil
			}
		}
		close(n.fleetReady)
		reg.Beat() // tell DNS and peers now, not at the next tick
		return nil
	})
	return func() {
		wg.Wait()
		if n.lapseTimer != nil { // the registrar, which arms it, has stopped
			n.lapseTimer.Stop()
		}
		if natsErrs != nil {
			natsErrs.Close(nc)
		}
	}, nil
}

// registered is the registrar's OnWrite: a heartbeat sent then was answered, and found another
// process's write on the node's key if shared. Real time, as the bucket's TTL runs in it (on
// the monotonic clock: sent is time.Now's).
func (n *Node) registered(sent time.Time, shared bool) {
	if shared {
		now := time.Now()
		n.sharedAt.Store(&now)
		if n.Draining() {
			n.yieldedDraining.Store(true)
		}
	}
	if prev := n.writtenAt.Load(); prev != nil && (n.registrationLapsed() || n.lapsedSince(*prev)) {
		// The registration lapsed (its key may have expired): meanwhile another process of the
		// node may have found the key empty and acked at once, purges this one, cut off, has
		// not applied. Revalidating while lapsed is not enough: it lags until its purge
		// subscription confirms after this answer, not just until this answer
		// (TestRestartOverlapLapsedOldRegistersAgain).
		now := n.clock()
		n.rejoinedAt.Store(&now)
	}
	n.writtenAt.Store(&sent)
	n.armLapse(sent)
	n.registeredOnce.Do(func() { close(n.registeredCh) })
}

// ownKeyWatch is the watch of the node's own key in the fleet bucket: it learns the purge.max_lag
// of every process that writes there (keyLags), and hands each entry to the registrar, which
// so knows a heartbeat of its own stored while its answer was lost (Registrar.KeyWatch). The
// registrar cannot read the key (an edge may not get keys, internal/natsauth), but an edge may
// watch the fleet bucket.
type ownKeyWatch struct {
	n      *Node
	hb     time.Duration
	reg    fleet.WatchHandler // the registrar's (Registrar.KeyWatch)
	once   sync.Once
	loaded chan struct{} // closed after the first snapshot
	// lastDelivery is when the watch last delivered (its goroutine only). This process's own
	// heartbeats are delivered every hb while the watch works.
	lastDelivery time.Time
	// failed is why the last watch failed (*error; nil: none yet): until the first snapshot
	// no heartbeat is sent, and /healthz says why (notReady).
	failed atomic.Pointer[error]
}

func (w *ownKeyWatch) WatchFailed(err error) { w.failed.Store(&err) }

// waiting returns why heartbeats still wait for the watch's first snapshot ("" when they do
// not, or when no watch failed yet).
func (w *ownKeyWatch) waiting() string {
	select {
	case <-w.loaded:
		return ""
	default:
	}
	if err := w.failed.Load(); err != nil {
		return "cannot watch the node's fleet key, heartbeats wait for it: " + (*err).Error()
	}
	return ""
}

func (w *ownKeyWatch) Snapshot(entries []jetstream.KeyValueEntry) {
	if !w.lastDelivery.IsZero() {
		w.n.keyLagsRewatched(w.lastDelivery, w.hb)
	}
	w.lastDelivery = time.Now()
	for _, e := range entries {
		w.see(e)
	}
	w.reg.Snapshot(entries)
	w.once.Do(func() { close(w.loaded) })
}

func (w *ownKeyWatch) Update(e jetstream.KeyValueEntry) {
	w.lastDelivery = time.Now()
	w.reg.Update(e)
	if e.Operation() == jetstream.KeyValuePut {
		w.see(e)
	}
}

func (w *ownKeyWatch) see(e jetstream.KeyValueEntry) {
	var reg struct {
		PurgeMaxLag time.Duration `json:"purge_max_lag"`
	}
	if json.Unmarshal(e.Value(), &reg) != nil {
		return
	}
	w.n.learnMaxLag(reg.PurgeMaxLag)
}

// keyLag is a purge.max_lag seen on the node's key, and when it was last seen there.
type keyLag struct {
	maxLag time.Duration
	seen   time.Time
}

// maxKeyLags bounds Node.keyLags: past it two are merged into one that counts at least as long
// as either (a key written with ever shorter max_lags, by a buggy or hostile writer).
const maxKeyLags = 16

// learnMaxLag notes d, a purge.max_lag a registration on the node's key carried, seen now,
// taken as at most wire.MaxPurgeMaxLag: any write on the key (one of a buggy process, or of
// someone with the node's credential) holds acks no longer than an edge's config could.
func (n *Node) learnMaxLag(d time.Duration) {
	d = min(d, wire.MaxPurgeMaxLag)
	if d <= 0 {
		return
	}
	now := time.Now()
	n.keyLagsMu.Lock()
	defer n.keyLagsMu.Unlock()
	// One no longer seen earlier counts no longer: it goes.
	kept := slices.DeleteFunc(n.keyLags, func(l keyLag) bool { return l.maxLag <= d })
	kept = append(kept, keyLag{maxLag: d, seen: now})
	if len(kept) > maxKeyLags {
		// The two shortest become one as long as the longer, seen when the later was.
		last := len(kept) - 1
		kept[last-1].seen = kept[last].seen
		kept = kept[:last]
	}
	n.keyLags = kept
}

// keyMaxLag is the longest max_lag seen on the node's key whose writer may still serve fresh
// hits: for its lame duck, its max_lag and two heartbeats after its last write seen (as
// ackHold counts the window after a shared heartbeat). The lame duck counted is this
// process's (see ackHold).
func (n *Node) keyMaxLag(hb time.Duration) time.Duration {
	n.keyLagsMu.Lock()
	defer n.keyLagsMu.Unlock()
	for _, l := range n.keyLags { // longest first
		if time.Since(l.seen) < n.cfg.LameDuck+l.maxLag+2*hb {
			return l.maxLag
		}
	}
	return 0
}

// keyLagsRewatched is the own key watch's new snapshot after it lost its watch (a NATS
// reconnect): writes on the key after its last delivery were not seen, and a writer whose
// max_lag still counted then may have written meanwhile: it counts as seen now.
func (n *Node) keyLagsRewatched(lastDelivery time.Time, hb time.Duration) {
	n.keyLagsMu.Lock()
	defer n.keyLagsMu.Unlock()
	for i, l := range n.keyLags { // longest first
		if lastDelivery.Sub(l.seen) < n.cfg.LameDuck+l.maxLag+2*hb {
			n.keyLags[i].seen = time.Now()
			// Those after it are shorter and now seen earlier: they would never count.
			n.keyLags = n.keyLags[:i+1]
			return
		}
	}
}

// ackHold is how long the purge subscriber holds an ack queued now: the largest purge.max_lag
// of this process and those that wrote the node's key (keyMaxLag: each while its writer may
// still serve, so that an old process's longer one, once it is gone, holds no later overlap's
// acks, TestAckHoldForgetsKeyMaxLag) while another process under
// this node's id may still serve its cache (a restart's overlap), else 0. An ack stands for the
// node, every process of it; one that has not applied the purge serves its copies fresh for at
// most its own max_lag after the purge was stored (rule 5: by then it applied it or counts as
// lagging and revalidates), and the ack is queued after that. A restart may have lowered
// max_lag, so this process's own would end the hold early. A process of a version before the
// registration carried its max_lag is counted by this one's (as before). Another process may
// serve:
//   - until this one's first heartbeat is answered: whether the key is another's is not known;
//   - after a heartbeat found another's write on the key (a restart's other process, or what a
//     process before this one left there), for as long as that one may go on serving fresh
//     hits once it stops writing: its lame duck (past it, the requests it still finishes
//     revalidate: pastLameDuck), plus max_lag for a cut during it, plus two heartbeats. Its
//     writes stop when it yields the key to this one (draining) or loses NATS. The lame duck
//     counted is this process's lame_duck; the other's may be longer (a restart that lowers
//     it), so once it has yielded the key draining it revalidates too (yieldedDraining). The
//     registration does not carry lame_duck: every version that would carry it revalidates
//     after yielding, and counting it here would only lengthen the hold.
//
// One that left no key to find lost NATS over the bucket's TTL ago, or never had a heartbeat
// answered, and lags (registrationLapsed).
// The purges of those seconds complete up to max_lag later; nothing goes to the origin.
func (n *Node) ackHold(hb time.Duration) time.Duration {
	maxLag := max(n.cfg.Purge.MaxLag, n.keyMaxLag(hb))
	if n.writtenAt.Load() == nil {
		return maxLag
	}
	if at := n.sharedAt.Load(); at != nil &&
		time.Since(*at) < n.cfg.LameDuck+maxLag+2*hb {
		return maxLag
	}
	return 0
}

// registrationLapsed reports whether the node's registration may be missing from the fleet
// bucket: no heartbeat was answered yet, or none sent since the bucket's TTL ago (control's
// heartbeat_ttl, default 3 s, which the registrar reads). A process started under the node's
// id then finds no key, holds none of its acks (ackHold), and they stand for this process too:
// it must not treat its cache as fresh (purgeLagging). So too before the first answer: a
// process whose heartbeats fail (or are slower than its purge subscription) serves but has
// written nothing for another to find. Real time, as the TTL runs; a bucket whose keys never
// expire (TTL 0) never lapses once written.
func (n *Node) registrationLapsed() bool {
	r := n.registrar.Load()
	if r == nil {
		return false
	}
	return n.lapse.Load() == 0
}

// lapsedSince reports whether the bucket's TTL has passed since a heartbeat sent at sent: its
// key may have expired, whether or not the lapse timer has fired yet.
func (n *Node) lapsedSince(sent time.Time) bool {
	ttl := n.registrar.Load().BucketTTL()
	return ttl > 0 && time.Since(sent) >= ttl
}

// armLapse notes a heartbeat sent at sent and answered: the registration stands until the
// bucket's TTL after sent (for ever with TTL 0), and registrationLapsed says so without reading
// a clock. Called on the registrar's goroutine (OnWrite) only.
func (n *Node) armLapse(sent time.Time) {
	n.lapseGen++
	gen := n.lapseGen
	n.lapse.Store(gen)
	if n.lapseTimer != nil {
		n.lapseTimer.Stop()
		n.lapseTimer = nil
	}
	if ttl := n.registrar.Load().BucketTTL(); ttl > 0 {
		// A timer of an earlier heartbeat that fires late finds another generation: no effect.
		n.lapseTimer = time.AfterFunc(ttl-time.Since(sent), func() { n.lapse.CompareAndSwap(gen, 0) })
	}
}

// purgeJoined is the purge subscriber's OnJoin: it joined the stream at seq, and every purge up
// to seq must be in effect here before the subscriber acks them (a node restarted under the
// same id owes those acks: purge.Ack.Through).
func (n *Node) purgeJoined(seq uint64) {
	// The subscription starts after the purges already in the stream, which this node's copies
	// need not apply if it has none; but a peer's copy of the same key must have them applied
	// before it is handed over: fills ask peers for nothing older than this sequence
	// (purgeorder.go), not for sequence 0.
	n.advancePurgeSeq(seq)
	// The node serves from the start, so it may have copies: whatever it stored so far (its
	// fill began before the line above) may be purged by one of them. They go, as a hard purge
	// of everything: the join ack says those purges are in effect here, and a copy only made
	// Doubtful (MarkAllStale) would still be served under stale-if-error, and handed to a peer
	// asking for a stale copy, though one of them hard-purged it. They are the fills of this
	// process's first moments (seconds, unless NATS was out of reach since it started). Until
	// then the node counts as lagging (purgeLagging), however soon the subscriber confirms.
	// Said when there was something to drop: for a node that served long cut off from NATS it
	// is its whole cache (its hit ratio falls, its origins' load rises), while the store's
	// gauges go on counting the copies until they are evicted or replaced.
	held := n.store.Stats().Items
	n.store.DropAll()
	if held > 0 {
		n.log.Warn("purge subscription joined: every object cached before it is dropped", "objects", held, "seq", seq)
	}
	n.purgeBase.Store(true)
}

// FleetReady is closed once the node, joined to a fleet, has applied its hosts and peers from
// the config bucket and the registry, has the fleet's peer keys, consumes purges caught up
// with the stream, and has had a heartbeat answered (before, it lags: registrationLapsed). It
// never closes for a standalone node.
func (n *Node) FleetReady() <-chan struct{} { return n.fleetReady }

// notReady says why the node should get no clients, "" when it may. A standalone node is
// always ready. A fleet node is not until FleetReady, nor while it cannot confirm that it has
// every purge (purge.max_lag) or its registration may have lapsed (registrationLapsed), nor
// after a NATS reconnect until it has replayed the purges published while it was away. The
// heartbeat's Healthy and /healthz follow it, so DNS sends clients only to ready nodes.
func (n *Node) notReady() string {
	sub := n.purgeSub.Load()
	if sub == nil {
		return ""
	}
	select {
	case <-n.fleetReady:
	default:
		if w := n.ownKey.Load(); w != nil {
			if why := w.waiting(); why != "" {
				// Never registered: the registry does not list it either.
				return "joining the fleet: " + why
			}
		}
		if n.writtenAt.Load() == nil {
			if err := n.heartbeatErr(); err != nil {
				// It may never become ready: a full or missing fleet bucket, a permission.
				return "joining the fleet: heartbeat failing: " + err.Error()
			}
		}
		return "joining the fleet"
	}
	if n.purgeLagging() {
		if n.registrationLapsed() {
			// Said apart from the purges: the cause is in the fleet bucket or the link to it.
			why := "no heartbeat answered within the fleet bucket's TTL"
			if err := n.heartbeatErr(); err != nil {
				why += ": " + err.Error()
			}
			return why
		}
		return "purges not confirmed within purge.max_lag"
	}
	if !sub.ConfirmedSinceReconnect() {
		return "replaying purges after a reconnect"
	}
	return ""
}

// heartbeatErr is the error of the registrar's last heartbeat (nil: written, or no registrar).
func (n *Node) heartbeatErr() error {
	if r := n.registrar.Load(); r != nil {
		return r.Err()
	}
	return nil
}

// registeredHosts are the names of the file's hosts the registration carries (wire.Node.Hosts),
// so that control accepts purges of them: sorted, as many as fit wire.MaxNodeHostsBytes as
// JSON; left are those past it. The names are the ones the node serves (configHosts).
func registeredHosts(file []wire.HostConfig) (names, left []string) {
	all := make([]string, 0, len(file))
	for _, h := range file {
		all = append(all, h.Host)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	size := len("[]")
	for i, name := range all {
		b, err := json.Marshal(name)
		if err != nil {
			return all[:i], all[i:]
		}
		if i > 0 {
			size++ // the comma
		}
		if size += len(b); size > wire.MaxNodeHostsBytes {
			return all[:i], all[i:]
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// advertised is the address peers and operators reach a listener at: the listen address, or,
// when it listens on every address, the node's registered IPv4 (else IPv6) with its port.
func advertised(addr string, fc FleetConfig) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return addr
	}
	switch {
	case fc.IPv4 != "":
		return net.JoinHostPort(fc.IPv4, port)
	case fc.IPv6 != "":
		return net.JoinHostPort(fc.IPv6, port)
	}
	return addr
}

// follow applies the registry's peer sets and the config bucket's hosts as they change; it
// closes applied once it has applied both views' first load. While the node's own NATS link is
// down, its view ages every peer out; the peers are most likely fine, so the node keeps the last
// peer set instead of filling from the origin alone.
func (n *Node) follow(ctx context.Context, nc *nats.Conn, view *fleet.View, cfgView *fleet.ConfigView, applied chan<- struct{}) error {
	fileHosts := n.cfg.Hosts
	// Wait for each view's first load, then for its changes. The next Changed channel is taken
	// before the state is read, so no change between the two is missed.
	viewCh, cfgCh := view.Ready(), cfgView.Ready()
	peersLoaded, hostsLoaded := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-viewCh:
			viewCh = view.MembersChanged() // peers and shields: loads do not matter
			if nc.IsConnected() {
				n.applyPeers(view)
			}
			peersLoaded = true
		case <-cfgCh:
			cfgCh = cfgView.Changed()
			hosts := mergeHosts(fileHosts, cfgView.Hosts())
			loaded := view.SetPoPs(tierPoPs(n.cfg.PoP, hosts))
			if peersLoaded {
				// A shield PoP new to the view: its nodes first, then the hosts that fill from
				// them (else their fills would skip the shield until the view caught up).
				if !n.awaitScope(ctx, loaded) {
					return nil
				}
				if nc.IsConnected() {
					n.applyPeers(view)
				}
			}
			if err := n.SetHosts(hosts); err != nil {
				n.log.Error("refused host config from the control plane", "err", err)
			}
			hostsLoaded = true
		}
		if peersLoaded && hostsLoaded && applied != nil {
			close(applied)
			applied = nil
		}
	}
}

// tierPoPs are the PoPs a node of pop fills from for hosts: its own and the hosts' shields.
func tierPoPs(pop string, hosts []wire.HostConfig) []string {
	pops := []string{pop}
	for _, h := range hosts {
		if h.Shield != "" {
			pops = append(pops, h.Shield)
		}
	}
	return pops
}

// scopeWait bounds how long new hosts wait for their shield PoPs' nodes (a view that cannot
// watch keeps its last nodes; the hosts then fill from the origin until it can).
const scopeWait = 5 * time.Second

// awaitScope waits for loaded, at most scopeWait; it reports false when ctx ended.
func (n *Node) awaitScope(ctx context.Context, loaded <-chan struct{}) bool {
	t := time.NewTimer(scopeWait)
	defer t.Stop()
	select {
	case <-loaded:
	case <-t.C:
		n.log.Warn("applying hosts before their shield PoPs' nodes are known", "waited", scopeWait)
	case <-ctx.Done():
		return false
	}
	return true
}

func (n *Node) applyPeers(view *fleet.View) {
	peers := toPeers(view.PeerSet(n.cfg.PoP))
	shields := map[string][]Peer{}
	for _, p := range view.PoPs() {
		var usable []wire.Node
		for _, node := range p.Nodes {
			if node.Usable() {
				usable = append(usable, node)
			}
		}
		shields[p.ID] = toPeers(usable)
	}
	if t := n.tiers.Load(); slices.Equal(t.peers, withSelf(peers, n.cfg.Node, n.Addr())) && maps.EqualFunc(t.shields, shields, slices.Equal[[]Peer]) {
		return // a heartbeat changed loads, not membership
	}
	n.SetPeers(peers)
	n.SetShields(shields)
}

func withSelf(peers []Peer, id, addr string) []Peer {
	for _, p := range peers {
		if p.ID == id {
			return peers
		}
	}
	return append(append([]Peer(nil), peers...), Peer{ID: id, Addr: addr})
}

func toPeers(nodes []wire.Node) []Peer {
	out := make([]Peer, 0, len(nodes))
	for _, node := range nodes {
		if node.HTTPAddr != "" {
			out = append(out, Peer{ID: node.ID, Addr: node.HTTPAddr})
		}
	}
	return out
}

// mergeHosts is the file's hosts overlaid with the config bucket's (the bucket wins for a name
// in both, however the file spells it). SetHosts refuses an invalid result, and the current
// hosts keep serving.
func mergeHosts(file []wire.HostConfig, bucket map[string]wire.HostConfig) []wire.HostConfig {
	merged := map[string]wire.HostConfig{}
	for _, h := range file {
		merged[mergeKey(h.Host)] = h
	}
	for name, h := range bucket {
		merged[mergeKey(name)] = h
	}
	hosts := make([]wire.HostConfig, 0, len(merged))
	for _, h := range merged {
		hosts = append(hosts, h)
	}
	return hosts
}

// mergeKey is the name mergeHosts merges a host under: the one SetHosts serves it under (its
// A-label), or, for a name SetHosts will refuse, the name in lower case.
func mergeKey(host string) string {
	if name, err := idnhost.ToASCII(host); err == nil {
		return name
	}
	return strings.ToLower(host)
}

// TakeLoadReport measures the node since the previous call and starts the next interval: it
// resets the rates and the CPU reading, so the heartbeat is its one caller (anything else
// that takes a report skews the next heartbeat's).
func (n *Node) TakeLoadReport() wire.LoadReport {
	n.loadMu.Lock()
	defer n.loadMu.Unlock()
	now := n.clock()
	reqs, hits, bytes := n.metrics.nRequests.Load(), n.metrics.nHits.Load(), n.metrics.nBytes.Load()
	cpu := processCPU()
	rep := wire.LoadReport{At: now, OpenConns: int(n.openConns.Load()), Healthy: !n.Draining() && n.notReady() == ""}
	if last := n.lastLoad; !last.at.IsZero() {
		if secs := now.Sub(last.at).Seconds(); secs > 0 {
			rep.RequestsPerSec = float64(reqs-last.reqs) / secs
			rep.EgressBytesPerSec = float64(bytes-last.bytes) / secs
			rep.CPU = (cpu - last.cpu).Seconds() / secs
		}
		if d := reqs - last.reqs; d > 0 {
			rep.HitRatio = float64(hits-last.hits) / float64(d)
		}
	}
	rep.MemoryBytes = uint64(n.store.Stats().Bytes)
	cores, satCPU := n.saturationCPU(rep.CPU, n.lastLoad, now.Sub(n.lastLoad.at).Seconds())
	rep.Saturation = saturationFigure(n.cfg.Fleet.Saturation, cores, n.inFlight(), n.hitLat.p99(now))
	n.lastLoad = loadMark{at: now, reqs: reqs, hits: hits, bytes: bytes, cpu: cpu, satCPU: satCPU}
	return rep
}

// loadMark is the counters at the previous load report.
type loadMark struct {
	at                time.Time
	reqs, hits, bytes int64
	cpu               time.Duration
	satCPU            time.Duration // SaturationConfig.CPUTime's reading, when it is set
}

// processCPU is the CPU time the process has used (user + system), or 0 when the system
// does not say.
func processCPU() time.Duration {
	d, err := rusage.CPU()
	if err != nil {
		return 0
	}
	return d
}

// trackConn counts open client connections for the load report.
func (n *Node) trackConn(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		n.openConns.Add(1)
	case http.StateClosed, http.StateHijacked:
		n.openConns.Add(-1)
	}
}
