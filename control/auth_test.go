package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantN   int
		wantErr string
	}{
		{"yaml", "- name: a\n  token: aaaaaaaaaaaaaaaa\n  scopes: [read]\n", 1, ""},
		{"json", `[{"name":"a","token":"aaaaaaaaaaaaaaaa","scopes":["read","purge"]}]`, 1, ""},
		{"empty file", "", 0, ""},
		{"sha256", "- name: a\n  token_sha256: " + strings.Repeat("ab", 32) + "\n  scopes: [config]\n", 1, ""},
		{"unknown field", "- name: a\n  token: aaaaaaaaaaaaaaaa\n  scope: [read]\n", 0, `line 3:3: [0].scope: unknown field "scope"`},
		{"no name", "- token: aaaaaaaaaaaaaaaa\n  scopes: [read]\n", 0, "[0].name: is required"},
		{"duplicate name", "- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n- {name: a, token: bbbbbbbbbbbbbbbb, scopes: [read]}\n", 0, `[1].name: "a" is also the name of token 0`},
		{"duplicate secret", "- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n- {name: b, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n", 0, "[1].token: same secret as token 0"},
		{"short token", "- {name: a, token: short, scopes: [read]}\n", 0, "[0].token: is shorter than 16"},
		{"both secrets", "- {name: a, token: aaaaaaaaaaaaaaaa, token_sha256: " + strings.Repeat("ab", 32) + ", scopes: [read]}\n", 0, "[0].token_sha256: set token or token_sha256, not both"},
		{"no secret", "- {name: a, scopes: [read]}\n", 0, "[0].token: token or token_sha256 is required"},
		{"bad sha", "- {name: a, token_sha256: xyz, scopes: [read]}\n", 0, "[0].token_sha256: is not 64 hex digits"},
		{"no scopes", "- {name: a, token: aaaaaaaaaaaaaaaa}\n", 0, "[0].scopes: is required"},
		{"unknown scope", "- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [admin]}\n", 0, `[0].scopes[0]: unknown scope "admin"`},
		{"not a list", "name: a\n", 0, "cannot unmarshal !!map into []control.Token"},
		// A bearer token is read without surrounding white space: such a secret never matches.
		{"token with trailing space", "- {name: a, token: \"aaaaaaaaaaaaaaaa \", scopes: [read]}\n", 0, "[0].token: begins or ends with white space"},
		{"blank token", "- {name: a, token: \"                \", scopes: [read]}\n", 0, "[0].token: begins or ends with white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokens([]byte(tt.in))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseTokens = %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseTokens error = %v, want one containing %q", err, tt.wantErr)
			case len(got) != tt.wantN:
				t.Errorf("ParseTokens = %d tokens, want %d", len(got), tt.wantN)
			}
		})
	}
}

func TestParseTokensErrorsHideSecrets(t *testing.T) {
	_, err := ParseTokens([]byte("- {name: a, token: supersecretvalue1, scopes: [nope]}\n"))
	if err == nil || strings.Contains(err.Error(), "supersecretvalue1") {
		t.Errorf("ParseTokens error = %v, want one that does not quote the secret", err)
	}
}

func TestAuthenticatorCheck(t *testing.T) {
	toks, err := LoadTokens(filepath.Join("testdata", "tokens.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAuthenticator(toks)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header     string
		wantName   string
		wantScopes []string
	}{
		{"Bearer " + tokReader, "reader", []string{"read"}},
		{"bearer " + tokConfigurer, "configurer", []string{"config"}},
		{"Bearer  " + tokAdmin + " ", "admin", []string{"read", "purge", "config"}},
		{"Bearer " + tokReader + "x", "", nil},
		{"Basic " + tokReader, "", nil},
		{tokReader, "", nil},
		{"", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", tt.header)
			tok, ok := a.check(r)
			name := ""
			var scopes []string
			if ok {
				name, scopes = tok.name, tok.scopes
			}
			if name != tt.wantName || !slices.Equal(scopes, tt.wantScopes) {
				t.Errorf("check(%q) = %q %v, want %q %v", tt.header, name, scopes, tt.wantName, tt.wantScopes)
			}
		})
	}
}

// FuzzParseTokens: any tokens file parses into valid tokens or is refused, never a panic.
func FuzzParseTokens(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "tokens.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`[{"name":"a","token":"aaaaaaaaaaaaaaaa","scopes":["read"]}]`))
	f.Add([]byte("- {name: a, token_sha256: " + strings.Repeat("0", 64) + ", scopes: [purge]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		toks, err := ParseTokens(b)
		if err != nil {
			return
		}
		if _, err := newAuthenticator(toks); err != nil {
			t.Fatalf("ParseTokens accepted tokens the authenticator refuses: %v", err)
		}
		for _, tk := range toks {
			if tk.Name == "" || len(tk.Scopes) == 0 {
				t.Fatalf("ParseTokens accepted %+v", tk)
			}
		}
	})
}

