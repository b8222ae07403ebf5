package edge

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestGetBodyOnFillAndPass pins what reaches the origin of a GET's or HEAD's request body
// (docs/edge.md, "What reaches the origin"), over every protocol. A fill (a miss, shared or for
// one client with Authorization) sends a GET without a body: the cache key has none, so clients
// that send different bodies to one URL share its answer, as behind Varnish's builtin VCL; the
// body is not read, so not bounded by max_request_body_bytes either. Nor do the fields that
// describe the body (Content-Type, Content-Language, Digest...: fillBodyDeny), which no cache
// keys on, unless the host forwards them by name; Varnish sends them on without the body,
// nginx sends the body too. A pass (cookies: pass with a Cookie) carries the body and its
// fields, buffered and bounded as any pass's, on its own method.
func TestGetBodyOnFillAndPass(t *testing.T) {
	type got struct{ method, length, fields, body string }
	var mu sync.Mutex // guards seen
	seen := map[string][]got{}
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("origin: read the body of %s %s: %v", r.Method, r.URL, err)
		}
		fields := r.Header.Get("Content-Type") + "|" + r.Header.Get("Content-Language") + "|" + r.Header.Get("Digest")
		g := got{r.Method, r.Header.Get("Content-Length"), fields, string(b)}
		mu.Lock()
		seen[r.URL.Path] = append(seen[r.URL.Path], g)
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "answer to "+r.URL.Path)
	}))
	const passHost, namedHost = "pass.example", "named.example"
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.MaxRequestBodyBytes = 1024
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + addr},
			{Host: passHost, Origin: "http://" + addr, Cookies: wire.CookiesPass},
			{Host: namedHost, Origin: "http://" + addr, RequestHeaders: wire.RequestHeaders{Forward: wire.HeaderNames{"Content-Type"}}}}
	})
	large := strings.Repeat("x", 4096) // over max_request_body_bytes
	tests := []struct {
		name, method, host, body string
		hdr                      []string
		status                   int
		cacheStatus              string // a part of the answer's Cache-Status
		want                     []got  // what the origin got for the case's path, "" for none
	}{
		{"fill", http.MethodGet, testHost, "one", nil, http.StatusOK, "fwd=miss", []got{{"GET", "", "||", ""}}},
		{"fill other body", http.MethodGet, testHost, "two", nil, http.StatusOK, "hit", nil}, // the path of "fill"
		{"fill head", http.MethodHead, testHost, "one", nil, http.StatusOK, "fwd=miss", []got{{"GET", "", "||", ""}}},
		{"fill large", http.MethodGet, testHost, large, nil, http.StatusOK, "fwd=miss", []got{{"GET", "", "||", ""}}},
		{"fill authorization", http.MethodGet, testHost, "one", []string{"Authorization", "Basic eDp5"}, http.StatusOK, "fwd=miss", []got{{"GET", "", "||", ""}}},
		{"fill forwarding Content-Type", http.MethodGet, namedHost, "one", nil, http.StatusOK, "fwd=miss", []got{{"GET", "", "text/plain||", ""}}},
		{"pass", http.MethodGet, passHost, "one", []string{"Cookie", "a=1"}, http.StatusOK, "fwd=bypass", []got{{"GET", "3", "text/plain|de|sha-256=x", "one"}}},
		{"pass head", http.MethodHead, passHost, "one", []string{"Cookie", "a=1"}, http.StatusOK, "fwd=bypass", []got{{"HEAD", "3", "text/plain|de|sha-256=x", "one"}}},
		{"pass large", http.MethodGet, passHost, large, []string{"Cookie", "a=1"}, http.StatusRequestEntityTooLarge, "", nil},
	}
	for pi, c := range everyProtocol(t, n) {
		for i, tt := range tests {
			path := fmt.Sprintf("/getbody-%d-%d", pi, i)
			if tt.name == "fill other body" {
				path = fmt.Sprintf("/getbody-%d-%d", pi, 0)
			}
			req, err := http.NewRequest(tt.method, c.url+path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Content-Language", "de")
			req.Header.Set("Digest", "sha-256=x")
			for j := 0; j+1 < len(tt.hdr); j += 2 {
				req.Header.Set(tt.hdr[j], tt.hdr[j+1])
			}
			resp, err := (&http.Client{Transport: c.rt}).Do(req)
			if err != nil {
				t.Fatalf("%s %s: %s %s: %v", c.name, tt.name, tt.method, path, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("%s %s: read the answer: %v", c.name, tt.name, err)
			}
			wantBody := "answer to " + path
			if tt.method == http.MethodHead || tt.status != http.StatusOK {
				wantBody = string(b) // not compared
			}
			if cs := resp.Header.Get("Cache-Status"); resp.StatusCode != tt.status || string(b) != wantBody || !strings.Contains(cs, tt.cacheStatus) {
				t.Errorf("%s %s: status %d, body %q, Cache-Status %q; want %d, %q, %s", c.name, tt.name, resp.StatusCode, b, cs, tt.status, wantBody, tt.cacheStatus)
			}
			mu.Lock()
			origin := seen[path]
			mu.Unlock()
			if tt.name == "fill other body" {
				origin = origin[1:] // after the "fill" case's
			}
			if fmt.Sprint(origin) != fmt.Sprint(tt.want) {
				t.Errorf("%s %s: the origin got %+v, want %+v", c.name, tt.name, origin, tt.want)
			}
		}
	}
}
