package purge

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// fakeAPI stands in for the control API's POST /v1/purge until the real one exists.
type fakeAPI struct {
	mu       sync.Mutex // guards requests
	requests []seenRequest
	status   int
	body     []byte
}

type seenRequest struct {
	method, path, wait, auth, contentType string
	req                                   Request
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req Request
	data, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(data, &req)
	f.mu.Lock()
	f.requests = append(f.requests, seenRequest{r.Method, r.URL.Path, r.URL.Query().Get("wait"), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), req})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	_, _ = w.Write(f.body)
}

func startAPI(t *testing.T, status int, body []byte) (*fakeAPI, string) {
	t.Helper()
	api := &fakeAPI{status: status, body: body}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(api)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return api, srv.URL
}

func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestCommand(t *testing.T) {
	receipt, err := os.ReadFile(filepath.Join("testdata", "receipt.json"))
	if err != nil {
		t.Fatal(err)
	}
	complete, err := json.Marshal(Response{ID: "r1", Complete: true, DurationMs: 1.5, Purges: []Receipt{}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("request and table", func(t *testing.T) {
		api, url := startAPI(t, http.StatusOK, receipt)
		out, err := runCommand(t, "--api", url, "--token", "s3cret", "--host", "www.example.com",
			"--url", "/a", "--url", "https://www.example.com/b", "--key", "k1", "--soft", "--wait", "1500ms")
		if err == nil || !strings.Contains(err.Error(), "1 node acks still pending") {
			t.Errorf("error = %v, want one saying 1 node ack is pending", err)
		}
		if len(api.requests) != 1 {
			t.Fatalf("API got %d requests, want 1", len(api.requests))
		}
		got := api.requests[0]
		want := seenRequest{"POST", "/v1/purge", "1.5s", "Bearer s3cret", "application/json",
			Request{Host: "www.example.com", URLs: []string{"/a", "https://www.example.com/b"}, Keys: []string{"k1"}, Soft: true}}
		if got.method != want.method || got.path != want.path || got.wait != want.wait || got.auth != want.auth ||
			got.contentType != want.contentType || got.req.Host != want.req.Host || !slices.Equal(got.req.URLs, want.req.URLs) ||
			!slices.Equal(got.req.Keys, want.req.Keys) || !got.req.Soft || got.req.All {
			t.Errorf("API saw %+v, want %+v", got, want)
		}
		golden := filepath.Join("testdata", "receipt.golden")
		if *update {
			if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		wantOut, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(wantOut) {
			t.Errorf("output:\n%s\nwant:\n%s", out, wantOut)
		}
	})

	t.Run("json and token from env", func(t *testing.T) {
		t.Setenv(TokenEnv, "from-env")
		api, url := startAPI(t, http.StatusOK, complete)
		out, err := runCommand(t, "--api", url, "--host", "a.example", "--all", "--json", "--wait", "0")
		if err != nil {
			t.Fatalf("error = %v, want nil", err)
		}
		var r Response
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.ID != "r1" || !r.Complete {
			t.Errorf("output %q decodes to %+v, %v; want the API's response", out, r, err)
		}
		if got := api.requests[0]; got.auth != "Bearer from-env" || got.wait != "" || !got.req.All {
			t.Errorf("API saw auth %q wait %q all %v, want Bearer from-env, no wait, all", got.auth, got.wait, got.req.All)
		}
	})

	t.Run("server refusal", func(t *testing.T) {
		_, url := startAPI(t, http.StatusBadRequest, []byte(`{"error":"nope.example is not configured: not in the config bucket, nor in the config file of any live node","field":"host"}`))
		_, err := runCommand(t, "--api", url, "--token", "s3cret", "--host", "nope.example", "--all")
		if err == nil || !strings.Contains(err.Error(), "(400): host: nope.example is not configured: not in the config bucket") {
			t.Errorf("error = %v, want the API's field and message", err)
		}
	})

	t.Run("non-json refusal", func(t *testing.T) {
		_, url := startAPI(t, http.StatusTooManyRequests, []byte("slow down\n"))
		_, err := runCommand(t, "--api", url, "--token", "s3cret", "--host", "a.example", "--all")
		if err == nil || !strings.Contains(err.Error(), "Too Many Requests: slow down") {
			t.Errorf("error = %v, want the status and body", err)
		}
	})

	invalid := []struct {
		name string
		args []string
		want string
	}{
		{"no host", []string{"--all"}, `"host" not set`},
		{"nothing to purge", []string{"--host", "a.example"}, "urls: nothing to purge"},
		{"foreign url", []string{"--host", "a.example", "--url", "https://b.example/"}, "urls[0]"},
		{"bad prefix", []string{"--host", "a.example", "--prefix", "x"}, "prefixes[0]"},
		{"bad api", []string{"--host", "a.example", "--all", "--api", "ftp://x"}, "--api"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			api, url := startAPI(t, http.StatusOK, complete)
			args := append([]string{"--api", url}, tt.args...)
			if _, err := runCommand(t, args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
			if tt.name != "bad api" && len(api.requests) != 0 {
				t.Errorf("API got %d requests for an invalid purge, want 0", len(api.requests))
			}
		})
	}
}

// startTLSAPI serves a fake API over TLS on 127.0.0.1 and returns its URL and the PEM file of
// the CA its certificate chains to.
func startTLSAPI(t *testing.T, status int, body []byte) (*fakeAPI, string, string) {
	t.Helper()
	api := &fakeAPI{status: status, body: body}
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return api, srv.URL, ca
}

func TestCommandTLS(t *testing.T) {
	complete, err := json.Marshal(Response{ID: "r1", Complete: true, Purges: []Receipt{}})
	if err != nil {
		t.Fatal(err)
	}
	api, url, ca := startTLSAPI(t, http.StatusOK, complete)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("test API at %s, want https on 127.0.0.1", url)
	}
	t.Run("private CA from --ca", func(t *testing.T) {
		if _, err := runCommand(t, "--api", url, "--ca", ca, "--token", "t", "--host", "a.example", "--all"); err != nil {
			t.Errorf("purge over https with --ca = %v, want nil", err)
		}
	})
	t.Run("private CA from env", func(t *testing.T) {
		t.Setenv(CAEnv, ca)
		if _, err := runCommand(t, "--api", url, "--token", "t", "--host", "a.example", "--all"); err != nil {
			t.Errorf("purge over https with $%s = %v, want nil", CAEnv, err)
		}
	})
	t.Run("unknown CA", func(t *testing.T) {
		t.Setenv(CAEnv, "")
		n := len(api.requests)
		_, err := runCommand(t, "--api", url, "--token", "t", "--host", "a.example", "--all")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("purge over https without the CA = %v, want a certificate error", err)
		}
		if len(api.requests) != n {
			t.Errorf("the API got the request despite the untrusted certificate")
		}
	})
	t.Run("bad CA file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.pem")
		if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runCommand(t, "--api", url, "--ca", bad, "--host", "a.example", "--all"); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
			t.Errorf("purge with a bad --ca = %v, want a refusal", err)
		}
	})
}

