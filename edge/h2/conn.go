package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// What a client may send before it waits for a WINDOW_UPDATE: per stream, and in all.
	// The connection's window bounds the request body bytes held for one connection.
	recvStreamWindow = 1 << 20
	recvConnWindow   = 1 << 20
	// maxReadFrameSize is advertised as SETTINGS_MAX_FRAME_SIZE: the protocol's default.
	// Request bodies are rare at an edge, and h2spec expects a frame past 16 KiB refused.
	maxReadFrameSize = 16384
	// writeBufferSize is the connection's output buffer: the responses to one batch of
	// requests leave in one write when they fit.
	writeBufferSize = 32 << 10
	// handoffDelay is how long a handler may run on the reading goroutine before reading
	// moves to a new goroutine: a hit ends well within it, a miss waiting for its origin does
	// not, and the connection's other streams wait no longer than this.
	handoffDelay = 2 * time.Millisecond
	// maxEmptyData bounds DATA frames without data or END_STREAM on a connection: they cost
	// work and carry nothing (CVE-2019-9518).
	maxEmptyData = 1000
	// closeWriteTimeout bounds the write of a final GOAWAY to a client that does not read.
	closeWriteTimeout = time.Second
	// lingerTimeout is how long a connection that said GOAWAY keeps reading (and dropping)
	// what the client had already sent before it closes: closing with unread bytes would
	// reset the connection and could lose the last answers on their way.
	lingerTimeout = time.Second
	// maxResetOpen bounds the streams a connection remembers as reset while their client
	// could still be sending (conn.resetOpen): a client's default 250 concurrent streams fit,
	// and RFC 9113 (section 5.1) lets an endpoint bound how long it ignores their frames.
	maxResetOpen = 256
	// initialWindow is the protocol's default window before SETTINGS say otherwise.
	initialWindow = 65535
	maxWindow     = 1<<31 - 1
)

// clientPreface opens every HTTP/2 connection.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var (
	errStreamClosed  = errors.New("h2: stream closed")
	errTrailerValue  = errors.New("h2: a request trailer field's value starts or ends with white space (RFC 9113, section 8.2.1)")
	errTrailerField  = errors.New("h2: a request trailer is a connection-specific field, or TE other than trailers (RFC 9113, section 8.2.2)")
	errWindowTimeout = errors.New("h2: the client granted no flow-control window within the write timeout")
)

// conn is one HTTP/2 connection. One goroutine reads it at a time (the reader); a handler
// that runs on the reader's goroutine (inline) gives the reading to a new goroutine when it
// runs long or must wait (handoff). Everything but reading is guarded by mu.
type conn struct {
	srv        *Server
	nc         net.Conn
	handler    http.Handler
	tlsState   *tls.ConnectionState
	remoteAddr string
	ctx        context.Context
	cancel     context.CancelFunc
	maxStreams uint32
	br         *bufio.Reader
	fr         *http2.Framer
	hb         *headerBlock // the reader's: request header blocks
	timer      *time.Timer  // hands reading off from a long inline handler
	done       chan struct{}
	handlers   sync.WaitGroup

	// The reader's own state.
	sawSettings bool
	emptyData   int

	mu            sync.Mutex
	cond          sync.Cond // windows, request bodies and stream states changed
	bw            *bufio.Writer
	hbuf          bytes.Buffer
	enc           *hpack.Encoder
	dirty         bool  // bw holds bytes not yet written
	werr          error // a write to the client failed: the connection is over
	streams       map[uint32]*stream
	maxClientID   uint32
	sendWindow    int64 // the connection's send window
	peerWindow    int64 // SETTINGS_INITIAL_WINDOW_SIZE of the client
	peerMaxFrame  uint32
	recvWindow    int64 // what the client may still send on the connection
	recvUnacked   int64 // consumed, not yet given back
	running       int   // handlers running
	queue         []*stream
	goAwaySent    bool
	goAwayLast    uint32 // the last stream id the first GOAWAY named; later ones name no more
	goAwayWindow  int64  // the connection's window at the GOAWAY: all the streams opened after it may get (lateDataLocked)
	goAwayHeaders uint32 // HEADERS frames ignored on streams opened after the GOAWAY, past their first (lateHeadersLocked)
	closing       bool
	inline        *stream // the stream whose handler runs on the reader's goroutine
	idleSet       bool    // an idle read deadline is set
	lingering     bool    // the GOAWAY is out and the last stream done: reading until closed
	started       bool    // the server's SETTINGS are out
	shutdownAsked bool    // Shutdown came before the SETTINGS went out
	writeRefresh  time.Time
	lowerCache    map[string]string
	// resetOpen are the last streams (up to maxResetOpen, oldest overwritten first from
	// resetOpenNext) that the server reset while their client could still be sending: what
	// the client sent before it saw the RST_STREAM arrives after it and is ignored (RFC 9113,
	// section 5.1), not answered with another reset or, for trailers, a connection error.
	// Its DATA is ignored only up to the stream's window at the reset (lateStream).
	resetOpen     []lateStream
	resetOpenNext int
	// resetOpenSlot is the index in resetOpen of each stream it remembers: a frame on a
	// closed stream (a flood of RST_STREAM) costs one lookup, not a scan of resetOpen.
	resetOpenSlot map[uint32]int
	// freeHeaders are response header maps of handlers that returned, cleared, for the next
	// streams: a map grown to a cached object's dozen fields is several allocations, which at
	// a full store cost more in collections than in the allocating (issue 15).
	freeHeaders []http.Header
	// freeValues are value scratches (responseWriter.ValueScratch) of handlers that
	// returned, for the next streams, recycled with the header maps.
	freeValues []*[16]string
	frameHdr   [9]byte // a DATA frame's header being written
	// answered is a request openLocked answered itself (431, 400), for Server.Answered,
	// which the reader calls once it has let go of mu.
	answered       *stream
	answeredStatus int
}

