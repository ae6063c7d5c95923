package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/llm"
	"github.com/tidwall/sjson"
)

// streamFormat is how a model stream is shown to the client.
type streamFormat int

const (
	// streamOpenAI passes the upstream's chunks through as OpenAI sends
	// them, ending with "data: [DONE]".
	streamOpenAI streamFormat = iota
	// streamChat is /chat's own event stream: "delta" events with text,
	// then one "done" (or "error") event. See the README.
	streamChat
)

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

// streamOpenAI serves POST /v1/chat/completions with stream: true. The
// upstream is always asked for usage, so every stream is counted; if the
// client did not ask for it, the extra usage chunk is not passed on.
func (g *gateway) streamOpenAI(w http.ResponseWriter, r *http.Request, body []byte, req openAIRequest, model string) {
	if !req.includeUsage {
		var err error
		if body, err = sjson.SetBytes(body, "stream_options.include_usage", true); err != nil {
			writeError(w, r, g.logger, err)
			return
		}
	}
	g.relay(w, r, body, model, estimateRequest(body, req.maxTokens), streamOpenAI, req.includeUsage)
}

// relay opens the upstream stream and copies it to the client event by
// event, each written and flushed as it arrives and each write bounded by
// the stream write timeout (the server has no WriteTimeout, which would
// cut long answers). Errors before the first event get an ordinary error
// response; after it, an error event in the stream's format ends the
// stream. However it ends — finished, upstream broken off, client gone —
// the tokens are counted: the upstream's usage when it sent one, else an
// estimate from the request and the text streamed so far. A client that
// goes away cancels the upstream call at once (the request context is the
// upstream call's context, and Close cancels it too).
func (g *gateway) relay(w http.ResponseWriter, r *http.Request, body []byte, model string, estimate int64, format streamFormat, passUsage bool) {
	ctx := r.Context()
	p := principalFrom(ctx)
	info := requestInfoFrom(ctx)
	res, err := g.reserve(ctx, p, estimate)
	if err != nil {
		writeError(w, r, g.logger, err)
		return
	}
	s, err := g.llm.Stream(ctx, body)
	if err != nil {
		g.finish(ctx, p, res, model, llm.Usage{})
		writeError(w, r, g.logger, err)
		return
	}
	defer s.Close()

	rc := http.NewResponseController(w)
	// The deadline stays on the connection after we return; clear it so a
	// kept-alive connection's next request does not inherit it.
	defer rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // tell proxies such as nginx not to buffer
	rc.SetWriteDeadline(time.Now().Add(g.writeTimeout))
	w.WriteHeader(http.StatusOK)
	g.metrics.StreamStarted()
	defer g.metrics.StreamEnded()

	var (
		text      strings.Builder // the answer so far, for an estimate without usage
		buf       = make([]byte, 0, 1024)
		streamErr error
		clientErr error
	)
loop:
	for {
		payload, err := s.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		buf = buf[:0]
		switch format {
		case streamOpenAI:
			if !passUsage && llm.UsageOnlyChunk(payload) {
				continue
			}
			buf = append(buf, "data: "...)
			buf = append(buf, payload...)
			buf = append(buf, "\n\n"...)
			if clientErr = g.writeEvent(rc, w, buf); clientErr != nil {
				break loop
			}
			// Parsed after the write, so it never delays the bytes.
			if delta, err := llm.StreamDelta(payload); err == nil {
				text.WriteString(delta)
			}
		case streamChat:
			delta, err := llm.StreamDelta(payload)
			if err != nil || delta == "" {
				continue
			}
			text.WriteString(delta)
			buf = appendEvent(buf, "delta", chatStreamDelta{Content: delta})
			if clientErr = g.writeEvent(rc, w, buf); clientErr != nil {
				break loop
			}
		}
	}
	// Stop the upstream before the bookkeeping: a client that left must not
	// keep it generating.
	s.Close()
	u, ok := s.Usage()
	if !ok {
		u = usageOrEstimate(llm.Usage{}, body, text.String())
	}
	g.finish(ctx, p, res, model, u)

	switch {
	case clientErr != nil || ctx.Err() != nil:
		// Nobody to tell. 499 shows in the access log what happened.
		info.err = errors.Join(clientErr, ctx.Err())
		g.logger.LogAttrs(ctx, slog.LevelInfo, "stream ended by the client", slog.String("request_id", info.id),
			slog.Int64("tokens", u.TotalTokens))
	case streamErr != nil:
		info.err = streamErr
		g.logger.LogAttrs(ctx, slog.LevelError, "upstream stream failed", slog.String("request_id", info.id),
			slog.String("error", streamErr.Error()))
		buf = buf[:0]
		if format == streamOpenAI {
			b, _ := json.Marshal(openAIErrorBody{Error: openAIErrorObject{
				Message: "The model's stream broke off (request id " + info.id + ")", Type: "api_error"}})
			buf = append(append(append(buf, "data: "...), b...), "\n\n"...)
		} else {
			buf = appendEvent(buf, "error", chatStreamError{Error: "Upstream model failed", RequestID: info.id})
		}
		g.writeEvent(rc, w, buf)
	default:
		buf = buf[:0]
		if format == streamOpenAI {
			buf = append(buf, "data: [DONE]\n\n"...)
		} else {
			buf = appendEvent(buf, "done", chatStreamDone{TokensUsed: u.TotalTokens, Model: model})
		}
		g.writeEvent(rc, w, buf)
	}
}

// writeEvent writes one event and flushes it under a fresh write deadline.
func (g *gateway) writeEvent(rc *http.ResponseController, w http.ResponseWriter, event []byte) error {
	if err := rc.SetWriteDeadline(time.Now().Add(g.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
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

// streamChatAnswer serves POST /chat with "stream": true: body is the
// upstream request /chat built from the message.
func (g *gateway) streamChatAnswer(w http.ResponseWriter, r *http.Request, body []byte, model string, prompt string) {
	out, err := sjson.SetBytes(body, "stream", true)
	if err == nil {
		out, err = sjson.SetBytes(out, "stream_options.include_usage", true)
	}
	if err != nil {
		writeError(w, r, g.logger, err)
		return
	}
	g.relay(w, r, out, model, llm.EstimateTokens(prompt), streamChat, false)
}
