package edge

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestGuardLeavesBodiesAlone: the guard beneath net/http (http1.GuardConn) changes a byte of
// an HTTP/1.0 head with Transfer-Encoding only: a request body that holds such a head reaches
// the origin byte for byte, whatever framing the head around it has that net/http accepts
// (Expect: 100-continue, duplicate, padded or zero-led Content-Length, an absolute-form target,
// a folded field, a head past the fast path's buffer, requests pipelined behind others, OPTIONS *
// answered by the node and kept alive), under
// both http1 modes, sent whole and a byte a read.
func TestGuardLeavesBodiesAlone(t *testing.T) {
	fake := "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\nPOST / HTTP/1.0\ntransfer-encoding: x\n\n"
	cl := strconv.Itoa(len(fake))
	h := "Host: " + testHost + "\r\n"
	post := func(target, proto, fields string) string {
		return "POST " + target + " " + proto + "\r\n" + h + fields + "\r\n" + fake
	}
	next := "GET /next HTTP/1.1\r\n" + h + "\r\n"
	// Every case but HTTP/1.0 ends with a request that ends the connection.
	last := "GET /last HTTP/1.1\r\n" + h + "Connection: close\r\n\r\n"
	for _, tc := range []struct {
		name string
		in   string
		want []string // the origin's requests: "METHOD /path body"
	}{
		{"HTTP/1.1, then a GET", post("/a", "HTTP/1.1", "Content-Length: "+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"HTTP/1.0", post("/a", "HTTP/1.0", "Content-Length: "+cl+"\r\n"), []string{"POST /a " + fake}},
		{"behind a GET", next + post("/a", "HTTP/1.1", "Content-Length: "+cl+"\r\n"),
			[]string{"GET /next ", "POST /a " + fake}},
		{"behind a POST and CRLF", "POST /first HTTP/1.1\r\n" + h + "Content-Length: 2\r\n\r\nab\r\n" +
			post("/a", "HTTP/1.1", "Content-Length: "+cl+"\r\n"), []string{"POST /first ab", "POST /a " + fake}},
		{"Expect: 100-continue", post("/a", "HTTP/1.1", "Expect: 100-continue\r\nContent-Length: "+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"Content-Length twice", post("/a", "HTTP/1.1", "Content-Length: "+cl+"\r\nContent-Length: "+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"Content-Length padded", post("/a", "HTTP/1.1", "Content-Length: \t "+cl+" \t\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"Content-Length zero-led", post("/a", "HTTP/1.1", "Content-Length: 000"+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"Content-Length 20 zeros", post("/a", "HTTP/1.1", "Content-Length: "+strings.Repeat("0", 20)+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"absolute form", post("http://"+testHost+"/a", "HTTP/1.1", "Content-Length: "+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"folded field before", post("/a", "HTTP/1.1", "X-A: a\r\n b\r\nContent-Length: "+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"bare LF head", "POST /a HTTP/1.1\nHost: " + testHost + "\nContent-Length: " + cl + "\n\n" + fake + next,
			[]string{"POST /a " + fake, "GET /next "}},
		{"head past 4 KiB", post("/a", "HTTP/1.1", "X-Pad: "+strings.Repeat("p", 6000)+"\r\nContent-Length: "+cl+"\r\n") + next,
			[]string{"POST /a " + fake, "GET /next "}},
		// Answered by the node, which reads no body: net/http discards it, and keeps the connection.
		{"OPTIONS * with a body", "OPTIONS * HTTP/1.1\r\n" + h + "Content-Length: " + cl + "\r\n\r\n" + fake + next,
			[]string{"GET /next "}},
		{"PUT", "PUT /a HTTP/1.1\r\n" + h + "Content-Length: " + cl + "\r\n\r\n" + fake + next,
			[]string{"PUT /a " + fake, "GET /next "}},
	} {
		for _, mode := range []string{HTTP1Fast, HTTP1Std} {
			for _, split := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/split=%v", tc.name, mode, split), func(t *testing.T) {
					ln := readCountingListener{Listener: listen(t, "127.0.0.21"), accepted: make(chan *readCountingConn, 1)}
					n, seen := bodyRecordingEdge(t, ln, mode)
					c, ec := ln.dial(t, n.Addr())
					in, want := tc.in, tc.want
					if !strings.HasPrefix(tc.name, "HTTP/1.0") {
						in, want = in+last, append(slices.Clone(want), "GET /last ")
					}
					if !split {
						io.WriteString(c, in)
					} else {
						// One byte a read: each byte is sent once the edge has read the ones before.
						for i := range len(in) {
							ec.waitRead(t, i)
							c.Write([]byte{in[i]})
						}
					}
					codes, _, closed := readAnswers(t, c)
					if !closed {
						t.Errorf("answers %v: the connection was kept", codes)
					}
					if got := seen(); !slices.Equal(got, want) {
						t.Errorf("answers %v; origin saw\n%q\nwant\n%q", codes, got, want)
					}
				})
			}
		}
	}
}

// bodyRecordingEdge is an edge (http1 mode) on ln in front of an origin that records each
// request it has as "METHOD /path body"; seen returns them.
func bodyRecordingEdge(t *testing.T, ln net.Listener, mode string) (*Node, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "done")
	}))
	n, _ := startEdge(t, ln, Config{PoP: "tst", Node: "e1", Logger: testLogger(t), HTTP1: mode,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	return n, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}
