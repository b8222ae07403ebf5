package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRestartOverlapAckWaitsForOldProcess: a node restarted without dropping requests runs a
// new process under its id while the old one still serves (its lame duck, or before it was
// told to stop). The new process's acks stand for the node, so for the old process too: a
// receipt that says acked while the old process, cut off from NATS (or lagging), still serves
// the purged copy as a fresh hit breaks "acknowledged means applied". Before, the new process
// acked at once and the old one served the purged copy fresh for up to purge.max_lag.
func TestRestartOverlapAckWaitsForOldProcess(t *testing.T) {
	for _, tt := range []struct {
		name string
		// expired: the old process is cut off before the new one starts, until its key has
		// expired from the fleet bucket (3 s here): the new one finds no other process.
		expired bool
		maxLag  time.Duration
	}{
		{name: "old process cut off just before the purge", maxLag: 2 * time.Second},
		{name: "old process cut off until its key expired", expired: true, maxLag: 8 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, js, nc := startNATS(t)
			cut := natsCutter(t, "127.0.0.57", url)
			s, nodes := fleetEdgesWith(t, []string{cut.URL()}, true, time.Second, func(c *Config) { c.Purge.MaxLag = tt.maxLag })
			old := nodes[0]
			p := newPurger(t, js, nc)
			waitSubscribed(t, p, nodes)
			path := obj("/overlap", "cc", "max-age=600")
			do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
			wantCacheStatus(t, do(t, s.client, http.MethodGet, old.Addr(), testHost, path), "hit")

			if tt.expired {
				cut.Cut()
				waitKeyExpired(t, js, old)
			}
			// The new process of the same node, beside the old one.
			restarted, _ := startEdge(t, listen(t, "127.0.3.30"), processConfig(t, old, old.cfg.Node, url, url))
			waitSubscribed(t, p, []*Node{restarted})

			// The old process loses NATS before the purge: it may serve its cache fresh for
			// max_lag after its last confirmation, and never applies the purge.
			cut.Cut()
			got, r := purgeAcked(t, s, p, old, "/overlap", path, 3*tt.maxLag)
			if cs := got.header.Get("Cache-Status"); servedPurgedFresh(got) {
				t.Errorf("after the receipt said %s/%s acked, its old process served the purged copy as a fresh hit (Cache-Status %q)",
					old.cfg.PoP, old.cfg.Node, cs)
			}
			if old.purgeSeq.Load() >= r.Seq {
				t.Fatalf("old process applied purge %d while cut off: the cut did not hold", r.Seq)
			}
		})
	}
}

// TestPastLameDuckRevalidates: once a stop's lame duck is over, a restart's new process holds
// its acks no longer (ackHold), so the old process must not serve its cache as fresh for the
// shutdown_timeout its requests in flight may still take: a request whose head was still
// arriving when the drain began (the server lets it finish) is revalidated, not a fresh hit.
func TestPastLameDuckRevalidates(t *testing.T) {
	url, js, nc := startNATS(t)
	s, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, nil)
	cfg := processConfig(t, nodes[0], "n9", url, url)
	// The lame duck gives the server time to take the head's first bytes, so that it lets the
	// request finish once the drain begins (edge/http1's head grace).
	cfg.LameDuck = 2 * time.Second
	n, stop := startEdge(t, listen(t, "127.0.3.31"), cfg)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, []*Node{n})
	path := obj("/pastlameduck", "cc", "max-age=600")
	do(t, s.client, http.MethodGet, n.Addr(), testHost, path)
	wantCacheStatus(t, do(t, s.client, http.MethodGet, n.Addr(), testHost, path), "hit")
	s.client.CloseIdleConnections()

	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stopped := make(chan struct{})
	go func() { defer close(stopped); stop() }()
	wait.For(t, 10*time.Second, "the node draining", n.Draining)
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+testHost+"\r\n"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the lame duck over", n.pastLameDuck.Load)
	if _, err := io.WriteString(conn, "\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request whose head came in the drain's grace: %v", err)
	}
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=") {
		t.Errorf("past its lame duck the node served %q, want a revalidation (fwd=...)", cs)
	}
	<-stopped
}

