package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/purge"
)

// Options says where a run's output goes. Its zero value runs silently and writes no files.
type Options struct {
	// Out is the directory report.json and report.html are written to (created if missing).
	// Default "": no files.
	Out string
	// Stdout receives the summary table at the end. Default nil: discarded.
	Stdout io.Writer
	// Progress receives the progress line while the run lasts. Default nil: none.
	Progress io.Writer
	// Logger receives the fleet's warnings and errors. Default nil: discarded.
	Logger *slog.Logger
	// Dir holds the run's scratch files (NATS store, MMDB). Default "": a temporary directory,
	// removed at the end.
	Dir string
}

// Run starts the fleet of scenario s, runs its clients for the warm-up and the duration while
// the timeline plays, then stops everything and returns the report (also written to
// opts.Out). Every goroutine it starts has exited when it returns. The workload and the order
// of events are the same for the same seed; timings are real and vary.
//
// A run that completed returns its report even when an event failed to apply; the error then
// says which. The invariants' verdict is in Report.Invariants (see Passed).
func Run(ctx context.Context, s *Scenario, opts Options) (*Report, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "meridian-sim-")
		if err != nil {
			return nil, fmt.Errorf("sim: scratch directory: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	r := &runner{s: s, wl: NewWorkload(s), rec: NewRecorder(s.RecorderConfig()), log: log,
		book: map[int]purgeMark{}}
	var (
		f   *Fleet
		err error
	)
	// Labels let a CPU profile tell the fleet's work from the load generator's (docs/sim.md).
	pprof.Do(ctx, pprof.Labels("sim", "fleet"), func(ctx context.Context) {
		f, err = StartFleet(ctx, s, FleetOptions{Dir: dir, Logger: log, OnOrigin: r.onOrigin})
	})
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	r.f = f
	evErr := r.run(ctx, opts)
	f.Close()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("sim: run interrupted: %w", ctx.Err())
	}
	rep := r.rec.Report(s)
	if err := writeOutputs(rep, opts); err != nil {
		return rep, err
	}
	if evErr != nil {
		return rep, fmt.Errorf("sim: %w", evErr)
	}
	return rep, nil
}

// runner is one run's shared state.
type runner struct {
	s   *Scenario
	wl  *Workload
	rec *Recorder
	f   *Fleet
	log *slog.Logger
	t0  time.Time // end of the warm-up: time zero of the recording and of the timeline
	// started is set once t0 is: the origin hook runs on the fleet's goroutines from the start.
	started atomic.Bool

	mu   sync.Mutex        // guards book
	book map[int]purgeMark // object id -> its latest purge

	btMu       sync.Mutex                 // guards beaconHTTP and beaconNext
	beaconHTTP map[[2]int]*http.Transport // by city and network: bound to the network's address
	beaconNext map[[2]int]time.Time       // by city and network: when it measures next
}

// purgeMark is what a purge storm did to one object: the purge's id, when the control API had
// taken it, and the origin version that replaced the purged content.
type purgeMark struct {
	id      string
	at      time.Time
	version int
}

// PurgeMaxLag is the simulated edges' purge.max_lag: a node that cannot confirm it has every
// purge for that long (a PoP cut off from NATS) revalidates before serving (purge rule 5).
const PurgeMaxLag = 2 * time.Second

// staleMargin is added to PurgeMaxLag before a response from a node that had not acknowledged
// the purge counts as stale: a fill that began before the bound may still deliver after it.
const staleMargin = time.Second

// since is the time since the end of the warm-up (negative during it).
func (r *runner) since(t time.Time) time.Duration { return t.Sub(r.t0) }

// onOrigin counts the origin's successful object answers after the warm-up. A fetch of a
// version a purge storm created is new content, not a repeated fetch: it is counted as its own
// distinct object for the origin-per-object invariant.
func (r *runner) onOrigin(path string, status, version int) {
	if !r.started.Load() || (status != http.StatusOK && status != http.StatusNotModified) {
		return
	}
	if at := r.since(time.Now()); at >= 0 {
		id := ObjectID(path)
		if version > 1 {
			id = -1
		}
		r.rec.RecordOriginFetch(at, id)
	}
}

