// Command loadharness measures what agentapi adds to a model call. It starts,
// on loopback and in this one process, a fake OpenAI upstream, a bare
// httputil.ReverseProxy to it (the floor), and the gateway itself through
// cli.Run with every governance feature on: JWT verification, the rate
// limiter (a pro bucket too large to refuse anything), cache lookup and
// store, usage recording and the JSON access log. It then loads each target
// in alternating rounds, open loop at fixed rates and closed loop at maximum
// throughput, and prints latency added over calling the upstream directly.
//
// "loadharness soak" is a different run: minutes of mixed load on one
// gateway while the upstream and Redis fail on a schedule, judged by how
// every answer matches the documented behaviour and by goroutines and
// memory at idle before and after (soak.go).
//
// See BENCHMARKS.md for the command lines and recorded figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadharness:", err)
		os.Exit(1)
	}
}

// options are the harness's flags.
type options struct {
	duration        time.Duration
	rates           []int
	rounds          int
	closedDuration  time.Duration
	workers         int
	budgetRate      int
	upstreamLatency time.Duration
	redisURL        string
	only            map[string]bool
	cachePool       int

	streams            bool
	streamRate         int
	streamDuration     time.Duration
	streamChunks       int
	chunkInterval      time.Duration
	concurrentStreams  int
	concurrentChunks   int
	concurrentInterval time.Duration
	stall              time.Duration

	cpuProfile string
	memProfile string
	trace      string
	quiet      bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadharness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rates := fs.String("rates", "500,1000,2000", "open-loop rates in requests per second, comma-separated")
	only := fs.String("targets", "", "comma-separated target ids to run (default: all available); direct always runs")
	fs.DurationVar(&o.duration, "duration", time.Second, "length of one open-loop phase (one target at one rate)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; every round runs every target, in a rotated order")
	fs.DurationVar(&o.closedDuration, "closed-duration", time.Second, "length of one closed-loop phase (0 skips closed loop)")
	fs.IntVar(&o.workers, "workers", 64, "closed-loop workers (concurrent requests)")
	fs.IntVar(&o.budgetRate, "budget-rate", 1000, "open-loop rate at which the latency budget is judged")
	fs.DurationVar(&o.upstreamLatency, "upstream-latency", 0, "fake upstream's delay before answering")
	fs.StringVar(&o.redisURL, "redis", "", "Redis URL for the Redis-backed gateway targets (empty: skip them); loopback only")
	fs.IntVar(&o.cachePool, "cache-pool", 100, "distinct bodies of the cache-hit targets")
	fs.BoolVar(&o.streams, "streams", true, "measure streaming targets")
	fs.IntVar(&o.streamRate, "stream-rate", 200, "streams opened per second in the streaming rounds")
	fs.DurationVar(&o.streamDuration, "stream-duration", time.Second, "length of one streaming phase")
	fs.IntVar(&o.streamChunks, "stream-chunks", 20, "content chunks per stream in the streaming rounds")
	fs.DurationVar(&o.chunkInterval, "chunk-interval", time.Millisecond, "upstream's pause between chunks in the streaming rounds")
	fs.IntVar(&o.concurrentStreams, "concurrent-streams", 1000, "streams held open at once in the stall test (0 skips it)")
	fs.IntVar(&o.concurrentChunks, "concurrent-chunks", 20, "chunks per stream in the stall test")
	fs.DurationVar(&o.concurrentInterval, "concurrent-interval", 50*time.Millisecond, "upstream's pause between chunks in the stall test")
	fs.DurationVar(&o.stall, "stall", 500*time.Millisecond, "a gap between two events longer than this counts as a stall")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured phases to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the measured phases to this file")
	fs.StringVar(&o.trace, "trace", "", "write a Go execution trace of the measured phases to this file (go tool trace; keep the run short)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return o, fmt.Errorf("-rates: %q is not a positive whole number", s)
		}
		o.rates = append(o.rates, n)
	}
	if *only != "" {
		o.only = map[string]bool{"direct": true}
		for _, s := range strings.Split(*only, ",") {
			o.only[strings.TrimSpace(s)] = true
		}
	}
	if o.rounds < 1 || o.workers < 1 || o.duration <= 0 || o.cachePool < 1 || o.streamRate < 1 {
		return o, errors.New("-rounds, -workers, -duration, -cache-pool and -stream-rate must be positive")
	}
	if o.redisURL != "" && !loopbackRedis(o.redisURL) {
		return o, fmt.Errorf("-redis must point at 127.0.0.1 or localhost, got %q", o.redisURL)
	}
	return o, nil
}

