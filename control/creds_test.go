package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/proctest"
	"github.com/meridian-cdn/meridian/internal/reuseport"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestNATSNamesAgree: the permissions (internal/natsauth, which may not import Meridian
// packages) name the same buckets, stream and subjects as wire and purge.
func TestNATSNamesAgree(t *testing.T) {
	for _, prefix := range []string{"", "meridian", "edge.eu"} {
		n := natsauth.Names{Prefix: prefix}
		for _, b := range []string{wire.FleetBucket, wire.ConfigBucket, wire.PeerKeyBucket} {
			if got, want := n.Bucket(b), wire.Bucket(prefix, b); got != want {
				t.Errorf("natsauth Bucket(%q, %q) = %q, want %q", prefix, b, got, want)
			}
		}
		if got, want := n.PurgeStream(), purge.StreamName(prefix); got != want {
			t.Errorf("natsauth PurgeStream(%q) = %q, want %q", prefix, got, want)
		}
		if got, want := n.PurgeCommands(), purge.CommandSubjects(prefix); got != want {
			t.Errorf("natsauth PurgeCommands(%q) = %q, want %q", prefix, got, want)
		}
		if got, want := n.PurgeLive(), purge.LiveSubject(prefix); got != want {
			t.Errorf("natsauth PurgeLive(%q) = %q, want %q", prefix, got, want)
		}
		if got, want := n.AckSubject("lon", "n1"), purge.AckSubject(prefix, "lon", "n1"); got != want {
			t.Errorf("natsauth AckSubject(%q) = %q, want %q", prefix, got, want)
		}
	}
	if natsauth.RoutingKey != wire.RoutingKey || natsauth.DrainKeys != wire.DrainPrefix+">" {
		t.Errorf("natsauth config keys %q, %q; want %q, %q", natsauth.RoutingKey, natsauth.DrainKeys, wire.RoutingKey, wire.DrainPrefix+">")
	}
}

// TestEmbeddedNATSNeedsCredentials: control's embedded NATS refuses anonymous clients, creates
// its credentials once (mode 0600) and keeps them across restarts.
func TestEmbeddedNATSNeedsCredentials(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{StoreDir: dir})
	if nc, err := nats.Connect(ts.NATSURL()); err == nil {
		nc.Close()
		t.Fatal("anonymous connection to the embedded NATS succeeded")
	}
	for _, f := range []string{"control.creds", "users.json"} {
		fi, err := os.Stat(filepath.Join(dir, credsDirName, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, fi.Mode().Perm())
		}
	}
	first, err := os.ReadFile(filepath.Join(dir, credsDirName, "control.creds"))
	if err != nil {
		t.Fatal(err)
	}
	ts.stop()
	startServer(t, Config{StoreDir: dir})
	again, _ := os.ReadFile(filepath.Join(dir, credsDirName, "control.creds"))
	if !bytes.Equal(first, again) {
		t.Error("control's credential changed across a restart")
	}
}