// TestRestartOverlapOldLameDuckLonger: the new process's hold counts the old process's lame
// duck by its own lame_duck, so a restart that lowers lame_duck (8 s to 0 here) ends the hold
// while the old process still serves fresh hits in its lame duck: cut off from NATS just
// before a purge, it served the purged copy fresh after the receipt said the node acked.
func TestRestartOverlapOldLameDuckLonger(t *testing.T) {
	url, js, nc := startNATS(t)
	cut := natsCutter(t, "127.0.0.58", url)
	const maxLag = 2 * time.Second
	s, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, func(c *Config) { c.Purge.MaxLag = maxLag })
	cfg := processConfig(t, nodes[0], "n9", cut.URL(), url)
	cfg.LameDuck = 8 * time.Second
	old, stopOld := startEdge(t, listen(t, "127.0.3.34"), cfg)
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, []*Node{old})
	path := obj("/oldlameduck", "cc", "max-age=600")
	do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
	wantCacheStatus(t, do(t, s.client, http.MethodGet, old.Addr(), testHost, path), "hit")

	cfg.Fleet.NATS = url
	cfg.LameDuck = 0
	restarted, _ := startEdge(t, listen(t, "127.0.3.35"), cfg)
	waitSubscribed(t, p, []*Node{restarted})
	stopped := make(chan struct{})
	go func() { defer close(stopped); stopOld() }()
	defer func() { <-stopped }()
	wait.For(t, 10*time.Second, "the old process draining", old.Draining)
	// The old process yields the key at its first heartbeat draining; the new one then finds
	// no other write. Waited out: max_lag and more than two heartbeats after the last finding.
	hb := restarted.cfg.Fleet.Heartbeat
	wait.For(t, 10*time.Second, "max_lag and three heartbeats since the old process yielded", func() bool {
		at := restarted.sharedAt.Load()
		return at != nil && time.Since(*at) > maxLag+3*hb
	})
	if old.pastLameDuck.Load() {
		t.Fatal("the old process's lame duck ended before the new process's hold: nothing to show")
	}
	cut.Cut()
	got, _ := purgeAcked(t, s, p, old, "/oldlameduck", path, 3*maxLag)
	if cs := got.header.Get("Cache-Status"); servedPurgedFresh(got) {
		t.Errorf("after the receipt said the node acked, its old process (in its lame duck) served the purged copy as a fresh hit (Cache-Status %q)", cs)
	}
}

