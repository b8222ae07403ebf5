package http1

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEmptyLinesBeforeRequestLine: empty lines (CRLF) before a request line are ignored, as
// RFC 9112 §2.2 asks (SHOULD ignore at least one) and nginx does: before the first request,
// between requests the fast path answers, and before a request it hands to Fallback, which
// then gets the request from its first byte (its HTTP/1.0 Transfer-Encoding refusal, and the
// 414 for a request line over the limit, hold behind empty lines too). The empty lines count
// against the head's limit: a buffer of them with no request line is handed over whole, and
// net/http refuses it. Anything else before a request line (a bare LF, a lone CR, a space) is
// net/http's to answer, as before: 400.
func TestEmptyLinesBeforeRequestLine(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
	_, addr := serveFast(t, h, nil)
	const get = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
	const last = "GET /z HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	for _, tc := range []struct {
		name string
		send string
		want []string // status and body of each answer, in order; the edge closes after
	}{
		{"one before the first", "\r\n" + last, []string{"200 GET /z "}},
		{"three before the first", "\r\n\r\n\r\n" + last, []string{"200 GET /z "}},
		{"one after a head", get + "\r\n" + last, []string{"200 GET /a ", "200 GET /z "}},
		{"two between fast requests", get + "\r\n\r\n" + get + "\r\n" + last,
			[]string{"200 GET /a ", "200 GET /a ", "200 GET /z "}},
		{"before a handed-off request", get + "\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi" + last,
			[]string{"200 GET /a ", "200 POST /p hi", "200 GET /z "}},
		{"before an HTTP/1.0 request with Transfer-Encoding",
			"\r\nPOST /p HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + last,
			[]string{"400 400 Bad Request: HTTP/1.0 request with Transfer-Encoding"}},
		{"before a request line over the limit", "\r\nGET /" + strings.Repeat("x", 2<<20) + " HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"414 414 URI Too Long"}},
		{"a buffer of them", strings.Repeat("\r\n", readBufferSize) + last, []string{"400 400 Bad Request"}},
		{"a bare LF", "\n" + last, []string{"400 400 Bad Request"}},
		{"a lone CR", "\r" + last, []string{"400 400 Bad Request"}},
		{"a space", " " + last, []string{"400 400 Bad Request"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, tc.send) // a refused request may be answered before it is all sent
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			var got []string
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Errorf("the connection stayed open after %q", got)
					}
					break
				}
				b, _ := io.ReadAll(resp.Body)
				got = append(got, fmt.Sprintf("%d %s", resp.StatusCode, b))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("answers %q, want %q", got, tc.want)
			}
		})
	}
}
