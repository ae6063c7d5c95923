package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
)

// median of a few values (the rounds); the mean of the middle two for an
// even count.
func median[T ~int64 | ~float64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func ratio(a, b float64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// openSummary is one target at one rate, over the rounds.
type openSummary struct {
	ok                  float64
	p50, p90, p99, max  time.Duration
	add50, add90, add99 time.Duration // median over rounds of (target − direct) in the same round
	sent                int
}

func summarizeOpen(rounds, direct []phase) openSummary {
	var s openSummary
	var ok []float64
	var p50, p90, p99, a50, a90, a99 []time.Duration
	for i := range rounds {
		r := &rounds[i]
		ok = append(ok, r.successRate())
		p50 = append(p50, r.quantile(0.50))
		p90 = append(p90, r.quantile(0.90))
		p99 = append(p99, r.quantile(0.99))
		s.max = max(s.max, r.quantile(1))
		s.sent += r.sent
		if i < len(direct) {
			d := &direct[i]
			a50 = append(a50, r.quantile(0.50)-d.quantile(0.50))
			a90 = append(a90, r.quantile(0.90)-d.quantile(0.90))
			a99 = append(a99, r.quantile(0.99)-d.quantile(0.99))
		}
	}
	s.ok = median(ok)
	s.p50, s.p90, s.p99 = median(p50), median(p90), median(p99)
	s.add50, s.add90, s.add99 = median(a50), median(a90), median(a99)
	return s
}

// closedSummary is one target's closed-loop rounds.
type closedSummary struct {
	ok           float64
	rps          float64
	p50, p99     time.Duration
	allocsPerReq float64
	bytesPerReq  float64
	cpuPerReq    time.Duration // process CPU time per request
	cores        float64       // process CPU time per wall second
}

func summarizeClosed(rounds []phase) closedSummary {
	var ok, rps, apr, bpr, cores []float64
	var p50, p99, cpr []time.Duration
	for i := range rounds {
		r := &rounds[i]
		ok = append(ok, r.successRate())
		rps = append(rps, float64(r.ok)/r.elapsed.Seconds())
		p50 = append(p50, r.quantile(0.5))
		p99 = append(p99, r.quantile(0.99))
		if r.sent > 0 {
			apr = append(apr, float64(r.allocs)/float64(r.sent))
			bpr = append(bpr, float64(r.allocBytes)/float64(r.sent))
			cpr = append(cpr, r.cpu/time.Duration(r.sent))
		}
		cores = append(cores, r.cpu.Seconds()/r.elapsed.Seconds())
	}
	return closedSummary{ok: median(ok), rps: median(rps), p50: median(p50), p99: median(p99),
		allocsPerReq: median(apr), bytesPerReq: median(bpr), cpuPerReq: median(cpr), cores: median(cores)}
}

// peakRSS is the largest VmHWM of a target's phases, in MiB.
func peakRSS(res results, id string) string {
	var peak int64 = -1
	for _, rounds := range res.open[id] {
		for _, p := range rounds {
			peak = max(peak, p.peakRSSKB)
		}
	}
	for _, p := range res.closed[id] {
		peak = max(peak, p.peakRSSKB)
	}
	if peak < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(peak)/1024)
}

type streamSummary struct {
	ok               float64
	ttfb50, ttfb99   time.Duration
	gap50, gap99     time.Duration
	addTTFB50        time.Duration // over direct, same round
	addTTFB99        time.Duration
	addGap50         time.Duration
	addGap99         time.Duration
	overProxyTTFB50  time.Duration // over proxy-stream, same round
	gapMax           time.Duration
	stalls, sent, nk int
}

func summarizeStreams(rounds, direct, proxy []streamPhase) streamSummary {
	var s streamSummary
	var ok []float64
	var t50, t99, g50, g99, at50, at99, ag50, ag99, ap50 []time.Duration
	for i := range rounds {
		r := &rounds[i]
		ok = append(ok, r.successRate())
		t50 = append(t50, quantile(r.ttfb, 0.5))
		t99 = append(t99, quantile(r.ttfb, 0.99))
		g50 = append(g50, quantile(r.gaps, 0.5))
		g99 = append(g99, quantile(r.gaps, 0.99))
		s.gapMax = max(s.gapMax, quantile(r.gaps, 1))
		s.stalls += r.stalls
		s.sent += r.sent
		if i < len(direct) {
			d := &direct[i]
			at50 = append(at50, quantile(r.ttfb, 0.5)-quantile(d.ttfb, 0.5))
			at99 = append(at99, quantile(r.ttfb, 0.99)-quantile(d.ttfb, 0.99))
			ag50 = append(ag50, quantile(r.gaps, 0.5)-quantile(d.gaps, 0.5))
			ag99 = append(ag99, quantile(r.gaps, 0.99)-quantile(d.gaps, 0.99))
		}
		if i < len(proxy) {
			ap50 = append(ap50, quantile(r.ttfb, 0.5)-quantile(proxy[i].ttfb, 0.5))
		}
	}
	s.ok = median(ok)
	s.ttfb50, s.ttfb99, s.gap50, s.gap99 = median(t50), median(t99), median(g50), median(g99)
	s.addTTFB50, s.addTTFB99, s.addGap50, s.addGap99 = median(at50), median(at99), median(ag50), median(ag99)
	s.overProxyTTFB50 = median(ap50)
	return s
}

func report(w io.Writer, o options, plain, streaming []*target, res results, notes []string, measured time.Duration) {
	fmt.Fprintf(w, "agentapi load harness: %s %s/%s, %d CPUs, GOMAXPROCS %d; upstream latency %s; measured for %s; load average %s before, %s after\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), o.upstreamLatency, measured.Round(time.Second),
		res.loadBefore, res.loadAfter)
	fmt.Fprintln(w, "All targets, the load generator and the upstream share this one process and its CPUs; compare figures as ratios within one run.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\twhat it is")
	for _, t := range append(slices.Clone(plain), streaming...) {
		fmt.Fprintf(tw, "%s\t%s\n", t.id, t.about)
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, "note:", n)
	}

	for _, rate := range o.rates {
		fmt.Fprintf(w, "\nopen loop at %d req/s: %d rounds × %s, medians of rounds (max: largest of all rounds); ms; "+
			"+ = added over direct in the same round\n", rate, o.rounds, o.duration)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tok %\tsent\tp50\tp90\tp99\tmax\t+p50\t+p90\t+p99\t+p50 ÷ proxy's\t+p99 ÷ proxy's\t")
		direct := res.open["direct"][rate]
		proxy := summarizeOpen(res.open["proxy"][rate], direct)
		for _, t := range plain {
			s := summarizeOpen(res.open[t.id][rate], direct)
			add50, add90, add99, r50, r99 := "–", "–", "–", "–", "–"
			if t.id != "direct" {
				add50, add90, add99 = ms(s.add50), ms(s.add90), ms(s.add99)
				if t.id != "proxy" && res.open["proxy"] != nil {
					r50, r99 = ratio(float64(s.add50), float64(proxy.add50)), ratio(float64(s.add99), float64(proxy.add99))
				}
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.id, 100*s.ok, s.sent,
				ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), add50, add90, add99, r50, r99)
		}
		tw.Flush()
	}

	if o.closedDuration > 0 {
		fmt.Fprintf(w, "\nclosed loop: %d workers × %s, %d rounds, medians of rounds; CPU time and allocations are the whole process's "+
			"(client, target and upstream) per request, so + over direct is what the hop itself costs; cores = CPU time per wall second "+
			"(below %d means other processes took CPU); peak RSS is the process's VmHWM, reset before each phase, largest over the target's phases\n",
			o.workers, o.closedDuration, o.rounds, runtime.NumCPU())
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tok %\treq/s\t÷ proxy\tp50 ms\tp99 ms\tcores\tCPU µs/req\t+CPU µs/req\tallocs/req\t+allocs/req\tKiB/req\t+KiB/req\tpeak RSS MiB\t")
		direct := summarizeClosed(res.closed["direct"])
		proxy := summarizeClosed(res.closed["proxy"])
		for _, t := range plain {
			s := summarizeClosed(res.closed[t.id])
			rp, addA, addB, addC := "–", "–", "–", "–"
			if t.id != "direct" {
				addC = fmt.Sprintf("%.1f", float64(s.cpuPerReq-direct.cpuPerReq)/1e3)
				addA = fmt.Sprintf("%.0f", s.allocsPerReq-direct.allocsPerReq)
				addB = fmt.Sprintf("%.1f", (s.bytesPerReq-direct.bytesPerReq)/1024)
				if t.id != "proxy" && res.closed["proxy"] != nil {
					rp = ratio(s.rps, proxy.rps)
				}
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%.0f\t%s\t%s\t%s\t%.2f\t%.1f\t%s\t%.0f\t%s\t%.1f\t%s\t%s\t\n", t.id, 100*s.ok, s.rps, rp, ms(s.p50), ms(s.p99),
				s.cores, float64(s.cpuPerReq)/1e3, addC, s.allocsPerReq, addA, s.bytesPerReq/1024, addB, peakRSS(res, t.id))
		}
		tw.Flush()
	}

	if len(streaming) > 0 {
		fmt.Fprintf(w, "\nstreams: %d opened per second × %s, %d rounds; each %d chunks %s apart; medians of rounds; ms; "+
			"TTFB = request start to first event; gap = between events of one stream; + = added over direct-stream\n",
			o.streamRate, o.streamDuration, o.rounds, o.streamChunks, o.chunkInterval)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tok %\tstreams\tTTFB p50\tTTFB p99\tgap p50\tgap p99\tgap max\t+TTFB p50\t+TTFB p99\t+gap p50\t+gap p99\tTTFB p50 over proxy\t")
		direct, proxy := res.streams["direct-stream"], res.streams["proxy-stream"]
		for _, t := range streaming {
			s := summarizeStreams(res.streams[t.id], direct, proxy)
			fmt.Fprintf(tw, "%s\t%.2f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.id, 100*s.ok, s.sent,
				ms(s.ttfb50), ms(s.ttfb99), ms(s.gap50), ms(s.gap99), ms(s.gapMax),
				ms(s.addTTFB50), ms(s.addTTFB99), ms(s.addGap50), ms(s.addGap99), ms(s.overProxyTTFB50))
		}
		tw.Flush()
		if o.concurrentStreams > 0 {
			fmt.Fprintf(w, "\n%d concurrent streams (opened within 200ms), each %d chunks %s apart; a stall is a gap over %s\n",
				o.concurrentStreams, o.concurrentChunks, o.concurrentInterval, o.stall)
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "target\tok %\tTTFB p50 ms\tTTFB p99 ms\tgap p50 ms\tgap p99 ms\tgap max ms\tstalls\tpeak RSS MiB\t")
			for _, t := range streaming {
				c := res.concurrent[t.id]
				rss := "–"
				if c.peakRSS >= 0 {
					rss = fmt.Sprintf("%.0f", float64(c.peakRSS)/1024)
				}
				fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", t.id, 100*c.successRate(),
					ms(quantile(c.ttfb, 0.5)), ms(quantile(c.ttfb, 0.99)), ms(quantile(c.gaps, 0.5)),
					ms(quantile(c.gaps, 0.99)), ms(quantile(c.gaps, 1)), c.stalls, rss)
			}
			tw.Flush()
		}
	}
	budget(w, o, plain, streaming, res)
}