// loopbackRedis reports whether u names only loopback servers: one Redis
// (redis://), or every seed of a cluster (redis+cluster://) or every
// Sentinel (redis+sentinel://).
func loopbackRedis(u string) bool {
	var rest string
	for _, scheme := range []string{"redis://", "redis+cluster://", "redis+sentinel://"} {
		if r, ok := strings.CutPrefix(u, scheme); ok {
			rest = r
			break
		}
	}
	if rest == "" {
		return false
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	for host := range strings.SplitSeq(rest, ",") {
		if !strings.HasPrefix(host, "127.0.0.1") && !strings.HasPrefix(host, "localhost") {
			return false
		}
	}
	return true
}

// results holds every phase of a run, by target id.
type results struct {
	open       map[string]map[int][]phase // target → rate → one phase per round
	closed     map[string][]phase
	streams    map[string][]streamPhase
	concurrent map[string]streamPhase
	redisRTT   time.Duration
	// redisRTTsUnderLoad are PINGs sent during the Redis targets' phases
	// at the budget rate.
	redisRTTsUnderLoad []time.Duration
	loadBefore         string // 1-minute load average when measuring began
	loadAfter          string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "soak" {
		return runSoakCommand(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.memProfile != "" {
		// Sample every 64 KiB instead of 512 KiB, for a sharper picture of
		// where per-request allocations come from. Set before anything
		// allocates much, as the runtime asks.
		runtime.MemProfileRate = 64 << 10
	}
	progress := func(format string, a ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, format+"\n", a...)
		}
	}

	up, err := newUpstream(o.upstreamLatency, o.streamChunks, o.chunkInterval)
	if err != nil {
		return err
	}
	defer up.Close()
	proxyURL, closeProxy, err := newProxy(up.URL + "/v1")
	if err != nil {
		return err
	}
	defer closeProxy()

	dir, err := os.MkdirTemp("", "loadharness-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	progress("starting gateways (argon2id hashing for the harness user takes a moment)")
	var gateways []*gateway
	defer func() {
		for _, g := range gateways {
			if err := g.close(); err != nil {
				fmt.Fprintln(stderr, "loadharness:", err)
			}
			// A Redis gateway's keys (limiter, cache, login throttle) have
			// a prefix of the run's own; leave nothing behind.
			if p := g.env["REDIS_KEY_PREFIX"]; p != "" {
				if err := deletePrefix(o.redisURL, p); err != nil {
					fmt.Fprintln(stderr, "loadharness: removing the run's Redis keys:", err)
				}
			}
		}
	}()
	gw, err := startGateway(ctx, gatewayOptions{name: "inproc", dir: dir, upstream: up.URL + "/v1"})
	if err != nil {
		return err
	}
	gateways = append(gateways, gw)
	var gwRedis *gateway
	if o.redisURL != "" {
		gwRedis, err = startGateway(ctx, gatewayOptions{name: "redis", dir: dir, upstream: up.URL + "/v1", redisURL: o.redisURL})
		if err != nil {
			return err
		}
		gateways = append(gateways, gwRedis)
	}

	mcpURL, stopMCP, err := startMCPUpstream()
	if err != nil {
		return err
	}
	defer stopMCP()
	targets, notes, err := buildTargets(o, up, proxyURL, gw, gwRedis)
	if err != nil {
		return err
	}
	hasMCP, err := registerMCPServer(gw, mcpURL)
	if err != nil {
		return err
	}
	if hasMCP {
		for _, t := range []*target{
			{id: "mcp-direct", about: "tools/call straight to an MCP server of the SDK (stateless, JSON), no hop", url: mcpURL,
				header: mcpHeader(""), body: mcpCallBody("echo"), check: checkMCPCall},
			{id: "mcp-gateway", about: "the same tools/call through the gateway's /mcp (API key, registry, MCP bucket, pooled session, audit)", url: gw.url + "/mcp",
				header: mcpHeader(gw.apiKey), body: mcpCallBody(mcpBenchLabel + "__echo"), check: checkMCPCall},
		} {
			t.client = newClient(10000)
			targets = append(targets, t)
		}
	} else {
		notes = append(notes, "this build has no MCP gateway: the mcp targets were skipped")
	}
	var plain, streaming []*target
	for _, t := range targets {
		if o.only != nil && !o.only[t.id] {
			continue
		}
		if t.stream {
			if o.streams {
				streaming = append(streaming, t)
			}
		} else {
			plain = append(plain, t)
		}
	}
	if len(plain) == 0 {
		return errNoTargets
	}
	var seq atomic.Uint64
	for _, t := range append(slices.Clone(plain), streaming...) {
		var err error
		labelled("load", t.id, func() { err = t.preflight(&seq) })
		if err != nil {
			return fmt.Errorf("preflight: %w", err)
		}
	}

	m := newMeter()
	res := results{open: map[string]map[int][]phase{}, closed: map[string][]phase{},
		streams: map[string][]streamPhase{}, concurrent: map[string]streamPhase{}}

	progress("warming up %d targets", len(plain))
	for _, t := range plain {
		labelled("load", t.id, func() {
			openLoop(t, slices.Min(o.rates), min(300*time.Millisecond, o.duration), &seq, m)
			if o.closedDuration > 0 {
				closedLoop(t, o.workers, min(200*time.Millisecond, o.closedDuration), &seq, m)
			}
		})
	}

	stopProfile, err := startProfiles(o)
	if err != nil {
		return err
	}
	res.loadBefore = loadAverage()
	started := time.Now()
	settle := func() {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	for r := range o.rounds {
		order := rotate(plain, r)
		for _, rate := range o.rates {
			progress("round %d/%d: open loop %d req/s", r+1, o.rounds, rate)
			for _, t := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				settle()
				if res.open[t.id] == nil {
					res.open[t.id] = map[int][]phase{}
				}
				var stopPinger func() []time.Duration
				if o.redisURL != "" && rate == o.budgetRate && strings.HasSuffix(t.id, "-redis") {
					// Round trips measured under the same load are the
					// unit the Redis budget is counted in.
					stopPinger = startPinger(ctx, o.redisURL)
				}
				labelled("load", t.id, func() {
					res.open[t.id][rate] = append(res.open[t.id][rate], openLoop(t, rate, o.duration, &seq, m))
				})
				if stopPinger != nil {
					res.redisRTTsUnderLoad = append(res.redisRTTsUnderLoad, stopPinger()...)
				}
			}
		}
		if o.closedDuration > 0 {
			progress("round %d/%d: closed loop, %d workers", r+1, o.rounds, o.workers)
			for _, t := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				settle()
				labelled("load", t.id, func() {
					res.closed[t.id] = append(res.closed[t.id], closedLoop(t, o.workers, o.closedDuration, &seq, m))
				})
			}
		}
	}
	if len(streaming) > 0 {
		up.SetChunks(o.streamChunks)
		up.SetInterval(o.chunkInterval)
		for r := range o.rounds {
			progress("round %d/%d: streams, %d/s", r+1, o.rounds, o.streamRate)
			for _, t := range rotate(streaming, r) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				settle()
				labelled("load", t.id, func() {
					res.streams[t.id] = append(res.streams[t.id], streamLoad(t, o.streamRate, 0, o.streamDuration, o.stall, &seq))
				})
			}
		}
		if o.concurrentStreams > 0 {
			up.SetChunks(o.concurrentChunks)
			up.SetInterval(o.concurrentInterval)
			for _, t := range streaming {
				progress("%d concurrent streams: %s", o.concurrentStreams, t.id)
				settle()
				labelled("load", t.id, func() {
					res.concurrent[t.id] = streamLoad(t, 0, o.concurrentStreams, 0, o.stall, &seq)
				})
			}
		}
	}
	measured := time.Since(started)
	res.loadAfter = loadAverage()
	if err := stopProfile(); err != nil {
		return err
	}
	if o.redisURL != "" {
		res.redisRTT, err = redisRTT(ctx, o.redisURL)
		if err != nil {
			notes = append(notes, "Redis round trip not measured: "+err.Error())
		}
	}
	report(stdout, o, plain, streaming, res, notes, measured)
	return nil
}

