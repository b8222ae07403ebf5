package edge

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestStreamedMissCutShortShowsItsBytes: a storable answer that streams to its clients as it
// arrives (a streaming miss: more than 64 KiB declared, or chunked) whose origin sends its head
// and some bytes, then cuts the body (a close, or a reset), reaches the client as nginx and
// Varnish relay it: the head and the bytes that came, then the cut, which the client can tell
// (fewer bytes than Content-Length, no last chunk, a reset stream); never a complete-looking
// answer. So does a Range of a body too large to keep (cut out of it as it arrives), the
// body decoded for a client that does not accept its coding (and one whose coded stream turns
// corrupt midway), and a Range of a sliced object whose next slice's fetch is cut short. The
// bytes written since the last flush were dropped at the abort (edge/http1, net/http's
// HTTP/1.1 and HTTP/2): the client got the head and none of the bytes that came with the cut,
// or nothing at all when the head was still held with them. A sliced answer whose first slice
// it needs fails (before its head, after it, after some of its bytes: a slice is read whole
// before any of it is sent) gets a 502, as from nginx 1.22's slice module when that slice's
// fetch fails before its head, where it got a bare cut, and before that a 206 head alone; a
// fleet node asking gets the bare cut, on which it tries its next tier (a 502 would be its
// answer). None of the answers is stored (but for a sliced object's manifest and first slice,
// stored before the cut).
func TestStreamedMissCutShortShowsItsBytes(t *testing.T) {
	const hdr = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: max-age=60\r\nX-Origin: yes\r\n"
	plain := bytes.Repeat([]byte("0123456789abcdef"), 40<<10/16) // more than the 32 KiB decoded before the head goes out
	var coded bytes.Buffer
	zw := gzip.NewWriter(&coded)
	zw.Write(plain)
	zw.Flush()
	codedFirst := bytes.Clone(coded.Bytes())
	coded.Reset()
	zw.Write([]byte("hello"))
	zw.Flush() // no end: the trailer never comes
	codedLast := coded.Bytes()
	// A sliced object (a strong ETag, more than max_object_bytes): its first slice comes whole,
	// its second is cut after a few bytes; the Range asked for spans both.
	const sliceSize = 64 << 10
	sliced := bytes.Repeat([]byte("0123456789abcdef"), 2*sliceSize/16)
	type script struct {
		head, before, after string // before the client has the head, and after, then the cut
		reqHdr              []string
		status              int
		want                []byte
		note                string // in the access log line's note; "stream aborted" if empty
		stored              int64  // objects it leaves stored: a sliced object's manifest and first slice
		headHeld            bool   // the head is held with the first bytes until the cut (not waited on)
		noHead              bool   // cut before its first body byte: no head at all, a bare cut
		badGateway          bool   // failed before its first body byte: the edge's own 502
		peer                bool   // asked by a fleet node (a signed hop)
		logStatus           int    // the access log's status, if not status's (a bare cut's: the held head's)
	}
	scripts := map[string]script{
		"length": {head: hdr + "Content-Length: 80000\r\n\r\n", after: "hello", status: http.StatusOK, want: []byte("hello")},
		"chunked": {head: hdr + "Transfer-Encoding: chunked\r\n\r\n", after: "5\r\nhello\r\n",
			status: http.StatusOK, want: []byte("hello")},
		// More than max_object_bytes: not kept, so a Range is cut out of it as it arrives.
		"range": {head: hdr + "Content-Length: 100000\r\n\r\n", after: "hello", reqHdr: []string{"Range", "bytes=0-99999"},
			status: http.StatusPartialContent, want: []byte("hello")},
		"gzip": {head: hdr + fmt.Sprintf("Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", 70000),
			before: string(codedFirst), after: string(codedLast), reqHdr: []string{"Accept-Encoding", "identity"},
			status: http.StatusOK, want: append(bytes.Clone(plain), "hello"...)},
		// The coded stream turns corrupt after the head went out: the decoded bytes before
		// the corruption go out, then the cut.
		"gzipcorrupt": {head: hdr + fmt.Sprintf("Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", 70000),
			before: string(codedFirst), after: string(codedLast) + "\xff\xff\xff\xff", reqHdr: []string{"Accept-Encoding", "identity"},
			status: http.StatusOK, want: append(bytes.Clone(plain), "hello"...), note: "gzip"},
		"sliced": {reqHdr: []string{"Range", fmt.Sprintf("bytes=%d-%d", sliceSize-36, sliceSize+63)},
			status: http.StatusPartialContent, want: sliced[sliceSize-36 : sliceSize], note: "sliced answer aborted", stored: 2, headHeld: true},
		// A Range within the second slice: its fetch fails before the answer's first byte
		// (the origin closes before the slice's head, after it, after some of its bytes),
		// and the client gets a 502, as nginx's slice module answers a first slice that fails
		// before its head; a fleet node asking gets no head, a bare cut, and moves on to its
		// next tier. So do several ranges (multipart/byteranges), the first within the
		// second slice: the part's header is held with the head.
		"slicedfirst": {reqHdr: []string{"Range", fmt.Sprintf("bytes=%d-%d", sliceSize+1, sliceSize+63)},
			note: "sliced answer aborted", stored: 2, badGateway: true},
		"slicedmulti": {reqHdr: []string{"Range", fmt.Sprintf("bytes=%d-%d,%d-%d", sliceSize+1, sliceSize+63, sliceSize+100, sliceSize+200)},
			note: "sliced answer aborted", stored: 2, badGateway: true},
		"slicedpeer": {reqHdr: []string{"Range", fmt.Sprintf("bytes=%d-%d", sliceSize+1, sliceSize+63)},
			note: "sliced answer aborted", stored: 2, noHead: true, peer: true, logStatus: http.StatusPartialContent},
	}
	var mu sync.Mutex
	cut := map[string]chan struct{}{} // by path: closed once the client has the head
	o := startScriptOrigin(t, "127.0.0.69", func(c net.Conn, r *http.Request, _ int) bool {
		kind, how, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if strings.HasPrefix(kind, "sliced") {
			// Not waited on: the Range's first bytes, of the first slice, are what the
			// server holds when the second slice's fetch fails.
			first := int64(0)
			if rng := r.Header.Get("Range"); rng != "bytes=0-65535" {
				first = sliceSize
			}
			if first != 0 && how == "nohead" {
				return true // the second slice's fetch cut before its head
			}
			fmt.Fprintf(c, "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nCache-Control: max-age=60\r\n"+
				"X-Origin: yes\r\nETag: \"s1\"\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n",
				first, first+sliceSize-1, len(sliced), sliceSize)
			if first == 0 {
				c.Write(sliced[:sliceSize])
				return false
			}
			if how != "head" {
				c.Write(sliced[first : first+10])
			}
			return true // the second slice's cut
		}
		s := scripts[kind]
		io.WriteString(c, s.head+s.before)
		mu.Lock()
		ch := cut[r.URL.Path]
		mu.Unlock()
		select {
		case <-ch:
		case <-time.After(5 * time.Second): // the head never reached the client: a failure below
		}
		if how == "reset" {
			// The bytes go with the reset's: sent after it, they could be lost on the way.
			c.(*net.TCPConn).SetLinger(0)
		} else {
			io.WriteString(c, s.after)
		}
		return true // the cut
	})
	for _, servers := range []string{HTTP1Fast, HTTP1Std} {
		var out logtest.Buffer
		sg, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
			c.HTTP1, c.HTTP2 = servers, servers // edge/http1 and edge/h2, or net/http's
			c.PeerKey = testPeerKey             // slicedpeer's request is a fleet node's
			c.AccessLog = true
			c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
			c.Cache.MaxObjectBytes = 90000
			c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + o, Cache: wire.CacheOptions{SliceBytes: sliceSize}}}
		})
		var stored int64 // objects the answers leave stored
		for _, pc := range everyProtocol(t, n) {
			for i, tt := range []string{"/length/close", "/length/reset", "/chunked/close", "/chunked/reset", "/range/close", "/gzip/close", "/gzipcorrupt/close", "/sliced/close",
				"/slicedfirst/close", "/slicedfirst/nohead", "/slicedfirst/head", "/slicedmulti/close", "/slicedpeer/close"} {
				if i%7 == 0 {
					// Every exchange here fails but a sliced object's first slice: half of 20
					// or more failing within the breaker's interval (10 s of the node's clock:
					// origin/fetch's FailureRatio and MinRequests) would open it. A protocol's
					// 13 paths ask the origin 19 times, 13 of them failing, and 20 and 14 over
					// HTTP/1.1, whose client retries slicedpeer's bare cut on its kept-alive
					// connection: each seven come in an interval of their own.
					sg.clock.Advance(11 * time.Second)
				}
				// The path is made the servers' and the protocol's own: each is a miss, with
				// its own log line.
				path := tt + "/" + servers + "/" + strings.ReplaceAll(pc.name, " ", "-")
				s := scripts[strings.Split(tt, "/")[1]]
				stored += s.stored
				if s.note == "" {
					s.note = "stream aborted"
				}
				if strings.HasSuffix(tt, "/reset") {
					s.before, s.after = s.after, ""
				}
				t.Run(servers+"/"+pc.name+tt, func(t *testing.T) {
					ch := make(chan struct{})
					mu.Lock()
					cut[path] = ch
					mu.Unlock()
					var once sync.Once
					release := func() { once.Do(func() { close(ch) }) }
					defer release()
					req, err := http.NewRequest(http.MethodGet, pc.url+path, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Host = testHost
					if s.reqHdr != nil {
						req.Header.Set(s.reqHdr[0], s.reqHdr[1])
					}
					if s.peer {
						req.Header.Set(hopHeader, "peer")
						n.signHop(req)
					}
					r, err := (&http.Client{Transport: pc.rt}).Do(req)
					release()
					switch {
					case s.noHead:
						if err == nil {
							r.Body.Close()
							t.Errorf("GET %s = %d (Content-Length %d); want no head, a bare cut", path, r.StatusCode, r.ContentLength)
						}
					case s.badGateway:
						if err != nil {
							t.Fatalf("GET %s: %v; want a 502", path, err)
						}
						body, err := io.ReadAll(r.Body)
						r.Body.Close()
						cs := r.Header.Get("Cache-Status")
						if r.StatusCode != http.StatusBadGateway || err != nil || r.Header.Get("X-Origin") != "" ||
							r.Header.Get("Content-Range") != "" || !strings.Contains(cs, "detail=upstream-slice-failed") {
							t.Errorf("GET %s = %d (X-Origin %q, Content-Range %q, Cache-Status %q), body %q, read error %v; want the edge's 502",
								path, r.StatusCode, r.Header.Get("X-Origin"), r.Header.Get("Content-Range"), cs, body, err)
						}
					case err != nil && pc.name == "http/3" && s.headHeld:
						// QUIC's reset of the stream drops what it has not delivered (without
						// RESET_STREAM_AT, which the client must offer), the head sent with it too.
						t.Logf("GET %s: %v (the head, sent with the cut, dropped by the reset)", path, err)
					case err != nil:
						t.Fatalf("GET %s: %v; want the answer's head, then its cut", path, err)
					default:
						got, err := io.ReadAll(r.Body)
						r.Body.Close()
						want := s.want
						if pc.name == "http/3" && bytes.HasPrefix(want, got) {
							want = got // QUIC's reset drops what it has not delivered: never the cut
						}
						if r.StatusCode != s.status || r.Header.Get("X-Origin") != "yes" || err == nil || !bytes.Equal(got, want) {
							t.Errorf("GET %s = %d (X-Origin %q), %d body bytes ending %q, read error %v; want %d from the origin, %d bytes ending %q, then an error",
								path, r.StatusCode, r.Header.Get("X-Origin"), len(got), got[max(0, len(got)-8):], err, s.status, len(s.want), s.want[max(0, len(s.want)-8):])
						}
					}
					note := ""
					wait.For(t, 5*time.Second, "the access log line", func() bool {
						note = accessNote(t, out.String(), http.MethodGet, testHost, path)
						return note != ""
					})
					if !strings.Contains(note, s.note) {
						t.Errorf("GET %s logged with note %q, want the cut (%q)", path, note, s.note)
					}
					if want := s.logStatus; want != 0 {
						// A bare cut sends no status: the log keeps the one its head was held
						// with, as before the hold (it said 200, which no answer here had).
						if got := accessStatus(t, out.String(), http.MethodGet, testHost, path); got != want {
							t.Errorf("GET %s logged with status %d, want %d", path, got, want)
						}
					}
				})
			}
		}
		// The kept answers' Cache-Status said stored (it went out before the cut): none was,
		// but for the sliced objects' manifests and first slices, stored before the cut.
		if items := n.store.Stats().Items; items != stored {
			t.Errorf("%s: %d objects stored after every answer was cut short, want %d", servers, items, stored)
		}
	}
}

