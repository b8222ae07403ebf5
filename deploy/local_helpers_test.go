package deploy

// Helpers of TestRenderedFleetRunsLocally: the rendered files on disk, the servers started
// from them, and the clients that check them.

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
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
)

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