func (r *runner) run(ctx context.Context, opts Options) error {
	s := r.s
	end := s.Warmup + s.Duration
	r.t0 = time.Now().Add(s.Warmup)
	r.started.Store(true)
	runCtx, stop := context.WithDeadline(ctx, r.t0.Add(s.Duration))
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	if opts.Progress != nil {
		p := &Progress{Out: opts.Progress, Live: r.rec.Live, Total: end, Terminal: IsTerminal(opts.Progress)}
		wg.Go(func() { p.Run(runCtx) })
	}
	transports := r.transports()
	defer func() {
		for _, t := range transports {
			t.CloseIdleConnections()
		}
	}()
	pprof.Do(runCtx, pprof.Labels("sim", "load"), func(ctx context.Context) {
		for i := range s.Clients.Concurrency {
			c := &client{r: r, gen: r.wl.Generator(uint64(i)), transports: transports, dns: map[int]resolved{},
				dnsc: newDNSClient(), net: i % CityNetworks}
			wg.Go(func() { c.loop(ctx, i) })
		}
	})
	var purges []string
	var evErr error
	wg.Go(func() { purges, evErr = r.timeline(runCtx) })
	wg.Go(func() { r.recordLoad(runCtx) })
	defer r.closeBeaconTransports()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	// Purges issued late, or to a PoP still cut off, may complete after the clients stopped;
	// give them a bounded while to, then record them as they are.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, id := range purges {
		r.recordPurge(r.f.WaitPurge(wctx, id))
	}
	return evErr
}

// recordPurge records a purge's receipt: per PoP, when its last node acked, and the floor.
func (r *runner) recordPurge(rc purge.Receipt) {
	res := PurgeResult{ID: rc.ID, IssuedAt: r.since(rc.IssuedAt), AckMs: map[string]float64{},
		FloorMs: map[string]float64{}, Complete: rc.Complete}
	for _, p := range rc.PoPs {
		if p.Complete && p.AckedAt != nil {
			res.AckMs[p.PoP] = float64(p.AckedAt.Sub(rc.IssuedAt).Microseconds()) / 1000
		}
		res.FloorMs[p.PoP] = float64(r.f.PurgeFloor(p.PoP).Microseconds()) / 1000
	}
	r.rec.RecordPurge(res)
}

// action is one step of the timeline.
type action struct {
	at   time.Duration
	name string
	do   func(ctx context.Context) ([]string, error)
}

// actions turns the scenario's events into timed steps, sorted by time (stable, so the order is
// the same on every run).
func (r *runner) actions() []action {
	f := r.f
	var out []action
	// Faults of the origin may overlap; each step recomputes the combined fault.
	var fails int
	var slows []time.Duration
	apply := func() {
		status := 0
		if fails > 0 {
			status = http.StatusServiceUnavailable
		}
		var delay time.Duration
		for _, d := range slows {
			delay = max(delay, d)
		}
		f.SetOriginFault(status, delay)
	}
	for _, e := range r.s.SortedEvents() {
		name := e.Kind
		if e.PoP != "" {
			name += " " + e.PoP
		}
		switch e.Kind {
		case EventDrain, EventUndrain:
			drain := e.Kind == EventDrain
			out = append(out, action{e.At, name, func(ctx context.Context) ([]string, error) {
				return nil, f.Drain(ctx, e.PoP, drain)
			}})
		case EventKill:
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { return nil, f.Kill(e.PoP) }})
			if e.Duration > 0 {
				out = append(out, action{e.End(), "restart " + e.PoP, func(ctx context.Context) ([]string, error) {
					return nil, f.Restart(ctx, e.PoP)
				}})
			}
		case EventOriginFail:
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { fails++; apply(); return nil, nil }})
			out = append(out, action{e.End(), name + " end", func(context.Context) ([]string, error) { fails--; apply(); return nil, nil }})
		case EventOriginSlow:
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) {
				slows = append(slows, e.Delay)
				apply()
				return nil, nil
			}})
			out = append(out, action{e.End(), name + " end", func(context.Context) ([]string, error) {
				for i, d := range slows {
					if d == e.Delay {
						slows = append(slows[:i], slows[i+1:]...)
						break
					}
				}
				apply()
				return nil, nil
			}})
		case EventCutNATS:
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { return nil, f.CutNATS(e.PoP, true) }})
			out = append(out, action{e.End(), "rejoin " + e.PoP, func(context.Context) ([]string, error) { return nil, f.CutNATS(e.PoP, false) }})
		case EventPurgeStorm:
			out = append(out, action{e.At, fmt.Sprintf("%s x%d", name, e.Count), func(ctx context.Context) ([]string, error) {
				return r.purgeStorm(ctx, e.Count)
			}})
		case EventFlashCrowd:
			// The workload sends the crowd; the timeline only marks it.
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { return nil, nil }})
			out = append(out, action{e.End(), name + " end", func(context.Context) ([]string, error) { return nil, nil }})
		}
	}
	sortActions(out)
	return out
}