// TestControlConnInProcess: with embedded NATS, control's own connection is in process (a
// pipe, not loopback TCP), and an in-process client is held to the same rules as a TCP one:
// no credential, no connection; an edge's credential may not announce purges.
func TestControlConnInProcess(t *testing.T) {
	ts := startServer(t, Config{})
	if got := ts.Conn().ConnectedAddr(); got != "pipe" {
		t.Errorf("control's NATS connection is to %q, want an in-process pipe", got)
	}
	ns := ts.embeddedNATS()
	if ns == nil {
		t.Fatal("no embedded NATS server recorded")
	}
	// Refused, the client's CONNECT and the server's error can each wait on the other over the
	// pipe until a write deadline: the flusher's timeout keeps that short, and only the failure
	// is asserted, not which error wins.
	if nc, err := nats.Connect("", nats.InProcessServer(ns), nats.FlusherTimeout(500*time.Millisecond)); err == nil {
		nc.Close()
		t.Fatal("anonymous in-process connection to the embedded NATS succeeded")
	}
	cred, err := ts.IssueCredential(natsauth.Edge("lon", "n9"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cred.Options()
	if err != nil {
		t.Fatal(err)
	}
	refused := natstest.NewViolations()
	nc, err := nats.Connect("", append(opts, nats.InProcessServer(ns), refused.Option())...)
	if err != nil {
		t.Fatalf("edge credential, in process: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish(purge.LiveSubject(""), []byte("1\n{}")); err != nil {
		t.Fatal(err)
	}
	refused.Wait(t, "publish", purge.LiveSubject(""))
}

// TestCredsCommandAndRotation issues credentials with `meridian control creds` (another process
// in production: here the command, writing the store dir) while control runs: the running
// server accepts them without a restart. Then it rotates an edge's credential: the new one
// works beside the old, and revoking the old drops only the old one's connection.
func TestCredsCommandAndRotation(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{StoreDir: dir})
	creds := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		cmd := NewCommand()
		cmd.SetArgs(append([]string{"creds"}, append(args, "--store-dir", dir)...))
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("creds %v: %v (%s)", args, err, out.String())
		}
		return out.String()
	}
	connectWith := func(text string, handlers ...nats.Option) (*nats.Conn, error) {
		c, err := natsauth.ParseCredential([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		opts, err := c.Options()
		if err != nil {
			t.Fatal(err)
		}
		return nats.Connect(ts.NATSURL(), append(opts, handlers...)...)
	}

	old := creds("edge", "--pop", "lon", "--node", "n1")
	if !strings.Contains(old, "# identity: edge.lon.n1") {
		t.Fatalf("creds edge printed %q, want an edge.lon.n1 credential", old)
	}
	var oldConn *nats.Conn
	wait.For(t, 5*time.Second, "the running control to accept the new credential", func() bool {
		nc, err := connectWith(old)
		if err != nil {
			return false
		}
		oldConn = nc
		return true
	})
	defer oldConn.Close()
	if err := oldConn.Publish(purge.AckSubject("", "lon", "n1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}

	dns := filepath.Join(t.TempDir(), "dns.creds")
	creds("dns", "--name", "ns1", "-o", dns)
	if fi, err := os.Stat(dns); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds dns -o: %v, %v; want a 0600 file", fi, err)
	}
	if c, err := natsauth.LoadCredential(dns); err != nil || c.ID != natsauth.DNS("ns1") {
		t.Fatalf("LoadCredential(dns.creds) = %v, %v; want dns.ns1", c.ID, err)
	}

	// Rotation: a second credential for the same node works while the first still does.
	newer := creds("edge", "--pop", "lon", "--node", "n1")
	var newConn *nats.Conn
	wait.For(t, 5*time.Second, "the running control to accept the rotated credential", func() bool {
		nc, err := connectWith(newer)
		if err != nil {
			return false
		}
		newConn = nc
		return true
	})
	defer newConn.Close()
	if !oldConn.IsConnected() {
		t.Fatal("issuing a second credential dropped the first one's connection")
	}
	oldCred, _ := natsauth.ParseCredential([]byte(old))
	oldKey, _ := oldCred.PublicKey()
	if out := creds("list"); !strings.Contains(out, oldKey) || strings.Count(out, "edge.lon.n1") != 2 {
		t.Fatalf("creds list = %q, want both edge.lon.n1 credentials", out)
	}
	creds("revoke", oldKey)
	wait.For(t, 5*time.Second, "the revoked credential's connection to drop", func() bool {
		return !oldConn.IsConnected()
	})
	if _, err := connectWith(old); err == nil {
		t.Fatal("the revoked credential still connects")
	}
	if err := newConn.FlushTimeout(2 * time.Second); err != nil || !newConn.IsConnected() {
		t.Fatalf("the new credential's connection after revoking the old: %v", err)
	}
	if _, err := RevokeCredential(dir, "control"); err == nil {
		t.Fatal("revoking control's own credential succeeded")
	}
	if _, err := RevokeCredential(dir, "UNKNOWN"); err == nil || !strings.Contains(err.Error(), "no credential") {
		t.Fatalf("revoking an unknown key = %v", err)
	}
}

// TestCredentialOfAnotherProcessAtOnce: a credential that `meridian control creds` (another
// process: here the package functions on the store, not the running server's) issues
// connects on its first try, as soon as it is written, and a revoked one is refused on the
// first try after; the README's walkthrough starts an edge right after issuing its
// credential, and it got "Authorization Violation" until control's poll of the users file
// (every 500 ms) found the new key.
func TestCredentialOfAnotherProcessAtOnce(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{StoreDir: dir})
	connect := func(c natsauth.Credential) (*nats.Conn, error) {
		opts, err := c.Options()
		if err != nil {
			t.Fatal(err)
		}
		return nats.Connect(ts.NATSURL(), append(opts, nats.NoReconnect())...)
	}
	for _, id := range []natsauth.Identity{natsauth.Edge("lon", "n1"), natsauth.DNS("ns1"), natsauth.Edge("lon", "n1")} {
		c, err := IssueCredential(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := connect(c)
		if err != nil {
			t.Fatalf("%s: the first connection with a credential just issued: %v", id, err)
		}
		key, err := c.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := RevokeCredential(dir, key); err != nil {
			t.Fatal(err)
		}
		if nc2, err := connect(c); err == nil {
			nc2.Close()
			t.Errorf("%s: a credential just revoked connects", id)
		}
		wait.For(t, 5*time.Second, "the revoked credential's connection to close", func() bool { return nc.IsClosed() })
	}
}

// TestLoadCredentialRefusesReadableFile: a credentials file other users may read is refused.
func TestLoadCredentialRefusesReadableFile(t *testing.T) {
	c, err := natsauth.NewCredential(natsauth.Edge("lon", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "n1.creds")
	if err := os.WriteFile(p, c.Format(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.LoadCredential(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadCredential(0644 file) = %v, want a refusal naming chmod 600", err)
	}
	if _, err := natsauth.LoadCredential(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadCredential(missing) = %v, want not exist", err)
	}
}

// TestRotateEdgeCredentialWhileServing rotates a serving edge's NATS credential as
// docs/security.md says, under client load: issue a second credential for the node, start the
// node again with it on the same port (SO_REUSEPORT) before stopping the old process, revoke the
// old credential. No client request fails, and the node on the new credential acks purges.
func TestRotateEdgeCredentialWhileServing(t *testing.T) {
	ts := startServer(t, Config{})
	_, originAddr := startOrigin(t, "127.0.8.2")
	id := natsauth.Edge("rot", "n1")
	credsPath := filepath.Join(t.TempDir(), "n1.creds")
	issue := func() natsauth.Credential {
		t.Helper()
		c, err := ts.IssueCredential(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteFile(credsPath); err != nil {
			t.Fatal(err)
		}
		return c
	}
	start := func(ln net.Listener) (*edge.Node, func()) {
		t.Helper()
		n, err := edge.New(edge.Config{PoP: "rot", Node: "n1",
			Fleet: edge.FleetConfig{NATS: ts.NATSURL(), Creds: credsPath, Heartbeat: 100 * time.Millisecond, TTL: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Serve(ctx, ln, nil) }()
		stopped := false
		stop := func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge: %v", err)
			}
		}
		t.Cleanup(stop)
		select {
		case <-n.FleetReady():
		case err := <-done:
			t.Fatalf("edge stopped before joining the fleet: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("edge did not join the fleet within 30s")
		}
		return n, stop
	}

	old := issue()
	ln1, err := reuseport.Listen(context.Background(), "127.0.8.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln1.Addr().String()
	a, stopA := start(ln1)
	putHosts(t, ts, originAddr, []*edge.Node{a}, hostA)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var served, retried atomic.Int64
	load := proctest.RunLoad(ctx, 8, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/rot?cc=max-age%3D60", nil)
		req.Host = hostA
		r, err := client.Do(req)
		if err != nil && ctx.Err() == nil {
			// A keep-alive connection the old process closed as the request went out (the
			// edge's restart, not the credential): retried once, as browsers do for a GET.
			retried.Add(1)
			r, err = client.Do(req)
		}
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			return &statusErr{r.StatusCode}
		}
		served.Add(1)
		return nil
	})
	load.WaitFor(t, 100, 10*time.Second)

	// 1. A second credential for the node; 2. the node again, with it, beside the old process,
	// which then stops; 3. the old credential revoked.
	newer := issue()
	ln2, err := reuseport.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := start(ln2)
	wait.For(t, 10*time.Second, "the new process to serve the host", func() bool {
		return get(t, b, hostA, "/ready?cc=no-store").status == http.StatusOK
	})
	stopA()
	oldKey, _ := old.PublicKey()
	if _, err := RevokeCredential(ts.cfg.StoreDir, oldKey); err != nil {
		t.Fatal(err)
	}
	oldOpts, _ := old.Options()
	wait.For(t, 5*time.Second, "the old credential to be refused", func() bool {
		nc, err := nats.Connect(ts.NATSURL(), oldOpts...)
		if err == nil {
			nc.Close()
			return false
		}
		return true
	})
	newOpts, _ := newer.Options()
	if nc, err := nats.Connect(ts.NATSURL(), newOpts...); err != nil {
		t.Fatalf("the new credential is refused: %v", err)
	} else {
		nc.Close()
	}
	load.WaitFor(t, served.Load()+100, 10*time.Second)
	cancel()
	load.Finish(t)
	t.Logf("%d requests met a closing connection and were retried", retried.Load())

	wait.For(t, 10*time.Second, "rot/n1 back in the fleet view", func() bool {
		for _, n := range ts.Fleet().Nodes() {
			if n.PoP == "rot" && n.ID == "n1" {
				return true
			}
		}
		return false
	})
	// The new process found the old one's write on the node's key, so for the overlap's bound
	// (lame_duck + max_lag + two heartbeats) it holds each ack max_lag (5 s)
	// before sending it (docs/purge.md, "Restart overlap"): the wait covers that.
	code, resp, body := postPurge(t, ts, tokPurger, "20s", []byte(`{"host":"`+hostA+`","all":true}`))
	if acked, _ := ackedNodes(resp); code != http.StatusOK || !acked["rot/n1"] {
		t.Fatalf("purge after the rotation = %d %s, want acked by rot/n1", code, body)
	}
}

// TestIssueCredentialConcurrently: credentials issued at once (several `creds` commands, or one
// beside a control starting up) all land in the users file.
func TestIssueCredentialConcurrently(t *testing.T) {
	dir := t.TempDir()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := IssueCredential(dir, natsauth.Edge("lon", "n"+strconv.Itoa(i)))
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	recs, err := ListCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 9 {
		t.Fatalf("users file has %d credentials after 8 concurrent issues, want 9 (with control's)", len(recs))
	}
}

// TestCredsOutputWritesNoStaleTemp: `creds edge -o FILE` writes the seed only into a file of
// its own making. A file or symlink already at a fixed temporary name beside FILE (FILE.tmp,
// as a shared directory or an earlier run may hold) must not receive it: before, the seed was
// written through such a symlink into its target, keeping the target's permissions, and the
// symlink then became FILE.
func TestCredsOutputWritesNoStaleTemp(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{StoreDir: dir})
	outDir := t.TempDir()
	out := filepath.Join(outDir, "n1.creds")
	leak := filepath.Join(outDir, "leak")
	if err := os.WriteFile(leak, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(leak, out+".tmp"); err != nil {
		t.Fatal(err)
	}
	// An earlier credential at the output path is replaced, not written through.
	if err := os.WriteFile(out, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := NewCommand()
	cmd.SetArgs([]string{"creds", "edge", "--pop", "par", "--node", "n1", "--store-dir", dir, "-o", out})
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stdout)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("creds edge -o: %v (%s)", err, stdout.String())
	}
	if b, err := os.ReadFile(leak); err != nil || len(b) != 0 {
		t.Errorf("the file %s.tmp pointed to holds %d bytes after creds -o (%v), want none: the seed leaked into it", out, len(b), err)
	}
	fi, err := os.Lstat(out)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds -o wrote %v (%v), want a regular file of mode 0600", fi, err)
	}
	c, err := natsauth.LoadCredential(out)
	if err != nil || c.ID != natsauth.Edge("par", "n1") {
		t.Fatalf("LoadCredential(%s) = %v, %v; want edge.par.n1", out, c.ID, err)
	}
	if strings.Contains(stdout.String(), string(c.Seed)) {
		t.Errorf("creds -o printed the seed")
	}
	opts, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the written credential to connect", func() bool {
		nc, err := nats.Connect(ts.NATSURL(), opts...)
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
	if ents, _ := os.ReadDir(outDir); len(ents) != 3 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("output directory holds %v, want n1.creds, n1.creds.tmp and leak only (no temporary file left)", names)
	}
}

// A credential whose -o file cannot be written is never accepted: otherwise users.json gains a
// key whose seed nobody holds, and an operator who runs the command again holds two.
func TestCredsOutputFailsIssuesNothing(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "missing-dir", "n1.creds")
	cmd := NewCommand()
	cmd.SetArgs([]string{"creds", "edge", "--pop", "par", "--node", "n1", "--store-dir", dir, "-o", out})
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stdout)
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "no credential issued") {
		t.Errorf("creds edge -o %s = %v, want an error saying no credential was issued", out, err)
	}
	recs, err := ListCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Identity == natsauth.Edge("par", "n1").String() {
			t.Errorf("users.json accepts %s (%s) though its credential was never written", r.Identity, r.NKey)
		}
	}
	if strings.Contains(stdout.String(), "SEED") || strings.Contains(stdout.String(), "SUAI") {
		t.Errorf("creds -o printed a seed on failure: %s", stdout.String())
	}
}

