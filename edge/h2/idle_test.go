package h2

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestFramesOnIdleStreams: a frame other than HEADERS or PRIORITY on an idle stream (an odd id
// past the client's last, or any even one: the server opens none) is a connection error
// PROTOCOL_ERROR (RFC 9113, section 5.1), whose GOAWAY names the client's last stream as it
// was: no such frame opens a stream. Where the connection stays up, the client's next
// HEADERS is served. A WINDOW_UPDATE of 0 on an idle stream was answered with a RST_STREAM
// and raised the last stream id, so that the client's next HEADERS ended the connection.
func TestFramesOnIdleStreams(t *testing.T) {
	type send func(c *rawClient, id uint32) error
	data := func(c *rawClient, id uint32) error { return c.fr.WriteData(id, false, []byte("x")) }
	headers := func(c *rawClient, id uint32) error { return c.tryHeaders(id, true, "/") }
	malformed := func(c *rawClient, id uint32) error { return c.tryHeaders(id, true, "/", "X-Upper", "1") }
	priority := func(c *rawClient, id uint32) error {
		return c.fr.WritePriority(id, http2.PriorityParam{StreamDep: 1, Weight: 15})
	}
	selfPriority := func(c *rawClient, id uint32) error {
		return c.fr.WritePriority(id, http2.PriorityParam{StreamDep: id, Weight: 15})
	}
	rst := func(c *rawClient, id uint32) error { return c.fr.WriteRSTStream(id, http2.ErrCodeCancel) }
	windowUpdate := func(c *rawClient, id uint32) error { return c.fr.WriteWindowUpdate(id, 1) }
	windowUpdate0 := func(c *rawClient, id uint32) error {
		return c.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, id, []byte{0, 0, 0, 0})
	}
	continuation := func(c *rawClient, id uint32) error {
		c.buf.Reset()
		c.enc.WriteField(hpack.HeaderField{Name: "x-a", Value: "1"})
		return c.fr.WriteContinuation(id, true, c.buf.Bytes())
	}
	pushPromise := func(c *rawClient, id uint32) error {
		return c.fr.WriteRawFrame(http2.FramePushPromise, http2.FlagPushPromiseEndHeaders, id, []byte{0, 0, 0, 2})
	}
	settings := func(c *rawClient, id uint32) error { return c.fr.WriteRawFrame(http2.FrameSettings, 0, id, nil) }
	ping := func(c *rawClient, id uint32) error {
		return c.fr.WriteRawFrame(http2.FramePing, 0, id, make([]byte, 8))
	}
	goAway := func(c *rawClient, id uint32) error {
		return c.fr.WriteRawFrame(http2.FrameGoAway, 0, id, make([]byte, 8))
	}
	unknown := func(c *rawClient, id uint32) error { return c.fr.WriteRawFrame(0xfa, 0, id, []byte("ext")) }
	// Padding longer than the frame: x/net's Framer reports a stream error without decoding the
	// header block, whose dynamic-table changes the connection's decoder then never saw.
	overPadded := func(c *rawClient, id uint32) error {
		c.buf.Reset()
		c.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
		return c.fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersPadded|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream,
			id, append([]byte{200}, c.buf.Bytes()...))
	}

	// Streams 1 and 3 are answered first: the client's last stream is 3.
	for _, tt := range []struct {
		name  string
		id    uint32
		send  send
		reset []http2.ErrCode // the RST_STREAM frames the idle stream gets
		next  uint32          // the connection stays up, and the client's HEADERS on next is served; 0: GOAWAY PROTOCOL_ERROR
	}{
		{name: "odd/HEADERS", id: 5, send: headers, next: 7},
		{name: "odd/malformed HEADERS", id: 5, send: malformed, reset: []http2.ErrCode{http2.ErrCodeProtocol}, next: 7},
		{name: "odd/HEADERS padded past its end", id: 5, send: overPadded},
		{name: "closed/HEADERS padded past its end", id: 3, send: overPadded},
		{name: "odd/PRIORITY", id: 5, send: priority, next: 5},
		{name: "odd/PRIORITY on itself", id: 5, send: selfPriority, reset: []http2.ErrCode{http2.ErrCodeProtocol}, next: 7},
		{name: "odd/unknown type", id: 5, send: unknown, next: 5},
		{name: "odd/DATA", id: 5, send: data},
		{name: "odd/RST_STREAM", id: 5, send: rst},
		{name: "odd/WINDOW_UPDATE", id: 5, send: windowUpdate},
		{name: "odd/WINDOW_UPDATE 0", id: 5, send: windowUpdate0},
		{name: "odd/WINDOW_UPDATE 0 far ahead", id: 1001, send: windowUpdate0},
		{name: "odd/CONTINUATION", id: 5, send: continuation},
		{name: "odd/PUSH_PROMISE", id: 5, send: pushPromise},
		{name: "odd/SETTINGS", id: 5, send: settings},
		{name: "odd/PING", id: 5, send: ping},
		{name: "odd/GOAWAY", id: 5, send: goAway},
		{name: "even below/HEADERS", id: 2, send: headers},
		{name: "even below/malformed HEADERS", id: 2, send: malformed},
		{name: "even below/PRIORITY", id: 2, send: priority, next: 5},
		{name: "even below/DATA", id: 2, send: data},
		{name: "even below/RST_STREAM", id: 2, send: rst},
		{name: "even below/WINDOW_UPDATE", id: 2, send: windowUpdate},
		{name: "even below/WINDOW_UPDATE 0", id: 2, send: windowUpdate0},
		{name: "even above/HEADERS", id: 4, send: headers},
		{name: "even above/malformed HEADERS", id: 4, send: malformed},
		{name: "even above/PRIORITY", id: 4, send: priority, next: 5},
		{name: "even above/DATA", id: 4, send: data},
		{name: "even above/RST_STREAM", id: 4, send: rst},
		{name: "even above/WINDOW_UPDATE", id: 4, send: windowUpdate},
		{name: "even above/WINDOW_UPDATE 0", id: 4, send: windowUpdate0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok")
			}))
			c := dialRaw(t, ts)
			for _, id := range []uint32{1, 3} {
				c.headers(id, true, "/")
				c.until("an answer", streamEnded(id))
			}
			// The frame and a PING leave in one write, which the server reads at once: on a
			// connection error it closes with nothing unread (no TCP reset to lose the GOAWAY),
			// and the PING's ACK says the connection went on.
			var out bytes.Buffer
			fr := c.fr
			c.fr = http2.NewFramer(&out, nil)
			err := tt.send(c, tt.id)
			c.fr.WritePing(false, [8]byte{5})
			c.fr = fr
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.nc.Write(out.Bytes()); err != nil {
				t.Fatal(err)
			}
			var resets []http2.ErrCode
			c.until("the GOAWAY or the PING's ACK", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					if tt.next != 0 {
						t.Fatalf("GOAWAY %v (stream %d reset with %v)", f.ErrCode, tt.id, resets)
					}
					if f.ErrCode != http2.ErrCodeProtocol || f.LastStreamID != 3 {
						t.Fatalf("GOAWAY %v naming stream %d, want PROTOCOL_ERROR naming stream 3", f.ErrCode, f.LastStreamID)
					}
					return true
				case *http2.RSTStreamFrame:
					if f.StreamID == tt.id {
						resets = append(resets, f.ErrCode)
					}
				case *http2.PingFrame:
					if tt.next == 0 && f.IsAck() {
						t.Fatalf("the connection went on (stream %d reset with %v), want GOAWAY PROTOCOL_ERROR", tt.id, resets)
					}
					return f.IsAck()
				}
				return false
			})
			if tt.next == 0 {
				return
			}
			c.headers(tt.next, true, "/")
			c.until("the next stream's answer", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v", f.ErrCode)
				case *http2.RSTStreamFrame:
					switch f.StreamID {
					case tt.next:
						t.Fatalf("stream %d reset with %v", f.StreamID, f.ErrCode)
					case tt.id:
						resets = append(resets, f.ErrCode)
					}
				}
				return streamEnded(tt.next)(f)
			})
			if !slices.Equal(resets, tt.reset) {
				t.Errorf("stream %d reset with %v, want %v", tt.id, resets, tt.reset)
			}
		})
	}
}

