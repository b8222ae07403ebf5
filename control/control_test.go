package control

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

const (
	tokReader     = "reader-secret-0123456789"
	tokPurger     = "purger-secret-0123456789"
	tokConfigurer = "configurer-secret-0123456789"
	tokAdmin      = "admin-secret-0123456789"
)

// testServer is a running control plane with its API base URL.
type testServer struct {
	*Server
	base string
	stop func()
}

// startServer runs a control plane with embedded NATS on loopback; cfg's zero fields get test
// values. It is stopped when the test ends (or by calling stop).
func startServer(t *testing.T, cfg Config, setup ...func(*Server)) *testServer {
	t.Helper()
	if cfg.TokensFile == "" {
		cfg.TokensFile = "testdata/tokens.yaml"
	}
	if cfg.NATSURL == "" && cfg.NATSListen == "" {
		cfg.NATSListen = "127.0.0.1:0"
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = t.TempDir()
	}
	if cfg.HeartbeatTTL == 0 {
		cfg.HeartbeatTTL = time.Second
	}
	if cfg.NATSURL != "" && cfg.NATSCreds == "" {
		cfg.NATSCreds = credsFile(t, cfg.NATSURL, natsauth.Control())
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := loadSpec(); err != nil {
		t.Fatal(err)
	}
	s.wrapAPI = func(h http.Handler) http.Handler { return specChecked(t, s, h) }
	for _, f := range setup {
		f(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Serve returned before ready: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("control not ready within 20s")
	}
	if cfg.NATSURL == "" {
		registerNATS(s.NATSURL(), s.IssueCredential)
	}
	stopped := false
	ts := &testServer{Server: s, base: "http://" + ln.Addr().String()}
	ts.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return within 20s of cancel")
		}
	}
	t.Cleanup(ts.stop)
	return ts
}

// do sends a request with an optional bearer token and body, returning status and body.
func (ts *testServer) do(t *testing.T, method, path, token string, body []byte) (int, []byte) {
	t.Helper()
	code, _, b := ts.doHeader(t, method, path, token, body)
	return code, b
}

// doHeader is do that returns the answer's header too.
func (ts *testServer) doHeader(t *testing.T, method, path, token string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ts.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (ts *testServer) fleet(t *testing.T) Fleet {
	t.Helper()
	code, b := ts.do(t, "GET", "/v1/pops", tokReader, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/pops = %d %s, want 200", code, b)
	}
	var f Fleet
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("decode /v1/pops: %v", err)
	}
	return f
}

func findPoP(f Fleet, id string) (PoPStatus, bool) {
	for _, p := range f.PoPs {
		if p.ID == id {
			return p, true
		}
	}
	return PoPStatus{}, false
}

// runRegistrar registers a node through its own NATS connection, as an edge would.
func runRegistrar(t *testing.T, url string, n wire.Node, interval time.Duration) {
	t.Helper()
	_, js := connectAs(t, url, natsauth.Edge(n.PoP, n.ID))
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: n, Interval: interval,
		Load: func() wire.LoadReport { return wire.LoadReport{RequestsPerSec: 10, Healthy: true} }})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

var hostBody = []byte(`{"host":"www.example.com","origin":"http://127.0.0.1:8080","cache":{"sort_query":true}}`)

func TestAuthMatrix(t *testing.T) {
	// A route added with Handle gets the same auth.
	var purged atomic.Int32
	ts := startServer(t, Config{}, func(s *Server) {
		s.Handle("POST /v1/extension", ScopePurge, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if TokenName(r.Context()) != "purger" {
				WriteError(w, http.StatusInternalServerError, "", fmt.Errorf("token name %q, want purger", TokenName(r.Context())))
				return
			}
			purged.Add(1)
			w.WriteHeader(http.StatusAccepted)
		}))
	})
	// The token each scope is denied with (it holds another scope).
	wrong := map[string]string{ScopeRead: tokPurger, ScopeConfig: tokReader, ScopePurge: tokReader}
	right := map[string]string{ScopeRead: tokReader, ScopeConfig: tokConfigurer, ScopePurge: tokPurger}
	routes := ts.Routes()
	if len(routes) < 10 {
		t.Fatalf("Routes() = %d routes, want the whole API", len(routes))
	}
	defer func() {
		if purged.Load() != 1 {
			t.Errorf("Handle'd purge route ran %d times, want once (right scope only)", purged.Load())
		}
	}()
	// A purge whose receipt GET /v1/purges/{id} can read.
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatalf("PutHost: %v", err)
	}
	purgeBody := []byte(`{"host":"www.example.com","all":true}`)
	code, b := ts.do(t, "POST", "/v1/purge", tokAdmin, purgeBody)
	var pr struct{ ID string }
	if err := json.Unmarshal(b, &pr); code != http.StatusAccepted || err != nil {
		t.Fatalf("POST /v1/purge = %d %s, want 202 with an id", code, b)
	}
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{pop}", "par", "{host}", "www.example.com", "{id}", pr.ID).Replace(path)
		var body []byte
		switch {
		case method == "POST" && path == "/v1/purge":
			body = purgeBody
		case method == "PUT" && strings.HasPrefix(path, "/v1/hosts/"):
			body = hostBody
		case method == "PUT" && path == "/v1/routing":
			body = []byte(`{"policy":"nearest"}`)
		}
		t.Run(rt.Pattern, func(t *testing.T) {
			if rt.Scope == "" {
				if code, b := ts.do(t, method, path, "", body); code/100 != 2 {
					t.Errorf("public %s without token = %d %s, want 2xx", rt.Pattern, code, b)
				}
				return
			}
			cases := []struct {
				name  string
				token string
				want  int
			}{
				{"no token", "", http.StatusUnauthorized},
				{"bad token", "not-a-real-token-0123456789", http.StatusUnauthorized},
				{"wrong scope", wrong[rt.Scope], http.StatusForbidden},
				{"right scope", right[rt.Scope], http.StatusOK},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					// Routes on one host need it to exist to succeed.
					if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:8080"}); err != nil {
						t.Fatalf("PutHost: %v", err)
					}
					code, b := ts.do(t, method, path, c.token, body)
					if c.want == http.StatusOK {
						if code/100 != 2 {
							t.Errorf("%s with %s = %d %s, want 2xx", rt.Pattern, c.name, code, b)
						}
						return
					}
					if code != c.want {
						t.Errorf("%s with %s = %d %s, want %d", rt.Pattern, c.name, code, b, c.want)
					}
					var e APIError
					if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
						t.Errorf("error body %q is not a JSON error: %v", b, err)
					}
					if strings.Contains(string(b), "secret") {
						t.Errorf("error body %q mentions a token secret", b)
					}
				})
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	ts := startServer(t, Config{MaxBodyBytes: 512})
	big := `{"host":"www.example.com","origin":"http://127.0.0.1:8080","origin_host":"` + strings.Repeat("a", 600) + `"}`
	tests := []struct {
		name      string
		path      string
		body      string
		ctype     string
		wantCode  int
		wantField string
		wantMsg   string
	}{
		{"invalid json", "/v1/hosts/www.example.com", `{"host":`, "", 400, "", "invalid JSON"},
		{"syntax error", "/v1/hosts/www.example.com", `{"host" "x"}`, "", 400, "", "invalid JSON at byte"},
		{"oversized", "/v1/hosts/www.example.com", big, "", 413, "", "larger than 512 bytes"},
		{"unknown field", "/v1/hosts/www.example.com", `{"origin":"http://o","colour":"red"}`, "", 400, "colour", `unknown field "colour"`},
		{"unknown nested field", "/v1/hosts/www.example.com", `{"origin":"http://o","cache":{"ttl":5}}`, "", 400, "ttl", `unknown field "ttl"`},
		{"wrong type", "/v1/hosts/www.example.com", `{"origin":42}`, "", 400, "origin", "want a string"},
		{"empty body", "/v1/hosts/www.example.com", ``, "", 400, "", "empty"},
		{"two values", "/v1/hosts/www.example.com", `{"origin":"http://o"} {}`, "", 400, "", "more than one JSON value"},
		{"wrong content type", "/v1/hosts/www.example.com", `{"origin":"http://o"}`, "text/plain", 415, "", "not application/json"},
		{"invalid origin", "/v1/hosts/www.example.com", `{"origin":"ftp://o"}`, "", 400, "origin", "scheme"},
		{"missing origin", "/v1/hosts/www.example.com", `{}`, "", 400, "origin", "required"},
		{"host mismatch", "/v1/hosts/www.example.com", `{"host":"other.example.com","origin":"http://o"}`, "", 400, "host", "does not match"},
		{"bad path host", "/v1/hosts/bad_host", `{"origin":"http://o"}`, "", 400, "host", "not a valid hostname"},
		{"bad routing policy", "/v1/routing", `{"policy":"random"}`, "", 400, "policy", "not nearest"},
		// JSON is UTF-8 (RFC 8259): encoding/json would store U+FFFD for each invalid byte, a
		// config other than the one sent.
		{"invalid UTF-8 in a value", "/v1/hosts/www.example.com", "{\"origin\":\"http://o/p\xffx\"}", "", 400, "", "not valid UTF-8 at byte 22"},
		{"invalid UTF-8 in a key", "/v1/hosts/www.example.com", "{\"origin\":\"http://o\",\"\xc3\":1}", "", 400, "", "not valid UTF-8 at byte 23"},
		// A \u escape of half a surrogate pair is no character: encoding/json would store U+FFFD.
		{"lone high surrogate", "/v1/hosts/www.example.com", `{"origin":"http://o/p\ud800x"}`, "", 400, "", `lone surrogate \ud800 at byte 22`},
		{"lone low surrogate", "/v1/hosts/www.example.com", `{"origin":"http://o/p\uDC00"}`, "", 400, "", `lone surrogate \uDC00 at byte 22`},
		{"high surrogate then another escape", "/v1/hosts/www.example.com", `{"origin":"http://o/p\ud800\u0041"}`, "", 400, "", `lone surrogate \ud800 at byte 22`},
		{"two high surrogates", "/v1/hosts/www.example.com", `{"origin":"http://o/p\ud800\ud800\udc00"}`, "", 400, "", `lone surrogate \ud800 at byte 22`},
		{"surrogate in a key", "/v1/hosts/www.example.com", `{"origin":"http://o","\udfff":1}`, "", 400, "", `lone surrogate \udfff at byte 23`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "PUT", ts.base+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+tokAdmin)
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("PUT: %v", err)
			}
			defer resp.Body.Close()
			var e APIError
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("decode error body: %v", err)
			}
			if resp.StatusCode != tt.wantCode || e.Field != tt.wantField || !strings.Contains(e.Error, tt.wantMsg) {
				t.Errorf("PUT %s %q = %d {%q, field %q}, want %d {…%q…, field %q}",
					tt.path, tt.name, resp.StatusCode, e.Error, e.Field, tt.wantCode, tt.wantMsg, tt.wantField)
			}
		})
	}
	// None of the refused configs reached the bucket.
	if code, b := ts.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil); code != http.StatusNotFound {
		t.Errorf("GET refused host = %d %s, want 404", code, b)
	}
}

