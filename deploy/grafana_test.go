package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/deploy"
	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// The one-machine fleet the dashboards are checked against: each process on its own address.
const (
	gControlIP = "127.0.94.1"
	gOriginIP  = "127.0.94.2"
	gDNSIP     = "127.0.94.3"
	gEdgeIP    = "127.0.94.4"
	gHost      = "www.example.com"
	gZone      = "cdn.example.test."
	gPoP       = "fra"
	gToken     = "grafana-test-token-0123456789abcdef"
)

// Jobs of the rendered prometheus.yml, and the prefix of the metrics each process exports.
var jobPrefixes = map[string]string{
	"meridian_edge_":    "meridian-edge",
	"meridian_dns_":     "meridian-dns",
	"meridian_control_": "meridian-control",
}

// TestDashboardsQueryScrapedMetrics starts a real control plane (embedded NATS), a real edge
// joined to it and a real DNS server following it, drives one request of each kind through
// them (a miss, a hit, a purge, a routed DNS answer), scrapes each process's /metrics, and
// checks that every series a Grafana dashboard under deploy/ queries is exported by the
// process its metric belongs to, with every label the query matches or groups by (the
// metric's own, or a target label of its job in the rendered prometheus.yml).
func TestDashboardsQueryScrapedMetrics(t *testing.T) {
	dashboards := loadDashboards(t)
	if len(dashboards) == 0 {
		t.Fatal("no Grafana dashboard under deploy/")
	}
	targetLabels := renderedTargetLabels(t)
	scrapes := scrapeFleet(t)

	checked := 0
	for _, d := range dashboards {
		for _, q := range d.queries {
			for _, p := range queryProblems(q.expr, scrapes, targetLabels) {
				t.Errorf("%s: panel %q: %s: %s", d.path, q.panel, q.expr, p)
			}
			checked++
		}
	}
	t.Logf("checked %d queries of %d dashboards", checked, len(dashboards))

	// The check itself must be able to fail, against the same scrapes.
	for expr, want := range map[string]string{
		`sum(rate(meridian_edge_no_such_total[5m]))`:                       "meridian_edge_no_such_total is not in the scrape of meridian-edge",
		`sum by (colour) (rate(meridian_dns_answers_total[1m]))`:           `meridian_dns_answers_total has no label "colour"`,
		`histogram_quantile(0.5, meridian_control_purge_duration_seconds)`: "meridian_control_purge_duration_seconds is not in the scrape of meridian-control",
		`rate(meridian_edge_requests_total{pop="fra",colour="red"}[1m])`:   `meridian_edge_requests_total has no label "colour"`,
		`up`: "cannot tell which process exports up",
		`sum(rate(meridian_edge_requests_total{cache="HIT"}[5m]))`: `meridian_edge_requests_total has no series with cache="HIT"`,
	} {
		got := queryProblems(expr, scrapes, targetLabels)
		if len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("problems of %s = %q, want one: %q", expr, got, want)
		}
	}
}

// queryProblems lists what is wrong with one dashboard query: series that no process exports,
// labels that neither the series nor its job's targets carry.
func queryProblems(expr string, scrapes fleetScrape, targetLabels map[string]map[string]bool) []string {
	pq, err := parsePromQL(expr)
	if err != nil {
		return []string{err.Error()}
	}
	if len(pq.selectors) == 0 {
		return []string{"queries no metric"}
	}
	var out []string
	for _, s := range pq.selectors {
		job, ok := jobOf(s)
		if !ok {
			out = append(out, fmt.Sprintf("cannot tell which process exports %s (no job matcher, no known prefix)", s.name))
			continue
		}
		if _, ok := scrapes[job][s.name]; !ok {
			out = append(out, fmt.Sprintf("%s is not in the scrape of %s", s.name, job))
			continue
		}
		out = append(out, labelProblems(scrapes[job], targetLabels[job], s.name, s.labels)...)
		for l, v := range s.equals {
			// Only values the test's traffic produced count: a panel filtering on a value that
			// is never exported (a typo, a renamed status) stays flat.
			if vals := scrapes[job][s.name][l]; vals != nil && !vals[v] {
				out = append(out, fmt.Sprintf("%s has no series with %s=%q (values seen: %v)", s.name, l, v, keys(vals)))
			}
		}
	}
	for _, g := range pq.groupings {
		for _, s := range g.scope {
			if job, ok := jobOf(s); ok {
				out = append(out, labelProblems(scrapes[job], targetLabels[job], s.name, g.labels)...)
			}
		}
	}
	return out
}