// maxFreeHeaders bounds freeHeaders; maxRecycledFields keeps a map a handler grew far past a
// typical answer out of it.
const (
	maxFreeHeaders    = 16
	maxRecycledFields = 64
)

// takeHeaderLocked returns a cleared response header map, or nil if none is free.
func (c *conn) takeHeaderLocked() http.Header { return popFree(&c.freeHeaders) }

// takeValuesLocked returns a cleared value scratch, or nil if none is free.
func (c *conn) takeValuesLocked() *[16]string { return popFree(&c.freeValues) }

// popFree takes the last of a free list, or returns the zero value if it is empty.
func popFree[T any](list *[]T) T {
	var zero T
	n := len(*list)
	if n == 0 {
		return zero
	}
	v := (*list)[n-1]
	(*list)[n-1] = zero // the list's array must not keep what it handed out
	*list = (*list)[:n-1]
	return v
}

// recycleHeaderLocked takes back the response header map of st, whose handler returned and
// whose header is encoded: net/http's contract is that a handler does not use its
// ResponseWriter, header included, after it returns.
func (c *conn) recycleHeaderLocked(st *stream) {
	if v := st.rw.values; v != nil {
		st.rw.values = nil
		if len(c.freeValues) < maxFreeHeaders {
			clear(v[:]) // so that no stale value keeps a stored object's memory
			c.freeValues = append(c.freeValues, v)
		}
	}
	h := st.rw.header
	st.rw.header = nil
	if h == nil || len(h) > maxRecycledFields || len(c.freeHeaders) >= maxFreeHeaders {
		return
	}
	clear(h)
	c.freeHeaders = append(c.freeHeaders, h)
}

func newConn(s *Server, ctx context.Context, nc net.Conn, tlsState *tls.ConnectionState, h http.Handler) *conn {
	c := &conn{
		srv:          s,
		nc:           nc,
		handler:      h,
		tlsState:     tlsState,
		remoteAddr:   nc.RemoteAddr().String(),
		maxStreams:   s.maxStreams(),
		done:         make(chan struct{}),
		streams:      map[uint32]*stream{},
		sendWindow:   initialWindow,
		peerWindow:   initialWindow,
		peerMaxFrame: 16384,
		recvWindow:   recvConnWindow,
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.cond.L = &c.mu
	c.br = bufio.NewReaderSize(nc, 16<<10)
	c.bw = bufio.NewWriterSize(deadlineWriter{c}, writeBufferSize)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxReadFrameSize)
	c.fr.MaxHeaderListSize = s.maxHeaderBytes()
	c.hb = newHeaderBlock(s.maxHeaderBytes()) // not the Framer's ReadMetaHeaders: see headerBlock
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.timer = time.AfterFunc(time.Hour, c.handoffSlow)
	c.timer.Stop()
	return c
}

// serve reads the preface, sends the server's SETTINGS and reads frames until the
// connection ends; it returns once every handler has.
func (c *conn) serve(shutting bool) {
	c.nc.SetDeadline(time.Now().Add(prefaceTimeout))
	var pre [len(clientPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != clientPreface {
		c.nc.Close()
		c.cancel()
		return
	}
	c.mu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxReadFrameSize},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStreams},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.srv.maxHeaderBytes()},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvStreamWindow},
	)
	c.fr.WriteWindowUpdate(0, recvConnWindow-initialWindow)
	c.dirty = true
	c.flushLocked()
	c.started = true
	c.idleSet = true // the preface deadline stands until the first SETTINGS
	if shutting || c.shutdownAsked {
		c.goAwayLocked()
	}
	c.mu.Unlock()
	if c.readLoop() {
		<-c.done
	}
}

// readLoop reads and handles frames until the connection ends (it then tears it down and
// returns false) or an inline handler handed the reading to another goroutine (true).
func (c *conn) readLoop() bool {
	for {
		if c.mayBlock() {
			c.beforeBlocking()
		}
		// ReadFrame in its two steps: a frame that fails to parse still has its type.
		var f http2.Frame
		fh, err := c.fr.ReadFrameHeader()
		if err == nil {
			f, err = c.fr.ReadFrameForHeader(fh)
		}
		sending := false // a HEADERS frame after which its client may send more on its stream
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			sending = !hf.StreamEnded()
			f, err = c.hb.read(c.fr, hf)
		}
		if err != nil {
			if c.readError(err, fh, sending) {
				continue
			}
			c.teardown()
			return false
		}
		if !c.sawSettings {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.connError(http2.ErrCodeProtocol)
				c.teardown()
				return false
			}
			c.sawSettings = true
			c.mu.Lock()
			if !c.lingering {
				c.nc.SetReadDeadline(time.Now().Add(c.srv.idleTimeout())) // the preface's deadline gives way to the idle one
			}
			c.mu.Unlock()
		}
		switch c.process(f) {
		case keepReading:
		case handedOff:
			return true
		case stopReading:
			c.teardown()
			return false
		}
	}
}

