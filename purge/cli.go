package purge

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/wire"
)

// DefaultAPI is the control plane address the CLI talks to unless told otherwise.
const DefaultAPI = "http://127.0.0.1:7070"

// TokenEnv is the environment variable the CLI reads the API token from when --token is absent.
const TokenEnv = "MERIDIAN_TOKEN"

// CAEnv is the environment variable the CLI reads the CA file from when --ca is absent.
const CAEnv = "MERIDIAN_CA"

// apiError is the control API's error body.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// NewCommand returns `meridian purge`, which asks the control API to purge and prints the receipt.
func NewCommand() *cobra.Command {
	var (
		req    Request
		wait   time.Duration
		api    string
		token  string
		caFile string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "purge --host H [--url U]... [--prefix P]... [--key K]... [--all] [--soft] [--wait 2s]",
		Short: "Purge a host's cached objects fleet-wide and print each PoP's receipt",
		Long: "Purge asks the control API (POST /v1/purge) to invalidate exact URLs (with all their\n" +
			"variants), URL prefixes, surrogate keys, or everything of one host, on every node. With\n" +
			"--wait it prints when each PoP and node acknowledged, and exits non-zero if some did not\n" +
			"within the wait. The token comes from --token or $" + TokenEnv + ". The API is https,\n" +
			"or plain http on a loopback address only (the token must not cross a network in clear);\n" +
			"--ca or $" + CAEnv + " names the CA that signed the control plane's certificate if it is\n" +
			"a private one.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true, // a refused purge is not a usage mistake
		SilenceErrors: true, // main prints the error once
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The API reads a bearer token without surrounding white space (and refuses secrets
			// that have some): a blank one is none.
			if token = strings.TrimSpace(token); token == "" {
				token = strings.TrimSpace(os.Getenv(TokenEnv))
			}
			if caFile == "" {
				caFile = os.Getenv(CAEnv)
			}
			// Refuse what the API would refuse, without a round trip. A negative wait would also
			// put the request's own deadline (wait + 30s) in the past.
			if wait < 0 {
				return fmt.Errorf("--wait %s is negative: give 0 not to wait", wait)
			}
			if _, err := req.Messages("cli", time.Now()); err != nil {
				return fmt.Errorf("invalid purge: %w", err)
			}
			client, err := apiClient(caFile)
			if err != nil {
				return err
			}
			body, status, err := post(cmd.Context(), client, api, token, wait, req)
			if err != nil {
				return err
			}
			if status < 200 || status > 299 {
				var e apiError
				if json.Unmarshal(body, &e) != nil || e.Error == "" {
					return fmt.Errorf("purge refused: %s: %s", http.StatusText(status), strings.TrimSpace(string(body)))
				}
				if e.Field != "" {
					return fmt.Errorf("purge refused (%d): %s: %s", status, e.Field, e.Error)
				}
				return fmt.Errorf("purge refused (%d): %s", status, e.Error)
			}
			var resp Response
			if err := json.Unmarshal(body, &resp); err != nil {
				return fmt.Errorf("decode purge receipt: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				var buf bytes.Buffer
				if err := json.Indent(&buf, body, "", "  "); err != nil {
					return fmt.Errorf("print purge receipt: %w", err)
				}
				buf.WriteByte('\n')
				_, err = out.Write(buf.Bytes())
			} else {
				err = printReceipt(out, resp)
			}
			if err != nil {
				return fmt.Errorf("print purge receipt: %w", err)
			}
			if resp.Complete && receiptNodes(resp) == 0 {
				// Complete, as nothing was expected to ack: not a failure (the purge is in
				// the stream), but no node confirmed it, which "complete" alone hides.
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: no edge node was registered when purge %s was issued, so no node confirmed it: "+
					"check that the fleet's nodes are up and registered (GET /v1/pops)\n", resp.ID)
			}
			if wait > 0 && !resp.Complete {
				n, gone := 0, 0
				for _, p := range resp.Purges {
					n += len(p.Pending)
					gone += len(p.Unreachable)
				}
				if until := awaitingUntil(resp); until != nil {
					return fmt.Errorf("purge %s: not complete after %s: %d node acks pending, and control waits until %s for nodes to register again "+
						"(it started, or its NATS connection came back, a moment ago; see GET /v1/purges/%s)", resp.ID, wait, n, until.Format(time.RFC3339), resp.ID)
				}
				if gone > 0 {
					return fmt.Errorf("purge %s: %d node acks still pending after %s, %d of them from nodes no longer registered "+
						"(they ack when they come back; if they are gone for good: DELETE /v1/purges/%s/unreachable)", resp.ID, n, wait, gone, resp.ID)
				}
				return fmt.Errorf("purge %s: %d node acks still pending after %s", resp.ID, n, wait)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Host, "host", "", "hostname to purge, in ASCII or Unicode (required)")
	f.StringArrayVar(&req.URLs, "url", nil, "exact URL to purge, as /path?query or http(s)://host/path (repeatable)")
	f.StringArrayVar(&req.Prefixes, "prefix", nil, "path prefix to purge, whole segments: /a purges /a and /a/b, not /ab (repeatable)")
	f.StringArrayVar(&req.Keys, "key", nil, "surrogate key to purge (repeatable)")
	f.BoolVar(&req.All, "all", false, "purge everything of the host")
	f.BoolVar(&req.Soft, "soft", false, "mark stale (revalidate) instead of removing")
	f.DurationVar(&wait, "wait", 2*time.Second, "how long the API holds the answer for acks; 0 returns at once")
	f.StringVar(&api, "api", DefaultAPI, "control API base URL: https, or http on loopback only")
	f.StringVar(&caFile, "ca", "", "PEM file of the CA that signed the API's certificate, trusted instead of the system's (default $"+CAEnv+")")
	f.StringVar(&token, "token", "", "API token with scope purge (default $"+TokenEnv+")")
	f.BoolVar(&asJSON, "json", false, "print the receipt as JSON")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

// apiClient is the HTTP client for the API: it trusts only the CAs in caFile if one is given,
// the system's otherwise.
func apiClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr, CheckRedirect: checkRedirect}, nil
}

// checkRedirect follows a redirect only where checkAPI would let the token go: net/http keeps
// Authorization on a redirect to the same host, so an https API that answered with a redirect
// to http would otherwise have the CLI send the token in clear.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if err := checkAPI(req.URL); err != nil {
		return fmt.Errorf("the API redirected to %s, which would get the token in clear: refused", req.URL.Redacted())
	}
	return nil
}