func sortActions(a []action) {
	// Insertion sort keeps equal times in file order and the list is short.
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j].at < a[j-1].at; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// timeline plays the actions at their times, one after the other, and returns the ids of the
// purges it issued.
func (r *runner) timeline(ctx context.Context) (purges []string, err error) {
	var errs []error
	for _, a := range r.actions() {
		if wait := time.Until(r.t0.Add(a.at)); wait > 0 {
			if sleepCtx(ctx, wait) != nil {
				break
			}
		}
		r.rec.RecordEvent(max(r.since(time.Now()), a.at), a.name)
		ids, err := a.do(ctx)
		purges = append(purges, ids...)
		if err != nil && ctx.Err() == nil {
			r.log.Error("simulated event failed", "event", a.name, "err", err)
			errs = append(errs, fmt.Errorf("event %q at %v: %w", a.name, a.at, err))
		}
	}
	return purges, errors.Join(errs...)
}

// purgeStorm purges the n hottest objects back to back, by URL, by surrogate key and by RFC
// 9875 cache group in turn (a copy that lost its keys on the way would escape the latter two).
// Each object's origin version is bumped first, so any later response still carrying the old
// version is purged content.
func (r *runner) purgeStorm(ctx context.Context, n int) ([]string, error) {
	var ids []string
	for i, obj := range r.wl.HotObjects(n) {
		path := r.wl.Path(obj)
		v := r.f.Origin().Bump(path[:strings.IndexByte(path, '?')])
		req := purge.Request{Host: SimHost}
		switch i % 3 {
		case 0:
			req.URLs = []string{path}
		case 1:
			req.Keys = []string{ObjectKey(obj)}
		default:
			req.Keys = []string{ObjectGroup(obj)}
		}
		id, err := r.f.PurgeRequest(ctx, req)
		if err != nil {
			return ids, err
		}
		r.mu.Lock()
		r.book[obj] = purgeMark{id: id, at: time.Now(), version: v}
		r.mu.Unlock()
		r.rec.ForgetServed(obj, r.since(time.Now()))
		ids = append(ids, id)
	}
	return ids, nil
}

// stale reports whether a response for obj with origin version v, answered by pop for a
// request sent at sent, carried content a purge had removed: after that PoP (and the shield,
// which it may have filled from) acknowledged the purge, or, acknowledged or not (a PoP cut off
// from NATS), later than PurgeMaxLag + staleMargin after the purge, unless the response was
// marked stale (stale-if-error, which bounded staleness allows).
func (r *runner) stale(obj, v int, pop string, sent time.Time, markedStale bool) bool {
	r.mu.Lock()
	m, ok := r.book[obj]
	r.mu.Unlock()
	if !ok || v >= m.version {
		return false
	}
	if !markedStale && sent.After(m.at.Add(PurgeMaxLag+staleMargin)) {
		return true
	}
	rc, ok := r.f.Receipt(m.id)
	if !ok {
		return false
	}
	for _, p := range rc.PoPs {
		if (p.PoP == pop || p.PoP == r.s.Shield()) && (!p.Complete || p.AckedAt == nil || !p.AckedAt.Before(sent)) {
			return false
		}
	}
	return true
}

// transports returns one HTTP transport per client city: connections carry the WAN delay of
// the city's distance to the PoP they reach, so they must not be shared between cities.
func (r *runner) transports() []*http.Transport {
	out := make([]*http.Transport, len(r.s.Clients.Cities))
	wan := r.s.WAN.Model()
	for i, c := range r.s.Clients.Cities {
		out[i] = &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return wan.Dialer(r.clientKmTo(c, addr), &net.Dialer{Timeout: 2 * time.Second})(ctx, network, addr)
			},
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: max(r.s.Clients.Concurrency, 2),
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}
	}
	return out
}

// kmTo is the distance from (lat, lon) to the party at addr (host:port or host); 0 if unknown.
func (f *Fleet) kmTo(lat, lon float64, addr string) float64 {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	p, ok := f.places[host]
	if !ok {
		return 0
	}
	return GreatCircleKm(lat, lon, p.lat, p.lon)
}