type action int

const (
	keepReading action = iota
	handedOff
	stopReading
)

// mayBlock reports whether reading the next frame may wait for the network: the buffer does
// not hold all of it.
func (c *conn) mayBlock() bool {
	n := c.br.Buffered()
	if n < 9 {
		return true
	}
	h, _ := c.br.Peek(9)
	return n < 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// beforeBlocking runs when the reader has nothing buffered: whatever is gathered goes out,
// and an idle connection gets its idle deadline.
func (c *conn) beforeBlocking() {
	c.mu.Lock()
	c.flushLocked()
	c.checkIdleLocked()
	c.mu.Unlock()
}

// checkIdleLocked gives a connection that has nothing to do its idle deadline. It runs
// wherever the last stream or handler may end, since the reader may already be waiting.
func (c *conn) checkIdleLocked() {
	if !c.idleSet && !c.lingering && len(c.streams) == 0 && c.running == 0 && len(c.queue) == 0 {
		c.nc.SetReadDeadline(time.Now().Add(c.srv.idleTimeout()))
		c.idleSet = true
	}
}

// readError handles an error from ReadFrame; it reports whether reading goes on. fh is the
// frame's header (zero if reading it failed), sending says a HEADERS had no END_STREAM.
func (c *conn) readError(err error, fh http2.FrameHeader, sending bool) bool {
	headers := fh.Type == http2.FrameHeaders
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case headers && se.Cause == nil:
			// The Framer refused the frame before decoding its header block (padding past its
			// end, a connection error anyway: RFC 9113, section 6.2): the block's changes to
			// the dynamic table are lost, and the next block would be read against the wrong one.
			// Those it refuses after decoding (invalid fields, pseudo-headers) carry a cause.
			c.connErrorLocked(http2.ErrCodeProtocol)
			return false
		case c.idleLocked(se.StreamID) && (!headers || se.StreamID%2 == 0):
			// Only a client's HEADERS on an odd id opens a stream: another frame on an idle
			// stream (a WINDOW_UPDATE of 0), or a HEADERS on an even one, is a connection
			// error (RFC 9113, sections 5.1 and 5.1.1).
			c.connErrorLocked(http2.ErrCodeProtocol)
			return false
		case c.idleLocked(se.StreamID):
			c.maxClientID = se.StreamID // a malformed HEADERS still opened (and closed) its stream
			c.refuseLocked(se.StreamID, se.Code, sending)
		default:
			c.resetLocked(se.StreamID, se.Code)
		}
		return true
	case errors.As(err, &ce):
		c.connError(http2.ErrCode(ce))
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.connError(http2.ErrCodeFrameSize)
	case errors.Is(err, io.ErrUnexpectedEOF) && tooShort(fh):
		// A payload too short for the fields its flags announce, which the Framer reports as
		// it does a connection cut mid-frame: a frame size error (RFC 9113, section 4.2), of
		// the connection for a HEADERS, whose block the HPACK decoder never saw (and, more
		// simply than a stream error, for a DATA).
		c.connError(http2.ErrCodeFrameSize)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.mu.Lock()
		lingering := c.lingering
		c.mu.Unlock()
		if !lingering {
			c.connError(http2.ErrCodeNo) // idle: say goodbye
		}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
	default:
		var ne net.Error
		if !errors.As(err, &ne) {
			c.connError(http2.ErrCodeProtocol)
		}
	}
	return false
}

// tooShort reports whether fh's payload cannot hold the fields its flags announce: a pad
// length (DATA, HEADERS), a HEADERS frame's priority.
func tooShort(fh http2.FrameHeader) bool {
	var need uint32
	switch fh.Type {
	case http2.FrameData:
		if fh.Flags.Has(http2.FlagDataPadded) {
			need = 1
		}
	case http2.FrameHeaders:
		if fh.Flags.Has(http2.FlagHeadersPadded) {
			need = 1
		}
		if fh.Flags.Has(http2.FlagHeadersPriority) {
			need += 5
		}
	}
	return fh.Length < need
}

// process handles one frame.
func (c *conn) process(f http2.Frame) action {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			c.fr.WritePing(true, f.Data)
			c.dirty = true
			c.mu.Unlock()
		}
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.mu.Lock()
			c.resetLocked(f.StreamID, http2.ErrCodeProtocol)
			c.mu.Unlock()
		}
	case *http2.GoAwayFrame:
		// The client will open no more streams; those it has are served to their end.
	case *http2.PushPromiseFrame:
		return c.connError(http2.ErrCodeProtocol) // clients never push
	}
	return keepReading
}

func (c *conn) onSettings(f *http2.SettingsFrame) action {
	if f.IsAck() {
		return keepReading
	}
	if f.NumSettings() > 100 {
		return c.connError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if !errors.As(err, &ce) {
			ce = http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return c.connErrorLocked(http2.ErrCode(ce))
	}
	c.fr.WriteSettingsAck()
	c.dirty = true
	return keepReading
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) action {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			return c.connErrorLocked(http2.ErrCodeFlowControl)
		}
		c.cond.Broadcast()
		return keepReading
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if c.idleLocked(f.StreamID) {
			return c.connErrorLocked(http2.ErrCodeProtocol) // an idle stream
		}
		return keepReading // a closed one: the update crossed our END_STREAM
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > maxWindow {
		c.resetLocked(st.id, http2.ErrCodeFlowControl)
		return keepReading
	}
	c.cond.Broadcast()
	return keepReading
}

