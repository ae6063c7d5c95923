package main

// The gateway's resources at idle, read from GET /metrics and /proc.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// resources are the gateway's figures from GET /metrics, with what the
// harness itself holds at that moment.
type resources struct {
	goroutines   float64
	heapInuse    float64
	heapGoal     float64
	rss          float64
	fds          float64
	streams      float64 // agentapi_streams_in_flight
	proxyRoutine int64   // goroutines of the harness's Redis proxy
	proxyFDs     int64   // descriptors of the proxy (two per proxied connection)
	proxyConns   int64   // proxied connections (each also holds one of the gateway's descriptors)
	upActive     int64   // fake upstream requests still being answered
	upConns      int64   // fake upstream connections open
	sqliteFDs    int     // descriptors open on the gateway's SQLite files (-1 unknown)
}

// adjustedGoroutines leaves out the Redis proxy's goroutines, which are
// the harness's and follow the gateway's Redis pool.
func (r resources) adjustedGoroutines() float64 { return r.goroutines - float64(r.proxyRoutine) }

// adjustedFDs leaves out the proxied Redis connections (the proxy's two
// descriptors and the gateway's pooled one for each) and the SQLite files,
// which are judged on their own.
func (r resources) adjustedFDs() float64 {
	return r.fds - float64(r.proxyFDs) - float64(r.proxyConns) - float64(max(r.sqliteFDs, 0))
}

// sqliteFDBound is the most descriptors the gateway's SQLite pools can
// hold: one writer and up to four readers (store.Open on two CPUs), each
// with the database, its WAL and its shared-memory file.
const sqliteFDBound = (1 + 4) * 3

// countFDsUnder counts this process's descriptors open on files under dir.
func countFDsUnder(dir string) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// sampleMetrics reads GET /metrics.
func (s *soak) sampleMetrics(ctx context.Context) (resources, error) {
	var r resources
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.gw.url+"/metrics", nil)
	if err != nil {
		return r, err
	}
	resp, err := s.scrape.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	want := map[string]*float64{
		"go_goroutines":                 &r.goroutines,
		"go_memstats_heap_inuse_bytes":  &r.heapInuse,
		"go_memstats_next_gc_bytes":     &r.heapGoal,
		"process_resident_memory_bytes": &r.rss,
		"process_open_fds":              &r.fds,
		"agentapi_streams_in_flight":    &r.streams,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// Only unlabelled samples are read: "name value".
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if p := want[name]; p != nil {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return r, fmt.Errorf("GET /metrics: %s: %w", name, err)
			}
			*p = v
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	if found < len(want)-1 { // streams_in_flight may be absent in older builds
		return r, fmt.Errorf("GET /metrics: found %d of the %d series read", found, len(want))
	}
	if s.proxy != nil {
		r.proxyRoutine, r.proxyFDs, r.proxyConns = s.proxy.Goroutines(), s.proxy.FDs(), int64(s.proxy.Links())
	}
	r.upActive, r.upConns = s.up.Active(), s.up.Conns()
	r.sqliteFDs = countFDsUnder(s.dataDir)
	return r, nil
}

// idle waits for everything started to end, closes the harness's idle
// keep-alive connections (its clients' and the fake upstream's), lets
// the gateway settle, and reads /metrics. It forces nothing inside the
// gateway: no GC, no cache or pool flush.
func (s *soak) idle(ctx context.Context) (resources, []string, error) {
	var problems []string
	limit := 2*s.o.upstreamTimeout + s.o.stall + 30*time.Second
	if !s.drain(limit) {
		problems = append(problems, fmt.Sprintf("%d requests still unanswered %s after the load stopped", s.running.Load(), limit))
	}
	// Work the gateway is still doing for answered requests (an upstream
	// call it has yet to cancel, a stream it has yet to close) is given
	// the same time to end; what is left then is reported.
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		r, err := s.sampleMetrics(ctx)
		if err == nil && r.upActive == 0 && r.streams == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.plain.CloseIdleConnections()
	s.streaming.CloseIdleConnections()
	s.up.CloseIdle()
	sleepUntil(ctx, time.Now().Add(s.o.settle))
	r, err := s.sampleMetrics(ctx)
	return r, problems, err
}

func mib(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }

func (r resources) line() string {
	return fmt.Sprintf("goroutines %.0f, heap in use %s MiB, heap goal %s MiB, RSS %s MiB, fds %.0f",
		r.goroutines, mib(r.heapInuse), mib(r.heapGoal), mib(r.rss), r.fds)
}