// TestLoneSurrogate: loneSurrogate finds half a surrogate pair escaped alone, and nothing in a
// whole pair, an escaped backslash before "ud800", or a pair cut off at the end of a read.
func TestLoneSurrogate(t *testing.T) {
	tests := []struct {
		body     string
		complete bool
		want     int
	}{
		{`"\ud83d\ude00"`, true, -1},
		{`"\uD83D\uDE00"`, true, -1},
		{`"\\ud800"`, true, -1}, // a backslash, then the text ud800
		{`"\\\ud800"`, true, 3},
		{`"\u00e9\n\t"`, true, -1},
		{`"\ud800"`, true, 1},
		{`"\ud800`, false, -1}, // the read stopped there: its pair may follow
		{`"\ud800\u`, false, -1},
		{`"\ud800\ud8`, false, -1},
		{`"\ud800x"`, false, 1},
		{`"\ude00\ud83d"`, true, 1},
		{`"\uzzzz\udc00"`, true, 7},
		{`"\ud800\uzzzz"`, true, 1},
	}
	for _, tt := range tests {
		if got := loneSurrogate([]byte(tt.body), tt.complete); got != tt.want {
			t.Errorf("loneSurrogate(%s, complete %v) = %d, want %d", tt.body, tt.complete, got, tt.want)
		}
	}
}

// TestContentCodingRefused: a body with a Content-Encoding (gzip, say) is 415 naming the
// coding, as RFC 9110 15.5.16 has it, with Accept-Encoding: identity, rather than a 400 about
// the gzip magic being invalid JSON; nothing is stored.
func TestContentCodingRefused(t *testing.T) {
	ts := startServer(t, Config{})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(hostBody)
	_ = zw.Close()
	req, _ := http.NewRequestWithContext(t.Context(), "PUT", ts.base+"/v1/hosts/www.example.com", bytes.NewReader(gz.Bytes()))
	req.Header.Set("Authorization", "Bearer "+tokAdmin)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e APIError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType ||
		!strings.Contains(e.Error, "gzip") || resp.Header.Get("Accept-Encoding") != "identity" {
		t.Errorf("PUT with Content-Encoding: gzip = %d %q (Accept-Encoding %q), want 415 naming gzip with Accept-Encoding: identity",
			resp.StatusCode, e.Error, resp.Header.Get("Accept-Encoding"))
	}
	if code, b := ts.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil); code != http.StatusNotFound {
		t.Errorf("GET refused host = %d %s, want 404", code, b)
	}
}

// TestNoContentCodingAccepted: a Content-Encoding header that names no coding, empty (a
// script's -H "Content-Encoding: $ENC" with ENC unset, or a list of empty elements, which RFC
// 9110 5.6.1 has a recipient ignore) or only identity, is an uncompressed body: the host is
// stored, not refused with 415.
func TestNoContentCodingAccepted(t *testing.T) {
	ts := startServer(t, Config{})
	for _, ce := range []string{"", " ", ",", "identity", "Identity, ", "identity,identity"} {
		req, _ := http.NewRequestWithContext(t.Context(), "PUT", ts.base+"/v1/hosts/www.example.com", bytes.NewReader(hostBody))
		req.Header.Set("Authorization", "Bearer "+tokAdmin)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", ce)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("PUT with Content-Encoding %q = %d %s, want 200", ce, resp.StatusCode, b)
		}
	}
}

// TestOversizedBodyGets413: a body over --max-body-bytes gets 413 with a JSON error naming the
// limit, as nginx's client_max_body_size answers, on every route that takes one (the purge API
// first): declared by Content-Length, or sent chunked and found over the limit while reading.
// Each body is valid JSON padded with whitespace, which the route would take under the limit;
// nothing of a refused one is stored or published.
func TestOversizedBodyGets413(t *testing.T) {
	ts := startServer(t, Config{MaxBodyBytes: 512, PurgeRate: -1})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat(" ", 600)
	routes := []struct{ method, path, body string }{
		{"POST", "/v1/purge", `{"host":"www.example.com","urls":["/a"]` + pad + `}`},
		{"PUT", "/v1/hosts/www.example.com", `{"origin":"http://127.0.0.1:8080"` + pad + `}`},
		{"PUT", "/v1/routing", `{"policy":"least-loaded"` + pad + `}`},
	}
	for _, rt := range routes {
		for _, chunked := range []bool{false, true} {
			name := rt.method + " " + rt.path + " declared"
			if chunked {
				name = rt.method + " " + rt.path + " chunked"
			}
			t.Run(name, func(t *testing.T) {
				req, err := http.NewRequestWithContext(t.Context(), rt.method, ts.base+rt.path, strings.NewReader(rt.body))
				if err != nil {
					t.Fatal(err)
				}
				if chunked {
					req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
				}
				req.Header.Set("Authorization", "Bearer "+tokAdmin)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var e APIError
				if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
					t.Fatalf("decode error body: %v", err)
				}
				if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Error != "request body is larger than 512 bytes" {
					t.Errorf("%s = %d {%q}, want 413 {request body is larger than 512 bytes}", name, resp.StatusCode, e.Error)
				}
			})
		}
	}
	if code, b := ts.do(t, "GET", "/v1/routing", tokReader, nil); code != http.StatusOK || strings.Contains(string(b), "least-loaded") {
		t.Errorf("GET /v1/routing = %d %s, want the routing policy unchanged", code, b)
	}
	stream, err := ts.JetStream().Stream(t.Context(), purge.StreamName(""))
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("the purge stream holds %d purges, want none published", n)
	}
}

// TestDeclaredOversizedBodyIsNotRead: a body that Content-Length declares over the limit gets
// its 413 before any of it is read, so a client that sent "Expect: 100-continue" never sends it
// (a real server and client; DecodeJSON alone, as the spec check in front of the control API
// reads every body).
func TestDeclaredOversizedBodyIsNotRead(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v map[string]any
		_ = DecodeJSON(w, r, 512, &v)
	}))
	defer srv.Close()
	payload := `{"a":"` + strings.Repeat("x", 600) + `"}`
	body := &countingReader{r: strings.NewReader(payload)}
	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(payload))
	req.Header.Set("Expect", "100-continue")
	// The client waits for the server's 100 Continue (or its answer) before sending the body.
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", resp.StatusCode)
	}
	if n := body.n.Load(); n != 0 {
		t.Errorf("the client sent %d bytes of the body, want none", n)
	}
}

