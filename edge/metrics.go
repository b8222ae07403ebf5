package edge

import (
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are one node's Prometheus metrics, on a registry of its own so that several nodes
// can run in one process (tests, the simulator).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec // by protocol, cache status, code
	// requestsBy holds requests' children by reqLabels: WithLabelValues hashes the three
	// labels under the vector's lock on every request (2.7 % of a hit's CPU: issue 15). The
	// vector's children are never deleted, so a cached one stays the one it exports.
	requestsBy sync.Map
	// ok200 holds the children of a 200 of each protocol and cache status (okIndex), the
	// commonest labels, found without hashing them (issue 15).
	ok200 [3][5]atomic.Pointer[counterChild]
	fills *prometheus.CounterVec // by tier
	// fillsBy and fetchLatencyBy are children resolved once, by fillTiers: WithLabelValues
	// hashes the label under the vector's lock on every fill.
	fillsBy        [len(fillTiers)]prometheus.Counter
	fetchLatencyBy [len(fillTiers)]prometheus.Observer
	tierSkips      *prometheus.CounterVec // peer or shield nodes skipped after failing
	originFetches  prometheus.Counter
	fetchLatency   *prometheus.HistogramVec
	staleServed    *prometheus.CounterVec // by reason
	purges         *prometheus.CounterVec // by kind
	// purgesBy are its children, resolved once: every node applies every purge of the fleet.
	purgesBy      [len(purgeKinds)]prometheus.Counter
	hopRefused    prometheus.Counter // fill requests whose signature did not verify
	hopUnstored   prometheus.Counter // peer or shield answers not stored: not given as to a verified node
	decodeRefused prometheus.Counter // answers not decoded for their clients: the decode budget was full
	// latencySamples counts measurements for the latency map by source (beacon, edge) and
	// result (taken, limited); clientRTT is the RTT of every client connection sampled.
	latencySamples *prometheus.CounterVec
	clientRTT      *prometheus.HistogramVec

	// Plain counters for the load report, read without going through Prometheus.
	nRequests atomic.Int64
	nHits     atomic.Int64
	nBytes    atomic.Int64
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_requests_total",
		Help: "Requests answered, by protocol, cache status and status code."}, []string{"proto", "cache", "code"})
	// Read from nBytes at scrape time: a float counter of its own added every request with a
	// compare-and-swap loop on a word every core writes (issue 15).
	bytes := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_edge_response_bytes_total",
		Help: "Response body bytes sent to clients."}, func() float64 { return float64(m.nBytes.Load()) })
	m.fills = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_fills_total",
		Help: "Upstream fills by tier (peer, shield, origin)."}, []string{"tier"})
	m.tierSkips = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_tier_skips_total",
		Help: "Peer or shield nodes skipped because they failed or timed out."}, []string{"tier"})
	m.originFetches = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_edge_origin_fetches_total",
		Help: "Requests sent to origins."})
	m.fetchLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_edge_fetch_duration_seconds",
		Help: "Time to response headers (or failure) from an upstream, by tier (peer, shield, origin).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"tier"})
	m.staleServed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_stale_served_total",
		Help: "Stale responses served, by reason."}, []string{"reason"})
	m.purges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_purges_total",
		Help: "Purges applied, by kind."}, []string{"kind"})
	m.hopRefused = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_edge_fill_auth_refused_total",
		Help: "Fill requests from other nodes whose signature did not verify (answered as a client's)."})
	m.hopUnstored = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_edge_fill_untrusted_total",
		Help: "Peer or shield answers not stored because the node did not verify our fill request."})
	m.decodeRefused = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_edge_decode_refused_total",
		Help: "Answers in a coding their client does not accept refused (503) because decoding them would take the decode windows past cache.decode_window_bytes."})
	m.latencySamples = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_latency_samples_total",
		Help: "Measurements for the latency map, by source (beacon: client reports; edge: the node's own RTT of a client connection) and result (taken, limited: over the network's rate)."}, []string{"source", "result"})
	m.clientRTT = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_edge_client_rtt_seconds",
		Help:    "Smoothed RTT of sampled client connections (one sample per connection), by transport (tcp, quic).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 13)}, []string{"transport"})
	// Read at scrape time: the tunnels count themselves already (pass.go).
	tunnels := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_edge_websocket_tunnels",
		Help: "WebSocket tunnels open (switched upgrades, each holding a client and an origin connection)."},
		func() float64 { return float64(n.tunnels.count()) })
	for i, k := range purgeKinds {
		m.purgesBy[i] = m.purges.WithLabelValues(string(k))
	}
	for i, t := range fillTiers {
		m.fillsBy[i] = m.fills.WithLabelValues(t)
		m.fetchLatencyBy[i] = m.fetchLatency.WithLabelValues(t)
	}
	for _, c := range []prometheus.Collector{m.requests, bytes, tunnels, m.fills, m.tierSkips, m.originFetches, m.fetchLatency, m.staleServed, m.purges, m.hopRefused, m.hopUnstored, m.decodeRefused, m.latencySamples, m.clientRTT} {
		f(c)
	}
	// The Go runtime's and the process's figures (memory, open descriptors and their limit,
	// CPU), as control and the DNS server export them: read at scrape time only.
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f(&nodeCollector{n: n})
	return m
}

