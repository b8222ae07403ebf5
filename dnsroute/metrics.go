package dnsroute

import (
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
)

// metrics are one server's Prometheus metrics, on its own registry.
type metrics struct {
	reg       *prometheus.Registry
	queries   *prometheus.CounterVec // by qtype and rcode
	answers   *prometheus.CounterVec // by PoP
	hits      atomic.Uint64
	netHits   atomic.Uint64 // hits answered from the client's database network's answer
	misses    atomic.Uint64
	limited   *prometheus.CounterVec // by action: drop, slip
	dropped   *prometheus.CounterVec // by reason: short, response, long, send, tcp_per_source
	latency   prometheus.Histogram
	failOpen  prometheus.Counter
	reloadErr prometheus.Counter
	// stateKept and stateDropped count fleet-driven state rebuilds that kept the answer cache
	// (no routing outcome changed) and that dropped it.
	stateKept    prometheus.Counter
	stateDropped prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_queries_total", Help: "DNS queries answered, by query type and response code.",
		}, []string{"qtype", "rcode"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_answers_total", Help: "Routed answers, by the PoP they sent the client to.",
		}, []string{"pop"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_rate_limited_total", Help: "Rate-limited queries, by action (drop or slip).",
		}, []string{"action"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_dropped_total", Help: "Packets dropped without an answer, and TCP connections refused at accept, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meridian_dns_query_duration_seconds",
			Help:    "Time from reading a query to writing its answer.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2},
		}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_fail_open_total", Help: "Answers given while no PoP was usable.",
		}),
		reloadErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_mmdb_reload_errors_total", Help: "Failed MMDB reloads (the old copy stays in use).",
		}),
	}
	rebuilds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_dns_state_rebuilds_total",
		Help: "Routing state rebuilds after a fleet change or a stale heartbeat, by whether the answer cache was kept (no answer changed) or dropped.",
	}, []string{"cache"})
	m.stateKept, m.stateDropped = rebuilds.WithLabelValues("kept"), rebuilds.WithLabelValues("dropped")
	ratio := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meridian_dns_cache_hit_ratio", Help: "Answer cache hits over all answered queries since start.",
	}, func() float64 {
		h, mi := float64(m.hits.Load()), float64(m.misses.Load())
		if h+mi == 0 {
			return 0
		}
		return h / (h + mi)
	})
	hits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meridian_dns_cache_hits_total", Help: "UDP queries answered from the answer cache.",
	}, func() float64 { return float64(m.hits.Load()) })
	netHits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meridian_dns_cache_network_hits_total",
		Help: "Cache hits of a client prefix not yet in the cache, answered from the answer for its database network (counted in the hits too).",
	}, func() float64 { return float64(m.netHits.Load()) })
	misses := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meridian_dns_cache_misses_total", Help: "Queries answered by the full path (UDP misses and all TCP).",
	}, func() float64 { return float64(m.misses.Load()) })
	m.reg.MustRegister(m.queries, m.answers, hits, netHits, misses, m.limited, m.dropped, m.latency,
		m.failOpen, m.reloadErr, ratio, rebuilds,
		// The Go runtime's and the process's figures (memory, open descriptors and their
		// limit, CPU), as control and the edge export them: read at scrape time only.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// popCollector exports each PoP's routing figures as the last state built holds them (the
// state of the last answer routed): what answers use, history included, which a new
// process such as `meridian dns explain` cannot know.
type popCollector struct {
	s          *Server
	shed, load *prometheus.Desc
}

func newPopCollector(s *Server) popCollector {
	return popCollector{s: s,
		shed: prometheus.NewDesc("meridian_dns_pop_shed_ratio",
			"Share of its clients a PoP sheds to the next (nearest and latency policies), in 5 % steps, as answers use it.", []string{"pop"}, nil),
		load: prometheus.NewDesc("meridian_dns_pop_load_ratio",
			"A PoP's utilisation as least-loaded (and the everyone-sheds fallback) compares it: 5 % steps, with the policy's load_hysteresis.", []string{"pop"}, nil),
	}
}

func (c popCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.shed; ch <- c.load }

func (c popCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.st.Load()
	// The shedder follows every PoP's load under any policy (so that a switch to nearest
	// starts from its history), but only nearest and latency answers shed.
	sheds := st.policy.Name == geo.Nearest || st.policy.Name == geo.Latency
	for _, p := range st.pops {
		shed := p.shed
		if !sheds {
			shed = 0
		}
		ch <- prometheus.MustNewConstMetric(c.shed, prometheus.GaugeValue, shed, p.pop.ID)
		ch <- prometheus.MustNewConstMetric(c.load, prometheus.GaugeValue, p.level, p.pop.ID)
	}
}

// qtypeLabel bounds the qtype label to the types the zone serves.
func qtypeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypeNS, dns.TypeCNAME, dns.TypeANY, dns.TypeTXT, dns.TypeMX, dns.TypeHTTPS:
		return dns.TypeToString[t]
	}
	return "other"
}

func rcodeLabel(r int) string {
	if r == dns.RcodeBadVers {
		// miekg/dns names 16 BADSIG (TSIG's error of that number); in a header and an OPT's
		// extended RCODE, the only places the server puts it, it is BADVERS (RFC 6891).
		return "BADVERS"
	}
	if s, ok := dns.RcodeToString[r]; ok {
		return s
	}
	return "other"
}
