package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/origin"
)

// pipelineHead is a GET of target on testHost with header pairs, as a client writes it.
func pipelineHead(target string, hdr ...string) string {
	s := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n", target, testHost)
	for i := 0; i+1 < len(hdr); i += 2 {
		s += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	return s + "\r\n"
}

// TestPipelinedMixedAnswers pipelines, on one HTTP/1.1 connection, every kind of answer the
// edge gives a GET: stale-while-revalidate with Vary, several ranges of a sliced object whose
// slices must be fetched again, a range of a miss, a fill with Authorization, several ranges
// of a hit, and a miss streamed to its client; each request with fields of its own. The fast
// path reuses the request's state from one request to the next, and long answers make it
// watch the connection while later requests are buffered or still arriving (a review found a
// byte of a pipelined request lost there, at the read buffer's boundary): every answer must
// come, with its status, in order.
func TestPipelinedMixedAnswers(t *testing.T) {
	s := newSingle(t, func(c *Config) {
		c.Cache.MaxBytes = 256 << 20
		c.Hosts[0].Cache.SliceThresholdBytes = 300 << 10
		c.Hosts[0].Cache.SliceBytes = 64 << 10
	})
	swr := obj("/pl-swr", "cc", "max-age=1, stale-while-revalidate=600", "size", "300000", "vary", "Accept-Language")
	big := obj("/pl-sliced", "cc", "max-age=600", "size", strconv.Itoa(1<<20))
	hit := obj("/pl-hit", "cc", "max-age=600", "size", "100")
	s.get(t, swr, "Accept-Language", "en")
	s.get(t, big)
	s.get(t, hit)
	s.clock.Advance(5 * time.Second)
	// Each round pads its requests differently, so that the read buffer's 4 KiB boundary falls
	// in different places among them.
	for round := range 6 {
		pad := strings.Repeat("p", 7*round)
		for i := range 16 {
			s.edge.store.Delete(s.edge.key(big) + slicePart(int64(i), 64<<10, origin.ETag("/pl-sliced", 1, 1<<20)))
		}
		var reqs []string
		var want []int
		for i := range 8 {
			reqs = append(reqs,
				pipelineHead(swr, "Accept-Language", "en", "X-A", strconv.Itoa(i), "Traceparent", "junk"),
				pipelineHead(big, "Range", "bytes=0-10, 200000-200010, 700000-700010", "X-B", "b"),
				pipelineHead(obj(fmt.Sprintf("/pl-miss-%d-%d", round, i), "cc", "max-age=600", "size", "200000"),
					"Accept-Language", "de", "X-C", "c"+pad, "Range", "bytes=5-10"),
				pipelineHead(obj(fmt.Sprintf("/pl-auth-%d-%d", round, i), "cc", "public, max-age=60", "size", "100000"),
					"Authorization", "Bearer x", "X-D", "d"),
				pipelineHead(hit, "Range", "bytes=0-1, 5-6", "X-E", "e"),
				pipelineHead(obj(fmt.Sprintf("/pl-stream-%d-%d", round, i), "cc", "max-age=600", "size", "900000"), "X-F", "f"),
			)
			want = append(want, http.StatusOK, http.StatusPartialContent, http.StatusPartialContent,
				http.StatusOK, http.StatusPartialContent, http.StatusOK)
		}
		c, err := net.Dial("tcp", s.edge.Addr())
		if err != nil {
			t.Fatal(err)
		}
		var all bytes.Buffer
		for _, r := range reqs {
			all.WriteString(r)
		}
		wrote := make(chan error, 1)
		go func() { _, err := c.Write(all.Bytes()); wrote <- err }()
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		for i := range reqs {
			r, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("round %d: answer %d of %d: %v", round, i, len(reqs), err)
			}
			_, err = io.Copy(io.Discard, r.Body)
			r.Body.Close()
			if err != nil || r.StatusCode != want[i] {
				t.Fatalf("round %d: answer %d (%q) = %d, body error %v; want %d", round, i, reqs[i][:30], r.StatusCode, err, want[i])
			}
		}
		if err := <-wrote; err != nil {
			t.Fatalf("round %d: writing the requests: %v", round, err)
		}
		c.Close()
		s.clock.Advance(3 * time.Second)
	}
}
