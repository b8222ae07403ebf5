package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/wire"
)

// The runner's side of routing from live measurements: the client networks' addresses, each
// node's simulated CPU meter (its saturation), the beacons the "rum" group measures and
// reports, and the per-second record of every PoP's load and shed share. The invariants that
// judge them, overload_shed and latency_routing, are in sim/report.

// cityBlock is client city i's range in the run's MMDB: a /20 of 127.64.0.0/10, on loopback so
// that a client can send from its own network (the edge takes a beacon report's network from
// the connection, never from the body).
func cityBlock(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, byte(64 + i>>4), byte(i&15) << 4, 0}), 20)
}

// cityNetwork is the k-th /24 of client city i.
func cityNetwork(i, k int) netip.Prefix {
	b := cityBlock(i).Addr().As4()
	b[2] += byte(k % scenario.CityNetworks)
	return netip.PrefixFrom(netip.AddrFrom4(b), 24)
}

// cpuMeters are the simulated nodes' CPU meters, by node address: each request a node answers
// adds workload.cpu_per_request, and the node reads its meter for its saturation.
type cpuMeters struct {
	mu sync.Mutex // guards m
	m  map[string]*atomic.Int64
}

// meter returns the meter of the node at ip, creating it.
func (c *cpuMeters) meter(ip string) *atomic.Int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*atomic.Int64{}
	}
	m, ok := c.m[ip]
	if !ok {
		m = &atomic.Int64{}
		c.m[ip] = m
	}
	return m
}

// saturation is the saturation config of the node at ip in PoP p: its metered simulated CPU
// against the PoP's budget, or in-flight requests only without a budget. Hit latency is left
// out for the same reason as the process's CPU: every simulated node shares one process, so
// a hit's service time says how busy the machine is, not the node.
func (f *Fleet) saturation(p scenario.PoPSpec, ip string) edge.SaturationConfig {
	if p.CPUBudget <= 0 {
		return edge.SaturationConfig{CPUs: -1, HitLatencyTarget: -1}
	}
	m := f.cpu.meter(ip)
	return edge.SaturationConfig{CPUs: p.CPUBudget, HitLatencyTarget: -1, CPUTime: func() time.Duration { return time.Duration(m.Load()) }}
}

// chargeCPU charges one request's simulated CPU to the node at ip.
func (f *Fleet) chargeCPU(ip string) {
	f.cpu.meter(ip).Add(int64(f.s.Workload.CPUPerRequest))
}

// followLatency feeds the latency bucket into the DNS server's map, as a live `meridian dns`
// does, over its own NATS connection with a DNS credential.
func (f *Fleet) followLatency(d *dnsroute.Server) error {
	cred, err := f.control.IssueCredential(natsauth.DNS("sim"))
	if err != nil {
		return fmt.Errorf("dns credential: %w", err)
	}
	opts, err := cred.Options()
	if err != nil {
		return fmt.Errorf("dns credential: %w", err)
	}
	nc, err := nats.Connect(f.control.NATSURL(), append(opts, nats.Name("meridian-sim-dns"), nats.MaxReconnects(-1))...)
	if err != nil {
		return fmt.Errorf("connect dns to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	f.goServe("dns-latency", func() error {
		defer nc.Close()
		d.FollowLatency(f.ctx, js, "")
		return nil
	})
	return nil
}

// crowdCity is the index of the city the flash crowd active at at comes from, or -1 (no
// crowd, or one from everywhere). Like Generator.Object, the first active crowd counts.
func (w *Workload) crowdCity(at time.Duration) int {
	for _, f := range w.flashes {
		if at >= f.At && at < f.End() {
			for i, c := range w.cities {
				if f.City != "" && c.Name == f.City {
					return i
				}
			}
			return -1
		}
	}
	return -1
}

// PoPLoad returns, per PoP, its utilisation as the fleet registry shows it and the share DNS
// sheds.
func (f *Fleet) PoPLoad() map[string][2]float64 {
	out := map[string][2]float64{}
	if v := f.control.Fleet(); v != nil {
		for _, p := range v.PoPs() {
			out[p.ID] = [2]float64{p.Utilisation(), f.dns.ShedShare(p.ID)}
		}
	}
	return out
}

// beaconAddr is the HTTP address of a live node of pop, for its beacon.
func (f *Fleet) beaconAddr(pop string) (string, bool) {
	for _, pr := range f.pops {
		if pr.spec.ID != pop {
			continue
		}
		for n := range pr.spec.Nodes {
			if a, ok := f.HTTPAddr(nodeIP(pr.idx, n)); ok {
				return a, true
			}
		}
	}
	return "", false
}

