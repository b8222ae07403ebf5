package h2

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestEdgeSpaceValueAnswered400: a request whose regular field's value starts or ends with
// white space (SP or HTAB) is malformed (RFC 9113, section 8.2.1), and is answered 400, as
// that section asks, without its handler: it was reset with PROTOCOL_ERROR, which Go's
// client answers by retrying the request on a new connection, without end. A request with
// a body still to come is then reset with NO_ERROR, as after a 431. A field HTTP/2 forbids
// whatever its value (connection-specific, TE other than trailers) is answered 400 too, then
// reset with PROTOCOL_ERROR (TestMalformedAnswered400); another fault of the request is
// still reset without an answer.
func TestEdgeSpaceValueAnswered400(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %q %v", r.RequestURI, r.Header)
	}))
	for _, tc := range []struct {
		name      string
		endStream bool
		fields    []string
		reset     http2.ErrCode // after the 400; ErrCodeNo with endStream: none
	}{
		{"value starts with a space", true, []string{"x-a", " 1"}, 0},
		{"value ends with a space", true, []string{"x-a", "1 "}, 0},
		{"value ends with a tab", true, []string{"accept", "*/*\t"}, 0},
		{"white space only", true, []string{"x-a", " "}, 0},
		{"body to come", false, []string{"x-a", "1 "}, http2.ErrCodeNo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts)
			c.headers(1, tc.endStream, "/", tc.fields...)
			var status string
			c.until("the answer's end", func(f http2.Frame) bool {
				if f.Header().StreamID != 1 {
					return false
				}
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					if status != "" {
						t.Fatalf("a second HEADERS frame")
					}
					status = f.PseudoValue("status")
					if !f.StreamEnded() {
						t.Fatalf("status %s without END_STREAM", status)
					}
					return tc.endStream
				case *http2.RSTStreamFrame:
					if tc.endStream || status == "" || f.ErrCode != tc.reset {
						t.Fatalf("RST_STREAM %v after status %q, want %v after a 400", f.ErrCode, status, tc.reset)
					}
					return true
				case *http2.DataFrame:
					t.Fatalf("DATA on the stream")
				}
				return false
			})
			if status != "400" {
				t.Errorf("status %q, want 400", status)
			}
			if !tc.endStream {
				return
			}
			// The connection serves on: a ping is answered (the stream ended, no reset).
			c.fr.WritePing(false, [8]byte{1})
			c.until("the PING's answer", func(f http2.Frame) bool {
				if rst, ok := f.(*http2.RSTStreamFrame); ok {
					t.Fatalf("RST_STREAM %v on stream %d", rst.ErrCode, rst.StreamID)
				}
				p, ok := f.(*http2.PingFrame)
				return ok && p.IsAck()
			})
		})
	}
	// Nor does a value's white space hide another fault of the request, before or after it: a
	// forbidden field's 400 still ends with the reset, and another fault is reset unanswered.
	for _, fields := range [][]string{
		{"connection", "close "},
		{"te", "gzip "},
		{"x-a", "1 ", "connection", "close"},
		{"connection", "close", "x-a", "1 "},
		{"x-a", "1 ", "te", "gzip"},
	} {
		c := dialRaw(t, ts)
		c.headers(1, true, "/", fields...)
		if s, code := c.answerAndReset(1); s != "400" || code != http2.ErrCodeProtocol {
			t.Errorf("%q: status %s, then %v; want 400, then PROTOCOL_ERROR", fields, s, code)
		}
	}
	for _, fields := range [][]string{
		{"x-a", "1 ", "content-length", "x"},
		{"x-a", "1 ", "host", "b"},
	} {
		c := dialRaw(t, ts)
		c.headers(1, true, "/", fields...)
		c.wantReset(1, http2.ErrCodeProtocol, true)
	}
}

// TestEdgeSpaceTrailer: a request trailer field whose value starts or ends with white space
// makes the request malformed (RFC 9113, section 8.2.1), but its stream is not reset with
// PROTOCOL_ERROR, which Go's client (which sends such trailers) takes for a reason to retry
// the request on a new connection, without end: the handler reads the body's data, then an
// error (the request is not whole), and answers; the stream ends with that answer. So do
// trailers with a field HTTP/2 forbids whatever its value (errTrailerField), which were reset.
func TestEdgeSpaceTrailer(t *testing.T) {
	got := make(chan string, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%q %v", b, err)
		w.WriteHeader(http.StatusBadRequest)
	}))
	c := dialRaw(t, ts)
	c.headers(1, false, "/")
	c.fr.WriteData(1, false, []byte("body"))
	c.buf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: "x-t", Value: "a "})
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
	var status string
	c.until("the answer's end", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v on stream %d", f.ErrCode, f.StreamID)
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		}
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagHeadersEndStream)
	})
	if want := fmt.Sprintf("%q %v", "body", errTrailerValue); status != "400" || <-got != want {
		t.Errorf("status %q, want the handler's 400 after it read %s", status, want)
	}
	for _, field := range [][2]string{{"connection", "close "}, {"te", " trailers"}, {"te", "gzip"}} {
		c := dialRaw(t, ts)
		c.headers(1, false, "/")
		c.buf.Reset()
		c.enc.WriteField(hpack.HeaderField{Name: field[0], Value: field[1]})
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
		if s := c.wantAnswer(1); s != "400" {
			t.Errorf("trailer %q: status %s, want the handler's 400", field, s)
		}
		if read, want := <-got, fmt.Sprintf("%q %v", "", errTrailerField); read != want {
			t.Errorf("trailer %q: the handler read %s, want %s", field, read, want)
		}
	}
}
