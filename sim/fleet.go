package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/tcplink"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/sim/wan"
)

// Addresses of the fleet on 127.0.0.0/8. Node n (from 0) of PoP p (from 0) is 127.0.(p+1).(n+1);
// PoP p's NATS link (a tcplink.Link) is 127.0.(p+1).200; the shared services live in 127.0.250.x.
const (
	controlIP = "127.0.250.1"
	originIP  = "127.0.250.2"
	dnsIP     = "127.0.250.3"
	// maxPoPs is how many PoPs the address plan has room for.
	maxPoPs = 240
	// maxNodesPerPoP leaves .200 and above of each PoP's /24 to its NATS link.
	maxNodesPerPoP = 64
	// SimZone is the DNS zone the simulated clients resolve in.
	SimZone = "sim.meridian.test."
	// SimHost is the hostname clients resolve and send; the fleet serves it from the origin.
	SimHost = "www.sim.meridian.test"
)

func nodeIP(pop, node int) string { return fmt.Sprintf("127.0.%d.%d", pop+1, node+1) }
func linkIP(pop int) string       { return fmt.Sprintf("127.0.%d.200", pop+1) }

// cityPrefix is client city i's first network (see cityNetwork).
func cityPrefix(i int) netip.Prefix {
	return cityNetwork(i, 0)
}

// FleetOptions tunes a Fleet. Its zero value works.
type FleetOptions struct {
	// Dir holds the embedded NATS store and the generated MMDB. Required.
	Dir string
	// Logger receives the fleet's logs (every server's, at warning level and up). Nil discards.
	Logger *slog.Logger
	// OnOrigin is called after the origin answered an object request, with the path, the
	// status and the object's version (X-Origin-Version; 0 if none). Nil means nothing is called.
	OnOrigin func(path string, status, version int)
	// Heartbeat is the edges' registration interval. Default 1s.
	Heartbeat time.Duration
	// CacheBytes bounds each edge node's cache; the shield PoP's nodes get twice as much, as
	// they hold what every PoP asked for. Default 256 MiB (the edge's own default).
	CacheBytes int64
}

// Fleet is a whole Meridian fleet in one process, on real sockets on 127.0.0.0/8: the control
// plane with its embedded NATS, the reference origin, every PoP's edge nodes and the DNS server.
// Edges reach each other and the origin through the WAN model's dialer, and NATS through a
// per-PoP link that adds the WAN model's one-way delay and can be cut. Start it with
// StartFleet; Close stops everything it started and returns once all of it has exited.
type Fleet struct {
	s    *scenario.Scenario
	wan  wan.Model
	opts FleetOptions
	log  *slog.Logger

	ctx    context.Context // ends when Close begins; every server runs under it
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the fleet started

	control    *control.Server
	controlURL string
	token      string
	api        *http.Client
	origin     *origin.Server
	originAddr string
	dns        *dnsroute.Server
	dnsAddr    string
	pops       []*popRun
	places     map[string]place // IP -> where it is, for the edges' WAN dialer
	cpu        cpuMeters        // simulated CPU per node IP (measure.go)

	mu     sync.Mutex        // guards addrs, killed and errs
	addrs  map[string]string // node IP -> HTTP host:port, for clients
	killed map[string]bool   // PoPs killed and not restarted
	errs   []error           // servers that stopped with an error before Close
}

type place struct{ lat, lon float64 }

// popRun is one PoP's running parts.
type popRun struct {
	idx   int
	spec  scenario.PoPSpec
	link  *tcplink.Link // between the PoP's nodes and NATS: the WAN delay, and cut-nats
	mu    sync.Mutex    // guards nodes
	nodes []*nodeRun
}

// nodeRun is one running edge node and how to stop it.
type nodeRun struct {
	id   string
	ip   string
	node *edge.Node
	stop context.CancelFunc
	done chan struct{} // closed when Serve returned
}

