package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/durhist"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// startControlB runs a control plane with embedded NATS for a benchmark.
func startControlB(b *testing.B, cfg Config) (*Server, string) {
	b.Helper()
	cfg.TokensFile = "testdata/tokens.yaml"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.StoreDir = b.TempDir()
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	pastStartGrace(s) // measured outside the grace, whose receipts are held until it ends
	ln := listenOn(b, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	select {
	case <-s.Ready():
	case err := <-done:
		b.Fatalf("control stopped: %v", err)
	}
	registerNATS(s.NATSURL(), s.IssueCredential)
	return s, "http://" + ln.Addr().String()
}

const benchEdges = 20

// startBenchFleet runs a control plane and benchEdges real edge nodes in 10 PoPs, each edge on
// its own NATS connection, with one host configured.
func startBenchFleet(b *testing.B) (*Server, string) {
	b.Helper()
	s, base := startControlB(b, Config{PurgeRate: -1})
	if err := fleet.PutHost(context.Background(), s.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		b.Fatal(err)
	}
	for i := range benchEdges {
		// Heartbeats once a second, as in production (the fleet's default TTL is 3 s).
		startEdgeHB(b, fmt.Sprintf("127.0.7.%d", 10+i), fmt.Sprintf("pop%02d", i/2), fmt.Sprintf("n%d", i%2), s.NATSURL(), time.Second)
	}
	wait.For(b, 20*time.Second, "every edge in the fleet view", func() bool { return len(s.Fleet().Nodes()) == benchEdges })
	return s, base
}

// benchAnswer is the part of a purge answer (purge.Response) BenchmarkPurgeAPI reads: the
// times, and the nodes still pending. Decoding only that, from a buffer the loop reuses, keeps
// the harness's own garbage small: it shares the process, and its collector, with the fleet
// it measures (a whole purge.Response decoded with a json.Decoder was a third of the
// benchmark's allocation).
type benchAnswer struct {
	Complete    bool      `json:"complete"`
	CompletedAt time.Time `json:"completed_at"`
	Purges      []struct {
		IssuedAt time.Time `json:"issued_at"`
		PoPs     []struct {
			Nodes []struct {
				AppliedAt time.Time `json:"applied_at"`
			} `json:"nodes"`
		} `json:"pops"`
		Pending []purge.NodeRef `json:"pending"`
	} `json:"purges"`
}

// postPurgeB sends one purge with ?wait=5s and decodes the answer's times, reading it into buf.
func postPurgeB(c *http.Client, base string, body []byte, buf *bytes.Buffer) (benchAnswer, int, error) {
	var r benchAnswer
	code, err := postPurgeRaw(c, base, body, func(_ int, body io.Reader) error {
		buf.Reset()
		if _, err := buf.ReadFrom(body); err != nil {
			return err
		}
		return json.Unmarshal(buf.Bytes(), &r)
	})
	return r, code, err
}

// postPurgeRaw sends one purge with ?wait=5s and hands the answer's status and body to read.
func postPurgeRaw(c *http.Client, base string, body []byte, read func(code int, body io.Reader) error) (int, error) {
	req, err := http.NewRequest("POST", base+"/v1/purge?wait=5s", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tokPurger)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	return res.StatusCode, read(res.StatusCode, res.Body)
}

func msOf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// warmPurges is how many URL purges BenchmarkPurgeAPI sends before it measures, so that it
// measures a fleet that has run rather than one whose memory is new: a fresh edge's first
// lookups of distinct keys set bits all over Ristretto's doorkeeper, a bloom filter of 1 MiB at
// the default max_bytes (256 pages), about seven of its pages faulted in per new key until every
// page has been touched (a few hundred keys), and the 20 edges reach Ristretto's batches of 64
// accesses at the same purge; the heap, the edges' purge records and the tracker's grow into
// new pages too, for longer. An edge that serves traffic has touched them long before; measured
// from a fresh fleet the first thousand purges took 15-20 page faults each (the doorkeepers
// about 5 of them) and the ack p99 was 2.4-3.1 ms, after these 3.6-7 and 1.6-1.7 ms
// (docs/benchmarks.md, fifty-first pass).
const warmPurges = 1000

// BenchmarkPurgeAPI measures, per purge, the time from the POST /v1/purge?wait call to the
// control plane's receipt of the last of 20 real edges' acks (ack-*), and to the HTTP answer
// (answer-*), next to the bare core-NATS fan-out floor to 20 connections measured in the same
// run (floor-*), and the same fan-out with a reply from each (rtt-floor-*), after warmPurges
// purges not measured. Run with -benchtime 1000x.
func BenchmarkPurgeAPI(b *testing.B) {
	s, base := startBenchFleet(b)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	var acks, answers, issues, firstApplies, lastApplies, ackBacks []time.Duration
	var buf bytes.Buffer // each answer, read whole
	for w := range warmPurges {
		body := fmt.Appendf(nil, `{"host":%q,"urls":["/warm/%d"]}`, hostA, w)
		if r, code, err := postPurgeB(c, base, body, &buf); err != nil || code != http.StatusOK || !r.Complete {
			b.Fatalf("warm-up purge %d = %d complete=%v: %v", w, code, r.Complete, err)
		}
	}
	faults := processMinorFaults()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		body := fmt.Appendf(nil, `{"host":%q,"urls":["/p/%d"]}`, hostA, i)
		i++
		start := time.Now()
		r, code, err := postPurgeB(c, base, body, &buf)
		answered := time.Since(start)
		if err != nil || code != http.StatusOK || !r.Complete || r.CompletedAt.IsZero() || len(r.Purges) != 1 {
			var pending []purge.NodeRef
			for _, rc := range r.Purges {
				pending = append(pending, rc.Pending...)
			}
			b.Fatalf("purge %d = %d complete=%v after %v: pending %v: %v", i, code, r.Complete, answered, pending, err)
		}
		acks = append(acks, r.CompletedAt.Sub(start))
		answers = append(answers, answered)
		// Where the time went (one process, one clock): the request to its issue, the issue to
		// the first and the last node's apply, the last apply to the control's receipt of the
		// last ack.
		rc := r.Purges[0]
		var first, last time.Time
		for _, p := range rc.PoPs {
			for _, n := range p.Nodes {
				if n.AppliedAt.IsZero() {
					b.Fatalf("purge %d: a node's receipt has no applied_at", i)
				}
				if first.IsZero() || n.AppliedAt.Before(first) {
					first = n.AppliedAt
				}
				if n.AppliedAt.After(last) {
					last = n.AppliedAt
				}
			}
		}
		issues = append(issues, rc.IssuedAt.Sub(start))
		firstApplies = append(firstApplies, first.Sub(rc.IssuedAt))
		lastApplies = append(lastApplies, last.Sub(rc.IssuedAt))
		ackBacks = append(ackBacks, r.CompletedAt.Sub(last))
	}
	b.StopTimer()
	faults = processMinorFaults() - faults
	opts := natsOptions(b, s.NATSURL(), natsauth.Control())
	// The floors' publisher stands for control, in process with its NATS server as control's
	// own connection is; their subscribers stand for edges, over TCP.
	inProcess := []nats.Option{nats.InProcessServer(s.embeddedNATS())}
	fl := natstest.FanoutFloor(b, s.NATSURL(), benchEdges, max(len(acks), 200), inProcess, opts...)
	rt := natstest.RoundTripFloor(b, s.NATSURL(), benchEdges, max(len(acks), 200), inProcess, opts...)
	ah, wh, fh, rh := durhist.Of(acks), durhist.Of(answers), durhist.Of(fl), durhist.Of(rt)
	b.ReportMetric(msOf(ah.Quantile(0.50)), "ack-p50-ms")
	b.ReportMetric(msOf(ah.Quantile(0.99)), "ack-p99-ms")
	b.ReportMetric(msOf(ah.Max()), "ack-max-ms")
	b.ReportMetric(msOf(wh.Quantile(0.50)), "answer-p50-ms")
	b.ReportMetric(msOf(wh.Quantile(0.99)), "answer-p99-ms")
	b.ReportMetric(msOf(fh.Quantile(0.50)), "floor-p50-ms")
	b.ReportMetric(msOf(fh.Quantile(0.99)), "floor-p99-ms")
	b.ReportMetric(float64(ah.Quantile(0.99))/float64(max(fh.Quantile(0.99), 1)), "p99/floor")
	// The round trip (fan-out and 20 replies): the floor of a purge acknowledged by every node.
	b.ReportMetric(msOf(rh.Quantile(0.50)), "rtt-floor-p50-ms")
	b.ReportMetric(msOf(rh.Quantile(0.99)), "rtt-floor-p99-ms")
	b.ReportMetric(float64(ah.Quantile(0.99))/float64(max(rh.Quantile(0.99), 1)), "p99/rtt-floor")
	// Pages the process touched for the first time, per purge measured (0 where not read).
	b.ReportMetric(float64(faults)/float64(len(acks)), "minflt/op")
	// Caught-up edges take purges from the live subject and have no consumer; a replay's stays
	// listed for 30 s.
	b.ReportMetric(float64(natstest.StreamConsumers(b, s.JetStream(), purge.StreamName(""))), "stream-consumers")
	for _, d := range []struct {
		name string
		v    []time.Duration
	}{{"issue", issues}, {"apply-first", firstApplies}, {"apply-last", lastApplies}, {"ack-back", ackBacks}} {
		h := durhist.Of(d.v)
		b.ReportMetric(msOf(h.Quantile(0.50)), d.name+"-p50-ms")
		b.ReportMetric(msOf(h.Quantile(0.99)), d.name+"-p99-ms")
	}
}

