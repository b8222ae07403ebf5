package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/sim/report"
	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/sim/wan"
)

// Options says where a run's output goes. Its zero value runs silently and writes no files.
type Options struct {
	// Out is the directory report.json and report.html are written to (created if missing).
	// Run checks that it can write there before it starts anything. Default "": no files.
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
func Run(ctx context.Context, s *scenario.Scenario, opts Options) (*report.Report, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A directory the report cannot go to is refused now, not after the whole run.
	if err := checkOut(opts.Out); err != nil {
		return nil, err
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
	r := &runner{s: s, wl: NewWorkload(s), rec: report.NewRecorder(report.ConfigFor(s)), log: log,
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
	r.f, r.receipt = f, f.Receipt
	evErr := r.run(ctx, opts)
	stoppedAt := time.Since(r.t0.Add(-s.Warmup))
	f.Close()
	if ctx.Err() != nil {
		// Say how far it got: an interrupted run writes nothing (a partial report's invariants
		// would judge events that never played).
		return nil, fmt.Errorf("sim: interrupted %v into the run (of %v: %v warm-up and %v), %d requests recorded; fleet stopped, no report written: %w",
			stoppedAt.Round(100*time.Millisecond), s.Warmup+s.Duration, s.Warmup, s.Duration, r.rec.Live().Requests, ctx.Err())
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
	s   *scenario.Scenario
	wl  *Workload
	rec *report.Recorder
	f   *Fleet
	log *slog.Logger
	t0  time.Time // end of the warm-up: time zero of the recording and of the timeline
	// started is set once t0 is: the origin hook runs on the fleet's goroutines from the start.
	started atomic.Bool

	mu   sync.Mutex        // guards book
	book map[int]purgeMark // object id -> its latest purge
	// receipt looks a purge's receipt up: the fleet's Receipt.
	receipt func(id string) (purge.Receipt, bool)

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

// onOrigin counts the origin's successful object answers after the warm-up (206 too: an edge's
// first fill asks for the first slice, and a small object comes whole in that 206). A fetch of a
// version a purge storm created is new content, not a repeated fetch: it is counted as its own
// distinct object for the origin-per-object invariant, and fetching it again within a freshness
// lifetime is a repeated fetch like any other.
func (r *runner) onOrigin(path string, status, version int) {
	if !r.started.Load() || (status != http.StatusOK && status != http.StatusPartialContent && status != http.StatusNotModified) {
		return
	}
	if at := r.since(time.Now()); at >= 0 {
		r.rec.RecordOriginFetchVersion(at, ObjectID(path), version)
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
		p := &Progress{Out: opts.Progress, Live: r.rec.Live, Total: end, Warmup: s.Warmup, Terminal: IsTerminal(opts.Progress)}
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
				dnsc: newDNSClient(), net: i % scenario.CityNetworks}
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
	res := report.PurgeResult{ID: rc.ID, IssuedAt: r.since(rc.IssuedAt), AckMs: map[string]float64{},
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
	// Kills of one PoP that overlap, and cuts of one PoP's link, combine the same way: the first
	// opens the window, the last end closes it.
	sorted := r.s.SortedEvents()
	kills := mergeWindows(sorted, scenario.EventKill)
	cuts := mergeWindows(sorted, scenario.EventCutNATS)
	// Flash crowds are numbered in time order (the i-th asks for Workload.FlashObject(i-1))
	// when there are several, so that each one's marks, start and end, are its own.
	var crowds, crowd int
	for _, e := range sorted {
		if e.Kind == scenario.EventFlashCrowd {
			crowds++
		}
	}
	for i, e := range sorted {
		name := e.Kind
		if e.Kind == scenario.EventFlashCrowd {
			if crowd++; crowds > 1 {
				name += " " + strconv.Itoa(crowd)
			}
			if e.City != "" {
				name += " " + e.City
			}
		}
		if e.PoP != "" {
			name += " " + e.PoP
		}
		switch e.Kind {
		case scenario.EventDrain, scenario.EventUndrain:
			drain := e.Kind == scenario.EventDrain
			out = append(out, action{e.At, name, func(ctx context.Context) ([]string, error) {
				return nil, f.Drain(ctx, e.PoP, drain)
			}})
		case scenario.EventKill:
			end, opens := kills[i]
			if !opens {
				continue
			}
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { return nil, f.Kill(e.PoP) }})
			if end >= 0 {
				out = append(out, action{end, "restart " + e.PoP, func(ctx context.Context) ([]string, error) {
					return nil, f.Restart(ctx, e.PoP)
				}})
			}
		case scenario.EventOriginFail:
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { fails++; apply(); return nil, nil }})
			out = append(out, action{e.End(), name + " end", func(context.Context) ([]string, error) { fails--; apply(); return nil, nil }})
		case scenario.EventOriginSlow:
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
		case scenario.EventCutNATS:
			end, opens := cuts[i]
			if !opens {
				continue
			}
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { return nil, f.CutNATS(e.PoP, true) }})
			out = append(out, action{end, "rejoin " + e.PoP, func(context.Context) ([]string, error) { return nil, f.CutNATS(e.PoP, false) }})
		case scenario.EventPurgeStorm:
			out = append(out, action{e.At, fmt.Sprintf("%s x%d", name, e.Count), func(ctx context.Context) ([]string, error) {
				return r.purgeStorm(ctx, e.Count)
			}})
		case scenario.EventFlashCrowd:
			// The workload sends the crowd; the timeline only marks it.
			out = append(out, action{e.At, name, func(context.Context) ([]string, error) { return nil, nil }})
			out = append(out, action{e.End(), name + " end", func(context.Context) ([]string, error) { return nil, nil }})
		}
	}
	sortActions(out)
	return out
}