// TestRestartOverlapOldMaxLagLonger: the new process's hold counts the old process's max_lag
// by its own purge.max_lag, so a restart that lowers it (6 s to 2 s here) ends the hold while
// the old process, cut off from NATS before a purge, still serves its copies fresh: it served
// the purged copy as a fresh hit after the receipt said the node acked. The old process is cut
// off with the new one beside it, or before the new one starts (its key still there).
func TestRestartOverlapOldMaxLagLonger(t *testing.T) {
	for i, tt := range []struct {
		name string
		// cutFirst: the old process loses NATS before the new one starts, so the new one
		// finds only its last write on the key.
		cutFirst bool
	}{
		{name: "old process cut off just before the purge"},
		{name: "old process cut off before the new one started", cutFirst: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, js, nc := startNATS(t)
			cut := natsCutter(t, fmt.Sprintf("127.0.4.%d", 20+i), url)
			const oldMaxLag, newMaxLag = 6 * time.Second, 2 * time.Second
			s, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, func(c *Config) { c.Purge.MaxLag = newMaxLag })
			cfg := processConfig(t, nodes[0], "n9", cut.URL(), url)
			cfg.Purge.MaxLag = oldMaxLag
			old, _ := startEdge(t, listen(t, fmt.Sprintf("127.0.4.%d", 30+2*i)), cfg)
			p := newPurger(t, js, nc)
			waitSubscribed(t, p, []*Node{old})
			path := obj("/oldmaxlag", "cc", "max-age=600")
			do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
			wantCacheStatus(t, do(t, s.client, http.MethodGet, old.Addr(), testHost, path), "hit")

			if tt.cutFirst {
				cut.Cut()
			}
			cfg.Fleet.NATS = url
			cfg.Purge.MaxLag = newMaxLag
			restarted, _ := startEdge(t, listen(t, fmt.Sprintf("127.0.4.%d", 31+2*i)), cfg)
			waitSubscribed(t, p, []*Node{restarted})
			if restarted.sharedAt.Load() == nil {
				t.Fatal("the new process found no other write on the key: nothing to show")
			}
			cut.Cut()
			got, r := purgeAcked(t, s, p, old, "/oldmaxlag", path, 3*oldMaxLag)
			if cs := got.header.Get("Cache-Status"); servedPurgedFresh(got) {
				t.Errorf("after the receipt said the node acked, its old process (max_lag %v) served the purged copy as a fresh hit (Cache-Status %q)", oldMaxLag, cs)
			}
			if old.purgeSeq.Load() >= r.Seq {
				t.Fatalf("old process applied purge %d while cut off: the cut did not hold", r.Seq)
			}
		})
	}
}

// TestAckHoldCountsKeyMaxLag: while another process may serve, the hold is the largest max_lag
// registered on the node's key; a registration without one (a version before it) leaves this
// process's own, and one that claims more than any config accepts holds no longer than that.
func TestAckHoldCountsKeyMaxLag(t *testing.T) {
	for _, tt := range []struct {
		name    string
		written []time.Duration // the purge_max_lag of each registration seen on the key
		want    time.Duration
	}{
		{name: "no field (an older version)", written: []time.Duration{0}, want: 2 * time.Second},
		{name: "shorter", written: []time.Duration{time.Second}, want: 2 * time.Second},
		{name: "longer", written: []time.Duration{20 * time.Second, 5 * time.Second}, want: 20 * time.Second},
		{name: "past what a config accepts", written: []time.Duration{time.Hour}, want: wire.MaxPurgeMaxLag},
		{name: "negative", written: []time.Duration{-time.Hour}, want: 2 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{cfg: Config{Purge: PurgeConfig{MaxLag: 2 * time.Second}}}
			now := time.Now()
			n.writtenAt.Store(&now)
			n.sharedAt.Store(&now)
			for _, d := range tt.written {
				n.learnMaxLag(d)
			}
			if got := n.ackHold(time.Second); got != tt.want {
				t.Errorf("ackHold after registrations with purge_max_lag %v = %v, want %v", tt.written, got, tt.want)
			}
		})
	}
}

// TestAckHoldForgetsKeyMaxLag: a max_lag learned from another process's registration counts
// only while that process may still serve (its lame duck, its max_lag, two heartbeats after
// its last write seen). Before, the largest ever seen counted for the life of the process: a
// restart that lowered max_lag (50 ms to 1 ms here) held every ack of a later overlap, or of a
// heartbeat whose answer a cut lost, for the old process's max_lag, long after it was gone.
func TestAckHoldForgetsKeyMaxLag(t *testing.T) {
	const own, old, hb = time.Millisecond, 50 * time.Millisecond, time.Millisecond
	n := &Node{cfg: Config{Purge: PurgeConfig{MaxLag: own}}}
	now := time.Now()
	n.writtenAt.Store(&now)
	n.sharedAt.Store(&now)
	n.learnMaxLag(old) // the old process's last write, seen as this process started
	if got := n.ackHold(hb); got != old {
		t.Fatalf("ackHold beside the old process = %v, want its max_lag %v", got, old)
	}
	wait.For(t, 10*time.Second, "the overlap's hold to end", func() bool { return n.ackHold(hb) == 0 })
	// Later another process writes the key (a later restart's, with this process's max_lag,
	// or this process's own write whose answer was lost): the old one is long gone.
	later := time.Now()
	n.sharedAt.Store(&later)
	n.learnMaxLag(own)
	if got := n.ackHold(hb); got != own {
		t.Errorf("ackHold in a later overlap = %v, want %v: the old process's max_lag (%v) counted after it could serve no more", got, own, old)
	}
}