// TestEveryRouteLimitsItsBody: every route holds a request body to --max-body-bytes as the
// routes that decode one do, those that ignore their body too (a drain, a GET): 413 with the
// JSON error naming the limit, before any of a body that Content-Length declares too large is
// read (a client that sent "Expect: 100-continue" never sends it), and once reading a chunked
// one passes the limit; nothing such a request asks is done. The auth still comes first: a
// wrong token gets its 401, not a 413 that tells it the limit, and nothing of its body is read.
// A body under the limit changes nothing on a route that ignores it. A route without auth
// (/healthz) is not read ahead: a chunked body changes nothing on it
// (TestUnauthenticatedBodyIsNotReadAhead).
func TestEveryRouteLimitsItsBody(t *testing.T) {
	const limit = 512
	cfg := Config{MaxBodyBytes: limit}
	checked := startServer(t, cfg)
	// The spec check in front of checked reads every body before the API does: plain has
	// none, so that what a client sends shows.
	plain := startServer(t, cfg, func(s *Server) { s.wrapAPI = nil })
	keyrings := map[*testServer]uint64{}
	for _, ts := range []*testServer{checked, plain} {
		if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:9"}); err != nil {
			t.Fatal(err)
		}
		keyrings[ts] = peerKeyringRevision(t, ts)
	}
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	defer client.CloseIdleConnections()
	params := strings.NewReplacer("{pop}", "par", "{host}", "www.example.com", "{id}", "no-such-purge")

	for _, tc := range []struct {
		name    string
		ts      *testServer
		token   string
		chunked bool
		want    int // on an authenticated route; a route without auth answers 413, or 200 to a chunked body
	}{
		{"declared", plain, tokAdmin, false, http.StatusRequestEntityTooLarge},
		{"chunked", checked, tokAdmin, true, http.StatusRequestEntityTooLarge},
		{"declared wrong token", plain, "wrong-token-0123456789", false, http.StatusUnauthorized},
		{"chunked wrong token", checked, "wrong-token-0123456789", true, http.StatusUnauthorized},
	} {
		for _, rt := range tc.ts.Routes() {
			method, path, _ := strings.Cut(rt.Pattern, " ")
			path = params.Replace(path)
			t.Run(tc.name+" "+rt.Pattern, func(t *testing.T) {
				want, token := tc.want, tc.token
				if rt.Scope == "" {
					want, token = http.StatusRequestEntityTooLarge, ""
					if tc.chunked {
						want = http.StatusOK
					}
				}
				code, msg, sent := sendBody(t, client, tc.ts.base, method, path, token, limit+100, tc.chunked)
				if code != want {
					t.Errorf("%s %s with %d bytes = %d %q, want %d", method, path, limit+100, code, msg, want)
				}
				if want == http.StatusRequestEntityTooLarge && msg != "request body is larger than 512 bytes" {
					t.Errorf("413 error = %q, want %q", msg, "request body is larger than 512 bytes")
				}
				if !tc.chunked && sent != 0 {
					t.Errorf("the client sent %d bytes of a body declared too large, want none", sent)
				}
			})
		}
	}

	for _, rt := range checked.Routes() {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		if method != http.MethodGet {
			continue // a change of state; the drain answers the same with or without a body
		}
		path = params.Replace(path)
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("under the limit chunked=%v %s", chunked, rt.Pattern), func(t *testing.T) {
				token := tokAdmin
				if rt.Scope == "" {
					token = ""
				}
				want, _ := checked.do(t, method, path, token, nil)
				if code, msg, _ := sendBody(t, client, checked.base, method, path, token, limit, chunked); code != want {
					t.Errorf("%s %s with %d bytes = %d %q, want %d as without a body", method, path, limit, code, msg, want)
				}
			})
		}
	}
	// The drain under the limit: acts as without a body.
	if code, msg, _ := sendBody(t, client, checked.base, "POST", "/v1/pops/ams/drain", tokAdmin, limit, true); code != http.StatusOK {
		t.Errorf("POST /v1/pops/ams/drain with %d bytes chunked = %d %q, want 200", limit, code, msg)
	}

	// Nothing a refused request asked for was done.
	for name, ts := range map[string]*testServer{"checked": checked, "plain": plain} {
		for _, p := range ts.fleet(t).PoPs {
			if p.ID == "par" && p.OperatorDrained {
				t.Errorf("%s: PoP par drained by a refused request", name)
			}
		}
		if _, err := fleet.GetHost(t.Context(), ts.JetStream(), "", "www.example.com"); err != nil {
			t.Errorf("%s: host www.example.com: %v, want it kept", name, err)
		}
		if got := peerKeyringRevision(t, ts); got != keyrings[ts] {
			t.Errorf("%s: peer keyring at revision %d, want %d: rotated by a refused request", name, got, keyrings[ts])
		}
	}
}

// sendBody sends method path with a body of n bytes, declared by Content-Length with "Expect:
// 100-continue" or sent chunked, and returns the answer's status and error message and how
// many bytes of the body the client sent.
func sendBody(t *testing.T, client *http.Client, base, method, path, token string, n int, chunked bool) (code int, msg string, sent int64) {
	t.Helper()
	body := &countingReader{r: strings.NewReader("{" + strings.Repeat(" ", n-2) + "}")}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if chunked {
		req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
	} else {
		req.ContentLength = int64(n)
		req.Header.Set("Expect", "100-continue")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e APIError
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error, body.n.Load()
}

// peerKeyringRevision is the revision of the fleet's peer keyring: each rotation writes it.
func peerKeyringRevision(t *testing.T, ts *testServer) uint64 {
	t.Helper()
	kv, err := ts.JetStream().KeyValue(t.Context(), wire.Bucket("", wire.PeerKeyBucket))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), wire.PeerKeyringKey)
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestAPIRefusesCaseVariantAndDuplicateFields: encoding/json matches field names
// case-insensitively and keeps the last of duplicate keys, which DisallowUnknownFields lets
// through: {"urls":["/a"],"Urls":["/b"]} would purge /b only. Every request body refuses a name
// that is not exactly its field's, and a name given twice in one object, at any depth, with a
// 400 naming it; nothing of a refused request is stored or published.
func TestAPIRefusesCaseVariantAndDuplicateFields(t *testing.T) {
	testRefusedBodies(t, []bodyCase{
		// Accepted first: a refused body wrongly accepted later would show in what is stored.
		{"purge, exact names", "POST", purgePath, `{"host":"www.example.com","urls":["/a"],"soft":true}`, 202, "", ""},
		{"host config, nested and map keys", "PUT", hostPath,
			`{"origin":"http://127.0.0.1:9","cache":{"keep_params":["a"]},"request_headers":{"forward":"*","set":{"X-A":"1"}}}`, 200, "", ""},
		{"routing, weights", "PUT", routePath, `{"policy":"weighted","weights":{"par":1,"lon":2}}`, 200, "", ""},
		// Map keys differing in case are no duplicates to the decoder: validation judges them,
		// and a PoP id is lower case.
		{"routing, map keys differing in case", "PUT", routePath, `{"policy":"weighted","weights":{"par":1,"Par":2}}`, 400, "weights", "not a valid PoP id"},

		{"purge, names in upper case", "POST", purgePath, `{"HOST":"www.example.com","URLS":["/a"]}`, 400, "HOST", `did you mean "host"`},
		{"purge, urls then Urls", "POST", purgePath, `{"host":"www.example.com","urls":["/a"],"Urls":["/b"]}`, 400, "Urls", `did you mean "urls"`},
		{"purge, urls twice", "POST", purgePath, `{"host":"www.example.com","urls":["/a"],"urls":["/b"]}`, 400, "urls", "more than once"},
		{"purge, escaped duplicate", "POST", purgePath, `{"host":"www.example.com","all":true,"\u0061ll":true}`, 400, "all", "more than once"},
		{"host config, Origin", "PUT", hostPath, `{"Origin":"http://127.0.0.1:8"}`, 400, "Origin", `did you mean "origin"`},
		{"host config, nested case variant", "PUT", hostPath, `{"origin":"http://127.0.0.1:8","cache":{"Keep_Params":["b"]}}`, 400, "cache.Keep_Params", `did you mean "keep_params"`},
		{"host config, nested duplicate", "PUT", hostPath, `{"origin":"http://127.0.0.1:8","cache":{"sort_query":true,"sort_query":false}}`, 400, "cache.sort_query", "more than once"},
		{"host config, duplicate map key", "PUT", hostPath, `{"origin":"http://127.0.0.1:8","request_headers":{"set":{"X-A":"1","X-A":"2"}}}`, 400, "request_headers.set.X-A", "more than once"},
		{"routing, Policy", "PUT", routePath, `{"Policy":"nearest"}`, 400, "Policy", `did you mean "policy"`},
		{"routing, duplicate weight", "PUT", routePath, `{"policy":"nearest","weights":{"par":1,"par":2}}`, 400, "weights.par", "more than once"},
	})
}

