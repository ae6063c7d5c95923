package main

// The soak run ("loadharness soak"): minutes of mixed load on one gateway
// while the upstream and Redis fail on a schedule. Every answer is sorted
// into what the gateway's documented behaviour makes expected and what it
// does not, and the gateway's goroutines, heap, RSS and descriptors at idle
// after a warm-up are compared with the same figures at idle after the run.
// See BENCHMARKS.md, "Soak run".

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/redis/go-redis/v9"
)

// soakOptions are the soak run's flags.
type soakOptions struct {
	duration        time.Duration
	warmup          time.Duration
	rate            int
	streams         int
	faultShare      float64
	faultSlot       time.Duration
	upstreamTimeout time.Duration
	stall           time.Duration
	settle          time.Duration
	sample          time.Duration
	redisURL        string
	redisEvery      time.Duration
	redisOutage     time.Duration
	processStall    time.Duration
	excuseStarved   bool

	maxGoroutineGrowth int
	maxHeapGrowthMiB   float64
	maxRSSGrowthMiB    float64
	maxGrowthPct       float64
	maxFDGrowth        int

	quiet bool
	// mislabel, when positive, puts the 500 marker into the first and then
	// every mislabel-th fault-free request of a fault-carrying kind without
	// telling the classifier: the smoke test's proof that a failure nobody
	// asked for is counted as unexpected.
	mislabel uint64
}

func parseSoakFlags(args []string, stderr io.Writer) (soakOptions, error) {
	var o soakOptions
	fs := flag.NewFlagSet("loadharness soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 5*time.Minute, "length of the measured run, after the warm-up")
	fs.DurationVar(&o.warmup, "warmup", 30*time.Second, "warm-up under the same load and faults before the baseline is taken (0: none)")
	fs.IntVar(&o.rate, "rate", 200, "open-loop requests per second (the mix of kinds)")
	fs.IntVar(&o.streams, "streams", 32, "concurrent streams held open besides the open loop, each opening the next when one ends")
	fs.Float64Var(&o.faultShare, "fault-share", 0.1, "share of fault-carrying requests that get the current slot's upstream fault")
	fs.DurationVar(&o.faultSlot, "fault-slot", 10*time.Second, "length of one slot of the upstream fault schedule (none, 500, 429, hang, slow, cut)")
	fs.DurationVar(&o.upstreamTimeout, "upstream-timeout", 2*time.Second, "the gateway's UPSTREAM_TIMEOUT (hung upstream calls end after it)")
	fs.DurationVar(&o.stall, "stall", 3*time.Second, "a stream without an event for this long has stalled (unexpected)")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "wait at idle, after in-flight work has ended, before the baseline and end figures")
	fs.DurationVar(&o.sample, "sample", 15*time.Second, "interval of the /metrics samples printed during the run")
	fs.StringVar(&o.redisURL, "redis", "", "Redis URL (loopback); the gateway reaches it through a proxy in the harness that the run cuts (empty: in-process backends)")
	fs.DurationVar(&o.redisEvery, "redis-every", time.Minute, "period of the Redis faults: SCRIPT FLUSH at a quarter, an outage from half of it")
	fs.DurationVar(&o.redisOutage, "redis-outage", 5*time.Second, "length of one Redis outage (connections reset or frozen, alternately)")
	fs.DurationVar(&o.processStall, "process-stall", time.Second, "a heartbeat goroutine waking this late means the process stood still")
	fs.BoolVar(&o.excuseStarved, "excuse-starved", true, "count answers that were only late (504, timeouts) while other processes took the machine apart, instead of as unexpected")
	fs.IntVar(&o.maxGoroutineGrowth, "max-goroutine-growth", 20, "goroutines allowed above the baseline at idle after the run")
	fs.Float64Var(&o.maxHeapGrowthMiB, "max-heap-growth", 16, "heap goal growth allowed at idle after the run, MiB (plus -max-growth-pct of the baseline)")
	fs.Float64Var(&o.maxRSSGrowthMiB, "max-rss-growth", 64, "RSS growth allowed at idle after the run, MiB (plus -max-growth-pct of the baseline)")
	fs.Float64Var(&o.maxGrowthPct, "max-growth-pct", 25, "part of the baseline heap goal and RSS allowed as growth, percent")
	fs.IntVar(&o.maxFDGrowth, "max-fd-growth", 5, "open descriptors allowed above the baseline at idle after the run")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case o.duration <= 0 || o.warmup < 0 || o.rate < 1 || o.streams < 0:
		return o, errors.New("-duration and -rate must be positive, -warmup and -streams not negative")
	case o.faultShare < 0 || o.faultShare > 1:
		return o, errors.New("-fault-share must be between 0 and 1")
	case o.faultSlot <= 0 || o.upstreamTimeout < 100*time.Millisecond || o.stall <= fakeopenai.DefaultSlowGap || o.settle < 0 || o.sample <= 0 || o.processStall <= 0:
		return o, fmt.Errorf("-fault-slot and -sample must be positive, -upstream-timeout at least 100ms, -stall over %s", fakeopenai.DefaultSlowGap)
	case o.redisURL != "" && !loopbackRedis(o.redisURL):
		return o, fmt.Errorf("-redis must point at 127.0.0.1 or localhost, got %q", o.redisURL)
	case o.redisURL != "" && !strings.HasPrefix(o.redisURL, "redis://"):
		// The soak cuts Redis through a proxy of its own, which fronts one
		// server; a cluster's clients learn the nodes' own addresses.
		return o, errors.New("-redis: the soak plays outages of one Redis server (redis://); clusters and Sentinel are not supported")
	case o.redisURL != "" && (o.redisOutage <= 0 || o.redisOutage >= o.redisEvery/2):
		return o, errors.New("-redis-outage must be positive and under half of -redis-every")
	}
	return o, nil
}