// reqLabels are a request's labels in meridian_edge_requests_total.
type reqLabels struct {
	proto, cache string
	code         int
}

// counterChild is a child of the requests vector (metrics.ok200).
type counterChild struct{ prometheus.Counter }

// okIndex is where ok200 keeps proto's and cache's child; false for labels it does not keep.
func okIndex(proto, cache string) (p, c int, ok bool) {
	switch proto {
	case "http/1.1":
	case "h2":
		p = 1
	case "h3":
		p = 2
	default:
		return 0, 0, false
	}
	switch cache {
	case "hit":
	case "miss":
		c = 1
	case "stale":
		c = 2
	case "pass":
		c = 3
	case "error":
		c = 4
	default:
		return 0, 0, false
	}
	return p, c, true
}

// child is the requests vector's child for the labels, made on first use.
func (m *metrics) child(proto, cache string, code int) prometheus.Counter {
	if code == http.StatusOK {
		if p, c, ok := okIndex(proto, cache); ok {
			if ch := m.ok200[p][c].Load(); ch != nil {
				return ch.Counter
			}
			ch := &counterChild{m.requests.WithLabelValues(proto, cache, "200")}
			m.ok200[p][c].Store(ch) // a lost race stores the same child
			return ch.Counter
		}
	}
	k := reqLabels{proto, cache, code}
	c, ok := m.requestsBy.Load(k)
	if !ok {
		c, _ = m.requestsBy.LoadOrStore(k, m.requests.WithLabelValues(proto, cache, strconv.Itoa(code)))
	}
	return c.(prometheus.Counter)
}

func (m *metrics) observeRequest(proto, cache string, code int, bytes int64) {
	m.child(proto, cache, code).Inc()
	m.nRequests.Add(1)
	m.nBytes.Add(bytes)
	if cache == "hit" {
		m.nHits.Add(1)
	}
}

// purgeKinds are the kinds a purge has, in purgesBy's order.
var purgeKinds = [...]purge.Kind{purge.KindURL, purge.KindPrefix, purge.KindKey, purge.KindAll}

// purged counts a purge of kind k applied.
func (m *metrics) purged(k purge.Kind) {
	for i, kk := range purgeKinds {
		if kk == k {
			m.purgesBy[i].Inc()
			return
		}
	}
	m.purges.WithLabelValues(string(k)).Inc()
}

// fillTiers are the tiers a fill comes from, in fillsBy's order.
var fillTiers = [...]string{"origin", "peer", "shield"}

// fetched times one fetch from an upstream of tier (one of fillTiers) that took d.
func (m *metrics) fetched(tier string, d time.Duration) {
	for i, t := range fillTiers {
		if t == tier {
			m.fetchLatencyBy[i].Observe(d.Seconds())
			return
		}
	}
	m.fetchLatency.WithLabelValues(tier).Observe(d.Seconds())
}

// fill counts one fill from tier.
func (m *metrics) fill(tier string) {
	for i, t := range fillTiers {
		if t == tier {
			m.fillsBy[i].Inc()
			return
		}
	}
	m.fills.WithLabelValues(tier).Inc()
}

// nodeCollector exports values read at scrape time: the store and every upstream's breaker
// and bulkhead.
type nodeCollector struct{ n *Node }