// TestKeyLagsRewatched: after the own key watch lost its watch, a max_lag that still counted
// at its last delivery counts as seen at the new snapshot (its writer may have written while
// the watch saw nothing), and a key written with ever shorter max_lags keeps a bounded list
// whose longest still counts.
func TestKeyLagsRewatched(t *testing.T) {
	const old, hb = 50 * time.Millisecond, time.Millisecond
	n := &Node{}
	n.learnMaxLag(old)
	lastDelivery := time.Now()
	wait.For(t, 10*time.Second, "the old max_lag to lapse", func() bool { return n.keyMaxLag(hb) == 0 })
	n.keyLagsRewatched(lastDelivery, hb)
	if got := n.keyMaxLag(hb); got != old {
		t.Errorf("keyMaxLag after a re-watch = %v, want %v: the writer may have written unseen", got, old)
	}
	for d := time.Minute; d > time.Minute-100*time.Millisecond; d -= time.Millisecond {
		n.learnMaxLag(d)
	}
	if len(n.keyLags) > maxKeyLags || n.keyMaxLag(hb) != time.Minute {
		t.Errorf("after 100 ever shorter max_lags: %d kept (at most %d), keyMaxLag %v (want 1m)", len(n.keyLags), maxKeyLags, n.keyMaxLag(hb))
	}
}

// TestRestartOverlapOldNeverRegistered: a process whose heartbeats all failed (here the fleet
// bucket refuses its registration as too large) but whose purge subscription works serves, and
// leaves no key for a restart's new process to find: that one holds no acks. Before, the old
// process counted as registered until a first heartbeat lapsed, so, cut off before a purge,
// it served the purged copy as a fresh hit after the receipt said the node acked.
func TestRestartOverlapOldNeverRegistered(t *testing.T) {
	url, js, nc := startNATS(t)
	cut := natsCutter(t, "127.0.0.59", url)
	const maxLag = 8 * time.Second
	s, nodes := fleetEdgesWith(t, []string{url}, true, time.Second, func(c *Config) { c.Purge.MaxLag = maxLag })
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	// The bucket refuses the old process's registration (its city alone is longer than the
	// bucket takes) and takes the others' (well under it), whenever the server handles it:
	// the old process's last heartbeat before the cut may reach the server and be handled
	// after it. Before, the bucket was set to refuse every registration until the cut and to
	// take them again right after, and under CPU load (about 1 run in 26) that heartbeat was
	// stored after the bucket took registrations again: the new process found the old one's
	// write on the key, as it should, and the test stopped with nothing to show.
	const bucketValueMax = 2048
	setFleetMaxValueSize(t, js, bucketValueMax)
	cfg := processConfig(t, nodes[0], "n9", cut.URL(), url)
	city := cfg.Fleet.City
	cfg.Fleet.City = strings.Repeat("x", bucketValueMax)
	old, _ := startEdge(t, listen(t, "127.0.3.36"), cfg)
	wait.For(t, 10*time.Second, "the old process's heartbeat refused", func() bool {
		return old.registrar.Load() != nil && old.registrar.Load().Err() != nil
	})
	if err, apiErr := old.registrar.Load().Err(), (*jetstream.APIError)(nil); !errors.As(err, &apiErr) ||
		apiErr.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
		t.Fatalf("the old process's heartbeat failed with %v, want the bucket refusing it as too large", err)
	}
	wait.For(t, 10*time.Second, "the old process's purge subscription confirmed", func() bool {
		sub := old.purgeSub.Load()
		if sub == nil {
			return false
		}
		select {
		case <-sub.Confirmed():
			return old.purgeBase.Load()
		default:
			return false
		}
	})
	if why := old.notReady(); !strings.HasPrefix(why, "joining the fleet") {
		t.Errorf("a process no heartbeat registered reports %q, want not ready (joining the fleet)", why)
	}
	path := obj("/neverregistered", "cc", "max-age=600")
	do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
	if cs := do(t, s.client, http.MethodGet, old.Addr(), testHost, path).header.Get("Cache-Status"); !strings.Contains(cs, "fwd=") {
		t.Errorf("a process no heartbeat registered served %q, want a revalidation (fwd=...)", cs)
	}
	if old.writtenAt.Load() != nil {
		t.Fatal("the old process's heartbeat was answered: nothing to show")
	}

	// Cut off, it never writes its key; the new process's registration fits.
	cut.Cut()
	cfg.Fleet.NATS, cfg.Fleet.City = url, city
	restarted, _ := startEdge(t, listen(t, "127.0.3.37"), cfg)
	waitSubscribed(t, p, []*Node{restarted})
	if restarted.sharedAt.Load() != nil {
		t.Fatal("the new process found another write on the key: nothing to show")
	}
	// The hold and the lapse are timed on the monotonic clock, which a wall clock step does
	// not move: the times kept must carry its reading (" m=" in their String).
	if at := restarted.writtenAt.Load(); at == nil || !strings.Contains(at.String(), " m=") {
		t.Errorf("the registration's time %v has no monotonic clock reading", at)
	}
	got, _ := purgeAcked(t, s, p, old, "/neverregistered", path, 3*maxLag)
	if cs := got.header.Get("Cache-Status"); servedPurgedFresh(got) {
		t.Errorf("after the receipt said the node acked, its old process (never registered) served the purged copy as a fresh hit (Cache-Status %q)", cs)
	}
}