// FuzzDecodeHostJSON: the PUT /v1/hosts body decoder answers 2xx-ready values or a 4xx JSON
// error for any body (413 for one over the limit), never a panic.
func FuzzDecodeHostJSON(f *testing.F) {
	f.Add([]byte(`{"host":"www.example.com","origin":"http://127.0.0.1:8080"}`))
	f.Add([]byte(`{"origin":"http://o","cache":{"keep_params":["a"]}}`))
	f.Add([]byte(`{"origin":1}`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, _ := http.NewRequest("PUT", "/v1/hosts/x", strings.NewReader(string(b)))
		w := &recorder{h: http.Header{}}
		var v struct {
			Host   string `json:"host"`
			Origin string `json:"origin"`
			Cache  struct {
				KeepParams []string `json:"keep_params"`
			} `json:"cache"`
		}
		err := DecodeJSON(w, r, 1024, &v)
		if err == nil && w.code != 0 {
			t.Fatalf("DecodeJSON succeeded but wrote status %d", w.code)
		}
		want := http.StatusBadRequest
		if len(b) > 1024 {
			want = http.StatusRequestEntityTooLarge
		}
		if err != nil && w.code != want {
			t.Fatalf("DecodeJSON(%q) failed with status %d, want %d", b, w.code, want)
		}
	})
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(c int)           { r.code = c }

// The tokens file in testdata is checked in, and git keeps no permission bits but the
// executable one: make it private as the server requires before any test loads it.
func init() {
	_ = os.Chmod(filepath.Join("testdata", "tokens.yaml"), 0o600)
}

func TestParseTokenHosts(t *testing.T) {
	tests := []struct {
		name    string
		hosts   string
		wantErr string
	}{
		{"exact", "[www.example.com]", ""},
		{"wildcard", `["*.example.com", "api.example.net"]`, ""},
		{"class", `["cdn[0-9].example.com", "img?.example.com"]`, ""},
		{"empty list", "[]", "hosts: is empty"},
		{"bad pattern", `["[.example.com"]`, "not a valid pattern"},
		{"empty entry", `[""]`, "not a valid pattern"},
		{"upper case", "[WWW.example.com]", "not lower case"},
		{"not a hostname", `["www.example.com/path"]`, "not a hostname pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTokens([]byte("- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read], hosts: " + tt.hosts + "}\n"))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ParseTokens(hosts: %s) = %v, want nil", tt.hosts, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("ParseTokens(hosts: %s) = %v, want an error containing %q", tt.hosts, err, tt.wantErr)
			}
		})
	}
	if _, err := New(Config{Tokens: []Token{{Name: "a", Token: "aaaaaaaaaaaaaaaa", Scopes: []string{ScopeRead}, Hosts: []string{"["}}}}); err == nil {
		t.Errorf("New with a bad host pattern in Config.Tokens = nil, want an error")
	}
}

// TestTokensNullHostsRefused: a hosts key without a value ("hosts:" with the list forgotten,
// "hosts: ~", JSON null) is refused like "hosts: []". Before, it decoded to no list, which
// reads as every host: the token meant for a few hosts could configure and purge them all.
func TestTokensNullHostsRefused(t *testing.T) {
	for _, doc := range []string{
		"- name: shop\n  token: shop-secret-0123456789\n  scopes: [read, purge, config]\n  hosts:\n",
		"- name: shop\n  token: shop-secret-0123456789\n  scopes: [read, purge, config]\n  hosts: ~\n",
		"- {name: shop, token: shop-secret-0123456789, scopes: [config], hosts: null}\n",
		`[{"name": "shop", "token": "shop-secret-0123456789", "scopes": ["config"], "hosts": null}]`,
	} {
		t.Run(doc, func(t *testing.T) {
			if toks, err := ParseTokens([]byte(doc)); err == nil || !strings.Contains(err.Error(), "[0].hosts: is empty") {
				t.Errorf("ParseTokens = %+v, %v; want [0].hosts refused as empty", toks, err)
			}
			file := filepath.Join(t.TempDir(), "tokens.yaml")
			if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := New(Config{TokensFile: file, NATSListen: "127.0.0.1:0", StoreDir: t.TempDir()}); err == nil {
				t.Fatalf("New = a server whose token %q has hosts %v (every host), want an error", s.auth.tokens[0].name, s.auth.tokens[0].hosts)
			}
		})
	}
	// Absent, it still means every host.
	if toks, err := ParseTokens([]byte("- {name: ops, token: ops-secret-0123456789, scopes: [read]}\n")); err != nil || toks[0].Hosts != nil {
		t.Errorf("ParseTokens without hosts = %+v, %v; want one token for every host", toks, err)
	}
}

func TestTokenAllowsHost(t *testing.T) {
	tests := []struct {
		hosts []string
		host  string
		want  bool
	}{
		{nil, "anything.example", true},
		{[]string{"www.example.com"}, "www.example.com", true},
		{[]string{"www.example.com"}, "img.example.com", false},
		{[]string{"*.example.com"}, "img.example.com", true},
		{[]string{"*.example.com"}, "a.b.example.com", true},
		{[]string{"*.example.com"}, "example.com", false},
		{[]string{"*.example.com"}, "evil-example.com", false},
		{[]string{"*.example.com"}, "www.example.com.evil.net", false},
		{[]string{"img?.example.com"}, "img1.example.com", true},
		{[]string{"cdn[0-3].example.com", "x.example.net"}, "x.example.net", true},
		{[]string{"cdn[0-3].example.com"}, "cdn7.example.com", false},
	}
	for _, tt := range tests {
		tok := &authToken{hosts: tt.hosts}
		if got := tok.allowsHost(tt.host); got != tt.want {
			t.Errorf("token with hosts %q allowsHost(%q) = %v, want %v", tt.hosts, tt.host, got, tt.want)
		}
	}
}

// TestTokensFileMode: a tokens file group or others can access is refused at start.
func TestTokensFileMode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "tokens.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o604, 0o644} {
		t.Run(mode.String(), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "tokens.yaml")
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{TokensFile: p})
			if mode&0o077 == 0 {
				if err != nil {
					t.Errorf("New with a %04o tokens file = %v, want nil", mode, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), p) {
				t.Errorf("New with a %04o tokens file = %v, want a refusal naming the file and chmod 600", mode, err)
			}
		})
	}
}

