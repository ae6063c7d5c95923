package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is a fake OpenAI-compatible provider on loopback. It answers every
// POST to /v1/chat/completions with a fixed chat completion, or with an event
// stream when the request body asks for one. Its latency and stream shape are
// set between phases, never during one. A request whose body carries a fault
// marker (see faultKind) gets that failure instead, on every attempt.
type upstream struct {
	srv *http.Server
	url string // base URL including /v1

	active atomic.Int64 // requests being answered (a hung one until its caller leaves)
	conns  atomic.Int64 // open connections

	latency  atomic.Int64 // time.Duration before the answer (or first chunk)
	chunks   atomic.Int64 // content chunks in a streamed answer
	interval atomic.Int64 // time.Duration between streamed chunks

	plain  []byte
	chunk  []byte // one "data: {...}\n\n" content event
	finish []byte // finish, usage and [DONE] events
	bufs   sync.Pool
}

// fakeAnswer is about the size of a short real answer (roughly 600 bytes).
const fakeContent = "This is the fake upstream's answer. It is long enough to look like a short model reply: " +
	"a couple of sentences of ordinary text, so that the gateway copies, parses and caches a realistic amount of bytes " +
	"on each request without the figures being dominated by payload size."

func newUpstream(latency time.Duration, chunks int, interval time.Duration) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{url: "http://" + ln.Addr().String() + "/v1"}
	u.latency.Store(int64(latency))
	u.chunks.Store(int64(chunks))
	u.interval.Store(int64(interval))
	u.plain = []byte(`{"id":"chatcmpl-harness","object":"chat.completion","created":1735689600,"model":"gpt-4o-mini-2024-07-18",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":` + strconv.Quote(fakeContent) + `,"refusal":null},` +
		`"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":42,"completion_tokens":58,"total_tokens":100},"system_fingerprint":"fp_harness"}` + "\n")
	u.chunk = []byte(`data: {"id":"chatcmpl-harness","object":"chat.completion.chunk","created":1735689600,` +
		`"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"token "},"finish_reason":null}],"usage":null}` + "\n\n")
	u.finish = []byte(`data: {"id":"chatcmpl-harness","object":"chat.completion.chunk","created":1735689600,` +
		`"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}` + "\n\n" +
		`data: {"id":"chatcmpl-harness","object":"chat.completion.chunk","created":1735689600,` +
		`"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":42,"completion_tokens":20,"total_tokens":62}}` + "\n\n" +
		"data: [DONE]\n\n")
	u.bufs.New = func() any { return new(bytes.Buffer) }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", u.handleChat)
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				u.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				u.conns.Add(-1)
			}
		}}
	go labelled("server", "upstream", func() { u.srv.Serve(ln) })
	return u, nil
}

// faultKind is a failure the fake upstream plays when a request body
// carries its marker, "[fault:<name>]" (in a message's text, so it passes
// through /chat too). The marker makes the failure deterministic: every
// attempt of the call gets it, retries included, and the caller that put
// it there knows which failure it asked for.
type faultKind uint8

const (
	faultNone faultKind = iota
	fault500            // 500 with an OpenAI error body
	fault429            // 429 with Retry-After: 1
	faultHang           // no answer at all until the caller gives up
	faultSlow           // plain: answered after slowDelay; stream: slowChunks chunks slowGap apart
	faultCut            // the connection is cut mid-answer (after slowChunks/2 chunks of a stream)
	numFaults
)

var faultNames = [numFaults]string{"none", "500", "429", "hang", "slow", "cut"}

func (f faultKind) String() string { return faultNames[f] }

// marker is the text that asks the fake upstream for f.
func (f faultKind) marker() string { return "[fault:" + faultNames[f] + "]" }

// The shapes of the slow and cut faults.
const (
	slowDelay  = 400 * time.Millisecond
	slowGap    = 300 * time.Millisecond
	slowChunks = 6
	// hangLimit ends a hung answer (with a 500) if its caller never
	// gives up, so nothing in the harness waits forever.
	hangLimit = 2 * time.Minute
)

var faultPrefix = []byte("[fault:")

// faultIn finds the fault marker of a request body, if any.
func faultIn(body []byte) faultKind {
	i := bytes.Index(body, faultPrefix)
	if i < 0 {
		return faultNone
	}
	rest := body[i+len(faultPrefix):]
	j := bytes.IndexByte(rest, ']')
	if j < 0 {
		return faultNone
	}
	for f := fault500; f < numFaults; f++ {
		if string(rest[:j]) == faultNames[f] {
			return f
		}
	}
	return faultNone
}

var streamTrue = []byte(`"stream":true`)

func (u *upstream) handleChat(w http.ResponseWriter, r *http.Request) {
	u.active.Add(1)
	defer u.active.Add(-1)
	buf := u.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(r.Body)
	stream := bytes.Contains(buf.Bytes(), streamTrue)
	fault := faultIn(buf.Bytes())
	u.bufs.Put(buf)
	if err != nil {
		http.Error(w, `{"error":{"message":"bad body"}}`, http.StatusBadRequest)
		return
	}
	switch fault {
	case fault500:
		writeUpstreamError(w, http.StatusInternalServerError, `{"error":{"message":"injected fault","type":"server_error","param":null,"code":null}}`)
		return
	case fault429:
		w.Header()["Retry-After"] = []string{"1"}
		writeUpstreamError(w, http.StatusTooManyRequests, `{"error":{"message":"injected rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
		return
	case faultHang:
		select {
		case <-r.Context().Done():
		case <-time.After(hangLimit):
			writeUpstreamError(w, http.StatusInternalServerError, `{"error":{"message":"hung past the harness's limit","type":"server_error","param":null,"code":null}}`)
		}
		return
	case faultSlow:
		if !stream {
			time.Sleep(slowDelay)
		}
	}
	if d := time.Duration(u.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	if !stream {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(u.plain))}
		if fault == faultCut {
			w.Write(u.plain[:len(u.plain)/2])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // net/http closes the connection and logs nothing
		}
		w.Write(u.plain)
		return
	}
	w.Header()["Content-Type"] = []string{"text/event-stream"}
	w.Header()["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	n := int(u.chunks.Load())
	gap := time.Duration(u.interval.Load())
	switch fault {
	case faultSlow:
		n, gap = slowChunks, slowGap
	case faultCut:
		n = slowChunks / 2
	}
	for i := 0; i < n; i++ {
		if i > 0 && gap > 0 {
			time.Sleep(gap)
		}
		if _, err := w.Write(u.chunk); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	if fault == faultCut {
		panic(http.ErrAbortHandler)
	}
	w.Write(u.finish)
	rc.Flush()
}

func writeUpstreamError(w http.ResponseWriter, status int, body string) {
	w.Header()["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// closeIdle closes the upstream's idle keep-alive connections (the
// gateway's pool to it), so that a count of goroutines or descriptors taken
// at idle does not depend on how large the pool grew under load.
func (u *upstream) closeIdle() {
	u.srv.SetKeepAlivesEnabled(false)
	u.srv.SetKeepAlivesEnabled(true)
}

func (u *upstream) close() { u.srv.Close() }
