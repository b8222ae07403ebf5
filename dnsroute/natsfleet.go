package dnsroute

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/wire"
)

// liveFleet connects to NATS and watches the fleet registry (PoPs, nodes, health, load and
// operator drains) and the routing policy in the config bucket, for a server that routes to a
// live fleet instead of its config file's PoPs.
type liveFleet struct {
	nc *nats.Conn
	// natsErrs logs nc's asynchronous errors; close nc through it (closeNATS).
	natsErrs *fleet.ErrorLog
	js       jetstream.JetStream
	prefix   string
	view     *fleet.View
	cfgView  *fleet.ConfigView
	log      *slog.Logger
	// latReady is closed once the latency bucket's initial values are in the map.
	latReady     chan struct{}
	latReadyOnce sync.Once
	// policyReady is closed once the config bucket's routing policy (or, when it holds none,
	// the file's) is the server's: until then the server routes by the file's.
	policyReady chan struct{}
}

func newLiveFleet(cfg Config) (*liveFleet, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var auth []nats.Option
	if cfg.Creds != "" {
		cred, err := natsauth.LoadCredential(cfg.Creds)
		if err != nil {
			return nil, err
		}
		if cred.ID.Role != natsauth.RoleDNS {
			return nil, fmt.Errorf("nats credentials %s are %s's; a DNS server takes a dns credential (read-only)", cfg.Creds, cred.ID)
		}
		if auth, err = cred.Options(); err != nil {
			return nil, err
		}
	}
	opts := append(auth, nats.Name("meridian-dns"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true), nats.IgnoreAuthErrorAbort(),
		fleet.LogDisconnects(log))
	natsErrs := fleet.NewErrorLog(log)
	opts = append(opts, natsErrs.Option())
	// With RetryOnFailedConnect a first connection that fails is retried in the background:
	// say which server cannot be reached and why, and when it finally answers.
	nc, err := nats.Connect(cfg.NATS, append(opts, fleet.ConnectLogging(log, cfg.NATS)...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", fleet.RedactURLs(cfg.NATS), fleet.RedactError(err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		natsErrs.Close(nc)
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &liveFleet{
		nc:          nc,
		natsErrs:    natsErrs,
		js:          js,
		prefix:      cfg.Prefix,
		latReady:    make(chan struct{}),
		policyReady: make(chan struct{}),
		view:        fleet.NewView(fleet.ViewConfig{JS: js, Prefix: cfg.Prefix, TTL: cfg.HeartbeatTTL, Clock: cfg.Clock, Logger: log}),
		// The routing policy alone: the DNS credential may not read host configs, and the
		// view above follows the drains.
		cfgView: fleet.NewConfigView(fleet.ConfigViewConfig{JS: js, Prefix: cfg.Prefix, Logger: log, Keys: wire.RoutingKey}),
		log:     log,
	}, nil
}

// run watches until ctx ends, applying routing-policy changes to s; it returns once its
// watchers have stopped and the connection is closed.
func (l *liveFleet) run(ctx context.Context, s *Server) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.watchLatency(ctx, s.lat)
	}()
	for _, f := range []func(context.Context) error{l.view.Run, l.cfgView.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-l.cfgView.Ready():
		case <-ctx.Done():
			return
		}
		policySet := false
		for {
			changed := l.cfgView.Changed()
			// The bucket's policy whatever it holds: one that leaves policy empty is nearest
			// with its own fields. None (never set, or deleted) is the config file's. Applied
			// only when it differs: SetPolicy drops the answer cache.
			p := l.cfgView.Routing()
			if reflect.DeepEqual(p, wire.RoutingPolicy{}) {
				p = s.cfg.Policy
			}
			if !reflect.DeepEqual(p, *s.policy.Load()) {
				if err := s.SetPolicy(p); err != nil {
					l.log.Error("refused routing policy from the config bucket", "err", err)
				}
			}
			if !policySet {
				policySet = true
				close(l.policyReady)
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	l.closeNATS()
}

// closeNATS closes the connection, and writes the NATS error warning it held back.
func (l *liveFleet) closeNATS() { l.natsErrs.Close(l.nc) }

// liveView is the Fleet a server routes on from the registry: every node the view holds,
// stale ones included (View.AllNodes). buildState judges freshness by the load reports'
// times itself, so stale nodes are not used, but they stay there to fail open to: a DNS
// server cut off from NATS sees every report go stale, and with the view's fresh nodes only
// it would have no PoP at all and answer NODATA to every query.
type liveView struct {
	*fleet.View
	nc *nats.Conn
}

// connected implements liveFleetHealth.
func (v liveView) connected() bool { return v.nc.Status() == nats.CONNECTED }

// degraded implements liveFleetHealth: while NATS is away the server answers from the nodes it
// saw last (failing open to them as their reports go stale), which is service, not failure.
func (v liveView) degraded() string {
	if st := v.nc.Status(); st != nats.CONNECTED {
		return fmt.Sprintf("NATS not connected (%s); answering from the last fleet view", strings.ToLower(st.String()))
	}
	select {
	case <-v.Ready():
		return ""
	default:
		return "fleet registry not loaded yet; answering from what has arrived"
	}
}

// PoPs implements Fleet.
func (v liveView) PoPs() []wire.PoP { return wire.GroupPoPs(v.AllNodes()) }

// fleet is the Fleet a server following l routes on.
func (l *liveFleet) fleet() Fleet { return liveView{View: l.view, nc: l.nc} }

// latencySweep is how often the latency map drops expired records when no update arrives.
const latencySweep = 30 * time.Second

// watchLatency feeds the latency bucket into m until ctx ends.
func (l *liveFleet) watchLatency(ctx context.Context, m *latencyMap) {
	followLatency(ctx, l.js, l.prefix, l.log, m, func() { l.latReadyOnce.Do(func() { close(l.latReady) }) })
}

// FollowLatency feeds the latency bucket of fleet prefix (read through js) into the server's
// latency map until ctx ends, for a server whose fleet is not a NATS one (the simulator's).
// RunLive does this by itself.
func (s *Server) FollowLatency(ctx context.Context, js jetstream.JetStream, prefix string) {
	log := s.cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	followLatency(ctx, js, prefix, log, s.lat, func() {})
}

// followLatency watches the latency bucket into m until ctx ends, calling loaded once the
// initial values are in. fleet.Watch re-watches from a full snapshot after errors and NATS
// reconnects (a reconnect may hide deletes), and retries a missing bucket (a control plane
// that predates it), so that routing by geography goes on meanwhile. Records also age out
// without any message (the bucket expires them silently), hence the periodic sweep.
func followLatency(ctx context.Context, js jetstream.JetStream, prefix string, log *slog.Logger, m *latencyMap, loaded func()) {
	bucket := wire.Bucket(prefix, wire.LatencyBucket)
	m.followed.Store(true)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		sweep := time.NewTicker(latencySweep)
		defer sweep.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-sweep.C:
				m.Sweep(now)
			}
		}
	})
	fleet.Watch(ctx, js, bucket, ">", log, latencyHandler{m: m, loaded: loaded})
}