// clientKmTo is the length of city's leg to the party at addr: through a path's hub when one
// applies to the PoP there, else the great circle.
func (r *runner) clientKmTo(city scenario.City, addr string) float64 {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if pop, _, ok := r.f.PoPOf(host); ok {
		if p, ok := r.s.PoP(pop); ok {
			return r.s.ClientKm(city, p)
		}
	}
	return r.f.kmTo(city.Lat, city.Lon, addr)
}

// recordLoad records every PoP's utilisation and shed share once a second until ctx ends.
func (r *runner) recordLoad(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			at := r.since(now)
			for pop, l := range r.f.PoPLoad() {
				r.rec.RecordPoPLoad(at, pop, l[0], l[1])
			}
		}
	}
}

// beaconTransport is the transport of city's network k for beacons: it sends from the
// network's own address (the edge attributes a report to the connection's /24) and pays the
// WAN model's delay like every client connection.
func (r *runner) beaconTransport(city, k int) *http.Transport {
	r.btMu.Lock()
	defer r.btMu.Unlock()
	if r.beaconHTTP == nil {
		r.beaconHTTP = map[[2]int]*http.Transport{}
	}
	key := [2]int{city, k}
	if t, ok := r.beaconHTTP[key]; ok {
		return t
	}
	c := r.s.Clients.Cities[city]
	model := r.s.WAN.Model()
	src := &net.TCPAddr{IP: cityNetwork(city, k).Addr().Next().AsSlice()}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return model.Dialer(r.clientKmTo(c, addr), &net.Dialer{Timeout: 2 * time.Second, LocalAddr: src})(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	r.beaconHTTP[key] = t
	return t
}

func (r *runner) closeBeaconTransports() {
	r.btMu.Lock()
	defer r.btMu.Unlock()
	for _, t := range r.beaconHTTP {
		t.CloseIdleConnections()
	}
}

// measure, when it is due for city, times the beacon of the nearest PoPs and of pop (the one
// DNS gave) through the WAN model, and reports the RTTs to pop, as a page's beacon script
// would. It returns how long that took.
func (c *client) measure(ctx context.Context, city int, pop string) time.Duration {
	r := c.r
	now := time.Now()
	if !r.beaconDue(city, c.net, now) {
		return 0
	}
	t := r.beaconTransport(city, c.net)
	cands := r.s.NearestPoPs(r.s.Clients.Cities[city], r.s.Clients.RUM.Candidates)
	if !slices.Contains(cands, pop) && pop != "" {
		cands = append(cands, pop)
	}
	rtt := map[string]float64{}
	for _, p := range cands {
		addr, ok := r.f.beaconAddr(p)
		if !ok {
			continue
		}
		// The first fetch may open the connection (a handshake more); the second is one
		// round trip, what the routing should compare.
		var took time.Duration
		for range 2 {
			took = beaconFetch(ctx, t, addr)
		}
		if took > 0 {
			rtt[p] = float64(took.Microseconds()) / 1000
		}
	}
	addr, ok := r.f.beaconAddr(pop)
	if len(rtt) == 0 || !ok {
		return time.Since(now)
	}
	body, _ := json.Marshal(wire.BeaconReport{RTTMs: rtt})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+wire.BeaconPath, bytes.NewReader(body))
	if err == nil {
		req.Host = SimHost
		var resp *http.Response
		if resp, err = t.RoundTrip(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusNoContent:
				r.rec.RecordBeacon("accepted")
			case http.StatusTooManyRequests:
				r.rec.RecordBeacon("limited")
			default:
				r.rec.RecordBeacon("refused")
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		r.rec.RecordBeacon("failed")
	}
	return time.Since(now)
}

// beaconFetch GETs a beacon and returns how long it took (0 on failure).
func beaconFetch(ctx context.Context, t *http.Transport, addr string) time.Duration {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+wire.BeaconPath, nil)
	if err != nil {
		return 0
	}
	req.Host = SimHost
	resp, err := t.RoundTrip(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0
	}
	return time.Since(start)
}

// beaconDue reports whether city's network k is due a measurement at now, and if so books it:
// the clients sharing a network measure in turn, once per clients.rum.every, as one page's
// beacon script per network would.
func (r *runner) beaconDue(city, k int, now time.Time) bool {
	r.btMu.Lock()
	defer r.btMu.Unlock()
	if r.beaconNext == nil {
		r.beaconNext = map[[2]int]time.Time{}
	}
	key := [2]int{city, k}
	if next, ok := r.beaconNext[key]; ok && now.Before(next) {
		return false
	}
	r.beaconNext[key] = now.Add(r.s.Clients.RUM.Every)
	return true
}
