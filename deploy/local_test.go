package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/purge"
)

const testToken = "deploy-test-token-0123456789abcdef"

// localFleet is the example fleet with every address moved to loopback: control VM i on
// 127.0.91.i, edge VM k on 127.0.92.k, every port one that is free. The TLS files stay: the test
// writes a CA and a certificate for those addresses where the rendered configs expect them.
func localFleet(t *testing.T) (*Fleet, map[string]string) {
	t.Helper()
	f := loadExample(t)
	ports := freePorts(t, 9)
	f.NATS.ClientPort, f.NATS.ClusterPort, f.NATS.LeafPort, f.NATS.MonitorPort = ports[0], ports[1], ports[2], ports[3]
	f.Control.APIPort, f.DNS.Port, f.DNS.AdminPort = ports[4], ports[5], ports[6]
	f.Edge.HTTPPort, f.Edge.AdminPort = ports[7], ports[8]
	bind := map[string]string{}
	for i := range f.Control.Nodes {
		c := &f.Control.Nodes[i]
		c.IPv4 = fmt.Sprintf("127.0.91.%d", i+1)
		bind[c.Name] = c.IPv4
	}
	k := 0
	for i := range f.PoPs {
		p := &f.PoPs[i]
		for j := range p.Nodes {
			k++
			n := &p.Nodes[j]
			n.IPv4 = fmt.Sprintf("127.0.92.%d", k)
			n.PrivateIPv4 = ""
			bind[p.VMName(*n)] = n.IPv4
		}
	}
	return f, bind
}

// freePorts finds n ports free for TCP and UDP on every address.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var hold []io.Closer
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	for len(out) < n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		hold = append(hold, pc)
		out = append(out, port)
	}
	return out
}

// writeVMs writes each VM's rendered files under root/<vm>, with its absolute paths moved there.
func writeVMs(t *testing.T, root string, files map[string][]byte, vms []VM) {
	t.Helper()
	for p, b := range files {
		vm, _, ok := strings.Cut(p, "/")
		if !ok || !isVM(vms, vm) {
			continue
		}
		b = relocate(b, filepath.Join(root, vm))
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if IsSecret(p) {
			mode = 0o600
		}
		if err := os.WriteFile(full, b, mode); err != nil {
			t.Fatal(err)
		}
	}
}

func isVM(vms []VM, name string) bool {
	for _, v := range vms {
		if v.Name == name {
			return true
		}
	}
	return false
}

// relocate moves the VM's absolute paths under vmRoot: the only change besides addresses.
func relocate(b []byte, vmRoot string) []byte {
	for _, d := range []string{EtcDir, StateDir, "/usr/local/bin"} {
		b = bytes.ReplaceAll(b, []byte(d), []byte(vmRoot+d))
	}
	return b
}

// envFile reads a systemd EnvironmentFile.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			env[k] = v
		}
	}
	return env
}

// execStart returns a unit's ExecStart command line, with $VARS from its EnvironmentFile.
func execStart(t *testing.T, unitPath string) []string {
	t.Helper()
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	var line string
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "ExecStart":
			line = v
		case "EnvironmentFile":
			env = envFile(t, v)
		}
	}
	var argv []string
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "$") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		argv = append(argv, w)
	}
	if len(argv) < 2 {
		t.Fatalf("unit %s: ExecStart %q has no subcommand", unitPath, line)
	}
	return argv
}

