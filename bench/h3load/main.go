// Command h3load is a small HTTP/3 load generator (quic-go) for bench/http.sh: C workers
// share T connections and fetch one URL for a fixed time, then it prints requests/s and
// latency percentiles as JSON.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/http3"
)

func main() {
	url := flag.String("url", "", "URL to fetch (https://host:port/path)")
	host := flag.String("host", "", "Host (and SNI) to send")
	workers := flag.Int("c", 64, "concurrent requests")
	conns := flag.Int("t", 4, "QUIC connections")
	dur := flag.Duration("d", 10*time.Second, "duration")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "h3load: -url is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	clients := make([]*http.Client, *conns)
	for i := range clients {
		tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: *host}}
		defer tr.Close()
		clients[i] = &http.Client{Transport: tr}
	}
	var ok, failed atomic.Int64
	lat := make([][]time.Duration, *workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				if *host != "" {
					req.Host = *host
				}
				t0 := time.Now()
				r, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, r.Body)
					r.Body.Close()
				}
				if ctx.Err() != nil {
					return
				}
				if err != nil || r.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"rps": float64(ok.Load()) / elapsed, "errors": failed.Load(), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
	})
}
