package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// readHeadAsNetHTTP reads b with readHead and, if it accepts the head, checks that
// http.ReadResponse reads the same bytes the same way: status, protocol, fields, length,
// framing, and the body (bytes and whether it was cut short). It reports whether readHead
// accepted, and checks that a refusal consumed nothing.
func readHeadAsNetHTTP(t *testing.T, b []byte) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://origin.test/", nil)
	br := bufio.NewReader(bytes.NewReader(b))
	br.Peek(1) // as exchange does: the first read of the answer
	before := br.Buffered()
	resp, length, ok := readHead(br, req)
	if !ok {
		if br.Buffered() != before {
			t.Fatalf("readHead refused %q but consumed %d bytes", b, before-br.Buffered())
		}
		return false
	}
	wantBR := bufio.NewReader(bytes.NewReader(b))
	want, err := http.ReadResponse(wantBR, req)
	if err != nil {
		t.Fatalf("readHead accepted %q; net/http refuses it: %v", b, err)
	}
	if resp.Status != want.Status || resp.StatusCode != want.StatusCode || resp.Proto != want.Proto ||
		resp.ProtoMajor != want.ProtoMajor || resp.ProtoMinor != want.ProtoMinor {
		t.Fatalf("status: readHead %q %d %s, net/http %q %d %s", resp.Status, resp.StatusCode, resp.Proto,
			want.Status, want.StatusCode, want.Proto)
	}
	if resp.ContentLength != length || resp.ContentLength != want.ContentLength || resp.Close != want.Close ||
		len(want.TransferEncoding) != 0 || want.Uncompressed || want.Trailer != nil {
		t.Fatalf("framing: readHead length %d close %v; net/http length %d close %v, TE %v, trailer %v",
			resp.ContentLength, resp.Close, want.ContentLength, want.Close, want.TransferEncoding, want.Trailer)
	}
	// readHead leaves out a Connection field that says keep-alive alone (every user of the
	// answer only removes it): net/http's reading without it must be readHead's.
	if cv := slices.DeleteFunc(want.Header["Connection"], func(v string) bool { return strings.EqualFold(v, "keep-alive") }); len(cv) == 0 {
		delete(want.Header, "Connection")
	} else {
		want.Header["Connection"] = cv
	}
	if !reflect.DeepEqual(resp.Header, want.Header) {
		t.Fatalf("fields: readHead %q, net/http %q", resp.Header, want.Header)
	}
	if (resp.Body == http.NoBody) != (want.Body == http.NoBody) {
		t.Fatalf("body: readHead's is NoBody %v, net/http's %v", resp.Body == http.NoBody, want.Body == http.NoBody)
	}
	got, gotErr := io.ReadAll(&lengthBody{br: br, n: length})
	wantBody, wantErr := io.ReadAll(want.Body)
	if !bytes.Equal(got, wantBody) || errors.Is(gotErr, io.ErrUnexpectedEOF) != errors.Is(wantErr, io.ErrUnexpectedEOF) ||
		(gotErr == nil) != (wantErr == nil) {
		t.Fatalf("body: readHead %q, %v; net/http %q, %v", got, gotErr, wantBody, wantErr)
	}
	// What is left is the next answer's: both must leave the same bytes.
	rest, _ := io.ReadAll(br)
	wantRest, _ := io.ReadAll(wantBR)
	if !bytes.Equal(rest, wantRest) {
		t.Fatalf("left after the body: readHead %q, net/http %q", rest, wantRest)
	}
	return true
}

func FuzzReadHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello",
		"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/4\r\ncontent-length: 4\r\nVary: a\r\nvary: b\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: a\r\n b\r\n\r\nx",
		"HTTP/1.1 404\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		readHeadAsNetHTTP(t, b)
	})
}

