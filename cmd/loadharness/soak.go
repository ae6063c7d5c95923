package main

// The soak run ("loadharness soak"): minutes of mixed load on one gateway
// while the upstream and Redis fail on a schedule. Every answer is sorted
// into what the gateway's documented behaviour makes expected and what it
// does not, and the gateway's goroutines, heap, RSS and descriptors at idle
// after a warm-up are compared with the same figures at idle after the run.
// See BENCHMARKS.md, "Soak run".

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime/metrics"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/tier"
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
	case o.faultSlot <= 0 || o.upstreamTimeout < 100*time.Millisecond || o.stall <= slowGap || o.settle < 0 || o.sample <= 0 || o.processStall <= 0:
		return o, fmt.Errorf("-fault-slot and -sample must be positive, -upstream-timeout at least 100ms, -stall over %s", slowGap)
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

// Answer classes.
type class uint8

const (
	classOK         class = iota // 2xx as asked
	classProvoked                // the 4xx the request was built to provoke
	classFault                   // a request with an injected fault, answered as documented
	classLeft                    // a stream the client left on purpose
	classStarved                 // only late (504, stream stall, timeout) while other processes took the machine
	classUnexpected              // anything else
	numClasses
)

var classNames = [numClasses]string{"ok", "4xx provoked", "fault as documented", "client left", "process starved", "UNEXPECTED"}

// soakKind is one kind of request in the mix.
type soakKind struct {
	id       string
	endpoint string
	method   string
	path     string
	weight   int  // share of the open loop, per thousand
	stream   bool // answered as server-sent events
	chat     bool // /chat's event format (else OpenAI's)
	left     bool // the client leaves after two events
	faults   bool // carries the fault schedule's markers
	model    bool // calls the upstream (so a 504 can mean it answered late)
	want     int  // status when nothing is injected
	// also is a second acceptable status: the tiny tier's 429.
	also int
	// body builds the n-th request body with an optional fault marker.
	body func(n uint64, marker string) []byte
	// auth picks the credential of request n ("" for none).
	auth func(s *soak, n uint64) string
	// check validates the body of an answer with status want.
	check func(s *soak, body []byte) error
}

// cachePoolSize is how many bodies the cache-hit kinds cycle through.
const cachePoolSize = 50