// creds -o naming the file of a credential in use (rotation: the new one replaces it) must not
// lose it when the new key cannot be accepted: users.json still accepts the old one, and its
// seed is nowhere else.
func TestCredsOutputFailedIssueKeepsPreviousFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "n1.creds")
	id := natsauth.Edge("par", "n1")
	old, err := IssueCredential(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	deliver, undo := credentialFile(out)
	users := filepath.Join(credsDir(dir), usersFileName)
	_, err = issueCredential(dir, id, func(c natsauth.Credential) error {
		if err := deliver(c); err != nil {
			return err
		}
		// users.json cannot be read now: the key is not accepted.
		if err := os.Rename(users, users+".away"); err != nil {
			return err
		}
		return os.Mkdir(users, 0o700)
	}, undo)
	if err == nil {
		t.Fatal("issue with an unreadable users.json: no error")
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the credential in use is gone: %v", err)
	}
	if !bytes.Equal(got, old.Format()) {
		t.Errorf("%s holds %q after the failed issue, want the credential in use back", out, got)
	}
	// Without a previous file, the failed issue leaves none.
	out2 := filepath.Join(t.TempDir(), "n2.creds")
	os.Remove(users)
	os.Rename(users+".away", users)
	deliver, undo = credentialFile(out2)
	if _, err = issueCredential(dir, natsauth.Edge("par", "n2"), func(c natsauth.Credential) error {
		if err := deliver(c); err != nil {
			return err
		}
		os.Rename(users, users+".away")
		return os.Mkdir(users, 0o700)
	}, undo); err == nil {
		t.Fatal("issue with an unreadable users.json: no error")
	}
	if _, err := os.Stat(out2); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s left behind by a failed issue: %v", out2, err)
	}
}

