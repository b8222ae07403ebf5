package control

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000),
		Subject:               pkix.Name{CommonName: "meridian test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a server certificate for 127.0.0.1 and localhost with serial, as PEM.
func (ca *testCA) issue(t testing.TB, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "meridian control"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// replaceFile swaps data in at path the way certificate tools do: write aside, then rename.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPlaintextListen(t *testing.T) {
	tests := []struct {
		listen         string
		tls, insecure  bool
		wantRefused    bool
		wantBadAddress bool
	}{
		{listen: "127.0.0.1:7070"},
		{listen: "127.1.2.3:0"},
		{listen: "[::1]:7070"},
		{listen: "localhost:7070"},
		{listen: "0.0.0.0:7070", wantRefused: true},
		{listen: ":7070", wantRefused: true},
		{listen: "[::]:7070", wantRefused: true},
		{listen: "10.1.2.3:7070", wantRefused: true},
		{listen: "203.0.113.7:7070", wantRefused: true},
		{listen: "control.example.net:7070", wantRefused: true},
		{listen: "0.0.0.0:7070", tls: true},
		{listen: "10.1.2.3:7070", insecure: true},
		{listen: "nohostport", wantBadAddress: true},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			err := CheckPlaintextListen(tt.listen, tt.tls, tt.insecure)
			switch {
			case tt.wantBadAddress:
				if err == nil {
					t.Errorf("CheckPlaintextListen(%q) = nil, want an address error", tt.listen)
				}
			case tt.wantRefused:
				if err == nil || !strings.Contains(err.Error(), "--tls-cert") || !strings.Contains(err.Error(), "--insecure-http") {
					t.Errorf("CheckPlaintextListen(%q, tls %v, insecure %v) = %v, want a refusal naming --tls-cert and --insecure-http",
						tt.listen, tt.tls, tt.insecure, err)
				}
			case err != nil:
				t.Errorf("CheckPlaintextListen(%q, tls %v, insecure %v) = %v, want nil", tt.listen, tt.tls, tt.insecure, err)
			}
		})
	}
}

