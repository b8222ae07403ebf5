package control

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
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

	"golang.org/x/time/rate"

	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/internal/yamlconf"
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

// ParseTokens is ParseTokensFile without a file name: positions read "line L:C".
func ParseTokens(data []byte) ([]Token, error) { return ParseTokensFile("", data) }

// ParseTokensFile parses a tokens file read from file: a YAML (or JSON) list of tokens. Every
// problem is reported at once, so that an operator fixes the file in one round: unknown
// fields, values of the wrong type, a missing or duplicate name, a missing, short or
// duplicate secret, missing or unknown scopes, bad host patterns. The error is a
// wire.FieldErrors (errors.As reaches each *wire.FieldError), each naming its field
// ("[1].scopes[0]") at file:line:column. No error quotes a secret.
func ParseTokensFile(file string, data []byte) ([]Token, error) {
	var toks []Token
	doc, probs := yamlconf.Decode(data, &toks)
	nullHosts(data, toks)
	errs := wire.DocumentErrors(file, probs, doc.Position, func() wire.FieldErrors { return tokenProblems(toks) })
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return toks, nil
}

// nullHosts makes a "hosts" key without a value ("hosts:", "hosts: ~", "hosts: null"), which
// decodes to a nil list, the empty list it stands for: nil would read as every host, so the
// token meant for a few hosts would reach all of them. tokenProblems then refuses it as it
// refuses "hosts: []".
func nullHosts(data []byte, toks []Token) {
	var raw []map[string]any
	if _, probs := yamlconf.Decode(data, &raw); len(probs) > 0 || len(raw) != len(toks) {
		return // the document did not decode as a list of maps: its problems are reported
	}
	for i, m := range raw {
		if v, ok := m["hosts"]; ok && v == nil && toks[i].Hosts == nil {
			toks[i].Hosts = []string{}
		}
	}
}

// tokenProblems are the rules every token list obeys, from a file or from Config.Tokens, with
// fields named "[i].scopes[k]": a name, unique; exactly one secret, long enough, unique; known
// scopes; valid host patterns.
func tokenProblems(toks []Token) wire.FieldErrors {
	var errs wire.FieldErrors
	names := map[string]int{}
	hashes := map[[32]byte]int{}
	for i, t := range toks {
		at := fmt.Sprintf("[%d].", i)
		switch j, dup := names[t.Name]; {
		case t.Name == "":
			errs.Add(at+"name", "is required")
		case dup:
			errs.Add(at+"name", "%q is also the name of token %d", t.Name, j)
		default:
			names[t.Name] = i
		}
		if field, h, err := t.hashField(); err != nil {
			errs = append(errs, &wire.FieldError{Field: at + field, Err: err})
		} else if j, dup := hashes[h]; dup {
			errs.Add(at+field, "same secret as token %d", j)
		} else {
			hashes[h] = i
		}
		if len(t.Scopes) == 0 {
			errs.Add(at+"scopes", "is required")
		}
		for k, s := range t.Scopes {
			if !slices.Contains(knownScopes, s) {
				errs.Add(fmt.Sprintf("%sscopes[%d]", at, k), "unknown scope %q (want %s)", s, strings.Join(knownScopes, ", "))
			}
		}
		for _, e := range hostPatternProblems(t.Hosts) {
			e.Field = at + e.Field
			errs = append(errs, e)
		}
	}
	return errs
}

// hostPatternProblems validates a token's hosts list: not empty if present (an empty list
// would read as "every host"), each entry a lower-case hostname or a valid path.Match pattern
// made of hostname characters. Fields are "hosts" and "hosts[i]".
func hostPatternProblems(hosts []string) wire.FieldErrors {
	var errs wire.FieldErrors
	if hosts != nil && len(hosts) == 0 {
		errs.Add("hosts", "is empty: omit it to allow every host")
	}
	for i, written := range hosts {
		field := fmt.Sprintf("hosts[%d]", i)
		h, err := hostPattern(written)
		if err != nil {
			errs.Add(field, "%w", err)
			continue
		}
		// Problems are named as written: the ASCII form the checks see is not in the file.
		if _, err := path.Match(h, ""); err != nil || h == "" {
			errs.Add(field, "%q is not a valid pattern", written)
			continue
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
			errs.Add(field, "%q is not a hostname pattern: %w", written, err)
		}
	}
	return errs
}

