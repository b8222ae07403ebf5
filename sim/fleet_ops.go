package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/sim/wan"
)

// callAPI calls the control plane's API with in (if not nil) as the JSON body and decodes the
// answer into out (if not nil).
func (f *Fleet) callAPI(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s body: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.controlURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Drain drains (or undrains) a PoP through the control API, as an operator would.
func (f *Fleet) Drain(ctx context.Context, pop string, drain bool) error {
	verb := "drain"
	if !drain {
		verb = "undrain"
	}
	if err := f.callAPI(ctx, http.MethodPost, "/v1/pops/"+pop+"/"+verb, nil, nil); err != nil {
		return fmt.Errorf("%s pop %s: %w", verb, pop, err)
	}
	return nil
}

func (f *Fleet) pop(id string) (*popRun, error) {
	for _, pr := range f.pops {
		if pr.spec.ID == id {
			return pr, nil
		}
	}
	return nil, fmt.Errorf("no pop %q", id)
}

// Kill stops a PoP's nodes at once, without draining first: clients that still hold its
// address from DNS fail until their TTL runs out. It returns once they have stopped.
func (f *Fleet) Kill(pop string) error {
	pr, err := f.pop(pop)
	if err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	f.mu.Lock()
	f.killed[pop] = true
	f.mu.Unlock()
	pr.mu.Lock()
	nodes := pr.nodes
	pr.nodes = nil
	pr.mu.Unlock()
	for _, n := range nodes {
		f.mu.Lock()
		delete(f.addrs, n.ip)
		f.mu.Unlock()
		n.stop()
	}
	for _, n := range nodes {
		<-n.done
	}
	return nil
}

// Restart starts a killed PoP's nodes again, with empty caches, and waits until they joined.
// A PoP that was not killed is refused.
func (f *Fleet) Restart(ctx context.Context, pop string) error {
	pr, err := f.pop(pop)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if !f.Killed(pop) {
		// Its nodes run: new ones would join beside them under the same names.
		return fmt.Errorf("restart pop %s: it is not killed", pop)
	}
	if err := f.startNodes(pr); err != nil {
		return fmt.Errorf("restart pop %s: %w", pop, err)
	}
	f.mu.Lock()
	delete(f.killed, pop)
	f.mu.Unlock()
	pr.mu.Lock()
	nodes := pr.nodes
	pr.mu.Unlock()
	for _, n := range nodes {
		if err := waitChan(ctx, n.node.FleetReady(), n.done); err != nil {
			return fmt.Errorf("restart pop %s: %w", pop, err)
		}
	}
	return nil
}

// Killed reports whether pop is down from Kill.
func (f *Fleet) Killed(pop string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.killed[pop]
}

// CutNATS cuts (or restores) a PoP's connections to NATS: its nodes keep serving HTTP but
// stop heartbeating and receiving purges until restored, then replay what they missed.
func (f *Fleet) CutNATS(pop string, cut bool) error {
	pr, err := f.pop(pop)
	if err != nil {
		return fmt.Errorf("cut nats: %w", err)
	}
	if cut {
		pr.link.Cut()
	} else {
		pr.link.Restore()
	}
	return nil
}

// SetOriginFault makes the origin answer every object with status (0: normal) after delay.
func (f *Fleet) SetOriginFault(status int, delay time.Duration) {
	f.origin.SetFault("", origin.Fault{Status: status, Delay: delay})
}

// Purge asks the control API for a hard purge of the exact URL path (path and query), without
// waiting, and returns the id of the purge message. The API expects an ack from every node in
// the fleet at that moment, draining ones included.
func (f *Fleet) Purge(ctx context.Context, path string) (string, error) {
	return f.PurgeRequest(ctx, purge.Request{Host: SimHost, URLs: []string{path}})
}

// PurgeRequest sends one purge request of a single kind through the control API and returns
// its purge id.
func (f *Fleet) PurgeRequest(ctx context.Context, req purge.Request) (string, error) {
	var resp purge.Response
	if err := f.callAPI(ctx, http.MethodPost, "/v1/purge?wait=0", req, &resp); err != nil {
		return "", fmt.Errorf("purge %+v: %w", req, err)
	}
	if len(resp.Purges) != 1 {
		return "", fmt.Errorf("purge %+v: the API answered %d receipts, want 1", req, len(resp.Purges))
	}
	return resp.Purges[0].ID, nil
}

// Receipt returns what is known of a purge's propagation.
func (f *Fleet) Receipt(id string) (purge.Receipt, bool) { return f.control.Tracker().Receipt(id) }

// WaitPurge waits until every expected node acknowledged the purge or ctx ends.
func (f *Fleet) WaitPurge(ctx context.Context, id string) purge.Receipt {
	return f.control.Tracker().Wait(ctx, id)
}

// PurgeFloor is the WAN model's floor for a purge issued at the control plane (next to the
// origin) to be acknowledged by pop: one round trip over that leg.
func (f *Fleet) PurgeFloor(pop string) time.Duration {
	p, ok := f.s.PoP(pop)
	if !ok {
		return 0
	}
	return f.wan.RTT(wan.GreatCircleKm(f.s.Origin.Lat, f.s.Origin.Lon, p.Lat, p.Lon))
}