// TestCredsEdgeRefusesInvalidIDs: an edge's PoP and node ids are lower-case DNS labels (the
// registrar refuses any other, so no edge could join with it); the command issued a credential
// for any subject token (`--pop LON`, `--node n_1`), which no edge could use and which
// `creds list` then showed as an identity of the fleet. Refused now, with nothing issued or
// written.
func TestCredsEdgeRefusesInvalidIDs(t *testing.T) {
	tests := []struct{ pop, node, want string }{
		{"LON", "n1", `"LON" is not a valid PoP id`},
		{"lon", "N1", `"N1" is not a valid node id`},
		{"lon", "n_1", `"n_1" is not a valid node id`},
		{"lon_1", "n1", `"lon_1" is not a valid PoP id`},
		{"-lon", "n1", `"-lon" is not a valid PoP id`},
		{"lon", "n1-", `"n1-" is not a valid node id`},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.pop+"."+tt.node, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "n.creds")
			cmd := NewCommand()
			cmd.SetArgs([]string{"creds", "edge", "--pop", tt.pop, "--node", tt.node, "--store-dir", dir, "-o", out})
			var stdout bytes.Buffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stdout)
			if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("creds edge --pop %s --node %s = %v, want an error containing %q", tt.pop, tt.node, err, tt.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("creds edge -o %s wrote the file (%v)", out, err)
			}
			if _, err := IssueCredential(dir, natsauth.Edge(tt.pop, tt.node)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("IssueCredential(edge.%s.%s) = %v, want an error containing %q", tt.pop, tt.node, err, tt.want)
			}
		})
	}
	recs, err := ListCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Identity != natsauth.Control().String() {
			t.Errorf("users.json accepts %s (%s), want only control's", r.Identity, r.NKey)
		}
	}
}