// processConfig is the config of a process of node (of from's PoP and hosts) reaching NATS at
// natsURL, with a credential issued by the server at serverURL.
func processConfig(t *testing.T, from *Node, node, natsURL, serverURL string) Config {
	t.Helper()
	cfg := from.cfg
	cfg.Node = node
	cfg.Fleet.NATS, cfg.Fleet.Creds = natsURL, edgeCreds(t, serverURL, cfg.PoP, node)
	cfg.Logger = testLogger(t)
	return cfg
}

// servedPurgedFresh reports whether got is the copy a purge named (the origin's first version)
// served as a fresh hit, not revalidated.
func servedPurgedFresh(got resp) bool {
	return !strings.Contains(got.body, "@v2:") && !strings.Contains(got.header.Get("Cache-Status"), "fwd=")
}

// purgeAcked changes what the origin serves at bump, purges path on old's node, requires the
// receipt to say the node acked, and returns what old then serves for path, and the receipt.
func purgeAcked(t *testing.T, s *single, p *purger, old *Node, bump, path string, timeout time.Duration) (resp, purge.Receipt) {
	t.Helper()
	s.origin.Bump(bump)
	m := p.publish(purge.KindURL, false, []*Node{old}, path)
	r := p.wait(m, timeout)
	if st := r.PoPs[0].Nodes[0].Status; st != purge.NodeAcked {
		t.Fatalf("receipt's node status %q, want %q", st, purge.NodeAcked)
	}
	return do(t, s.client, http.MethodGet, old.Addr(), testHost, path), r
}

// setFleetMaxValueSize sets the fleet bucket's largest value, and returns what restores it.
func setFleetMaxValueSize(t *testing.T, js jetstream.JetStream, size int32) (restore func()) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, "KV_"+wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	was := c.MaxMsgSize
	c.MaxMsgSize = size
	if _, err := js.UpdateStream(ctx, c); err != nil {
		t.Fatalf("fleet bucket max value size: %v", err)
	}
	return func() {
		t.Helper()
		c.MaxMsgSize = was
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatalf("fleet bucket max value size: %v", err)
		}
	}
}

