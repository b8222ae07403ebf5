package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"

	"github.com/meridian-cdn/meridian/wire"
)

// Scopes a token may hold. Each route needs exactly one.
const (
	ScopeRead   = "read"   // read the fleet and the config
	ScopePurge  = "purge"  // purge cached content
	ScopeConfig = "config" // change host configs, the routing policy, drains
)

var knownScopes = []string{ScopeRead, ScopePurge, ScopeConfig}

// Token is one API bearer token as written in the tokens file. Exactly one of Token (the
// secret itself) and TokenSHA256 (the hex SHA-256 of the secret, so that the file need not hold
// it) is set.
type Token struct {
	Name        string   `json:"name" yaml:"name"`
	Token       string   `json:"token,omitempty" yaml:"token,omitempty"`
	TokenSHA256 string   `json:"token_sha256,omitempty" yaml:"token_sha256,omitempty"`
	Scopes      []string `json:"scopes" yaml:"scopes"`
	// Hosts, if set, limits the token to these hostnames: it may purge, read and configure
	// only them, and fleet-wide routes (PoPs, drains, routing, metrics) refuse it. Each entry
	// is a lower-case hostname or a path.Match pattern over the whole name: "*" matches any
	// run of characters, dots included, so "*.example.com" matches "a.example.com" and
	// "a.b.example.com" but not "example.com"; "?" matches one character, "[a-c]" a class.
	// Absent means every host.
	Hosts []string `json:"hosts,omitempty" yaml:"hosts,omitempty"`
}

// minTokenLen keeps guessable secrets out of the tokens file.
const minTokenLen = 16

// ParseTokens parses a tokens file: a YAML (or JSON) list of tokens. It refuses unknown fields,
// duplicate names or secrets, unknown scopes and short secrets, naming the entry.
func ParseTokens(data []byte) ([]Token, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var toks []Token
	if err := dec.Decode(&toks); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse tokens: %w", err)
	}
	names := map[string]bool{}
	hashes := map[[32]byte]bool{}
	for i, t := range toks {
		where := fmt.Sprintf("token %d", i)
		if t.Name != "" {
			where = fmt.Sprintf("token %q", t.Name)
		}
		if t.Name == "" {
			return nil, fmt.Errorf("parse tokens: %s: name is required", where)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("parse tokens: %s: duplicate name", where)
		}
		names[t.Name] = true
		h, err := t.hash()
		if err != nil {
			return nil, fmt.Errorf("parse tokens: %s: %w", where, err)
		}
		if hashes[h] {
			return nil, fmt.Errorf("parse tokens: %s: same secret as another token", where)
		}
		hashes[h] = true
		if len(t.Scopes) == 0 {
			return nil, fmt.Errorf("parse tokens: %s: scopes are required", where)
		}
		for _, s := range t.Scopes {
			if !slices.Contains(knownScopes, s) {
				return nil, fmt.Errorf("parse tokens: %s: unknown scope %q (want %s)", where, s, strings.Join(knownScopes, ", "))
			}
		}
		if err := checkHostPatterns(t.Hosts); err != nil {
			return nil, fmt.Errorf("parse tokens: %s: %w", where, err)
		}
	}
	return toks, nil
}

// checkHostPatterns validates a token's hosts list: not empty if present (an empty list would
// read as "every host"), each entry a lower-case hostname or a valid path.Match pattern made of
// hostname characters.
func checkHostPatterns(hosts []string) error {
	if hosts != nil && len(hosts) == 0 {
		return errors.New("hosts is empty: omit it to allow every host")
	}
	for i, h := range hosts {
		if _, err := path.Match(h, ""); err != nil || h == "" {
			return fmt.Errorf("hosts[%d]: %q is not a valid pattern", i, h)
		}
		// With the wildcards replaced by a letter, what remains must be a hostname.
		plain := strings.NewReplacer("*", "x", "?", "x").Replace(h)
		for strings.Contains(plain, "[") {
			open, end := strings.IndexByte(plain, '['), strings.IndexByte(plain, ']')
			if end < open {
				break
			}
			plain = plain[:open] + "x" + plain[end+1:]
		}
		if err := wire.ValidateHostname(plain); err != nil {
			return fmt.Errorf("hosts[%d]: %q is not a hostname pattern: %w", i, h, err)
		}
	}
	return nil
}

// TokenFileModeMask are the permission bits a tokens file must not have: it holds secrets (or
// their hashes), so only its owner may read it.
const TokenFileModeMask = 0o077

// loadTokensFile refuses a tokens file that group or others may access (on systems with Unix
// permissions), then loads it.
func loadTokensFile(file string) ([]Token, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("read tokens file: %w", err)
	}
	if m := st.Mode().Perm(); runtime.GOOS != "windows" && m&TokenFileModeMask != 0 {
		return nil, fmt.Errorf("tokens file %s is accessible to group or others (mode %04o): it holds secrets; run chmod 600 %s", file, m, file)
	}
	return LoadTokens(file)
}

// LoadTokens reads and parses a tokens file.
func LoadTokens(path string) ([]Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read tokens file: %w", err)
	}
	toks, err := ParseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return toks, nil
}

func (t Token) hash() ([32]byte, error) {
	var h [32]byte
	switch {
	case t.Token != "" && t.TokenSHA256 != "":
		return h, errors.New("set token or token_sha256, not both")
	case t.Token != "":
		if len(t.Token) < minTokenLen {
			return h, fmt.Errorf("token is shorter than %d characters", minTokenLen)
		}
		return sha256.Sum256([]byte(t.Token)), nil
	case t.TokenSHA256 != "":
		b, err := hex.DecodeString(t.TokenSHA256)
		if err != nil || len(b) != len(h) {
			return h, errors.New("token_sha256 is not 64 hex digits")
		}
		copy(h[:], b)
		return h, nil
	}
	return h, errors.New("token or token_sha256 is required")
}