// TestReadHead: the heads readHead reads itself, and those it leaves to net/http (each with
// why), which must then consume nothing.
func TestReadHead(t *testing.T) {
	const body = "\r\n\r\nhello"
	for _, tc := range []struct {
		name, head string
		fast       bool
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60", true},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 5", true},
		{"empty reason", "HTTP/1.1 200 \r\nContent-Length: 5", true},
		{"repeated names, any case, empty value", "HTTP/1.1 206 Partial\r\nvary: a\r\nVary: b\r\nx-e:\r\ncontent-length:5", true},
		{"keep-alive", "HTTP/1.1 503 Busy\r\nConnection: keep-alive\r\nContent-Length: 5", true},
		{"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 9", true},
		{"zero length", "HTTP/1.1 200 OK\r\nContent-Length: 0", true},
		{"no length: read to the end", "HTTP/1.1 200 OK\r\nX: y", false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5", false},
		{"length with a sign", "HTTP/1.1 200 OK\r\nContent-Length: +5", false},
		{"length of 19 digits", "HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000005", false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", false},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 5", false},
		{"pragma", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 5", false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 5", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 5", false},
		{"1xx", "HTTP/1.1 103 Early Hints\r\nLink: </a>", false},
		{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 5", false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5", false},
		{"two spaces", "HTTP/1.1  200 OK\r\nContent-Length: 5", false},
		{"control in reason", "HTTP/1.1 200 O\x01K\r\nContent-Length: 5", false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5", false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 5\r\nX: y", false},
		{"bare CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 5", false},
		{"space before colon", "HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 5", false},
		{"no colon", "HTTP/1.1 200 OK\r\nX\r\nContent-Length: 5", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readHeadAsNetHTTP(t, []byte(tc.head+body)); got != tc.fast {
				t.Errorf("readHead of %q: fast %v, want %v", tc.head, got, tc.fast)
			}
		})
	}
	t.Run("Connection: keep-alive left out", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://origin.test/", nil)
		for _, tc := range []struct {
			head string
			want []string // Connection's values in the answer read
		}{
			{"Connection: keep-alive", nil},
			{"connection: Keep-Alive ", nil},
			{"Connection: keep-alive, X-A", []string{"keep-alive, X-A"}},
			{"Connection: keep-alive\r\nConnection: X-A", []string{"X-A"}},
			{"Connection: X-A", []string{"X-A"}},
		} {
			br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + tc.head + "\r\nX-A: 1\r\n\r\nhello"))
			br.Peek(1)
			resp, _, ok := readHead(br, req)
			if !ok {
				t.Fatalf("readHead refused %q", tc.head)
			}
			if got := resp.Header["Connection"]; !slices.Equal(got, tc.want) || resp.Header.Get("X-A") != "1" || resp.Header.Get("Content-Length") != "5" {
				t.Errorf("%q: Connection %q, X-A %q, Content-Length %q; want Connection %q and the others kept", tc.head, got,
					resp.Header.Get("X-A"), resp.Header.Get("Content-Length"), tc.want)
			}
		}
	})
	t.Run("not a GET", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodHead, "http://origin.test/", nil)
		br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
		br.Peek(1)
		if _, _, ok := readHead(br, req); ok {
			t.Error("readHead read the answer to a HEAD, whose length is not its body's")
		}
	})
	t.Run("head not whole yet", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://origin.test/", nil)
		br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"))
		br.Peek(1)
		if _, _, ok := readHead(br, req); ok || br.Buffered() != len("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n") {
			t.Errorf("readHead of a partial head: ok %v, %d bytes left buffered", ok, br.Buffered())
		}
	})
}