// TestCredsListWithoutStore: `creds list` on a directory that holds no credentials (a
// --store-dir forgotten or mistyped) says so and fails, as revoke does; it printed an empty
// table and exited 0, which read as "this fleet accepts no credential". A store always holds
// control's own.
func TestCredsListWithoutStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-a-store")
	cmd := NewCommand()
	cmd.SetArgs([]string{"creds", "list", "--store-dir", dir})
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stdout)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "no credentials in "+dir) {
		t.Errorf("creds list --store-dir %s = %v (%q), want an error saying there are no credentials there", dir, err, stdout.String())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("creds list created %s (%v)", dir, err)
	}

	// A store lists control's credential and the ones issued.
	store := t.TempDir()
	if _, err := IssueCredential(store, natsauth.Edge("lon", "n1")); err != nil {
		t.Fatal(err)
	}
	cmd = NewCommand()
	cmd.SetArgs([]string{"creds", "list", "--store-dir", store})
	stdout.Reset()
	cmd.SetOut(&stdout)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("creds list: %v", err)
	}
	for _, id := range []string{"control", "edge.lon.n1"} {
		if !strings.Contains(stdout.String(), "\n"+id+" ") {
			t.Errorf("creds list printed %q, want a line for %s", stdout.String(), id)
		}
	}
}

// TestUsersSyncBeforeReload: the embedded server takes connections from its Start, and a
// client's check syncs the users file; a sync before the users can be set (the file changed
// by 'creds' while control starts) called a nil reload, a panic in the server's client
// goroutine that took control down. It leaves the change for the next sync, which applies it.
func TestUsersSyncBeforeReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), usersFileName)
	if err := os.WriteFile(path, []byte("[]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u := &usersSync{path: path, log: slog.New(slog.DiscardHandler)}
	u.sync() // the file differs from the none last applied; nothing can apply it yet
	reloads := 0
	u.reload = func() (int, error) { reloads++; return 0, nil }
	u.sync()
	if reloads != 1 {
		t.Fatalf("reloads after the users could be set: %d, want 1 (the change seen before)", reloads)
	}
}