const tokShop = "shop-secret-0123456789"

// TestHostScopedTokens: a token with hosts reads, configures and purges only those hosts (403
// elsewhere), sees only them in lists, and is refused on fleet-wide routes.
func TestHostScopedTokens(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1, Tokens: []Token{{Name: "shop", Token: tokShop,
		Scopes: []string{ScopeRead, ScopeConfig, ScopePurge}, Hosts: []string{"*.shop.example", "api.example.com"}}}})
	for _, h := range []string{"www.shop.example", "api.example.com", "other.example.com"} {
		body := []byte(`{"origin":"http://127.0.0.1:8080"}`)
		if code, b := ts.do(t, "PUT", "/v1/hosts/"+h, tokAdmin, body); code != http.StatusOK {
			t.Fatalf("PUT /v1/hosts/%s as admin = %d %s", h, code, b)
		}
	}
	wait.For(t, 10*time.Second, "three hosts in the config view", func() bool {
		code, b := ts.do(t, "GET", "/v1/hosts", tokAdmin, nil)
		var l HostList
		return code == http.StatusOK && json.Unmarshal(b, &l) == nil && len(l.Hosts) == 3
	})
	// A purge of another host, whose receipt the shop token must not read.
	code, b := ts.do(t, "POST", "/v1/purge", tokAdmin, []byte(`{"host":"other.example.com","all":true}`))
	var other purge.Response
	if err := json.Unmarshal(b, &other); code != http.StatusAccepted || err != nil {
		t.Fatalf("POST /v1/purge as admin = %d %s", code, b)
	}

	t.Run("list filtered", func(t *testing.T) {
		code, b := ts.do(t, "GET", "/v1/hosts", tokShop, nil)
		var l HostList
		if code != http.StatusOK || json.Unmarshal(b, &l) != nil {
			t.Fatalf("GET /v1/hosts = %d %s", code, b)
		}
		var got []string
		for _, h := range l.Hosts {
			got = append(got, h.Host)
		}
		if want := []string{"api.example.com", "www.shop.example"}; !slices.Equal(got, want) {
			t.Errorf("GET /v1/hosts as shop = %v, want %v", got, want)
		}
	})

	tests := []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/hosts/www.shop.example", "", http.StatusOK},
		{"GET", "/v1/hosts/api.example.com", "", http.StatusOK},
		{"GET", "/v1/hosts/other.example.com", "", http.StatusForbidden},
		{"GET", "/v1/hosts/shop.example", "", http.StatusForbidden}, // *.shop.example needs a label before
		{"PUT", "/v1/hosts/new.shop.example", `{"origin":"http://127.0.0.1:8080"}`, http.StatusOK},
		{"PUT", "/v1/hosts/other.example.com", `{"origin":"http://127.0.0.1:8080"}`, http.StatusForbidden},
		{"DELETE", "/v1/hosts/other.example.com", "", http.StatusForbidden},
		{"DELETE", "/v1/hosts/new.shop.example", "", http.StatusNoContent},
		{"POST", "/v1/purge", `{"host":"www.shop.example","all":true}`, http.StatusAccepted},
		{"POST", "/v1/purge", `{"host":"www.shop.example","urls":["/a"]}`, http.StatusAccepted},
		{"POST", "/v1/purge", `{"host":"other.example.com","all":true}`, http.StatusForbidden},
		{"POST", "/v1/purge", `{"host":"other.example.com","keys":["k"]}`, http.StatusForbidden},
		{"GET", "/v1/purges/" + other.ID, "", http.StatusForbidden},
		{"DELETE", "/v1/purges/" + other.ID + "/unreachable", "", http.StatusForbidden},
		{"GET", "/v1/pops", "", http.StatusForbidden},
		{"GET", "/v1/routing", "", http.StatusForbidden},
		{"PUT", "/v1/routing", `{"policy":"nearest"}`, http.StatusForbidden},
		{"POST", "/v1/peer-keys/rotate", "", http.StatusForbidden},
		{"POST", "/v1/pops/par/drain", "", http.StatusForbidden},
		{"GET", "/metrics", "", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			code, b := ts.do(t, tt.method, tt.path, tokShop, body)
			if code != tt.want {
				t.Fatalf("%s %s as shop = %d %s, want %d", tt.method, tt.path, code, b, tt.want)
			}
			if code == http.StatusForbidden {
				var e APIError
				if json.Unmarshal(b, &e) != nil || e.Error == "" {
					t.Errorf("403 body %s is not a JSON error", b)
				}
			}
			if tt.method == "POST" && code == http.StatusAccepted {
				var r purge.Response
				if json.Unmarshal(b, &r) != nil {
					t.Fatalf("decode purge answer %s", b)
				}
				if code, b := ts.do(t, "GET", "/v1/purges/"+r.ID, tokShop, nil); code != http.StatusOK {
					t.Errorf("GET own receipt as shop = %d %s, want 200", code, b)
				}
			}
		})
	}
}

