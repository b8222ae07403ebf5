package h2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// answerOK answers "ok" with a Content-Length, so the answer's END_STREAM goes out with its
// last Write, without reading the request body; /hold waits for hold first.
func answerOK(hold <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-hold
		}
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	})
}

// TestLateEndOfRequest: a request whose answer is whole before the client's END_STREAM is
// read (a content-length: 0 request whose END_STREAM comes in an empty DATA frame or in
// trailers, or an upload cut short by an early answer) is ended with RST_STREAM NO_ERROR
// (RFC 9113, section 8.1). What the client sent on it before it saw that reset arrives after
// it and is ignored (section 5.1): neither another RST_STREAM nor a GOAWAY, the connection's
// window is given back for its bytes, and the stream's slot is free while
// MaxConcurrentStreams still holds. The client holds its END_STREAM back until it has the
// answer: the server reads it only after the answer, as when the handler wins the race.
func TestLateEndOfRequest(t *testing.T) {
	chunk := make([]byte, 16384)
	for _, tt := range []struct {
		name    string
		fields  []string                 // the request's, besides the pseudo-fields
		late    func(c *rawClient) error // what the client sent before it saw the reset
		minConn uint32                   // the connection's window the server must give back
	}{
		{"content-length 0, empty DATA", []string{"content-length", "0"}, func(c *rawClient) error {
			return c.fr.WriteData(1, true, nil)
		}, 0},
		{"content-length 0, trailers", []string{"content-length", "0"}, func(c *rawClient) error {
			c.buf.Reset()
			c.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "t"})
			return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
		}, 0},
		{"upload cut short", nil, func(c *rawClient) error {
			for range 16 { // 256 KiB: the quarter window after which the server gives it back
				if err := c.fr.WriteData(1, false, chunk); err != nil {
					return err
				}
			}
			return c.fr.WriteData(1, true, nil)
		}, recvConnWindow / 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hold := make(chan struct{})
			ts := newTestServer(t, answerOK(hold))
			ts.H2.MaxConcurrentStreams = 1
			c := dialRaw(t, ts)
			c.headers(1, false, "/", tt.fields...)
			c.until("the answer", streamEnded(1))
			if err := tt.late(c); err != nil {
				t.Fatal(err)
			}
			c.fr.WritePing(false, [8]byte{1})
			var resets []http2.ErrCode
			var given uint32
			c.until("the PING's ACK, after the late frames", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					resets = append(resets, f.ErrCode)
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v after the late end of a request", f.ErrCode)
				case *http2.WindowUpdateFrame:
					if f.StreamID == 0 {
						given += f.Increment
					}
				case *http2.PingFrame:
					return f.IsAck()
				}
				return false
			})
			if len(resets) != 1 || resets[0] != http2.ErrCodeNo {
				t.Errorf("stream 1 reset with %v, want [NO_ERROR]", resets)
			}
			if given < tt.minConn {
				t.Errorf("the connection's window got %d bytes back, want at least %d", given, tt.minConn)
			}

			// Stream 1's slot is free: 3 is served; 5 is one too many.
			c.headers(3, true, "/hold")
			c.headers(5, true, "/")
			c.until("stream 5 refused", func(f http2.Frame) bool {
				if f.Header().StreamID == 3 {
					t.Fatalf("stream 3 got %T before stream 5 was refused", f)
				}
				rst, ok := f.(*http2.RSTStreamFrame)
				if ok && (rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream) {
					t.Fatalf("stream %d reset with %v, want stream 5 REFUSED_STREAM", rst.StreamID, rst.ErrCode)
				}
				return ok
			})
			close(hold)
			c.until("stream 3's answer", streamEnded(3))
		})
	}
}