func TestRenderedFleetRunsLocally(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole fleet")
	}
	f, bind := localFleet(t)
	files, err := Render(f, RenderOptions{BindHost: func(vm string) string { return bind[vm] }})
	if err != nil {
		t.Fatalf("Render = %v", err)
	}
	root := t.TempDir()
	vms := f.VMs()
	writeVMs(t, root, files, vms)
	ips := make([]string, 0, len(bind))
	for _, ip := range bind {
		ips = append(ips, ip)
	}
	for _, vm := range vms {
		vmRoot := filepath.Join(root, vm.Name)
		writeTLS(t, vmRoot, f.NATS.TLS, ips)
		if vm.Role == RoleControl {
			// The API's certificate: the same test CA's, valid for every fleet address.
			writeTLS(t, vmRoot, TLSFiles{CertFile: f.Control.TLSCert, KeyFile: f.Control.TLSKey, CAFile: f.NATS.TLS.CAFile}, ips)
			putFile(t, vmRoot+f.Control.TokensFile, fmt.Sprintf("- name: ops\n  token: %s\n  scopes: [read, config, purge]\n", testToken))
			if err := os.MkdirAll(filepath.Dir(vmRoot+f.DNS.MMDB), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := geodata.WriteFile(vmRoot + f.DNS.MMDB); err != nil {
				t.Fatal(err)
			}
		}
	}

	// NATS first: the cluster on the control VMs, a leaf node on every edge VM.
	servers := map[string]*server.Server{}
	for _, vm := range vms {
		servers[vm.Name] = startNATS(t, filepath.Join(root, vm.Name)+EtcDir+"/nats.conf")
	}
	var controls []string
	for _, vm := range vms {
		if vm.Role == RoleControl {
			controls = append(controls, vm.Name)
		}
	}
	waitFor(t, 20*time.Second, "the three NATS servers to route to each other", func() bool {
		for _, name := range controls {
			rz, err := servers[name].Routez(nil)
			if err != nil {
				return false
			}
			peers := map[string]bool{}
			for _, r := range rz.Routes {
				peers[r.RemoteName] = true
			}
			if len(peers) != len(controls)-1 {
				return false
			}
		}
		return true
	})
	// Nobody is anonymous: the cluster's and the leaf servers' client ports refuse a client
	// without credentials (routes and leaf links authenticated above, or they would not form).
	for _, vm := range vms {
		url := "nats://" + net.JoinHostPort(bind[vm.Name], strconv.Itoa(f.NATS.ClientPort))
		if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("%s: anonymous client connected to %s", vm.Name, url)
		}
	}
	waitFor(t, 20*time.Second, "every leaf node to connect to the cluster", func() bool {
		for _, vm := range vms {
			if vm.Role == RoleEdge && servers[vm.Name].NumLeafNodes() != 1 {
				return false
			}
		}
		return true
	})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	run := func(what string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s stopped: %v", what, err)
			}
		})
	}

	// Control planes, from the flags their units start them with. Like systemd
	// (Restart=on-failure) the test restarts one that exits. They start one after the other:
	// three controls creating the same R3 buckets at once can lose the replies and time out
	// (see the report; control should retry with short per-attempt timeouts).
	api := func(name string) string {
		return "https://" + net.JoinHostPort(bind[name], strconv.Itoa(f.Control.APIPort))
	}
	for _, name := range controls {
		// ExecStartPre: wait for the local NATS server's JetStream health.
		env := envFile(t, filepath.Join(root, name)+EtcDir+"/control.env")
		waitFor(t, 30*time.Second, name+" NATS JetStream healthy", func() bool {
			resp, err := http.Get(env["MERIDIAN_NATS_HEALTHZ"])
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	for _, name := range controls {
		argv := execStart(t, filepath.Join(root, name)+UnitDir+"/meridian-control.service")
		if argv[1] != "control" {
			t.Fatalf("%s: meridian-control.service runs %q, want control", name, argv[1])
		}
		run(name+" control", func(ctx context.Context) error {
			for {
				cmd := control.NewCommand()
				cmd.SetArgs(argv[2:])
				cmd.SetOut(io.Discard)
				cmd.SetErr(io.Discard)
				err := cmd.ExecuteContext(ctx)
				if ctx.Err() != nil {
					return nil
				}
				t.Logf("%s control exited (%v); restarting like systemd", name, err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(2 * time.Second):
				}
			}
		})
		waitFor(t, 40*time.Second, name+" control /healthz ok", func() bool {
			code, body := call(t, "GET", api(name)+"/healthz", nil)
			return code == 200 && strings.Contains(string(body), `"ok"`)
		})
	}

	// Edges, from the config file their units name.
	var edges []*edge.Node
	for _, vm := range vms {
		if vm.Role != RoleEdge {
			continue
		}
		argv := execStart(t, filepath.Join(root, vm.Name)+UnitDir+"/meridian-edge.service")
		if len(argv) != 4 || argv[1] != "edge" || argv[2] != "--config" {
			t.Fatalf("%s: meridian-edge.service runs %q, want edge --config FILE", vm.Name, argv)
		}
		cfg, err := edge.LoadConfig(argv[3])
		if err != nil {
			t.Fatalf("%s: %v", vm.Name, err)
		}
		if os.Getenv("MERIDIAN_DEPLOY_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("vm", vm.Name)
		}
		n, err := edge.New(cfg)
		if err != nil {
			t.Fatalf("%s: edge.New = %v", vm.Name, err)
		}
		edges = append(edges, n)
		run(vm.Name+" edge", n.Run)
	}
	for i, n := range edges {
		select {
		case <-n.FleetReady():
		case <-time.After(40 * time.Second):
			t.Fatalf("edge %d did not join the fleet through its leaf node", i)
		}
	}

	// Every control sees every edge: registration went leaf -> cluster -> JetStream KV.
	wantPoPs := map[string][]string{}
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			wantPoPs[p.ID] = append(wantPoPs[p.ID], n.IPv4)
		}
	}
	for _, name := range controls {
		var got map[string][]string
		ok := waitForOK(40*time.Second, func() bool {
			got = popsOf(t, api(name))
			return reflect.DeepEqual(got, wantPoPs)
		})
		if !ok {
			t.Fatalf("%s GET /v1/pops = %v, want %v", name, got, wantPoPs)
		}
	}

	// DNS on every control VM answers with the nearest PoP's addresses.
	for _, name := range controls {
		startDNS(t, ctx, &wg, filepath.Join(root, name), bind[name])
	}
	cases := []struct{ city, pop string }{{"Frankfurt", "fra"}, {"Ashburn", "iad"}, {"Tokyo", "nrt"}}
	for _, name := range controls {
		addr := net.JoinHostPort(bind[name], strconv.Itoa(f.DNS.Port))
		for _, c := range cases {
			var got []string
			ok := waitForOK(20*time.Second, func() bool {
				got = resolveA(t, addr, "www."+f.DNS.Zone, c.city)
				return len(got) > 0 && subset(got, wantPoPs[c.pop])
			})
			if !ok {
				t.Errorf("%s: A www.%s from %s = %v, want addresses of %s %v", name, f.DNS.Zone, c.city, got, c.pop, wantPoPs[c.pop])
			}
		}
	}

	// The operator loads the rendered hosts into the config bucket, then purges at one control;
	// every edge in every PoP acks.
	for p, b := range files {
		if host, ok := strings.CutPrefix(p, "hosts/"); ok {
			host = strings.TrimSuffix(host, ".json")
			if code, body := call(t, "PUT", api(controls[0])+"/v1/hosts/"+host, b); code != 200 && code != 201 && code != 204 {
				t.Fatalf("PUT /v1/hosts/%s = %d %s", host, code, body)
			}
		}
	}
	var resp purge.Response
	var code int
	var body []byte
	ok := waitForOK(30*time.Second, func() bool {
		code, body = call(t, "POST", api(controls[1])+"/v1/purge?wait=5s", []byte(`{"host":"www.example.com","all":true}`))
		resp = purge.Response{}
		_ = json.Unmarshal(body, &resp)
		return code == 200 && resp.Complete
	})
	if !ok {
		t.Fatalf("POST /v1/purge?wait=5s at %s = %d %s, want 200 and complete", controls[1], code, body)
	}
	acked := map[string]int{}
	for _, rc := range resp.Purges {
		for _, pr := range rc.PoPs {
			acked[pr.PoP] += len(pr.Nodes)
		}
	}
	for pop, ips := range wantPoPs {
		if acked[pop] != len(ips) {
			t.Errorf("purge receipt: PoP %s acked by %d nodes, want %d (receipt %s)", pop, acked[pop], len(ips), body)
		}
	}
}