func labelProblems(scrape series, target map[string]bool, metric string, labels []string) []string {
	series, ok := scrape[metric]
	if !ok {
		return nil // reported as a missing metric
	}
	var out []string
	for _, l := range labels {
		if series[l] == nil && !target[l] && l != "job" && l != "instance" {
			out = append(out, fmt.Sprintf("%s has no label %q (its labels: %v; its job's target labels: %v)",
				metric, l, keys(series), keys(target)))
		}
	}
	return out
}

func jobOf(s selector) (string, bool) {
	if s.job != "" {
		return s.job, true
	}
	for p, job := range jobPrefixes {
		if strings.HasPrefix(s.name, p) {
			return job, true
		}
	}
	return "", false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fleetScrape is the processes' metrics by job: series name -> label -> values seen.
type fleetScrape map[string]series

type series map[string]map[string]map[string]bool

type dashboard struct {
	path    string
	queries []panelQuery
}

type panelQuery struct{ panel, expr string }

// loadDashboards reads every Grafana dashboard (a JSON file with panels) under deploy/.
func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	var out []dashboard
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") || strings.Contains(path, "testdata") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var doc struct {
			Panels []json.RawMessage `json:"panels"`
		}
		if json.Unmarshal(b, &doc) != nil || doc.Panels == nil {
			return nil // not a dashboard
		}
		db := dashboard{path: path}
		if err := collectQueries(doc.Panels, &db.queries); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, db)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// collectQueries gathers every target expression of panels, rows' nested panels included.
