package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// Running the soak: the fault schedule, the open loop and the stream pool,
// one request and its record, and the Redis faults.

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
var faultCycle = []fakeopenai.Fault{fakeopenai.None, fakeopenai.Status500, fakeopenai.Status429, fakeopenai.Hang, fakeopenai.Slow, fakeopenai.Cut}

// faultFor picks the fault of a fault-carrying request sent at t: the
// current slot's, on the first request of the slot and every every-th after.
func (sc *schedule) faultFor(t time.Time) fakeopenai.Fault {
	if sc.every == 0 {
		return fakeopenai.None
	}
	n := int64(t.Sub(sc.start) / sc.slot)
	f := faultCycle[n%int64(len(faultCycle))]
	if f == fakeopenai.None {
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
	return fakeopenai.None
}

// soak is one soak run.
type soak struct {
	o         soakOptions
	up        *fakeopenai.Server
	gw        *gateway
	freeToken string
	proxy     *testkit.Proxy
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

func newSoak(o soakOptions, up *fakeopenai.Server, gw *gateway, proxy *testkit.Proxy, logs *logCollector, progress func(string, ...any)) *soak {
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
	f := fakeopenai.None
	if k.faults {
		f = sc.faultFor(now)
	}
	marker := ""
	if f != fakeopenai.None {
		marker = " " + f.Marker()
	} else if k.faults && s.o.mislabel > 0 && (s.mislabelled.Add(1)-1)%s.o.mislabel == 0 {
		marker = " " + fakeopenai.Status500.Marker() // the classifier is not told
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
func (s *soak) record(k *soakKind, f fakeopenai.Fault, c class, reason string, o *outcome, span machineSpan) {
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
		mode := "reset"
		if (s.outModes["reset"]+s.outModes["freeze"])%2 == 1 {
			mode = "freeze"
		}
		s.outModes[mode]++
		s.outages = append(s.outages, window{from: time.Now()})
		s.mu.Unlock()
		if mode == "freeze" {
			s.proxy.Freeze()
		} else {
			s.proxy.Reset()
		}
		sleepUntil(ctx, base.Add(sc.redisCycle/2+sc.redisOutage))
		// Restored even when the phase ended mid-outage.
		s.proxy.Restore()
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
