package control

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/meridian-cdn/meridian/wire"
)

// certReloader serves the API's certificate and reloads it when its files change: every
// handshake stats the certificate and key files, and a change in either one's size,
// modification time or identity (a rename or symlink swap) loads the pair again. A pair that
// fails to load (say, the certificate was replaced but not yet its key) keeps the old one
// serving and is retried at the next handshake.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu   sync.Mutex // guards cert and seen
	cert *tls.Certificate
	seen [2]os.FileInfo // of certFile and keyFile when cert was loaded
}

// newCertReloader loads the pair once, so that a bad pair is refused at start.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	seen, err := c.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load api certificate %s: %w", certFile, err)
	}
	c.cert, c.seen = &cert, seen
	return c, nil
}

func (c *certReloader) stat() ([2]os.FileInfo, error) {
	var out [2]os.FileInfo
	for i, f := range []string{c.certFile, c.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return out, fmt.Errorf("stat api certificate: %w", err)
		}
		out[i] = st
	}
	return out, nil
}

func sameFile(a, b os.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
}

// getCertificate is the tls.Config hook: the current pair, reloaded first if its files changed.
func (c *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen, err := c.stat()
	if err != nil || (sameFile(seen[0], c.seen[0]) && sameFile(seen[1], c.seen[1])) {
		return c.cert, nil // a file missing for a moment (mid-swap) keeps the old pair
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Warn("api certificate reload failed; keeping the old one", "cert", c.certFile, "err", err)
		return c.cert, nil
	}
	c.cert, c.seen = &cert, seen
	c.log.Info("api certificate reloaded", "cert", c.certFile)
	return c.cert, nil
}

// tlsConfig is the API's server TLS configuration: TLS 1.2 and later with Go's default suites.
func (c *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.getCertificate}
}

// setupTLS validates the TLS settings of cfg and the API address against them, and loads the
// certificate if one is given (nil otherwise).
func setupTLS(cfg Config, log *slog.Logger) (*certReloader, error) {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("tls: give both --tls-cert and --tls-key, or neither")
	}
	if err := CheckPlaintextListen(cfg.Listen, cfg.TLSCert != "", cfg.InsecureHTTP); err != nil {
		return nil, err
	}
	if cfg.TLSCert == "" {
		return nil, nil
	}
	return newCertReloader(cfg.TLSCert, cfg.TLSKey, log)
}

// CheckPlaintextListen refuses to serve the API (and its bearer tokens) in clear text on an
// address other hosts can reach: without TLS, listen must be a loopback address (127.0.0.0/8,
// ::1 or localhost) unless insecure is set. An empty host (":7070") listens on every address.
func CheckPlaintextListen(listen string, tls, insecure bool) error {
	if tls || insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("api listen address %q: %w", listen, err)
	}
	if wire.LoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("refusing to serve the API in plain HTTP on %s, which is not a loopback address: give --tls-cert and --tls-key, or --insecure-http if a TLS proxy in front terminates it", listen)
}

// apiListener checks ln's address like CheckPlaintextListen (Serve may be handed any listener)
// and wraps it in TLS when a certificate is configured.
func (s *Server) apiListener(ln net.Listener) (net.Listener, error) {
	if s.certs != nil {
		return tls.NewListener(ln, s.certs.tlsConfig()), nil
	}
	addr := ln.Addr().String()
	if err := CheckPlaintextListen(addr, false, s.cfg.InsecureHTTP); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	// Behind the proxy --insecure-http is for, every client has the proxy's address unless the
	// proxy is trusted to name them: one client failing authentication would throttle them all.
	if host, _, err := net.SplitHostPort(addr); err == nil && !wire.LoopbackHost(host) && len(s.trusted) == 0 {
		s.log.Warn("plain HTTP API for a proxy in front (--insecure-http) without --trusted-proxies: every client has the proxy's address, so one that keeps failing authentication gets 429s for all; give the proxy's address in --trusted-proxies",
			"listen", addr)
	}
	return ln, nil
}