// StartFleet starts the fleet of scenario s and returns once every part is ready: the control
// plane, the origin with the host configured, every edge joined and consuming purges, and DNS
// answering. On error everything started is stopped again.
func StartFleet(ctx context.Context, s *scenario.Scenario, opts FleetOptions) (_ *Fleet, err error) {
	if opts.Dir == "" {
		return nil, errors.New("start fleet: FleetOptions.Dir is required")
	}
	if len(s.PoPs) > maxPoPs {
		return nil, fmt.Errorf("start fleet: %d PoPs, the simulator has room for %d", len(s.PoPs), maxPoPs)
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 256 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{
		s: s, wan: s.WAN.Model(), opts: opts, log: log, ctx: fctx, cancel: cancel,
		places: map[string]place{originIP: {s.Origin.Lat, s.Origin.Lon}},
		addrs:  map[string]string{}, killed: map[string]bool{},
		api: &http.Client{Timeout: 10 * time.Second},
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	for i, p := range s.PoPs {
		if p.Nodes > maxNodesPerPoP {
			return nil, fmt.Errorf("start fleet: pop %s has %d nodes, at most %d", p.ID, p.Nodes, maxNodesPerPoP)
		}
		for n := range p.Nodes {
			f.places[nodeIP(i, n)] = place{p.Lat, p.Lon}
		}
	}
	// Every step below waits on something that may never happen if a part failed; bound them.
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	defer scancel()
	if err := f.startControl(sctx); err != nil {
		return nil, err
	}
	if err := f.startOrigin(); err != nil {
		return nil, err
	}
	hc := map[string]string{"origin": "http://" + f.originAddr}
	if sh := s.Shield(); sh != "" {
		hc["shield"] = sh
	}
	if err := f.callAPI(sctx, http.MethodPut, "/v1/hosts/"+SimHost, hc, nil); err != nil {
		return nil, fmt.Errorf("start fleet: configure host: %w", err)
	}
	for i, p := range s.PoPs {
		pr := &popRun{idx: i, spec: p}
		f.pops = append(f.pops, pr)
		oneWay := f.wan.OneWay(wan.GreatCircleKm(s.Origin.Lat, s.Origin.Lon, p.Lat, p.Lon))
		if pr.link, err = tcplink.Listen(linkIP(i)+":0", strings.TrimPrefix(f.control.NATSURL(), "nats://"), oneWay); err != nil {
			return nil, fmt.Errorf("start fleet: nats link of %s: %w", p.ID, err)
		}
		if err := f.startNodes(pr); err != nil {
			return nil, err
		}
	}
	for _, pr := range f.pops {
		for _, n := range pr.nodes {
			if err := waitChan(sctx, n.node.FleetReady(), n.done); err != nil {
				return nil, fmt.Errorf("start fleet: node %s never joined the fleet: %w", n.node.Name(), f.failure(err))
			}
			if err := poll(sctx, func() bool { return len(n.node.Hosts()) > 0 }); err != nil {
				return nil, fmt.Errorf("start fleet: node %s never got the host config: %w", n.node.Name(), err)
			}
		}
	}
	if err := f.startDNS(); err != nil {
		return nil, err
	}
	// DNS must see every PoP before clients ask it, or early clients all land on the default.
	view := f.control.Fleet()
	if err := poll(sctx, func() bool { return len(view.PoPs()) == len(s.PoPs) }); err != nil {
		return nil, fmt.Errorf("start fleet: the control plane never saw every PoP: %w", err)
	}
	return f, nil
}

// failure prefers a server's own error to the wait's.
func (f *Fleet) failure(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	return err
}

// goServe runs serve under the fleet's ownership; an error before Close is kept for Err.
func (f *Fleet) goServe(name string, serve func() error) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := serve(); err != nil && f.ctx.Err() == nil {
			f.log.Error("simulated server stopped", "server", name, "err", err)
			f.mu.Lock()
			f.errs = append(f.errs, fmt.Errorf("%s: %w", name, err))
			f.mu.Unlock()
		}
	}()
}

// Err returns the first error of a server that stopped on its own, or nil.
func (f *Fleet) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

func (f *Fleet) startControl(ctx context.Context) error {
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	f.token = hex.EncodeToString(secret)
	c, err := control.New(control.Config{
		NATSListen: controlIP + ":0",
		StoreDir:   filepath.Join(f.opts.Dir, "nats"),
		Tokens:     []control.Token{{Name: "sim", Token: f.token, Scopes: []string{control.ScopeRead, control.ScopeConfig, control.ScopePurge}}},
		PurgeRate:  -1, // a purge storm is the simulator's to size, not the API's to refuse
		Logger:     f.log.With("part", "control"),
	})
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	ln, err := net.Listen("tcp", controlIP+":0")
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	f.control, f.controlURL = c, "http://"+ln.Addr().String()
	f.goServe("control", func() error { return c.Serve(f.ctx, ln) })
	done := make(chan struct{})
	if err := waitChan(ctx, c.Ready(), done); err != nil {
		return fmt.Errorf("start control plane: %w", f.failure(err))
	}
	return nil
}