func (c *conn) onReset(f *http2.RSTStreamFrame) action {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[f.StreamID]
	if st == nil {
		if c.idleLocked(f.StreamID) {
			return c.connErrorLocked(http2.ErrCodeProtocol)
		}
		c.lateFrameLocked(f.StreamID, true) // the client is done with it too
		return keepReading
	}
	c.closeStreamLocked(st, errStreamClosed)
	return keepReading
}

func (c *conn) onData(f *http2.DataFrame) action {
	id := f.StreamID
	n := int64(f.Length)
	data := f.Data()
	if len(data) == 0 && !f.StreamEnded() {
		c.emptyData++
		if c.emptyData > maxEmptyData {
			return c.connError(http2.ErrCodeEnhanceYourCalm)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWindow {
		return c.connErrorLocked(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[id]
	if st == nil || st.remoteDone {
		late := false
		if st == nil {
			if c.idleLocked(id) {
				return c.connErrorLocked(http2.ErrCodeProtocol) // an idle stream
			}
			var over bool
			if late, over = c.lateDataLocked(id, n, f.StreamEnded()); over {
				return c.connErrorLocked(http2.ErrCodeFlowControl)
			}
		}
		c.consumedLocked(nil, n) // nobody will read it: the connection's window comes back
		if !late {
			c.resetLocked(id, http2.ErrCodeStreamClosed)
		}
		return keepReading
	}
	if n > st.recvWindow {
		c.consumedLocked(nil, n)
		c.resetLocked(id, http2.ErrCodeFlowControl)
		return keepReading
	}
	st.recvWindow -= n
	if pad := n - int64(len(data)); pad > 0 {
		c.consumedLocked(st, pad)
	}
	st.gotLen += int64(len(data))
	if st.declaredLen >= 0 && st.gotLen > st.declaredLen {
		c.consumedLocked(nil, int64(len(data)))
		c.resetLocked(id, http2.ErrCodeProtocol)
		return keepReading
	}
	st.body.put(data)
	if f.StreamEnded() {
		if st.declaredLen >= 0 && st.gotLen != st.declaredLen {
			c.resetLocked(id, http2.ErrCodeProtocol)
			return keepReading
		}
		c.remoteEndLocked(st)
	}
	c.cond.Broadcast()
	return keepReading
}

// consumedLocked gives back n bytes of flow-control window once read (or dropped): to the
// connection, and to st if it still receives. Updates go out once a quarter of a window is
// owed, so a large body costs few WINDOW_UPDATE frames.
func (c *conn) consumedLocked(st *stream, n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= recvConnWindow/4 {
		c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
		c.dirty = true
	}
	if st != nil && !st.remoteDone && !st.reset {
		st.recvUnacked += n
		if st.recvUnacked >= recvStreamWindow/4 {
			c.fr.WriteWindowUpdate(st.id, uint32(st.recvUnacked))
			st.recvWindow += st.recvUnacked
			st.recvUnacked = 0
			c.dirty = true
		}
	}
}

// onHeaders opens a stream, or takes a request's trailers, and starts its handler: on this
// goroutine for a request without a body while no other handler of the connection runs (a
// handler still running was slow, and a burst of misses must not start 2 ms apart), on a
// goroutine of its own otherwise.
func (c *conn) onHeaders(f *http2.MetaHeadersFrame) action {
	c.mu.Lock()
	st, act := c.openLocked(f)
	if st == nil {
		answered, status := c.answered, c.answeredStatus
		c.answered = nil
		c.mu.Unlock()
		if answered != nil && c.srv.Answered != nil {
			reason := answered.bad.reason()
			if status == http.StatusRequestHeaderFieldsTooLarge {
				reason = "request header list over max_header_bytes"
			}
			c.srv.Answered(answered.req, status, reason)
		}
		return act
	}
	busy := c.running > 0
	c.running++
	c.handlers.Add(1)
	if !st.remoteDone || busy {
		c.mu.Unlock()
		go c.runHandler(st)
		return keepReading
	}
	// A request without a body: answered on this goroutine.
	c.inline = st
	c.mu.Unlock()
	c.timer.Reset(handoffDelay)
	c.callHandler(st)
	c.mu.Lock()
	moved := st.handedOff
	if !moved {
		// Still the reader: no other inline handler can have armed the timer since.
		c.inline = nil
		c.timer.Stop()
	}
	c.endHandlerLocked(st, !moved)
	c.mu.Unlock()
	if moved {
		return handedOff
	}
	return keepReading
}

// openLocked handles a HEADERS frame up to the start of its handler: it returns the stream
// to start now, or nil and what the reader does next (trailers, a refused or malformed
// stream, a 431, a stream queued behind reset ones, a connection error).
func (c *conn) openLocked(f *http2.MetaHeadersFrame) (*stream, action) {
	id := f.StreamID
	if st := c.streams[id]; st != nil {
		switch {
		case st.remoteDone:
			c.resetLocked(id, http2.ErrCodeStreamClosed)
		case !f.StreamEnded() || len(f.PseudoFields()) > 0:
			// Trailers end the stream, without pseudo-fields (RFC 9113, section 8.1).
			c.resetLocked(id, http2.ErrCodeProtocol)
		case st.declaredLen >= 0 && st.gotLen != st.declaredLen:
			c.resetLocked(id, http2.ErrCodeProtocol)
		case slices.ContainsFunc(f.RegularFields(), malformedName), slices.ContainsFunc(f.RegularFields(), edgeSpaceField):
			// Trailers are held to the rules of the header's fields (section 8.2): a
			// connection-specific field, TE other than trailers or a value with white space
			// at either end makes the request malformed, but a reset with PROTOCOL_ERROR has
			// Go's client, which sends such trailers, retry the request on a new connection
			// without end (as for such a header field: openLocked's 400). The request is not
			// passed on whole: its body fails, after the data that came, and the handler
			// answers (section 8.1.1 lets a server answer a malformed request), the stream
			// then ending as any other.
			err := errTrailerValue
			if slices.ContainsFunc(f.RegularFields(), malformedName) {
				err = errTrailerField
			}
			st.body.endLocked(err) // kept: remoteEndLocked's io.EOF comes second
			c.remoteEndLocked(st)
			c.cond.Broadcast()
		default:
			c.remoteEndLocked(st) // trailers are accepted and dropped: the edge forwards none
			c.cond.Broadcast()
		}
		return nil, keepReading
	}
	if id <= c.maxClientID {
		if late, act := c.lateHeadersLocked(id); late {
			return nil, act // trailers (already decoded: HPACK's state is kept)
		}
	}
	if id%2 == 0 || id <= c.maxClientID {
		return nil, c.connErrorLocked(http2.ErrCodeProtocol)
	}
	c.maxClientID = id
	switch {
	case c.goAwaySent && uint64(id-c.goAwayLast+1)/2 > 2*uint64(c.maxStreams):
		// A client that has not yet seen the GOAWAY has at most maxStreams streams open,
		// the ignored ones among them: twice that many is a client going on regardless,
		// which a stream before the GOAWAY still served would let go on without end.
		return nil, c.connErrorLocked(http2.ErrCodeEnhanceYourCalm)
	case c.goAwaySent || c.closing:
		return nil, keepReading // after a GOAWAY, new streams are ignored (RFC 9113, section 6.8)
	case f.HasPriority() && f.Priority.StreamDep == id:
		c.refuseLocked(id, http2.ErrCodeProtocol, !f.StreamEnded())
		return nil, keepReading
	case uint32(len(c.streams)) >= c.maxStreams:
		c.refuseLocked(id, http2.ErrCodeRefusedStream, !f.StreamEnded())
		return nil, keepReading
	}
	st := c.newStream(id, f)
	if st == nil {
		c.refuseLocked(id, http2.ErrCodeProtocol, !f.StreamEnded())
		return nil, keepReading
	}
	c.streams[id] = st
	if f.Truncated || st.bad != 0 {
		// A header list over the limit: 431, as net/http answers it; a malformed request
		// newStream found answerable: 400 (RFC 9113, sections 8.1.1 and 8.2.1). No handler
		// will end the stream: its context, registered with the connection's, is released
		// here. A request with more to come is then reset with NO_ERROR (localEndLocked), as
		// any answer given before its request's end. Server.Answered hears of it (onHeaders).
		status := http.StatusBadRequest
		if f.Truncated {
			status = http.StatusRequestHeaderFieldsTooLarge
		}
		st.cancel()
		if st.bad == badConnectionField && !f.Truncated {
			// The fields section 8.2.2 names, which h2spec holds to a stream error: the
			// 400 goes out without END_STREAM, then RST_STREAM PROTOCOL_ERROR (section 8.1.1:
			// a response "prior to closing or resetting the stream"). Go's client takes the
			// response when both come (golang.org/issue/49645) and does not retry it.
			c.writeHeaderBlockLocked(st, c.encodeStatusOnly(status), false)
			c.flushLocked() // in a write of its own, as localEndLocked's answer
			c.resetLocked(id, http2.ErrCodeProtocol)
		} else {
			c.writeHeaderBlockLocked(st, c.encodeStatusOnly(status), true)
			c.localEndLocked(st)
		}
		c.answered, c.answeredStatus = st, status
		return nil, keepReading
	}
	if c.idleSet {
		c.idleSet = false
		c.nc.SetReadDeadline(time.Time{})
	}
	if c.running >= int(c.maxStreams) {
		// Streams the client reset still have handlers running: wait for them, up to a
		// point (the rapid-reset attack).
		if len(c.queue) >= 4*int(c.maxStreams) {
			return nil, c.connErrorLocked(http2.ErrCodeEnhanceYourCalm)
		}
		c.queue = append(c.queue, st)
		return nil, keepReading
	}
	return st, keepReading
}

// handoffSlow runs when an inline handler has run for handoffDelay.
func (c *conn) handoffSlow() {
	c.mu.Lock()
	if st := c.inline; st != nil {
		c.handoffLocked(st)
	}
	c.mu.Unlock()
}

// handoffLocked starts a new reader if st's handler runs on the reader's goroutine: that
// goroutine then belongs to the handler alone.
func (c *conn) handoffLocked(st *stream) {
	if c.inline != st || st.handedOff || c.closing {
		return
	}
	st.handedOff = true
	c.inline = nil
	go c.readLoop()
}

// runHandler runs st's handler on a goroutine of its own.
func (c *conn) runHandler(st *stream) {
	c.callHandler(st)
	c.mu.Lock()
	c.endHandlerLocked(st, false)
	c.mu.Unlock()
}

// callHandler calls the handler and finishes the response; a panic resets the stream.
func (c *conn) callHandler(st *stream) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				c.srv.logf("h2: panic serving %v: %v\n%s", c.remoteAddr, p, debug.Stack())
			}
			c.mu.Lock()
			c.resetLocked(st.id, http2.ErrCodeInternal)
			c.mu.Unlock()
		}
	}()
	c.handler.ServeHTTP(&st.rw, st.req)
	st.rw.finish()
}

