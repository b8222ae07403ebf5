package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/wire"
)

const specPath = "../docs/api/openapi.yaml"

// specMismatches compares the OpenAPI spec's operations with the server's routes and lists
// every route missing from the spec and every operation the server lacks.
func specMismatches(spec []byte, routes []Route) ([]string, error) {
	var doc struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("parse spec: %w", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		return nil, fmt.Errorf("spec is OpenAPI %q, want 3.x", doc.OpenAPI)
	}
	inSpec := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				inSpec[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	var out []string
	served := map[string]bool{}
	for _, r := range routes {
		served[r.Pattern] = true
		if !inSpec[r.Pattern] {
			out = append(out, "route "+r.Pattern+" is not in the spec")
		}
	}
	for op := range inSpec {
		if !served[op] {
			out = append(out, "spec operation "+op+" is not served")
		}
	}
	slices.Sort(out)
	return out, nil
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	s, err := New(Config{TokensFile: "testdata/tokens.yaml"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got, err := specMismatches(spec, s.Routes())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		t.Error(m)
	}

	// Routes added with Handle count too: an undocumented one is caught.
	s.Handle("POST /v1/undocumented", ScopePurge, http.NotFoundHandler())
	got, _ = specMismatches(spec, s.Routes())
	if want := []string{"route POST /v1/undocumented is not in the spec"}; !slices.Equal(got, want) {
		t.Errorf("after Handle, mismatches = %q, want %q", got, want)
	}
}

// TestOpenAPISpecValid keeps the spec self-consistent: it loads, every $ref resolves, and
// kin-openapi finds it a valid OpenAPI 3 document (the same load the exchange checks use).
func TestOpenAPISpecValid(t *testing.T) {
	if _, err := loadSpec(); err != nil {
		t.Fatal(err)
	}
}

// loadSpec loads and validates the spec once per test binary and builds its router.
var loadSpec = sync.OnceValues(func() (routers.Router, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specPath)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", specPath, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("validate %s: %w", specPath, err)
	}
	// The servers name production addresses; the tests listen on random loopback ports, and
	// paths are what is checked.
	doc.Servers = nil
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", specPath, err)
	}
	return r, nil
})

// specChecked wraps the control API so that every exchange is checked against the spec, and
// fails t on any mismatch:
//   - a request the spec describes gets an answer whose status is listed for the operation,
//     with the listed headers (required ones present) and a body of the listed media type and
//     schema;
//   - a request the spec refuses (unknown field, missing body, wrong type...) must be refused
//     by the server too, with a 4xx: the server never accepts what the spec does not;
//   - a path or method the spec lacks gets a JSON Error 404 or 405, unless a route added with
//     Handle serves it (an extension the spec cannot know; TestOpenAPIMatchesRoutes keeps the
//     built-in routes and the spec in step).
//
// Authentication is accepted as the spec says: the real checks are TestAuthMatrix's.
func specChecked(t testing.TB, s *Server, h http.Handler) http.Handler {
	router, err := loadSpec()
	if err != nil {
		// Called from Serve's goroutine: the test checked loadSpec first.
		panic(err)
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		MultiError:            true,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("spec check: read request body of %s %s: %v", r.Method, r.URL, err)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		// The answer is held until it is checked, so that a failure is reported while the
		// test that made the request still runs.
		rec := &heldResponse{header: w.Header()}
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		what := fmt.Sprintf("%s %s -> %d %.300s", r.Method, r.URL.RequestURI(), rec.status, rec.body.Bytes())
		_, pattern := s.mux.Handler(r)
		extension := pattern != "" && !builtinRoute(pattern)
		for _, problem := range checkExchange(router, opts, r, body, rec, extension) {
			t.Errorf("OpenAPI spec mismatch: %s: %s", what, problem)
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
	})
}

// checkExchange lists what in one exchange disagrees with the spec.
func checkExchange(router routers.Router, opts *openapi3filter.Options, r *http.Request, body []byte, resp *heldResponse, extension bool) []string {
	// A copy: the router and the validator may read and replace the body.
	req := r.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := router.FindRoute(req)
	if err != nil && extension {
		return nil
	}
	if err != nil {
		var e APIError
		if resp.status != http.StatusNotFound && resp.status != http.StatusMethodNotAllowed {
			return []string{fmt.Sprintf("no operation in the spec (%v), yet answered %d", err, resp.status)}
		}
		if json.Unmarshal(resp.body.Bytes(), &e) != nil || e.Error == "" {
			return []string{"a 404/405 that is not a JSON Error"}
		}
		return nil
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	var problems []string
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && resp.status/100 != 4 {
		problems = append(problems, fmt.Sprintf("the spec refuses the request (%v), the server answered %d", err, resp.status))
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.status,
		Header: resp.header, Options: opts}
	out.SetBodyBytes(resp.body.Bytes())
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		problems = append(problems, "response: "+err.Error())
	}
	return problems
}

// builtinRoute reports whether pattern is one of the API's own routes (New registers them).
func builtinRoute(pattern string) bool {
	builtinOnce.Do(func() {
		s, err := New(Config{TokensFile: "testdata/tokens.yaml"})
		if err != nil {
			panic(err)
		}
		builtin = map[string]bool{}
		for _, r := range s.Routes() {
			builtin[r.Pattern] = true
		}
	})
	return builtin[pattern]
}

var (
	builtinOnce sync.Once
	builtin     map[string]bool
)

// heldResponse holds a handler's answer until it has been checked.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}

func (h *heldResponse) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return h.body.Write(b)
}