// authToken is a token as kept in memory: its hash only.
type authToken struct {
	name   string
	hash   [32]byte
	scopes []string
	hosts  []string // nil: every host
}

// allowsHost reports whether the token may act on host.
func (t *authToken) allowsHost(host string) bool {
	if t.hosts == nil {
		return true
	}
	for _, p := range t.hosts {
		if ok, _ := path.Match(p, host); ok {
			return true
		}
	}
	return false
}

type tokenKey struct{}

func withToken(ctx context.Context, t *authToken) context.Context {
	return context.WithValue(ctx, tokenKey{}, t)
}

// HostAllowed reports whether the token that authorised the request may act on host: true for
// tokens without a hosts list, and on public routes. Handlers added with Handle are fleet-wide
// (host-scoped tokens never reach them), so they need it only to serve a subset of hosts.
func HostAllowed(ctx context.Context, host string) bool {
	t, _ := ctx.Value(tokenKey{}).(*authToken)
	return t == nil || t.allowsHost(host)
}

// errHostScope is the 403 for a host outside the token's hosts.
func errHostScope(ctx context.Context, host string) error {
	return fmt.Errorf("token %q may not act on host %s (outside its hosts)", tokenName(ctx), host)
}

type authenticator struct{ tokens []authToken }

func newAuthenticator(toks []Token) (*authenticator, error) {
	a := &authenticator{}
	for _, t := range toks {
		h, err := t.hash()
		if err != nil {
			return nil, fmt.Errorf("token %q: %w", t.Name, err)
		}
		var hosts []string
		if t.Hosts != nil {
			if err := checkHostPatterns(t.Hosts); err != nil {
				return nil, fmt.Errorf("token %q: %w", t.Name, err)
			}
			hosts = slices.Clone(t.Hosts)
		}
		a.tokens = append(a.tokens, authToken{name: t.Name, hash: h, scopes: t.Scopes, hosts: hosts})
	}
	return a, nil
}

// check finds the token the request carries. It compares hashes in constant time against every
// token, so the time taken says nothing about which one (or how much of one) matched.
func (a *authenticator) check(r *http.Request) (*authToken, bool) {
	secret, ok := bearer(r)
	if !ok {
		return nil, false
	}
	sum := sha256.Sum256([]byte(secret))
	var found *authToken
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].hash[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	return found, found != nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// Defaults of the failed-authentication throttle.
const (
	// DefaultAuthFailureBurst is how many failed authentications a client may make at once
	// before it is throttled.
	DefaultAuthFailureBurst = 60
	// DefaultAuthFailureRate is how many failed authentications per second a throttled client
	// earns back.
	DefaultAuthFailureRate = 1
	// maxAuthFailureClients bounds the clients the throttle remembers.
	maxAuthFailureClients = 10000
)

// authThrottle throttles clients that keep failing authentication: each 401 takes a token from
// the client's bucket, and a client with an empty bucket gets 429 with Retry-After before its
// token is even checked (so that guessing on cannot tell a right guess from a wrong one).
// Clients are keyed by IP address, IPv6 by /64. Only failing clients are remembered, at most
// maxAuthFailureClients: when full, clients whose buckets refilled are forgotten first, then
// arbitrary ones.
type authThrottle struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex                     // guards clients
	clients map[netip.Prefix]*rate.Limiter // by client address
}

// newAuthThrottle returns a throttle; perSec < 0 disables it.
func newAuthThrottle(perSec float64, burst int) *authThrottle {
	if perSec < 0 {
		return nil
	}
	return &authThrottle{limit: rate.Limit(perSec), burst: burst, max: maxAuthFailureClients, clients: map[netip.Prefix]*rate.Limiter{}}
}

// clientKey is the throttle's key for a request: its peer's address (not a forwarded header,
// which a client could vary at will), IPv6 by /64.
func clientKey(r *http.Request) netip.Prefix {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// retryAfter is how long client must wait before its next authentication attempt counts; zero
// when it may try now.
func (a *authThrottle) retryAfter(client netip.Prefix, now time.Time) time.Duration {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	l := a.clients[client]
	a.mu.Unlock()
	if l == nil {
		return 0
	}
	tokens := l.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(a.limit) * float64(time.Second))
}

// fail records a failed authentication by client.
func (a *authThrottle) fail(client netip.Prefix, now time.Time) {
	if a == nil {
		return
	}
	a.mu.Lock()
	l := a.clients[client]
	if l == nil {
		if len(a.clients) >= a.max {
			a.pruneLocked(now)
		}
		l = rate.NewLimiter(a.limit, a.burst)
		a.clients[client] = l
	}
	a.mu.Unlock()
	l.AllowN(now, 1)
}

// pruneLocked forgets clients whose buckets are full again, then, if that is not enough,
// arbitrary clients, down to 7/8 of max.
func (a *authThrottle) pruneLocked(now time.Time) {
	for k, l := range a.clients {
		if l.TokensAt(now) >= float64(a.burst) {
			delete(a.clients, k)
		}
	}
	for k := range a.clients {
		if len(a.clients) < a.max*7/8 {
			break
		}
		delete(a.clients, k)
	}
}

// refuse writes the 429 for a throttled client.
func (a *authThrottle) refuse(w http.ResponseWriter, wait time.Duration) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	WriteError(w, http.StatusTooManyRequests, "", fmt.Errorf("too many failed authentications from this address: retry in %ds", secs))
}
