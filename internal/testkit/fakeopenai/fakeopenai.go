// Package fakeopenai is the one fake OpenAI-compatible upstream that tests
// and the load harness run on loopback. It speaks the chat-completions
// wire format, plain JSON and server-sent events (with usage, and tool
// calls in the chat-completions shape), lists models and answers
// embeddings, and plays an upstream's failures on request: an error
// status, a hang, a slow or cut answer, a stream that never ends or waits
// for the test.
//
// What an answer says is set by Options (one answer for every request) or
// chosen per request by Options.Respond; a fault is asked for by a marker
// in the request body ("[fault:hang]", see Fault.Marker) or by Respond.
// The wire format lives here only: tests say what to answer, never how
// to write it.
package fakeopenai

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/tidwall/gjson"
)

// Usage is an answer's token counts; the total is their sum.
type Usage struct {
	Prompt, Completion int
}

// ToolCall is one function call the model asks for.
type ToolCall struct {
	ID, Name  string
	Arguments string // JSON text
}

// Answer is what the fake answers one request with.
type Answer struct {
	// Text is a plain answer's content (default "one two three", unless
	// ToolCalls are set).
	Text string
	// Words are a streamed answer's content chunks (default: Text cut
	// after each space). Options.Chunks repeats them.
	Words []string
	// ToolCalls, when set, end the answer with these calls and the
	// finish reason "tool_calls".
	ToolCalls []ToolCall
	// Usage is a plain answer's usage (default 4 prompt + 3 completion
	// tokens); StreamUsage a streamed one's (default Usage).
	Usage, StreamUsage Usage
	// Fault, when set, is played instead of the answer (a marker in the
	// request body wins over it).
	Fault Fault
}

// Request is what Respond sees of a request.
type Request struct {
	Call   int64 // its number among the fake's calls, from 1
	Model  string
	Stream bool
	Body   []byte // valid during Respond only
	Header http.Header
}

// LastMessage is the content of the request's last message when that is
// a string.
func (r Request) LastMessage() string {
	return gjson.GetBytes(r.Body, "messages.@reverse.0.content").String()
}

// Options set up a fake upstream; the zero value is a working one.
type Options struct {
	// Key, when set, is the only API key accepted (Authorization: Bearer).
	Key string
	// Model is the model every answer names (default: the request's).
	Model string
	// Answer is every request's answer, unless Respond is set.
	Answer Answer
	// Respond chooses the answer to each request.
	Respond func(Request) Answer
	// Chunks is how many content chunks a streamed answer has, its words
	// repeated as needed (default: one per word). SetChunks changes it.
	Chunks int
	// Latency comes before an answer or its first chunk, Interval between
	// a stream's chunks; SetLatency and SetInterval change them.
	Latency, Interval time.Duration
	// Gate, when set, runs before each content chunk i (from 0) of a
	// stream and may hold it; the stream ends if the caller left meanwhile.
	Gate func(r *http.Request, i int)
	// Models are the ids GET /v1/models lists (default "gpt-test").
	Models []string
	// Record keeps the last chat request's body and header (LastRequest).
	Record bool
	// UsageNull puts "usage":null on every stream chunk before the usage
	// chunk, as OpenAI does when the request asks for
	// stream_options.include_usage.
	UsageNull bool

	// The shapes of the faults (zero: the defaults below).
	SlowDelay time.Duration // a slow plain answer's delay
	SlowGap   time.Duration // between a slow stream's chunks
	SlowWords []string      // a slow stream's chunks (default: the words, repeated to DefaultSlowChunks)
	CutAfter  int           // chunks a cut stream sends before the cut
	HangLimit time.Duration // a hung answer ends with a 500 after it, if its caller never leaves
}

// The default fault shapes.
const (
	DefaultSlowDelay  = 400 * time.Millisecond
	DefaultSlowGap    = 300 * time.Millisecond
	DefaultSlowChunks = 6
	DefaultCutAfter   = 3
	DefaultHangLimit  = 2 * time.Minute
)