// TestSpecCheckCatchesMismatches shows that the exchange check fails on what it is there to
// catch, and passes what is right.
func TestSpecCheckCatchesMismatches(t *testing.T) {
	router, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	purgeReceipt := `{"id":"x","complete":false,"duration_ms":0,"purges":[]}`
	tests := []struct {
		name         string
		method, path string
		body         string
		status       int
		header       http.Header
		answer       string
		extension    bool
		wantProblem  string // "" for none
	}{
		{name: "right", method: "GET", path: "/healthz", status: 200, answer: `{"status":"ok","nats":"CONNECTED"}`},
		{name: "missing required field", method: "GET", path: "/healthz", status: 200, answer: `{"status":"ok"}`,
			wantProblem: "nats"},
		{name: "value outside the enum", method: "GET", path: "/healthz", status: 503, answer: `{"status":"down","nats":"CLOSED"}`,
			wantProblem: "status"},
		{name: "status the operation does not list", method: "GET", path: "/v1/routing", status: 418, answer: `{"error":"x"}`,
			wantProblem: "status is not supported"},
		{name: "wrong media type", method: "GET", path: "/v1/routing", status: 200, header: http.Header{"Content-Type": {"text/html"}},
			answer: `{}`, wantProblem: "text/html"},
		{name: "request the spec refuses, accepted", method: "POST", path: "/v1/purge", body: `{"host":"a.example","all":true,"ttl":3}`,
			status: 202, header: http.Header{"Location": {"/v1/purges/x"}}, answer: purgeReceipt, wantProblem: "the spec refuses the request"},
		{name: "request the spec refuses, refused", method: "POST", path: "/v1/purge", body: `{"host":"a.example","all":true,"ttl":3}`,
			status: 400, answer: `{"error":"unknown field \"ttl\"","field":"ttl"}`},
		{name: "required header missing", method: "POST", path: "/v1/purge", body: `{"host":"a.example","all":true}`,
			status: 202, answer: purgeReceipt, wantProblem: "Location"},
		{name: "429 without Retry-After", method: "GET", path: "/v1/pops", status: 429, answer: `{"error":"slow down"}`,
			wantProblem: "Retry-After"},
		{name: "unknown path answered", method: "GET", path: "/v1/nope", status: 200, answer: `{}`, wantProblem: "no operation"},
		{name: "unknown path, JSON 404", method: "GET", path: "/v1/nope", status: 404, answer: `{"error":"no route"}`},
		{name: "unknown path, 404 not JSON", method: "GET", path: "/v1/nope", status: 404, answer: `not found`, wantProblem: "not a JSON Error"},
		{name: "extension route", method: "POST", path: "/v1/extension", status: 202, extension: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(tt.method, "http://127.0.0.1:7070"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.body != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			resp := &heldResponse{header: http.Header{"Content-Type": {"application/json"}}, status: tt.status}
			maps.Copy(resp.header, tt.header)
			resp.body.WriteString(tt.answer)
			problems := checkExchange(router, opts, r, []byte(tt.body), resp, tt.extension)
			switch {
			case tt.wantProblem == "" && len(problems) > 0:
				t.Errorf("problems %q, want none", problems)
			case tt.wantProblem != "" && !strings.Contains(strings.Join(problems, "\n"), tt.wantProblem):
				t.Errorf("problems %q, want one mentioning %q", problems, tt.wantProblem)
			}
		})
	}
}

// TestOpenAPIRoutingPolicyFields: every policy and every field wire.RoutingPolicy takes is a
// PUT /v1/routing the spec accepts, and its GET an answer the spec accepts (specChecked fails
// the test on either). The spec's RoutingPolicy lacked explore and the latency policy, so a
// valid policy the server stored was one the spec refused.
func TestOpenAPIRoutingPolicyFields(t *testing.T) {
	ts := startServer(t, Config{})
	tests := []struct{ name, body string }{
		{"nearest", `{"policy":"nearest","low_watermark":0.7,"high_watermark":1.2}`},
		{"least-loaded", `{"policy":"least-loaded","radius_km":900,"load_hysteresis":0.1}`},
		{"load_hysteresis off", `{"policy":"least-loaded","load_hysteresis":-1}`},
		{"weighted", `{"policy":"weighted","weights":{"lhr":2,"fra":1}}`},
		{"latency", `{"policy":"latency","explore":0.1}`},
		{"latency without exploring", `{"policy":"latency","explore":-1}`},
		{"nearest following measurements", `{"policy":"","explore":0.5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, b := ts.do(t, "PUT", "/v1/routing", tokConfigurer, []byte(tt.body)); code != http.StatusOK {
				t.Fatalf("PUT /v1/routing %s = %d %s, want 200", tt.body, code, b)
			}
			code, b := ts.do(t, "GET", "/v1/routing", tokReader, nil)
			var got, want wire.RoutingPolicy
			if err := json.Unmarshal([]byte(tt.body), &want); err != nil {
				t.Fatal(err)
			}
			if code != http.StatusOK || json.Unmarshal(b, &got) != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("GET /v1/routing = %d %s, want 200 with %s", code, b, tt.body)
			}
		})
	}
	// The spec's bounds are the server's: what it refuses, the spec refuses too.
	router, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"policy":"latency","explore":0.6}`, `{"policy":"least-loaded","load_hysteresis":0.6}`, `{"policy":"random"}`} {
		if code, b := ts.do(t, "PUT", "/v1/routing", tokConfigurer, []byte(body)); code != http.StatusBadRequest {
			t.Errorf("PUT /v1/routing %s = %d %s, want 400", body, code, b)
		}
		r, err := http.NewRequest("PUT", "http://127.0.0.1:7070/v1/routing", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		route, params, err := router.FindRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if openapi3filter.ValidateRequest(context.Background(), in) == nil {
			t.Errorf("the spec accepts PUT /v1/routing %s, which the server refuses", body)
		}
	}
}