// TestAPIRefusesNull: no schema of the API's is nullable, so a JSON null, for the whole body or
// for a field, is refused with the field it stands for, and nothing is done. encoding/json reads
// a null as "leave the value alone": PUT /v1/routing with the body null answered 200 and reset
// the fleet's routing policy to the defaults, and `"cache": null` replaced a host's cache
// policy with the zero one.
func TestAPIRefusesNull(t *testing.T) {
	testRefusedBodies(t, []bodyCase{
		// Accepted first: a null wrongly accepted later would show in what is stored.
		{"purge", "POST", purgePath, `{"host":"www.example.com","urls":["/a"]}`, 202, "", ""},
		{"host config", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","cache":{"keep_params":["a"]}}`, 200, "", ""},
		{"routing", "PUT", routePath, `{"policy":"weighted","weights":{"par":1,"lon":2}}`, 200, "", ""},

		{"purge, null body", "POST", purgePath, `null`, 400, "", "request body is null"},
		{"purge, null host", "POST", purgePath, `{"host":null,"all":true}`, 400, "host", "is null"},
		{"purge, null urls", "POST", purgePath, `{"host":"www.example.com","all":true,"urls":null}`, 400, "urls", "is null"},
		{"purge, null in urls", "POST", purgePath, `{"host":"www.example.com","urls":["/b",null]}`, 400, "urls[1]", "is null"},
		{"purge, null soft", "POST", purgePath, `{"host":"www.example.com","all":true,"soft":null}`, 400, "soft", "is null"},
		{"host config, null body", "PUT", hostPath, `null`, 400, "", "request body is null"},
		{"host config, null cache", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","cache":null}`, 400, "cache", "is null"},
		{"host config, null in a list", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","cache":{"keep_params":[null]}}`, 400, "cache.keep_params[0]", "is null"},
		{"host config, null header", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","request_headers":{"set":{"X-A":null}}}`, 400, "request_headers.set.X-A", "is null"},
		// forward decodes itself (a list or "*"): its errors are named too.
		{"host config, null forward", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","request_headers":{"forward":null}}`, 400, "request_headers.forward", "is null"},
		{"host config, forward neither list nor star", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","request_headers":{"forward":"all"}}`, 400, "request_headers.forward", `"all" is neither "*" nor a list`},
		{"host config, forward of numbers", "PUT", hostPath, `{"origin":"http://127.0.0.1:9","request_headers":{"forward":[1]}}`, 400, "request_headers.forward", "is a JSON number, want a string"},
		{"routing, null body", "PUT", routePath, `null`, 400, "", "request body is null"},
		{"routing, null weights", "PUT", routePath, `{"policy":"weighted","weights":null}`, 400, "weights", "is null"},
		{"routing, null weight", "PUT", routePath, `{"policy":"weighted","weights":{"par":null}}`, 400, "weights.par", "is null"},
		{"routing, null policy", "PUT", routePath, `{"policy":null}`, 400, "policy", "is null"},
	})
}

// Routes of testRefusedBodies's cases.
const (
	purgePath = "/v1/purge"
	hostPath  = "/v1/hosts/www.example.com"
	routePath = "/v1/routing"
)

// bodyCase is a request body sent to a route, and the answer it must get: for a 400, the
// field it names and a part of its message.
type bodyCase struct {
	name, method, path, body string
	wantCode                 int
	wantField, wantMsg       string
}

// testRefusedBodies sends tests, in order, to a control whose www.example.com is configured:
// those that are accepted first, then those that are refused, and checks that what is stored
// and published is what the accepted ones made (a purge of /a; keep_params ["a"]; a weighted
// policy of two weights).
func testRefusedBodies(t *testing.T, tests []bodyCase) {
	t.Helper()
	ts := startServer(t, Config{PurgeRate: -1})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, tt.method, tt.path, tokAdmin, []byte(tt.body))
			if tt.wantCode != http.StatusBadRequest {
				if code != tt.wantCode {
					t.Fatalf("%s %s %s = %d %s, want %d", tt.method, tt.path, tt.body, code, b, tt.wantCode)
				}
				return
			}
			var e APIError
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("answer %s is not a JSON error: %v", b, err)
			}
			if code != tt.wantCode || e.Field != tt.wantField || !strings.Contains(e.Error, tt.wantMsg) {
				t.Errorf("%s %s %s = %d {%q, field %q}, want %d {…%q…, field %q}",
					tt.method, tt.path, tt.body, code, e.Error, e.Field, tt.wantCode, tt.wantMsg, tt.wantField)
			}
		})
	}
	st, err := ts.JetStream().Stream(t.Context(), purge.StreamName(""))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("the purge stream holds %d messages, want 1 (the accepted purge's)", n)
	}
	if hc, err := fleet.GetHost(t.Context(), ts.JetStream(), "", "www.example.com"); err != nil || hc.Origin != "http://127.0.0.1:9" || !slices.Equal(hc.Cache.KeepParams, []string{"a"}) {
		t.Errorf("stored host config = %+v, %v; want the accepted one", hc, err)
	}
	if rp, err := fleet.GetRouting(t.Context(), ts.JetStream(), ""); err != nil || rp.Policy != "weighted" || len(rp.Weights) != 2 {
		t.Errorf("stored routing policy = %+v, %v; want the accepted one", rp, err)
	}
}

// TestDecodeJSONFieldNamesByType: the exact-name and duplicate checks follow the decoded type
// through pointers, slices, embedded structs (their fields are promoted) and maps, and leave a
// value that decodes itself or goes into an interface to its own rules, duplicates aside.
func TestDecodeJSONFieldNamesByType(t *testing.T) {
	type Inner struct {
		Name string `json:"name"`
	}
	type Embedded struct {
		Deep string `json:"deep"`
	}
	type body struct {
		Embedded
		Items []*Inner            `json:"items"`
		ByKey map[string]Inner    `json:"by_key"`
		Any   any                 `json:"any"`
		Raw   json.RawMessage     `json:"raw"`
		When  time.Time           `json:"when"`
		Plain string              // no tag: its Go name
		Skip  string              `json:"-"`
		Nums  map[string][]string `json:"nums"`
	}
	tests := []struct {
		body, wantField string // wantField "" means accepted
	}{
		{`{"deep":"x","items":[{"name":"a"},null],"by_key":{"k":{"name":"b"},"K":{"name":"c"}},"Plain":"p"}`, ""},
		{`{"any":{"Whatever":1,"whatever":[{"A":1,"a":2}]},"raw":{"X":1,"x":2},"when":"2025-01-01T00:00:00Z","nums":{"a":["1"]}}`, ""},
		{`{"Deep":"x"}`, "Deep"},
		{`{"deep":"x","deep":"y"}`, "deep"},
		{`{"items":[{"name":"a"},{"NAME":"b"}]}`, "items[1].NAME"},
		{`{"items":[{"name":"a","name":"b"}]}`, "items[0].name"},
		{`{"by_key":{"k":{"Name":"b"}}}`, "by_key.k.Name"},
		{`{"by_key":{"k":{},"k":{}}}`, "by_key.k"},
		{`{"plain":"p"}`, "plain"},
		{`{"any":{"a":{"b":1,"b":2}}}`, "any.a.b"},
		{`{"raw":[{"x":1,"x":2}]}`, "raw[0].x"},
		// Past 16 keys an object's keys are kept in a map: a duplicate is still found.
		{`{"nums":{` + manyKeys(40) + `,"k7":["again"]}}`, "nums.k7"},
		{`{"nums":{` + manyKeys(40) + `}}`, ""},
		// A null goes only where the type says it may be absent: a pointer, an interface, a
		// type that decodes itself.
		{`{"items":[null],"any":null,"raw":null,"when":null}`, ""},
		{`{"deep":null}`, "deep"},
		{`{"by_key":{"k":null}}`, "by_key.k"},
		{`{"nums":null}`, "nums"},
		{`{"nums":{"a":[null]}}`, "nums.a[0]"},
		{`{"items":[{"name":null}]}`, "items[0].name"},
		// A key goes back no longer than 80 bytes.
		{`{"` + strings.Repeat("Q", 500) + `":1}`, strings.Repeat("Q", 77) + "..."},
		{`{"nums":{"` + strings.Repeat("Q", 500) + `":[],"` + strings.Repeat("Q", 500) + `":[]}}`, "nums." + strings.Repeat("Q", 77) + "..."},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
		w := httptest.NewRecorder()
		var v body
		err := DecodeJSON(w, r, 0, &v)
		var e APIError
		_ = json.Unmarshal(w.Body.Bytes(), &e)
		switch {
		case tt.wantField == "" && err != nil:
			t.Errorf("DecodeJSON(%s) = %v, want it accepted", tt.body, err)
		case tt.wantField != "" && (w.Code != http.StatusBadRequest || e.Field != tt.wantField):
			t.Errorf("DecodeJSON(%s) = %d field %q (%v), want 400 field %q", tt.body, w.Code, e.Field, err, tt.wantField)
		}
	}
}

// manyKeys is n members "k0":["v"], "k1":["v"], ... of a JSON object.
func manyKeys(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf(`"k%d":["v"]`, i)
	}
	return strings.Join(keys, ",")
}