// TestCommandRefusesPlainHTTPOffLoopback: the CLI refuses to send its token in clear to an
// address that is not loopback, before any connection (no traffic leaves the machine).
func TestCommandRefusesPlainHTTPOffLoopback(t *testing.T) {
	for _, api := range []string{"http://10.1.2.3:7070", "http://control.example.net:7070", "http://[2001:db8::1]:7070"} {
		t.Run(api, func(t *testing.T) {
			_, err := runCommand(t, "--api", api, "--token", "t", "--host", "a.example", "--all")
			if err == nil || !strings.Contains(err.Error(), "in clear") || !strings.Contains(err.Error(), "https") {
				t.Errorf("purge --api %s = %v, want a refusal asking for https", api, err)
			}
		})
	}
	for _, api := range []string{"http://127.0.0.1:7070", "http://localhost:7070", "http://[::1]:7070", "https://10.1.2.3:7070"} {
		u, _ := url.Parse(api)
		if err := checkAPI(u); err != nil {
			t.Errorf("checkAPI(%s) = %v, want nil", api, err)
		}
	}
}

// TestCommandPrintsUnreachable: nodes that left the registry read unreachable (and gone ones
// gone) in the table, and the error says how to stop waiting for them.
func TestCommandPrintsUnreachable(t *testing.T) {
	resp := Response{ID: "r1", Purges: []Receipt{{
		ID: "r1-all", Seq: 7, Kind: KindAll,
		PoPs: []PoPReceipt{{PoP: "ams", Nodes: []NodeAck{
			{Node: "n1", Status: NodeUnreachable}, {Node: "n2", Status: NodeGone}, {Node: "n3", Status: NodePending},
		}}},
		Pending:     []NodeRef{{"ams", "n1"}, {"ams", "n3"}},
		Unreachable: []NodeRef{{"ams", "n1"}},
	}}}
	body, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	_, url := startAPI(t, http.StatusAccepted, body)
	out, err := runCommand(t, "--api", url, "--token", "s3cret", "--host", "a.example", "--all", "--wait", "1s")
	for _, row := range []string{"n1    unreachable", "n2    gone", "n3    pending"} {
		if !strings.Contains(out, row) {
			t.Errorf("output lacks %q:\n%s", row, out)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "2 node acks still pending") || !strings.Contains(err.Error(), "DELETE /v1/purges/r1/unreachable") {
		t.Errorf("error = %v, want 2 pending and how to declare the unreachable one gone", err)
	}
}

// TestCommandWarnsOfNoNode: a purge issued while no node is registered is complete (no node
// is expected to ack), and the command read "complete" with an empty table and exit 0, which
// an operator took for the content purged everywhere when nothing confirmed it. It says 0 of
// 0 nodes, and warns on stderr (with --json too) that no node was registered; the exit stays 0,
// as the purge itself succeeded. The answer is the one control gives for an empty fleet.
func TestCommandWarnsOfNoNode(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "receipt-no-node.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, url := startAPI(t, http.StatusOK, body)
	tests := []struct {
		name    string
		json    bool
		wantOut string
	}{
		{"table", false, "purge 01M98M3Q465NVWKE3PAFBBGJYD: complete, but 0 of 0 nodes: no node was registered to confirm it\n"},
		{"json", true, `"pops": []`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--api", url, "--token", "s3cret", "--host", "www.example.com", "--url", "/a", "--wait", "2s"}
			if tt.json {
				args = append(args, "--json")
			}
			cmd := NewCommand()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(args)
			if err := cmd.Execute(); err != nil {
				t.Fatalf("purge of an empty fleet: %v, want success (exit 0)", err)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, out.String())
			}
			const warn = "warning: no edge node was registered when purge 01M98M3Q465NVWKE3PAFBBGJYD was issued"
			if !strings.Contains(errOut.String(), warn) {
				t.Errorf("stderr = %q, want %q", errOut.String(), warn)
			}
		})
	}
}