// TestRestartOverlapLapsedOldRegistersAgain: a process whose registration lapsed (cut off from
// NATS past the bucket's TTL) revalidates while lapsed, and another process of the node that
// finds the key empty acks at once (no other process's write there). When the lapsed one's
// link comes back, its heartbeat is answered before its purge subscription has replayed what it
// missed (a replay is a consumer, a stream read and every Apply; a heartbeat one write), and
// its last confirmation is still within max_lag: it must go on revalidating until the
// subscription confirms after it registered again. Before, it served the copy the other
// process had acked the purge of as a fresh hit from its next heartbeat on.
func TestRestartOverlapLapsedOldRegistersAgain(t *testing.T) {
	url, js, nc := startNATS(t)
	cut := natsCutter(t, "127.0.0.60", url)
	const maxLag = 30 * time.Second // well over the cut: the old process's confirmation stays within it
	s, nodes := fleetEdgesWith(t, []string{cut.URL()}, true, time.Second, func(c *Config) { c.Purge.MaxLag = maxLag })
	old := nodes[0]
	p := newPurger(t, js, nc)
	waitSubscribed(t, p, nodes)
	path := obj("/lapsedagain", "cc", "max-age=600")
	do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
	wantCacheStatus(t, do(t, s.client, http.MethodGet, old.Addr(), testHost, path), "hit")

	cut.Cut()
	waitKeyExpired(t, js, old)
	wait.For(t, 10*time.Second, "the old process's registration lapsed", old.registrationLapsed)
	restarted, _ := startEdge(t, listen(t, "127.0.3.38"), processConfig(t, old, old.cfg.Node, url, url))
	waitSubscribed(t, p, []*Node{restarted})
	// Acked by the new process at once; the old one is asked for nothing meanwhile (a
	// request would revalidate, and refresh, its copy).
	s.origin.Bump("/lapsedagain")
	r := p.wait(p.publish(purge.KindURL, false, []*Node{old}, path), 3*maxLag)
	if st := r.PoPs[0].Nodes[0].Status; st != purge.NodeAcked {
		t.Fatalf("receipt's node status %q, want %q", st, purge.NodeAcked)
	}

	// The old process's replay cannot start (no consumer may be made on the purge stream), so
	// it has not applied the purge when its heartbeat is answered again.
	blockPurgeReplays(t, js)
	written := old.writtenAt.Load()
	cut.Restore()
	wait.For(t, 20*time.Second, "the old process registered again", func() bool {
		at := old.writtenAt.Load()
		return at != written && !old.registrationLapsed()
	})
	if old.purgeSeq.Load() >= r.Seq {
		t.Fatalf("old process applied purge %d: the blocked replay did not hold", r.Seq)
	}
	got := do(t, s.client, http.MethodGet, old.Addr(), testHost, path)
	if servedPurgedFresh(got) {
		t.Errorf("after the receipt said the node acked, its old process, registered again but not caught up, served the purged copy as a fresh hit (Cache-Status %q)",
			got.header.Get("Cache-Status"))
	}
}

// blockPurgeReplays lets no further consumer be made on the purge stream: one placeholder, and
// the stream bounded to the consumers it has.
func blockPurgeReplays(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, purge.StreamName(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "placeholder", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxConsumers = info.State.Consumers
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("bound the purge stream's consumers: %v", err)
	}
	if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "probe", AckPolicy: jetstream.AckNonePolicy}); err == nil {
		t.Fatal("a consumer was made on the bounded purge stream: replays are not blocked")
	}
}

// waitKeyExpired waits for the fleet bucket's TTL to remove n's key (n cut off from NATS).
func waitKeyExpired(t *testing.T, js jetstream.JetStream, n *Node) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the old process's key to expire", func() bool {
		_, err := kv.Get(context.Background(), wire.FleetKey(n.cfg.PoP, n.cfg.Node))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}