// BenchmarkDecodeJSONManyKeys: a routing body whose weights fill 1 MiB with keys costs a
// multiple of its plain decode, not the square of its keys (found in review: 26 s of CPU).
func BenchmarkDecodeJSONManyKeys(b *testing.B) {
	body := `{"nums":{` + manyKeys(50000) + `}}`
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var v struct {
			Nums map[string][]string `json:"nums"`
		}
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		if err := DecodeJSON(httptest.NewRecorder(), r, int64(len(body)), &v); err != nil {
			b.Fatal(err)
		}
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	ts := startServer(t, Config{})
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/nope", http.StatusNotFound},
		{"DELETE", "/v1/pops", http.StatusMethodNotAllowed},
		{"POST", "/v1/hosts/www.example.com", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			code, b := ts.do(t, tt.method, tt.path, tokAdmin, nil)
			var e APIError
			if code != tt.want || json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Errorf("%s %s = %d %s, want %d with a JSON error", tt.method, tt.path, code, b, tt.want)
			}
		})
	}
}

// TestNonCanonicalPathsAnswerJSON: a path with an empty or dot segment (an API base URL with a
// trailing slash makes "/v1//purge") gets the API's JSON 404 naming the canonical path, as
// every path the spec does not hold does, not net/http's redirect with an HTML body, which a
// script without -L took for an answer: nothing is done.
func TestNonCanonicalPathsAnswerJSON(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1})
	if code, b := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokAdmin, hostBody); code != http.StatusOK {
		t.Fatalf("PUT host = %d %s", code, b)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer noFollow.CloseIdleConnections()
	for _, tt := range []struct{ method, path, canonical string }{
		{"GET", "/v1//pops", "/v1/pops"},
		{"GET", "/v1/./routing", "/v1/routing"},
		{"GET", "/v1/hosts/x/../www.example.com", "/v1/hosts/www.example.com"},
		{"POST", "//v1/purge", "/v1/purge"},
		{"POST", "/v1/pops/par/../fra/drain", "/v1/pops/fra/drain"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{"host":"www.example.com","all":true}`)
			}
			req, err := http.NewRequestWithContext(t.Context(), tt.method, ts.base+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tokAdmin)
			req.Header.Set("Content-Type", "application/json")
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e APIError
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" ||
				json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, tt.canonical) {
				t.Errorf("%s %s = %d %q %s, want a JSON 404 naming %s", tt.method, tt.path, resp.StatusCode,
					resp.Header.Get("Content-Type"), b, tt.canonical)
			}
		})
	}
	if f := ts.fleet(t); len(f.PoPs) != 0 {
		t.Errorf("PoPs after the refused drain: %+v, want none", f.PoPs)
	}
}

// TestEncodedDotsAreNotPathSegments: a percent-encoded dot or slash is part of a segment, not
// a separator or a dot segment (RFC 3986 2.2), and ServeMux routes it as such; the
// canonical-path check does the same, so "/v1/hosts/%2e%2e" is the host "..", refused as an
// invalid hostname, not a 404 asking whether the client meant "/v1" (and
// ".../x%2F..%2Fwww.example.com" is not taken for another host's path).
func TestEncodedDotsAreNotPathSegments(t *testing.T) {
	ts := startServer(t, Config{})
	if code, b := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokAdmin, hostBody); code != http.StatusOK {
		t.Fatalf("PUT host = %d %s", code, b)
	}
	for _, p := range []string{"/v1/hosts/%2e", "/v1/hosts/%2e%2e", "/v1/hosts/%2E%2E"} {
		code, b := ts.do(t, "DELETE", p, tokAdmin, nil)
		var e APIError
		if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Field != "host" {
			t.Errorf("DELETE %s = %d %s, want 400 naming host", p, code, b)
		}
	}
	if code, b := ts.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil); code != http.StatusOK {
		t.Errorf("GET host = %d %s, want 200", code, b)
	}
}

func TestRegistrationExpiryAndDrain(t *testing.T) {
	ts := startServer(t, Config{})
	runRegistrar(t, ts.NATSURL(), wire.Node{PoP: "par", ID: "n1", City: "Paris", Capacity: 100}, 200*time.Millisecond)
	wait.For(t, 5*time.Second, "par in /v1/pops", func() bool {
		p, ok := findPoP(ts.fleet(t), "par")
		return ok && len(p.Nodes) == 1 && p.Healthy && !p.Draining
	})
	p, _ := findPoP(ts.fleet(t), "par")
	if p.RequestsPerSec != 10 || p.City != "Paris" || p.Utilisation != 0.1 {
		t.Errorf("par = %+v, want city Paris, 10 rps, utilisation 0.1", p)
	}

	code, b := ts.do(t, "POST", "/v1/pops/par/drain", tokConfigurer, nil)
	var ds DrainStatus
	if code != http.StatusOK || json.Unmarshal(b, &ds) != nil || !ds.Draining || ds.Nodes != 1 || ds.Note != "" {
		t.Fatalf("drain = %d %s, want 200 draining true, 1 node, no note", code, b)
	}
	wait.For(t, 5*time.Second, "par draining in /v1/pops", func() bool {
		p, ok := findPoP(ts.fleet(t), "par")
		return ok && p.Draining && p.OperatorDrained && !p.Healthy && len(p.Nodes) == 1 && p.Nodes[0].Draining
	})
	if code, b := ts.do(t, "POST", "/v1/pops/par/undrain", tokConfigurer, nil); code != http.StatusOK {
		t.Fatalf("undrain = %d %s, want 200", code, b)
	}
	wait.For(t, 5*time.Second, "par undrained in /v1/pops", func() bool {
		p, ok := findPoP(ts.fleet(t), "par")
		return ok && !p.Draining && !p.OperatorDrained && p.Healthy
	})

	// A PoP drained before any node joined shows up drained; the answer says that no node of
	// it is registered (a mistyped PoP id would otherwise pass in silence).
	code, b = ts.do(t, "POST", "/v1/pops/syd/drain", tokConfigurer, nil)
	ds = DrainStatus{}
	if code != http.StatusOK || json.Unmarshal(b, &ds) != nil || !ds.Draining || ds.Nodes != 0 ||
		!strings.Contains(ds.Note, `no node of PoP "syd" is registered`) {
		t.Fatalf("drain syd = %d %s, want 200 draining, 0 nodes and a note", code, b)
	}
	wait.For(t, 5*time.Second, "syd drained", func() bool {
		p, ok := findPoP(ts.fleet(t), "syd")
		return ok && p.Draining && len(p.Nodes) == 0
	})

	// A node that stops heartbeating without leaving disappears within the TTL.
	_, js := connect(t, ts.NATSURL())
	kv, _ := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	// Its one report is dated a second ahead, so the view does not age it out before a busy
	// machine looks (the bucket still expires the key one TTL after the put).
	dead, _ := json.Marshal(wire.Node{PoP: "fra", ID: "n9", Load: wire.LoadReport{At: time.Now().Add(time.Second), Healthy: true}})
	if _, err := kv.Put(t.Context(), wire.FleetKey("fra", "n9"), dead); err != nil {
		t.Fatalf("put: %v", err)
	}
	wait.For(t, 5*time.Second, "fra in /v1/pops", func() bool { _, ok := findPoP(ts.fleet(t), "fra"); return ok })
	wait.For(t, 6*time.Second, "silent fra to expire", func() bool { _, ok := findPoP(ts.fleet(t), "fra"); return !ok })

	if code, _ := ts.do(t, "POST", "/v1/pops/Not%20A%20PoP/drain", tokConfigurer, nil); code != http.StatusBadRequest {
		t.Errorf("drain of invalid pop = %d, want 400", code)
	}
}

func TestConfigChangeReachesNodes(t *testing.T) {
	ts := startServer(t, Config{})
	// The config view an edge would run, on its own connection.
	_, js := connect(t, ts.NATSURL())
	cv := fleet.NewConfigView(fleet.ConfigViewConfig{JS: js})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = cv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-cv.Ready()

	if code, b := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokConfigurer, hostBody); code != http.StatusOK {
		t.Fatalf("PUT host = %d %s, want 200", code, b)
	}
	wait.For(t, 5*time.Second, "host at the node", func() bool {
		h, ok := cv.Host("www.example.com")
		return ok && h.Origin == "http://127.0.0.1:8080" && h.Cache.SortQuery
	})
	changed := []byte(`{"origin":"https://origin.example.net","shield":"fra"}`)
	if code, b := ts.do(t, "PUT", "/v1/hosts/WWW.Example.com", tokConfigurer, changed); code != http.StatusOK {
		t.Fatalf("PUT changed host = %d %s, want 200", code, b)
	}
	wait.For(t, 5*time.Second, "changed host at the node", func() bool {
		h, ok := cv.Host("www.example.com")
		return ok && h.Origin == "https://origin.example.net" && h.Shield == "fra"
	})
	code, b := ts.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil)
	if code != http.StatusOK || !strings.Contains(string(b), "origin.example.net") {
		t.Errorf("GET host = %d %s, want 200 with the new origin", code, b)
	}
	wait.For(t, 5*time.Second, "host in GET /v1/hosts", func() bool {
		_, b := ts.do(t, "GET", "/v1/hosts", tokReader, nil)
		return strings.Contains(string(b), "origin.example.net")
	})
	// An invalid config is refused and never reaches the node.
	if code, _ := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokConfigurer, []byte(`{"origin":"gopher://x"}`)); code != http.StatusBadRequest {
		t.Errorf("PUT invalid = %d, want 400", code)
	}
	if code, _ := ts.do(t, "PUT", "/v1/routing", tokConfigurer, []byte(`{"policy":"least-loaded","radius_km":900}`)); code != http.StatusOK {
		t.Errorf("PUT routing = %d, want 200", code)
	}
	wait.For(t, 5*time.Second, "routing at the node", func() bool { return cv.Routing().Policy == "least-loaded" })
	if h, _ := cv.Host("www.example.com"); h.Origin != "https://origin.example.net" {
		t.Errorf("after refused PUT, node has origin %q, want the last good one", h.Origin)
	}
	if code, _ := ts.do(t, "DELETE", "/v1/hosts/www.example.com", tokConfigurer, nil); code != http.StatusNoContent {
		t.Errorf("DELETE = %d, want 204", code)
	}
	wait.For(t, 5*time.Second, "host gone at the node", func() bool { _, ok := cv.Host("www.example.com"); return !ok })
	if code, _ := ts.do(t, "DELETE", "/v1/hosts/www.example.com", tokConfigurer, nil); code != http.StatusNotFound {
		t.Errorf("second DELETE = %d, want 404", code)
	}
}

func TestRestartKeepsConfig(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{StoreDir: dir})
	if code, b := ts.do(t, "PUT", "/v1/hosts/www.example.com", tokConfigurer, hostBody); code != http.StatusOK {
		t.Fatalf("PUT host = %d %s", code, b)
	}
	ts.stop()
	ts2 := startServer(t, Config{StoreDir: dir})
	code, b := ts2.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil)
	var hc wire.HostConfig
	_ = json.Unmarshal(b, &hc)
	if code != http.StatusOK || hc.Origin != "http://127.0.0.1:8080" || !hc.Cache.SortQuery {
		t.Errorf("after restart GET host = %d %s, want the stored config", code, b)
	}
}

func TestExternalNATSRestart(t *testing.T) {
	ns := startNATS(t)
	ts := startServer(t, Config{NATSURL: ns.URL()})
	// A second control against the same cluster changes nothing (buckets already there).
	ts2 := startServer(t, Config{NATSURL: ns.URL()})
	ts2.stop()
	runRegistrar(t, ns.URL(), wire.Node{PoP: "sin", ID: "n1"}, 100*time.Millisecond)
	wait.For(t, 5*time.Second, "sin in /v1/pops", func() bool { _, ok := findPoP(ts.fleet(t), "sin"); return ok })

	ns.Stop()
	wait.For(t, 5*time.Second, "healthz to report NATS down", func() bool {
		code, _ := ts.do(t, "GET", "/healthz", "", nil)
		return code == http.StatusServiceUnavailable
	})
	ns.Restart()
	restarted := time.Now()
	wait.For(t, 15*time.Second, "sin re-registered after NATS restart", func() bool {
		p, ok := findPoP(ts.fleet(t), "sin")
		return ok && len(p.Nodes) == 1 && p.Nodes[0].Load.At.After(restarted)
	})
	wait.For(t, 5*time.Second, "healthz ok again", func() bool {
		code, _ := ts.do(t, "GET", "/healthz", "", nil)
		return code == http.StatusOK
	})
}

func TestHandleAfterRunPanics(t *testing.T) {
	ts := startServer(t, Config{})
	defer func() {
		if recover() == nil {
			t.Error("Handle after Serve did not panic")
		}
	}()
	ts.Handle("GET /late", ScopeRead, http.NotFoundHandler())
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no tokens", Config{}},
		{"missing tokens file", Config{TokensFile: "testdata/nope.yaml"}},
		{"bad nats listen", Config{TokensFile: "testdata/tokens.yaml", NATSListen: "nohostport"}},
	}
	t.Setenv(TokensFileEnv, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Errorf("New(%s) = nil error, want one", tt.name)
			}
		})
	}
	t.Setenv(TokensFileEnv, "testdata/tokens.yaml")
	if _, err := New(Config{}); err != nil {
		t.Errorf("New with $%s = %v, want nil", TokensFileEnv, err)
	}
}

// TestEveryRouteEveryToken holds every registered route to the scope matrix of
// docs/control.md ("Tokens"), with every kind of token: none, an unknown one, one per scope, one with
// every scope, and host-scoped ones limited to the route's host or to another. The matrix is
// written out here rather than read from Routes(), so that a route whose scope or host
// handling drifts from the documentation fails, and a new route must be added to it.
func TestEveryRouteEveryToken(t *testing.T) {
	const (
		tokShopAll   = "shop-all-secret-0123456789"
		tokShopRead  = "shop-read-secret-0123456789"
		tokElsewhere = "elsewhere-secret-0123456789"
	)
	all := []string{ScopeRead, ScopePurge, ScopeConfig}
	ts := startServer(t, Config{PurgeRate: -1, Tokens: []Token{
		{Name: "shop-all", Token: tokShopAll, Scopes: all, Hosts: []string{"www.example.com"}},
		{Name: "shop-read", Token: tokShopRead, Scopes: []string{ScopeRead}, Hosts: []string{"*.example.com"}},
		{Name: "elsewhere", Token: tokElsewhere, Scopes: all, Hosts: []string{"other.example.net"}},
	}})
	// The documented matrix: the scope each route needs, and whether it acts on one host
	// (host-scoped tokens may use it for their hosts) or on the fleet (they may not).
	matrix := map[string]struct {
		scope string
		host  bool
	}{
		"GET /healthz":                       {"", false},
		"GET /metrics":                       {ScopeRead, false},
		"GET /v1/pops":                       {ScopeRead, false},
		"GET /v1/hosts":                      {ScopeRead, true},
		"GET /v1/hosts/{host}":               {ScopeRead, true},
		"GET /v1/routing":                    {ScopeRead, false},
		"POST /v1/pops/{pop}/drain":          {ScopeConfig, false},
		"POST /v1/pops/{pop}/undrain":        {ScopeConfig, false},
		"PUT /v1/hosts/{host}":               {ScopeConfig, true},
		"DELETE /v1/hosts/{host}":            {ScopeConfig, true},
		"PUT /v1/routing":                    {ScopeConfig, false},
		"POST /v1/peer-keys/rotate":          {ScopeConfig, false},
		"POST /v1/purge":                     {ScopePurge, true},
		"GET /v1/purges/{id}":                {ScopePurge, true},
		"DELETE /v1/purges/{id}/unreachable": {ScopePurge, true},
	}
	routes := ts.Routes()
	for _, rt := range routes {
		m, ok := matrix[rt.Pattern]
		if !ok {
			t.Errorf("route %s (scope %q) is not in the documented matrix", rt.Pattern, rt.Scope)
		} else if m.scope != rt.Scope {
			t.Errorf("route %s needs scope %q, documented %q", rt.Pattern, rt.Scope, m.scope)
		}
	}
	if len(routes) != len(matrix) {
		t.Errorf("%d routes registered, %d documented", len(routes), len(matrix))
	}

	const host = "www.example.com"
	putHost := func(t *testing.T) {
		t.Helper()
		if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: host, Origin: "http://127.0.0.1:8080"}); err != nil {
			t.Fatalf("PutHost: %v", err)
		}
	}
	putHost(t)
	purgeBody := []byte(`{"host":"www.example.com","all":true}`)
	code, b := ts.do(t, "POST", "/v1/purge", tokAdmin, purgeBody)
	var pr struct{ ID string }
	if err := json.Unmarshal(b, &pr); code != http.StatusAccepted || err != nil {
		t.Fatalf("POST /v1/purge = %d %s, want 202 with an id", code, b)
	}

	type tokenKind struct {
		name, secret string
		scopes       []string
		hosts        []string // nil: every host
	}
	tokens := []tokenKind{
		{"none", "", nil, nil},
		{"unknown", "not-a-real-token-0123456789", nil, nil},
		{"reader", tokReader, []string{ScopeRead}, nil},
		{"purger", tokPurger, []string{ScopePurge}, nil},
		{"configurer", tokConfigurer, []string{ScopeConfig}, nil},
		{"admin", tokAdmin, all, nil},
		{"shop-all", tokShopAll, all, []string{host}},
		{"shop-read", tokShopRead, []string{ScopeRead}, []string{"*.example.com"}},
		{"elsewhere", tokElsewhere, all, []string{"other.example.net"}},
	}
	for _, rt := range routes {
		m := matrix[rt.Pattern]
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{pop}", "par", "{host}", host, "{id}", pr.ID).Replace(path)
		var body []byte
		switch rt.Pattern {
		case "POST /v1/purge":
			body = purgeBody
		case "PUT /v1/hosts/{host}":
			body = hostBody
		case "PUT /v1/routing":
			body = []byte(`{"policy":"nearest"}`)
		}
		for _, tk := range tokens {
			// What docs/control.md says this token gets on this route.
			want := http.StatusOK
			inScope := (&authToken{hosts: tk.hosts}).allowsHost(host)
			switch {
			case m.scope == "":
			case tk.scopes == nil:
				want = http.StatusUnauthorized
			case !slices.Contains(tk.scopes, m.scope):
				want = http.StatusForbidden
			case tk.hosts != nil && !m.host:
				want = http.StatusForbidden // fleet-wide
			case !inScope && rt.Pattern != "GET /v1/hosts":
				want = http.StatusForbidden // another host's
			}
			t.Run(rt.Pattern+"/"+tk.name, func(t *testing.T) {
				putHost(t)
				code, b := ts.do(t, method, path, tk.secret, body)
				if want == http.StatusOK {
					if code/100 != 2 {
						t.Fatalf("%s as %s = %d %s, want 2xx", rt.Pattern, tk.name, code, b)
					}
				} else if code != want {
					t.Fatalf("%s as %s = %d %s, want %d", rt.Pattern, tk.name, code, b, want)
				}
				if rt.Pattern == "GET /v1/hosts" && code == http.StatusOK {
					var l HostList
					if err := json.Unmarshal(b, &l); err != nil {
						t.Fatal(err)
					}
					for _, h := range l.Hosts {
						if !(&authToken{hosts: tk.hosts}).allowsHost(h.Host) {
							t.Errorf("GET /v1/hosts as %s lists %s, outside its hosts %v", tk.name, h.Host, tk.hosts)
						}
					}
				}
			})
		}
	}

	// Other spellings of the same host name the same host: in scope for the token limited to
	// it, out of scope for the others.
	for _, spelling := range []string{"WWW.EXAMPLE.COM", "www.example.com.", "Www.Example.Com."} {
		body, _ := json.Marshal(map[string]any{"host": spelling, "all": true})
		if code, b := ts.do(t, "POST", "/v1/purge", tokShopAll, body); code != http.StatusAccepted {
			t.Errorf("purge of %q as shop-all = %d %s, want 202", spelling, code, b)
		}
		if code, b := ts.do(t, "POST", "/v1/purge", tokElsewhere, body); code != http.StatusForbidden {
			t.Errorf("purge of %q as elsewhere = %d %s, want 403", spelling, code, b)
		}
		if code, b := ts.do(t, "GET", "/v1/hosts/"+strings.TrimSuffix(spelling, "."), tokElsewhere, nil); code != http.StatusForbidden {
			t.Errorf("GET /v1/hosts/%s as elsewhere = %d %s, want 403", spelling, code, b)
		}
	}
}

// TestDocumentedFlagDefaults holds `meridian control`'s flags and New's defaults to the flag
// table of docs/control.md.
func TestDocumentedFlagDefaults(t *testing.T) {
	t.Setenv(TokensFileEnv, "testdata/tokens.yaml")
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	flags := NewCommand().Flags()
	for _, tt := range []struct {
		flag, doc  string
		normalised any // New's value for the zero Config
		want       any
	}{
		{"listen", "127.0.0.1:7070", s.cfg.Listen, "127.0.0.1:7070"},
		{"tls-cert", "", s.cfg.TLSCert, ""},
		{"tls-key", "", s.cfg.TLSKey, ""},
		{"insecure-http", "false", s.cfg.InsecureHTTP, false},
		{"trusted-proxies", "[]", len(s.cfg.TrustedProxies), 0},
		{"nats", "", s.cfg.NATSURL, ""},
		{"nats-creds", "", s.cfg.NATSCreds, ""},
		{"nats-listen", "127.0.0.1:4222", s.cfg.NATSListen, "127.0.0.1:4222"},
		{"store-dir", "meridian-control-data", s.cfg.StoreDir, "meridian-control-data"},
		{"tokens", "", s.cfg.TokensFile, "testdata/tokens.yaml"}, // $MERIDIAN_TOKENS_FILE
		{"prefix", "", s.cfg.Prefix, ""},                         // "" is "meridian"
		{"heartbeat-ttl", "0s", s.cfg.HeartbeatTTL, 3 * time.Second},
		{"replicas", "1", s.cfg.Replicas, 1},
		{"max-body-bytes", "1048576", s.cfg.MaxBodyBytes, int64(1048576)},
		{"purge-retention", "24h0m0s", s.cfg.PurgeRetention, 24 * time.Hour},
		{"purge-rate", "50", s.cfg.PurgeRate, 50.0},
		{"purge-burst", "100", s.cfg.PurgeBurst, 100},
	} {
		f := flags.Lookup(tt.flag)
		if f == nil {
			t.Errorf("--%s: no such flag", tt.flag)
			continue
		}
		if f.DefValue != tt.doc {
			t.Errorf("--%s: flag default %q, want %q", tt.flag, f.DefValue, tt.doc)
		}
		if tt.normalised != tt.want {
			t.Errorf("--%s: New's default %v, docs/control.md says %v", tt.flag, tt.normalised, tt.want)
		}
	}
}

// TestNewRefusesNegativeFlags: a negative count, size or duration is refused naming its flag,
// not silently replaced by the default; an out-of-range --listen port is refused at New.
func TestNewRefusesNegativeFlags(t *testing.T) {
	t.Setenv(TokensFileEnv, "testdata/tokens.yaml")
	for _, tt := range []struct {
		flag string
		cfg  Config
	}{
		{"--heartbeat-ttl", Config{HeartbeatTTL: -time.Second}},
		{"--replicas", Config{Replicas: -3}},
		{"--max-body-bytes", Config{MaxBodyBytes: -1}},
		{"--purge-retention", Config{PurgeRetention: -time.Hour}},
		{"--purge-burst", Config{PurgeBurst: -1}},
		{"--listen", Config{Listen: "127.0.0.1:99999"}},
	} {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("New with bad %s: error %v, want one naming %s", tt.flag, err, tt.flag)
		}
	}
}

// TestNATSErrorsLogged: an asynchronous error on control's own NATS connection (here a
// subscription that fell behind) reaches control's log, and once, however often it recurs within
// the minute, rather than nats.go's default line on stderr.
func TestNATSErrorsLogged(t *testing.T) {
	logs := &logtest.Warnings{}
	ts := startServer(t, Config{Logger: slog.New(logs)})
	<-ts.Ready()
	nc := ts.Conn()
	for i := range 3 {
		subject := "test.slow." + strconv.Itoa(i)
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.SetPendingLimits(1, -1); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			if err := nc.Publish(subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if dropped, err := sub.Dropped(); err != nil || dropped == 0 {
			t.Fatalf("subscription %d dropped %d (%v), want some", i, dropped, err)
		}
	}
	wait.For(t, 5*time.Second, "the slow consumer logged", func() bool { return logs.Count("nats error") == 1 })
	// The other two fell behind within the minute: counted, not logged.
	if got := logs.Count("nats error"); got != 1 {
		t.Errorf("%d nats error lines, want 1", got)
	}
}

// TestReadyLogNamesPrefixInUse: with the default --prefix the ready line and Prefix name the
// prefix in use, "meridian", not the empty flag value (prefix="" read as no prefix at all).
func TestReadyLogNamesPrefixInUse(t *testing.T) {
	logs := &logtest.Buffer{}
	ts := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if got := ts.Prefix(); got != wire.DefaultPrefix {
		t.Errorf("Prefix() = %q, want %q", got, wire.DefaultPrefix)
	}
	var ready string
	wait.For(t, 5*time.Second, "the ready line", func() bool { // logged just after Ready closes
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `msg="control plane ready"`) {
				ready = line
			}
		}
		return ready != ""
	})
	if !strings.Contains(ready, " prefix="+wire.DefaultPrefix) {
		t.Errorf("ready line %q, want prefix=%s", ready, wire.DefaultPrefix)
	}
}

// TestGETRoutesRefuseUnknownQueryParameters: the API's GET routes take no query parameter, so
// one given is an operator's mistake (GET /v1/hosts?hsot=a.example, or ?host= believed to
// filter) that would otherwise silently answer with everything: 400 naming it, as the routes
// that take parameters answer a misspelt one. Each route still answers without one. /healthz
// is the exception: probes and load balancers may add a query, and nothing it answers
// depends on one.
func TestGETRoutesRefuseUnknownQueryParameters(t *testing.T) {
	ts := startServer(t, Config{})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: "www.example.com", Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	code, b := ts.do(t, "POST", "/v1/purge", tokPurger, []byte(`{"host":"www.example.com","all":true}`))
	var pr purge.Response
	if code != http.StatusAccepted || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("purge = %d %s, want 202", code, b)
	}
	routes := []struct {
		path  string
		token string
	}{
		{"/metrics", tokReader},
		{"/v1/pops", tokReader},
		{"/v1/hosts", tokReader},
		{"/v1/hosts/www.example.com", tokReader},
		{"/v1/routing", tokReader},
		{"/v1/purges/" + pr.ID, tokPurger},
	}
	queries := []struct {
		name, query string
		field       string // "" for a query that does not parse
	}{
		{"misspelt filter", "?hsot=www.example.com", "hsot"},
		{"filter the route does not have", "?host=www.example.com", "host"},
		{"empty value", "?verbose", "verbose"},
		{"second of two", "?a=1&b=2", "a"},
		{"does not parse", "?host=a;b", ""},
	}
	for _, rt := range routes {
		t.Run(strings.TrimPrefix(rt.path, "/"), func(t *testing.T) {
			for _, q := range []string{"", "?"} {
				if code, b := ts.do(t, "GET", rt.path+q, rt.token, nil); code != http.StatusOK {
					t.Errorf("GET %s%s = %d %.200s, want 200", rt.path, q, code, b)
				}
			}
			for _, tt := range queries {
				code, b := ts.do(t, "GET", rt.path+tt.query, rt.token, nil)
				var e APIError
				if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Field != tt.field {
					t.Errorf("%s: GET %s%s = %d %.200s, want 400 with field %q", tt.name, rt.path, tt.query, code, b, tt.field)
				}
			}
			// The token is checked first: without one, the query is not looked at.
			if code, b := ts.do(t, "GET", rt.path+"?hsot=x", "", nil); code != http.StatusUnauthorized {
				t.Errorf("GET %s?hsot=x without a token = %d %.200s, want 401", rt.path, code, b)
			}
		})
	}
	// /metrics keeps promhttp's own filter: only the families named.
	code, b = ts.do(t, "GET", "/metrics?name[]=meridian_purges_total&name%5B%5D=go_goroutines", tokReader, nil)
	if code != http.StatusOK || !strings.Contains(string(b), "go_goroutines ") || strings.Contains(string(b), "go_threads") {
		t.Errorf("GET /metrics?name[]=... = %d %.300s, want 200 with go_goroutines and without go_threads", code, b)
	}
	if code, b := ts.do(t, "GET", "/healthz?probe=lb&_=1", "", nil); code != http.StatusOK {
		t.Errorf("GET /healthz with a query = %d %s, want 200", code, b)
	}
}

// TestEveryRouteRefusesUnknownQueryParameters: no built-in route but /healthz answers a query
// parameter it does not take as if it had not been given, the routes that change something
// least of all: DELETE /v1/hosts/{host}?dry_run=1 would delete the host. Each is 400 naming
// the parameter, and nothing is done.
func TestEveryRouteRefusesUnknownQueryParameters(t *testing.T) {
	ts := startServer(t, Config{})
	const host = "www.example.com"
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: host, Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	code, b := ts.do(t, "POST", "/v1/purge", tokAdmin, []byte(`{"host":"`+host+`","all":true}`))
	var pr purge.Response
	if code != http.StatusAccepted || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("purge = %d %s, want 202", code, b)
	}
	_, routingBefore := ts.do(t, "GET", "/v1/routing", tokAdmin, nil)
	bodies := map[string]string{
		"POST /v1/purge":            `{"host":"` + host + `","all":true}`,
		"PUT /v1/hosts/{host}":      `{"host":"new.example.com","origin":"http://127.0.0.1:8080"}`,
		"PUT /v1/routing":           `{"policy":"least-loaded"}`,
		"POST /v1/peer-keys/rotate": ``,
	}
	paths := strings.NewReplacer("{pop}", "par", "{host}", host, "{id}", pr.ID)
	for _, rt := range ts.Routes() {
		if rt.Pattern == "GET /healthz" {
			continue
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = paths.Replace(path)
		if rt.Pattern == "PUT /v1/hosts/{host}" {
			path = "/v1/hosts/new.example.com"
		}
		t.Run(rt.Pattern, func(t *testing.T) {
			code, b := ts.do(t, method, path+"?dry_run=1", tokAdmin, []byte(bodies[rt.Pattern]))
			var e APIError
			if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Field != "dry_run" {
				t.Errorf("%s %s?dry_run=1 = %d %.200s, want 400 with field \"dry_run\"", method, path, code, b)
			}
		})
	}
	// Nothing was done.
	if code, b := ts.do(t, "GET", "/v1/hosts/"+host, tokAdmin, nil); code != http.StatusOK {
		t.Errorf("GET /v1/hosts/%s after DELETE ?dry_run=1 = %d %s, want 200 (not deleted)", host, code, b)
	}
	if code, b := ts.do(t, "GET", "/v1/hosts/new.example.com", tokAdmin, nil); code != http.StatusNotFound {
		t.Errorf("GET /v1/hosts/new.example.com after PUT ?dry_run=1 = %d %s, want 404 (not stored)", code, b)
	}
	if _, b := ts.do(t, "GET", "/v1/routing", tokAdmin, nil); !bytes.Equal(b, routingBefore) {
		t.Errorf("GET /v1/routing after PUT ?dry_run=1 = %s, want %s (unchanged)", b, routingBefore)
	}
}

// TestConfigOverNATSPayloadIs413: with --max-body-bytes above what one NATS message carries
// (max_payload, 1 MiB by default), a host config or routing policy the body limit lets through
// may still be too large to store. That was a 503 ("nats: maximum payload exceeded"), which
// tells a client to retry what can never succeed; it is a 413 naming the bound, and nothing is
// stored.
func TestConfigOverNATSPayloadIs413(t *testing.T) {
	ts := startServer(t, Config{MaxBodyBytes: 4 << 20})
	headers := make(map[string]string, 2000)
	for i := range 2000 {
		headers[fmt.Sprintf("X-H%d", i)] = strings.Repeat("v", 1000)
	}
	host, err := json.Marshal(wire.HostConfig{Origin: "http://127.0.0.1:9", RequestHeaders: wire.RequestHeaders{Set: headers}})
	if err != nil {
		t.Fatal(err)
	}
	weights := make(map[string]float64, 100000)
	for i := range 100000 {
		weights[fmt.Sprintf("pop-%d", i)] = 1
	}
	routing, err := json.Marshal(wire.RoutingPolicy{Policy: "weighted", Weights: weights})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		body       []byte
	}{
		{"host config", "/v1/hosts/www.example.com", host},
		{"routing policy", "/v1/routing", routing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.body) <= 1<<20 || len(tt.body) > 4<<20 {
				t.Fatalf("body of %d bytes, want one between NATS's 1 MiB and the 4 MiB body limit", len(tt.body))
			}
			code, b := ts.do(t, "PUT", tt.path, tokAdmin, tt.body)
			var e APIError
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("PUT %s = %d %.200s, not a JSON error: %v", tt.path, code, b, err)
			}
			if code != http.StatusRequestEntityTooLarge || !strings.Contains(e.Error, "bytes NATS carries") {
				t.Errorf("PUT %s (%d bytes) = %d %q, want 413 naming the bytes NATS carries", tt.path, len(tt.body), code, e.Error)
			}
		})
	}
	if code, b := ts.do(t, "GET", "/v1/hosts/www.example.com", tokReader, nil); code != http.StatusNotFound {
		t.Errorf("GET the refused host = %d %.200s, want 404", code, b)
	}
	if rp, err := fleet.GetRouting(t.Context(), ts.JetStream(), ""); err != nil || rp.Policy != "" {
		t.Errorf("stored routing policy = %+v, %v; want none", rp.Policy, err)
	}
}

// TestGetHostRefusesMismatchedKey: a host config whose host is not the one its key names
// (written behind the API's back) is one the config view skips, so no edge started since
// serves it and GET /v1/hosts does not list it; GET /v1/hosts/{host} answered 200 with it, a
// config for another host than the one asked for. It answers 503 naming the mismatch, as for
// a value that does not decode; a purge of the key's host is still taken (edges running since
// before the write keep its last good config).
func TestGetHostRefusesMismatchedKey(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1})
	kv, err := ts.JetStream().KeyValue(t.Context(), wire.Bucket("", wire.ConfigBucket))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), wire.HostKey("other.example.com"), []byte(`{"host":"evil.example.com","origin":"http://127.0.0.1:1"}`)); err != nil {
		t.Fatal(err)
	}
	code, b := ts.do(t, "GET", "/v1/hosts/other.example.com", tokReader, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(b), "does not match") {
		t.Errorf("GET /v1/hosts/other.example.com = %d %s, want 503 naming the mismatch", code, b)
	}
	if code, b := ts.do(t, "GET", "/v1/hosts", tokReader, nil); code != http.StatusOK || strings.Contains(string(b), "example.com") {
		t.Errorf("GET /v1/hosts = %d %s, want 200 listing neither host", code, b)
	}
	if code, b := ts.do(t, "POST", "/v1/purge?wait=0", tokAdmin, []byte(`{"host":"other.example.com","all":true}`)); code != http.StatusAccepted {
		t.Errorf("purge of other.example.com = %d %s, want 202", code, b)
	}
}
