package dnsroute

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestRestartUnderLoad: resolvers querying while `meridian dns` is replaced by a new process on
// the same port (SO_REUSEPORT) get every answer. Like real resolvers they retry a query that
// got no answer in time (at most twice): a UDP query in the old socket's queue at the instant
// it closes is lost to the kernel and answered on the retry.
func TestRestartUnderLoad(t *testing.T) {
	dir := t.TempDir()
	bin := proctest.Build(t)
	probe, err := net.ListenPacket("udp", "127.0.2.201:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	config := binaryConfig(t, dir, addr, "")

	old := proctest.Start(t, bin, "dns serving", "dns", "--config", config)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.example.", dns.TypeA)
	load := proctest.RunLoad(ctx, 20, func(context.Context) error {
		var err error
		for range 3 {
			var r *dns.Msg
			if r, _, err = c.Exchange(m.Copy(), addr); err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
				return nil
			}
		}
		if err == nil {
			err = errors.New("no answer")
		}
		return err
	})
	load.WaitFor(t, 500, 5*time.Second)
	next := proctest.Replace(t, old, "dns serving")
	load.Finish(t)
	proctest.Stop(t, next)
}