func startNATS(t *testing.T, conf string) *server.Server {
	t.Helper()
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats config %s: %v", conf, err)
	}
	opts.NoSigs, opts.NoLog = true, os.Getenv("MERIDIAN_DEPLOY_LOG") == ""
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server from %s: %v", conf, err)
	}
	if !opts.NoLog {
		ns.ConfigureLogger()
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(20 * time.Second) {
		t.Fatalf("nats server from %s did not start", conf)
	}
	return ns
}

// startDNS runs `meridian dns` as the VM's unit does; it follows the fleet in NATS KV through
// the URL its rendered dns.yaml names.
func startDNS(t *testing.T, ctx context.Context, wg *sync.WaitGroup, vmRoot, bindIP string) {
	t.Helper()
	path := vmRoot + EtcDir + "/dns.yaml"
	argv := execStart(t, vmRoot+UnitDir+"/meridian-dns.service")
	if len(argv) != 4 || argv[1] != "dns" || argv[2] != "--config" || argv[3] != path {
		t.Fatalf("meridian-dns.service runs %q, want dns --config %s", argv, path)
	}
	cmd := dnsroute.NewCommand()
	cmd.SetArgs(argv[2:])
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	wg.Go(func() {
		if err := cmd.ExecuteContext(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("dns on %s: %v", bindIP, err)
		}
	})
}