// errSoakFailed is the soak command's error when the verdict is FAIL, so
// the process exits non-zero.
var errSoakFailed = errors.New("soak: FAIL (see the report)")

// errSoakInconclusive is its error when other processes took the machine
// at a time that leaves the resource figures unreliable.
var errSoakInconclusive = errors.New("soak: INCONCLUSIVE (other processes took the machine; see the report)")

// runSoakCommand is "loadharness soak".
func runSoakCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseSoakFlags(args, stderr)
	if err != nil {
		return err
	}
	rep, err := runSoak(ctx, o, stdout, stderr)
	if err != nil {
		return err
	}
	switch rep.verdict {
	case "PASS":
		return nil
	case "INCONCLUSIVE":
		return errSoakInconclusive
	}
	return errSoakFailed
}

// soakReport is the verdict and the figures the smoke test looks at.
type soakReport struct {
	sent       int
	byClass    [numClasses]int
	faults     [numFaults][numClasses]int
	reasons    map[string]int
	skipped    int64
	flushes    int
	outages    int
	baseline   resources
	end        resources
	failures   []string
	verdict    string // PASS, FAIL or INCONCLUSIVE
	pass       bool
	leftovers  int // upstream calls and streams still open at idle
	unanswered bool
}

// runSoak runs a soak and prints its report.
func runSoak(ctx context.Context, o soakOptions, stdout, stderr io.Writer) (*soakReport, error) {
	progress := func(format string, a ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, "soak: "+format+"\n", a...)
		}
	}
	up, err := newUpstream(0, 20, 25*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer up.Close()
	dir, err := os.MkdirTemp("", "loadharness-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	var proxy *testkit.Proxy
	gwRedis := ""
	if o.redisURL != "" {
		proxy, gwRedis, err = testkit.StartBehind(o.redisURL)
		if err != nil {
			return nil, err
		}
		defer proxy.Close()
	}
	logs := newLogCollector()
	progress("starting the gateway")
	gw, err := startGateway(ctx, gatewayOptions{name: "soak", dir: dir, upstream: up.URL + "/v1", redisURL: gwRedis, env: soakEnv(o), log: logs})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := gw.close(); err != nil {
			fmt.Fprintln(stderr, "soak:", err)
		}
		if proxy != nil {
			if err := deletePrefix(o.redisURL, gw.env["REDIS_KEY_PREFIX"]); err != nil {
				fmt.Fprintln(stderr, "soak: removing the run's Redis keys:", err)
			}
		}
	}()
	freeToken, err := registerFreeUser(gw)
	if err != nil {
		return nil, err
	}

	s := newSoak(o, up, gw, proxy, logs, progress)
	s.freeToken = freeToken
	s.dataDir = dir
	s.machine = startMachineWatch(o.processStall, o.warmup+o.duration+5*time.Minute)
	defer s.machine.close()
	every := faultEvery(o.faultShare)
	s.runStart = time.Now()
	if o.warmup > 0 {
		progress("warm-up: %s, every fault once", o.warmup)
		// Compressed schedules, so the baseline already holds whatever
		// the gateway sets up once on its first fault of each kind.
		sc := &schedule{start: time.Now(), slot: o.warmup / time.Duration(len(faultCycle)), every: every,
			redisCycle: o.warmup, redisOutage: min(o.redisOutage, o.warmup/4), curSlot: -1}
		s.load(ctx, o.warmup, sc)
	}
	s.warmEnd = time.Now()
	progress("waiting for idle, then the baseline")
	base, problems, err := s.idle(ctx)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	s.baselineAt = time.Now()
	progress("baseline: %s", base.line())

	progress("run: %s at %d req/s and %d streams", o.duration, o.rate, o.streams)
	sc := &schedule{start: time.Now(), slot: o.faultSlot, every: every, redisCycle: o.redisEvery, redisOutage: o.redisOutage, curSlot: -1}
	s.mainStart = sc.start
	var timeline []string
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(o.sample)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
			now := time.Now()
			sp := s.machine.span(last, now)
			last = now
			r, err := s.sampleMetrics(ctx)
			line := fmt.Sprintf("t=%-5s sent %d, unexpected %d; ", time.Since(sc.start).Round(time.Second), s.sentSoFar(), s.unexpectedSoFar())
			if err != nil {
				line += err.Error()
			} else {
				line += r.line()
			}
			line += fmt.Sprintf("; cores: ours %.2f, others' %.2f, waiting %.0f%%; heartbeat late ≤%s ms",
				sp.ourCores, sp.otherCores, sp.waitShare*100, ms(sp.maxLate))
			progress("%s", line)
			timeline = append(timeline, line)
		}
	}()
	s.load(ctx, o.duration, sc)
	s.mainEnd = time.Now()
	close(stopSampling)
	<-sampleDone
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	progress("load stopped; waiting for idle")
	end, more, err := s.idle(ctx)
	if err != nil {
		return nil, fmt.Errorf("end: %w", err)
	}
	problems = append(problems, more...)
	if proxy != nil {
		if p := s.checkReady(ctx); p != "" {
			problems = append(problems, p)
		}
	}
	rep := s.report(stdout, base, end, problems, timeline)
	return rep, nil
}