// endHandlerLocked accounts for a handler that returned; the next queued stream starts. A
// handler that ran on the reader leaves the flush to the reader (onReader), so the answers
// to one batch of requests leave together.
func (c *conn) endHandlerLocked(st *stream, onReader bool) {
	st.cancel()
	c.recycleHeaderLocked(st)
	if st.body != nil {
		st.body.closeLocked()
	}
	c.running--
	if !onReader {
		c.flushLocked()
	}
	for len(c.queue) > 0 && !c.closing {
		next := c.queue[0]
		c.queue = c.queue[1:]
		if next.reset {
			continue // its body, if any, was dropped when it was reset
		}
		c.running++
		c.handlers.Add(1)
		go c.runHandler(next)
		break
	}
	c.maybeCloseLocked()
	if !onReader {
		c.checkIdleLocked()
	}
	c.handlers.Done()
}

// remoteEndLocked notes that the client has sent all of st's request.
func (c *conn) remoteEndLocked(st *stream) {
	st.remoteDone = true
	if st.body != nil {
		st.body.endLocked(io.EOF)
	}
	if st.localDone {
		delete(c.streams, st.id)
	}
}

// localEndLocked notes that st's response has ended. A request still being sent is cut
// short with RST_STREAM NO_ERROR: the client may stop sending (RFC 9113, section 8.1). Its
// END_STREAM may be on its way already, also that of a request with nothing left to send but
// it (content-length: 0 and an empty DATA frame to end it, which the reader had not read when
// the handler answered): resetLocked remembers the stream, so that what comes after is
// ignored.
func (c *conn) localEndLocked(st *stream) {
	st.localDone = true
	if !st.remoteDone {
		// The answer leaves before the reset, in its own write, as with net/http: some
		// clients (curl 7.88) that read both at once report neither.
		c.flushLocked()
		c.resetLocked(st.id, http2.ErrCodeNo)
		return
	}
	delete(c.streams, st.id)
}

