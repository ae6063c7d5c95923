package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// phase is what one load phase against one target measured.
type phase struct {
	sent    int
	ok      int
	lat     []time.Duration // every request's latency, sorted
	elapsed time.Duration

	allocs     uint64 // heap objects allocated by the whole process during the phase
	allocBytes uint64
	cpu        time.Duration // user+system CPU time of the whole process during the phase
	peakRSSKB  int64         // VmHWM of the process during the phase; -1 if unknown
}

func (p *phase) successRate() float64 {
	if p.sent == 0 {
		return 0
	}
	return float64(p.ok) / float64(p.sent)
}

func (p *phase) quantile(q float64) time.Duration { return quantile(p.lat, q) }

// quantile is the nearest-rank quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// meter brackets a phase with the process's allocation counters and resets
// the kernel's peak-RSS mark (VmHWM) so the peak belongs to this phase.
type meter struct {
	samples []metrics.Sample
	cpu0    time.Duration
}

func newMeter() *meter {
	return &meter{samples: []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}}
}

func (m *meter) start() (uint64, uint64) {
	resetPeakRSS()
	metrics.Read(m.samples)
	m.cpu0 = processCPU()
	return m.samples[0].Value.Uint64(), m.samples[1].Value.Uint64()
}

func (m *meter) stop(p *phase, objs, bytes uint64) {
	p.cpu = processCPU() - m.cpu0
	metrics.Read(m.samples)
	p.allocs = m.samples[0].Value.Uint64() - objs
	p.allocBytes = m.samples[1].Value.Uint64() - bytes
	p.peakRSSKB = peakRSSKB()
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the first field of /proc/loadavg, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// resetPeakRSS asks Linux to restart VmHWM from the current RSS ("5" in
// clear_refs, since Linux 4.0). Elsewhere it does nothing.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSSKB reads VmHWM from /proc/self/status, or -1.
func peakRSSKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// openLoop sends requests at a fixed rate for d, whatever the answers' pace:
// vegeta starts more workers when all are busy, so a slow target meets more
// concurrent requests instead of fewer (no coordinated omission).
func openLoop(t *target, rate int, d time.Duration, seq *atomic.Uint64, m *meter) phase {
	tr := func(tg *vegeta.Target) error {
		tg.Method = http.MethodPost
		tg.URL = t.url
		tg.Body = t.body(seq.Add(1))
		tg.Header = t.header
		return nil
	}
	atk := vegeta.NewAttacker(vegeta.Client(t.client), vegeta.MaxBody(0), vegeta.Timeout(30*time.Second), vegeta.Workers(32))
	var p phase
	p.lat = make([]time.Duration, 0, int(float64(rate)*d.Seconds())+16)
	objs, bytes := m.start()
	start := time.Now()
	for res := range atk.Attack(vegeta.Targeter(tr), vegeta.Rate{Freq: rate, Per: time.Second}, d, t.id) {
		p.sent++
		if res.Error == "" && res.Code == http.StatusOK {
			p.ok++
		}
		p.lat = append(p.lat, res.Latency)
	}
	p.elapsed = time.Since(start)
	m.stop(&p, objs, bytes)
	slices.Sort(p.lat)
	return p
}

// labelled runs f with the pprof label key=value on its goroutine and on
// every goroutine started from it, connections' goroutines included, so a
// CPU profile of a run splits by what spent the time: the load of one
// target (load=<target id>) or one server (server=proxy, upstream, or the
// gateway's name). go tool pprof -tagfocus server=proxy shows one.
func labelled(key, value string, f func()) {
	pprof.Do(context.Background(), pprof.Labels(key, value), func(context.Context) { f() })
}

// closedLoop runs workers that each send the next request as soon as the
// previous one is answered, for d: the target's maximum throughput.
func closedLoop(t *target, workers int, d time.Duration, seq *atomic.Uint64, m *meter) phase {
	var (
		mu sync.Mutex
		p  phase
		wg sync.WaitGroup
	)
	objs, bytes := m.start()
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			sent, ok := 0, 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				good := t.hit(seq.Add(1))
				lat = append(lat, time.Since(t0))
				sent++
				if good {
					ok++
				}
			}
			mu.Lock()
			p.sent += sent
			p.ok += ok
			p.lat = append(p.lat, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	p.elapsed = time.Since(start)
	m.stop(&p, objs, bytes)
	slices.Sort(p.lat)
	return p
}

// hit sends one request and reports whether it got a 200 with a full body.
func (t *target) hit(n uint64) bool {
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(t.body(n)))
	if err != nil {
		return false
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return false
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err == nil && resp.StatusCode == http.StatusOK
}

// streamPhase is what a streaming phase measured.
type streamPhase struct {
	sent, ok int
	ttfb     []time.Duration // request start to the first event, sorted
	gaps     []time.Duration // between consecutive events of one stream, sorted
	elapsed  time.Duration
	stalls   int // gaps longer than the stall threshold
	peakRSS  int64
}

func (s *streamPhase) successRate() float64 {
	if s.sent == 0 {
		return 0
	}
	return float64(s.ok) / float64(s.sent)
}

// streamOnce opens one stream and timestamps each event as it arrives.
func (t *target) streamOnce(n uint64) (ttfb time.Duration, gaps []time.Duration, ok bool) {
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(t.body(n)))
	if err != nil {
		return 0, nil, false
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return 0, nil, false
	}
	r := bufio.NewReaderSize(resp.Body, 8<<10)
	var last time.Time
	done := false
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 && bytes.HasPrefix(line, []byte("data:")) {
			now := time.Now()
			if last.IsZero() {
				ttfb = now.Sub(start)
			} else {
				gaps = append(gaps, now.Sub(last))
			}
			last = now
			// Chat streams end with [DONE]; Responses streams with
			// their response.completed event.
			if bytes.HasPrefix(line, []byte("data: [DONE]")) || bytes.HasPrefix(line, []byte(`data: {"type":"response.completed"`)) {
				done = true
			}
		}
		if err != nil {
			break
		}
	}
	return ttfb, gaps, done
}