// TestAnswerWholeBeforeRequestEnds: a handler that finished its answer before the client's
// END_STREAM was read is not told the client went away: its flush succeeds and its context
// lasts until it returns, as when the END_STREAM is read first. A handler that takes a
// failed flush for a client gone aborts (as the edge's pass does, like ReverseProxy), and
// the stream of a whole answer was then reset with INTERNAL_ERROR.
func TestAnswerWholeBeforeRequestEnds(t *testing.T) {
	type seen struct{ flush, ctx error }
	got := make(chan seen, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok") // the answer's END_STREAM goes out with it
		err := http.NewResponseController(w).Flush()
		got <- seen{err, r.Context().Err()}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	c := dialRaw(t, ts)
	c.headers(1, false, "/", "content-length", "0")
	c.until("the answer", streamEnded(1))
	if s := <-got; s.flush != nil || s.ctx != nil {
		t.Errorf("after a whole answer: flush %v, context %v; want nil, nil", s.flush, s.ctx)
	}
	c.fr.WriteData(1, true, nil)
	c.fr.WritePing(false, [8]byte{2})
	c.until("the PING's ACK", func(f http2.Frame) bool {
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode != http2.ErrCodeNo {
			t.Errorf("stream %d of a whole answer reset with %v", rst.StreamID, rst.ErrCode)
		}
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck()
	})
}

// heldConn is a client's connection that holds back what the client writes from the first
// frame hold matches until release: the network delaying a frame, which a real client cannot
// be made to do on cue. heldNow is closed once that frame is held. It notes the RST_STREAM
// and GOAWAY frames the server sends.
type heldConn struct {
	net.Conn
	hold    func(http2.FrameHeader) bool
	heldNow chan struct{}

	wmu     sync.Mutex // guards the client's side; held across writes, so they stay in order
	out     []byte     // the client's bytes not yet a whole frame
	held    []byte     // whole frames held back
	holding bool
	preface bool // the client preface is past

	rmu sync.Mutex // guards the server's side
	in  []byte     // the server's bytes not yet a whole frame
	got []string   // "RST_STREAM 1 NO_ERROR", "GOAWAY PROTOCOL_ERROR"
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.out = append(c.out, p...)
	var send []byte
	if !c.preface {
		if len(c.out) < len(clientPreface) {
			return len(p), nil
		}
		send = append(send, c.out[:len(clientPreface)]...)
		c.out = c.out[len(clientPreface):]
		c.preface = true
	}
	for len(c.out) >= 9 {
		h, _ := http2.ReadFrameHeader(bytes.NewReader(c.out))
		n := 9 + int(h.Length)
		if len(c.out) < n {
			break
		}
		if c.hold != nil && c.hold(h) {
			c.holding, c.hold = true, nil
			close(c.heldNow)
		}
		if c.holding {
			c.held = append(c.held, c.out[:n]...)
		} else {
			send = append(send, c.out[:n]...)
		}
		c.out = c.out[n:]
	}
	if len(send) > 0 {
		if _, err := c.Conn.Write(send); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// release sends what was held, and lets the client's writes through from then on.
func (c *heldConn) release() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.holding {
		return errors.New("no frame was held: the client ended its request in its HEADERS")
	}
	c.holding = false
	_, err := c.Conn.Write(c.held)
	c.held = nil
	return err
}

func (c *heldConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.in = append(c.in, p[:n]...)
	for len(c.in) >= 9 {
		h, _ := http2.ReadFrameHeader(bytes.NewReader(c.in))
		end := 9 + int(h.Length)
		if len(c.in) < end {
			break
		}
		payload := c.in[9:end]
		switch {
		case h.Type == http2.FrameRSTStream && len(payload) == 4:
			c.got = append(c.got, fmt.Sprintf("RST_STREAM %d %v", h.StreamID, http2.ErrCode(binary.BigEndian.Uint32(payload))))
		case h.Type == http2.FrameGoAway && len(payload) >= 8:
			c.got = append(c.got, fmt.Sprintf("GOAWAY %v", http2.ErrCode(binary.BigEndian.Uint32(payload[4:8]))))
		}
		c.in = c.in[end:]
	}
	return n, err
}

func (c *heldConn) frames() []string {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return append([]string(nil), c.got...)
}

// serveH2C serves h over cleartext HTTP/2 (prior knowledge) on 127.0.0.1 through
// Server.ServeConn, the path TLS connections take after their handshake, and returns the
// address.
func serveH2C(t *testing.T, h http.Handler) string {
	t.Helper()
	return serveH2CWrapped(t, h, nil)
}

// serveH2CWrapped is serveH2C whose server sees each connection through wrap, if not nil.
func serveH2CWrapped(t *testing.T, h http.Handler, wrap func(net.Conn) net.Conn) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			if wrap != nil {
				nc = wrap(nc)
			}
			wg.Go(func() { s.ServeConn(context.Background(), nc, nil, h) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestLateEndOfRequestGoClient: TestLateEndOfRequest with net/http's HTTP/2 client, which
// ends a request whose body it cannot see is empty (a reader, not http.NoBody) in a frame
// after its HEADERS: an empty DATA frame, or trailers. The handler answers once the client
// has sent that frame, which is held on the wire until the client has read its whole
// answer; the connection then serves the next request, and the server sends no reset of
// stream 1 but the NO_ERROR one. (With trailers the connection was closed with GOAWAY
// PROTOCOL_ERROR, and the next request failed.)
func TestLateEndOfRequestGoClient(t *testing.T) {
	for _, tt := range []struct {
		name    string
		trailer http.Header
	}{
		{"empty DATA", nil},
		{"trailers", http.Header{"X-Trailer": {"t"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			heldNow := make(chan struct{})
			addr := serveH2C(t, answerOK(heldNow))
			var hc *heldConn
			p := new(http.Protocols)
			p.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: p, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				hc = &heldConn{Conn: nc, heldNow: heldNow, hold: func(h http2.FrameHeader) bool {
					return h.StreamID == 1 && h.Flags.Has(http2.FlagDataEndStream) &&
						(h.Type == http2.FrameData || h.Type == http2.FrameHeaders)
				}}
				return hc, nil
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cc, err := tr.NewClientConn(ctx, "http", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			do := func(method, path string, body io.Reader, trailer http.Header) error {
				req, _ := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
				req.Trailer = trailer
				resp, err := cc.RoundTrip(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
					err = fmt.Errorf("answer %d %q, want 200 \"ok\"", resp.StatusCode, b)
				}
				return err
			}
			if err := do("POST", "/hold", io.NopCloser(strings.NewReader("")), tt.trailer); err != nil {
				t.Fatalf("request whose END_STREAM is held: %v", err)
			}
			if err := hc.release(); err != nil {
				t.Fatal(err)
			}
			// Its HEADERS follow the late frame, which the server reads first.
			if err := do("GET", "/", nil, nil); err != nil {
				t.Fatalf("next request on the connection: %v (server sent %v)", err, hc.frames())
			}
			if got := hc.frames(); len(got) != 1 || got[0] != "RST_STREAM 1 NO_ERROR" {
				t.Errorf("server sent %v, want [RST_STREAM 1 NO_ERROR]", got)
			}
		})
	}
}

// TestLateEndOfRequestNeverServed: TestLateEndOfRequest for a request whose stream the server
// gave up on at its HEADERS (refused, malformed, a 431) or ignored (opened after the server's
// GOAWAY, RFC 9113 section 6.8). The rest of the request, which the client sent before it
// saw that, is ignored too: its trailers ended the connection with GOAWAY PROTOCOL_ERROR,
// and the answer of the stream in flight beside it with it.
func TestLateEndOfRequestNeverServed(t *testing.T) {
	for _, tt := range []struct {
		name     string
		setup    func(s *Server)
		goAway   bool     // the server's GOAWAY comes first
		fields   []string // besides the pseudo-fields
		selfPrio bool     // the HEADERS depend on their own stream
		want     []string // what stream 3 gets
	}{
		{name: "refused", setup: func(s *Server) { s.MaxConcurrentStreams = 1 },
			want: []string{"RST_STREAM REFUSED_STREAM"}},
		{name: "connection-specific field", fields: []string{"connection", "close"},
			want: []string{"HEADERS 400", "RST_STREAM PROTOCOL_ERROR"}},
		{name: "upper-case field name", fields: []string{"X-Upper", "1"},
			want: []string{"RST_STREAM PROTOCOL_ERROR"}},
		{name: "depends on itself", selfPrio: true,
			want: []string{"RST_STREAM PROTOCOL_ERROR"}},
		{name: "header list too large", setup: func(s *Server) { s.MaxHeaderBytes = 256 },
			fields: []string{"x-big", strings.Repeat("a", 200), "x-big2", strings.Repeat("b", 200)},
			want:   []string{"HEADERS 431", "RST_STREAM NO_ERROR"}},
		{name: "after GOAWAY", goAway: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hold := make(chan struct{})
			release := sync.OnceFunc(func() { close(hold) })
			defer release() // also when the test fails: the server's shutdown waits for it
			started := make(chan struct{})
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				<-hold
				io.WriteString(w, "ok")
			}))
			if tt.setup != nil {
				tt.setup(ts.H2)
			}
			c := dialRaw(t, ts)
			c.headers(1, true, "/hold")
			<-started
			if tt.goAway {
				c.shutdownUntilGoAway(ts, 1)
			}
			// HEADERS, DATA and trailers of stream 3 leave together, as from a client that
			// has not yet read what the server says of the stream.
			c.buf.Reset()
			fields := append([]string{":method", "POST", ":scheme", "https", ":authority", "a", ":path", "/", "content-length", "3"}, tt.fields...)
			for i := 0; i < len(fields); i += 2 {
				c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			hp := http2.HeadersFrameParam{StreamID: 3, BlockFragment: c.buf.Bytes(), EndHeaders: true}
			if tt.selfPrio {
				hp.Priority = http2.PriorityParam{StreamDep: 3, Weight: 15}
			}
			c.fr.WriteHeaders(hp)
			c.fr.WriteData(3, false, []byte("abc"))
			c.buf.Reset()
			c.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "t"})
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
			c.fr.WritePing(false, [8]byte{3})
			var got []string
			c.until("the PING's ACK, after the late frames", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v after the late end of a request (stream 3 got %v)", f.ErrCode, got)
				case *http2.RSTStreamFrame:
					if f.StreamID == 3 {
						got = append(got, "RST_STREAM "+f.ErrCode.String())
					}
				case *http2.MetaHeadersFrame:
					if f.StreamID == 3 {
						got = append(got, "HEADERS "+f.PseudoValue("status"))
					}
				case *http2.PingFrame:
					return f.IsAck()
				}
				return false
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("stream 3 got %v, want %v", got, tt.want)
			}
			release()
			c.until("stream 1's answer", streamEnded(1))
		})
	}
}