// Fault is a failure the fake plays instead of an answer.
type Fault uint8

// The faults. Endless and Held shape streams only; a plain request that
// asks for them gets its answer.
const (
	None      Fault = iota
	Status500       // 500 with an OpenAI error body that names an internal file
	Status429       // 429 with Retry-After: 1
	Hang            // no answer at all until the caller leaves
	Slow            // plain: answered after SlowDelay; stream: SlowWords, SlowGap apart
	Cut             // the connection drops mid-answer: plain halfway, stream after CutAfter chunks
	Endless         // stream: the first chunk, then nothing until the caller leaves
	Held            // stream: the first chunk, then the rest once Release is called
	NumFaults
)

var faultNames = [NumFaults]string{"none", "500", "429", "hang", "slow", "cut", "endless", "held"}

func (f Fault) String() string {
	if f >= NumFaults {
		return "fault(" + strconv.Itoa(int(f)) + ")"
	}
	return faultNames[f]
}

// Marker is the text that asks for f when it appears anywhere in a
// request body (in a message's text, so it passes through a gateway).
func (f Fault) Marker() string { return "[fault:" + f.String() + "]" }

var faultPrefix = []byte("[fault:")

// FaultIn finds the fault marker of a request body, if any.
func FaultIn(body []byte) Fault {
	i := bytes.Index(body, faultPrefix)
	if i < 0 {
		return None
	}
	rest := body[i+len(faultPrefix):]
	j := bytes.IndexByte(rest, ']')
	if j < 0 {
		return None
	}
	for f := Status500; f < NumFaults; f++ {
		if string(rest[:j]) == faultNames[f] {
			return f
		}
	}
	return None
}

// Server is a running fake upstream.
type Server struct {
	// URL is its root ("http://127.0.0.1:port"); the OpenAI base URL is
	// URL + "/v1".
	URL string

	opts    Options
	srv     *http.Server
	static  *rendered // every answer, when it depends on nothing in the request
	release chan struct{}
	once    sync.Once
	bufs    sync.Pool

	latency, interval, chunks atomic.Int64

	calls  atomic.Int64
	active atomic.Int64
	conns  atomic.Int64
	models sync.Map // model → *modelCounts

	mu      sync.Mutex
	lastReq []byte
	lastHdr http.Header
}

type modelCounts struct{ calls, cancelled atomic.Int64 }

// Start runs a fake upstream on a free loopback port until Close.
func Start(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), opts: o, release: make(chan struct{})}
	s.latency.Store(int64(o.Latency))
	s.interval.Store(int64(o.Interval))
	s.chunks.Store(int64(o.Chunks))
	s.bufs.New = func() any { return new(bytes.Buffer) }
	if o.Respond == nil && o.Model != "" {
		s.static = render(o.Model, s.fill(o.Answer), o.UsageNull)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	mux.HandleFunc("POST /v1/embeddings", s.handleEmbeddings)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, `{"error":{"message":"Unknown request URL: `+r.Method+` `+r.URL.Path+`","type":"invalid_request_error","param":null,"code":"unknown_url"}}`)
	})
	s.srv = &http.Server{Handler: s.authorize(mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
			}
		}}
	go s.srv.Serve(ln)
	return s, nil
}