// TestNewRefusesPlaintextNonLoopback: New validates Listen without listening on it.
func TestNewRefusesPlaintextNonLoopback(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	c, k := ca.issue(t, 1)
	replaceFile(t, certFile, c)
	replaceFile(t, keyFile, k)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"plain on every address", Config{Listen: "0.0.0.0:7070"}, "not a loopback address"},
		{"plain on a private address", Config{Listen: "10.1.2.3:7070"}, "not a loopback address"},
		{"plain on loopback", Config{Listen: "127.0.0.1:7070"}, ""},
		{"insecure-http", Config{Listen: "10.1.2.3:7070", InsecureHTTP: true}, ""},
		{"tls", Config{Listen: "0.0.0.0:7070", TLSCert: certFile, TLSKey: keyFile}, ""},
		{"cert without key", Config{Listen: "0.0.0.0:7070", TLSCert: certFile}, "both --tls-cert and --tls-key"},
		{"missing cert", Config{TLSCert: filepath.Join(dir, "nope.crt"), TLSKey: keyFile}, "stat api certificate"},
		{"mismatched pair", Config{TLSCert: certFile, TLSKey: certFile}, "load api certificate"},
		{"embedded nats on every address", Config{NATSListen: "0.0.0.0:4222"}, "embedded NATS server in plain text"},
		{"embedded nats on a private address", Config{NATSListen: "10.1.2.3:4222"}, "embedded NATS server in plain text"},
		{"insecure-nats", Config{NATSListen: "10.1.2.3:4222", InsecureNATS: true}, ""},
		{"external nats", Config{NATSURL: "tls://nats.example.net:4222", NATSListen: "0.0.0.0:4222"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.TokensFile = "testdata/tokens.yaml"
			_, err := New(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("New = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestServeRefusesPlaintextListener: Serve checks the listener it is handed too. The listener
// is on loopback (no traffic leaves 127.0.0.0/8); the check is on the address it reports.
func TestServeRefusesPlaintextListener(t *testing.T) {
	s, err := New(Config{TokensFile: "testdata/tokens.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(t.Context(), fakeAddrListener{ln, &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 7070}})
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Serve on a listener at 10.1.2.3 = %v, want a refusal", err)
	}
}

type fakeAddrListener struct {
	net.Listener
	addr net.Addr
}

func (l fakeAddrListener) Addr() net.Addr { return l.addr }

// TestAPIOverTLSReloads: the API is served over TLS, and swapping the certificate files makes
// the next handshake present the new certificate; a half-swapped pair keeps the old one.
func TestAPIOverTLSReloads(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	pairs := map[int64][2][]byte{}
	for _, serial := range []int64{1, 2, 3} {
		c, k := ca.issue(t, serial)
		pairs[serial] = [2][]byte{c, k}
	}
	replaceFile(t, certFile, pairs[1][0])
	replaceFile(t, keyFile, pairs[1][1])
	ts := startServer(t, Config{TLSCert: certFile, TLSKey: keyFile})
	url := strings.Replace(ts.base, "http://", "https://", 1) + "/v1/pops"

	// served returns the serial of the certificate a new connection sees.
	served := func(t *testing.T) int64 {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ca.pool},
			DisableKeepAlives: true,
		}}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tokReader)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.TLS == nil {
			t.Fatalf("GET %s = %d (tls %v), want 200 over TLS", url, resp.StatusCode, resp.TLS != nil)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := served(t); got != 1 {
		t.Fatalf("certificate serial = %d, want 1", got)
	}

	// Plain HTTP on the TLS port gets no API answer.
	if code, b := ts.do(t, "GET", "/v1/pops", tokReader, nil); code == http.StatusOK {
		t.Errorf("plain HTTP GET /v1/pops on the TLS port = %d %s, want a refusal", code, b)
	}

	steps := []struct {
		name       string
		cert, key  int64 // pair whose file to swap in; 0 leaves the file
		wantSerial int64
	}{
		{"both files swapped", 2, 2, 2},
		{"certificate swapped, key not yet", 3, 0, 2},
		{"key follows", 0, 3, 3},
	}
	for _, st := range steps {
		if st.cert != 0 {
			replaceFile(t, certFile, pairs[st.cert][0])
		}
		if st.key != 0 {
			replaceFile(t, keyFile, pairs[st.key][1])
		}
		if got := served(t); got != st.wantSerial {
			t.Errorf("%s: certificate serial = %d, want %d", st.name, got, st.wantSerial)
		}
	}
}

// addrListener is a listener that reports another address than the one it listens on: the
// address checks of apiListener, without binding a non-loopback address in a test.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// TestInsecureHTTPWithoutTrustedProxiesWarns: plain HTTP on an address other hosts reach
// (--insecure-http, for a TLS proxy in front) without --trusted-proxies logs a warning naming
// the flag, since every client then shares the proxy's address in the failed-authentication
// throttle. With a trusted proxy, or on loopback, nothing is logged.
func TestInsecureHTTPWithoutTrustedProxiesWarns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name    string
		addr    string
		trusted []string
		want    int
	}{
		{"every address, no trusted proxy", "0.0.0.0:7070", nil, 1},
		{"a private address, no trusted proxy", "10.0.0.5:7070", nil, 1},
		{"every address, a trusted proxy", "0.0.0.0:7070", []string{"10.0.0.1"}, 0},
		{"loopback", "127.0.0.1:7070", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logtest.Warnings{}
			s, err := New(Config{TokensFile: "testdata/tokens.yaml", Listen: tt.addr, InsecureHTTP: true,
				TrustedProxies: tt.trusted, Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.apiListener(addrListener{ln, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.addr))}); err != nil {
				t.Fatal(err)
			}
			if got := logs.Count("--trusted-proxies"); got != tt.want {
				t.Errorf("warnings naming --trusted-proxies on %s with trusted %q = %d, want %d", tt.addr, tt.trusted, got, tt.want)
			}
		})
	}
}