// streamLoad opens streams at a fixed rate for d (each in its own
// goroutine, so a slow one never delays the next), or, with rate 0, opens
// concurrent streams at once (spread over 200ms so the listen backlog is
// not the thing being measured) and waits for all of them.
func streamLoad(t *target, rate, concurrent int, d, stall time.Duration, seq *atomic.Uint64) streamPhase {
	var (
		mu sync.Mutex
		sp streamPhase
		wg sync.WaitGroup
	)
	launch := func() {
		wg.Go(func() {
			ttfb, gaps, ok := t.streamOnce(seq.Add(1))
			mu.Lock()
			defer mu.Unlock()
			sp.sent++
			if !ok {
				return
			}
			sp.ok++
			sp.ttfb = append(sp.ttfb, ttfb)
			sp.gaps = append(sp.gaps, gaps...)
			for _, g := range gaps {
				if g > stall {
					sp.stalls++
				}
			}
		})
	}
	resetPeakRSS()
	start := time.Now()
	if rate > 0 {
		period := time.Second / time.Duration(rate)
		for i := 0; ; i++ {
			at := start.Add(time.Duration(i) * period)
			if at.Sub(start) >= d {
				break
			}
			time.Sleep(time.Until(at))
			launch()
		}
	} else {
		spread := 200 * time.Millisecond / time.Duration(max(concurrent, 1))
		for i := range concurrent {
			time.Sleep(time.Until(start.Add(time.Duration(i) * spread)))
			launch()
		}
	}
	wg.Wait()
	sp.elapsed = time.Since(start)
	sp.peakRSS = peakRSSKB()
	slices.Sort(sp.ttfb)
	slices.Sort(sp.gaps)
	return sp
}