// New starts a fake upstream that closes with the test.
func New(t testkit.TB, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatalf("fakeopenai: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and closes its connections.
func (s *Server) Close() { s.srv.Close() }

// CloseIdle closes the idle keep-alive connections to the server (a
// client's pool to it), so that a count of goroutines or descriptors taken
// at idle does not depend on how large the pool grew.
func (s *Server) CloseIdle() {
	s.srv.SetKeepAlivesEnabled(false)
	s.srv.SetKeepAlivesEnabled(true)
}

// Release lets the held streams (fault Held) go on, now and from now on.
func (s *Server) Release() { s.once.Do(func() { close(s.release) }) }

// SetLatency, SetInterval and SetChunks change the options of the same
// names for the requests that start from now on.
func (s *Server) SetLatency(d time.Duration)  { s.latency.Store(int64(d)) }
func (s *Server) SetInterval(d time.Duration) { s.interval.Store(int64(d)) }
func (s *Server) SetChunks(n int)             { s.chunks.Store(int64(n)) }

// Calls is how many chat and embeddings calls the fake got (with an
// accepted key).
func (s *Server) Calls() int64 { return s.calls.Load() }

// CallsOf is how many chat calls named model.
func (s *Server) CallsOf(model string) int64 { return s.countsOf(model).calls.Load() }

// CancelledOf is how many chat calls naming model ended because their
// caller left before the answer did.
func (s *Server) CancelledOf(model string) int64 { return s.countsOf(model).cancelled.Load() }

// Active is how many requests are being answered now.
func (s *Server) Active() int64 { return s.active.Load() }

// Conns is how many connections are open to the server now.
func (s *Server) Conns() int64 { return s.conns.Load() }

// LastRequest returns the last chat request's body and header (with
// Options.Record).
func (s *Server) LastRequest() ([]byte, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReq, s.lastHdr
}

func (s *Server) countsOf(model string) *modelCounts {
	if c, ok := s.models.Load(model); ok {
		return c.(*modelCounts)
	}
	c, _ := s.models.LoadOrStore(model, new(modelCounts))
	return c.(*modelCounts)
}

func (s *Server) authorize(next http.Handler) http.Handler {
	if s.opts.Key == "" {
		return next
	}
	want := "Bearer " + s.opts.Key
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			writeError(w, http.StatusUnauthorized, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fill gives an answer its defaults.
func (s *Server) fill(a Answer) Answer {
	if a.Text == "" && len(a.Words) == 0 && len(a.ToolCalls) == 0 {
		a.Text = "one two three"
	}
	if a.Words == nil && a.Text != "" {
		a.Words = strings.SplitAfter(a.Text, " ")
	}
	if a.Usage == (Usage{}) {
		a.Usage = Usage{Prompt: 4, Completion: 3}
	}
	if a.StreamUsage == (Usage{}) {
		a.StreamUsage = a.Usage
	}
	return a
}

// wait holds the answer for d, or until release is closed (a nil channel
// never is), and reports false if the caller left first, counting it.
func (s *Server) wait(r *http.Request, counts *modelCounts, d time.Duration, release <-chan struct{}) bool {
	var after <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		after = t.C
	} else if release == nil && d == 0 {
		return r.Context().Err() == nil
	}
	select {
	case <-after:
		return true
	case <-release:
		return true
	case <-r.Context().Done():
		counts.cancelled.Add(1)
		return false
	}
}

// hang waits until the caller leaves (true) or limit passes (false).
func (s *Server) hang(r *http.Request, counts *modelCounts, limit time.Duration) bool {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-r.Context().Done():
		counts.cancelled.Add(1)
		return true
	case <-t.C:
		return false
	}
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	s.active.Add(1)
	defer s.active.Add(-1)
	n := s.calls.Add(1)
	buf := s.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer s.bufs.Put(buf)
	if _, err := buf.ReadFrom(r.Body); err != nil {
		writeError(w, http.StatusBadRequest, `{"error":{"message":"could not read the body","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	body := buf.Bytes()
	req := Request{Call: n, Body: body, Header: r.Header}
	fields := gjson.GetManyBytes(body, "model", "stream")
	req.Model, req.Stream = fields[0].String(), fields[1].Bool()
	counts := s.countsOf(req.Model)
	counts.calls.Add(1)
	if s.opts.Record {
		s.mu.Lock()
		s.lastReq, s.lastHdr = bytes.Clone(body), r.Header.Clone()
		s.mu.Unlock()
	}

	out := s.static
	var a Answer
	if s.opts.Respond != nil {
		a = s.opts.Respond(req)
	} else {
		a = s.opts.Answer
	}
	fault := FaultIn(body)
	if fault == None {
		fault = a.Fault
	}
	if out == nil || fault == Slow {
		model := s.opts.Model
		if model == "" {
			model = req.Model
		}
		a = s.fill(a)
		if fault == Slow && req.Stream {
			a.Words = s.slowWords(a.Words)
		}
		out = render(model, a, s.opts.UsageNull)
	}

	switch fault {
	case Status500:
		writeError(w, http.StatusInternalServerError, `{"error":{"message":"injected fault at /srv/upstream/internal.py:42","type":"server_error","param":null,"code":null}}`)
		return
	case Status429:
		w.Header()["Retry-After"] = []string{"1"}
		writeError(w, http.StatusTooManyRequests, `{"error":{"message":"injected rate limit: slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
		return
	case Hang:
		if !s.hang(r, counts, or(s.opts.HangLimit, DefaultHangLimit)) {
			writeError(w, http.StatusInternalServerError, `{"error":{"message":"hung past the fake's limit","type":"server_error","param":null,"code":null}}`)
		}
		return
	case Slow:
		if !req.Stream && !s.wait(r, counts, or(s.opts.SlowDelay, DefaultSlowDelay), nil) {
			return
		}
	}
	if !s.wait(r, counts, time.Duration(s.latency.Load()), nil) {
		return
	}
	if !req.Stream {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(out.plain))}
		if fault == Cut {
			w.Write(out.plain[:len(out.plain)/2])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // net/http drops the connection and logs nothing
		}
		w.Write(out.plain)
		return
	}
	s.stream(w, r, counts, out, fault)
}

func (s *Server) slowWords(words []string) []string {
	if s.opts.SlowWords != nil {
		return s.opts.SlowWords
	}
	out := make([]string, DefaultSlowChunks)
	for i := range out {
		out[i] = words[i%len(words)]
	}
	return out
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, counts *modelCounts, out *rendered, fault Fault) {
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	n := len(out.chunks)
	if c := int(s.chunks.Load()); c > 0 && fault != Slow {
		n = c
	}
	gap := time.Duration(s.interval.Load())
	switch fault {
	case Slow:
		gap = or(s.opts.SlowGap, DefaultSlowGap)
	case Cut:
		n = min(n, or(s.opts.CutAfter, DefaultCutAfter))
	}
	for i := 0; i < n; i++ {
		if i > 0 && gap > 0 && !s.wait(r, counts, gap, nil) {
			return
		}
		if s.opts.Gate != nil {
			s.opts.Gate(r, i)
			if r.Context().Err() != nil {
				counts.cancelled.Add(1)
				return
			}
		}
		if len(out.chunks) > 0 {
			if _, err := w.Write(out.chunk(i)); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if i == 0 {
			switch fault {
			case Endless:
				s.wait(r, counts, -1, nil)
				return
			case Held:
				if !s.wait(r, counts, -1, s.release) {
					return
				}
			}
		}
	}
	if fault == Cut {
		panic(http.ErrAbortHandler)
	}
	w.Write(out.end)
	rc.Flush()
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	model := s.opts.Model
	if model == "" {
		model = gjson.GetBytes(body, "model").String()
	}
	inputs := 1
	if in := gjson.GetBytes(body, "input"); in.IsArray() {
		inputs = max(1, len(in.Array()))
	}
	var b []byte
	b = append(b, `{"object":"list","data":[`...)
	for i := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":[0.1,-0.2,0.3]}`...)
	}
	b = append(b, `],"model":`...)
	b = strconv.AppendQuote(b, model)
	b = append(b, `,"usage":{"prompt_tokens":4,"total_tokens":4}}`...)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	ids := s.opts.Models
	if len(ids) == 0 {
		ids = []string{"gpt-test"}
	}
	var b []byte
	b = append(b, `{"object":"list","data":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = strconv.AppendQuote(b, id)
		b = append(b, `,"object":"model","created":1735689600,"owned_by":"fakeopenai"}`...)
	}
	b = append(b, `]}`...)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func writeError(w http.ResponseWriter, status int, body string) {
	w.Header()["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	io.WriteString(w, body)
}