// BenchmarkPurgeAPISustained measures purges per second through the API with every purge
// acked by all 20 edges (each POST waits for its acks), from 64 concurrent clients. It also
// reports the CPU the whole process (control, NATS, edges, clients) spent per purge: on a
// shared machine the rate follows the other jobs' load, the CPU per purge much less so.
func BenchmarkPurgeAPISustained(b *testing.B) {
	s, base := startBenchFleet(b)
	const clients = 64
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer c.CloseIdleConnections()
	var (
		next atomic.Int64
		mu   sync.Mutex // guards late
		late []string   // ids of purges not complete within their 5 s wait
	)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), processCPU()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				body := fmt.Appendf(nil, `{"host":%q,"keys":["k%d"]}`, hostA, i)
				// 200 means every node acked (202: not within the wait). The clients share the
				// machine with what they measure, so an answer is decoded only when the purge
				// is late: decoding every node's receipt took as much CPU as the handler.
				var r purge.Response
				code, err := postPurgeRaw(c, base, body, func(code int, body io.Reader) error {
					if code == http.StatusOK {
						_, err := io.Copy(io.Discard, body)
						return err
					}
					return json.NewDecoder(body).Decode(&r)
				})
				if err == nil && code != http.StatusOK && (code != http.StatusAccepted || len(r.Purges) != 1) {
					err = fmt.Errorf("purge %d = %d with %d receipts", i, code, len(r.Purges))
				}
				if err != nil {
					errs <- err
					return
				}
				if code == http.StatusAccepted {
					mu.Lock()
					late = append(late, r.Purges[0].ID)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpu
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	// A purge that missed its wait must still be acked by every node, late.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range late {
		if r := s.Tracker().Wait(ctx, id); !r.Complete {
			b.Errorf("purge %s never acked by %v", id, r.Pending)
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "purges/s")
	b.ReportMetric(float64(b.N*benchEdges)/elapsed.Seconds(), "acks/s")
	b.ReportMetric(float64(len(late)), "late-acked")
	b.ReportMetric(msOf(cpu)/float64(b.N), "cpu-ms/purge")
	b.ReportMetric(float64(natstest.StreamConsumers(b, s.JetStream(), purge.StreamName(""))), "stream-consumers")
}

// BenchmarkIdleFleet measures the CPU an idle fleet (control, NATS and 20 edges heartbeating
// once a second, in one process) spends per second: what the heartbeats cost everyone who
// receives them. Each iteration is one second of idling; run with -benchtime 5x.
func BenchmarkIdleFleet(b *testing.B) {
	startBenchFleet(b)
	b.ResetTimer()
	start, cpu := time.Now(), processCPU()
	for b.Loop() {
		time.Sleep(time.Second) // the window measured, not a synchronisation
	}
	elapsed, cpu := time.Since(start), processCPU()-cpu
	b.ReportMetric(msOf(cpu)/elapsed.Seconds(), "cpu-ms/s")
}