var (
	descItems     = prometheus.NewDesc("meridian_edge_store_objects", "URLs held in the store.", nil, nil)
	descBytes     = prometheus.NewDesc("meridian_edge_store_bytes", "Bytes held in the store.", nil, nil)
	descEvictions = prometheus.NewDesc("meridian_edge_store_evictions_total", "Objects evicted from the store for room or expired.", nil, nil)
	descSegments  = prometheus.NewDesc("meridian_edge_store_segments", "Segments holding the store's small objects (docs/edge.md, Memory).", nil, nil)
	descMoves     = prometheus.NewDesc("meridian_edge_store_moves_total", "Small objects moved between segments to reclaim the bytes of evicted ones.", nil, nil)
	descRecords   = prometheus.NewDesc("meridian_edge_purge_records", "Live read-time purge records.", nil, nil)
	descRetired   = prometheus.NewDesc("meridian_edge_purge_records_retired_total", "Purge records retired because the store held its cap of them; what their host stored before them counts as purged (docs/edge.md, Purge).", nil, nil)
	descBreaker   = prometheus.NewDesc("meridian_edge_upstream_breaker_open", "1 when the upstream's circuit breaker is open, 0.5 half-open, 0 closed.", []string{"upstream"}, nil)
	descDecode    = prometheus.NewDesc("meridian_edge_decode_window_bytes", "Bytes of decoding windows held now by answers decoded for their clients (of cache.decode_window_bytes).", nil, nil)
	descInFlight  = prometheus.NewDesc("meridian_edge_upstream_in_flight", "Requests holding a slot of the upstream's bulkhead: sent, and their answer's body not yet closed (a pass client's: their answer's head not yet in).", []string{"upstream"}, nil)
	descStreaming = prometheus.NewDesc("meridian_edge_upstream_streaming", "Answers of a pass client whose head came (their slot freed) and whose body still streams: open event streams, downloads passed through.", []string{"upstream"}, nil)
	descBulkhead  = prometheus.NewDesc("meridian_edge_upstream_bulkhead_rejections_total", "Requests refused because the upstream's bulkhead was full.", []string{"upstream"}, nil)
	descBrkReject = prometheus.NewDesc("meridian_edge_upstream_breaker_rejections_total", "Requests refused because the upstream's breaker was open.", []string{"upstream"}, nil)
	descDraining  = prometheus.NewDesc("meridian_edge_draining", "1 while the node is draining.", nil, nil)
	descReady     = prometheus.NewDesc("meridian_edge_ready", "1 while the node is ready (/healthz answers 200), 0 while it says why not.", nil, nil)
	descHBFailing = prometheus.NewDesc("meridian_edge_fleet_heartbeat_failing", "1 while the node's last heartbeat to the fleet bucket failed (/healthz names the error). Absent outside a fleet.", nil, nil)
	descReplays   = prometheus.NewDesc("meridian_edge_purge_replays_total", "Replays of purges from the stream: the live subject missed one, or the node reconnected (docs/purge.md). Absent outside a fleet.", nil, nil)
	descDropped   = prometheus.NewDesc("meridian_edge_purge_live_dropped_total", "Messages on the live purge subject that were not control's announcements: JetStream answers or deliveries aimed there (docs/security.md). Absent outside a fleet.", nil, nil)
	descHitP99    = prometheus.NewDesc("meridian_edge_hit_latency_p99_seconds", "p99 of cache hits' time to response header over the last 10 s, as the saturation figure counts it (quiet nodes: see docs/dns.md).", nil, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descItems, descBytes, descEvictions, descSegments, descMoves, descRecords, descRetired, descReplays, descDropped, descDecode, descBreaker, descInFlight, descStreaming, descBulkhead, descBrkReject, descDraining, descReady, descHBFailing, descHitP99} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.store.Stats()
	ch <- prometheus.MustNewConstMetric(descItems, prometheus.GaugeValue, float64(s.Items))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(descSegments, prometheus.GaugeValue, float64(s.Segments))
	ch <- prometheus.MustNewConstMetric(descMoves, prometheus.CounterValue, float64(s.Moved))
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.GaugeValue, float64(s.Records))
	ch <- prometheus.MustNewConstMetric(descRetired, prometheus.CounterValue, float64(s.Retired))
	ch <- prometheus.MustNewConstMetric(descDecode, prometheus.GaugeValue, float64(c.n.decodes.Used()))
	if sub := c.n.purgeSub.Load(); sub != nil {
		ch <- prometheus.MustNewConstMetric(descReplays, prometheus.CounterValue, float64(sub.Replays()))
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(sub.Dropped()))
	}
	d := 0.0
	if c.n.Draining() {
		d = 1
	}
	ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, d)
	ready := 0.0
	if !c.n.Draining() && c.n.notReady() == "" { // as /healthz and the heartbeat's Healthy
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	if c.n.registrar.Load() != nil {
		failing := 0.0
		if c.n.heartbeatErr() != nil {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(descHBFailing, prometheus.GaugeValue, failing)
	}
	ch <- prometheus.MustNewConstMetric(descHitP99, prometheus.GaugeValue, c.n.hitLat.p99(c.n.clock()).Seconds())
	for _, u := range c.n.upstreamStats() {
		state := 0.0
		switch u.State {
		case "open":
			state = 1
		case "half-open":
			state = 0.5
		}
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, state, u.Name)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(u.InFlight), u.Name)
		ch <- prometheus.MustNewConstMetric(descStreaming, prometheus.GaugeValue, float64(u.Streaming), u.Name)
		ch <- prometheus.MustNewConstMetric(descBulkhead, prometheus.CounterValue, float64(u.BulkheadRejections), u.Name)
		ch <- prometheus.MustNewConstMetric(descBrkReject, prometheus.CounterValue, float64(u.BreakerRejections), u.Name)
	}
}

// Registry is the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.metrics.reg }

// AdminHandler serves /healthz (200 when ready; 503 while draining or not ready, see notReady),
// /metrics and, when Config.Pprof is set, /debug/pprof/.
func (n *Node) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if n.Draining() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("draining\n"))
			return
		}
		if why := n.notReady(); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: " + why + "\n"))
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	if n.cfg.Pprof {
		// Index serves the named profiles too (heap, goroutine, allocs, block, mutex,
		// threadcreate); symbol is what `go tool pprof` asks for addresses, by GET or POST.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