// BenchmarkReadHead reads an nginx answer to a fill (a 206 of a whole 1 KiB object, its head
// as nginx 1.22 sends it) with readHead and with http.ReadResponse, body included.
func BenchmarkReadHead(b *testing.B) {
	const answer = "HTTP/1.1 206 Partial Content\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 02:00:00 GMT\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Fri, 04 Dec 2026 01:00:00 GMT\r\n" +
		"Connection: keep-alive\r\nETag: \"6750a9d0-400\"\r\nCache-Control: max-age=3600\r\nContent-Range: bytes 0-1023/1024\r\n\r\n"
	msg := []byte(answer + strings.Repeat("x", 1024))
	req, _ := http.NewRequest(http.MethodGet, "http://origin.test/", nil)
	body := make([]byte, 1024)
	rd := bytes.NewReader(msg)
	br := bufio.NewReaderSize(rd, 32<<10)
	for _, bc := range []struct {
		name string
		read func() io.Reader
	}{
		{"readHead", func() io.Reader {
			_, n, ok := readHead(br, req)
			if !ok {
				b.Fatal("readHead refused nginx's answer")
			}
			return &lengthBody{br: br, n: n}
		}},
		{"net-http", func() io.Reader {
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				b.Fatal(err)
			}
			return resp.Body
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(msg)
				br.Reset(rd)
				br.Peek(1)
				if _, err := io.ReadFull(bc.read(), body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReadHeadAllocs: nginx's answer to a fill's first slice (nine fields, one of them
// "Connection: keep-alive") is read with one string for the head, a map of one group (the
// eight fields kept), one array for their values and the response: the map would be a
// table of three more pieces with the keep-alive field in it (issue 15).
func TestReadHeadAllocs(t *testing.T) {
	const head = "HTTP/1.1 206 Partial Content\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 09:54:04 GMT\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 5\r\nLast-Modified: Sat, 05 Dec 2026 09:54:04 GMT\r\n" +
		"Connection: keep-alive\r\nETag: \"6b13df3c-400\"\r\nCache-Control: max-age=3600\r\nContent-Range: bytes 0-4/5\r\n\r\nhello"
	req, _ := http.NewRequest(http.MethodGet, "http://origin.test/", nil)
	sr := strings.NewReader(head)
	br := bufio.NewReaderSize(sr, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		sr.Reset(head)
		br.Reset(sr)
		br.Peek(1)
		resp, _, ok := readHead(br, req)
		if !ok || len(resp.Header) != 8 {
			t.Fatalf("readHead refused the head or kept other than its 8 fields: %v", resp)
		}
	})
	if allocs > 5 {
		t.Errorf("readHead allocated %.0f times; want at most 5", allocs)
	}
}

// TestH1HTTP10TransferEncoding: an HTTP/1.0 answer with Transfer-Encoding is framed faultily
// (RFC 9112 §6.1) and is an error, whether its body would be read to the connection's end or
// by a Content-Length, also after a 1xx: net/http ignores the field on HTTP/1.0 and returned
// the chunk framing as the body, which the edge stored as the object. The same bodies in
// HTTP/1.1, or HTTP/1.0 without the field (an obs-fold line names none), are read as before.
func TestH1HTTP10TransferEncoding(t *testing.T) {
	const chunked = "5\r\nhello\r\n0\r\n\r\n"
	answers := map[string]string{
		"/close":    "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/length":   "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 15\r\ntransfer-encoding: chunked\r\n\r\n" + chunked,
		"/bare-lf":  "HTTP/1.0 200 OK\nX-A: 1\nTransfer-Encoding: chunked\n\n" + chunked,
		"/after1xx": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/http11":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
		"/http10":   "HTTP/1.0 200 OK\r\nX-Transfer-Encoding: chunked\r\n\r\nhello",
		"/folded":   "HTTP/1.0 200 OK\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\nhello",
		// Whitespace before the colon (RFC 9112 §5.1: a proxy removes it) still names
		// Transfer-Encoding, which net/http does not see: it read the chunks as the body, to
		// the connection's end (with a Content-Length, that frames it: TestOriginFieldNameWithSpaceNotForwarded).
		"/spaced":    "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nConnection: close\r\n\r\n" + chunked,
		"/spaced-10": "HTTP/1.0 200 OK\r\nTransfer-Encoding\t\t: chunked\r\n\r\n" + chunked,
	}
	srv := startRaw(t, "127.0.0.160", func(_ int64, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		io.WriteString(c, answers[req.URL.Path])
	})
	tr := newH1(t, Config{})
	for _, tt := range []struct {
		path string
		body string // "" for an error
	}{
		{"/close", ""},
		{"/length", ""},
		{"/bare-lf", ""},
		{"/after1xx", ""},
		{"/http11", "hello"},
		{"/http10", "hello"},
		{"/folded", "hello"},
		{"/spaced", ""},
		{"/spaced-10", ""},
	} {
		_, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+tt.path, nil)
		switch {
		case tt.body == "" && err == nil:
			t.Errorf("%s: body %q, no error; want an error (faulty framing)", tt.path, body)
		case tt.body != "" && (err != nil || string(body) != tt.body):
			t.Errorf("%s: %q, %v; want %q", tt.path, body, err, tt.body)
		}
	}
}

// TestFramingFields: framingFields finds the Transfer-Encoding and Content-Length fields of a
// head however it comes, a byte per read here, and leaves every byte for http.ReadResponse; a
// head larger than the buffer it says is long, and readLongHead reads it through its blank line
// (and no further), for scanFraming to find them there.
func TestFramingFields(t *testing.T) {
	long := "HTTP/1.0 200 OK\r\nX-Long: " + strings.Repeat("a", 128) + "\r\n"
	for _, tt := range []struct {
		head, body   string
		te, cl, long bool
	}{
		{"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "body", true, false, false},
		{"HTTP/1.0 200 OK\r\nX-A: 1\r\ntransfer-encoding:chunked\r\ncontent-length: 5\r\n\r\n", "", true, true, false},
		{"HTTP/1.1 200 OK\nX-A: 1\nTRANSFER-ENCODING: x\n\n", "", true, false, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "Transfer-Encoding: chunked\r\n\r\n", false, true, false}, // in the body
		{"HTTP/1.0 200 OK\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\n\r\n", "", false, false, false},             // obs-fold
		{"HTTP/1.0 200 OK\r\nX-Transfer-Encoding: chunked\r\nContent-Length-X: 1\r\n\r\n", "", false, false, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length\t: 1\r\n\r\n", "", true, true, false},
		{"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked", "", false, false, false}, // cut short: ReadResponse says so
		{"HTTP/", "", false, false, false},
		// Heads larger than the buffer (h1ReadBuffer in use), the field before or after the
		// buffer's worth, in a line longer than the buffer, or cut short.
		{long + "Transfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n", true, false, true},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + long[17:] + "transfer-encoding: chunked\n\n", "\r\n\r\n", true, true, true},
		{"HTTP/1.0 200 OK\r\nX-A: " + strings.Repeat("a", 300) + "\r\nTransfer-Encoding: x\r\n\r\n", "", true, false, true},
		{long + "X-B: 1\r\n\tTransfer-Encoding: x\r\n\r\n", "", false, false, true},
		{long + "Transfer-Encoding: chunked\r\n", "", true, false, true},
	} {
		in := tt.head + tt.body
		br := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(in)), 128)
		br.Peek(1) // as exchange does
		te, cl, long := framingFields(br)
		if long {
			head := readLongHead(br)
			if string(head) != tt.head {
				t.Errorf("readLongHead(%q) = %q", in, head)
			}
			te, cl = scanFraming(head)
			if rest, _ := io.ReadAll(br); string(rest) != tt.body {
				t.Errorf("readLongHead(%q) left %q", in, rest)
			}
		} else if rest, _ := io.ReadAll(br); string(rest) != in {
			t.Errorf("framingFields(%q) left %q", in, rest)
		}
		if te != tt.te || cl != tt.cl || long != tt.long {
			t.Errorf("framingFields(%q) = %v, %v, %v; want %v, %v, %v", in, te, cl, long, tt.te, tt.cl, tt.long)
		}
	}
}

// TestH1TransferEncodingWithLengthNotReused: an answer with both Transfer-Encoding and
// Content-Length is read by its chunks (RFC 9112 §6.3), but its connection is not used again:
// the two framings disagree, and whatever the upstream meant by the other one could be read as
// the next request's answer (response splitting, §11.1). HAProxy closes such a connection too;
// nginx refuses the answer. One chunked answer alone keeps its connection.
func TestH1TransferEncodingWithLengthNotReused(t *testing.T) {
	for _, tt := range []struct {
		name, head string
		conns      int64
	}{
		{"both", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 2},
		{"both, after a 1xx", "HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n", 2},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1},
		{"1xx with a length, then chunked", "HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startRaw(t, "127.0.0.161", func(_ int64, c net.Conn, br *bufio.Reader) {
				for {
					if _, ok := readRequest(br); !ok {
						return
					}
					io.WriteString(c, tt.head+"5\r\nhello\r\n0\r\n\r\n")
				}
			})
			tr := newH1(t, Config{})
			for i := range 2 {
				if _, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/", nil); err != nil || string(body) != "hello" {
					t.Fatalf("GET #%d: %q, %v; want hello", i, body, err)
				}
			}
			if n := srv.accepted.Load(); n != tt.conns {
				t.Errorf("2 GETs used %d connections, want %d", n, tt.conns)
			}
		})
	}
}

