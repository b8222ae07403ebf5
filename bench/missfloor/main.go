// Command missfloor is the least a Go HTTP/1.1 caching proxy does on a miss, as a measuring
// stick for the edge's miss path (bench/miss-ab.sh with FLOOR=1; docs/benchmarks.md,
// "Twentieth pass"): read a request head, take a kept-alive connection to the one origin, send
// a bare GET, read the answer's head and its Content-Length body, keep the whole answer in a
// map under Host and target, and write it to the client; a second request for the same target
// is written from the map, with X-Cache-Status: HIT added.
//
// It is not a cache anyone should run: no RFC 9111 (everything is kept, forever), no request
// collapsing, no limits, no timeouts, no validation of what either side sends beyond what it
// needs to find the end of a message, one origin for every host. What it measures is what
// Go's runtime, the kernel and this machine charge for a miss, without the edge's work.
//
//	go run ./bench/missfloor -listen 127.0.0.84:18080 -origin 127.0.0.71:18171
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.84:18080", "address to serve on")
	origin := flag.String("origin", "127.0.0.71:18171", "origin host:port (plain HTTP/1.1)")
	maxBytes := flag.Int64("max-bytes", 1<<30, "forget every stored answer when they hold more than this")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, newProxy(*origin, *maxBytes)); err != nil {
		slog.Error("missfloor", "err", err)
		os.Exit(1)
	}
}

// run serves p on addr until ctx ends, then closes the listener and every connection.
func run(ctx context.Context, addr string, p *proxy) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return p.serve(ctx, ln)
}

// proxy is the floor's whole state: the stored answers and the idle origin connections.
type proxy struct {
	origin   string
	maxBytes int64

	mu     sync.Mutex
	stored map[string]answer
	bytes  int64 // held by stored

	idle chan *upstream // kept-alive origin connections

	wg    sync.WaitGroup
	conns sync.Map // net.Conn -> struct{}: every open connection, closed at shutdown
}

// answer is a stored answer: its head without the blank line that ends it, and its body.
type answer struct {
	head []byte
	body []byte
}

type upstream struct {
	c  net.Conn
	br *bufio.Reader
}

func newProxy(origin string, maxBytes int64) *proxy {
	return &proxy{origin: origin, maxBytes: maxBytes, stored: map[string]answer{}, idle: make(chan *upstream, 256)}
}

// serve accepts connections on ln until ctx ends, each served on a goroutine of its own.
func (p *proxy) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		p.conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
	})
	defer stop()
	defer p.wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				p.closeIdle()
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		p.track(c)
		p.wg.Go(func() {
			defer p.untrack(c)
			p.serveConn(c)
		})
	}
}

func (p *proxy) track(c net.Conn)   { p.conns.Store(c, struct{}{}) }
func (p *proxy) untrack(c net.Conn) { p.conns.Delete(c); c.Close() }

// closeIdle closes the kept-alive origin connections.
func (p *proxy) closeIdle() {
	for {
		select {
		case u := <-p.idle:
			p.untrack(u.c)
		default:
			return
		}
	}
}

// serveConn answers the requests of one client connection, one after another, until it ends
// or sends something the floor does not read (a body, a request line it cannot split).
func (p *proxy) serveConn(c net.Conn) {
	br := bufio.NewReaderSize(c, 4096)
	out := make([]byte, 0, 4096)
	for {
		host, target, err := readRequest(br)
		if err != nil {
			return
		}
		key := host + target
		p.mu.Lock()
		a, hit := p.stored[key]
		p.mu.Unlock()
		if !hit {
			if a, err = p.fetch(host, target); err != nil {
				c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				return
			}
			p.store(key, a)
		}
		out = append(out[:0], a.head...)
		if hit {
			out = append(out, "X-Cache-Status: HIT\r\n"...)
		}
		out = append(out, "\r\n"...)
		out = append(out, a.body...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// store keeps a under key. Past maxBytes it forgets everything first: the crudest eviction,
// enough to keep a long run of unique URLs within memory.
func (p *proxy) store(key string, a answer) {
	n := int64(len(key) + len(a.head) + len(a.body))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+n > p.maxBytes {
		clear(p.stored)
		p.bytes = 0
	}
	p.stored[key] = a
	p.bytes += n
}

var errRequest = errors.New("request the floor does not read")

// readRequest reads one request head and returns its Host field and target. A request with a
// body is refused: the floor would not know where the next request starts.
func readRequest(br *bufio.Reader) (host, target string, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return "", "", err
	}
	sp1, sp2 := bytes.IndexByte(line, ' '), bytes.LastIndexByte(line, ' ')
	if sp1 < 0 || sp2 <= sp1+1 || !bytes.HasPrefix(line, []byte("GET ")) {
		return "", "", errRequest
	}
	target = string(line[sp1+1 : sp2])
	for {
		l, err := br.ReadSlice('\n')
		if err != nil {
			return "", "", err
		}
		if len(bytes.TrimRight(l, "\r\n")) == 0 {
			return host, target, nil
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return "", "", errRequest
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			host = string(bytes.TrimSpace(value))
		case bytes.EqualFold(name, []byte("Content-Length")), bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return "", "", errRequest
		}
	}
}

// fetch asks the origin for target on a kept-alive connection (or a new one) and reads the
// whole answer. The answer must have a Content-Length; its Connection field is dropped.
func (p *proxy) fetch(host, target string) (answer, error) {
	var u *upstream
	select {
	case u = <-p.idle:
	default:
		c, err := net.Dial("tcp", p.origin)
		if err != nil {
			return answer{}, fmt.Errorf("dial origin %s: %w", p.origin, err)
		}
		p.track(c)
		u = &upstream{c: c, br: bufio.NewReaderSize(c, 4096)}
	}
	a, err := u.exchange(host, target)
	if err != nil {
		p.untrack(u.c)
		return answer{}, fmt.Errorf("fetch %s from %s: %w", target, p.origin, err)
	}
	select {
	case p.idle <- u:
	default:
		p.untrack(u.c)
	}
	return a, nil
}

// exchange sends one GET on u and reads its answer.
func (u *upstream) exchange(host, target string) (answer, error) {
	req := make([]byte, 0, 64+len(host)+len(target))
	req = append(req, "GET "...)
	req = append(req, target...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, host...)
	req = append(req, "\r\n\r\n"...)
	if _, err := u.c.Write(req); err != nil {
		return answer{}, err
	}
	var a answer
	length := -1
	for {
		l, err := u.br.ReadSlice('\n')
		if err != nil {
			return answer{}, err
		}
		if len(bytes.TrimRight(l, "\r\n")) == 0 {
			break
		}
		name, value, _ := bytes.Cut(l, []byte(":"))
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(bytes.TrimSpace(value))); err != nil || length < 0 {
				return answer{}, fmt.Errorf("bad Content-Length %q", bytes.TrimSpace(value))
			}
			a.head = append(a.head, l...)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return answer{}, errors.New("chunked answer")
		case bytes.EqualFold(name, []byte("Connection")):
			// dropped: the floor keeps its connections
		default:
			a.head = append(a.head, l...)
		}
	}
	if length < 0 {
		return answer{}, errors.New("answer without Content-Length")
	}
	a.body = make([]byte, length)
	if _, err := io.ReadFull(u.br, a.body); err != nil {
		return answer{}, fmt.Errorf("read body: %w", err)
	}
	return a, nil
}
