package main

// Counting answers and latencies, and the soak's report and verdict.

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// example is one unexpected answer, kept for the report.
type example struct {
	at        time.Duration // since the run started
	kind      string
	fault     fakeopenai.Fault
	status    int
	reason    string
	requestID string
	redisCut  bool
	body      string
	took      time.Duration
	machine   string // what the machine did meanwhile
}

// tally counts answers of one kind.
type tally struct {
	sent     int
	byClass  [numClasses]int
	redisCut int // answered while Redis was cut (or within a second of it)
	maxGap   time.Duration
	latency  latencyHist // of the ok answers
}

// latencyHist counts durations in buckets 1% wide from 10 µs to about
// 2 minutes. It has a fixed size, so that the harness's own memory does
// not grow with the run and blur the gateway's figures.
type latencyHist struct {
	counts [latencyBuckets]uint32
	n      uint64
}

const (
	latencyBuckets = 1650 // 10 µs × 1.01^1650 ≈ 140 s
	latencyMin     = 10 * time.Microsecond
)

var latencyGrowth = math.Log(1.01)

func (h *latencyHist) add(d time.Duration) {
	i := 0
	if d > latencyMin {
		i = min(int(math.Log(float64(d)/float64(latencyMin))/latencyGrowth), latencyBuckets-1)
	}
	h.counts[i]++
	h.n++
}

// quantile is the upper bound of the bucket holding the q-quantile.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= max(rank, 1) {
			return time.Duration(float64(latencyMin) * math.Exp(float64(i+1)*latencyGrowth))
		}
	}
	return 0
}

