package fakeopenai

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// ServeHTTP checks the key, counts and records the request, and answers
// it: chat completions, embeddings and the model list, or a test's
// handler (Handle).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Key != "" && r.Header.Get("Authorization") != "Bearer "+s.opts.Key {
		writeError(w, http.StatusUnauthorized, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
		return
	}
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
	if s.opts.Record {
		s.mu.Lock()
		s.lastReq, s.lastHdr = bytes.Clone(body), r.Header.Clone()
		s.mu.Unlock()
	}
	if h := s.override.Load(); h != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		(*h)(w, r)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		s.chat(w, r, n, body)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/embeddings":
		s.embeddings(w, body)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		s.modelList(w)
	default:
		writeError(w, http.StatusNotFound, `{"error":{"message":"Unknown request URL: `+r.Method+` `+r.URL.Path+`","type":"invalid_request_error","param":null,"code":"unknown_url"}}`)
	}
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

// wait holds the answer for d (d < 0: without end), or until release is
// closed (a nil channel never is), and reports false if the caller left
// first, counting it.
func (s *Server) wait(r *http.Request, counts *modelCounts, d time.Duration, release <-chan struct{}) bool {
	var after <-chan time.Time
	switch {
	case d > 0:
		t := time.NewTimer(d)
		defer t.Stop()
		after = t.C
	case d == 0:
		return r.Context().Err() == nil
	}
	select {
	case <-after:
		return true
	case <-release:
		return true
	case <-r.Context().Done():
		s.cancel(counts)
		return false
	}
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, n int64, body []byte) {
	req := Request{Call: n, Body: body, Header: r.Header}
	fields := gjson.GetManyBytes(body, "model", "stream", "stream_options.include_usage")
	req.Model, req.Stream = fields[0].String(), fields[1].Bool()
	withUsage := !s.opts.UsageWhenAsked || fields[2].Bool()
	counts := s.countsOf(req.Model)
	counts.calls.Add(1)

	a := s.opts.Answer
	if s.opts.Respond != nil {
		a = s.opts.Respond(req)
	}
	fault := FaultIn(body)
	if fault == None {
		fault = a.Fault
	}
	out := s.static
	if out == nil || fault == Slow {
		model := s.opts.Model
		if model == "" {
			model = req.Model
		}
		a = s.fill(a)
		if fault == Slow && req.Stream {
			a.Words = s.slowWords(a.Words)
		}
		out = s.render(model, a)
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
		if s.wait(r, counts, or(s.opts.HangLimit, DefaultHangLimit), nil) {
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
	s.stream(w, r, counts, out, fault, withUsage)
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

func (s *Server) stream(w http.ResponseWriter, r *http.Request, counts *modelCounts, out *rendered, fault Fault, withUsage bool) {
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	var gate func(*http.Request, int)
	if g := s.gate.Load(); g != nil {
		gate = *g
	}
	if out.role != nil {
		w.Write(out.role)
	}
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
		if gate != nil {
			gate(r, i)
			if r.Context().Err() != nil {
				s.cancel(counts)
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
	if withUsage {
		w.Write(out.usage)
	}
	w.Write(done)
	rc.Flush()
}

var done = []byte("data: [DONE]\n\n")

func (s *Server) embeddings(w http.ResponseWriter, body []byte) {
	fields := gjson.GetManyBytes(body, "model", "input")
	model := s.opts.Model
	if model == "" {
		model = fields[0].String()
	}
	inputs := 1
	if fields[1].IsArray() {
		inputs = max(1, len(fields[1].Array()))
	}
	vector := s.opts.Embedding
	if vector == nil {
		vector = []float64{0.1, -0.2, 0.3}
	}
	tokens := int64(or(s.opts.EmbeddingTokens, 4))
	b := []byte(`{"object":"list","data":[`)
	for i := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":[`...)
		for j, v := range vector {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
		b = append(b, `]}`...)
	}
	b = append(b, `],"model":`...)
	b = strconv.AppendQuote(b, model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, tokens, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, tokens, 10)
	b = append(b, `}}`...)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) modelList(w http.ResponseWriter) {
	ids := s.opts.Models
	if len(ids) == 0 {
		ids = []string{"gpt-test"}
	}
	b := []byte(`{"object":"list","data":[`)
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

// cancel counts a call whose caller left.
func (s *Server) cancel(counts *modelCounts) {
	counts.cancelled.Add(1)
	s.cancelled.Add(1)
}
