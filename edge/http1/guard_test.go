package http1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// feedConn is a connection whose reads return its pieces one by one, then io.EOF.
type feedConn struct {
	net.Conn
	pieces [][]byte
}

func (c *feedConn) Read(p []byte) (int, error) {
	if len(c.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.pieces[0])
	if c.pieces[0] = c.pieces[0][n:]; len(c.pieces[0]) == 0 {
		c.pieces = c.pieces[1:]
	}
	return n, nil
}

// guarded returns what net/http would read of in through the guard, in pieces of size (all
// at once if 0), read with reads of at most 4 KiB.
func guarded(t testing.TB, in string, size int) string {
	t.Helper()
	c := &feedConn{}
	for rest := []byte(in); len(rest) > 0; {
		k := len(rest)
		if size > 0 {
			k = min(k, size)
		}
		c.pieces = append(c.pieces, rest[:k])
		rest = rest[k:]
	}
	out, err := io.ReadAll(bufio.NewReaderSize(NewGuardConn(c), 4<<10))
	if err != nil {
		t.Fatalf("read through the guard: %v", err)
	}
	return string(out)
}

// TestGuardMarksHTTP10TransferEncoding: the guard changes the colon after Transfer-Encoding in
// an HTTP/1.0 head and nothing else, following heads and Content-Length bodies as net/http
// frames them, in pieces of any size.
func TestGuardMarksHTTP10TransferEncoding(t *testing.T) {
	const host = "Host: h\r\n"
	post := "POST /a HTTP/1.1\r\n" + host + "Content-Length: 2\r\n\r\nab"
	// A body that holds an HTTP/1.0 head with Transfer-Encoding, which is no head.
	fake := "GET /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
	zeroLed := "POST /a HTTP/1.1\r\n" + host + "Content-Length: 00000000000000000002\r\n\r\nab"
	folded := "POST /a HTTP/1.1\r\n" + host + "Content-Length: 2\r\n \r\n\r\nab"
	onFold := "POST /a HTTP/1.1\r\n" + host + "Content-Length:\r\n 2\r\n\r\nab"
	for _, tc := range []struct {
		name, in string
		at       int // the index of the colon changed, -1 for none
	}{
		{"HTTP/1.0", "POST /f HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", len("POST /f HTTP/1.0\r\n" + host + "Transfer-Encoding")},
		{"lower case, bare LF", "GET / HTTP/1.0\ntransfer-encoding:chunked\n\n", len("GET / HTTP/1.0\ntransfer-encoding")},
		{"HTTP/1.1", "POST /f HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", -1},
		{"behind a POST", post + "GET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n", len(post + "GET / HTTP/1.0\r\nTransfer-Encoding")},
		{"behind a POST and CRLF CRLF", post + "\r\n\r\nGET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n", len(post + "\r\n\r\nGET / HTTP/1.0\r\nTransfer-Encoding")},
		{"behind a GET", "GET / HTTP/1.1\r\n" + host + "\r\nGET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n", len("GET / HTTP/1.1\r\n" + host + "\r\nGET / HTTP/1.0\r\nTransfer-Encoding")},
		// Content-Length values net/http takes (golang's textproto joins a folded line to its field
		// with a space; strconv.ParseUint takes leading zeros): the guard follows their bodies.
		{"behind a zero-led Content-Length", zeroLed + "GET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n", len(zeroLed + "GET / HTTP/1.0\r\nTransfer-Encoding")},
		{"behind a folded Content-Length", folded + "GET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n", len(folded + "GET / HTTP/1.0\r\nTransfer-Encoding")},
		{"behind a Content-Length on its fold", onFold + "GET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n", len(onFold + "GET / HTTP/1.0\r\nTransfer-Encoding")},
		{"in a body behind a Content-Length on its fold", "POST /a HTTP/1.1\r\n" + host + "Content-Length:\r\n\t" + itoa(len(fake)) + " \r\n \r\n\r\n" + fake, -1},
		{"after a Content-Length folded into two", "POST /a HTTP/1.1\r\n" + host + "Content-Length: 2\r\n 2\r\n\r\nab" + fake, -1},
		{"in a body", "POST /a HTTP/1.1\r\n" + host + "Content-Length: " + itoa(len(fake)) + "\r\n\r\n" + fake, -1},
		{"in an HTTP/1.0 body", "POST /a HTTP/1.0\r\nContent-Length:  " + itoa(len(fake)) + " \r\n\r\n" + fake, -1},
		// An upgrade not switched leaves the connection HTTP/1 (a switch stops the guard:
		// StopOnHijack).
		{"after an upgrade", "GET / HTTP/1.1\r\n" + host + "Upgrade: websocket\r\nConnection: upgrade\r\n\r\n" + fake,
			len("GET / HTTP/1.1\r\n" + host + "Upgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /x HTTP/1.0\r\nTransfer-Encoding")},
		{"after an upgrade with a body", "POST / HTTP/1.1\r\n" + host + "Upgrade: h2c\r\nContent-Length: 2\r\n\r\nab" + fake,
			len("POST / HTTP/1.1\r\n" + host + "Upgrade: h2c\r\nContent-Length: 2\r\n\r\nabGET /x HTTP/1.0\r\nTransfer-Encoding")},
		{"after HTTP/1.1 chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n" + fmtChunk(fake) + "0\r\n\r\n" + fake, -1},
		{"folded value", "GET / HTTP/1.0\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n", -1},
		{"space before the colon", "GET / HTTP/1.0\r\nTransfer-Encoding : chunked\r\n\r\n", -1},
		{"a longer name", "GET / HTTP/1.0\r\nTransfer-Encodings: chunked\r\n\r\n", -1},
		{"HTTP/1.0 in the target", "GET /HTTP/1.0 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", -1},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + fake, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := []byte(tc.in)
			if tc.at >= 0 {
				if want[tc.at] != ':' {
					t.Fatalf("byte %d is %q, not the colon", tc.at, want[tc.at])
				}
				want[tc.at] = mangled
			}
			for _, size := range []int{0, 1, 2, 7} {
				if got := guarded(t, tc.in, size); got != string(want) {
					t.Errorf("pieces of %d: got\n%q\nwant\n%q", size, got, want)
				}
			}
		})
	}
}