// checkAPI refuses an API URL that is not https, unless it is http to a loopback address: the
// bearer token must not cross a network in clear.
func checkAPI(u *url.URL) error {
	if u.Scheme == "https" {
		return nil
	}
	h := u.Hostname()
	if wire.LoopbackHost(h) {
		return nil
	}
	return fmt.Errorf("--api %s would send the token in clear to a host that is not loopback: use https (with --ca for a private CA)", u.Redacted())
}

// post sends the request with client and returns the response body and status.
func post(ctx context.Context, client *http.Client, api, token string, wait time.Duration, r Request) ([]byte, int, error) {
	u, err := url.Parse(strings.TrimSuffix(api, "/") + "/v1/purge")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, 0, fmt.Errorf("--api %q is not an http(s) URL", api)
	}
	if err := checkAPI(u); err != nil {
		return nil, 0, err
	}
	// Without a token the API answers 401, and each 401 spends one of the client address's
	// failed-authentication allowance (docs/security.md, "Guessing"): say so here instead.
	if token == "" {
		return nil, 0, fmt.Errorf("no API token: give --token or set $%s (a token with scope purge)", TokenEnv)
	}
	if wait > 0 {
		u.RawQuery = url.Values{"wait": {wait.String()}}.Encode()
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, 0, fmt.Errorf("encode purge request: %w", err)
	}
	// The server holds the answer up to wait; allow that plus time to connect and answer.
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(data))
	if err != nil {
		return nil, 0, fmt.Errorf("build purge request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := client.Do(hr)
	if err != nil {
		return nil, 0, fmt.Errorf("post purge to %s: %w", u.Redacted(), err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("read purge answer from %s: %w", u.Redacted(), err)
	}
	return body, res.StatusCode, nil
}

// receiptNodes counts the nodes of r's receipts: those registered when its purges were issued
// (and any that acked unexpected).
func receiptNodes(r Response) int {
	n := 0
	for _, p := range r.Purges {
		for _, pop := range p.PoPs {
			n += len(pop.Nodes)
		}
	}
	return n
}

// awaitingUntil is the latest AwaitingRegistrationsUntil of r's receipts, nil when none is
// held for registrations.
func awaitingUntil(r Response) *time.Time {
	var until *time.Time
	for _, p := range r.Purges {
		if u := p.AwaitingRegistrationsUntil; u != nil && (until == nil || u.After(*until)) {
			until = u
		}
	}
	return until
}

// printReceipt writes the response as a summary line and a table of nodes.
func printReceipt(w io.Writer, r Response) error {
	state := "pending"
	switch {
	case !r.Complete && awaitingUntil(r) != nil:
		state = "pending, waiting until " + awaitingUntil(r).Format(time.RFC3339) + " for nodes to register again"
	case r.Complete && receiptNodes(r) == 0:
		state = "complete, but 0 of 0 nodes: no node was registered to confirm it"
	case r.Complete:
		state = fmt.Sprintf("complete in %.1f ms", r.DurationMs)
	}
	if _, err := fmt.Fprintf(w, "purge %s: %s\n", r.ID, state); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tSEQ\tPOP\tPOP MS\tNODE\tACK MS\tHITS")
	for _, p := range r.Purges {
		kind := string(p.Kind)
		if p.Soft {
			kind += "/soft" // one field: the table splits on white space
		}
		for _, pop := range p.PoPs {
			popMs := "-"
			if pop.Complete {
				popMs = fmt.Sprintf("%.1f", pop.LatencyMs)
			}
			for _, n := range pop.Nodes {
				ack, hits := n.Status, "-"
				if ack == "" {
					ack = NodePending // a control plane from before node states
				}
				if n.Acked {
					ack = fmt.Sprintf("%.1f", n.LatencyMs)
					// Only a url purge a node applied itself counts what it held: prefix, key
					// and whole-host purges match at read time, and a node that joined after
					// the purge applied nothing, so their 0 does not mean nothing was purged.
					if p.Kind == KindURL && !n.Joined {
						hits = fmt.Sprint(n.Hits)
					}
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", kind, p.Seq, pop.PoP, popMs, n.Node, ack, hits)
			}
		}
		if len(p.PoPs) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t-\n", kind, p.Seq)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return nil
}
