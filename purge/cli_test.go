package purge

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
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
		_, url := startAPI(t, http.StatusBadRequest, []byte(`{"error":"host is not configured","field":"host"}`))
		_, err := runCommand(t, "--api", url, "--host", "nope.example", "--all")
		if err == nil || !strings.Contains(err.Error(), "(400): host: host is not configured") {
			t.Errorf("error = %v, want the API's field and message", err)
		}
	})

	t.Run("non-json refusal", func(t *testing.T) {
		_, url := startAPI(t, http.StatusTooManyRequests, []byte("slow down\n"))
		_, err := runCommand(t, "--api", url, "--host", "a.example", "--all")
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