// client is one simulated client: it draws requests from its own stream and sends them one
// at a time.
type client struct {
	r          *runner
	gen        *Generator
	transports []*http.Transport
	dnsc       *dns.Client
	dns        map[int]resolved // by city: the answer and when it expires
	// net is the client's network in every city (see CityNetworks).
	net int
}

type resolved struct {
	ip      string
	expires time.Time
}

// loop sends requests until ctx ends: back to back, or paced to the scenario's rate.
func (c *client) loop(ctx context.Context, i int) {
	s := c.r.s
	var interval time.Duration
	if s.Clients.Rate > 0 {
		interval = time.Duration(float64(s.Clients.Concurrency) / s.Clients.Rate * float64(time.Second))
	}
	next := time.Now()
	for ctx.Err() == nil {
		if interval > 0 {
			if sleepCtx(ctx, time.Until(next)) != nil {
				return
			}
			// A client that fell behind starts afresh rather than bursting to catch up.
			if behind := time.Now().Add(-interval); next.Before(behind) {
				next = behind
			}
			next = next.Add(interval)
		}
		now := time.Now()
		req := c.gen.Next(c.r.since(now))
		smp := c.do(ctx, req, now)
		if ctx.Err() != nil {
			return // the run ended mid-request: not a failure of the fleet
		}
		if smp.At >= 0 {
			c.r.rec.Record(smp)
		}
	}
}

// do resolves the city's name (honouring the TTL) and fetches the object.
func (c *client) do(ctx context.Context, req Request, start time.Time) Sample {
	r := c.r
	city := r.s.Clients.Cities[req.City]
	smp := Sample{At: r.since(start), City: city.Name, Region: city.Region, Object: req.Object,
		Group: r.s.group(c.net), Tromboning: r.s.trombones(city), Flash: req.Flash,
		Crowd: req.Flash && r.wl.crowdCity(r.since(start)) == req.City}
	ip, err := c.resolve(ctx, req.City, start)
	if err != nil {
		smp.Err, smp.Latency = "dns", time.Since(start)
		return smp
	}
	pop, node, _ := r.f.PoPOf(ip)
	smp.PoP, smp.Node = pop, node
	if smp.Group == GroupRUM {
		// The beacons are not part of the request's latency: count from after them.
		start = start.Add(c.measure(ctx, req.City, pop))
	}
	addr, ok := r.f.HTTPAddr(ip)
	if !ok {
		// The node was killed: its address answers nothing, as a dead machine would.
		smp.Err, smp.Latency = "connect", time.Since(start)
		return smp
	}
	newConn := true
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { newConn = !i.Reused }}
	hctx, cancel := context.WithTimeout(httptrace.WithClientTrace(ctx, trace), 10*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(hctx, http.MethodGet, "http://"+addr+req.Path, nil)
	if err != nil {
		smp.Err = "request"
		return smp
	}
	hreq.Host = SimHost
	resp, err := c.transports[req.City].RoundTrip(hreq)
	if err != nil {
		smp.Err, smp.Latency = errKind(err), time.Since(start)
		return smp
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.f.chargeCPU(ip)
	smp.Latency, smp.Status, smp.Bytes = time.Since(start), resp.StatusCode, int(n)
	switch {
	case err != nil:
		smp.Err = "read"
	case resp.StatusCode >= 500:
		smp.Err = "5xx"
	case resp.StatusCode >= 400:
		smp.Err = "4xx"
	case resp.StatusCode == http.StatusOK && int(n) != r.wl.Size(req.Object):
		smp.Err = "short"
	}
	cs := parseCacheStatus(resp.Header.Get("Cache-Status"))
	smp.Hit, smp.Tier = cs.hit(), cs.tier()
	smp.FloorLatency = r.floor(city, pop, newConn, cs)
	if v, err := strconv.Atoi(resp.Header.Get("X-Origin-Version")); err == nil && smp.Err == "" {
		smp.Stale = r.stale(req.Object, v, pop, start, cs.servedStale())
	}
	return smp
}

func newDNSClient() *dns.Client { return &dns.Client{Net: "udp", Timeout: 2 * time.Second} }

// resolve returns the address DNS gives the city, asking again once the answer's TTL passed.
func (c *client) resolve(ctx context.Context, city int, now time.Time) (string, error) {
	if a, ok := c.dns[city]; ok && now.Before(a.expires) {
		return a.ip, nil
	}
	m := new(dns.Msg)
	m.SetQuestion("www."+SimZone, dns.TypeA)
	m.SetEdns0(1232, false)
	p := cityNetwork(city, c.net)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
		SourceNetmask: uint8(p.Bits()), Address: net.IP(p.Addr().AsSlice())})
	in, _, err := c.dnsc.ExchangeContext(ctx, m, c.r.f.DNSAddr())
	if err != nil {
		return "", fmt.Errorf("resolve: %w", err)
	}
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			c.dns[city] = resolved{ip: a.A.String(), expires: now.Add(time.Duration(a.Hdr.Ttl) * time.Second)}
			return a.A.String(), nil
		}
	}
	return "", fmt.Errorf("resolve: no address in the answer (rcode %s)", dns.RcodeToString[in.Rcode])
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case strings.Contains(err.Error(), "connect"), strings.Contains(err.Error(), "dial"):
		return "connect"
	}
	return "http"
}