// TestFramesTooShortForTheirFlags: a DATA or HEADERS frame whose payload cannot hold the
// fields its flags announce (the pad length, a HEADERS frame's priority) is a connection
// error FRAME_SIZE_ERROR (RFC 9113, section 4.2: a frame too small for its mandatory data;
// one carrying a field block alters the whole connection). x/net's Framer reports it as
// io.ErrUnexpectedEOF, the error of a connection cut mid-frame, and the server hung up
// without a GOAWAY, so that the client could not tell which of its requests were served.
func TestFramesTooShortForTheirFlags(t *testing.T) {
	headers := func(flags http2.Flags, payload ...byte) func(fr *http2.Framer, id uint32) error {
		return func(fr *http2.Framer, id uint32) error {
			return fr.WriteRawFrame(http2.FrameHeaders, flags|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, id, payload)
		}
	}
	for _, tt := range []struct {
		name string
		id   uint32
		send func(fr *http2.Framer, id uint32) error
	}{
		{name: "HEADERS/PRIORITY in 4 bytes", id: 5, send: headers(http2.FlagHeadersPriority, 0, 0, 0, 1)},
		{name: "HEADERS/PADDED without its length", id: 5, send: headers(http2.FlagHeadersPadded)},
		{name: "HEADERS/PADDED and PRIORITY in 5 bytes", id: 5, send: headers(http2.FlagHeadersPadded|http2.FlagHeadersPriority, 0, 0, 0, 0, 1)},
		{name: "trailers/PRIORITY in 4 bytes", id: 3, send: headers(http2.FlagHeadersPriority, 0, 0, 0, 1)},
		{name: "DATA/PADDED without its length", id: 3, send: func(fr *http2.Framer, id uint32) error {
			return fr.WriteRawFrame(http2.FrameData, http2.FlagDataPadded, id, nil)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "ok")
			}))
			c := dialRaw(t, ts)
			c.headers(1, true, "/")
			c.until("an answer", streamEnded(1))
			c.headers(3, false, "/") // still sending: its DATA and trailers are welcome
			// The frame and a PING in one write, which the server reads at once (see
			// TestFramesOnIdleStreams).
			var out bytes.Buffer
			fr := http2.NewFramer(&out, nil)
			if err := tt.send(fr, tt.id); err != nil {
				t.Fatal(err)
			}
			fr.WritePing(false, [8]byte{5})
			if _, err := c.nc.Write(out.Bytes()); err != nil {
				t.Fatal(err)
			}
			g := c.goAwayOrClose(tt.id)
			if g == nil {
				t.Fatal("the connection closed without a GOAWAY")
			}
			if g.ErrCode != http2.ErrCodeFrameSize || g.LastStreamID != 3 {
				t.Fatalf("GOAWAY %v naming stream %d, want FRAME_SIZE_ERROR naming stream 3", g.ErrCode, g.LastStreamID)
			}
		})
	}
}
