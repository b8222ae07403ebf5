package edge

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkFlashCrowdLargeObject measures memory while 200 clients ask at once for one
// uncached 256 MiB object (cached in 2 MiB slices, first fill streamed to every client): the
// peak heap in use (sampled every 10 ms), the process's peak RSS (VmHWM: origin, edge and
// clients share the process) and the origin's body bytes per crowd. The store is bounded at
// 128 MiB, less than the object, so what is held beyond it is the in-flight budget.
func BenchmarkFlashCrowdLargeObject(b *testing.B) {
	const size, clients, cacheBytes = 256 << 20, 200, 128 << 20
	s := newSingleTB(b, func(c *Config) { c.Cache.MaxBytes = cacheBytes })
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	b.Cleanup(c.CloseIdleConnections)
	var peakHeap uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // owned by the benchmark: stopped and waited for below
		defer close(sampled)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, ms.HeapInuse)
			}
		}
	}()
	var originBytes int64
	i := 0
	for b.Loop() {
		i++
		path := "/crowd/" + strconv.Itoa(i)
		target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
		before := s.origin.BytesSent(path)
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for range clients {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+s.edge.Addr()+target, nil)
				req.Host = testHost
				r, err := c.Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer r.Body.Close()
				n, err := io.Copy(io.Discard, r.Body)
				if err == nil && n != size {
					err = fmt.Errorf("got %d bytes, want %d", n, size)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		originBytes += s.origin.BytesSent(path) - before
	}
	close(stop)
	<-sampled
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(vmHWM())/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(originBytes)/float64(i)/(1<<20), "origin-MiB/crowd")
}

// vmHWM is the process's peak resident set size from /proc (0 where there is none).
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			kb, _ := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
			return kb << 10
		}
	}
	return 0
}