// budget judges the figures against issue 5's budget.
func budget(w io.Writer, o options, plain, streaming []*target, res results) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	fmt.Fprintln(w)
	defer budgetStreams(w, o, streaming, res, verdict)
	direct := res.open["direct"][o.budgetRate]
	proxyOpen := res.open["proxy"][o.budgetRate]
	if direct == nil || proxyOpen == nil {
		fmt.Fprintf(w, "budget: latency and throughput not judged (they need direct and proxy at -budget-rate %d)\n", o.budgetRate)
		return
	}
	proxy := summarizeOpen(proxyOpen, direct)
	proxyClosed := summarizeClosed(res.closed["proxy"])
	fmt.Fprintf(w, "budget at %d req/s (proxy adds p50 %s ms, p99 %s ms; closed loop %.0f req/s):\n",
		o.budgetRate, ms(proxy.add50), ms(proxy.add99), proxyClosed.rps)
	for _, t := range plain {
		if t.id == "direct" || t.id == "proxy" {
			continue
		}
		s := summarizeOpen(res.open[t.id][o.budgetRate], direct)
		line := fmt.Sprintf("  %-10s added p50 %s ms = %s proxy's (≤ 1.25×: %s); added p99 %s ms = %s (≤ 1.5×: %s)",
			t.id, ms(s.add50), ratio(float64(s.add50), float64(proxy.add50)), verdict(float64(s.add50) <= 1.25*float64(proxy.add50)),
			ms(s.add99), ratio(float64(s.add99), float64(proxy.add99)), verdict(float64(s.add99) <= 1.5*float64(proxy.add99)))
		if c := res.closed[t.id]; c != nil && res.closed["proxy"] != nil {
			cs := summarizeClosed(c)
			line += fmt.Sprintf("; closed loop %s proxy's (≥ 0.8×: %s)", ratio(cs.rps, proxyClosed.rps), verdict(cs.rps >= 0.8*proxyClosed.rps))
		}
		fmt.Fprintln(w, line)
	}
	if res.redisRTT > 0 {
		rtt := res.redisRTT
		under := slices.Clone(res.redisRTTsUnderLoad)
		slices.Sort(under)
		fmt.Fprintf(w, "  Redis round trip (go-redis PING p50): %s ms idle", ms(rtt))
		if len(under) > 0 {
			rtt = quantile(under, 0.5)
			fmt.Fprintf(w, ", %s ms under the Redis targets' load at %d req/s (%d PINGs; the unit used below)", ms(rtt), o.budgetRate, len(under))
		}
		fmt.Fprintln(w)
		for _, pair := range [][2]string{{"chat-redis", "chat"}, {"v1-redis", "v1"}} {
			rr, ip := res.open[pair[0]][o.budgetRate], res.open[pair[1]][o.budgetRate]
			if rr == nil || ip == nil {
				continue
			}
			s, in := summarizeOpen(rr, direct), summarizeOpen(ip, direct)
			extra := s.add50 - in.add50
			fmt.Fprintf(w, "  %-10s adds p50 %s ms more than %s = %.1f Redis round trips (budget: %s's budget + 1 round trip: %s)\n",
				pair[0], ms(extra), pair[1], float64(extra)/float64(rtt), pair[1],
				verdict(float64(s.add50) <= 1.25*float64(proxy.add50)+float64(rtt)))
		}
	}
}