// TestH1LongHeadFraming: a head longer than the connection's read buffer (32 KiB, under the
// 64 KiB MaxHeadBytes) is looked at as a shorter one is: an HTTP/1.0 answer with
// Transfer-Encoding is an error wherever the field comes, and an answer with both framings is
// read by its chunks but leaves its connection unused. The peek saw only the buffer's worth of
// such a head, so the chunk sizes were read as the body and a split answer's connection kept.
// A long head read aside still leaves its connection to the next request.
func TestH1LongHeadFraming(t *testing.T) {
	pad := "X-Pad: " + strings.Repeat("p", 40<<10) + "\r\n"
	const chunked = "5\r\nhello\r\n0\r\n\r\n"
	for _, tt := range []struct {
		name, answer string
		body         string // "" for an error
		conns        int64  // for two requests
	}{
		{"HTTP/1.0, field first", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n" + pad + "\r\n" + chunked, "", 2},
		{"HTTP/1.0, field last", "HTTP/1.0 200 OK\r\n" + pad + "Transfer-Encoding: chunked\r\n\r\n" + chunked, "", 2},
		{"HTTP/1.0, after a long 1xx", "HTTP/1.1 103 Early Hints\r\n" + pad + "\r\nHTTP/1.0 200 OK\r\n" + pad[:100] + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked, "", 2},
		{"both framings", "HTTP/1.1 200 OK\r\n" + pad + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked, "hello", 2},
		{"HTTP/1.0 by its end", "HTTP/1.0 200 OK\r\n" + pad + "\r\nhello", "hello", 2},
		{"chunked", "HTTP/1.1 200 OK\r\n" + pad + "Transfer-Encoding: chunked\r\n\r\n" + chunked, "hello", 1},
		// Two heads too long for their readers: the second reader's cannot tell what the
		// first one's holds past the answer.
		{"chunked after a long 1xx", "HTTP/1.1 103 Early Hints\r\n" + pad + "\r\nHTTP/1.1 200 OK\r\n" + pad[:5000] + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked, "hello", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startRaw(t, "127.0.0.162", func(_ int64, c net.Conn, br *bufio.Reader) {
				for {
					if _, ok := readRequest(br); !ok {
						return
					}
					// An HTTP/1.0 answer's connection ends with it.
					if _, err := io.WriteString(c, tt.answer); err != nil || strings.Contains(tt.answer, "HTTP/1.0") {
						return
					}
				}
			})
			tr := newH1(t, Config{})
			for i := range 2 {
				_, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/", nil)
				switch {
				case tt.body == "" && err == nil:
					t.Fatalf("GET #%d: body of %d bytes, no error; want an error (faulty framing)", i, len(body))
				case tt.body != "" && (err != nil || string(body) != tt.body):
					t.Fatalf("GET #%d: %.20q, %v; want %q", i, body, err, tt.body)
				}
			}
			if n := srv.accepted.Load(); n != tt.conns {
				t.Errorf("2 GETs used %d connections, want %d", n, tt.conns)
			}
		})
	}
}

