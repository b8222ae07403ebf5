// Command dnsbench is bench/dns.sh's helper (kept under testdata so that it is no package of
// the module): it writes a City-sized MMDB and runs a live fleet heartbeating through NATS.
//
//	dnsbench gen-mmdb FILE NETWORKS   write a GeoLite2-City-format database: the test cities
//	                                  (dnsroute/geo/geodata) plus NETWORKS IPv4 /24s placed
//	                                  at 5,000 synthetic places, names in eight languages
//	dnsbench fleet DNS_YAML NODES     start an embedded NATS server with JetStream, create the
//	                                  fleet buckets, register NODES nodes over the PoPs of
//	                                  DNS_YAML and heartbeat each once a second; print the
//	                                  NATS URL, run until SIGTERM
//	dnsbench ask ADDR:PORT ECS        print the A records answered for www.cdn.example. to
//	                                  a client subnet, to check where a server routes it
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/miekg/dns"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/wire"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("usage: dnsbench gen-mmdb FILE NETWORKS | fleet DNS_YAML NODES")
	}
	if args[0] == "ask" {
		return ask(args[1], args[2])
	}
	n, err := strconv.Atoi(args[2])
	if err != nil || n < 0 {
		return fmt.Errorf("bad count %q", args[2])
	}
	switch args[0] {
	case "gen-mmdb":
		return genMMDB(args[1], n)
	case "fleet":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runFleet(ctx, args[1], n)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// languages are GeoLite2-City's, so that a record costs what a real one does to decode.
var languages = []string{"de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"}

func names(s string) mmdbtype.Map {
	m := mmdbtype.Map{}
	for _, l := range languages {
		m[mmdbtype.String(l)] = mmdbtype.String(s + " (" + l + ")")
	}
	m["en"] = mmdbtype.String(s)
	return m
}

func record(id int, city, country, continent string, lat, lon float64) mmdbtype.Map {
	return mmdbtype.Map{
		"city":      mmdbtype.Map{"geoname_id": mmdbtype.Uint32(id), "names": names(city)},
		"continent": mmdbtype.Map{"code": mmdbtype.String(continent), "geoname_id": mmdbtype.Uint32(id % 7), "names": names(continent)},
		"country":   mmdbtype.Map{"iso_code": mmdbtype.String(country), "geoname_id": mmdbtype.Uint32(id % 250), "names": names(country)},
		"location": mmdbtype.Map{
			"latitude": mmdbtype.Float64(lat), "longitude": mmdbtype.Float64(lon),
			"accuracy_radius": mmdbtype.Uint16(50), "time_zone": mmdbtype.String("Etc/UTC"),
		},
		"postal":       mmdbtype.Map{"code": mmdbtype.String(strconv.Itoa(10000 + id%90000))},
		"subdivisions": mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String("X"), "names": names("Region " + strconv.Itoa(id%500))}},
	}
}

// geonameKey keys records by their city's geoname id (unique per record here): the default
// key serialises and hashes the whole record on every insert, minutes for millions.
type geonameKey struct{}

func (geonameKey) Key(v mmdbtype.DataType) ([]byte, error) {
	id, ok := v.(mmdbtype.Map)["city"].(mmdbtype.Map)["geoname_id"].(mmdbtype.Uint32)
	if !ok {
		return nil, fmt.Errorf("record without city.geoname_id")
	}
	return []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}, nil
}

func genMMDB(path string, networks int) error {
	start := time.Now()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "GeoLite2-City", Description: map[string]string{"en": "Meridian DNS bench database"},
		Languages: languages, IPVersion: 6, RecordSize: 28, IncludeReservedNetworks: true,
		KeyGenerator: geonameKey{},
	})
	if err != nil {
		return fmt.Errorf("create mmdb tree: %w", err)
	}
	insert := func(p netip.Prefix, rec mmdbtype.Map) error {
		n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := tree.Insert(n, rec); err != nil {
			return fmt.Errorf("insert %s: %w", p, err)
		}
		return nil
	}
	// Synthetic places all over the world (a fixed seed: the same file every run).
	rng := rand.New(rand.NewPCG(15, 15))
	const places = 5000
	recs := make([]mmdbtype.Map, places)
	for i := range recs {
		recs[i] = record(100000+i, "Place "+strconv.Itoa(i), "ZZ", "XX", rng.Float64()*140-60, rng.Float64()*360-180)
	}
	// /24s from 1.0.0.0 up, well below the test cities' 100.64.0.0/10 for any count that
	// fits under it (6 million).
	networks = min(networks, 6_000_000)
	base := uint32(1 << 24)
	for i := range networks {
		a := base + uint32(i)<<8
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), 0}), 24)
		if err := insert(p, recs[rng.IntN(places)]); err != nil {
			return err
		}
	}
	for i, c := range geodata.Cities {
		rec := record(1000+i, c.Name, c.Country, c.Continent, c.Lat, c.Lon)
		for _, p := range []netip.Prefix{c.V4, c.V6} {
			if err := insert(p, rec); err != nil {
				return err
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write mmdb: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	fi, _ := os.Stat(path)
	fmt.Fprintf(os.Stderr, "dnsbench: wrote %s: %d networks, %d MB, in %v\n", path, networks+2*len(geodata.Cities), fi.Size()>>20, time.Since(start).Round(time.Second))
	return nil
}

func runFleet(ctx context.Context, dnsYAML string, nodes int) error {
	cfg, err := dnsroute.LoadConfig(dnsYAML)
	if err != nil {
		return err
	}
	if len(cfg.PoPs) == 0 {
		return fmt.Errorf("%s has no pops", dnsYAML)
	}
	dir, err := os.MkdirTemp("", "dnsbench-nats")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		return err
	}
	// The config's own nodes first, then more in turn over the PoPs with made-up addresses.
	var all []wire.Node
	for _, n := range cfg.Nodes() {
		if len(all) < nodes {
			all = append(all, n)
		}
	}
	for i := 0; len(all) < nodes; i++ {
		p := cfg.PoPs[i%len(cfg.PoPs)]
		all = append(all, wire.Node{PoP: p.ID, ID: fmt.Sprintf("x%d", i), Region: p.Region, City: p.City,
			Lat: p.Lat, Lon: p.Lon, IPv4: fmt.Sprintf("198.51.100.%d", 1+i%250)})
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, n := range all {
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		var mu sync.Mutex
		r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: n, Interval: time.Second,
			// Load moves every second, but inside one 5 % step and under the low watermark:
			// such heartbeats change no answer and must keep the answer cache.
			Load: func() wire.LoadReport {
				mu.Lock()
				defer mu.Unlock()
				return wire.LoadReport{Healthy: true, Saturation: 0.20 + rng.Float64()*0.02, RequestsPerSec: 100 + rng.Float64()*50}
			}})
		if err != nil {
			return err
		}
		wg.Go(func() { r.Run(ctx) })
	}
	fmt.Println(ns.ClientURL())
	fmt.Fprintf(os.Stderr, "dnsbench: %d nodes heartbeating every second through %s\n", len(all), ns.ClientURL())
	<-ctx.Done()
	return nil
}

func ask(server, subnet string) error {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
		SourceNetmask: uint8(p.Bits()), Address: net.IP(p.Masked().Addr().AsSlice())})
	r, err := dns.Exchange(m, server)
	if err != nil {
		return fmt.Errorf("ask %s: %w", server, err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			fmt.Print(a.A, " ")
		}
	}
	fmt.Println()
	return nil
}