// closeStreamLocked ends st at once: its context is cancelled, its body and writer fail. A
// stream whose answer is whole (reset by localEndLocked) keeps its context until its handler
// returns, as it would had the client's END_STREAM been read first: nothing failed, and a
// handler still at work after its last write must not take the reset for a client gone.
func (c *conn) closeStreamLocked(st *stream, err error) {
	if !st.localDone {
		st.cancel()
	}
	st.reset = true
	st.remoteDone, st.localDone = true, true
	delete(c.streams, st.id)
	if st.body != nil {
		st.body.abortLocked(err)
	}
	c.cond.Broadcast()
	c.maybeCloseLocked()
	c.checkIdleLocked()
}

// resetLocked sends RST_STREAM for id and closes the stream if it is open. A stream whose
// client could still be sending is remembered (resetOpen) with its window.
func (c *conn) resetLocked(id uint32, code http2.ErrCode) {
	st := c.streams[id]
	sending := st != nil && !st.remoteDone
	if st != nil {
		c.closeStreamLocked(st, errStreamClosed)
	}
	if c.closing {
		return
	}
	c.fr.WriteRSTStream(id, code)
	c.dirty = true
	if sending {
		c.rememberLocked(id, st.recvWindow)
	}
}

// refuseLocked resets stream id, which its HEADERS opened but which never got a stream
// (refused, malformed); if sending (the HEADERS had no END_STREAM), the rest of the request,
// already on its way, is ignored as for any stream reset while its client was sending.
func (c *conn) refuseLocked(id uint32, code http2.ErrCode, sending bool) {
	c.resetLocked(id, code)
	if sending && !c.closing {
		// A new stream's window: that of the server's SETTINGS (or the smaller default, if
		// the client has not read them yet).
		c.rememberLocked(id, recvStreamWindow)
	}
}

// idleLocked reports whether stream id is idle: no HEADERS of the client opened it, nor one
// with a higher id. Even ids are the server's, which opens none (it does not push). A frame
// other than HEADERS or PRIORITY on an idle stream is a connection error PROTOCOL_ERROR (RFC
// 9113, section 5.1).
func (c *conn) idleLocked(id uint32) bool {
	return id%2 == 0 || id > c.maxClientID
}

// lateStream is a stream in resetOpen.
type lateStream struct {
	id uint32 // 0 once the stream is forgotten: no client stream has id 0
	// window is the stream's flow-control window when the server reset it, or the
	// connection's if smaller: the most DATA (padding included) the client can have sent on
	// it that had not yet arrived, and so all of its late DATA that is ignored.
	window int64
}

