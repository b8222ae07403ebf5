package edge

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/wire"
)

// Real-user measurement (RUM): every edge answers wire.BeaconPath itself, for any configured
// host. A GET is the tiny object a client times; a POST reports the RTTs the client measured to
// the beacons of a few PoPs. Reports are validated (bounded values, PoPs of the fleet), rate
// limited per client network, and the network is the connection's, never the body's: a client
// can speak only for its own /24 (/48), and only so often. Accepted reports are smoothed per
// network and published to the latency bucket under this node's own keys, where DNS reads them.
// The RTTs the node measures itself on its clients' connections (rtt.go) join the same records.

// Bounds of the beacon endpoint.
const (
	beaconMaxBody  = 1 << 10 // a report of MaxBeaconPoPs entries is far smaller
	beaconRate     = 1       // reports per second per client network...
	beaconBurst    = 5       // ...with this burst
	beaconNetworks = 1 << 16 // networks tracked (limiter and averages) before the oldest go
	beaconAlpha    = 0.3     // weight of a new report in the moving average
	// beaconRecordPoPs is how many PoPs a network's record keeps, its fastest: reports name
	// at most wire.MaxBeaconPoPs each but different ones, and the latency bucket refuses a
	// value over fleet.MaxLatencyRecordBytes, so a record naming every PoP of a large fleet
	// would stop reaching DNS for good. 16 of the longest ids fit (TestLatencyRecordBound), and
	// a network's best PoP is among its fastest.
	beaconRecordPoPs = 16
)

// rum is a node's beacon state. The zero value is ready; it publishes once the node joined a
// fleet (setRUMSink).
type rum struct {
	sink atomic.Pointer[rumSink]

	mu   sync.Mutex // guards nets
	nets map[netip.Prefix]*rumNet
}

// rumSink is where accepted reports go: the fleet's latency bucket.
type rumSink struct {
	nc        *nats.Conn
	bucket    string
	pop, node string
	pops      *fleet.PoPNames // the PoPs a report may name
}

// rumNet is one client network's rate limiters and smoothed record.
type rumNet struct {
	lim     *rate.Limiter // beacon reports
	edgeLim *rate.Limiter // the node's own RTT samples (rtt.go), made on the first one
	last    time.Time     // of the latest report or sample, taken or not: what eviction goes by
	rec     wire.LatencyRecord
}

// setRUMSink makes accepted beacon reports travel to the fleet's latency bucket.
func (n *Node) setRUMSink(nc *nats.Conn, prefix string, pops *fleet.PoPNames) {
	n.rum.sink.Store(&rumSink{nc: nc, bucket: wire.Bucket(prefix, wire.LatencyBucket),
		pop: n.cfg.PoP, node: n.cfg.Node, pops: pops})
}

// front is the first step of every client request: it counts the request as in flight (finish
// counts it done), refuses an unsafe method in HTTP/3 early data and answers the beacon
// itself; it reports whether it answered.
func (n *Node) front(w *logWriter, req *request) bool {
	n.sat.started.Add(1)
	r := req.r
	if r.ProtoMajor == 3 && r.TLS != nil && !r.TLS.HandshakeComplete && !safeMethod(r.Method) {
		// 0-RTT early data can be replayed: only safe methods may use it (RFC 8470), a
		// beacon report (a POST the edge answers itself) included.
		n.fail(w, req, http.StatusTooEarly, "too early")
		return true
	}
	if r.URL.Path != wire.BeaconPath {
		return false
	}
	host := strings.TrimSuffix(strings.ToLower(r.Host), ".")
	if i := strings.LastIndexByte(host, ':'); i > strings.LastIndexByte(host, ']') {
		host = host[:i]
	}
	if (*n.hosts.Load())[host] == nil {
		return false // unknown hosts get the pipeline's answer, never a beacon
	}
	w.cacheStatus = "beacon"
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Timing-Allow-Origin", "*") // lets a page's Resource Timing see the phases
	h.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", "1")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			io.WriteString(w, "\n")
		}
	case http.MethodPost:
		code, msg := n.beaconReport(r)
		if code != http.StatusNoContent {
			http.Error(w, msg, code)
			return true
		}
		w.WriteHeader(code)
	default:
		h.Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
	return true
}