// TestBadOriginsRefused: the API refuses host configs whose origin is not a plain http(s) origin,
// with 400 and the reason.
func TestBadOriginsRefused(t *testing.T) {
	ts := startServer(t, Config{})
	tests := []struct {
		origin, wantMsg string
	}{
		{"http://169.254.169.254/latest/meta-data", "link-local"},
		{"http://[fd00:ec2::254]", "metadata"},
		{"http://100.100.100.200", "metadata"},
		{"http://metadata.google.internal", "metadata"},
		{"http://[fe80::1]:8080", "link-local"},
		{"http://user:pass@origin.example.com", "userinfo"},
		{"gopher://origin.example.com", "scheme"},
		{"file:///etc/passwd", "scheme"},
		// net/http dials a Unicode host by its IDNA form, which maps fullwidth digits and dots
		// (also written percent-encoded) to ASCII: these reach 169.254.169.254 and the
		// metadata name.
		{"http://１６９．２５４．１６９．２５４/latest/meta-data", "ASCII"},
		{"http://169。254。169。254/", "ASCII"},
		{"http://%EF%BD%8Detadata.google.internal/", "ASCII"},
		{"http://ｍｅｔａｄａｔａ.google.internal/", "ASCII"},
		{"http://bücher.example", "xn--"},
		// No fill can dial these.
		{"http://origin.example.com:99999", "port"},
		{"http://origin.example.com:0", "port"},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			body, _ := json.Marshal(map[string]string{"origin": tt.origin})
			code, b := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokAdmin, body)
			var e APIError
			if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Field != "origin" || !strings.Contains(e.Error, tt.wantMsg) {
				t.Errorf("PUT origin %q = %d %s, want 400 on field origin mentioning %q", tt.origin, code, b, tt.wantMsg)
			}
		})
	}
	if code, b := ts.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil); code != http.StatusNotFound {
		t.Errorf("GET refused host = %d %s, want 404", code, b)
	}
}