// budgetStreams judges the gateway's stream targets: first-byte time added
// over the bare proxy, and the concurrent streams all finished unstalled.
func budgetStreams(w io.Writer, o options, streaming []*target, res results, verdict func(bool) string) {
	if res.streams["proxy-stream"] == nil {
		return
	}
	for _, t := range streaming {
		if !strings.HasPrefix(t.id, "v1") {
			continue
		}
		s := summarizeStreams(res.streams[t.id], res.streams["direct-stream"], res.streams["proxy-stream"])
		fmt.Fprintf(w, "  %-10s TTFB p50 over proxy-stream %s ms (≤ 0.100: %s)", t.id, ms(s.overProxyTTFB50), verdict(s.overProxyTTFB50 <= 100*time.Microsecond))
		if c, ok := res.concurrent[t.id]; ok {
			fmt.Fprintf(w, "; %d concurrent streams: %d/%d complete, %d stalls (%s)", o.concurrentStreams, c.ok, c.sent, c.stalls,
				verdict(c.ok == c.sent && c.stalls == 0))
		}
		fmt.Fprintln(w)
	}
}

// startPinger sends a PING every 5ms through the gateway's client settings
// until the returned function is called, which returns the round trips.
func startPinger(ctx context.Context, url string) func() []time.Duration {
	rdb, err := redisconn.Open(redisconn.Options{URL: url})
	if err != nil {
		return func() []time.Duration { return nil }
	}
	done := make(chan struct{})
	out := make(chan []time.Duration, 1)
	go func() {
		defer rdb.Close()
		var lat []time.Duration
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				out <- lat
				return
			case <-t.C:
			}
			t0 := time.Now()
			if rdb.Ping(ctx).Err() == nil {
				lat = append(lat, time.Since(t0))
			}
		}
	}()
	return func() []time.Duration {
		close(done)
		return <-out
	}
}

// redisRTT is the median time of a PING through the same client settings
// the gateway uses.
func redisRTT(ctx context.Context, url string) (time.Duration, error) {
	rdb, err := redisconn.Open(redisconn.Options{URL: url})
	if err != nil {
		return 0, err
	}
	defer rdb.Close()
	lat := make([]time.Duration, 0, 2000)
	for range 2000 {
		t0 := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return quantile(lat, 0.5), nil
}