// rememberLocked notes id in resetOpen with the stream's window, overwriting the oldest when
// it is full. The window it keeps is no more than the connection's: the DATA that the client
// sent before it saw the RST_STREAM took the connection's window too, and whatever window the
// server gives back after the RST_STREAM (for the ignored DATA itself) reaches the client
// after it. A refused stream is thus allowed what the connection had left, not a stream's
// whole window each.
func (c *conn) rememberLocked(id uint32, window int64) {
	if c.resetOpenSlot == nil {
		c.resetOpenSlot = map[uint32]int{} // grown as needed: most connections reset few streams
	}
	e := lateStream{id: id, window: min(window, c.recvWindow)}
	i := len(c.resetOpen)
	if i < maxResetOpen {
		c.resetOpen = append(c.resetOpen, e)
	} else {
		i = c.resetOpenNext
		delete(c.resetOpenSlot, c.resetOpen[i].id) // 0, of a forgotten stream, is in no slot
		c.resetOpen[i] = e
		c.resetOpenNext = (i + 1) % maxResetOpen
	}
	c.resetOpenSlot[id] = i
}

// lateFrameLocked reports whether a frame on stream id, which has no state, is one its
// client sent before it saw the server's RST_STREAM, or on a stream opened after the
// server's GOAWAY, whose frames are all ignored (RFC 9113, section 6.8): such a request
// must not end the connection with a PROTOCOL_ERROR, nor the streams it is finishing. end
// (the frame ends or resets the client's side) forgets the stream: nothing more may come on
// it.
func (c *conn) lateFrameLocked(id uint32, end bool) bool {
	late, _ := c.lateDataLocked(id, 0, end)
	return late
}

// lateHeadersLocked is lateFrameLocked for a HEADERS frame, each of which the server
// decodes and ignores: a stream has one more HEADERS to send at most, its trailers (a
// HEADERS without END_STREAM after the request's is malformed, RFC 9113 section 8.1), so the
// stream is forgotten after it, and the streams opened after the GOAWAY get no more of them
// than there are such streams. Empty ones could otherwise come for ever, unanswered
// (CVE-2019-9518). act is what the reader does next.
func (c *conn) lateHeadersLocked(id uint32) (late bool, act action) {
	if !c.lateFrameLocked(id, true) {
		return false, keepReading
	}
	if c.goAwaySent && id > c.goAwayLast {
		c.goAwayHeaders++
		if c.goAwayHeaders > (c.maxClientID-c.goAwayLast+1)/2 { // the ignored streams (goAwayLast may be 0)
			return true, c.connErrorLocked(http2.ErrCodeEnhanceYourCalm)
		}
	}
	return true, keepReading
}

// lateDataLocked is lateFrameLocked for a DATA frame of n bytes, padding included, which are
// charged against the window of a stream in resetOpen, or against goAwayWindow for a stream
// opened after the GOAWAY: over reports a frame past it, more than the client may have sent
// before it saw the reset or the GOAWAY (a connection error FLOW_CONTROL_ERROR, RFC 9113
// section 6.9). A client could otherwise make the server read, and give the connection's
// window back, for ever: on a stream the server reset, or, while a stream before the GOAWAY
// is still served, on streams opened after it.
func (c *conn) lateDataLocked(id uint32, n int64, end bool) (late, over bool) {
	if c.goAwaySent && id > c.goAwayLast && id%2 == 1 {
		if n > c.goAwayWindow {
			return true, true
		}
		c.goAwayWindow -= n
		return true, false
	}
	i, ok := c.resetOpenSlot[id]
	if !ok {
		return false, false
	}
	e := &c.resetOpen[i]
	if n > e.window {
		return true, true
	}
	e.window -= n
	if end {
		e.id = 0
		delete(c.resetOpenSlot, id)
	}
	return true, false
}

// connError ends the connection with a GOAWAY carrying code.
func (c *conn) connError(code http2.ErrCode) action {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connErrorLocked(code)
}

func (c *conn) connErrorLocked(code http2.ErrCode) action {
	if !c.closing {
		c.nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		c.writeRefresh = time.Now().Add(time.Hour) // deadlineWriter must not lift it
		c.fr.WriteGoAway(c.lastStreamLocked(), code, nil)
		c.dirty = true
		c.flushLocked()
		c.goAwaySent = true
		c.closing = true
	}
	return stopReading
}

// goAwayLocked sends a GOAWAY without error: streams already open are served, no new one is.
func (c *conn) goAwayLocked() {
	if c.goAwaySent || c.closing {
		return
	}
	c.goAwaySent = true
	c.goAwayLast = c.maxClientID
	c.goAwayWindow = c.recvWindow
	c.fr.WriteGoAway(c.maxClientID, http2.ErrCodeNo, nil)
	c.dirty = true
	c.flushLocked()
	c.maybeCloseLocked()
}

// lastStreamLocked is the last stream id a GOAWAY may name: it may not grow (RFC 9113,
// section 6.8), and streams opened after the first GOAWAY were ignored.
func (c *conn) lastStreamLocked() uint32 {
	if c.goAwaySent {
		return c.goAwayLast
	}
	return c.maxClientID
}

// startGracefulShutdown is the server's Shutdown reaching this connection.
func (c *conn) startGracefulShutdown() {
	c.mu.Lock()
	if c.started {
		c.goAwayLocked()
	} else {
		c.shutdownAsked = true // the server's first frame must be its SETTINGS
	}
	c.mu.Unlock()
}

