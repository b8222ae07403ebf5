package control

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
		{"unknown field", "- name: a\n  token: aaaaaaaaaaaaaaaa\n  scope: [read]\n", 0, "scope"},
		{"no name", "- token: aaaaaaaaaaaaaaaa\n  scopes: [read]\n", 0, "name is required"},
		{"duplicate name", "- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n- {name: a, token: bbbbbbbbbbbbbbbb, scopes: [read]}\n", 0, "duplicate name"},
		{"duplicate secret", "- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n- {name: b, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n", 0, "same secret"},
		{"short token", "- {name: a, token: short, scopes: [read]}\n", 0, "shorter than 16"},
		{"both secrets", "- {name: a, token: aaaaaaaaaaaaaaaa, token_sha256: " + strings.Repeat("ab", 32) + ", scopes: [read]}\n", 0, "not both"},
		{"no secret", "- {name: a, scopes: [read]}\n", 0, "token or token_sha256 is required"},
		{"bad sha", "- {name: a, token_sha256: xyz, scopes: [read]}\n", 0, "64 hex digits"},
		{"no scopes", "- {name: a, token: aaaaaaaaaaaaaaaa}\n", 0, "scopes are required"},
		{"unknown scope", "- {name: a, token: aaaaaaaaaaaaaaaa, scopes: [admin]}\n", 0, `unknown scope "admin"`},
		{"not a list", "name: a\n", 0, "parse tokens"},
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
// error for any body, never a panic.
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
		if err != nil && w.code != http.StatusBadRequest {
			t.Fatalf("DecodeJSON(%q) failed with status %d, want 400", b, w.code)
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