func (f *Fleet) startOrigin() error {
	o, err := origin.New(origin.Config{Logger: f.log.With("part", "origin")})
	if err != nil {
		return fmt.Errorf("start origin: %w", err)
	}
	ln, err := net.Listen("tcp", originIP+":0")
	if err != nil {
		return fmt.Errorf("start origin: %w", err)
	}
	f.origin, f.originAddr = o, ln.Addr().String()
	h := o.Handler()
	if f.opts.OnOrigin != nil {
		inner, hook := h, f.opts.OnOrigin
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			inner.ServeHTTP(sw, r)
			if !strings.HasPrefix(r.URL.Path, "/_") {
				v, _ := strconv.Atoi(sw.Header().Get("X-Origin-Version"))
				hook(r.URL.Path, sw.status, v)
			}
		})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	f.goServe("origin", func() error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return err
		case <-f.ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-errc
		return nil
	})
	return nil
}

// statusWriter remembers the status the origin answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush and Hijack (the origin's stall and drop faults).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// startNodes starts (or restarts, after a kill) the nodes of one PoP.
func (f *Fleet) startNodes(pr *popRun) error {
	p := pr.spec
	cacheBytes := f.opts.CacheBytes
	if p.Shield {
		cacheBytes *= 2
	}
	var nodes []*nodeRun
	for n := range p.Nodes {
		ip := nodeIP(pr.idx, n)
		id := "n" + strconv.Itoa(n+1)
		creds, err := f.edgeCreds(p.ID, id)
		if err != nil {
			return fmt.Errorf("start edge %s-%s: %w", p.ID, id, err)
		}
		// Listen first: a node built by edge.New runs its store's goroutines, which only Serve
		// stops, so nothing may fail between New and Serve.
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return fmt.Errorf("start edge %s-%s: %w", p.ID, id, err)
		}
		node, err := edge.New(edge.Config{
			PoP: p.ID, Node: id, AdminListen: "off",
			Cache:           edge.CacheConfig{MaxBytes: cacheBytes},
			ShutdownTimeout: 2 * time.Second,
			Purge:           edge.PurgeConfig{MaxLag: PurgeMaxLag},
			// The WAN delay lives in the simulator's dialer, which the kernel's RTT of a
			// loopback socket cannot see: measurements come from the simulated clients'
			// beacons only.
			RTT:         edge.RTTConfig{Disable: true},
			Logger:      f.log.With("part", "edge", "node", p.ID+"-"+id),
			DialContext: f.edgeDialer(p, ip),
			Fleet: edge.FleetConfig{
				NATS: "nats://" + pr.link.Addr().String(), Creds: creds, Region: p.Region, City: p.City, Lat: p.Lat, Lon: p.Lon, IPv4: ip,
				Heartbeat: f.opts.Heartbeat,
				// Every simulated node shares this process's CPU time, which says nothing about
				// one node's load: it meters its simulated CPU against its PoP's budget instead
				// (without a budget, saturation counts in-flight requests only).
				Saturation: f.saturation(p, ip),
			},
		})
		if err != nil {
			ln.Close()
			return fmt.Errorf("start edge %s-%s: %w", p.ID, id, err)
		}
		nctx, stop := context.WithCancel(f.ctx)
		nr := &nodeRun{id: id, ip: ip, node: node, stop: stop, done: make(chan struct{})}
		f.goServe("edge "+node.Name(), func() error {
			defer close(nr.done)
			return node.Serve(nctx, ln, nil)
		})
		if err := waitChan(f.ctx, node.Ready(), nr.done); err != nil {
			return fmt.Errorf("start edge %s: %w", node.Name(), f.failure(err))
		}
		f.mu.Lock()
		f.addrs[ip] = node.Addr()
		f.mu.Unlock()
		nodes = append(nodes, nr)
	}
	pr.mu.Lock()
	pr.nodes = nodes
	pr.mu.Unlock()
	return nil
}

// edgeCreds returns the path of edge pop/node's NATS credentials file, issuing it on the
// control's embedded NATS the first time (a restarted node keeps its credential).
func (f *Fleet) edgeCreds(pop, node string) (string, error) {
	id := natsauth.Edge(pop, node)
	path := filepath.Join(f.opts.Dir, "creds", id.String()+".creds")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	c, err := f.control.IssueCredential(id)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return path, c.WriteFile(path)
}

