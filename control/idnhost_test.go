package control

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestHostConfigInternationalisedName: PUT, GET and DELETE /v1/hosts/{host} take a host named
// in Unicode, in the path or the body, and store and answer its ASCII form (A-labels), the
// one edges serve and clients send; a name IDNA refuses is 400 naming it.
func TestHostConfigInternationalisedName(t *testing.T) {
	const aLabel = "xn--bcher-kva.example"
	ts := startServer(t, Config{})
	for _, tt := range []struct {
		name, method, path, body string
		wantCode                 int
		wantHost                 string // the config answered
		wantField, wantMsg       string // the error answered
	}{
		{"put by u-label", "PUT", "/v1/hosts/bücher.example", `{"origin":"http://127.0.0.1:8080"}`, 200, aLabel, "", ""},
		{"get by a-label", "GET", "/v1/hosts/" + aLabel, "", 200, aLabel, "", ""},
		{"get by u-label, upper case", "GET", "/v1/hosts/BÜCHER.example", "", 200, aLabel, "", ""},
		{"put, u-label in the body", "PUT", "/v1/hosts/" + aLabel, `{"host":"Bücher.example","origin":"http://127.0.0.1:8081"}`, 200, aLabel, "", ""},
		{"put, a-label in the body", "PUT", "/v1/hosts/bücher.example", `{"host":"` + aLabel + `","origin":"http://127.0.0.1:8081"}`, 200, aLabel, "", ""},
		{"put, another host in the body", "PUT", "/v1/hosts/bücher.example", `{"host":"bucher.example","origin":"http://o"}`, 400, "", "host", "does not match"},
		{"put, invalid u-label in the body", "PUT", "/v1/hosts/" + aLabel, `{"host":"aא.example","origin":"http://o"}`, 400, "", "host", `"aא.example" is not a valid internationalised hostname`},
		{"bidi rule in the path", "PUT", "/v1/hosts/aא.example", `{"origin":"http://o"}`, 400, "", "host", `"aא.example" is not a valid internationalised hostname`},
		{"disallowed code point in the path", "GET", "/v1/hosts/b%E2%80%A8ücher.example", "", 400, "", "host", `"b\u2028ücher.example" is not a valid internationalised hostname`},
		// A problem found in the ASCII form names the name as written: the ASCII form alone is
		// not what the client sent.
		{"trailing dot in the path", "GET", "/v1/hosts/bücher.example.", "", 400, "", "host", `"bücher.example.": "xn--bcher-kva.example." is not a valid hostname`},
		{"trailing dot in the body", "PUT", "/v1/hosts/" + aLabel, `{"host":"bücher.example.","origin":"http://o"}`, 400, "", "host", `"bücher.example.": "xn--bcher-kva.example." is not a valid hostname`},
		{"put, u-label body, other path", "PUT", "/v1/hosts/bucher.example", `{"host":"Bücher.example","origin":"http://o"}`, 400, "", "host", `host "Bücher.example" (xn--bcher-kva.example) does not match the path's "bucher.example"`},
		{"put, u-label path, other body", "PUT", "/v1/hosts/bücher.example", `{"host":"bucher.example","origin":"http://o"}`, 400, "", "host", `host "bucher.example" does not match the path's "bücher.example" (xn--bcher-kva.example)`},
		{"delete by u-label", "DELETE", "/v1/hosts/bücher.example", "", 204, "", "", ""},
		{"gone by either name", "GET", "/v1/hosts/" + aLabel, "", 404, "", "host", "host " + aLabel + " has no config in the config bucket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			code, b := ts.do(t, tt.method, tt.path, tokAdmin, body)
			if code != tt.wantCode {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, code, b, tt.wantCode)
			}
			if tt.wantHost != "" {
				var hc wire.HostConfig
				if err := json.Unmarshal(b, &hc); err != nil || hc.Host != tt.wantHost {
					t.Errorf("%s %s answered host %q (%v), want %q", tt.method, tt.path, hc.Host, err, tt.wantHost)
				}
			}
			if tt.wantField != "" {
				var e APIError
				if err := json.Unmarshal(b, &e); err != nil || e.Field != tt.wantField || !strings.Contains(e.Error, tt.wantMsg) {
					t.Errorf("%s %s answered %s, want field %q with %q", tt.method, tt.path, b, tt.wantField, tt.wantMsg)
				}
			}
		})
	}
}