// maybeCloseLocked ends a connection that sent its GOAWAY once its last stream is done: the
// reader goes on reading, and dropping, what the client sent until lingerTimeout or the
// client's close, then tears down.
func (c *conn) maybeCloseLocked() {
	if c.goAwaySent && !c.lingering && len(c.streams) == 0 && c.running == 0 && len(c.queue) == 0 {
		c.flushLocked()
		c.lingering = true
		c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	}
}

// teardown ends the connection after the reader stopped: every stream is closed, every
// handler has returned when it returns.
func (c *conn) teardown() {
	c.nc.Close() // first, so that no writer stays blocked holding mu
	c.mu.Lock()
	c.closing = true
	for _, st := range c.streams {
		c.closeStreamLocked(st, errStreamClosed)
	}
	for _, st := range c.queue {
		st.cancel()
	}
	c.queue = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	c.timer.Stop()
	c.cancel() // handlers of streams already ended may still wait on their contexts
	c.handlers.Wait()
	close(c.done)
}

// flushLocked writes what is gathered.
func (c *conn) flushLocked() {
	if !c.dirty {
		return
	}
	c.dirty = false
	c.bw.Flush() // an error is kept by deadlineWriter
}

// writeHeaderBlockLocked sends an encoded header block for st, in CONTINUATION frames
// beyond the client's frame size.
func (c *conn) writeHeaderBlockLocked(st *stream, block []byte, endStream bool) {
	first := true
	for first || len(block) > 0 {
		chunk := block
		if len(chunk) > int(c.peerMaxFrame) {
			chunk = chunk[:c.peerMaxFrame]
		}
		block = block[len(chunk):]
		if first {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(block) == 0})
		} else {
			c.fr.WriteContinuation(st.id, len(block) == 0, chunk)
		}
		first = false
	}
	c.dirty = true
}

// writeDataLocked sends p on st as DATA frames within the flow-control windows, waiting for
// the client's WINDOW_UPDATE when they are spent; end sets END_STREAM on the last frame. It
// returns how many bytes of p it framed, also when it fails: those the client's window took,
// which went out (it flushes before each wait for more), and which the access log counts.
func (c *conn) writeDataLocked(st *stream, p []byte, end bool) (int, error) {
	var waitUntil time.Time   // while waiting for window: when the client's time is up
	var waitTimer *time.Timer // wakes the wait then
	defer func() {
		if waitTimer != nil {
			waitTimer.Stop()
		}
	}()
	sent := 0
	for {
		if st.reset || c.closing {
			return sent, errStreamClosed
		}
		if c.werr != nil {
			return sent, c.werr
		}
		if len(p) == 0 {
			// END_STREAM alone costs no window (and the window may be negative).
			c.writeDataFrameLocked(st.id, nil, end)
			return sent, nil
		}
		n := int64(len(p))
		n = min(n, int64(c.peerMaxFrame), c.sendWindow, st.sendWindow)
		if n <= 0 {
			// The window is spent: the client must see what we sent to grant more, and
			// the reader must run to hear it. A client that grants none for the write
			// timeout has stopped reading this stream.
			if now := time.Now(); waitUntil.IsZero() {
				waitUntil = now.Add(c.srv.writeTimeout())
				if waitTimer == nil {
					waitTimer = time.AfterFunc(c.srv.writeTimeout(), func() {
						c.mu.Lock()
						c.cond.Broadcast()
						c.mu.Unlock()
					})
				} else {
					waitTimer.Reset(c.srv.writeTimeout())
				}
			} else if now.After(waitUntil) {
				c.resetLocked(st.id, http2.ErrCodeCancel)
				return sent, errWindowTimeout
			}
			c.handoffLocked(st)
			c.flushLocked()
			c.cond.Wait()
			continue
		}
		waitUntil = time.Time{} // the client granted window: a slow reader, not a stopped one
		chunk := p[:n]
		p = p[n:]
		last := end && len(p) == 0
		c.writeDataFrameLocked(st.id, chunk, last)
		c.sendWindow -= n
		st.sendWindow -= n
		sent += int(n)
		if len(p) == 0 {
			return sent, nil
		}
		if c.bw.Buffered() == 0 {
			// A large body: let the reader in between frames.
			c.mu.Unlock()
			c.mu.Lock()
		}
	}
}

// writeDataFrameLocked writes one DATA frame straight into the buffer (the Framer would
// copy the payload once more).
func (c *conn) writeDataFrameLocked(id uint32, p []byte, end bool) {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	// The frame header is built in the connection's own array: a local one escapes to the
	// heap, as bufio may hand a write to the connection without copying it.
	c.frameHdr = [9]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), flags, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	c.bw.Write(c.frameHdr[:])
	c.bw.Write(p)
	c.dirty = true
}

// deadlineWriter is the connection's output: every write has Server.WriteTimeout to go out. The
// deadline is moved only when half of it has passed, so a busy connection seldom pays for it.
type deadlineWriter struct{ c *conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	c := w.c // mu is held: bw is only used under it
	if now := time.Now(); now.After(c.writeRefresh) {
		d := c.srv.writeTimeout()
		c.nc.SetWriteDeadline(now.Add(d))
		c.writeRefresh = now.Add(d / 2)
	}
	n, err := c.nc.Write(p)
	if err != nil && c.werr == nil {
		c.werr = err
		c.nc.Close() // the reader sees it and tears down
	}
	return n, err
}