// TestCommandRefusesNegativeWait: a negative --wait was sent as no wait at all (-1s) or, from
// -30s on, made the request's own deadline lie in the past ("context deadline exceeded").
func TestCommandRefusesNegativeWait(t *testing.T) {
	complete, err := json.Marshal(Response{ID: "r1", Complete: true, Purges: []Receipt{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"-1s", "-40s"} {
		t.Run(w, func(t *testing.T) {
			api, url := startAPI(t, http.StatusOK, complete)
			_, err := runCommand(t, "--api", url, "--token", "s3cret", "--host", "www.example.com", "--all", "--wait", w)
			if err == nil || !strings.Contains(err.Error(), "--wait "+w+" is negative") {
				t.Errorf("--wait %s: error = %v, want one saying it is negative", w, err)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if len(api.requests) != 0 {
				t.Errorf("--wait %s: the API got %d requests, want none", w, len(api.requests))
			}
		})
	}
}

// TestCommandRefusesMissingToken: without a token (no --token, $MERIDIAN_TOKEN unset or
// blank) the command says where a token goes and sends nothing; before, it posted the purge
// without Authorization and printed the API's 401, spending one of the client address's
// failed-authentication allowance.
func TestCommandRefusesMissingToken(t *testing.T) {
	complete, err := json.Marshal(Response{ID: "r1", Complete: true, Purges: []Receipt{}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env string
		args      []string
	}{
		{"none", "", nil},
		{"blank flag", "", []string{"--token", "  "}},
		{"blank env", " \t", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(TokenEnv, tt.env)
			api, url := startAPI(t, http.StatusOK, complete)
			args := append([]string{"--api", url, "--host", "www.example.com", "--all"}, tt.args...)
			_, err := runCommand(t, args...)
			if err == nil || !strings.Contains(err.Error(), "no API token") || !strings.Contains(err.Error(), "$"+TokenEnv) {
				t.Errorf("error = %v, want one saying there is no API token and naming $%s", err, TokenEnv)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if len(api.requests) != 0 {
				t.Errorf("the API got %d requests, want none", len(api.requests))
			}
		})
	}
}

// guardTransport sends https requests for api.test to the test server and refuses every
// other one, recording it with its Authorization: what would have left the machine.
type guardTransport struct {
	mu  sync.Mutex
	off []string
	rt  http.RoundTripper
}

func (g *guardTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" || r.URL.Hostname() != "api.test" {
		g.mu.Lock()
		g.off = append(g.off, r.URL.String()+" "+r.Header.Get("Authorization"))
		g.mu.Unlock()
		return nil, errors.New("test: request refused")
	}
	return g.rt.RoundTrip(r)
}

// TestRedirectKeepsTokenOffPlainHTTP: net/http keeps Authorization on a redirect to the same
// host, so an API at https://api.test that redirects the CLI to http://api.test would have it
// send the token in clear; the CLI refuses such a redirect and sends nothing there.
func TestRedirectKeepsTokenOffPlainHTTP(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://api.test/v1/purge", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	client, err := apiClient("")
	if err != nil {
		t.Fatal(err)
	}
	// api.test is the test server (dialled on loopback, its certificate not checked).
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	tr.TLSClientConfig.InsecureSkipVerify = true
	guard := &guardTransport{rt: tr}
	client.Transport = guard
	_, _, err = post(t.Context(), client, "https://api.test", "s3cret", 0, Request{Host: "a.example", All: true})
	if err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Errorf("post with a redirect to plain http = %v, want a refusal", err)
	}
	guard.mu.Lock()
	defer guard.mu.Unlock()
	if len(guard.off) > 0 {
		t.Errorf("the CLI followed the redirect to plain http: %q", guard.off)
	}
}

// TestReceiptTableHitsAndSoft: the table's HITS column shows a count only where a node counted
// one, a url purge it applied itself; prefix, key and whole-host purges are matched at read
// time and a node reports 0 whatever they match, and a node that joined after the purge applied
// nothing, so their 0 is not "nothing was purged" and reads "-". A soft purge says so in KIND
// (`url/soft`, one field).
// Before, a prefix purge that removed a whole directory printed HITS 0 on every node.
func TestReceiptTableHitsAndSoft(t *testing.T) {
	acked := func(node string, hits int, joined bool) NodeAck {
		return NodeAck{Node: node, Acked: true, Status: NodeAcked, Hits: hits, LatencyMs: 1, Joined: joined}
	}
	cases := []struct {
		name     string
		kind     Kind
		soft     bool
		node     NodeAck
		wantKind string
		wantHits string
	}{
		{"url counted", KindURL, false, acked("n1", 3, false), "url", "3"},
		{"url none held", KindURL, false, acked("n1", 0, false), "url", "0"},
		{"url soft", KindURL, true, acked("n1", 2, false), "url/soft", "2"},
		{"url joined", KindURL, false, acked("n1", 0, true), "url", "-"},
		{"prefix", KindPrefix, false, acked("n1", 0, false), "prefix", "-"},
		{"key soft", KindKey, true, acked("n1", 0, false), "key/soft", "-"},
		{"all", KindAll, false, acked("n1", 0, false), "all", "-"},
		{"pending", KindURL, false, NodeAck{Node: "n1", Status: NodePending}, "url", "-"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Response{ID: "r1", Purges: []Receipt{{ID: "r1-" + string(c.kind), Seq: 7, Kind: c.kind, Soft: c.soft,
				PoPs: []PoPReceipt{{PoP: "ams", Nodes: []NodeAck{c.node}}}}}}
			var out bytes.Buffer
			if err := printReceipt(&out, r); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 3 {
				t.Fatalf("output has %d lines, want 3:\n%s", len(lines), out.String())
			}
			row := lines[2]
			if !strings.HasPrefix(row, c.wantKind+"  ") {
				t.Errorf("row %q: want KIND %q", row, c.wantKind)
			}
			fields := strings.Fields(row)
			if got := fields[len(fields)-1]; got != c.wantHits {
				t.Errorf("row %q: HITS %q, want %q", row, got, c.wantHits)
			}
		})
	}
}

// A receipt held for registrations says so in the summary line, and until when.
func TestReceiptSummaryAwaitingRegistrations(t *testing.T) {
	until := time.Date(2026, 12, 8, 1, 0, 4, 0, time.UTC)
	r := Response{ID: "r1", Purges: []Receipt{{ID: "r1-all", Seq: 7, Kind: KindAll, AwaitingRegistrationsUntil: &until,
		PoPs: []PoPReceipt{{PoP: "ams", Nodes: []NodeAck{{Node: "n1", Acked: true, Status: NodeAcked, LatencyMs: 1}}}}}}}
	var out bytes.Buffer
	if err := printReceipt(&out, r); err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	if want := "purge r1: pending, waiting until 2026-12-08T01:00:04Z for nodes to register again"; first != want {
		t.Errorf("summary %q, want %q", first, want)
	}
}