func soakKinds() []*soakKind {
	pro := func(s *soak, n uint64) string {
		if n%2 == 0 && s.gw.apiKey != "" {
			return s.gw.apiKey
		}
		return s.gw.token
	}
	free := func(s *soak, _ uint64) string { return s.freeToken }
	none := func(*soak, uint64) string { return "" }
	v1Body := func(stream bool, pool uint64) func(uint64, string) []byte {
		return func(n uint64, marker string) []byte {
			what := "unique"
			if pool > 0 {
				n %= pool
				what = "pooled"
			}
			s := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"soak ` + runNonce + ` ` + what + ` ` +
				strconv.FormatUint(n, 10) + marker + `: summarise the trade-offs of token buckets in three sentences."}]`
			if stream {
				s += `,"stream":true`
			}
			return []byte(s + "}")
		}
	}
	chatBody := func(stream bool, pool uint64) func(uint64, string) []byte {
		return func(n uint64, marker string) []byte {
			what := "unique"
			if pool > 0 {
				n %= pool
				what = "pooled"
			}
			s := `{"message":"soak ` + runNonce + ` ` + what + ` ` + strconv.FormatUint(n, 10) + marker +
				`: summarise the trade-offs of token buckets in three sentences."`
			if stream {
				s += `,"stream":true`
			}
			return []byte(s + "}")
		}
	}
	fixed := func(b string) func(uint64, string) []byte { return func(uint64, string) []byte { return []byte(b) } }
	tooLarge := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", soakMaxBody+1) + `"}]}`
	const v1, chat = "/v1/chat/completions", "/chat"
	return []*soakKind{
		{id: "v1", model: true, endpoint: "POST " + v1, method: "POST", path: v1, weight: 200, faults: true, want: 200,
			body: v1Body(false, 0), auth: pro, check: checkCompletion},
		{id: "v1-hit", model: true, endpoint: "POST " + v1, method: "POST", path: v1, weight: 150, want: 200,
			body: v1Body(false, cachePoolSize), auth: pro, check: checkCompletion},
		{id: "chat", model: true, endpoint: "POST " + chat, method: "POST", path: chat, weight: 140, faults: true, want: 200,
			body: chatBody(false, 0), auth: pro, check: checkChatAnswer},
		{id: "chat-hit", model: true, endpoint: "POST " + chat, method: "POST", path: chat, weight: 130, want: 200,
			body: chatBody(false, cachePoolSize), auth: pro, check: checkChatAnswer},
		{id: "v1-stream", model: true, endpoint: "POST " + v1 + " (stream)", method: "POST", path: v1, weight: 60, stream: true, faults: true, want: 200,
			body: v1Body(true, 0), auth: pro},
		{id: "chat-stream", model: true, endpoint: "POST " + chat + " (stream)", method: "POST", path: chat, weight: 50, stream: true, chat: true, faults: true, want: 200,
			body: chatBody(true, 0), auth: pro},
		{id: "v1-leave", model: true, endpoint: "POST " + v1 + " (stream)", method: "POST", path: v1, weight: 20, stream: true, left: true, want: 200,
			body: v1Body(true, 0), auth: pro},
		{id: "chat-leave", model: true, endpoint: "POST " + chat + " (stream)", method: "POST", path: chat, weight: 15, stream: true, chat: true, left: true, want: 200,
			body: chatBody(true, 0), auth: pro},
		{id: "quota", endpoint: "GET /chat/quota", method: "GET", path: "/chat/quota", weight: 60, want: 200, auth: pro, check: checkQuota},
		{id: "models", endpoint: "GET /v1/models", method: "GET", path: "/v1/models", weight: 40, want: 200, auth: pro, check: checkModels},
		{id: "bad-json", endpoint: "POST " + v1, method: "POST", path: v1, weight: 20, want: 400,
			body: fixed(`{"model":"gpt-4o-mini","messages":[`), auth: pro},
		{id: "empty-message", endpoint: "POST " + chat, method: "POST", path: chat, weight: 20, want: 422,
			body: fixed(`{"message":""}`), auth: pro},
		{id: "unknown-model", endpoint: "POST " + v1, method: "POST", path: v1, weight: 20, want: 404,
			body: fixed(`{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}`), auth: pro},
		{id: "no-auth", endpoint: "POST " + chat, method: "POST", path: chat, weight: 20, want: 401,
			body: chatBody(false, cachePoolSize), auth: none},
		{id: "too-large", endpoint: "POST " + v1, method: "POST", path: v1, weight: 5, want: 413,
			body: fixed(tooLarge), auth: pro},
		{id: "tiny-tier", model: true, endpoint: "POST " + chat, method: "POST", path: chat, weight: 50, want: 200, also: 429,
			body: chatBody(false, cachePoolSize), auth: free, check: checkChatAnswer},
	}
}

// soakMaxBody is the gateway's MAX_BODY_BYTES in the soak run.
const soakMaxBody = 64 << 10

// soakCacheBytes is the in-process cache's bound in the soak run: the
// warm-up's misses (about 50 KiB/s at the default rate) fill it, so it
// does not grow between the baseline and the end.
const soakCacheBytes = 1 << 20

// checkCompletion accepts an OpenAI chat completion.
func checkCompletion(_ *soak, body []byte) error { return checkChatCompletion(200, body) }

// checkChatAnswer accepts a /chat answer, from the model or the cache.
func checkChatAnswer(_ *soak, body []byte) error {
	var c struct {
		Response *string `json:"response"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Response == nil || *c.Response == "" {
		return fmt.Errorf("not a /chat answer: %.200s", body)
	}
	return nil
}

func checkQuota(_ *soak, body []byte) error {
	var q struct {
		Tier  string `json:"tier"`
		Limit int64  `json:"limit"`
	}
	if err := json.Unmarshal(body, &q); err != nil || q.Tier != tier.Pro || q.Limit <= 0 {
		return fmt.Errorf("not the pro user's quota: %.200s", body)
	}
	return nil
}

func checkModels(_ *soak, body []byte) error {
	var m struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &m); err != nil || len(m.Data) == 0 || m.Data[0].ID == "" {
		return fmt.Errorf("not a model list: %.200s", body)
	}
	return nil
}

