package fleet_test

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// A URL that does not parse makes nats.Connect fail with url.Parse's error, which quotes the
// URL whole: the error the edge, the DNS server and control return must not carry its token.
func TestRedactErrorHidesToken(t *testing.T) {
	for _, u := range []string{"nats://s3cret%zz@127.0.0.1:4222", "nats://s3 cret@127.0.0.1:4222", "s3cret%zz@127.0.0.1:4222"} {
		_, err := nats.Connect(u, nats.RetryOnFailedConnect(true))
		if err == nil {
			t.Fatalf("connect %q: no error", u)
		}
		if msg := fmt.Errorf("connect to nats %s: %w", fleet.RedactURLs(u), fleet.RedactError(err)).Error(); strings.Contains(msg, "s3") {
			t.Errorf("connect %q: error carries the token: %s", u, msg)
		}
	}
}

// url.URL.String, which ConnectedUrl returns, leaves a comma in user information unescaped:
// one URL is redacted whole.
func TestRedactURLComma(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://tok,en@h:4222", "nats://xxxxx@h:4222"},
		{"nats://u:pa,ss@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://[::1]:4222", "nats://[::1]:4222"},
	} {
		if got := fleet.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://s3cret@10.0.0.1:4222", "nats://xxxxx@10.0.0.1:4222"},
		{"tls://edge:pa55@nats.example:4222", "tls://edge:xxxxx@nats.example:4222"},
		{"s3cret@10.0.0.1:4222", "xxxxx@10.0.0.1:4222"}, // nats.go takes host:port without a scheme
		{"nats://a@b@h:1/path", "nats://xxxxx@h:1/path"},
		{"nats://h:1/p@q", "nats://h:1/p@q"}, // an @ after the authority is not user information
		{"nats://tok@[::1]:4222", "nats://xxxxx@[::1]:4222"},
		{"wss://u:p@ss@[fe80::1%25eth0]:443", "wss://u:xxxxx@[fe80::1%25eth0]:443"},
		{"nats://t1@h1:4222, nats://u:p@h2:4222,nats://h3:4222",
			"nats://xxxxx@h1:4222, nats://u:xxxxx@h2:4222,nats://h3:4222"},
		{"", ""},
	} {
		if got := fleet.RedactURLs(tc.in); got != tc.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// lineWriter hands each log line to a channel, dropping lines once it is full so that a
// connection still logging after its test never blocks.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// awaitLine returns the first line from lines that contains msg.
func awaitLine(t *testing.T, lines <-chan string, msg string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, msg) {
				return l
			}
		case <-timeout:
			t.Fatalf("no log line with %q within 10 s", msg)
			return ""
		}
	}
}

// A token in the NATS URL (nats://TOKEN@host) is a credential: the connection's log lines
// must not carry it, whether the server is unreachable or connected (url.URL.Redacted, which
// nats.go's ConnectedUrlRedacted uses, hides only passwords).
func TestConnectLoggingHidesToken(t *testing.T) {
	for _, token := range []string{"s3cret-token-7f2a", "s3cret,token-7f2a"} {
		t.Run(token, func(t *testing.T) { connectLoggingHidesToken(t, token) })
	}
}

func connectLoggingHidesToken(t *testing.T, token string) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, Authorization: token, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats server not ready")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now: connecting is refused

	for _, tc := range []struct{ name, url, msg string }{
		{"unreachable", fmt.Sprintf("nats://%s@%s", strings.ReplaceAll(token, ",", "%2C"), closed), "nats unreachable"},
		{"connected", fmt.Sprintf("nats://%s@%s", strings.ReplaceAll(token, ",", "%2C"), ns.Addr()), "nats connected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := make(lineWriter, 64)
			log := slog.New(slog.NewTextHandler(lines, nil))
			opts := append(fleet.ConnectLogging(log, tc.url), nats.RetryOnFailedConnect(true),
				nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
			nc, err := nats.Connect(tc.url, opts...)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer nc.Close()
			line := awaitLine(t, lines, tc.msg)
			if strings.Contains(line, "s3cret") {
				t.Errorf("log line carries the token: %s", line)
			}
			if !strings.Contains(line, "xxxxx@") {
				t.Errorf("log line does not name the server, redacted: %s", line)
			}
		})
	}
}

// TestLogDisconnectsNotOwnClose: a connection's own Close is not logged as a disconnect. nats.go
// reports it too, with a nil error, and every clean stop of control, an edge or a DNS server
// warned "nats disconnected". Losing the server still is logged.
func TestLogDisconnectsNotOwnClose(t *testing.T) {
	s := natstest.Start(t)
	var w logtest.Warnings
	closed := make(chan struct{})
	nc, err := nats.Connect(s.URL(), append(s.Options(natsauth.Control()), fleet.LogDisconnects(slog.New(&w)),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))...)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	select {
	case <-closed: // nats.go runs the callbacks in turn: the disconnect's came before
	case <-time.After(10 * time.Second):
		t.Fatal("closed handler not called within 10 s of Close")
	}
	if n := w.Count("nats disconnected"); n != 0 {
		t.Errorf("own Close logged %d disconnects, want none", n)
	}

	var lost logtest.Warnings
	natstest.ConnectURL(t, s.URL(), append(s.Options(natsauth.Control()), fleet.LogDisconnects(slog.New(&lost)))...)
	s.Stop()
	wait.For(t, 10*time.Second, "the lost server's disconnect logged", func() bool { return lost.Count("nats disconnected") == 1 })
}