// latencyHandler applies what a watch of the latency bucket sees to the map.
type latencyHandler struct {
	m      *latencyMap
	loaded func()
}

func (h latencyHandler) Snapshot(entries []jetstream.KeyValueEntry) {
	recs := make(map[string]wire.LatencyRecord, len(entries))
	for _, e := range entries {
		// A record that does not decode counts as absent, as under Update.
		if r, ok := decodeLatency(e); ok {
			recs[e.Key()] = r
		}
	}
	h.m.Replace(recs, time.Now())
	h.loaded()
}

func (h latencyHandler) Update(e jetstream.KeyValueEntry) {
	now := time.Now()
	if r, ok := decodeLatency(e); ok {
		h.m.Put(e.Key(), r, now)
		return
	}
	h.m.Delete(e.Key(), now)
}

// decodeLatency reads a put of the latency bucket; false for deletes and undecodable values.
func decodeLatency(e jetstream.KeyValueEntry) (wire.LatencyRecord, bool) {
	var r wire.LatencyRecord
	if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil {
		return wire.LatencyRecord{}, false
	}
	return r, true
}

// start follows the fleet for s in a goroutine until the returned stop is called; stop waits
// for it to end. It runs on its own context, not the caller's: RunLive's server drains after
// its context ends and still needs the fleet meanwhile.
func (l *liveFleet) start(s *Server) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.run(ctx, s)
		close(done)
	}()
	return func() {
		cancel()
		<-done
	}
}

