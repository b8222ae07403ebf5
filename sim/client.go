package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/sim/report"
	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/sim/wan"
)

// transports returns one HTTP transport per client city: connections carry the WAN delay of
// the city's distance to the PoP they reach, so they must not be shared between cities.
func (r *runner) transports() []*http.Transport {
	out := make([]*http.Transport, len(r.s.Clients.Cities))
	model := r.s.WAN.Model()
	for i, c := range r.s.Clients.Cities {
		out[i] = &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return model.Dialer(r.clientKmTo(c, addr), &net.Dialer{Timeout: 2 * time.Second})(ctx, network, addr)
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
	return wan.GreatCircleKm(lat, lon, p.lat, p.lon)
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
			if wan.Sleep(ctx, time.Until(next)) != nil {
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
func (c *client) do(ctx context.Context, req Request, start time.Time) report.Sample {
	r := c.r
	city := r.s.Clients.Cities[req.City]
	smp := report.Sample{At: r.since(start), City: city.Name, Region: city.Region, Object: req.Object,
		Group: r.s.Group(c.net), Tromboning: r.s.Trombones(city), Flash: req.Flash,
		Crowd: req.Flash && r.wl.crowdCity(r.since(start)) == req.City}
	ip, err := c.resolve(ctx, req.City, start)
	if err != nil {
		smp.Err, smp.Latency = "dns", time.Since(start)
		return smp
	}
	pop, node, _ := r.f.PoPOf(ip)
	smp.PoP, smp.Node = pop, node
	if smp.Group == scenario.GroupRUM {
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
func (r *runner) floor(city scenario.City, pop string, newConn bool, cs cacheStatus) time.Duration {
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
			fills = append(fills, wan.GreatCircleKm(from.Lat, from.Lon, sh.Lat, sh.Lon))
		case "origin":
			fills = append(fills, wan.GreatCircleKm(from.Lat, from.Lon, r.s.Origin.Lat, r.s.Origin.Lon))
		}
	}
	return f.wan.Floor(newConn, r.s.ClientKm(city, p), fills...)
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
