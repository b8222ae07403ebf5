package http1

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

// FuzzParseHead holds the fast path to net/http's reading: whatever head the fast path
// accepts, and whose target the server then parses (a target it cannot parse is handed off
// too), http.ReadRequest reads the same way (method, target, host, fields, Connection), and
// it consumes the same bytes, once the empty lines before the request line, which net/http
// refuses, are dropped; anything else must be handed off, never misread, with nothing dropped
// but those empty lines.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD /x?y=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\naccept: b\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
		"GET /%41 HTTP/1.1\r\nhOST: a\r\nX:\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n\r\n",
		"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, v := parseHead(b, make(http.Header), nil)
		skip := emptyLines(b)
		if v == handOff && n != skip {
			t.Fatalf("hand-off of %q drops %d bytes; its empty lines are %d", b, n, skip)
		}
		if v != fast {
			return
		}
		if h.skip != skip {
			t.Fatalf("fast path skipped %d bytes of %q; its empty lines are %d", h.skip, b, skip)
		}
		b = b[skip:]
		n -= skip
		var scratch url.URL
		u, err := parseTarget(h.target, &scratch)
		if _, perr := url.ParseRequestURI(h.target); (err == nil) != (perr == nil) {
			t.Fatalf("parseTarget(%q): %v; url.ParseRequestURI: %v", h.target, err, perr)
		}
		if err != nil {
			return // the server hands a target it cannot parse over too (conn.serve)
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("head length %d of %d bytes", n, len(b))
		}
		br := bufio.NewReader(bytes.NewReader(b))
		r, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("fast path accepted %q; net/http refuses it: %v", b, err)
		}
		if consumed := len(b) - br.Buffered(); len(b) <= 4096 && consumed != n {
			t.Fatalf("fast path read %d bytes of head, net/http %d", n, consumed)
		}
		if r.Method != h.method || r.RequestURI != h.target || r.Host != h.host || r.Close != h.close {
			t.Fatalf("fast path read %q %q host %q close %v; net/http %q %q host %q close %v",
				h.method, h.target, h.host, h.close, r.Method, r.RequestURI, r.Host, r.Close)
		}
		if *u != *r.URL {
			t.Fatalf("target %q: fast path read %#v, net/http %#v", h.target, *u, *r.URL)
		}
		if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
			t.Fatalf("fast path accepted a request with a body: %q", b)
		}
		want := r.Header
		if len(want) == 0 {
			want = http.Header{}
		}
		if !reflect.DeepEqual(h.header, want) {
			t.Fatalf("fields: fast path %q, net/http %q", h.header, want)
		}
	})
}

func TestParseHeadIncomplete(t *testing.T) {
	for _, s := range []string{"", "\r", "\r\n", "\r\n\r\n\r", "\r\nGET", "GET", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r"} {
		if _, _, v := parseHead([]byte(s), make(http.Header), nil); v != incomplete {
			t.Errorf("parseHead(%q) = %v, want incomplete", s, v)
		}
	}
}

func TestHTTP10WithTransferEncoding(t *testing.T) {
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"POST / HTTP/1.0\r\nHost: a\r\nTRANSFER-ENCODING: gzip\r\n\r\n0\r\n", true},
		{"GET / HTTP/1.0\nHost: a\ntransfer-encoding: chunked\n\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false}, // net/http's own rules
		{"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\nTransfer-Encoding: x\r\n", false},
		{"POST / HTTP/1.0\r\nHost: a\r\nX-Transfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n", true}, // whatever follows
		{"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Enc", false},                  // not all here
		{"POST / HTTP/1.0", false},
		{"", false},
	} {
		if got := http10WithTransferEncoding([]byte(tc.head)); got != tc.want {
			t.Errorf("http10WithTransferEncoding(%q) = %v, want %v", tc.head, got, tc.want)
		}
	}
}