// floor is the WAN model's least latency for the request: the client's leg to the PoP and
// every fill leg the Cache-Status chain shows.
func (r *runner) floor(city City, pop string, newConn bool, cs cacheStatus) time.Duration {
	f := r.f
	p, _ := r.s.PoP(pop)
	var fills []float64
	for _, m := range cs {
		from, ok := r.s.PoP(m.pop())
		if !ok || m.isHit {
			continue
		}
		switch m.detail {
		case "peer":
			fills = append(fills, 0)
		case "shield":
			sh, _ := r.s.PoP(r.s.Shield())
			fills = append(fills, GreatCircleKm(from.Lat, from.Lon, sh.Lat, sh.Lon))
		case "origin":
			fills = append(fills, GreatCircleKm(from.Lat, from.Lon, r.s.Origin.Lat, r.s.Origin.Lon))
		}
	}
	return f.wan.Floor(newConn, r.s.clientKm(city, p), fills...)
}

// cacheStatus is a parsed Cache-Status header (RFC 9211): one member per cache, from the
// origin outwards, the last being the node that answered.
type cacheStatus []csMember

type csMember struct {
	name   string
	isHit  bool
	detail string
}

// pop is the PoP part of a node's cache name "<pop>-<node>".
func (m csMember) pop() string {
	if i := strings.LastIndexByte(m.name, '-'); i > 0 {
		return m.name[:i]
	}
	return m.name
}

// parseCacheStatus reads the members the edge writes: a name, then "; "-separated parameters.
// It is lenient: what it does not understand it skips.
func parseCacheStatus(h string) cacheStatus {
	var out cacheStatus
	for _, part := range strings.Split(h, ",") {
		params := strings.Split(part, ";")
		m := csMember{name: strings.Trim(strings.TrimSpace(params[0]), `"`)}
		if m.name == "" {
			continue
		}
		for _, p := range params[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			switch k {
			case "hit":
				m.isHit = true
			case "detail":
				m.detail = strings.Trim(v, `"`)
			}
		}
		out = append(out, m)
	}
	return out
}

// hit reports whether the answering node served from its cache.
func (cs cacheStatus) hit() bool { return len(cs) > 0 && cs[len(cs)-1].isHit }

// servedStale reports whether the answering node marked its answer as stale content served
// because the upstream failed (stale-if-error, from its own cache or a peer's).
func (cs cacheStatus) servedStale() bool {
	if len(cs) == 0 {
		return false
	}
	d := cs[len(cs)-1].detail
	return d == "stale-if-error" || d == "fleet-stale-if-error"
}

// tier is where the content came from: the fill source of the cache nearest the origin, or
// "edge" when the answering node had it.
func (cs cacheStatus) tier() string {
	for _, m := range cs {
		switch m.detail {
		case "peer", "shield", "origin":
			return m.detail
		}
	}
	if len(cs) == 0 {
		return ""
	}
	return "edge"
}

// writeOutputs writes report.json, report.html and the summary where opts say.
func writeOutputs(rep *Report, opts Options) error {
	if opts.Stdout != nil {
		if err := rep.Summary(opts.Stdout); err != nil {
			return fmt.Errorf("sim: write summary: %w", err)
		}
	}
	if opts.Out == "" {
		return nil
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return fmt.Errorf("sim: output directory: %w", err)
	}
	for name, write := range map[string]func(io.Writer) error{"report.json": rep.WriteJSON, "report.html": rep.WriteHTML} {
		path := filepath.Join(opts.Out, name)
		fh, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("sim: write %s: %w", name, err)
		}
		err = write(fh)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sim: write %s: %w", path, err)
		}
	}
	return nil
}
