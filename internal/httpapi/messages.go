package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/agentapi/agentapi/internal/anthropic"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
)

// Anthropic's Messages API (/v1/messages): requests are translated to chat
// completions (internal/anthropic), governed by the gateway like every
// model call (limit, budgets, usage, cost) and answered in Anthropic's
// shapes, errors included.

// isAnthropicPath reports whether a path's errors take Anthropic's shape.
func isAnthropicPath(path string) bool {
	return path == "/v1/messages" || strings.HasPrefix(path, "/v1/messages/")
}

// withAnthropicKey lets Anthropic clients authenticate as they do: an
// x-api-key header (ANTHROPIC_API_KEY) stands for the bearer credential
// (ANTHROPIC_AUTH_TOKEN) when there is none. Either carries one of our API
// keys or tokens, never Anthropic's.
func withAnthropicKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key := strings.TrimSpace(r.Header.Get("X-Api-Key")); key != "" && r.Header.Get("Authorization") == "" {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+key)
		}
		next.ServeHTTP(w, r)
	})
}

// anthropicError renders a mapped error in Anthropic's shape: the same
// status, Anthropic's error type for it, and the message OpenAI's shape
// would carry.
func anthropicError(ae *apiError, ue *llm.UpstreamError, reqID string) (int, anthropic.ErrorBody) {
	status, body := openAIError(ae, ue, reqID)
	typ := "api_error"
	switch {
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || status == http.StatusUnsupportedMediaType:
		typ = "invalid_request_error"
	case status == http.StatusUnauthorized:
		typ = "authentication_error"
	case status == http.StatusForbidden:
		typ = "permission_error"
	case status == http.StatusNotFound:
		typ = "not_found_error"
	case status == http.StatusRequestEntityTooLarge:
		typ = "request_too_large"
	case status == http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case status == http.StatusServiceUnavailable:
		typ = "overloaded_error"
	}
	return status, anthropic.ErrorBody{Type: "error", Error: anthropic.ErrorObject{Type: typ, Message: body.Error.Message}}
}

// readMessagesRequest reads and checks a Messages request and translates
// it; a problem is a 400 in Anthropic's words.
func (m *modelRoutes) readMessagesRequest(w http.ResponseWriter, r *http.Request) (anthropic.Request, string, []byte, error) {
	t := m.limitBody(w, r)
	var req anthropic.Request
	if err := requireJSON(r); err != nil {
		return req, "", nil, err
	}
	raw, err := readBody(r)
	if err != nil {
		return req, "", nil, jsonError(err)
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return req, "", nil, errStatus(http.StatusBadRequest, "The request body is not a valid Messages request: "+jsonProblem(err))
	}
	model := req.Model
	if model == "" {
		model = m.gw.DefaultModel()
	}
	if !validModel(model) {
		return req, "", nil, errStatus(http.StatusBadRequest, fmt.Sprintf("model: must be a model name of at most %d bytes without spaces", maxModelBytes))
	}
	if req.MaxTokens <= 0 {
		return req, "", nil, errStatus(http.StatusBadRequest, "max_tokens: Field required (a positive integer)")
	}
	if t.MaxTokens > 0 && req.MaxTokens > t.MaxTokens {
		return req, "", nil, errStatus(http.StatusBadRequest, fmt.Sprintf("max_tokens: %d is more than the %s tier allows per call (%d)", req.MaxTokens, t.Name, t.MaxTokens))
	}
	if !m.gw.Allowed(model) {
		return req, "", nil, errModelNotAllowed(model)
	}
	body, err := anthropic.ToChat(req, model)
	if err != nil {
		return req, "", nil, errStatus(http.StatusBadRequest, strings.TrimPrefix(err.Error(), "anthropic: invalid request: "))
	}
	return req, model, body, nil
}

// jsonProblem says what is wrong with a body without echoing it.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Sprintf("field %s has the wrong type", typeErr.Field)
	}
	return "malformed JSON"
}

// handleMessages is POST /v1/messages, plain or streamed.
func handleMessages(m *modelRoutes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, model, body, err := m.readMessagesRequest(w, r)
		if err != nil {
			writeError(w, r, m.logger, err)
			return
		}
		call, ok := m.begin(w, r, gateway.Spec{Endpoint: "v1/messages", Model: model, Body: body,
			Estimate: gateway.EstimateRequest(body, req.MaxTokens)})
		if !ok {
			return
		}
		id := anthropic.MessageID(requestID(r.Context()))
		if req.Stream {
			m.relayMessages(w, r, call, body, model, id)
			return
		}
		ctx := r.Context()
		resp, err := call.Complete(ctx)
		if err != nil {
			writeError(w, r, m.logger, err)
			return
		}
		u := resp.Usage
		if u.TotalTokens == 0 {
			text, _ := resp.Content()
			u = gateway.UsageOrEstimate(u, body, text)
		}
		answered := usedModel(resp, model)
		call.Finish(ctx, answered, u)
		out, err := anthropic.FromChat(resp.Body, id, answered, anthropic.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens})
		if err != nil {
			writeError(w, r, m.logger, fmt.Errorf("%w: %w", llm.ErrUpstreamUnavailable, err))
			return
		}
		writeRawJSON(w, http.StatusOK, out)
	})
}