// TestLateDataBounded: the DATA a client sends on a stream after the server reset it while the
// client was still sending is ignored only up to what the client can have had in flight:
// the stream's flow-control window at the reset (for a stream refused at its HEADERS, the
// initial window of the server's SETTINGS), and no more than the connection's window then,
// padding included. One byte past it is a connection error FLOW_CONTROL_ERROR (RFC 9113,
// section 6.9). It was ignored without end, and its connection window given back, so that a
// client could make the server read for ever; a refused stream was then allowed a whole
// stream window even when the connection's was nearly spent, the client using the window the
// server gave back after the reset. The same holds for all the DATA of the streams opened
// after the server's GOAWAY, which it ignores (section 6.8): up to the connection's window at
// the GOAWAY in all; they were ignored, and their window given back, without end. The
// connection's window still comes back for the DATA ignored within the bound.
func TestLateDataBounded(t *testing.T) {
	const read = 100 << 10 // what the "read part" handler reads before it answers
	const held = 768 << 10 // the body of the held stream 1 that its handler has not read
	for _, tt := range []struct {
		name   string
		refuse bool  // MaxConcurrentStreams 1, and stream 1 held: stream 3 is refused
		held   int   // stream 1 sends this much of a body first (refuse), unread
		goAway bool  // stream 1 held, the server's GOAWAY, then stream 3, which is ignored
		read   int   // the request body bytes the client sends first, and the handler reads
		padded bool  // the late DATA frames are padded
		window int64 // the stream's window at the reset
	}{
		{name: "answered early", window: recvStreamWindow},
		{name: "answered early, padded", padded: true, window: recvStreamWindow},
		{name: "read part", read: read, window: recvStreamWindow - read},
		{name: "refused", refuse: true, window: recvStreamWindow},
		{name: "refused, connection window short", refuse: true, held: held, window: recvConnWindow - held},
		{name: "after GOAWAY", goAway: true, window: recvConnWindow},
		{name: "after GOAWAY, padded", goAway: true, padded: true, window: recvConnWindow},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hold := make(chan struct{})
			release := sync.OnceFunc(func() { close(hold) })
			defer release() // the server's shutdown waits for the held handler
			started := make(chan struct{})
			ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					close(started)
					<-hold
				}
				if _, err := io.ReadFull(r.Body, make([]byte, tt.read)); err != nil {
					t.Errorf("reading the body: %v", err)
				}
				w.Header().Set("Content-Length", "2")
				io.WriteString(w, "ok")
			}))
			if tt.refuse {
				ts.H2.MaxConcurrentStreams = 1
			}
			c := dialRaw(t, ts)
			id, code := uint32(1), http2.ErrCodeNo
			switch {
			case tt.refuse:
				c.headers(1, tt.held == 0, "/hold")
				for sent := 0; sent < tt.held; sent += maxReadFrameSize {
					if err := c.fr.WriteData(1, false, make([]byte, maxReadFrameSize)); err != nil {
						t.Fatal(err)
					}
				}
				id, code = 3, http2.ErrCodeRefusedStream
			case tt.goAway:
				c.headers(1, true, "/hold")
				<-started // the GOAWAY names stream 1
				c.shutdownUntilGoAway(ts, 1)
				id = 3
			}
			c.headers(id, false, "/", "content-type", "text/plain")
			// The connection's window the client has: the protocol's initial one, then the
			// server's WINDOW_UPDATE frames.
			connWindow := int64(initialWindow)
			watch := func(f http2.Frame) {
				switch f := f.(type) {
				case *http2.WindowUpdateFrame:
					if f.StreamID == 0 {
						connWindow += int64(f.Increment)
					}
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v within the stream's window", f.ErrCode)
				case *http2.RSTStreamFrame:
					if f.StreamID != id || f.ErrCode != code {
						t.Fatalf("stream %d reset with %v, want stream %d %v", f.StreamID, f.ErrCode, id, code)
					}
				}
			}
			// send sends n bytes of DATA on the stream, padding included, in full frames.
			send := func(n int64) {
				data := make([]byte, maxReadFrameSize)
				for n > 0 {
					l := min(n, maxReadFrameSize)
					var err error
					if tt.padded && l > 1 {
						pad := min(l-1, 255)
						err = c.fr.WriteDataPadded(id, false, data[:l-1-pad], make([]byte, pad))
					} else {
						err = c.fr.WriteData(id, false, data[:l])
					}
					if err != nil {
						t.Fatal(err)
					}
					n -= l
					connWindow -= l
				}
			}
			connWindow -= int64(tt.held)
			send(int64(tt.read))
			if !tt.goAway { // a stream opened after the GOAWAY is ignored, not reset
				c.until("the stream's reset", func(f http2.Frame) bool {
					watch(f)
					rst, ok := f.(*http2.RSTStreamFrame)
					return ok && rst.StreamID == id
				})
			}

			send(tt.window)
			c.fr.WritePing(false, [8]byte{1})
			c.until("the PING's ACK, after the late DATA", func(f http2.Frame) bool {
				watch(f)
				p, ok := f.(*http2.PingFrame)
				return ok && p.IsAck()
			})
			if connWindow < 1 {
				t.Fatalf("the connection's window did not come back for the ignored DATA: %d left", connWindow)
			}

			// One byte more, and a PING, in one write that the server reads at once: it
			// closes with nothing unread, which would reset the connection and could lose
			// the GOAWAY.
			var out bytes.Buffer
			fr := http2.NewFramer(&out, nil)
			fr.WriteData(id, false, []byte("x"))
			fr.WritePing(false, [8]byte{2})
			if _, err := c.nc.Write(out.Bytes()); err != nil {
				t.Fatal(err)
			}
			c.until("the GOAWAY", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					if f.ErrCode != http2.ErrCodeFlowControl {
						t.Fatalf("GOAWAY %v, want FLOW_CONTROL_ERROR", f.ErrCode)
					}
					return true
				case *http2.PingFrame:
					if f.IsAck() {
						t.Fatalf("DATA past the %d bytes the client can have had in flight ignored: the connection went on", tt.window)
					}
				case *http2.RSTStreamFrame:
					t.Fatalf("stream %d reset with %v, want GOAWAY FLOW_CONTROL_ERROR", f.StreamID, f.ErrCode)
				}
				return false
			})
		})
	}
}