func collectQueries(panels []json.RawMessage, out *[]panelQuery) error {
	for _, raw := range panels {
		var p struct {
			Title   string            `json:"title"`
			Panels  []json.RawMessage `json:"panels"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("panel: %w", err)
		}
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				*out = append(*out, panelQuery{panel: p.Title, expr: tg.Expr})
			}
		}
		if err := collectQueries(p.Panels, out); err != nil {
			return err
		}
	}
	return nil
}

// renderedTargetLabels renders the example fleet and returns, per job of its prometheus.yml,
// the labels its targets carry: the dashboards group by them.
func renderedTargetLabels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	f, err := deploy.Load(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := deploy.Render(f, deploy.RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(files["prometheus/prometheus.yml"], &pc); err != nil {
		t.Fatalf("rendered prometheus.yml: %v", err)
	}
	out := map[string]map[string]bool{}
	for _, sc := range pc.ScrapeConfigs {
		out[sc.JobName] = map[string]bool{}
		for _, s := range sc.StaticConfigs {
			for l := range s.Labels {
				out[sc.JobName][l] = true
			}
		}
	}
	for _, job := range jobPrefixes {
		if out[job] == nil {
			t.Fatalf("rendered prometheus.yml has no job %s", job)
		}
	}
	return out
}

// scrapeFleet runs the fleet, drives traffic through it so that labelled series exist, and
// returns each job's scrape.
func scrapeFleet(t *testing.T) fleetScrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	dir := t.TempDir()

	ctl := startControl(t, dir)
	api := "http://" + ctl.addr
	originAddr := startOrigin(t)
	hc, _ := json.Marshal(wire.HostConfig{Host: gHost, Origin: "http://" + originAddr})
	if code, b := call(t, http.MethodPut, api+"/v1/hosts/"+gHost, hc); code != http.StatusOK {
		t.Fatalf("PUT /v1/hosts/%s = %d %s", gHost, code, b)
	}
	node, edgeAdmin := startEdge(t, dir, ctl.srv)
	dnsSrv := startDNS(t, dir, ctl.srv)

	// A miss filled from the origin, then a hit.
	obj := "http://" + node.Addr() + "/grafana?cc=max-age%3D300"
	wait.For(t, 10*time.Second, "the edge serving "+gHost, func() bool {
		return edgeGet(t, obj) == http.StatusOK
	})
	if code := edgeGet(t, obj); code != http.StatusOK {
		t.Fatalf("GET %s again = %d", obj, code)
	}
	// A purge, acknowledged by the edge: control times it, the edge counts it.
	pb, _ := json.Marshal(purge.Request{Host: gHost, URLs: []string{"http://" + gHost + "/grafana?cc=max-age%3D300"}})
	code, b := call(t, http.MethodPost, api+"/v1/purge?wait=10s", pb)
	var pr purge.Response
	if code != http.StatusOK || json.Unmarshal(b, &pr) != nil || !pr.Complete {
		t.Fatalf("POST /v1/purge?wait=10s = %d %s, want a complete receipt", code, b)
	}
	// A DNS answer routed to the edge's PoP.
	udp, _ := dnsSrv.Addrs()
	wait.For(t, 10*time.Second, "DNS routing to the edge", func() bool {
		return slices.Contains(resolveA(ctx, udp.String(), "www."+gZone), gEdgeIP)
	})

	return fleetScrape{
		"meridian-edge":    scrape(t, "http://"+edgeAdmin+"/metrics"),
		"meridian-dns":     scrape(t, "http://"+dnsSrv.AdminAddr().String()+"/metrics"),
		"meridian-control": scrape(t, api+"/metrics"),
	}
}

type controlRun struct {
	srv  *control.Server
	addr string
}

func startControl(t *testing.T, dir string) controlRun {
	t.Helper()
	c, err := control.New(control.Config{
		NATSListen: gControlIP + ":0",
		StoreDir:   filepath.Join(dir, "nats"),
		Tokens:     []control.Token{{Name: "grafana", Token: gToken, Scopes: []string{control.ScopeRead, control.ScopeConfig, control.ScopePurge}}},
	})
	if err != nil {
		t.Fatalf("control.New: %v", err)
	}
	ln := listen(t, gControlIP)
	done := serve(t, "control", func(ctx context.Context) error { return c.Serve(ctx, ln) })
	waitReady(t, "control", c.Ready(), done)
	return controlRun{srv: c, addr: ln.Addr().String()}
}

func startOrigin(t *testing.T) string {
	t.Helper()
	o, err := origin.New(origin.Config{})
	if err != nil {
		t.Fatalf("origin.New: %v", err)
	}
	ln := listen(t, gOriginIP)
	serve(t, "origin", func(ctx context.Context) error { return o.Serve(ctx, ln) })
	return ln.Addr().String()
}

// startEdge runs an edge joined to the fleet with its own NATS credential, as rendered VMs
// do, and returns it with its admin address once it consumes purges.
func startEdge(t *testing.T, dir string, ctl *control.Server) (*edge.Node, string) {
	t.Helper()
	cred, err := ctl.IssueCredential(natsauth.Edge(gPoP, "edge-1"))
	if err != nil {
		t.Fatalf("issue edge credential: %v", err)
	}
	creds := filepath.Join(dir, "edge.creds")
	if err := cred.WriteFile(creds); err != nil {
		t.Fatal(err)
	}
	n, err := edge.New(edge.Config{
		PoP: gPoP, Node: "edge-1", ShutdownTimeout: 2 * time.Second,
		Fleet: edge.FleetConfig{NATS: ctl.NATSURL(), Creds: creds, Region: "eu-central-1", City: "Frankfurt",
			Lat: 50.11, Lon: 8.68, IPv4: gEdgeIP, Heartbeat: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("edge.New: %v", err)
	}
	ln, admin := listen(t, gEdgeIP), listen(t, gEdgeIP)
	done := serve(t, "edge", func(ctx context.Context) error { return n.Serve(ctx, ln, admin) })
	waitReady(t, "edge", n.FleetReady(), done)
	return n, admin.Addr().String()
}

// startDNS runs the DNS server over control's view of the fleet, with the project's test MMDB.
func startDNS(t *testing.T, dir string, ctl *control.Server) *dnsroute.Server {
	t.Helper()
	mmdb := filepath.Join(dir, "cities.mmdb")
	if err := geodata.WriteFile(mmdb); err != nil {
		t.Fatal(err)
	}
	d, err := dnsroute.New(dnsroute.Config{
		Zone: gZone, NS: []dnsroute.NameServer{{Name: "ns1", IPv4: []string{gDNSIP}}},
		Listen: gDNSIP + ":0", AdminListen: gDNSIP + ":0", UDPWorkers: 1,
		MMDB: mmdb, MMDBReload: -1, Fleet: ctl.Fleet(),
	})
	if err != nil {
		t.Fatalf("dnsroute.New: %v", err)
	}
	done := serve(t, "dns", d.Run)
	waitReady(t, "dns", d.Ready(), done)
	return d
}

// running is a server started by serve: done is closed once it returned err.
type running struct {
	done chan struct{}
	err  error
}

// serve runs fn until the test ends, then checks it returned cleanly.
func serve(t *testing.T, name string, fn func(ctx context.Context) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
		if r.err != nil {
			t.Errorf("%s: %v", name, r.err)
		}
	})
	return r
}

func waitReady(t *testing.T, name string, ready <-chan struct{}, r *running) {
	t.Helper()
	select {
	case <-ready:
	case <-r.done:
		t.Fatalf("%s stopped before it was ready: %v", name, r.err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready within 20s", name)
	}
}

func listen(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	return ln
}

var client = &http.Client{Timeout: 10 * time.Second}

// call makes an API request with the test token.
func call(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+gToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func edgeGet(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = gHost
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// resolveA asks server for name's A records as a resolver in Frankfurt would (ECS).
func resolveA(ctx context.Context, server, name string) []string {
	c, _ := geodata.Lookup("Frankfurt")
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(1232)
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
		SourceNetmask: 24, Address: net.IP(c.V4.Addr().AsSlice())})
	m.Extra = append(m.Extra, o)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).ExchangeContext(ctx, m, server)
	if err != nil {
		return nil
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// scrape reads a Prometheus text exposition: series name -> label -> the values its samples carry.
func scrape(t *testing.T, url string) series {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+gToken) // control's /metrics needs the read scope
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	out := series{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, err := parseSample(line)
		if err != nil {
			t.Fatalf("scrape %s: %v", url, err)
		}
		if out[name] == nil {
			out[name] = map[string]map[string]bool{}
		}
		for l, v := range labels {
			if out[name][l] == nil {
				out[name][l] = map[string]bool{}
			}
			out[name][l][v] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	if len(out) == 0 {
		t.Fatalf("scrape %s: no samples", url)
	}
	return out
}

// parseSample splits a sample line `name{a="x",b="y\"z"} value` into its name and labels.
func parseSample(line string) (string, map[string]string, error) {
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, fmt.Errorf("sample %q has no name", line)
	}
	name := line[:i]
	if line[i] != '{' {
		return name, nil, nil
	}
	labels := map[string]string{}
	rest := line[i+1:]
	for {
		rest = strings.TrimLeft(rest, " ,")
		if strings.HasPrefix(rest, "}") {
			return name, labels, nil
		}
		eq := strings.Index(rest, `="`)
		if eq <= 0 {
			return "", nil, fmt.Errorf("sample %q: bad label list", line)
		}
		label := rest[:eq]
		rest = rest[eq+2:]
		// The value ends at the first quote not escaped by a backslash.
		j := 0
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if rest[j] == '\\' {
				j++
			}
		}
		if j >= len(rest) {
			return "", nil, fmt.Errorf("sample %q: unterminated label value", line)
		}
		labels[label] = strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(rest[:j])
		rest = rest[j+1:]
	}
}
