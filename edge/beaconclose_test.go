package edge

import (
	"io"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestBeaconKeepsNoFaultyFraming: the beacon (answered in front, before the pipeline) is under
// the rule every other path is: a request with Transfer-Encoding, or any HTTP/1.0 request, gets
// Connection: close, and nothing behind its body is read as a request.
func TestBeaconKeepsNoFaultyFraming(t *testing.T) {
	n, seen := recordingEdge(t)
	smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n"
	for _, tc := range []struct{ name, req string }{
		{"HTTP/1.1 chunked beside Content-Length", "POST " + wire.BeaconPath + " HTTP/1.1\r\nHost: " + testHost +
			"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled},
		{"HTTP/1.0 keep-alive, head past 4 KiB", "GET " + wire.BeaconPath + " HTTP/1.0\r\nHost: " + testHost +
			"\r\nX-Pad: " + strings.Repeat("a", 5000) + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled},
		{"HTTP/1.0 keep-alive GET", "GET " + wire.BeaconPath + " HTTP/1.0\r\nHost: " + testHost +
			"\r\nConnection: keep-alive\r\n\r\nGET /smuggled HTTP/1.0\r\nHost: " + testHost + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen()
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.req)
			codes, final, closed := readAnswers(t, c)
			if got := seen(); slices.Contains(got, "GET /smuggled") {
				t.Errorf("origin saw %q (answers %v, closed %v): the beacon's connection was kept", got, codes, closed)
			}
			if len(final) > 0 && !final[0].Close {
				t.Errorf("answers %v: the first has no Connection: close", codes)
			}
		})
	}
}