// TestTokenHostsInternationalised: a token's hosts may name an internationalised host in
// Unicode; it is matched in ASCII, the form every purge and host config is checked in. A label
// holding a wildcard cannot be converted and must be written in ASCII.
func TestTokenHostsInternationalised(t *testing.T) {
	tests := []struct {
		name    string
		hosts   []string
		host    string // checked against the token
		want    bool
		wantErr string
	}{
		{"u-label", []string{"bücher.example"}, "xn--bcher-kva.example", true, ""},
		{"u-label, other host", []string{"bücher.example"}, "bucher.example", false, ""},
		{"wildcard beside a u-label", []string{"*.bücher.example"}, "img.xn--bcher-kva.example", true, ""},
		{"a-label", []string{"*.xn--bcher-kva.example"}, "img.xn--bcher-kva.example", true, ""},
		// The full stops UTS #46 maps to "." separate labels in a pattern as in a host name, so
		// the wildcard stays in a label of its own.
		{"wildcard, ideographic full stops", []string{"*\u3002bücher\u3002example"}, "img.xn--bcher-kva.example", true, ""},
		{"wildcard, fullwidth full stop", []string{"*\uff0eexample"}, "xn--bcher-kva.example", true, ""},
		{"wildcard, halfwidth ideographic full stop", []string{"*\uff61example"}, "example", false, ""},
		{"wildcard in a u-label", []string{"b*ücher.example"}, "", false, "wildcard in a label that is not ASCII"},
		{"bidi rule", []string{"aא.example"}, "", false, `host pattern "aא.example": "aא" is not a valid internationalised hostname`},
		{"u-label, trailing fullwidth dot", []string{"bücher.example\uff0e"}, "", false, `"bücher.example．" is not a hostname pattern: "xn--bcher-kva.example." is not a valid hostname`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := newAuthenticator([]Token{{Name: "a", Token: "aaaaaaaaaaaaaaaa", Scopes: []string{ScopePurge}, Hosts: tt.hosts}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("newAuthenticator(hosts %q) = %v, want an error containing %q", tt.hosts, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("newAuthenticator(hosts %q) = %v", tt.hosts, err)
			}
			if got := a.tokens[0].allowsHost(tt.host); got != tt.want {
				t.Errorf("token with hosts %q allowsHost(%q) = %v, want %v", tt.hosts, tt.host, got, tt.want)
			}
		})
	}
}

// TestHostScopeUnicodeSpellings: a host-scoped token is held to its hosts however a request
// spells a host: the scope is checked on the ASCII form the action then uses, so a spelling
// that IDNA maps onto another host (fullwidth letters, ideographic full stops) reaches that
// host's scope, not the token's, and a token scoped in Unicode acts on its host in any spelling.
func TestHostScopeUnicodeSpellings(t *testing.T) {
	const (
		tokBuecher = "buecher-secret-0123456789"
		tokOther   = "other-secret-0123456789"
	)
	all := []string{ScopeRead, ScopePurge, ScopeConfig}
	ts := startServer(t, Config{PurgeRate: -1, Tokens: []Token{
		{Name: "buecher", Token: tokBuecher, Scopes: all, Hosts: []string{"bücher.example"}},
		{Name: "other", Token: tokOther, Scopes: all, Hosts: []string{"*.example.net"}},
	}})
	for _, h := range []string{"www.example.com", "xn--bcher-kva.example"} {
		if code, b := ts.do(t, "PUT", "/v1/hosts/"+h, tokAdmin, []byte(`{"origin":"http://127.0.0.1:8080"}`)); code != http.StatusOK {
			t.Fatalf("PUT /v1/hosts/%s = %d %s", h, code, b)
		}
	}
	for _, tt := range []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"own host, u-label", tokBuecher, "GET", "/v1/hosts/BÜCHER.example", "", 200},
		{"own host, a-label", tokBuecher, "GET", "/v1/hosts/xn--bcher-kva.example", "", 200},
		{"own host purged, u-label", tokBuecher, "POST", "/v1/purge", `{"host":"Bücher。example","all":true}`, 202},
		{"fullwidth spelling of another host", tokBuecher, "GET", "/v1/hosts/ｗｗｗ.example.com", "", 403},
		{"fullwidth spelling of another host, put", tokBuecher, "PUT", "/v1/hosts/ｗｗｗ．ｅｘａｍｐｌｅ．ｃｏｍ", `{"origin":"http://127.0.0.1:8081"}`, 403},
		{"ideographic full stops, another host, purge", tokBuecher, "POST", "/v1/purge", `{"host":"www。example。com","all":true}`, 403},
		{"url of another host in unicode", tokBuecher, "POST", "/v1/purge", `{"host":"bücher.example","urls":["https://ｗｗｗ.example.com/a"]}`, 400},
		{"u-label host outside the scope", tokOther, "POST", "/v1/purge", `{"host":"bücher.example","all":true}`, 403},
		{"u-label host outside the scope, delete", tokOther, "DELETE", "/v1/hosts/bücher.example", "", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			if code, b := ts.do(t, tt.method, tt.path, tt.token, body); code != tt.want {
				t.Errorf("%s %s %s = %d %s, want %d", tt.method, tt.path, tt.body, code, b, tt.want)
			}
		})
	}
}
