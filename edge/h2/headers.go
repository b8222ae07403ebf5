package h2

import (
	"errors"
	"strings"
	"unicode"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock decodes a request's header block, a HEADERS frame and its CONTINUATIONs, into
// a MetaHeadersFrame the connection owns and reuses. It applies the checks x/net's Framer
// applies when given ReadMetaHeaders (RFC 9113, section 8.2: valid names and values, pseudo
// fields first, once each and of one kind, the header list size), with the same outcomes
// (a stream error, or a connection error for a compression failure or a block far over the
// limit), but for a list over the limit, which it reads to its end within twice the limit, a
// field longer than the limit included, keeping the pseudo-fields past the limit, for a 431
// (x/net's ends the connection at the next CONTINUATION frame or at a string over the
// limit, and drops those fields); and without the Framer's allocations per request: the
// frame, a field slice grown by append, and the emit closure with the variables it captures.
// At a full store those allocations cost more in collections than in allocating (issue 15).
//
// The frame it returns, and its Fields, are valid until the next call of read: the
// connection's reader uses them before it reads again.
type headerBlock struct {
	dec     *hpack.Decoder
	maxList uint32

	meta           http2.MetaHeadersFrame
	fields         []hpack.HeaderField
	remain         uint32 // of the header list size, for the fields other than Trailer
	trailersRemain uint32 // for the Trailer field's names, counted apart as x/net does
	sawRegular     bool
	invalid        error
	blockLen       int64 // encoded bytes of the block so far
	// emptyFrags counts CONTINUATION frames that carried nothing, over the connection: they
	// cost work and bring nothing (CVE-2019-9518), and no size limit ever stops them.
	emptyFrags int
}

var (
	errPseudoAfterRegular = errors.New("h2: pseudo header field after a regular one")
	errFieldName          = errors.New("h2: invalid header field name")
	errFieldValue         = errors.New("h2: invalid header field value")
	errPseudoName         = errors.New("h2: unknown pseudo header field")
	errPseudoDuplicate    = errors.New("h2: duplicate pseudo header field")
	errPseudoMix          = errors.New("h2: request and response pseudo header fields mixed")
)

func newHeaderBlock(maxList uint32) *headerBlock {
	b := &headerBlock{maxList: maxList}
	b.dec = hpack.NewDecoder(4096, b.emit)
	// A string as long as a whole block may be (read's budget): one field over the limit
	// is decoded, then dropped, and answered 431. At the limit itself, the decoder failed
	// with a compression error, which ended the connection.
	b.dec.SetMaxStringLength(int(min(2*int64(maxList), 1<<30)))
	return b
}

// read decodes the block that hf starts, reading its CONTINUATION frames from fr.
func (b *headerBlock) read(fr *http2.Framer, hf *http2.HeadersFrame) (*http2.MetaHeadersFrame, error) {
	b.meta = http2.MetaHeadersFrame{HeadersFrame: hf}
	b.fields = b.fields[:0]
	b.remain, b.trailersRemain = b.maxList, b.maxList
	b.sawRegular, b.invalid = false, nil
	b.blockLen = 0
	b.dec.SetEmitEnabled(true)
	var hc interface {
		HeaderBlockFragment() []byte
		HeadersEnded() bool
	} = hf
	for {
		frag := hc.HeaderBlockFragment()
		// Far over the limit, or more after an invalid field (whose size stopped being
		// counted): the connection ends rather than decode what will be refused. The whole
		// block counts, not each fragment: bytes that decode to no field (size updates)
		// could otherwise come in CONTINUATION frames for ever. A block over the limit
		// (Truncated) is read to its end, for its 431, while it stays within twice the limit
		// in all: it ended the connection at its next CONTINUATION frame, as x/net's
		// server does, and a Go client's 70 KiB field got a GOAWAY, not its 431. Twice the
		// limit bounds every block, also before the limit is passed: a list within the limit
		// (and a Trailer field within its own) encodes in fewer bytes than it counts, and one
		// field (a name and a value, each up to the decoder's string limit) held up to four
		// times the limit in the decoder before it was found over, and was answered 431.
		b.blockLen += int64(len(frag))
		budget := 2 * int64(b.maxList)
		if !b.meta.Truncated {
			budget = min(budget, 2*int64(b.remain+b.trailersRemain))
		}
		if b.blockLen > budget || b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if len(frag) == 0 && hc != hf {
			if b.emptyFrags++; b.emptyFrags > maxEmptyData {
				return nil, http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
			}
		}
		if _, err := b.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if hc.HeadersEnded() {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		hc = f.(*http2.ContinuationFrame) // the Framer returns nothing else here (checkFrameOrder)
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid == nil {
		b.meta.Fields = b.fields
		b.invalid = checkPseudos(b.meta.PseudoFields())
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	return &b.meta, nil
}

// emit takes one decoded field.
func (b *headerBlock) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.invalid = errFieldValue
	}
	if strings.HasPrefix(hf.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !validWireName(hf.Name) {
			b.invalid = errFieldName
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	remain, size := &b.remain, hf.Size()
	if hf.Name == "trailer" {
		// Each declared trailer name counts as a field of its own.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		remain, size = &b.trailersRemain, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *remain {
		b.meta.Truncated = true
		b.remain, b.trailersRemain = 0, 0
		if !b.sawRegular {
			// A pseudo-field is kept past the limit, and those after it: the request they
			// make is answered 431 (within read's budget of twice the limit, which bounds
			// them). A :path over the limit, dropped, left a request without one, reset with
			// PROTOCOL_ERROR, which Go's client (sending such a URL before it has read the
			// SETTINGS) retried on new connections. The regular fields are dropped.
			b.fields = append(b.fields, hf)
			return
		}
		b.dec.SetEmitEnabled(false)
		return
	}
	*remain -= size
	b.fields = append(b.fields, hf)
}

// validWireName reports whether name is a token in lower case, as HTTP/2 requires.
func validWireName(name string) bool {
	return httpguts.ValidHeaderFieldName(name) && !strings.ContainsFunc(name, unicode.IsUpper)
}

// checkPseudos checks a request's pseudo fields: known names, each once, not a response's
// mixed in.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return errPseudoName
		}
		for _, prev := range pf[:i] {
			if prev.Name == hf.Name {
				return errPseudoDuplicate
			}
		}
	}
	if request && response {
		return errPseudoMix
	}
	return nil
}
