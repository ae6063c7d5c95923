package main

import (
	"bytes"
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
// set between phases, never during one.
type upstream struct {
	srv *http.Server
	url string // base URL including /v1

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
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go u.srv.Serve(ln)
	return u, nil
}

var streamTrue = []byte(`"stream":true`)

func (u *upstream) handleChat(w http.ResponseWriter, r *http.Request) {
	buf := u.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(r.Body)
	stream := bytes.Contains(buf.Bytes(), streamTrue)
	u.bufs.Put(buf)
	if err != nil {
		http.Error(w, `{"error":{"message":"bad body"}}`, http.StatusBadRequest)
		return
	}
	if d := time.Duration(u.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	if !stream {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(u.plain))}
		w.Write(u.plain)
		return
	}
	w.Header()["Content-Type"] = []string{"text/event-stream"}
	w.Header()["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	n := int(u.chunks.Load())
	gap := time.Duration(u.interval.Load())
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
	w.Write(u.finish)
	rc.Flush()
}

func (u *upstream) close() { u.srv.Close() }