// beaconReport validates, rate limits and records one report; it returns the status to answer.
func (n *Node) beaconReport(r *http.Request) (int, string) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return http.StatusBadRequest, "no client address"
	}
	network := wire.ClientNetwork(ap.Addr())
	var rep wire.BeaconReport
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, beaconMaxBody))
	if err := dec.Decode(&rep); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, "report too large"
		}
		return http.StatusBadRequest, "bad report: " + err.Error()
	}
	sink := n.rum.sink.Load()
	var known func(string) bool
	if sink != nil {
		known = func(p string) bool { return p == n.cfg.PoP || sink.pops.Known(p) }
	}
	if err := rep.Validate(known); err != nil {
		return http.StatusBadRequest, "bad report: " + err.Error()
	}
	rec, ok := n.rum.add(network, rep, n.clock())
	if !ok {
		n.metrics.latencySamples.WithLabelValues("beacon", "limited").Inc()
		return http.StatusTooManyRequests, "too many reports from this network"
	}
	n.metrics.latencySamples.WithLabelValues("beacon", "taken").Inc()
	n.publishLatency(rec)
	return http.StatusNoContent, ""
}

// publishLatency sends a network's record to the latency bucket under this node's key, when
// the node is in a fleet.
func (n *Node) publishLatency(rec wire.LatencyRecord) {
	sink := n.rum.sink.Load()
	if sink == nil {
		return
	}
	if b, err := json.Marshal(rec); err == nil {
		// Fire and forget: the next report refreshes a lost one, and neither a handler nor a
		// closing connection may wait on the bus.
		_ = sink.nc.Publish("$KV."+sink.bucket+"."+wire.LatencyKey(sink.pop, sink.node, rec.Network), b)
	}
}

// add takes a token from network's beacon limiter and folds the report into its record; it
// returns the record to publish, or false when the network is over its rate.
func (m *rum) add(network netip.Prefix, rep wire.BeaconReport, now time.Time) (wire.LatencyRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.netLocked(network, now)
	if !st.lim.AllowN(now, 1) {
		return wire.LatencyRecord{}, false
	}
	for pop, ms := range rep.RTTMs {
		st.foldLocked(pop, ms)
	}
	return st.tookLocked(now, false), true
}

// addEdge folds an RTT the node measured itself on a connection from network into the figure
// of its own PoP. Edge samples have a limiter of their own, so that a busy network's
// connections never use up the tokens of its clients' beacon reports; it returns false when
// the network is over that rate.
func (m *rum) addEdge(network netip.Prefix, pop string, ms float64, now time.Time) (wire.LatencyRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.netLocked(network, now)
	if st.edgeLim == nil {
		st.edgeLim = rate.NewLimiter(beaconRate, beaconBurst)
	}
	if !st.edgeLim.AllowN(now, 1) {
		return wire.LatencyRecord{}, false
	}
	st.foldLocked(pop, ms)
	return st.tookLocked(now, true), true
}

// netLocked returns network's state, made (evicting when full) if new, marked heard from at now.
func (m *rum) netLocked(network netip.Prefix, now time.Time) *rumNet {
	if m.nets == nil {
		m.nets = map[netip.Prefix]*rumNet{}
	}
	st := m.nets[network]
	if st == nil {
		if len(m.nets) >= beaconNetworks {
			m.evictLocked()
		}
		st = &rumNet{lim: rate.NewLimiter(beaconRate, beaconBurst), rec: wire.LatencyRecord{Network: network, RTTMs: map[string]float64{}}}
		m.nets[network] = st
	}
	st.last = now
	return st
}

// foldLocked moves the smoothed RTT to pop towards ms.
func (st *rumNet) foldLocked(pop string, ms float64) {
	if old, ok := st.rec.RTTMs[pop]; ok {
		ms = old + beaconAlpha*(ms-old)
	}
	st.rec.RTTMs[pop] = ms
}

// tookLocked counts one measurement taken at now and returns a copy of the record to publish,
// down to its beaconRecordPoPs fastest PoPs.
func (st *rumNet) tookLocked(now time.Time, edge bool) wire.LatencyRecord {
	for len(st.rec.RTTMs) > beaconRecordPoPs {
		slowest, worst := "", -1.0
		for pop, ms := range st.rec.RTTMs {
			if ms > worst {
				slowest, worst = pop, ms
			}
		}
		delete(st.rec.RTTMs, slowest)
	}
	st.rec.Samples++
	if edge {
		st.rec.EdgeSamples++
	}
	st.rec.At = now
	out := st.rec
	out.RTTMs = maps.Clone(st.rec.RTTMs)
	return out
}

// evictLocked drops the half of the networks heard from longest ago: bounded memory whatever
// the number of clients.
func (m *rum) evictLocked() {
	times := make([]time.Time, 0, len(m.nets))
	for _, st := range m.nets {
		times = append(times, st.last)
	}
	slices.SortFunc(times, time.Time.Compare) // 64 Ki times, once per 32 Ki new networks
	cut := times[len(times)/2]
	for k, st := range m.nets {
		if !st.last.After(cut) {
			delete(m.nets, k)
		}
	}
}