// wrapping is a connection wrapping another, which it gives by NetConn (as sendtimeout's).
type wrapping struct{ net.Conn }

func (c wrapping) NetConn() net.Conn { return c.Conn }

// TestStopOnHijack: a hijack stops the guard beneath any wrapping that says what it wraps, and
// no other state does: a switched upgrade's bytes are the handler's, unchanged.
func TestStopOnHijack(t *testing.T) {
	const up = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: test\r\nConnection: upgrade\r\n\r\n"
	const fake = "GET /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		state http.ConnState
		want  string
	}{
		{http.StateHijacked, fake},
		{http.StateActive, strings.Replace(fake, "Encoding:", "Encoding\"", 1)},
		{http.StateIdle, strings.Replace(fake, "Encoding:", "Encoding\"", 1)},
	} {
		t.Run(tc.state.String(), func(t *testing.T) {
			g := NewGuardConn(&feedConn{pieces: [][]byte{[]byte(up), []byte(fake)}})
			head := make([]byte, len(up))
			if _, err := io.ReadFull(g, head); err != nil {
				t.Fatal(err)
			}
			StopOnHijack(wrapping{wrapping{g}}, tc.state)
			rest, err := io.ReadAll(g)
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != tc.want {
				t.Errorf("after %v read %q, want %q", tc.state, rest, tc.want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func fmtChunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }

// TestGuardedHeadRefused: net/http refuses the head the guard marked.
func TestGuardedHeadRefused(t *testing.T) {
	in := "POST /f HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	if _, err := http.ReadRequest(bufio.NewReader(strings.NewReader(guarded(t, in, 0)))); err == nil {
		t.Fatal("net/http read the marked head")
	}
	if _, err := http.ReadRequest(bufio.NewReader(strings.NewReader(in))); err != nil {
		t.Fatalf("net/http refused the head unmarked: %v", err)
	}
}

// FuzzGuard: whatever comes, the guard changes at most one byte, a colon, into its mark, and
// the same whatever pieces the bytes come in; the colon it marks ends a field name
// Transfer-Encoding at a line's start, which net/http's reader then refuses; Unmark puts it
// back in any of the last bytes read.
func FuzzGuard(f *testing.F) {
	f.Add("POST /f HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", uint8(3))
	f.Add("POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\nGET / HTTP/1.0\nTransfer-Encoding: x\n\n", uint8(1))
	f.Fuzz(func(t *testing.T, in string, size uint8) {
		whole := guarded(t, in, 0)
		if got := guarded(t, in, int(size)); got != whole {
			t.Fatalf("in pieces of %d: %q, whole: %q", size, got, whole)
		}
		if len(whole) != len(in) {
			t.Fatalf("%d bytes out of %d", len(whole), len(in))
		}
		diff := -1
		for i := range in {
			if in[i] != whole[i] {
				if diff >= 0 || in[i] != ':' || whole[i] != mangled {
					t.Fatalf("changed %q at %d into %q", in[i], i, whole[i])
				}
				diff = i
			}
		}
		if diff >= 0 {
			start := diff - len("Transfer-Encoding")
			if start < 1 || in[start-1] != '\n' || !strings.EqualFold(in[start:diff], "Transfer-Encoding") {
				t.Fatalf("marked the colon at %d in %q", diff, in)
			}
		}
		// Whatever the bytes last read that a hijacker is handed, Unmark gives them as sent.
		g := NewGuardConn(&feedConn{pieces: [][]byte{[]byte(in)}})
		out, err := io.ReadAll(g)
		if err != nil {
			t.Fatal(err)
		}
		k := int(size) % (len(in) + 1)
		Unmark(g, out[k:])
		if string(out[k:]) != in[k:] {
			t.Fatalf("unmarked the last %d bytes into %q, want %q", len(in)-k, out[k:], in[k:])
		}
	})
}

// TestUnmark: the colon the guard marked in what net/http had read ahead of a connection it
// then hijacked is put back, wherever the read ahead begins and however the bytes came; a
// mark outside it, or no mark, leaves it as it is.
func TestUnmark(t *testing.T) {
	const up = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: test\r\nConnection: upgrade\r\n\r\n"
	const fake = "GET /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
	marked := strings.Replace(fake, "Encoding:", "Encoding\"", 1)
	for _, tc := range []struct {
		name        string
		in          string
		early, want string // the last len(early) bytes read, and those after Unmark
	}{
		{"early data", up + fake, marked, fake},
		{"early data behind a body", up + "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx" + fake, marked, fake},
		{"early data's end", up + fake, marked[30:], fake[30:]},
		{"read ahead after the mark", up + fake + "tail", "tail", "tail"},
		{"no mark", up + "GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked\r\n\r\n", "chunked\r\n\r\n"},
	} {
		for _, size := range []int{0, 1, 7} {
			t.Run(tc.name+"/pieces of "+itoa(size), func(t *testing.T) {
				var pieces [][]byte
				for rest := tc.in; rest != ""; {
					k := len(rest)
					if size > 0 {
						k = min(size, k)
					}
					pieces, rest = append(pieces, []byte(rest[:k])), rest[k:]
				}
				g := NewGuardConn(&feedConn{pieces: pieces})
				all, err := io.ReadAll(g)
				if err != nil {
					t.Fatal(err)
				}
				early := append([]byte(nil), all[len(all)-len(tc.early):]...)
				if string(early) != tc.early {
					t.Fatalf("read ahead %q, want %q", early, tc.early)
				}
				StopOnHijack(wrapping{g}, http.StateHijacked)
				Unmark(wrapping{g}, early)
				if string(early) != tc.want {
					t.Errorf("after Unmark %q, want %q", early, tc.want)
				}
			})
		}
	}
}