// TestHeadEndResumes: headEnd searching a growing buffer from where its last search stopped
// finds the end a search of the whole finds, at every length the head arrives in, and looks at
// each byte a bounded number of times (an origin trickling a 32 KiB head a byte per read cost
// a scan of the whole buffer per byte, quadratic).
func TestHeadEndResumes(t *testing.T) {
	for _, head := range []string{
		"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\nbody",
		"HTTP/1.1 200 OK\nA: 1\n\nbody",
		"HTTP/1.1 200 OK\nA: 1\n\r\nbody",
		"HTTP/1.1 200 OK\r\nA: 1\r\n\tfolded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nA: " + strings.Repeat("x", 1000) + "\r\n\r\n",
		"HTTP/1.1 200 OK\r\nA: 1\r\n", // no end yet
	} {
		want, _ := headEnd([]byte(head), 0)
		from, looked := 0, 0
		got := -1
		for n := 1; n <= len(head) && got < 0; n++ {
			looked += n - from
			var next int
			got, next = headEnd([]byte(head[:n]), from)
			if next < from || next > n {
				t.Fatalf("headEnd(%q, %d) resumes at %d", head[:n], from, next)
			}
			from = next
		}
		if got != want {
			t.Errorf("headEnd of %q a byte at a time = %d, want %d", head, got, want)
		}
		if looked > 3*len(head) {
			t.Errorf("headEnd of %q a byte at a time looked at %d bytes, want at most %d", head, looked, 3*len(head))
		}
	}
}