// accessStatus is the status of the first access log line in log for method, host and path,
// or 0.
func accessStatus(t *testing.T, log, method, host, path string) int {
	t.Helper()
	status, _ := accessEntry(t, log, method, host, path)["status"].(float64)
	return int(status)
}

// TestStreamedMissCutShortCollapsed: the clients collapsed on one streaming fill, over every
// protocol at once, all get what TestStreamedMissCutShortShowsItsBytes's one client gets when
// the origin cuts the body: the head, the bytes that came, then the cut. The origin is asked
// once, and nothing is stored.
func TestStreamedMissCutShortCollapsed(t *testing.T) {
	const hdr = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: max-age=60\r\nX-Origin: yes\r\n"
	for _, tt := range []struct{ name, head, after string }{
		{"length", hdr + "Content-Length: 80000\r\n\r\n", "hello"},
		{"chunked", hdr + "Transfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n"},
	} {
		for _, servers := range []string{HTTP1Fast, HTTP1Std} {
			t.Run(tt.name+"/"+servers, func(t *testing.T) {
				cut := make(chan struct{}) // closed once every client has the head
				var asked atomic.Int32
				o := startScriptOrigin(t, "127.0.0.69", func(c net.Conn, r *http.Request, _ int) bool {
					asked.Add(1)
					io.WriteString(c, tt.head)
					select {
					case <-cut:
					case <-time.After(5 * time.Second): // a head never reached its client: a failure below
					}
					io.WriteString(c, tt.after)
					return true // the cut
				})
				_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
					c.HTTP1, c.HTTP2 = servers, servers
					c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}
				})
				pcs := everyProtocol(t, n)
				pcs = append(pcs, pcs...) // two clients on each protocol
				var heads, done sync.WaitGroup
				heads.Add(len(pcs))
				for _, pc := range pcs {
					done.Go(func() {
						req, err := http.NewRequest(http.MethodGet, pc.url+"/collapsed", nil)
						if err != nil {
							heads.Done()
							t.Error(err)
							return
						}
						req.Host = testHost
						r, err := (&http.Client{Transport: pc.rt}).Do(req)
						heads.Done()
						if err != nil {
							t.Errorf("%s: %v; want the answer's head, then its cut", pc.name, err)
							return
						}
						got, err := io.ReadAll(r.Body)
						r.Body.Close()
						want := "hello"
						if pc.name == "http/3" && strings.HasPrefix(want, string(got)) {
							want = string(got) // QUIC's reset drops what it has not delivered
						}
						if r.StatusCode != http.StatusOK || r.Header.Get("X-Origin") != "yes" || err == nil || string(got) != want {
							t.Errorf("%s: %d (X-Origin %q), body %q, read error %v; want 200 from the origin, %q, then an error",
								pc.name, r.StatusCode, r.Header.Get("X-Origin"), got, err, "hello")
						}
					})
				}
				heads.Wait()
				close(cut)
				done.Wait()
				if got := asked.Load(); got != 1 {
					t.Errorf("the origin was asked %d times, want once (the clients collapsed)", got)
				}
				if items := n.store.Stats().Items; items != 0 {
					t.Errorf("%d objects stored after the answer was cut short, want 0", items)
				}
			})
		}
	}
}