// report prints the run's report and returns its figures and verdict.
func (s *soak) report(w io.Writer, base, end resources, problems []string, timeline []string) *soakReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.o
	rep := &soakReport{reasons: s.reasons, skipped: s.skipped.Load(), flushes: s.flushes, outages: len(s.outages),
		baseline: base, end: end, faults: s.faults}

	backends := "in-process limiter and cache"
	if s.proxy != nil {
		backends = "Redis limiter, cache and budget, through a proxy in the harness that the run cuts"
	}
	fmt.Fprintf(w, "soak run: %s after a %s warm-up; %d req/s open loop + %d concurrent streams; %s\n",
		o.duration, o.warmup, o.rate, o.streams, backends)
	fmt.Fprintf(w, "gateway: UPSTREAM_TIMEOUT=%s, free tier 3 requests + 1/s, breaker after 1000 failures in a row, in-process cache %s MiB, budgets on (never reached)\n",
		o.upstreamTimeout, mib(soakCacheBytes))
	if every := faultEvery(o.faultShare); every > 0 {
		fmt.Fprintf(w, "upstream faults: slots of %s cycling none → 500 → 429 → hang → slow → cut, on one in every %d fault-carrying requests of a slot (its first included)\n",
			o.faultSlot, every)
	} else {
		fmt.Fprintln(w, "upstream faults: none")
	}
	if s.proxy != nil {
		fmt.Fprintf(w, "Redis faults: every %s, SCRIPT FLUSH at a quarter, an outage of %s from half (reset and frozen alternately)\n", o.redisEvery, o.redisOutage)
	}

	fmt.Fprintln(w, "\nanswers by kind and class (the warm-up's included: every answer is judged)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "kind\tendpoint\tsent\t")
	for c := range numClasses {
		fmt.Fprintf(tw, "%s\t", classNames[c])
	}
	if s.proxy != nil {
		fmt.Fprint(tw, "in Redis outage\t")
	}
	fmt.Fprintln(tw, "ok p50 ms\tok p99 ms\t")
	var total tally
	for _, k := range s.kinds {
		t := s.tallies[k]
		total.sent += t.sent
		total.redisCut += t.redisCut
		fmt.Fprintf(tw, "%s\t%s\t%d\t", k.id, k.endpoint, t.sent)
		for c := range numClasses {
			total.byClass[c] += t.byClass[c]
			fmt.Fprintf(tw, "%d\t", t.byClass[c])
		}
		if s.proxy != nil {
			fmt.Fprintf(tw, "%d\t", t.redisCut)
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", ms(t.latency.quantile(0.5)), ms(t.latency.quantile(0.99)))
	}
	fmt.Fprintf(tw, "total\t\t%d\t", total.sent)
	for c := range numClasses {
		fmt.Fprintf(tw, "%d\t", total.byClass[c])
	}
	if s.proxy != nil {
		fmt.Fprintf(tw, "%d\t", total.redisCut)
	}
	fmt.Fprintln(tw, "\t\t")
	tw.Flush()
	rep.sent, rep.byClass = total.sent, total.byClass
	var maxGap time.Duration
	for _, k := range s.kinds {
		maxGap = max(maxGap, s.tallies[k].maxGap)
	}
	fmt.Fprintf(w, "longest gap between events of a healthy stream: %s ms (stall threshold %s)\n", ms(maxGap), o.stall)
	if rep.skipped > 0 {
		fmt.Fprintf(w, "open-loop requests not sent because %d were in flight: %d\n", maxInFlight, rep.skipped)
	}

	fmt.Fprintln(w, "\ninjected upstream faults (documented answer: 500 → 502, 429 → 503 with Retry-After, hang → 504, slow → 200, cut → 502 or a stream's error event)")
	for f := fakeopenai.Status500; f < numFaults; f++ {
		n := 0
		for c := range numClasses {
			n += s.faults[f][c]
		}
		fmt.Fprintf(w, "  %-5s %6d sent, %6d as documented, %d unexpected\n", f, n, s.faults[f][classFault], s.faults[f][classUnexpected])
	}
	if s.proxy != nil {
		fmt.Fprintf(w, "Redis: %d SCRIPT FLUSH, %d outages (%d reset, %d frozen); %d answers overlapped an outage (or the second after), %d of them unexpected\n",
			s.flushes, len(s.outages), s.outModes["reset"], s.outModes["freeze"], total.redisCut, s.cutUnexpected)
		for _, e := range s.flushErrs {
			fmt.Fprintln(w, "  SCRIPT FLUSH failed:", e)
		}
	}

	fmt.Fprintf(w, "\nthe machine over the run: %s\n", s.machine.span(s.runStart, time.Now()))
	stalls := s.machine.stalls()
	fmt.Fprintf(w, "process stalls (a heartbeat every %s woke %s or more late): %d; longest GC pause %s ms\n",
		stallTick, o.processStall, len(stalls), ms(longestGCPause()))
	for i, st := range stalls {
		if i == 10 {
			fmt.Fprintf(w, "  … %d more\n", len(stalls)-i)
			break
		}
		from := st.at.Add(-st.late - stallTick)
		fmt.Fprintf(w, "  t=%s: %s\n", from.Sub(s.runStart).Round(time.Millisecond), s.machine.span(from, st.at))
	}
	excused := "counted apart"
	if !o.excuseStarved {
		excused = "counted as unexpected (-excuse-starved=false)"
	}
	fmt.Fprintf(w, "answers only late (504, stream stall, timeout) while other processes took the machine (\"process starved\", %s): %d\n",
		excused, total.byClass[classStarved])

	unexpected := total.byClass[classUnexpected]
	fmt.Fprintf(w, "\nunexpected answers: %d (target 0)\n", unexpected)
	reasons := make([]string, 0, len(s.reasons))
	for r := range s.reasons {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool { return s.reasons[reasons[i]] > s.reasons[reasons[j]] })
	for _, r := range reasons {
		fmt.Fprintf(w, "  %6d  %s\n", s.reasons[r], r)
	}
	for _, e := range s.examples {
		fmt.Fprintf(w, "  e.g. t=%s %s fault=%s status=%d after %s ms, request_id=%s redis_cut=%v: %s\n    body: %s\n    machine %s\n",
			e.at.Round(time.Millisecond), e.kind, e.fault, e.status, ms(e.took), e.requestID, e.redisCut, e.reason, e.body, e.machine)
		for _, l := range s.logs.lines(e.requestID) {
			fmt.Fprintf(w, "    log: %s\n", l)
		}
	}
	fmt.Fprintln(w, "\ngateway log, WARN and ERROR lines by message:")
	for _, l := range s.logs.summary() {
		fmt.Fprintln(w, "  "+l)
	}

	// Resources.
	goal := func(b float64, mibs float64) float64 { return b*o.maxGrowthPct/100 + mibs*(1<<20) }
	heapBound := goal(base.heapGoal, o.maxHeapGrowthMiB)
	rssBound := goal(base.rss, o.maxRSSGrowthMiB)
	fmt.Fprintln(w, "\nresources at idle, from the gateway's GET /metrics (process-wide: the harness runs the gateway in this process, see below)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tbaseline\tend\tgrowth\tallowed\tverdict\t")
	// When other processes take the machine, the load piles up in this
	// process. Goroutines and descriptors are read once that pile is gone
	// (in-flight work ended, idle connections closed), so they are judged
	// whatever the machine did. The heap goal is what the last GC, under
	// the last seconds of load, found: taken then, the end figure may hold
	// the pile (growth proves nothing) and the baseline too (it could hide
	// growth). RSS keeps a pile's pages for minutes: over its bound after
	// the machine was taken at any time, it proves nothing either.
	const late = 15 * time.Second
	anyTaken := s.machine.takenDuring(s.runStart, time.Now())
	lateWarm := s.machine.takenDuring(s.warmEnd.Add(-late), s.baselineAt)
	lateRun := s.machine.takenDuring(s.mainEnd.Add(-late), time.Now())
	var failures, inconclusive []string
	type sensitivity int
	const (
		robust   sensitivity = iota // read after the pile is gone
		lastGC                      // the heap goal
		anyTime                     // RSS
		informal                    // not judged
	)
	row := func(name string, b, e, allowed float64, format func(float64) string, sens sensitivity) {
		judged := sens != informal
		verdict := "–"
		if judged {
			verdict = "ok"
			overTaken := sens == lastGC && lateRun || sens == anyTime && anyTaken
			switch {
			case e-b > allowed && overTaken:
				verdict = "over, not judged"
				inconclusive = append(inconclusive, fmt.Sprintf("%s grew by %s (allowed %s) after other processes took the machine", name, format(e-b), format(allowed)))
			case e-b > allowed:
				verdict = "OVER"
				failures = append(failures, fmt.Sprintf("%s grew by %s (allowed %s)", name, format(e-b), format(allowed)))
			case sens == lastGC && lateWarm:
				verdict = "ok, not judged"
				inconclusive = append(inconclusive, fmt.Sprintf("%s: other processes took the machine at the end of the warm-up, so the baseline may be inflated", name))
			}
		}
		al := "–"
		if judged {
			al = format(allowed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", name, format(b), format(e), format(e-b), al, verdict)
	}
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	mibs := func(v float64) string { return mib(v) + " MiB" }
	row("goroutines", base.adjustedGoroutines(), end.adjustedGoroutines(), float64(o.maxGoroutineGrowth), count, robust)
	row("heap goal (next GC)", base.heapGoal, end.heapGoal, heapBound, mibs, lastGC)
	row("heap in use", base.heapInuse, end.heapInuse, 0, mibs, informal)
	row("RSS", base.rss, end.rss, rssBound, mibs, anyTime)
	row("open descriptors", base.adjustedFDs(), end.adjustedFDs(), float64(o.maxFDGrowth), count, robust)
	if base.sqliteFDs >= 0 && end.sqliteFDs >= 0 {
		// Bounded by the pools' size, not by the baseline: the readers
		// open as load asks and stay open.
		row("SQLite descriptors", float64(base.sqliteFDs), float64(end.sqliteFDs), float64(sqliteFDBound-base.sqliteFDs), count, robust)
	}
	tw.Flush()
	if s.proxy != nil {
		fmt.Fprintf(w, "(goroutines leave out the Redis proxy's: %d at baseline, %d at the end; descriptors leave out the proxied Redis connections, 3 each: %d and %d)\n",
			base.proxyRoutine, end.proxyRoutine, base.proxyConns, end.proxyConns)
	}
	fmt.Fprintf(w, "still open at the end: %.0f streams (agentapi_streams_in_flight), %d upstream calls, %d upstream connections\n",
		end.streams, end.upActive, end.upConns)
	fmt.Fprintf(w, `thresholds:
  goroutines: at most %d above the baseline. Both samples are taken at idle, after the harness closed its own
    keep-alive connections and the fake upstream's (the gateway's pool to it), and %s of settling, so what is
    left is the gateway's standing goroutines and a few that come and go (a usage flush, the /metrics scrape's
    connection); a goroutine leaked by one request in a thousand would add about %d over this run.
  heap goal: at most %.0f%% + %.0f MiB above the baseline. The heap goal is what the last GC set from the heap it
    found live (about twice it, GOGC=100), so it tracks retained memory without forcing a GC; the in-process
    cache is capped at %s MiB, which the warm-up fills, so no growth is expected; a leak of %d bytes per request
    (half the bound per request, the goal being twice the live heap) would exceed it over this run.
  RSS: at most %.0f%% + %.0f MiB above the baseline: RSS also holds memory the GC freed but the runtime has not yet
    returned to the OS and the stacks of the run's peak concurrency, so it is judged only for gross growth.
  open descriptors: at most %d above the baseline, counted the way goroutines are, leaving out the SQLite files,
    which may hold at most %d (one writer and four readers, each with its database, WAL and shared-memory file).
  Runtime figures are the whole process's: go_goroutines and the memory figures include the fake upstream, the
    Redis proxy and the load generator; the samples are taken when those hold nothing but what is counted above.
  The machine counts as taken in a second when the heartbeat stood still for %s, or other processes used a core
    or more while this process's threads waited for a CPU half the time or more and goroutines waited 100 ms to run.
    Goroutines and descriptors are judged whatever the machine did; a heap goal over its bound with the machine
    taken in the run's last 15 s, or within it with the machine taken in the warm-up's last 15 s, and RSS over its
    bound with the machine taken at any time, are not judged: the verdict is then INCONCLUSIVE, not PASS or FAIL.
`, o.maxGoroutineGrowth, o.settle, max(1, total.sent/1000), o.maxGrowthPct, o.maxHeapGrowthMiB,
		mib(soakCacheBytes), int(heapBound/2/float64(max(1, total.sent))), o.maxGrowthPct, o.maxRSSGrowthMiB, o.maxFDGrowth, sqliteFDBound, o.processStall)
	if len(timeline) > 0 {
		fmt.Fprintln(w, "\nduring the run (under load):")
		for _, l := range timeline {
			fmt.Fprintln(w, "  "+l)
		}
	}

	if unexpected > 0 {
		failures = append(failures, fmt.Sprintf("%d unexpected answers", unexpected))
	}
	switch {
	case rep.skipped > 0 && anyTaken:
		inconclusive = append(inconclusive, fmt.Sprintf("%d open-loop requests not sent while other processes took the machine", rep.skipped))
	case rep.skipped > 0:
		failures = append(failures, fmt.Sprintf("%d open-loop requests not sent (gateway not keeping up)", rep.skipped))
	}
	if end.streams > 0 || end.upActive > 0 {
		rep.leftovers = int(end.streams) + int(end.upActive)
		failures = append(failures, fmt.Sprintf("at idle, %.0f streams and %d upstream calls still open", end.streams, end.upActive))
	}
	for _, p := range problems {
		if strings.Contains(p, "unanswered") {
			rep.unanswered = true
		}
		failures = append(failures, p)
	}
	rep.failures = failures
	switch {
	case len(failures) > 0:
		rep.verdict = "FAIL"
	case len(inconclusive) > 0:
		rep.verdict = "INCONCLUSIVE"
	default:
		rep.verdict = "PASS"
	}
	rep.pass = rep.verdict == "PASS"
	fmt.Fprintf(w, "\nverdict: %s\n", rep.verdict)
	for _, f := range failures {
		fmt.Fprintln(w, "  - "+f)
	}
	for _, f := range inconclusive {
		fmt.Fprintln(w, "  - not judged: "+f)
	}
	if anyTaken {
		fmt.Fprintln(w, "  (other processes took the machine at times during the run, see \"the machine\" above)")
	}
	if n := total.byClass[classStarved]; n > 0 {
		fmt.Fprintf(w, "  (%d answers were late only because other processes took the machine; they are not counted as unexpected)\n", n)
	}
	return rep
}

// faultEvery turns -fault-share into "one request in every n" (0: none).
func faultEvery(share float64) uint64 {
	if share <= 0 {
		return 0
	}
	return uint64(max(1, int(1/share+0.5)))
}