// mergeWindows merges the windows of the events of kind (sorted by time) that overlap or touch
// on the same PoP. It returns, by index in sorted of the event that opens each merged window,
// when that window ends: -1 for never (a kill without a duration).
func mergeWindows(sorted []scenario.Event, kind string) map[int]time.Duration {
	out := map[int]time.Duration{}
	open := map[string]int{} // PoP -> index of the event that opened its latest window
	for i, e := range sorted {
		if e.Kind != kind {
			continue
		}
		end := time.Duration(-1)
		if e.Duration > 0 {
			end = e.End()
		}
		if j, ok := open[e.PoP]; ok && (out[j] < 0 || e.At <= out[j]) {
			if out[j] >= 0 && (end < 0 || end > out[j]) {
				out[j] = end
			}
			continue
		}
		open[e.PoP] = i
		out[i] = end
	}
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
			if wan.Sleep(ctx, wait) != nil {
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
	rc, ok := r.receipt(m.id)
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

// errNotWritten marks the errors of a run whose report.json or report.html was not written.
var errNotWritten = errors.New("report not written")

// checkOut creates the output directory out (if not "") and checks that a file can be created
// in it.
func checkOut(out string) error {
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("sim: output directory: %w", err)
	}
	fh, err := os.CreateTemp(out, ".meridian-sim-check-*")
	if err != nil {
		return fmt.Errorf("sim: output directory %s is not writable: %w", out, err)
	}
	fh.Close()
	if err := os.Remove(fh.Name()); err != nil {
		return fmt.Errorf("sim: output directory: remove %s: %w", fh.Name(), err)
	}
	return nil
}

// writeOutputs writes report.json, report.html and the summary where opts say.
func writeOutputs(rep *report.Report, opts Options) error {
	if opts.Stdout != nil {
		if err := rep.Summary(opts.Stdout); err != nil {
			return fmt.Errorf("sim: write summary: %w", err)
		}
	}
	if opts.Out == "" {
		return nil
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return fmt.Errorf("sim: output directory: %w (%w)", err, errNotWritten)
	}
	for name, write := range map[string]func(io.Writer) error{"report.json": rep.WriteJSON, "report.html": rep.WriteHTML} {
		path := filepath.Join(opts.Out, name)
		fh, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("sim: write %s: %w (%w)", name, err, errNotWritten)
		}
		err = write(fh)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sim: write %s: %w (%w)", path, err, errNotWritten)
		}
	}
	return nil
}
