package main

// Whether this process got the machine: stalls, CPU and run delay.

import (
	"fmt"
	"math"
	"os"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// machineWatch samples, every tick, what tells whether this process got
// the machine: how late a heartbeat goroutine woke, this process's CPU
// time, the whole machine's busy and steal time, how long this process's
// threads waited for a CPU (run delay), and how many goroutines waited
// 100 ms or more for the Go scheduler. On a shared two-core machine other
// processes can take the CPUs; gateway, fake upstream and load generator,
// all in this process, then fall behind together, and answers fail by
// being late. Those (a 504, a stream or request that timed out) are
// counted apart when the machine was demonstrably taken from the process
// (see starved); every other failure counts as unexpected whatever the
// machine did.
type machineWatch struct {
	stallAt time.Duration // a heartbeat this late is a stall
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	samples []machineSample
}

// machineSample holds cumulative counters at one tick.
type machineSample struct {
	at      time.Time
	late    time.Duration // how late this tick's heartbeat woke
	ourCPU  time.Duration // this process's CPU time
	busy    time.Duration // the machine's CPU time on all CPUs (-1 unknown)
	steal   time.Duration // the machine's steal time (-1 unknown)
	cpuWait time.Duration // run delay of this process's threads (-1 unknown)
	slow    uint64        // goroutine wake-ups that waited ≥ 100 ms to run
}

const stallTick = 50 * time.Millisecond

// startMachineWatch starts sampling; expect is about how long it will run,
// so that the samples' room is taken at once, before the baseline.
func startMachineWatch(stallAt, expect time.Duration) *machineWatch {
	w := &machineWatch{stallAt: stallAt, stop: make(chan struct{}), done: make(chan struct{})}
	w.samples = make([]machineSample, 0, int(expect/stallTick)+1)
	w.samples = append(w.samples, takeSample(time.Now(), 0))
	go func() {
		defer close(w.done)
		t := time.NewTicker(stallTick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			now := time.Now()
			sm := takeSample(now, max(0, now.Sub(last)-stallTick))
			last = now
			w.mu.Lock()
			w.samples = append(w.samples, sm)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *machineWatch) close() {
	close(w.stop)
	<-w.done
}

var schedSample = []metrics.Sample{{Name: "/sched/latencies:seconds"}}

func takeSample(now time.Time, late time.Duration) machineSample {
	busy, steal := machineCPU()
	sm := machineSample{at: now, late: late, ourCPU: processCPU(), busy: busy, steal: steal, cpuWait: cpuWait()}
	metrics.Read(schedSample)
	if schedSample[0].Value.Kind() == metrics.KindFloat64Histogram {
		h := schedSample[0].Value.Float64Histogram()
		for i, c := range h.Counts {
			if h.Buckets[i] >= 0.1 {
				sm.slow += c
			}
		}
	}
	return sm
}

// machineSpan is what the machine did over a stretch of time.
type machineSpan struct {
	d          time.Duration
	maxLate    time.Duration // the heartbeat's longest lateness
	ourCores   float64       // this process's CPU use, in cores
	otherCores float64       // every other process's, in cores (-1 unknown)
	stealCores float64       // steal time, in cores (-1 unknown)
	waitShare  float64       // this process's threads' run delay over the stretch (-1 unknown)
	slow       uint64        // goroutines that waited ≥ 100 ms for the Go scheduler
}

// span summarises [from, to], widened to the ticks around it.
func (w *machineWatch) span(from, to time.Time) machineSpan {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := sort.Search(len(w.samples), func(i int) bool { return w.samples[i].at.After(from) })
	j := sort.Search(len(w.samples), func(i int) bool { return !w.samples[i].at.Before(to) })
	i = max(i-1, 0)
	j = min(j, len(w.samples)-1)
	if j <= i {
		return machineSpan{otherCores: -1, stealCores: -1, waitShare: -1}
	}
	a, b := w.samples[i], w.samples[j]
	sp := machineSpan{d: b.at.Sub(a.at), otherCores: -1, stealCores: -1, waitShare: -1, slow: b.slow - a.slow}
	cores := func(d time.Duration) float64 { return float64(d) / float64(sp.d) }
	sp.ourCores = cores(b.ourCPU - a.ourCPU)
	if a.busy >= 0 && b.busy >= 0 {
		sp.otherCores = max(0, cores(b.busy-a.busy)-sp.ourCores)
	}
	if a.steal >= 0 && b.steal >= 0 {
		sp.stealCores = cores(b.steal - a.steal)
	}
	if a.cpuWait >= 0 && b.cpuWait >= 0 {
		sp.waitShare = cores(b.cpuWait - a.cpuWait)
	}
	for _, sm := range w.samples[i+1 : j+1] {
		sp.maxLate = max(sp.maxLate, sm.late)
	}
	return sp
}

// starved reports whether the machine was taken from this process over
// the span: the heartbeat stood still for the stall threshold; or other
// processes used at least one core on average, this process's threads
// waited for a CPU at least half the time, and goroutines waited 100 ms or
// more to run. (Measured here: with nothing else running the threads wait
// about a quarter of the time and no goroutine waits 100 ms; a full
// "go build -a" beside the soak takes 1.7 cores and makes them wait 50-60%
// of the time, yet no answer fails.) A process that is merely busy by
// itself meets neither condition.
func (w *machineWatch) starved(sp machineSpan) bool {
	if sp.maxLate >= w.stallAt {
		return true
	}
	return sp.otherCores >= 1 && sp.waitShare >= 0.5 && sp.slow > 0
}

func (sp machineSpan) String() string {
	unknown := func(v float64, f string) string {
		if v < 0 {
			return "?"
		}
		return fmt.Sprintf(f, v)
	}
	return fmt.Sprintf("over %s: this process %.2f cores, other processes %s cores, steal %s, threads waiting for a CPU %s, heartbeat late up to %s ms, %d goroutines waited ≥100 ms to run",
		sp.d.Round(time.Millisecond), sp.ourCores, unknown(sp.otherCores, "%.2f"), unknown(sp.stealCores, "%.2f"),
		unknown(sp.waitShare*100, "%.0f%%"), ms(sp.maxLate), sp.slow)
}

// takenDuring reports whether, in any second of [from, to], the machine
// was taken from this process (see starved).
func (w *machineWatch) takenDuring(from, to time.Time) bool {
	for t := from; t.Before(to); t = t.Add(time.Second) {
		end := t.Add(time.Second)
		if end.After(to) {
			end = to
		}
		if w.starved(w.span(t, end)) {
			return true
		}
	}
	return false
}

// stalls lists the heartbeat's wake-ups at least the stall threshold late.
func (w *machineWatch) stalls() []machineSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []machineSample
	for _, sm := range w.samples {
		if sm.late >= w.stallAt {
			out = append(out, sm)
		}
	}
	return out
}

// cpuWait sums the run delay of this process's threads (the second field
// of /proc/self/task/*/schedstat), or gives -1.
func cpuWait() time.Duration {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return -1
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread has just ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return -1
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return -1
		}
		sum += n
	}
	return time.Duration(sum)
}

// machineCPU reads the machine's busy time over all CPUs (user, nice,
// system, irq, softirq) and its steal time from /proc/stat's cpu line, in
// USER_HZ ticks of 10 ms; -1 each when unknown.
func machineCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1, -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1, -1
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return -1, -1
		}
	}
	tick := 10 * time.Millisecond
	return time.Duration(v[0]+v[1]+v[2]+v[5]+v[6]) * tick, time.Duration(v[7]) * tick
}

// longestGCPause is the longest stop-the-world pause of this process's
// GCs so far, from the runtime's histogram (its bucket's upper bound): a
// stall of the runtime's own would show here, not as other processes' CPU.
func longestGCPause() time.Duration {
	sample := []metrics.Sample{{Name: "/sched/pauses/total/gc:seconds"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := sample[0].Value.Float64Histogram()
	for i := len(h.Counts) - 1; i >= 0; i-- {
		if h.Counts[i] > 0 {
			upper := h.Buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = h.Buckets[i]
			}
			return time.Duration(upper * float64(time.Second))
		}
	}
	return 0
}