// buildTargets lists every target this build of the gateway supports.
func buildTargets(o options, up *fakeopenai.Server, proxyURL string, gw, gwRedis *gateway) ([]*target, []string, error) {
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	bearer := func(g *gateway) http.Header {
		return http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + g.token}}
	}
	keyed := func(g *gateway) http.Header {
		return http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + g.apiKey}}
	}
	pool := uint64(o.cachePool)
	ts := []*target{
		{id: "direct", about: "the fake upstream itself, no hop (the reference)", url: up.URL + "/v1/chat/completions",
			header: jsonHeader, body: openAIBody(false), check: checkChatCompletion},
		{id: "proxy", about: "bare httputil.ReverseProxy to the upstream (the floor)", url: proxyURL + "/v1/chat/completions",
			header: jsonHeader, body: openAIBody(false), check: checkChatCompletion},
		{id: "chat", about: "gateway POST /chat, in-process limiter and cache, every body unique (cache misses)", url: gw.url + "/chat",
			header: bearer(gw), body: chatBody, check: checkChat(false)},
		{id: "chat-hit", about: fmt.Sprintf("gateway POST /chat, in-process backends, %d bodies pre-warmed (cache hits)", pool), url: gw.url + "/chat",
			header: bearer(gw), body: pooled(chatBody, pool), check: checkChat(true)},
	}
	if gwRedis != nil {
		ts = append(ts, &target{id: "chat-redis", about: "gateway POST /chat, Redis limiter and cache, every body unique", url: gwRedis.url + "/chat",
			header: bearer(gwRedis), body: chatBody, check: checkChat(false)})
	}
	var notes []string
	probeClient := newClient(4)
	hasV1, err := probe(probeClient, gw.url+"/v1/chat/completions", bearer(gw), openAIBody(false)(0))
	if err != nil {
		return nil, nil, fmt.Errorf("probing /v1: %w", err)
	}
	if hasV1 {
		ts = append(ts,
			&target{id: "v1", about: "gateway POST /v1/chat/completions, in-process backends, every body unique", url: gw.url + "/v1/chat/completions",
				header: bearer(gw), body: openAIBody(false), check: checkChatCompletion},
			&target{id: "v1-hit", about: "gateway POST /v1/chat/completions, in-process backends, cache hits", url: gw.url + "/v1/chat/completions",
				header: bearer(gw), body: pooled(openAIBody(false), pool), check: checkChatCompletion})
		if gw.apiKey != "" {
			ts = append(ts, &target{id: "v1-key", about: "gateway POST /v1/chat/completions authenticated by API key, in-process backends, every body unique",
				url: gw.url + "/v1/chat/completions", header: keyed(gw), body: openAIBody(false), check: checkChatCompletion})
		} else {
			notes = append(notes, "this build has no POST /keys: the API-key target was skipped")
		}
		if gwRedis != nil {
			ts = append(ts, &target{id: "v1-redis", about: "gateway POST /v1/chat/completions, Redis limiter and cache", url: gwRedis.url + "/v1/chat/completions",
				header: bearer(gwRedis), body: openAIBody(false), check: checkChatCompletion})
		}
	} else {
		notes = append(notes, "this build has no POST /v1/chat/completions: the v1 and streaming gateway targets were skipped")
	}
	hasResponses, err := probe(probeClient, gw.url+"/v1/responses", bearer(gw), responsesBody(false)(0))
	if err != nil {
		return nil, nil, fmt.Errorf("probing /v1/responses: %w", err)
	}
	if hasResponses {
		ts = append(ts, &target{id: "responses", about: "gateway POST /v1/responses (stored), in-process backends, every body unique", url: gw.url + "/v1/responses",
			header: bearer(gw), body: responsesBody(false), check: checkResponse})
	} else {
		notes = append(notes, "this build has no POST /v1/responses: the responses targets were skipped")
	}
	ts = append(ts,
		&target{id: "direct-stream", about: "streamed answer straight from the upstream", url: up.URL + "/v1/chat/completions",
			header: jsonHeader, body: openAIBody(true), check: checkStream, stream: true},
		&target{id: "proxy-stream", about: "streamed answer through the bare reverse proxy", url: proxyURL + "/v1/chat/completions",
			header: jsonHeader, body: openAIBody(true), check: checkStream, stream: true})
	if hasV1 {
		ts = append(ts, &target{id: "v1-stream", about: "streamed answer through gateway POST /v1/chat/completions", url: gw.url + "/v1/chat/completions",
			header: bearer(gw), body: openAIBody(true), check: checkStream, stream: true})
	}
	if hasResponses {
		ts = append(ts, &target{id: "responses-stream", about: "streamed answer through gateway POST /v1/responses (stored)", url: gw.url + "/v1/responses",
			header: bearer(gw), body: responsesBody(true), check: checkResponsesStream, stream: true})
	}
	for _, t := range ts {
		conns := 10000
		if t.stream {
			conns = 4096
		}
		t.client = newClient(conns)
		if strings.HasSuffix(t.id, "-hit") {
			t.warm = warmPool(t, pool)
		}
	}
	return ts, notes, nil
}

// rotate returns ts starting at index r, so no target always runs first
// (right after a GC) or last.
func rotate[T any](ts []T, r int) []T {
	r %= len(ts)
	return append(slices.Clone(ts[r:]), ts[:r]...)
}

func startProfiles(o options) (func() error, error) {
	var cpu *os.File
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		cpu = f
	}
	var tr *os.File
	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err == nil {
			if err = trace.Start(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			if cpu != nil {
				pprof.StopCPUProfile()
				cpu.Close()
			}
			return nil, err
		}
		tr = f
	}
	return func() error {
		if tr != nil {
			trace.Stop()
			if err := tr.Close(); err != nil {
				return err
			}
		}
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				return err
			}
		}
		if o.memProfile != "" {
			f, err := os.Create(o.memProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			return pprof.Lookup("allocs").WriteTo(f, 0)
		}
		return nil
	}, nil
}
