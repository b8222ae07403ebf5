package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// TLSConfig configures HTTPS (HTTP/1.1 and HTTP/2 over TCP) and HTTP/3 (QUIC over UDP), both
// on HTTPSListen's port.
type TLSConfig struct {
	// Certs are certificate and key files (PEM). Each certificate serves the names in its
	// subject alternative names (wildcards included); a client's SNI picks one.
	Certs []CertFiles `yaml:"certs"`
	// Dev makes a self-signed certificate for every configured host, localhost and the
	// loopback addresses, for local use and the simulator. Never for production.
	Dev bool `yaml:"dev"`
	// UnknownSNI says what a client gets whose SNI (or lack of one) matches no certificate:
	// "default" (the first certificate; the default) or "reject" (the handshake fails).
	UnknownSNI string `yaml:"unknown_sni"`
	// ReloadInterval is how often certificate files are checked for changes. Default 5s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// DisableHTTP3 turns HTTP/3 off. Default: HTTP/3 is on whenever HTTPS is.
	DisableHTTP3 bool `yaml:"disable_http3"`
	// Allow0RTT accepts HTTP/3 0-RTT early data; requests with unsafe methods in early data
	// still get 425 Too Early (RFC 8470). Default off.
	Allow0RTT bool `yaml:"allow_0rtt"`
}

// CertFiles is one certificate and its key.
type CertFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// certStore holds the loaded certificates and picks one per handshake.
type certStore struct {
	reject bool
	log    *slog.Logger

	mu     sync.RWMutex // protects byName, first, loaded
	byName map[string]*tls.Certificate
	first  *tls.Certificate
	loaded []loadedCert
}

type loadedCert struct {
	files   CertFiles
	cert    *tls.Certificate
	modTime time.Time
	size    int64
}

func newCertStore(cfg TLSConfig, hosts []string, log *slog.Logger) (*certStore, error) {
	switch cfg.UnknownSNI {
	case "", "default", "reject":
	default:
		return nil, fmt.Errorf("tls.unknown_sni: %q is not default or reject", cfg.UnknownSNI)
	}
	cs := &certStore{reject: cfg.UnknownSNI == "reject", log: log}
	var loaded []loadedCert
	for i, f := range cfg.Certs {
		lc, err := loadCert(f)
		if err != nil {
			return nil, fmt.Errorf("tls.certs[%d]: %w", i, err)
		}
		loaded = append(loaded, lc)
	}
	if cfg.Dev {
		c, err := selfSigned(hosts)
		if err != nil {
			return nil, fmt.Errorf("make dev certificate: %w", err)
		}
		loaded = append(loaded, loadedCert{cert: c})
	}
	if len(loaded) == 0 {
		return nil, errors.New("tls: https_listen needs tls.certs or tls.dev")
	}
	cs.install(loaded)
	return cs, nil
}

func loadCert(f CertFiles) (loadedCert, error) {
	st, err := os.Stat(f.Cert)
	if err != nil {
		return loadedCert{}, fmt.Errorf("stat certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return loadedCert{}, fmt.Errorf("load certificate %s: %w", f.Cert, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return loadedCert{}, fmt.Errorf("parse certificate %s: %w", f.Cert, err)
		}
	}
	return loadedCert{files: f, cert: &c, modTime: st.ModTime(), size: st.Size()}, nil
}

func (cs *certStore) install(loaded []loadedCert) {
	byName := map[string]*tls.Certificate{}
	for _, lc := range loaded {
		for _, name := range lc.cert.Leaf.DNSNames {
			name = strings.ToLower(name)
			if _, dup := byName[name]; !dup {
				byName[name] = lc.cert
			}
		}
	}
	cs.mu.Lock()
	cs.byName, cs.first, cs.loaded = byName, loaded[0].cert, loaded
	cs.mu.Unlock()
}

// getCertificate picks the certificate for the client's SNI: an exact name, then a wildcard
// one level up; otherwise the default certificate, or a failed handshake if so configured.
func (cs *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	if c := cs.byName[name]; c != nil && name != "" {
		return c, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c := cs.byName["*"+name[i:]]; c != nil {
			return c, nil
		}
	}
	if cs.reject {
		return nil, fmt.Errorf("no certificate for server name %q", hello.ServerName)
	}
	return cs.first, nil
}

// reload re-reads certificate files whose size or modification time changed. A file that fails
// to load keeps its old certificate.
func (cs *certStore) reload() {
	cs.mu.RLock()
	current := append([]loadedCert(nil), cs.loaded...)
	cs.mu.RUnlock()
	changed := false
	for i, lc := range current {
		if lc.files.Cert == "" {
			continue // the dev certificate
		}
		st, err := os.Stat(lc.files.Cert)
		if err != nil || (st.ModTime().Equal(lc.modTime) && st.Size() == lc.size) {
			continue
		}
		next, err := loadCert(lc.files)
		if err != nil {
			cs.log.Error("certificate reload failed; keeping the old one", "cert", lc.files.Cert, "err", err)
			continue
		}
		current[i], changed = next, true
		cs.log.Info("certificate reloaded", "cert", lc.files.Cert, "names", next.cert.Leaf.DNSNames)
	}
	if changed {
		cs.install(current)
	}
}

// watch reloads changed certificates every interval until ctx ends.
func (cs *certStore) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cs.reload()
		}
	}
}

// tlsConfig is the server TLS configuration: TLS 1.2 and later with Go's modern defaults
// (forward-secret AEAD suites only, X25519 first), HTTP/2 preferred.
func (cs *certStore) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cs.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// selfSigned makes an ECDSA certificate valid for a year for hosts, localhost and loopback.
func selfSigned(hosts []string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Meridian dev"}, CommonName: "meridian dev certificate"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              append([]string{"localhost"}, hosts...),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