// soakEnv is the gateway's environment for the soak, on top of the
// harness's (see startGateway).
func soakEnv(o soakOptions) map[string]string {
	minutes := int((o.warmup+o.duration)/time.Minute) + 30
	return map[string]string{
		"UPSTREAM_TIMEOUT": o.upstreamTimeout.String(),
		// The breaker would open on a burst of injected failures and then
		// fail healthy requests for its cool-down: documented, but it
		// would hide any other 502 among them. Its own tests cover it.
		"UPSTREAM_BREAKER_FAILURES":   "1000",
		"RATE_LIMIT_FREE":             "3",
		"RATE_LIMIT_FREE_REFILL":      "1",
		"LLM_MODELS":                  "gpt-4o-mini,gpt-4o",
		"MAX_BODY_BYTES":              strconv.Itoa(soakMaxBody),
		"CACHE_MAX_BYTES":             strconv.Itoa(soakCacheBytes),
		"CACHE_TTL":                   "10m",
		"TOKEN_BUDGET_FREE":           strconv.FormatInt(1<<50, 10), // on, so every call reserves and settles; never reached
		"TOKEN_BUDGET_PRO":            strconv.FormatInt(1<<50, 10),
		"ACCESS_TOKEN_EXPIRE_MINUTES": strconv.Itoa(minutes),
		"STREAM_WRITE_TIMEOUT":        "10s",
	}
}

// registerFreeUser makes a free-tier user through the API and logs in.
func registerFreeUser(g *gateway) (string, error) {
	body, _ := json.Marshal(map[string]string{"email": "soak-free-" + runNonce + "@example.com", "password": "soak-" + runNonce + "-password"})
	post := func(path string) ([]byte, error) {
		resp, err := http.Post(g.url+path, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("free user: %s: %w", path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("free user: %s: %d %s", path, resp.StatusCode, raw)
		}
		return raw, nil
	}
	if _, err := post("/auth/register"); err != nil {
		return "", err
	}
	raw, err := post("/auth/login")
	if err != nil {
		return "", err
	}
	var l struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(raw, &l) != nil || l.AccessToken == "" {
		return "", fmt.Errorf("free user: login: %s", raw)
	}
	return l.AccessToken, nil
}

// checkReady asks /ready whether the gateway is back on Redis.
func (s *soak) checkReady(ctx context.Context) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.gw.url+"/ready", nil)
	resp, err := s.scrape.Do(req)
	if err != nil {
		return "GET /ready: " + err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &r) != nil || r.Status != "ready" {
		return fmt.Sprintf("GET /ready after the last Redis outage: %d %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	return ""
}

func (s *soak) sentSoFar() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tallies {
		n += t.sent
	}
	return n
}

func (s *soak) unexpectedSoFar() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tallies {
		n += t.byClass[classUnexpected]
	}
	return n
}

// deletePrefix removes the run's keys (the budget's last two days).
func deletePrefix(redisURL, prefix string) error {
	if prefix == "" {
		return nil
	}
	rdb, err := redisconn.Open(redisconn.Options{URL: redisURL})
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A cluster has no keyspace-wide SCAN: each primary is scanned for
	// its own keys, which are deleted there one by one (keys of different
	// slots cannot share a DEL).
	if c, ok := rdb.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return deleteScanned(ctx, node, prefix, 1)
		})
	}
	return deleteScanned(ctx, rdb, prefix, 500)
}

// deleteScanned deletes the keys under prefix that SCAN finds on c, in
// DELs of up to chunk keys.
func deleteScanned(ctx context.Context, c redis.Cmdable, prefix string, chunk int) error {
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	for part := range slices.Chunk(keys, chunk) {
		if err := c.Del(ctx, part...).Err(); err != nil {
			return err
		}
	}
	return nil
}
