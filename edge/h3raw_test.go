package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
)

// h3Raw is an HTTP/3 connection to the edge driven frame by frame, for requests quic-go's
// client will not send: each request's HEADERS frame is built from the fields given.
type h3Raw struct {
	t    *testing.T
	conn *quic.Conn
}

// HTTP/3 frame types (RFC 9114, section 7.2).
const (
	h3FrameHeaders  = 0x1
	h3FrameSettings = 0x4
)

// dialH3Raw connects to addr and sends a SETTINGS frame holding settings (id, value pairs).
func dialH3Raw(t *testing.T, addr string, settings ...uint64) *h3Raw {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn := dialQUIC(ctx, t, addr, &quic.Config{})
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, err := conn.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	var payload []byte
	for _, v := range settings {
		payload = quicvarint.Append(payload, v)
	}
	b := quicvarint.Append(nil, 0x0) // the control stream's type
	b = quicvarint.Append(b, h3FrameSettings)
	b = quicvarint.Append(b, uint64(len(payload)))
	if _, err := ctrl.Write(append(b, payload...)); err != nil {
		t.Fatal(err)
	}
	return &h3Raw{t: t, conn: conn}
}

// h3Answer is what came back for a raw request: the final status and header, or the code
// the server reset the stream with (reset true).
type h3Answer struct {
	status int
	header http.Header
	reset  bool
	code   http3.ErrCode
}

// request sends a request without a body, fields as name, value pairs, and reads its answer.
func (c *h3Raw) request(fields ...string) h3Answer {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	str, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	str.SetDeadline(time.Now().Add(10 * time.Second))
	var block bytes.Buffer
	enc := qpack.NewEncoder(&block)
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(qpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	b := quicvarint.Append(nil, h3FrameHeaders)
	b = quicvarint.Append(b, uint64(block.Len()))
	if _, err := str.Write(append(b, block.Bytes()...)); err != nil {
		c.t.Fatal(err)
	}
	str.Close()
	br := bufio.NewReader(str)
	var a h3Answer
	for {
		typ, err := quicvarint.Read(br)
		if err == nil {
			var n uint64
			if n, err = quicvarint.Read(br); err == nil {
				payload := make([]byte, n)
				if _, err = io.ReadFull(br, payload); err == nil && typ == h3FrameHeaders && a.header == nil {
					a.status, a.header = decodeH3Head(c.t, payload)
				}
			}
		}
		if err == io.EOF {
			return a
		}
		if se, ok := errors.AsType[*quic.StreamError](err); ok {
			a.reset, a.code = true, http3.ErrCode(se.ErrorCode)
			str.CancelWrite(0)
			return a
		}
		if err != nil {
			c.t.Fatalf("reading the answer: %v", err)
		}
	}
}

// decodeH3Head decodes an answer's header block; an interim answer's (1xx) gives status 0.
func decodeH3Head(t *testing.T, block []byte) (int, http.Header) {
	t.Helper()
	h := http.Header{}
	status := 0
	dec := qpack.NewDecoder().Decode(block)
	for {
		f, err := dec()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("decoding an answer's header: %v", err)
		}
		if f.Name == ":status" {
			status = atoiOr0(f.Value)
			continue
		}
		h.Add(f.Name, f.Value)
	}
	if status < 200 {
		return 0, nil
	}
	return status, h
}