// labelDots replaces the full stops UTS #46 maps to "." (ideographic, fullwidth, halfwidth
// ideographic): they separate labels in a host name, so they do in a pattern, and "*。example"
// is "*.example" rather than one label holding a wildcard and a non-ASCII character.
var labelDots = strings.NewReplacer("\u3002", ".", "\uff0e", ".", "\uff61", ".")

// hostPattern returns a token's host pattern with its Unicode labels converted to A-labels
// (idnhost.ToASCII), the form in which every host a token acts on is named by then (pathHost,
// purge.Hostname): "*.bücher.example" -> "*.xn--bcher-kva.example". Labels are converted one
// by one, as a wildcard label is no name IDNA takes. An ASCII label is kept as written, upper
// case and all, for hostPatternProblems to judge as before. A label holding both a wildcard
// and non-ASCII characters has no A-label to convert to: refused.
func hostPattern(p string) (string, error) {
	labels := strings.Split(labelDots.Replace(p), ".")
	for i, l := range labels {
		if !strings.ContainsFunc(l, func(r rune) bool { return r >= 0x80 }) {
			continue
		}
		if strings.ContainsAny(l, `*?[]\`) {
			return "", fmt.Errorf("%q has a wildcard in a label that is not ASCII: write that label in its xn-- form", p)
		}
		a, err := idnhost.ToASCII(l)
		if err != nil {
			return "", fmt.Errorf("host pattern %q: %w", p, err)
		}
		labels[i] = a
	}
	return strings.Join(labels, "."), nil
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
	return ParseTokensFile(path, b)
}

// hashField returns the SHA-256 of the token's secret and the field it came from ("token" or
// "token_sha256"), or the field at fault and why.
func (t Token) hashField() (string, [32]byte, error) {
	var h [32]byte
	switch {
	case t.Token != "" && t.TokenSHA256 != "":
		return "token_sha256", h, errors.New("set token or token_sha256, not both")
	case t.Token != "":
		if len(t.Token) < minTokenLen {
			return "token", h, fmt.Errorf("is shorter than %d characters", minTokenLen)
		}
		if strings.TrimSpace(t.Token) != t.Token {
			// A bearer token is read without the white space around it: no request could
			// present this one.
			return "token", h, errors.New("begins or ends with white space, which no Authorization header carries")
		}
		return "token", sha256.Sum256([]byte(t.Token)), nil
	case t.TokenSHA256 != "":
		b, err := hex.DecodeString(t.TokenSHA256)
		if err != nil || len(b) != len(h) {
			return "token_sha256", h, errors.New("is not 64 hex digits")
		}
		copy(h[:], b)
		return "token_sha256", h, nil
	}
	return "token", h, errors.New("token or token_sha256 is required")
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

// newAuthenticator checks toks with the tokens file's rules (Config.Tokens and the file's,
// together: names and secrets are unique across both) and keeps their hashes.
func newAuthenticator(toks []Token) (*authenticator, error) {
	if err := tokenProblems(toks).Err(); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	a := &authenticator{}
	for _, t := range toks {
		_, h, _ := t.hashField() // checked above
		var hosts []string
		if t.Hosts != nil {
			hosts = make([]string, len(t.Hosts))
			for i, p := range t.Hosts {
				hosts[i], _ = hostPattern(p) // checked above
			}
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

// bearer reads r's bearer token. Authorization is a singleton field (RFC 9110 11.6.2): a
// request with two carries no token, rather than whichever came first, so that a credential a
// proxy adds cannot be overridden (or overridden back) by the order of the fields.
func bearer(r *http.Request) (string, bool) {
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return "", false
	}
	h := hs[0]
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
// Clients are keyed by address (clientAddr: the TCP peer, or the client a trusted proxy names),
// IPv6 by /64. Only failing clients are remembered, at most maxAuthFailureClients: when full,
// clients whose buckets refilled are forgotten first, then arbitrary ones.
type authThrottle struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex                   // guards clients and their buckets' reported
	clients map[netip.Prefix]*failBucket // by client address
}

// failBucket is a failing client's bucket of failures.
type failBucket struct {
	lim *rate.Limiter
	// reported: fail reported the bucket's emptying, and it has not been full since. A guesser
	// that spends each token it earns back empties it again and again: one throttling, logged
	// once, not once per 1/rate for as long as it guesses.
	reported bool
}

// newAuthThrottle returns a throttle; perSec < 0 disables it.
func newAuthThrottle(perSec float64, burst int) *authThrottle {
	if perSec < 0 {
		return nil
	}
	return &authThrottle{limit: rate.Limit(perSec), burst: burst, max: maxAuthFailureClients, clients: map[netip.Prefix]*failBucket{}}
}

// clientKey is the throttle's key for a client address (clientAddr): IPv6 by /64, since one
// host commonly holds a whole /64.
func clientKey(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // the zero Prefix for the zero Addr
	return p
}

// parseTrustedProxies reads Config.TrustedProxies: CIDRs or single IP addresses, white space
// around each taken off (the flag's "a, b" splits into "a" and " b").
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		a, err := netip.ParseAddr(s)
		if err == nil {
			a = a.Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		} else if p, err = netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 { // client addresses are unmapped
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			p = p.Masked()
		}
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("--trusted-proxies[%d]: %q is not a CIDR or IP address", i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// clientAddr is the address of the client that sent r. It is r's TCP peer, unless the peer is
// one of trusted (a proxy in front of the API): then it is the rightmost X-Forwarded-For
// address that is not itself a trusted proxy, or the leftmost if all are (nginx's realip
// module with real_ip_recursive on). Several header lines are one list, in order. The header
// is read from the right and no further than that address, since what lies left of it is the
// client's own to write: a malformed element reached on the way makes the client the peer,
// while one a client put before its own address changes nothing. The header of any other peer
// is ignored, as a client could vary it at will.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	peer := ap.Addr().Unmap().WithZone("")
	if !inPrefixes(trusted, peer) {
		return peer
	}
	client := peer
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		for rest := xff[i]; rest != ""; {
			elem := rest
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				rest, elem = rest[:j], rest[j+1:]
			} else {
				rest = ""
			}
			if elem = strings.Trim(elem, " \t"); elem == "" {
				continue // an empty list element (RFC 9110 5.6.1)
			}
			a, ok := forwardedAddr(elem)
			if !ok {
				return peer
			}
			if client = a; !inPrefixes(trusted, a) {
				return a
			}
		}
	}
	return client
}

// forwardedAddr reads one X-Forwarded-For element: an IP address, or one with a port as some
// proxies write it ("192.0.2.1:4711", "[2001:db8::1]:4711"), or an IPv6 address in brackets
// without one ("[2001:db8::1]", RFC 3986's form, which nginx's realip reads too).
func forwardedAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		if v6, ok := strings.CutPrefix(s, "["); ok && strings.HasSuffix(v6, "]") {
			s += ":0" // brackets are IPv6's alone: ParseAddrPort checks it
		}
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// retryAfter is how long client must wait before its next authentication attempt counts; zero
// when it may try now.
func (a *authThrottle) retryAfter(client netip.Prefix, now time.Time) time.Duration {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	b := a.clients[client]
	a.mu.Unlock()
	if b == nil {
		return 0
	}
	tokens := b.lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(a.limit) * float64(time.Second))
}

// fail records a failed authentication by client, and reports whether it throttled client
// anew (took its last token, and the bucket was full since the last throttling reported), so
// that each throttling is logged once.
func (a *authThrottle) fail(client netip.Prefix, now time.Time) (throttled bool) {
	if a == nil {
		return false
	}
	// Under the lock throughout: two failures taking a bucket's last tokens together report
	// one throttling.
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.clients[client]
	if b == nil {
		if len(a.clients) >= a.max {
			a.pruneLocked(now)
		}
		b = &failBucket{lim: rate.NewLimiter(a.limit, a.burst)}
		a.clients[client] = b
	}
	if b.lim.TokensAt(now) >= float64(a.burst) {
		b.reported = false // refilled: the client stopped guessing for a while
	}
	if !b.lim.AllowN(now, 1) || b.lim.TokensAt(now) >= 1 || b.reported {
		return false
	}
	b.reported = true
	return true
}

// pruneLocked forgets clients whose buckets are full again, then, if that is not enough,
// arbitrary clients, down to 7/8 of max.
func (a *authThrottle) pruneLocked(now time.Time) {
	for k, b := range a.clients {
		if b.lim.TokensAt(now) >= float64(a.burst) {
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