// TestResetOpenRing: resetOpen remembers the last maxResetOpen streams, the oldest overwritten
// first; a stream whose client ended its side is forgotten at once, and the later overwrite of
// its slot forgets no other stream. resetOpenSlot, the lookup beside the ring, agrees with it
// throughout, and once the ring is full, remembering and looking up allocate nothing.
func TestResetOpenRing(t *testing.T) {
	c := newBareConn(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	id := func(i int) uint32 { return uint32(2*i + 1) }
	check := func(what string, from, to int, forgotten ...uint32) {
		t.Helper()
		for i := range to + 8 {
			want := i >= from && i < to && !slices.Contains(forgotten, id(i))
			if got := c.lateFrameLocked(id(i), false); got != want {
				t.Errorf("%s: stream %d remembered %v, want %v", what, id(i), got, want)
			}
		}
		n := 0
		for i, e := range c.resetOpen {
			if e.id == 0 {
				continue
			}
			n++
			if slot, ok := c.resetOpenSlot[e.id]; !ok || slot != i {
				t.Errorf("%s: stream %d in slot %d, looked up in %d (%v)", what, e.id, i, slot, ok)
			}
		}
		if len(c.resetOpen) > maxResetOpen || len(c.resetOpenSlot) != n {
			t.Errorf("%s: %d slots, %d streams in them, %d looked up", what, len(c.resetOpen), n, len(c.resetOpenSlot))
		}
	}

	const over = 10
	for i := range maxResetOpen + over {
		c.rememberLocked(id(i), 100)
	}
	check("past full", over, maxResetOpen+over)

	ended := id(over + 5)
	c.lateFrameLocked(ended, true)
	check("one ended", over, maxResetOpen+over, ended)
	for i := range 6 { // the oldest six slots, the ended stream's last
		c.rememberLocked(id(maxResetOpen+over+i), 100)
	}
	check("its slot reused", over+6, maxResetOpen+over+6)

	late, overrun := c.lateDataLocked(id(over+6), 100, false)
	if !late || overrun {
		t.Errorf("DATA of the window's 100 bytes: late %v, over %v; want true, false", late, overrun)
	}
	if late, overrun = c.lateDataLocked(id(over+6), 1, true); !late || !overrun {
		t.Errorf("a byte past the window: late %v, over %v; want true, true", late, overrun)
	}

	next := maxResetOpen + over + 6
	if a := testing.AllocsPerRun(1, func() {
		for range 10 * maxResetOpen {
			c.rememberLocked(id(next), 100)
			c.lateFrameLocked(id(next), false)
			c.lateFrameLocked(id(next-maxResetOpen/2), true)
			c.lateFrameLocked(id(next-2*maxResetOpen), false)
			next++
		}
	}); a != 0 {
		t.Errorf("%v allocations remembering and looking up %d streams with a full ring", a, 10*maxResetOpen)
	}
}
