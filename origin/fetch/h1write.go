package fetch

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeRequest writes req as Request.Write does, byte for byte, for the requests the edge sends
// (GET or HEAD, no body, no trace of the writing): the request line, Host, User-Agent (net/http's
// when the header has none, none when it is empty), then the other fields sorted by name. Its
// formatting with fmt and its pooled sorter cost a miss more than the writing itself (issue 15).
// Anything else goes to Request.Write. req's header was validated (RoundTrip), so no value holds
// a line break for Request.Write to replace.
func writeRequest(bw *bufio.Writer, req *http.Request, trace *httptrace.ClientTrace) error {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if method != http.MethodGet && method != http.MethodHead || req.Close || req.ContentLength != 0 ||
		trace != nil && (trace.WroteHeaderField != nil || trace.WroteHeaders != nil || trace.WroteRequest != nil) ||
		!plainHost(host) {
		return req.Write(bw) // it calls the trace's WroteHeaderField, WroteHeaders and WroteRequest
	}
	uri := req.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if b := uri[i]; b < ' ' || b == 0x7f {
			return req.Write(bw) // which refuses it
		}
	}
	ua := "Go-http-client/1.1" // what Request.Write sends when the header has none
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = textproto.TrimString(v[0])
		}
	}
	var buf [32]string
	keys := buf[:0]
	for k := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // Request.Write leaves these out of the header it copies
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	for _, k := range keys {
		for _, v := range req.Header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n") // a bufio.Writer's errors are sticky: this one says
	return err
}

// plainHost reports whether Request.Write would send host as it is: ASCII (no IDNA), a valid
// Host field, no IPv6 zone to remove.
func plainHost(host string) bool {
	// ValidHostHeader refuses every byte >= 0x80; '%' it allows.
	return strings.IndexByte(host, '%') < 0 && httpguts.ValidHostHeader(host)
}