// TestRevalidationCutShortIsCutShort: a revalidation of a stale copy that carries
// stale-if-error, answered 200 with a body that streams (chunked) and that the origin cuts
// short, reaches the client as any streamed miss cut short does (the new head, the bytes that
// came, the cut), not as the stale copy: the head went out before the cut, as with nginx
// 1.22's proxy_cache_use_stale error and Varnish 7.1's streaming fetch (docs/edge.md). The
// stale copy stays stored, and stands in for the next revalidation's 503. An answer read whole
// before its head goes out (a Content-Length of at most 64 KiB) is no answer yet when it is cut:
// the stale copy stands in for it.
func TestRevalidationCutShortIsCutShort(t *testing.T) {
	for _, tt := range []struct {
		name, framing, cut string
		stale              bool // the cut revalidation's client gets the stale copy
	}{
		{"chunked", "Transfer-Encoding: chunked", "5\r\nhello\r\n", false},
		{"small-length", "Content-Length: 100", "hello", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var asked atomic.Int32
			o := startScriptOrigin(t, "127.0.0.69", func(c net.Conn, r *http.Request, _ int) bool {
				switch asked.Add(1) {
				case 1:
					io.WriteString(c, "HTTP/1.1 200 OK\r\nCache-Control: max-age=60, stale-if-error=600\r\nETag: \"v1\"\r\nContent-Length: 3\r\n\r\nold")
					return false
				case 2:
					if inm := r.Header.Get("If-None-Match"); inm != `"v1"` {
						t.Errorf("revalidation If-None-Match %q, want \"v1\"", inm)
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nCache-Control: max-age=60, stale-if-error=600\r\nETag: \"v2\"\r\n"+tt.framing+"\r\n\r\n"+tt.cut)
					return true // the cut
				}
				io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
				return false
			})
			sg, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
				c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}
			})
			c := &http.Client{Transport: &http.Transport{}}
			get := func() (*http.Response, string, error) {
				t.Helper()
				req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr()+"/reval", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = testHost
				r, err := c.Do(req)
				if err != nil {
					t.Fatalf("GET /reval: %v", err)
				}
				defer r.Body.Close()
				b, err := io.ReadAll(r.Body)
				return r, string(b), err
			}
			wantStale := func(what string) {
				t.Helper()
				r, body, err := get()
				if cs := r.Header.Get("Cache-Status"); err != nil || body != "old" || !strings.Contains(cs, "detail=stale-if-error") {
					t.Errorf("%s = %d %q (Cache-Status %q), %v; want the stale copy under stale-if-error", what, r.StatusCode, body, cs, err)
				}
			}
			if r, body, err := get(); err != nil || body != "old" || r.Header.Get("ETag") != `"v1"` {
				t.Fatalf("first GET = %d %q (ETag %s), %v; want the origin's v1", r.StatusCode, body, r.Header.Get("ETag"), err)
			}
			sg.clock.Advance(61 * time.Second)
			if tt.stale {
				wantStale("revalidation cut short")
			} else {
				r, body, err := get()
				if r.StatusCode != http.StatusOK || r.Header.Get("ETag") != `"v2"` || body != "hello" || err == nil {
					t.Errorf("revalidation cut short = %d (ETag %s), %q, read error %v; want the new head, \"hello\", then the cut",
						r.StatusCode, r.Header.Get("ETag"), body, err)
				}
			}
			wantStale("GET after the cut, origin 503")
			if got := asked.Load(); got != 3 {
				t.Errorf("origin asked %d times, want 3 (fill, revalidation cut, revalidation 503)", got)
			}
		})
	}
}