// ExplainLive explains a routing decision against the live fleet and latency map in NATS
// (cfg.NATS), waiting at most wait for them to load.
func ExplainLive(ctx context.Context, cfg Config, addr netip.Addr, name string, qtype uint16, wait time.Duration) (Explanation, error) {
	l, err := newLiveFleet(cfg)
	if err != nil {
		return Explanation{}, err
	}
	cfg.Fleet = l.fleet()
	s, err := New(cfg)
	if err != nil {
		l.closeNATS()
		return Explanation{}, err
	}
	defer l.start(s)()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	// The policy too: a new process routes by the file's until the bucket's is applied.
	for _, ready := range []<-chan struct{}{l.view.Ready(), l.latReady, l.policyReady} {
		select {
		case <-ready:
		case <-timeout.C:
			return Explanation{}, fmt.Errorf("explain: fleet, latency map or routing policy not loaded from %s within %v", fleet.RedactURLs(cfg.NATS), wait)
		case <-ctx.Done():
			return Explanation{}, ctx.Err()
		}
	}
	ex, err := s.Explain(addr, name, qtype)
	if err != nil {
		return ex, err
	}
	// This process has just started: the shares and compared loads it derives from the loads
	// now are a running server's only where that server's history (the shedder's and the
	// load hysteresis) left no mark, which no load report shows. Say so, and where to look.
	switch ex.Policy {
	case geo.Nearest, geo.Latency:
		ex.History = "SHED is what the loads now give a server that just started; a running server holds a share " +
			"for at least an answer TTL after a rise, and after a fall neither raises it between the watermarks nor stops " +
			"while its clients' demand stays high (the load then may read below the low watermark), so its share can " +
			"differ either way: its shares in use are meridian_dns_pop_shed_ratio on its admin listener; where every usable " +
			"PoP sheds, the least utilised keeps whom all shed, by figures that follow a load only once it moved more than " +
			"load_hysteresis: meridian_dns_pop_load_ratio"
	case geo.LeastLoaded:
		ex.History = "SCORE is the loads now in 5% steps, as a server that just started compares them; a running server's " +
			"figures follow a load only once it moved more than load_hysteresis, so it may choose another PoP of close load: " +
			"its figures in use are meridian_dns_pop_load_ratio on its admin listener"
	}
	return ex, nil
}

// RunLive runs a server whose fleet comes from NATS (cfg.NATS): it waits for the registry to
// load (at most wait), then serves until ctx ends.
func RunLive(ctx context.Context, cfg Config, wait time.Duration) error {
	l, err := newLiveFleet(cfg)
	if err != nil {
		return err
	}
	cfg.Fleet = l.fleet()
	s, err := New(cfg)
	if err != nil {
		l.closeNATS()
		return err
	}
	defer l.start(s)()
	// The routing policy too: answers given under the file's policy before the bucket's is
	// applied would stay in resolvers' caches for a TTL.
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
loading:
	for _, ready := range []<-chan struct{}{l.view.Ready(), l.policyReady} {
		select {
		case <-ready:
		case <-timeout.C:
			l.log.Warn("fleet registry or routing policy not loaded yet; answering from what arrives", "waited", wait)
			break loading
		case <-ctx.Done():
			return nil
		}
	}
	return s.Run(ctx)
}