// edgeDialer dials upstreams from the node's own address (so peers trust its hop header) and
// charges the WAN model's delay for the distance from the PoP to the target.
func (f *Fleet) edgeDialer(from scenario.PoPSpec, ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	base := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		km := 0.0
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if to, ok := f.places[host]; ok {
				km = wan.GreatCircleKm(from.Lat, from.Lon, to.lat, to.lon)
			}
		}
		return f.wan.Dialer(km, base)(ctx, network, addr)
	}
}

// startDNS writes an MMDB that places every client city at its own /24 and starts the DNS
// server over the control plane's view of the fleet.
func (f *Fleet) startDNS() error {
	cities := make([]geodata.City, len(f.s.Clients.Cities))
	for i, c := range f.s.Clients.Cities {
		cities[i] = geodata.City{Name: c.Name, Country: "ZZ", Continent: continentCode(c.Region), Lat: c.Lat, Lon: c.Lon,
			Population: int(c.Population * 1e6), V4: cityBlock(i)}
	}
	var buf bytes.Buffer
	if err := geodata.WriteCities(&buf, cities); err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	mmdb := filepath.Join(f.opts.Dir, "cities.mmdb")
	if err := os.WriteFile(mmdb, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	d, err := dnsroute.New(dnsroute.Config{
		Zone:       SimZone,
		NS:         []dnsroute.NameServer{{Name: "ns1", IPv4: []string{dnsIP}}},
		TTL:        f.s.Clients.DNSTTL,
		MMDB:       mmdb,
		MMDBReload: -1,
		DefaultPoP: f.s.PoPs[0].ID,
		UDPWorkers: 1,
		Fleet:      f.control.Fleet(),
		Logger:     f.log.With("part", "dns"),
	})
	if err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	udp, err := net.ListenPacket("udp", dnsIP+":0")
	if err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	tcp, err := net.Listen("tcp", dnsIP+":0")
	if err != nil {
		udp.Close()
		return fmt.Errorf("start dns: %w", err)
	}
	f.dns, f.dnsAddr = d, udp.LocalAddr().String()
	f.goServe("dns", func() error { return d.Serve(f.ctx, udp, tcp) })
	if err := f.followLatency(d); err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	done := make(chan struct{})
	if err := waitChan(f.ctx, d.Ready(), done); err != nil {
		return fmt.Errorf("start dns: %w", f.failure(err))
	}
	return nil
}

// continentCode maps the built-in region names to MaxMind continent codes (the DNS server
// routes by coordinates; the code only labels).
func continentCode(region string) string {
	switch region {
	case "north-america":
		return "NA"
	case "south-america":
		return "SA"
	case "europe":
		return "EU"
	case "africa":
		return "AF"
	case "asia":
		return "AS"
	case "oceania":
		return "OC"
	}
	return "EU"
}

// Close stops every part of the fleet and returns once all of it has exited.
func (f *Fleet) Close() {
	f.cancel()
	for _, pr := range f.pops {
		if pr.link != nil {
			_ = pr.link.Close()
		}
	}
	f.wg.Wait()
	f.api.CloseIdleConnections()
}

// DNSAddr is the DNS server's UDP address.
func (f *Fleet) DNSAddr() string { return f.dnsAddr }

// Origin is the reference origin.
func (f *Fleet) Origin() *origin.Server { return f.origin }

// HTTPAddr returns the HTTP address of the node with IPv4 address ip: DNS answers carry only
// the address, and every simulated node listens on its own port.
func (f *Fleet) HTTPAddr(ip string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addrs[ip]
	return a, ok
}

// PoPOf returns the PoP id and node id that own address ip.
func (f *Fleet) PoPOf(ip string) (pop, node string, ok bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return "", "", false
	}
	b := a.As4()
	if b[0] != 127 || b[1] != 0 || b[2] == 0 || int(b[2]) > len(f.pops) || b[3] == 0 || b[3] > maxNodesPerPoP {
		return "", "", false
	}
	return f.pops[b[2]-1].spec.ID, "n" + strconv.Itoa(int(b[3])), true
}

// CityAddr is an address of client city i in the run's MMDB; clients send its /24 as their
// EDNS Client Subnet.
func CityAddr(i int) netip.Addr { return cityPrefix(i).Addr().Next() }

// waitChan waits for c to close; it fails if done closes first (the server exited) or ctx ends.
func waitChan(ctx context.Context, c <-chan struct{}, done <-chan struct{}) error {
	select {
	case <-c:
		return nil
	case <-done:
		select {
		case <-c:
			return nil
		default:
		}
		return errors.New("server exited before it was ready")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poll checks cond every 20ms until it holds or ctx ends.
func poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