// resolveA asks server for name's A records as a resolver serving a client in city (ECS).
func resolveA(t *testing.T, server, name, city string) []string {
	t.Helper()
	c, ok := geodata.Lookup(city)
	if !ok {
		t.Fatalf("no test city %s", city)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(1232)
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
		SourceNetmask: 24, Address: net.IP(c.V4.Addr().AsSlice())})
	m.Extra = append(m.Extra, o)
	cl := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := cl.Exchange(m, server)
	if err != nil {
		return nil // not listening yet
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func subset(got, want []string) bool {
	for _, g := range got {
		found := false
		for _, w := range want {
			found = found || g == w
		}
		if !found {
			return false
		}
	}
	return true
}

// popsOf reads GET /v1/pops: PoP id -> its nodes' IPv4 addresses.
func popsOf(t *testing.T, api string) map[string][]string {
	code, body := call(t, "GET", api+"/v1/pops", nil)
	if code != 200 {
		return nil
	}
	var fl struct {
		PoPs []struct {
			ID    string `json:"id"`
			Nodes []struct {
				IPv4 string `json:"ipv4"`
			} `json:"nodes"`
		} `json:"pops"`
	}
	if err := json.Unmarshal(body, &fl); err != nil {
		t.Logf("GET /v1/pops: %v in %s", err, body)
		return nil
	}
	out := map[string][]string{}
	for _, p := range fl.PoPs {
		for _, n := range p.Nodes {
			out[p.ID] = append(out[p.ID], n.IPv4)
		}
		sort.Strings(out[p.ID])
	}
	return out
}

func call(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	pool := x509.NewCertPool()
	if tlsCA != nil && !pool.AppendCertsFromPEM(tlsCA) {
		t.Fatal("test CA does not parse")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func waitForOK(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitForOK(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

func putFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

var (
	tlsOnce sync.Once
	tlsCA   []byte
	tlsCert []byte
	tlsKey  []byte
	tlsErr  error
)

// writeTLS writes a test CA and one certificate (for every fleet address, client and server
// use) where the rendered NATS configs expect them.
func writeTLS(t *testing.T, vmRoot string, files TLSFiles, ips []string) {
	t.Helper()
	if !files.enabled() {
		return
	}
	tlsOnce.Do(func() { tlsCA, tlsCert, tlsKey, tlsErr = makeCerts(ips) })
	if tlsErr != nil {
		t.Fatal(tlsErr)
	}
	putFile(t, vmRoot+files.CAFile, string(tlsCA))
	putFile(t, vmRoot+files.CertFile, string(tlsCert))
	putFile(t, vmRoot+files.KeyFile, string(tlsKey))
}

func makeCerts(ips []string) (ca, cert, key []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meridian test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "meridian nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(netip.MustParseAddr(ip).AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &k.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}