// relayMessages streams a call as the Messages API's events. Errors before
// the first event are ordinary error answers; after it, an error event
// ends the stream. However it ends, the call is finished with its tokens.
func (m *modelRoutes) relayMessages(w http.ResponseWriter, r *http.Request, call *gateway.Call, body []byte, model, id string) {
	ctx := r.Context()
	info := requestInfoFrom(ctx)
	s, err := call.Stream(ctx)
	if err != nil {
		writeError(w, r, m.logger, err)
		return
	}
	defer s.Close()
	answered := model
	if s.Model() != "" {
		answered = s.Model()
	}
	rc, end := m.openEventStream(w)
	defer end()
	tr := anthropic.NewStream(id, answered, gateway.UsageOrEstimate(llm.Usage{}, body, "").PromptTokens)
	buf := tr.Start(make([]byte, 0, 1024))
	clientErr := m.writeEvent(rc, w, buf)
	var (
		text      strings.Builder
		streamErr error
	)
	for clientErr == nil {
		payload, err := s.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		var said string
		buf, said = tr.Chunk(buf[:0], payload)
		text.WriteString(said)
		if len(buf) > 0 {
			clientErr = m.writeEvent(rc, w, buf)
		}
	}
	s.Close()
	u, ok := s.Usage()
	if !ok {
		u = gateway.UsageOrEstimate(llm.Usage{}, body, text.String())
	}
	call.Finish(ctx, answered, u)
	switch {
	case clientErr != nil || ctx.Err() != nil:
		info.err = errors.Join(clientErr, ctx.Err())
	case streamErr != nil:
		info.err = streamErr
		m.logger.LogAttrs(ctx, slog.LevelError, "upstream stream failed", slog.String("request_id", info.id), slog.String("error", streamErr.Error()))
		m.writeEvent(rc, w, anthropic.ErrorEvent(buf[:0], "api_error", "The model's stream broke off (request id "+info.id+")"))
	default:
		m.writeEvent(rc, w, tr.End(buf[:0], anthropic.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens}))
	}
}

// handleCountTokens is POST /v1/messages/count_tokens: an estimate of the
// request's input tokens (about four characters a token), without a
// model call, a rate-limit token or a budget.
func handleCountTokens(m *modelRoutes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.limitBody(w, r)
		var req anthropic.Request
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, m.logger, err)
			return
		}
		model := req.Model
		if model == "" {
			model = m.gw.DefaultModel()
		}
		if !m.gw.Allowed(model) {
			writeError(w, r, m.logger, errModelNotAllowed(model))
			return
		}
		body, err := anthropic.ToChat(req, model)
		if err != nil {
			writeError(w, r, m.logger, errStatus(http.StatusBadRequest, strings.TrimPrefix(err.Error(), "anthropic: invalid request: ")))
			return
		}
		n := gateway.UsageOrEstimate(llm.Usage{}, body, "").PromptTokens
		for _, t := range req.Tools {
			n += llm.EstimateTokens(t.Name + t.Description + string(t.InputSchema))
		}
		writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": n})
	})
}

// messagesOperations documents the Messages API routes.
func messagesOperations() []operation {
	anthropicErr := func(status int, desc string) docResponse {
		return docResponse{Status: status, Description: desc, Body: anthropic.ErrorBody{}}
	}
	return []operation{
		{Method: "POST", Path: "/v1/messages", Tag: "anthropic", Auth: true, Summary: "Create a message (Anthropic Messages API, plain or streamed)",
			Description: "Anthropic's Messages request (text, images, tools, tool_use / tool_result, system, stop_sequences), translated to chat completions for whichever upstream the model routes to. " +
				"Authenticate with x-api-key or Authorization: Bearer, holding one of our API keys; anthropic-version is accepted. " +
				"With stream: true the answer is Anthropic's event stream (message_start, content_block_*, message_delta, message_stop). Limited, budgeted, counted and priced like every model call; errors in Anthropic's shape.",
			Request: anthropic.Request{},
			Responses: []docResponse{{Status: 200, Description: "A Message, or its event stream.", Body: anthropic.MessageBody{}},
				anthropicErr(400, "Invalid request (invalid_request_error)."), anthropicErr(401, "Missing or invalid credential (authentication_error)."),
				anthropicErr(403, "The tier may not use the model (permission_error)."), anthropicErr(404, "Unknown model (not_found_error)."),
				anthropicErr(429, "Rate limit, token budget or spend limit (rate_limit_error)."), anthropicErr(502, "The upstream failed (api_error)."),
				anthropicErr(503, "The upstream is overloaded or a dependency is down (overloaded_error).")}},
		{Method: "POST", Path: "/v1/messages/count_tokens", Tag: "anthropic", Auth: true, Summary: "Estimate a Messages request's input tokens",
			Description: "About four characters a token; no model call, nothing spent.",
			Request:     anthropic.Request{},
			Responses: []docResponse{{Status: 200, Description: "{input_tokens}.", Body: map[string]int64{}},
				anthropicErr(400, "Invalid request."), anthropicErr(401, "Missing or invalid credential."), anthropicErr(404, "Unknown model.")}},
	}
}
