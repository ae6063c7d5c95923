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
	"net"
	"net/http"
	"strconv"
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
	// SetGate changes it.
	Gate func(r *http.Request, i int)
	// Models are the ids GET /v1/models lists (default "gpt-test").
	Models []string
	// Embedding is every input's vector (default [0.1, -0.2, 0.3]), and
	// EmbeddingTokens an embeddings call's prompt tokens (default 4).
	Embedding       []float64
	EmbeddingTokens int
	// Record keeps the last request's body and header (LastRequest).
	Record bool

	// How streams look. OpenAI starts a stream with a chunk that gives the
	// role (RoleChunk), sends the usage chunk only when the request asks
	// for stream_options.include_usage (UsageWhenAsked), and then puts
	// "usage":null on every other chunk (UsageNull: on every stream).
	RoleChunk, UsageWhenAsked, UsageNull bool

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

// Server is a running fake upstream. Every request with an accepted key
// is counted (Calls) and, with Options.Record, kept (LastRequest).
type Server struct {
	// URL is its root ("http://127.0.0.1:port"); the OpenAI base URL is
	// URL + "/v1".
	URL string

	opts     Options
	srv      *http.Server
	override atomic.Pointer[http.HandlerFunc]
	gate     atomic.Pointer[func(r *http.Request, i int)]
	static   *rendered // every answer, when it depends on nothing in the request
	release  chan struct{}
	once     sync.Once
	bufs     sync.Pool

	latency, interval, chunks atomic.Int64

	calls     atomic.Int64
	cancelled atomic.Int64
	active    atomic.Int64
	conns     atomic.Int64
	models    sync.Map // model → *modelCounts

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
	if o.Gate != nil {
		s.gate.Store(&o.Gate)
	}
	s.latency.Store(int64(o.Latency))
	s.interval.Store(int64(o.Interval))
	s.chunks.Store(int64(o.Chunks))
	s.bufs.New = func() any { return new(bytes.Buffer) }
	if o.Respond == nil && o.Model != "" {
		s.static = s.render(o.Model, s.fill(o.Answer))
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
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

// Handle makes h answer every request from now on instead of the fake
// (nil: the fake again), for a test that needs bytes no real upstream
// sends; the fake still counts and records each request.
func (s *Server) Handle(h http.HandlerFunc) {
	if h == nil {
		s.override.Store(nil)
		return
	}
	s.override.Store(&h)
}

// SetGate sets Options.Gate for the streams that start from now on (nil:
// none).
func (s *Server) SetGate(g func(r *http.Request, i int)) {
	if g == nil {
		s.gate.Store(nil)
		return
	}
	s.gate.Store(&g)
}

// Calls is how many requests the fake got with an accepted key.
func (s *Server) Calls() int64 { return s.calls.Load() }

// CallsOf is how many chat calls named model.
func (s *Server) CallsOf(model string) int64 { return s.countsOf(model).calls.Load() }

// CancelledOf is how many chat calls naming model ended because their
// caller left before the answer did.
func (s *Server) CancelledOf(model string) int64 { return s.countsOf(model).cancelled.Load() }

// Cancelled is how many chat calls, of any model, ended because their
// caller left before the answer did.
func (s *Server) Cancelled() int64 { return s.cancelled.Load() }

// Active is how many requests are being answered now.
func (s *Server) Active() int64 { return s.active.Load() }

// Conns is how many connections are open to the server now.
func (s *Server) Conns() int64 { return s.conns.Load() }

// LastRequest returns the last request's body and header (with
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