// TestHostConfigHeaderRules: the API refuses a host config the edge would not apply as
// written: an origin_host that is not a host[:port] (net/http sends an empty Host instead of
// an invalid one, so every fill lost the host's name), a set rule naming a field twice in two
// cases (the edge applied them in map order: either value could win, per request), or a set
// rule adding a hop-by-hop field the edge strips everywhere else. Valid ones are stored.
func TestHostConfigHeaderRules(t *testing.T) {
	ts := startServer(t, Config{})
	tests := []struct {
		name, body, field string // field "" means accepted
	}{
		{"origin_host with a space", `{"origin":"http://127.0.0.1:8080","origin_host":"a b"}`, "origin_host"},
		{"origin_host with CRLF", `{"origin":"http://127.0.0.1:8080","origin_host":"a\r\nX-Injected: 1"}`, "origin_host"},
		{"origin_host with a path", `{"origin":"http://127.0.0.1:8080","origin_host":"a.example/x"}`, "origin_host"},
		{"origin_host with userinfo", `{"origin":"http://127.0.0.1:8080","origin_host":"u@a.example"}`, "origin_host"},
		{"origin_host with port 0", `{"origin":"http://127.0.0.1:8080","origin_host":"a.example:0"}`, "origin_host"},
		{"origin_host with an empty port", `{"origin":"http://127.0.0.1:8080","origin_host":"a.example:"}`, "origin_host"},
		{"origin_host with an empty label", `{"origin":"http://127.0.0.1:8080","origin_host":"a..example"}`, "origin_host"},
		{"origin_host name", `{"origin":"http://127.0.0.1:8080","origin_host":"Origin.Example.com"}`, ""},
		{"origin_host name and port", `{"origin":"http://127.0.0.1:8080","origin_host":"origin_1.example.com:8443"}`, ""},
		{"origin_host IPv4", `{"origin":"http://127.0.0.1:8080","origin_host":"10.0.0.1:80"}`, ""},
		{"origin_host IPv6", `{"origin":"http://127.0.0.1:8080","origin_host":"[2001:db8::1]:8080"}`, ""},
		{"set twice in two cases", `{"origin":"http://127.0.0.1:8080","request_headers":{"set":{"X-Env":"a","x-env":"b"}}}`, "request_headers.set.x-env"},
		{"response set twice", `{"origin":"http://127.0.0.1:8080","response_headers":{"set":{"X-Frame-Options":"DENY","x-frame-options":"SAMEORIGIN"}}}`, "response_headers.set.x-frame-options"},
		{"response set Keep-Alive", `{"origin":"http://127.0.0.1:8080","response_headers":{"set":{"Keep-Alive":"timeout=1, max=1"}}}`, "response_headers.set.Keep-Alive"},
		{"response set Proxy-Authenticate", `{"origin":"http://127.0.0.1:8080","response_headers":{"set":{"Proxy-Authenticate":"Basic"}}}`, "response_headers.set.Proxy-Authenticate"},
		{"request set Proxy-Authorization", `{"origin":"http://127.0.0.1:8080","request_headers":{"set":{"Proxy-Authorization":"Basic eDp5"}}}`, "request_headers.set.Proxy-Authorization"},
		{"request set Proxy-Connection", `{"origin":"http://127.0.0.1:8080","request_headers":{"set":{"Proxy-Connection":"keep-alive"}}}`, "request_headers.set.Proxy-Connection"},
		{"deny Keep-Alive", `{"origin":"http://127.0.0.1:8080","response_headers":{"deny":["Keep-Alive"]},"request_headers":{"deny":["Proxy-Authorization"]}}`, ""},
		{"set distinct fields", `{"origin":"http://127.0.0.1:8080","request_headers":{"set":{"X-Env":"a","X-Team":"b"}}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokAdmin, []byte(tt.body))
			if tt.field == "" {
				if code != http.StatusOK {
					t.Errorf("PUT %s = %d %s, want 200", tt.body, code, b)
				}
				return
			}
			var e APIError
			if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Field != tt.field {
				t.Errorf("PUT %s = %d %s, want 400 on field %s", tt.body, code, b, tt.field)
			}
		})
	}
}

// TestAuthFailuresThrottled: a client address that keeps failing authentication gets 429 with
// Retry-After, even with a right token then; another address is not affected.
func TestAuthFailuresThrottled(t *testing.T) {
	ts := startServer(t, Config{AuthFailureBurst: 3, AuthFailureRate: 0.01})
	addr := strings.TrimPrefix(ts.base, "http://")
	// from sends a request from source IP src (a loopback address of its own).
	from := func(t *testing.T, src, token string) *http.Response {
		t.Helper()
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/v1/pops", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("GET /v1/pops from %s: %v", src, err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if r := from(t, "127.0.8.1", "wrong-token-0123456789"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token #%d = %d, want 401", i+1, r.StatusCode)
		}
	}
	for _, tok := range []string{"wrong-token-0123456789", tokReader} {
		r := from(t, "127.0.8.1", tok)
		if r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("after 3 failures, GET with %.5s… = %d, want 429", tok, r.StatusCode)
		}
		if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("Retry-After = %q, want a positive number of seconds", r.Header.Get("Retry-After"))
		}
	}
	if r := from(t, "127.0.8.2", tokReader); r.StatusCode != http.StatusOK {
		t.Errorf("another address with the right token = %d, want 200", r.StatusCode)
	}
	if r := from(t, "127.0.8.1", ""); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("throttled address without a token = %d, want 429", r.StatusCode)
	}
	if code, _ := ts.do(t, "GET", "/healthz", "", nil); code != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200 (public routes are not throttled)", code)
	}
}

// TestAuthThrottleBounded: the throttle remembers a bounded number of clients, forgetting those
// whose buckets refilled first.
func TestAuthThrottleBounded(t *testing.T) {
	a := newAuthThrottle(1, 2)
	a.max = 100
	now := time.Now()
	key := func(i int) netip.Prefix {
		p, _ := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).Prefix(32)
		return p
	}
	for i := range 1000 {
		a.fail(key(i), now)
		a.fail(key(i), now)
	}
	if n := len(a.clients); n > a.max {
		t.Errorf("throttle remembers %d clients, want at most %d", n, a.max)
	}
	if wait := a.retryAfter(key(999), now); wait <= 0 {
		t.Errorf("retryAfter(latest client) = %v, want > 0 (just failed twice with burst 2)", wait)
	}
	if wait := a.retryAfter(key(999), now.Add(2*time.Second)); wait != 0 {
		t.Errorf("retryAfter 2s later = %v, want 0 (one failure a second earned back)", wait)
	}
	if newAuthThrottle(-1, 2) != nil {
		t.Errorf("newAuthThrottle(-1) is not nil, want the throttle off")
	}
	var off *authThrottle
	off.fail(key(1), now)
	if wait := off.retryAfter(key(1), now); wait != 0 {
		t.Errorf("disabled throttle retryAfter = %v, want 0", wait)
	}
}

// TestTokensFileReportsEveryProblem: a tokens file with several problems is refused with all
// of them at once, each as a wire.FieldError with the file, the line and column of the field,
// and the field's path; the secrets are not quoted.
func TestTokensFileReportsEveryProblem(t *testing.T) {
	file := filepath.Join("testdata", "tokens-bad.yaml")
	_, err := LoadTokens(file)
	var list wire.FieldErrors
	if !errors.As(err, &list) {
		t.Fatalf("LoadTokens = %v, want a wire.FieldErrors", err)
	}
	type want struct {
		line, column int
		field, msg   string
	}
	wants := []want{
		{11, 3, "[2].scope", `unknown field "scope"`},
		{15, 11, "[3].scopes", "cannot unmarshal"},
		{5, 18, "[0].scopes[1]", `unknown scope "admin"`},
		{6, 3, "[1].name", `"ops" is also the name of token 0`},
		{7, 3, "[1].token_sha256", "is not 64 hex digits"},
		{10, 3, "[2].token", "is shorter than 16 characters"},
		{9, 3, "[2].scopes", "is required"},
		{12, 33, "[2].hosts[1]", "is not a hostname pattern"},
		{14, 3, "[3].token", "same secret as token 0"},
	}
	got := map[string]*wire.FieldError{}
	for _, e := range list {
		if e.File != file {
			t.Errorf("%v: File = %q, want %q", e, e.File, file)
		}
		got[e.Field] = e
	}
	for _, w := range wants {
		e, ok := got[w.field]
		if !ok {
			t.Errorf("no error for %s (want %q at %d:%d); got:\n%v", w.field, w.msg, w.line, w.column, err)
			continue
		}
		if e.Line != w.line || e.Column != w.column || !strings.Contains(e.Err.Error(), w.msg) {
			t.Errorf("%s: got %v, want %q at %d:%d", w.field, e, w.msg, w.line, w.column)
		}
	}
	if len(list) != len(wants) {
		t.Errorf("%d errors, want %d (one per problem, none twice):\n%v", len(list), len(wants), err)
	}
	if strings.Contains(err.Error(), "ops-secret") || strings.Contains(err.Error(), `"short"`) {
		t.Errorf("error quotes a secret:\n%v", err)
	}
	if !strings.HasPrefix(err.Error(), file+":") {
		t.Errorf("error %q does not start with file:line:column", err)
	}
}

// requestFrom sends GET /v1/pops to ts from source address src (a loopback address of its own)
// with token and, if not empty, the X-Forwarded-For values xff, and returns the status.
func requestFrom(t *testing.T, ts *testServer, src, token string, xff ...string) int {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.base+"/v1/pops", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET /v1/pops from %s: %v", src, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAuthThrottleBehindTrustedProxy: behind a proxy in TrustedProxies, the throttle keys each
// client by the address the proxy appended to X-Forwarded-For, so a guesser behind the proxy
// gets 429 while another client behind it still authenticates. A client cannot escape its
// throttle with a forged X-Forwarded-For: not when it connects directly (the header of a peer
// that is not a trusted proxy is ignored), nor behind the proxy (the rightmost untrusted
// address is the one the proxy saw). A malformed header from the proxy counts against the
// proxy's own address.
func TestAuthThrottleBehindTrustedProxy(t *testing.T) {
	const (
		proxy  = "127.0.9.1" // trusted
		direct = "127.0.9.2" // not trusted: connects to the API itself
		other  = "127.0.9.3" // not trusted
		bad    = "wrong-token-0123456789"
	)
	ts := startServer(t, Config{AuthFailureBurst: 3, AuthFailureRate: 0.01, TrustedProxies: []string{proxy, "10.1.0.0/16"}})
	for i := range 3 {
		if code := requestFrom(t, ts, proxy, bad, "198.51.100.7"); code != http.StatusUnauthorized {
			t.Fatalf("guess #%d behind the proxy = %d, want 401", i+1, code)
		}
	}
	tests := []struct {
		name     string
		src, tok string
		xff      []string
		want     int
	}{
		{"guesser behind the proxy, right token", proxy, tokReader, []string{"198.51.100.7"}, http.StatusTooManyRequests},
		{"guesser forging an address left of its own", proxy, tokReader, []string{"198.51.100.99, 198.51.100.7"}, http.StatusTooManyRequests},
		{"guesser forging a second header line", proxy, tokReader, []string{"198.51.100.99", "198.51.100.7"}, http.StatusTooManyRequests},
		{"guesser behind a second trusted proxy", proxy, tokReader, []string{"198.51.100.7, 10.1.2.3"}, http.StatusTooManyRequests},
		{"guesser with a port", proxy, tokReader, []string{"198.51.100.7:51000"}, http.StatusTooManyRequests},
		{"another client behind the proxy", proxy, tokReader, []string{"198.51.100.8"}, http.StatusOK},
		{"another client forging the guesser's address left of its own", proxy, tokReader, []string{"198.51.100.7, 198.51.100.8"}, http.StatusOK},
		{"garbage left of the client's address", proxy, tokReader, []string{"not-an-address, 198.51.100.8"}, http.StatusOK},
		{"the proxy's own request", proxy, tokReader, nil, http.StatusOK},
		{"untrusted peer naming the guesser", other, tokReader, []string{"198.51.100.7"}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := requestFrom(t, ts, tt.src, tt.tok, tt.xff...); code != tt.want {
				t.Errorf("GET from %s, X-Forwarded-For %q = %d, want %d", tt.src, tt.xff, code, tt.want)
			}
		})
	}

	t.Run("spoofing untrusted peer stays throttled", func(t *testing.T) {
		for i := range 3 {
			if code := requestFrom(t, ts, direct, bad, fmt.Sprintf("203.0.113.%d", i)); code != http.StatusUnauthorized {
				t.Fatalf("guess #%d = %d, want 401", i+1, code)
			}
		}
		if code := requestFrom(t, ts, direct, tokReader, "203.0.113.200"); code != http.StatusTooManyRequests {
			t.Errorf("after 3 failures with a new X-Forwarded-For each = %d, want 429 (the header of an untrusted peer is ignored)", code)
		}
	})

	// Last: these throttle the proxy's own address.
	t.Run("malformed header counts against the proxy", func(t *testing.T) {
		malformed := []string{"not-an-address", "198.51.100.9, 300.1.2.3", "198.51.100.9 198.51.100.10"}
		for _, xff := range malformed {
			if code := requestFrom(t, ts, proxy, bad, xff); code != http.StatusUnauthorized {
				t.Fatalf("guess with X-Forwarded-For %q = %d, want 401", xff, code)
			}
		}
		if code := requestFrom(t, ts, proxy, tokReader); code != http.StatusTooManyRequests {
			t.Errorf("the proxy's own request after 3 failures with malformed headers = %d, want 429 (they fell back to the peer)", code)
		}
		if code := requestFrom(t, ts, proxy, tokReader, "198.51.100.8"); code != http.StatusOK {
			t.Errorf("a well-formed client behind the proxy = %d, want 200", code)
		}
	})
}

// TestClientAddr holds clientAddr to nginx's realip rules with real_ip_recursive on: the
// rightmost X-Forwarded-For address that is not a trusted proxy, from a trusted peer only, and
// the peer when the header is malformed up to that address.
func TestClientAddr(t *testing.T) {
	trusted, err := parseTrustedProxies([]string{"127.0.9.1", "10.0.0.0/8", "2001:db8:f::/48", "::ffff:192.0.2.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"untrusted peer, header ignored", "127.0.9.2:1000", []string{"198.51.100.1"}, "127.0.9.2"},
		{"trusted peer, no header", "127.0.9.1:1000", nil, "127.0.9.1"},
		{"trusted peer, one address", "127.0.9.1:1000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"rightmost untrusted", "127.0.9.1:1000", []string{"198.51.100.9, 198.51.100.1"}, "198.51.100.1"},
		{"trusted proxies skipped", "127.0.9.1:1000", []string{"198.51.100.9,198.51.100.1 , 10.2.3.4,\t10.0.0.1"}, "198.51.100.1"},
		{"all trusted: the leftmost", "127.0.9.1:1000", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"header lines are one list", "127.0.9.1:1000", []string{"198.51.100.9", "198.51.100.1, 10.0.0.1"}, "198.51.100.1"},
		{"empty elements skipped", "127.0.9.1:1000", []string{", 198.51.100.1, ,", ""}, "198.51.100.1"},
		{"empty header", "127.0.9.1:1000", []string{""}, "127.0.9.1"},
		{"malformed", "127.0.9.1:1000", []string{"unknown"}, "127.0.9.1"},
		{"malformed rightmost", "127.0.9.1:1000", []string{"198.51.100.1, 198.51.100.300"}, "127.0.9.1"},
		{"malformed after a trusted proxy", "127.0.9.1:1000", []string{"garbage, 10.0.0.1"}, "127.0.9.1"},
		{"malformed left of the client: not read", "127.0.9.1:1000", []string{"garbage, 198.51.100.1"}, "198.51.100.1"},
		{"obfuscated (nginx's unknown or _hidden)", "127.0.9.1:1000", []string{"_hidden"}, "127.0.9.1"},
		{"address with port", "127.0.9.1:1000", []string{"198.51.100.1:4711"}, "198.51.100.1"},
		{"IPv6", "127.0.9.1:1000", []string{"2001:db8:1::5"}, "2001:db8:1::5"},
		{"IPv6 with port", "127.0.9.1:1000", []string{"[2001:db8:1::5]:4711"}, "2001:db8:1::5"},
		{"IPv6 in brackets, no port", "127.0.9.1:1000", []string{"[2001:db8:1::5]"}, "2001:db8:1::5"},
		{"IPv4 in brackets: malformed", "127.0.9.1:1000", []string{"[198.51.100.1]"}, "127.0.9.1"},
		{"IPv6 trusted proxy skipped", "[2001:db8:f::1]:1000", []string{"2001:db8:1::5, 2001:db8:f::2"}, "2001:db8:1::5"},
		{"IPv4-mapped client", "127.0.9.1:1000", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"IPv4-mapped peer", "[::ffff:127.0.9.1]:1000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted range written IPv4-mapped", "192.0.2.7:1000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"zone dropped", "127.0.9.1:1000", []string{"fe80::1%eth0"}, "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/pops", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, trusted); got.String() != tt.want {
				t.Errorf("clientAddr(%s, X-Forwarded-For %q) = %v, want %s", tt.remote, tt.xff, got, tt.want)
			}
			// Without trusted proxies the client is the peer whatever the header says.
			if got, want := clientAddr(r, nil), netip.MustParseAddrPort(tt.remote).Addr().Unmap(); got != want {
				t.Errorf("clientAddr(%s) without trusted proxies = %v, want %v", tt.remote, got, want)
			}
		})
	}
}

// FuzzClientAddr: for any X-Forwarded-For lines from a trusted peer, the client is the peer or
// an address the header names, never one it does not; from an untrusted peer always the peer;
// never a panic.
func FuzzClientAddr(f *testing.F) {
	trusted, err := parseTrustedProxies([]string{"127.0.9.1", "10.0.0.0/8", "2001:db8:f::/48"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("127.0.9.1:1000", "198.51.100.9, 198.51.100.1", "10.0.0.1")
	f.Add("127.0.9.1:1000", "[2001:db8:1::5]:4711", "")
	f.Add("127.0.9.1:1000", "garbage, 10.0.0.1", "10.0.0.2")
	f.Add("[2001:db8:f::1]:1000", "::ffff:198.51.100.1,,fe80::1%eth0", "_hidden")
	f.Add("127.0.9.2:1000", "198.51.100.1", "")
	f.Fuzz(func(t *testing.T, remote, xff1, xff2 string) {
		peer, err := netip.ParseAddrPort(remote)
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/v1/pops", nil)
		r.RemoteAddr = remote
		r.Header.Add("X-Forwarded-For", xff1)
		r.Header.Add("X-Forwarded-For", xff2)
		got := clientAddr(r, trusted)
		p := peer.Addr().Unmap().WithZone("")
		if got == p {
			return
		}
		if !inPrefixes(trusted, p) {
			t.Fatalf("untrusted peer %s: client %v, want the peer", remote, got)
		}
		named := false
		for elem := range strings.SplitSeq(xff1+","+xff2, ",") {
			if a, ok := forwardedAddr(strings.Trim(elem, " \t")); ok && a == got {
				named = true
			}
		}
		if !named {
			t.Fatalf("client %v is neither the peer %s nor named in X-Forwarded-For %q, %q", got, p, xff1, xff2)
		}
	})
}

// TestTrustedProxiesRefused: an entry of Config.TrustedProxies that is no CIDR or IP address
// is refused at New, naming it.
func TestTrustedProxiesRefused(t *testing.T) {
	for _, bad := range []string{"", "10.0.0.0/33", "proxy.example.net", "fe80::1%eth0", "10.0.0.1:80"} {
		_, err := New(Config{TokensFile: "testdata/tokens.yaml", TrustedProxies: []string{"10.0.0.1", bad}})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("--trusted-proxies[1]: %q", bad)) {
			t.Errorf("New with TrustedProxies [10.0.0.1 %q] = %v, want an error naming --trusted-proxies[1]", bad, err)
		}
	}
}

// TestParseTrustedProxiesSpaces: "--trusted-proxies '10.0.0.1, 10.2.0.0/16'" (a list written
// as people write lists) is the two entries, as the flag's comma-separated form promises; an
// entry that is only white space is still refused.
func TestParseTrustedProxiesSpaces(t *testing.T) {
	got, err := parseTrustedProxies([]string{"10.0.0.1", " 10.2.0.0/16 ", "\t2001:db8::1"})
	if err != nil {
		t.Fatalf("parseTrustedProxies with spaces around entries: %v", err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("2001:db8::1/128")}
	if !slices.Equal(got, want) {
		t.Errorf("parseTrustedProxies = %v, want %v", got, want)
	}
	if _, err := parseTrustedProxies([]string{"10.0.0.1", " "}); err == nil {
		t.Errorf("parseTrustedProxies with a blank entry: no error, want one")
	}
}

// TestAuthThrottleLogged: the failure that throttles a client is logged once, naming the
// client, so an operator sees who is guessing (and can block it upstream); the 429s that follow,
// and the failures of clients not yet throttled, log nothing.
func TestAuthThrottleLogged(t *testing.T) {
	logs := &logtest.Warnings{}
	ts := startServer(t, Config{AuthFailureBurst: 3, AuthFailureRate: 0.01, Logger: slog.New(logs)})
	const bad = "wrong-token-0123456789"
	for i := range 2 {
		if code := requestFrom(t, ts, "127.0.9.5", bad); code != http.StatusUnauthorized {
			t.Fatalf("guess #%d = %d, want 401", i+1, code)
		}
	}
	if n := logs.Count("throttled"); n != 0 {
		t.Fatalf("after 2 of 3 allowed failures: %d warnings about throttling, want 0", n)
	}
	if code := requestFrom(t, ts, "127.0.9.5", bad); code != http.StatusUnauthorized {
		t.Fatalf("guess #3 = %d, want 401", code)
	}
	for range 3 {
		if code := requestFrom(t, ts, "127.0.9.5", bad); code != http.StatusTooManyRequests {
			t.Fatalf("guess after the third failure = %d, want 429", code)
		}
	}
	if n := logs.Count("throttled"); n != 1 {
		t.Errorf("warnings about throttling 127.0.9.5 = %d, want 1 (at the failure that emptied its bucket)", n)
	}
}

// TestAuthThrottleLogsOncePerThrottling: a client that guesses on while throttled gets a token
// back each 1/rate and spends it on its next guess, emptying its bucket again: that is the
// same throttling, not a new one to log (a guesser at one try a second logged a warning a
// second for as long as it kept on). Only a client whose bucket filled again is throttled
// anew, and logged again.
func TestAuthThrottleLogsOncePerThrottling(t *testing.T) {
	a := newAuthThrottle(1, 3)
	client := clientKey(netip.MustParseAddr("192.0.2.7"))
	t0 := time.Unix(1_700_000_000, 0)
	type guess struct {
		at   time.Duration // after t0
		logs bool
	}
	guesses := []guess{{0, false}, {0, false}, {0, true}} // the third empties the bucket
	for s := 1; s <= 30; s++ {                            // a token back each second, spent at once
		guesses = append(guesses, guess{time.Duration(s) * time.Second, false})
	}
	// Idle until the bucket is full again (3 s), then throttled anew.
	guesses = append(guesses, guess{34 * time.Second, false}, guess{34 * time.Second, false}, guess{34 * time.Second, true})
	for i, g := range guesses {
		now := t0.Add(g.at)
		if wait := a.retryAfter(client, now); wait > 0 {
			t.Fatalf("guess #%d at %v: throttled for %v, want it let through", i+1, g.at, wait)
		}
		if got := a.fail(client, now); got != g.logs {
			t.Errorf("guess #%d at %v: fail reports a new throttling = %v, want %v", i+1, g.at, got, g.logs)
		}
	}
}

// TestTwoAuthorizationFieldsRefused: Authorization is a singleton field (RFC 9110 11.6.2). With
// two, the first was used and the second ignored, so which credential a request carried
// depended on the order in which a client, or a proxy that adds its own, wrote them: a
// request with a config token before a read token changed the routing policy. Either order is
// now refused as no valid token, and nothing is done.
func TestTwoAuthorizationFieldsRefused(t *testing.T) {
	ts := startServer(t, Config{})
	body := []byte(`{"policy":"least-loaded"}`)
	tests := []struct {
		name    string
		headers []string
		want    int
	}{
		{"config then read", []string{"Bearer " + tokAdmin, "Bearer " + tokReader}, http.StatusUnauthorized},
		{"read then config", []string{"Bearer " + tokReader, "Bearer " + tokAdmin}, http.StatusUnauthorized},
		{"the same twice", []string{"Bearer " + tokAdmin, "Bearer " + tokAdmin}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), "PUT", ts.base+"/v1/routing", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header["Authorization"] = tt.headers
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("PUT /v1/routing with Authorization %q = %d %s (WWW-Authenticate %q), want %d with a challenge",
					tt.headers, resp.StatusCode, b, resp.Header.Get("WWW-Authenticate"), tt.want)
			}
		})
	}
	if rp, err := fleet.GetRouting(t.Context(), ts.JetStream(), ""); err != nil || rp.Policy != "" {
		t.Errorf("routing policy = %q, %v; want none stored", rp.Policy, err)
	}
	// One field still works.
	if code, b := ts.do(t, "PUT", "/v1/routing", tokAdmin, body); code != http.StatusOK {
		t.Errorf("PUT /v1/routing with one Authorization = %d %s, want 200", code, b)
	}
}
