package control

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
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
	}
	return toks, nil
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
}

type authenticator struct{ tokens []authToken }

func newAuthenticator(toks []Token) (*authenticator, error) {
	a := &authenticator{}
	for _, t := range toks {
		h, err := t.hash()
		if err != nil {
			return nil, fmt.Errorf("token %q: %w", t.Name, err)
		}
		a.tokens = append(a.tokens, authToken{name: t.Name, hash: h, scopes: t.Scopes})
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