// checkErrorBody accepts the gateway's error shapes: OpenAI's on /v1,
// {"error", "path"} elsewhere, and a request id on every 5xx.
func checkErrorBody(path string, status int, body []byte) error {
	if strings.HasPrefix(path, "/v1/") {
		var e struct {
			Error *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
			return fmt.Errorf("not an OpenAI error: %.200s", body)
		}
		if status >= 500 && !strings.Contains(e.Error.Message, "request id") {
			return fmt.Errorf("5xx without its request id: %.200s", body)
		}
		return nil
	}
	var e struct {
		Error     json.RawMessage `json:"error"`
		Path      string          `json:"path"`
		RequestID string          `json:"request_id"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Error) == 0 || e.Path != path {
		return fmt.Errorf("not a gateway error: %.200s", body)
	}
	if status >= 500 && e.RequestID == "" {
		return fmt.Errorf("5xx without its request id: %.200s", body)
	}
	return nil
}

// outcome is what one request got.
type outcome struct {
	status int
	header http.Header
	body   []byte // a plain answer, or a stream's error answer (capped)
	err    error  // a transport error, not counting a deliberate leave

	events   int           // stream: content events
	done     bool          // stream: ended with [DONE] or "event: done"
	errEvent bool          // stream: ended with the documented error event
	trailing bool          // stream: anything after its closing event, or an unknown event
	stalled  bool          // stream: no event for the stall threshold
	left     bool          // stream: the client left on purpose
	maxGap   time.Duration // stream: longest wait between events

	start, end time.Time
	requestID  string
	// starved is set when the machine was taken from this process while
	// the request ran (see machineWatch).
	starved bool
}

// wantStatus is the status the gateway documents for kind k with fault f.
func wantStatus(k *soakKind, f faultKind) int {
	switch f {
	case fault500:
		return http.StatusBadGateway
	case fault429:
		return http.StatusServiceUnavailable
	case faultHang:
		return http.StatusGatewayTimeout
	case faultCut:
		if !k.stream {
			return http.StatusBadGateway
		}
	}
	return k.want
}

// classify sorts one answer. The reason names what was wrong with an
// unexpected one; it is short and stable, so reasons can be counted.
func classify(s *soak, k *soakKind, f faultKind, o *outcome) (class, string) {
	// late is what a starved process explains: the fake upstream, in
	// this process too, did not answer in time.
	late := func(reason string) (class, string) {
		if o.starved {
			return classStarved, ""
		}
		return classUnexpected, reason
	}
	switch {
	case o.stalled:
		return late("stream stalled (no event within the stall threshold)")
	case o.err != nil && errorKind(o.err) == "timeout":
		return late("transport error: timeout")
	case o.err != nil:
		return classUnexpected, "transport error: " + errorKind(o.err)
	}
	want := wantStatus(k, f)
	if o.status != want && (f != faultNone || o.status != k.also) {
		if o.status == http.StatusGatewayTimeout && k.model {
			return late(fmt.Sprintf("unexplained %d (wanted %d)", o.status, want))
		}
		if o.status >= 500 {
			return classUnexpected, fmt.Sprintf("unexplained %d (wanted %d)", o.status, want)
		}
		return classUnexpected, fmt.Sprintf("status %d (wanted %d)", o.status, want)
	}
	good := classOK
	if f != faultNone {
		good = classFault
	}
	if o.status >= 400 {
		if err := checkErrorBody(k.path, o.status, o.body); err != nil {
			return classUnexpected, fmt.Sprintf("malformed %d body", o.status)
		}
		if (o.status == 429 || o.status == 503) && o.header.Get("Retry-After") == "" {
			return classUnexpected, fmt.Sprintf("%d without Retry-After", o.status)
		}
		if good == classOK {
			good = classProvoked
		}
		return good, ""
	}
	if !k.stream {
		if err := k.check(s, o.body); err != nil {
			return classUnexpected, "malformed 200 body"
		}
		return good, ""
	}
	switch {
	case o.trailing:
		return classUnexpected, "stream: events after its end, or of an unknown kind"
	case o.left:
		return classLeft, ""
	case f == faultCut && o.errEvent && !o.done:
		return classFault, ""
	case f == faultCut:
		return classUnexpected, "stream cut by the upstream did not end with the error event"
	case o.errEvent:
		return classUnexpected, "stream ended with an error event"
	case !o.done:
		return classUnexpected, "stream ended without its closing event"
	case o.events == 0:
		return classUnexpected, "stream without content"
	}
	return good, ""
}

// errorKind shortens a transport error to something countable.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	}
	return err.Error()
}

// example is one unexpected answer, kept for the report.
type example struct {
	at        time.Duration // since the run started
	kind      string
	fault     faultKind
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

// schedule is when faults happen in one phase.
type schedule struct {
	start       time.Time
	slot        time.Duration
	every       uint64 // a fault on one in every this many fault-carrying requests
	redisCycle  time.Duration
	redisOutage time.Duration

	mu      sync.Mutex
	curSlot int64
	inSlot  uint64
}

// faultCycle is the order of the upstream fault slots.
var faultCycle = []faultKind{faultNone, fault500, fault429, faultHang, faultSlow, faultCut}

// faultFor picks the fault of a fault-carrying request sent at t: the
// current slot's, on the first request of the slot and every every-th after.
func (sc *schedule) faultFor(t time.Time) faultKind {
	if sc.every == 0 {
		return faultNone
	}
	n := int64(t.Sub(sc.start) / sc.slot)
	f := faultCycle[n%int64(len(faultCycle))]
	if f == faultNone {
		return f
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if n != sc.curSlot {
		sc.curSlot, sc.inSlot = n, 0
	}
	sc.inSlot++
	if (sc.inSlot-1)%sc.every == 0 {
		return f
	}
	return faultNone
}

// soak is one soak run.
type soak struct {
	o         soakOptions
	up        *upstream
	gw        *gateway
	freeToken string
	proxy     *redisProxy
	logs      *logCollector
	kinds     []*soakKind
	weights   []int // cumulative, per thousand
	plain     *http.Client
	streaming *http.Client
	scrape    *http.Client
	progress  func(string, ...any)
	runStart  time.Time
	dataDir   string // the gateway's SQLite files are here
	// The phases: the warm-up's load ends at warmEnd, the baseline is read
	// at baselineAt, the run's load goes from mainStart to mainEnd.
	warmEnd, baselineAt, mainStart, mainEnd time.Time
	machine                                 *machineWatch

	seq         atomic.Uint64
	mislabelled atomic.Uint64 // fault-free requests of fault-carrying kinds, for -mislabel
	inflight    sync.WaitGroup
	running     atomic.Int64 // open-loop requests in flight
	skipped     atomic.Int64 // open-loop requests not sent: too many in flight

	mu        sync.Mutex
	tallies   map[*soakKind]*tally
	faults    [numFaults][numClasses]int
	reasons   map[string]int // "<kind>: <reason>" of unexpected answers
	examples  []example
	outages   []window
	flushes   int
	flushErrs []string
	outModes  map[string]int
	// cutUnexpected counts unexpected answers that overlapped a Redis outage.
	cutUnexpected int
	streamKinds   []*soakKind
}

type window struct{ from, to time.Time } // to is zero while it lasts

// maxInFlight bounds the open loop's concurrency: past it the gateway is
// not keeping up, and sending more would only measure the harness.
const maxInFlight = 4096

func newSoak(o soakOptions, up *upstream, gw *gateway, proxy *redisProxy, logs *logCollector, progress func(string, ...any)) *soak {
	s := &soak{o: o, up: up, gw: gw, proxy: proxy, logs: logs, kinds: soakKinds(), progress: progress,
		tallies: map[*soakKind]*tally{}, reasons: map[string]int{}, outModes: map[string]int{}}
	total := 0
	byID := map[string]*soakKind{}
	for _, k := range s.kinds {
		total += k.weight
		s.weights = append(s.weights, total)
		s.tallies[k] = &tally{}
		byID[k.id] = k
	}
	// The stream pool: mostly complete streams, some the client leaves.
	for _, id := range []string{"v1-stream", "v1-stream", "v1-stream", "chat-stream", "chat-stream", "v1-leave", "chat-leave"} {
		s.streamKinds = append(s.streamKinds, byID[id])
	}
	s.plain = newClient(1024)
	// A plain answer takes at most the first-byte budget and the body
	// budget again (see llm.Client), plus the stall allowance.
	s.plain.Timeout = 2*o.upstreamTimeout + o.stall + 5*time.Second
	s.streaming = newClient(1024)
	s.streaming.Timeout = 0 // streams are watched event by event
	s.scrape = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	return s
}

// pick chooses a kind of the open-loop mix.
func (s *soak) pick(rng *rand.Rand) *soakKind {
	x := rng.IntN(s.weights[len(s.weights)-1])
	i, _ := slices.BinarySearch(s.weights, x+1)
	return s.kinds[i]
}

// pickStream chooses what the stream pool opens next.
func (s *soak) pickStream(rng *rand.Rand) *soakKind {
	return s.streamKinds[rng.IntN(len(s.streamKinds))]
}

// one sends a request of kind k and records its class.
func (s *soak) one(ctx context.Context, k *soakKind, sc *schedule) {
	n := s.seq.Add(1)
	now := time.Now()
	f := faultNone
	if k.faults {
		f = sc.faultFor(now)
	}
	marker := ""
	if f != faultNone {
		marker = " " + f.marker()
	} else if k.faults && s.o.mislabel > 0 && (s.mislabelled.Add(1)-1)%s.o.mislabel == 0 {
		marker = " " + fault500.marker() // the classifier is not told
	}
	var body []byte
	if k.body != nil {
		body = k.body(n, marker)
	}
	start := time.Now()
	o := s.send(ctx, k, n, body)
	o.start, o.end = start, time.Now()
	if ctx.Err() != nil && o.err != nil {
		return // interrupted: nothing to judge
	}
	c, reason := classify(s, k, f, &o)
	var span machineSpan
	if c == classUnexpected {
		// The watch samples every tick: let it sample past the end.
		time.Sleep(2 * stallTick)
		span = s.machine.span(o.start, o.end)
		if s.o.excuseStarved {
			if o.starved = s.machine.starved(span); o.starved {
				c, reason = classify(s, k, f, &o)
			}
		}
	}
	s.record(k, f, c, reason, &o, span)
}

// send makes the request and reads the answer as the kind asks.
func (s *soak) send(ctx context.Context, k *soakKind, n uint64, body []byte) outcome {
	var o outcome
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, k.method, s.gw.url+k.path, rd)
	if err != nil {
		o.err = err
		return o
	}
	if body != nil {
		req.Header["Content-Type"] = []string{"application/json"}
	}
	if a := k.auth(s, n); a != "" {
		req.Header["Authorization"] = []string{"Bearer " + a}
	}
	if !k.stream {
		resp, err := s.plain.Do(req)
		if err != nil {
			o.err = err
			return o
		}
		defer resp.Body.Close()
		o.status, o.header, o.requestID = resp.StatusCode, resp.Header, resp.Header.Get("X-Request-ID")
		o.body, o.err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return o
	}

	// A stream is watched by a timer that cancels it when nothing has
	// arrived for the stall threshold; before the headers, the gateway
	// may spend its whole upstream budget first.
	var stalled atomic.Bool
	watch := time.AfterFunc(s.o.upstreamTimeout+s.o.stall, func() {
		stalled.Store(true)
		cancel()
	})
	defer watch.Stop()
	resp, err := s.streaming.Do(req)
	if err != nil {
		o.stalled = stalled.Load()
		o.err = err
		return o
	}
	defer resp.Body.Close()
	o.status, o.header, o.requestID = resp.StatusCode, resp.Header, resp.Header.Get("X-Request-ID")
	if resp.StatusCode != http.StatusOK || mediaTypeOf(resp.Header.Get("Content-Type")) != "text/event-stream" {
		o.body, o.err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		o.stalled = stalled.Load()
		if o.status == http.StatusOK {
			o.trailing = true // a 200 that is not an event stream
		}
		return o
	}
	watch.Reset(s.o.stall)
	r := bufio.NewReaderSize(resp.Body, 16<<10)
	last := time.Now()
	event := "" // /chat's current event name
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			line = bytes.TrimRight(line, "\r\n")
			now := time.Now()
			switch {
			case k.chat && bytes.HasPrefix(line, []byte("event: ")):
				event = string(line[len("event: "):])
			case bytes.HasPrefix(line, []byte("data: ")):
				watch.Reset(s.o.stall)
				o.maxGap = max(o.maxGap, now.Sub(last))
				last = now
				if o.done || o.errEvent {
					o.trailing = true
				}
				payload := line[len("data: "):]
				switch {
				case k.chat && event == "delta":
					o.events++
				case k.chat && event == "done":
					o.done = true
				case k.chat && event == "error":
					o.errEvent = true
				case k.chat:
					o.trailing = true
				case bytes.Equal(payload, []byte("[DONE]")):
					o.done = true
				case bytes.HasPrefix(payload, []byte(`{"error"`)):
					o.errEvent = true
				case len(payload) > 0 && payload[0] == '{':
					o.events++
				default:
					o.trailing = true
				}
				event = ""
			}
			if k.left && o.events >= 2 {
				o.left = true
				cancel()
				return o
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
			case stalled.Load():
				o.stalled = true
			default:
				o.err = err
			}
			return o
		}
	}
}

func mediaTypeOf(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// record adds one answer to the tallies.
func (s *soak) record(k *soakKind, f faultKind, c class, reason string, o *outcome, span machineSpan) {
	cut := s.duringOutage(o.start, o.end)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tallies[k]
	t.sent++
	t.byClass[c]++
	if cut {
		t.redisCut++
	}
	if c == classOK && k.stream {
		t.maxGap = max(t.maxGap, o.maxGap)
	}
	if c == classOK {
		t.latency.add(o.end.Sub(o.start))
	}
	s.faults[f][c]++
	if c != classUnexpected {
		return
	}
	if cut {
		s.cutUnexpected++
	}
	key := k.id + ": " + reason
	s.reasons[key]++
	// A few examples of each reason, with their log lines.
	if s.reasons[key] <= 3 && len(s.examples) < 20 {
		body := string(o.body)
		if len(body) > 300 {
			body = body[:300] + "…"
		}
		s.examples = append(s.examples, example{at: o.start.Sub(s.runStart), took: o.end.Sub(o.start), kind: k.id, fault: f, status: o.status,
			reason: reason, requestID: o.requestID, redisCut: cut, body: body, machine: span.String()})
		s.logs.watch(o.requestID)
	}
}

// duringOutage reports whether [from, to] overlaps a Redis outage or the
// second after one (while the gateway's probe brings Redis back).
func (s *soak) duringOutage(from, to time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.outages {
		if !w.to.IsZero() && from.After(w.to.Add(time.Second)) {
			continue
		}
		if to.Before(w.from) {
			continue
		}
		return true
	}
	return false
}

// load runs the mix for d: the open loop at the set rate, the stream pool,
// and the Redis faults. It returns when the load stops; requests still in
// flight are waited for by drain.
func (s *soak) load(ctx context.Context, d time.Duration, sc *schedule) {
	phase, stop := context.WithTimeout(ctx, d)
	defer stop()
	var wg sync.WaitGroup
	for i := range s.o.streams {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(sc.start.UnixNano())))
			for phase.Err() == nil {
				// The request itself runs on ctx: the end of the phase
				// must not look like the client leaving.
				s.one(ctx, s.pickStream(rng), sc)
			}
		})
	}
	if s.proxy != nil {
		wg.Go(func() { s.redisFaults(phase, sc) })
	}
	rng := rand.New(rand.NewPCG(7, uint64(sc.start.UnixNano())))
	period := time.Second / time.Duration(s.o.rate)
	for i := 0; ; i++ {
		at := sc.start.Add(time.Duration(i) * period)
		if at.Sub(sc.start) >= d || phase.Err() != nil {
			break
		}
		time.Sleep(time.Until(at))
		if s.running.Load() >= maxInFlight {
			s.skipped.Add(1)
			continue
		}
		k := s.pick(rng)
		s.running.Add(1)
		s.inflight.Go(func() {
			defer s.running.Add(-1)
			s.one(ctx, k, sc)
		})
	}
	<-phase.Done()
	wg.Wait()
}

// redisFaults flushes Redis's scripts at a quarter of each cycle and cuts
// Redis from half of it for the outage's length, alternating between
// resetting connections and freezing them.
func (s *soak) redisFaults(ctx context.Context, sc *schedule) {
	for c := 0; ; c++ {
		base := sc.start.Add(time.Duration(c) * sc.redisCycle)
		if !sleepUntil(ctx, base.Add(sc.redisCycle/4)) {
			return
		}
		s.scriptFlush(ctx)
		if !sleepUntil(ctx, base.Add(sc.redisCycle/2)) {
			return
		}
		s.mu.Lock()
		mode := proxyReset
		if (s.outModes["reset"]+s.outModes["freeze"])%2 == 1 {
			mode = proxyFreeze
		}
		s.outModes[mode.String()]++
		s.outages = append(s.outages, window{from: time.Now()})
		s.mu.Unlock()
		s.proxy.cut(mode)
		sleepUntil(ctx, base.Add(sc.redisCycle/2+sc.redisOutage))
		// Restored even when the phase ended mid-outage.
		s.proxy.restore()
		s.mu.Lock()
		s.outages[len(s.outages)-1].to = time.Now()
		s.mu.Unlock()
	}
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	tm := time.NewTimer(time.Until(t))
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// scriptFlush empties Redis's script cache, straight on the real server:
// the gateway's next EVALSHA gets NOSCRIPT and must load its script again.
func (s *soak) scriptFlush(ctx context.Context) {
	rdb, err := redisconn.Open(redisconn.Options{URL: s.o.redisURL})
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = rdb.ScriptFlush(ctx).Err()
		cancel()
		rdb.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.flushErrs = append(s.flushErrs, err.Error())
		return
	}
	s.flushes++
}

// drain waits for the open loop's requests in flight, at most limit.
func (s *soak) drain(limit time.Duration) bool {
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

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
		r.proxyRoutine, r.proxyFDs, r.proxyConns = s.proxy.goroutines.Load(), s.proxy.fds.Load(), s.proxy.pairs.Load()
	}
	r.upActive, r.upConns = s.up.active.Load(), s.up.conns.Load()
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
	s.up.closeIdle()
	sleepUntil(ctx, time.Now().Add(s.o.settle))
	r, err := s.sampleMetrics(ctx)
	return r, problems, err
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
	defer up.close()
	dir, err := os.MkdirTemp("", "loadharness-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	var proxy *redisProxy
	gwRedis := ""
	if o.redisURL != "" {
		proxy, gwRedis, err = startRedisProxy(o.redisURL)
		if err != nil {
			return nil, err
		}
		defer proxy.close()
	}
	logs := newLogCollector()
	progress("starting the gateway")
	gw, err := startGateway(ctx, gatewayOptions{name: "soak", dir: dir, upstream: up.url, redisURL: gwRedis, env: soakEnv(o), log: logs})
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

func mib(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }

func (r resources) line() string {
	return fmt.Sprintf("goroutines %.0f, heap in use %s MiB, heap goal %s MiB, RSS %s MiB, fds %.0f",
		r.goroutines, mib(r.heapInuse), mib(r.heapGoal), mib(r.rss), r.fds)
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
	for f := fault500; f < numFaults; f++ {
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

// logCollector keeps the gateway's WARN and ERROR lines: counts by
// message, and the most recent lines to show next to unexpected answers.
type logCollector struct {
	mu      sync.Mutex
	counts  map[string]int
	recent  [][]byte
	next    int
	watched map[string][]string // request id → its lines, for the examples
}

// logKeep bounds the recent lines kept (to find the lines an example's
// request wrote before it was watched); small, so that it is full early in
// the warm-up and does not grow the heap between the two samples.
const logKeep = 512

func newLogCollector() *logCollector {
	return &logCollector{counts: map[string]int{}, watched: map[string][]string{}}
}

// watch keeps every WARN and ERROR line of a request id, those already
// seen and those to come (the access line is written after the answer).
func (l *logCollector) watch(id string) {
	if id == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.watched[id]; ok {
		return
	}
	var lines []string
	for _, p := range l.recent {
		if bytes.Contains(p, []byte(id)) {
			lines = append(lines, string(p))
		}
	}
	l.watched[id] = lines
}

var (
	levelWarn  = []byte(`"level":"WARN"`)
	levelError = []byte(`"level":"ERROR"`)
)

func (l *logCollector) Write(p []byte) (int, error) {
	if !bytes.Contains(p, levelError) && !bytes.Contains(p, levelWarn) {
		return len(p), nil
	}
	var line struct {
		Level     string `json:"level"`
		Msg       string `json:"msg"`
		Status    int    `json:"status"`
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	json.Unmarshal(p, &line)
	key := line.Level + " " + strconv.Quote(line.Msg)
	if line.Status != 0 {
		key += " status=" + strconv.Itoa(line.Status)
	}
	if line.Error != "" {
		key += " error=" + strconv.Quote(shortenError(line.Error))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[key]++
	c := bytes.Clone(bytes.TrimSpace(p))
	if lines, ok := l.watched[line.RequestID]; ok {
		l.watched[line.RequestID] = append(lines, string(c))
	}
	if len(l.recent) < logKeep {
		l.recent = append(l.recent, c)
	} else {
		l.recent[l.next] = c
		l.next = (l.next + 1) % logKeep
	}
	return len(p), nil
}

// Parts of error messages that differ from line to line: durations
// ("within 1.99999975s"), addresses with their ports, user ids.
var (
	durationText = regexp.MustCompile(`\b[0-9]+(\.[0-9]+)?(ns|µs|ms|s|m|h)\b`)
	addressText  = regexp.MustCompile(`\b[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+\b`)
	idText       = regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)
)

// shortenError keeps an error message countable.
func shortenError(e string) string {
	if i := strings.Index(e, "request id"); i >= 0 {
		e = e[:i]
	}
	e = addressText.ReplaceAllString(e, "<addr>")
	e = idText.ReplaceAllString(e, "<id>")
	e = durationText.ReplaceAllString(e, "<duration>")
	if len(e) > 160 {
		e = e[:160] + "…"
	}
	return e
}

// lines returns the lines of a watched request id.
func (l *logCollector) lines(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.watched[id])
}

// summary lists the counts, most frequent first.
func (l *logCollector) summary() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.counts))
	for k := range l.counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if l.counts[keys[i]] != l.counts[keys[j]] {
			return l.counts[keys[i]] > l.counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%7d  %s", l.counts[k], k))
	}
	if len(out) == 0 {
		out = append(out, "(none)")
	}
	return out
}

// proxyMode is the state of the Redis proxy.
type proxyMode uint8

const (
	proxyUp     proxyMode = iota
	proxyReset            // connections reset at once: Redis down
	proxyFreeze           // connections accepted and never answered: Redis hung
)

func (m proxyMode) String() string { return [...]string{"up", "reset", "freeze"}[m] }

// redisProxy is a TCP proxy between the gateway and Redis, so the run can
// make Redis unreachable for the gateway without touching the server,
// which other things use.
type redisProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  proxyMode
	live  map[*proxyPair]struct{}
	held  []net.Conn // the gateway's connections while frozen
	pairs atomic.Int64

	goroutines atomic.Int64
	fds        atomic.Int64
}

type proxyPair struct{ client, server net.Conn }

// startRedisProxy listens on loopback and returns the Redis URL that
// reaches redisURL's server through it.
func startRedisProxy(redisURL string) (*redisProxy, string, error) {
	u, err := url.Parse(redisURL)
	if err != nil {
		return nil, "", fmt.Errorf("-redis: %w", err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "6379")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	p := &redisProxy{ln: ln, target: target, live: map[*proxyPair]struct{}{}}
	go p.serve()
	u.Host = ln.Addr().String()
	return p, u.String(), nil
}

// countedConn counts its descriptor once, however often it is closed.
type countedConn struct {
	net.Conn
	once sync.Once
	fds  *atomic.Int64
}

func (c *countedConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.fds.Add(-1)
		err = c.Conn.Close()
	})
	return err
}

// reset closes a connection with an RST, as a peer that went away would.
func reset(c net.Conn) {
	if cc, ok := c.(*countedConn); ok {
		if tc, ok := cc.Conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	c.Close()
}

func (p *redisProxy) serve() {
	for {
		raw, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.fds.Add(1)
		c := &countedConn{Conn: raw, fds: &p.fds}
		p.mu.Lock()
		switch p.mode {
		case proxyReset:
			p.mu.Unlock()
			reset(c)
			continue
		case proxyFreeze:
			p.held = append(p.held, c)
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		p.goroutines.Add(1)
		go p.pipe(c)
	}
}

// pipe copies between the gateway's connection c and a new one to Redis.
func (p *redisProxy) pipe(c net.Conn) {
	defer p.goroutines.Add(-1)
	raw, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		reset(c)
		return
	}
	p.fds.Add(1)
	s := &countedConn{Conn: raw, fds: &p.fds}
	pr := &proxyPair{client: c, server: s}
	p.mu.Lock()
	if p.mode != proxyUp { // cut while dialling
		mode := p.mode
		if mode == proxyFreeze {
			p.held = append(p.held, c)
		}
		p.mu.Unlock()
		s.Close()
		if mode == proxyReset {
			reset(c)
		}
		return
	}
	p.live[pr] = struct{}{}
	p.pairs.Add(1)
	p.mu.Unlock()

	p.goroutines.Add(1)
	go func() {
		defer p.goroutines.Add(-1)
		io.Copy(s, c)
		s.Close()
	}()
	io.Copy(c, s)
	p.mu.Lock()
	_, mine := p.live[pr]
	if mine {
		delete(p.live, pr)
		p.pairs.Add(-1)
	}
	p.mu.Unlock()
	if mine {
		// Redis or the gateway closed it; a cut has already dealt with c.
		c.Close()
	}
}

// cut makes Redis unreachable: existing connections are reset (mode reset)
// or stop being answered (mode freeze), and so are new ones.
func (p *redisProxy) cut(mode proxyMode) {
	p.mu.Lock()
	p.mode = mode
	pairs := make([]*proxyPair, 0, len(p.live))
	for pr := range p.live {
		pairs = append(pairs, pr)
		delete(p.live, pr)
		p.pairs.Add(-1)
		if mode == proxyFreeze {
			p.held = append(p.held, pr.client)
		}
	}
	p.mu.Unlock()
	for _, pr := range pairs {
		pr.server.Close()
		if mode == proxyReset {
			reset(pr.client)
		}
	}
}

// restore lets connections through again and closes the frozen ones (the
// gateway has given up on them by then).
func (p *redisProxy) restore() {
	p.mu.Lock()
	p.mode = proxyUp
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, c := range held {
		c.Close()
	}
}

func (p *redisProxy) close() {
	p.ln.Close()
	p.cut(proxyReset)
	p.restore()
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
