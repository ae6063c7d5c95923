package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/tidwall/sjson"
)

// streamEncoder turns an upstream chat-completions stream into what one
// route's client reads. Each method appends to buf and returns it.
type streamEncoder interface {
	// chunk appends what the client sees of one upstream chunk (perhaps
	// nothing). When it had to read the chunk's text it returns it with
	// read true; otherwise the relay reads the text after the write, so
	// that parsing never delays the bytes.
	chunk(buf, payload []byte) (out []byte, text string, read bool)
	// done appends the end of a stream that finished.
	done(buf []byte, u llm.Usage, model string) []byte
	// failed appends the end of a stream the upstream broke off.
	failed(buf []byte, requestID string) []byte
}

// openAIChunks passes the upstream's chunks through as OpenAI sends them,
// ending with "data: [DONE]". The usage-only chunk the gateway asked for
// goes through only when the client asked for it too.
type openAIChunks struct{ passUsage bool }

func (e openAIChunks) chunk(buf, payload []byte) ([]byte, string, bool) {
	if !e.passUsage && llm.UsageOnlyChunk(payload) {
		return buf, "", true
	}
	buf = append(buf, "data: "...)
	buf = append(buf, payload...)
	return append(buf, "\n\n"...), "", false
}

func (openAIChunks) done(buf []byte, _ llm.Usage, _ string) []byte {
	return append(buf, "data: [DONE]\n\n"...)
}

func (openAIChunks) failed(buf []byte, requestID string) []byte {
	b, _ := json.Marshal(openAIErrorBody{Error: openAIErrorObject{
		Message: "The model's stream broke off (request id " + requestID + ")", Type: "api_error"}})
	return append(append(append(buf, "data: "...), b...), "\n\n"...)
}

// chatEvents is /chat's own event stream: "delta" events with text, then
// one "done" (or "error") event. See docs/api.md.
type chatEvents struct{}

func (chatEvents) chunk(buf, payload []byte) ([]byte, string, bool) {
	delta, err := llm.StreamDelta(payload)
	if err != nil || delta == "" {
		return buf, "", true
	}
	return appendEvent(buf, "delta", chatStreamDelta{Content: delta}), delta, true
}

func (chatEvents) done(buf []byte, u llm.Usage, model string) []byte {
	return appendEvent(buf, "done", chatStreamDone{TokensUsed: u.TotalTokens, Model: model})
}

func (chatEvents) failed(buf []byte, requestID string) []byte {
	return appendEvent(buf, "error", chatStreamError{Error: "Upstream model failed", RequestID: requestID})
}

// chatStreamDelta, chatStreamDone and chatStreamError are the payloads of
// /chat's events.
type chatStreamDelta struct {
	Content string `json:"content"`
}

type chatStreamDone struct {
	TokensUsed int64  `json:"tokens_used"`
	FromCache  bool   `json:"from_cache"`
	Model      string `json:"model"`
}

type chatStreamError struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

// streamingBody asks the upstream for a stream that ends with its usage.
func streamingBody(body []byte) ([]byte, error) {
	out, err := sjson.SetBytes(body, "stream", true)
	if err == nil {
		out, err = sjson.SetBytes(out, "stream_options.include_usage", true)
	}
	return out, err
}

// relay opens the call's upstream stream and copies it to the client event
// by event, each written and flushed as it arrives and each write bounded
// by the stream write timeout (the server has no WriteTimeout, which would
// cut long answers). Errors before the first event get an ordinary error
// response; after it, the encoder's error event ends the stream. However it
// ends — finished, upstream broken off, client gone — the call is finished
// with its tokens: the upstream's usage when it sent one, else an estimate
// from the request and the text streamed so far. A client that goes away
// cancels the upstream call at once (the request context is the upstream
// call's context, and Close cancels it too).
func (m *modelRoutes) relay(w http.ResponseWriter, r *http.Request, call *gateway.Call, body []byte, model string, enc streamEncoder) {
	ctx := r.Context()
	info := requestInfoFrom(ctx)
	s, err := call.Stream(ctx)
	if err != nil {
		writeError(w, r, m.logger, err)
		return
	}
	defer s.Close()

	rc, end := m.openEventStream(w)
	defer end()

	var (
		text      strings.Builder // the answer so far, for an estimate without usage
		buf       = make([]byte, 0, 1024)
		streamErr error
		clientErr error
	)
	for {
		payload, err := s.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		out, delta, read := enc.chunk(buf[:0], payload)
		buf = out
		if len(out) > 0 {
			if clientErr = m.writeEvent(rc, w, out); clientErr != nil {
				break
			}
		}
		if !read {
			delta, _ = llm.StreamDelta(payload)
		}
		text.WriteString(delta)
	}
	// Stop the upstream before the bookkeeping: a client that left must not
	// keep it generating.
	s.Close()
	u, ok := s.Usage()
	if !ok {
		u = gateway.UsageOrEstimate(llm.Usage{}, body, text.String())
	}
	call.Finish(ctx, model, u)

	switch {
	case clientErr != nil || ctx.Err() != nil:
		// Nobody to tell. 499 shows in the access log what happened.
		info.err = errors.Join(clientErr, ctx.Err())
		m.logger.LogAttrs(ctx, slog.LevelInfo, "stream ended by the client", slog.String("request_id", info.id),
			slog.Int64("tokens", u.TotalTokens))
	case streamErr != nil:
		info.err = streamErr
		m.logger.LogAttrs(ctx, slog.LevelError, "upstream stream failed", slog.String("request_id", info.id),
			slog.String("error", streamErr.Error()))
		m.writeEvent(rc, w, enc.failed(buf[:0], info.id))
	default:
		m.writeEvent(rc, w, enc.done(buf[:0], u, model))
	}
}

// openEventStream sends the header of a server-sent event stream under a
// write deadline and counts the stream as open; end counts it closed and
// clears the deadline, which stays on the connection after the handler
// returns and must not reach a kept-alive connection's next request.
func (m *modelRoutes) openEventStream(w http.ResponseWriter) (rc *http.ResponseController, end func()) {
	rc = http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell proxies such as nginx not to buffer
	rc.SetWriteDeadline(time.Now().Add(m.writeTimeout))
	w.WriteHeader(http.StatusOK)
	m.metrics.StreamStarted()
	return rc, func() {
		m.metrics.StreamEnded()
		rc.SetWriteDeadline(time.Time{})
	}
}

// writeEvent writes one event and flushes it under a fresh write deadline.
func (m *modelRoutes) writeEvent(rc *http.ResponseController, w http.ResponseWriter, event []byte) error {
	if err := rc.SetWriteDeadline(time.Now().Add(m.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := w.Write(event); err != nil {
		return err
	}
	return rc.Flush()
}

// appendEvent appends a named server-sent event with a JSON payload.
func appendEvent(buf []byte, name string, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{}`) // only our own small structs come here
	}
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, b...)
	return append(buf, "\n\n"...)
}
