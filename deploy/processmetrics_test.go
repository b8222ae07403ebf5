package deploy_test

import (
	"sort"
	"testing"
)

// TestEveryServerExportsProcessMetrics: the process and Go runtime metrics operators' alerts
// and the dashboard read (memory, open descriptors against their limit, CPU, goroutines) are
// on the /metrics of every server a fleet runs, scraped as Prometheus scrapes it. The edge
// had the Go collector only and the DNS server neither.
func TestEveryServerExportsProcessMetrics(t *testing.T) {
	scrapes := scrapeFleet(t)
	jobs := make([]string, 0, len(scrapes))
	for job := range scrapes {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		for _, m := range []string{
			"process_resident_memory_bytes", "process_open_fds", "process_max_fds",
			"process_cpu_seconds_total", "process_start_time_seconds",
			"go_goroutines", "go_memstats_heap_inuse_bytes",
		} {
			if _, ok := scrapes[job][m]; !ok {
				t.Errorf("%s: no %s in its /metrics", job, m)
			}
		}
	}
	if len(jobs) != 3 {
		t.Errorf("scraped %v, want the edge, the DNS server and control", jobs)
	}
}
