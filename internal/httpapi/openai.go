package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/tier"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// openAIRequest holds the only fields of an OpenAI request body the gateway
// acts on. Everything else (messages, tools, response_format, temperature,
// ...) is forwarded byte for byte without being looked at.
type openAIRequest struct {
	model        string
	hasModel     bool
	stream       bool
	includeUsage bool  // the client asked for stream usage itself
	maxTokens    int64 // max_tokens or max_completion_tokens, whichever is larger
	// maxTokensParam names the field maxTokens came from; "" when the
	// client set neither.
	maxTokensParam string
}

// errOpenAIParam is a 400 about one field, in OpenAI's words.
func errOpenAIParam(param, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: msg, openAI: openAIErrorFields{param: param}}
}

// readOpenAIRequest reads a (size-limited) JSON body and the fields the
// gateway needs from it. The fields are read with gjson, which walks the
// bytes without decoding the rest. A body naming one of those fields twice
// is refused: parsers disagree on which copy wins, and the model we check
// must be the model the upstream runs.
func readOpenAIRequest(r *http.Request) ([]byte, openAIRequest, error) {
	var req openAIRequest
	if err := requireJSON(r); err != nil {
		return nil, req, err
	}
	body, err := readBody(r)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, req, errStatus(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body exceeds %d bytes", maxErr.Limit))
		}
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return nil, req, ctxErr
		}
		return nil, req, errStatus(http.StatusBadRequest, "Could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, req, errStatus(http.StatusBadRequest, "Request body is empty")
	}
	if !gjson.ValidBytes(body) {
		return nil, req, errStatus(http.StatusBadRequest, "We could not parse the JSON body of your request")
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, req, errStatus(http.StatusBadRequest, "Request body must be a JSON object")
	}
	var seen uint8 // a bit per field below
	var problem *apiError
	root.ForEach(func(k, v gjson.Result) bool {
		name := k.String()
		var bit uint8
		switch name {
		case "model":
			bit = 1
		case "stream":
			bit = 2
		case "stream_options":
			bit = 4
		case "max_tokens":
			bit = 8
		case "max_completion_tokens":
			bit = 16
		default:
			return true
		}
		if seen&bit != 0 {
			problem = errOpenAIParam(name, fmt.Sprintf("'%s' appears more than once", name))
			return false
		}
		seen |= bit
		switch name {
		case "model":
			if v.Type != gjson.String || !validModel(v.Str) {
				problem = errOpenAIParam("model", fmt.Sprintf("'model' must be a model name of at most %d bytes without spaces", maxModelBytes))
				return false
			}
			req.model, req.hasModel = v.Str, true
		case "stream":
			switch v.Type {
			case gjson.True:
				req.stream = true
			case gjson.False, gjson.Null:
			default:
				problem = errOpenAIParam("stream", "'stream' must be a boolean")
				return false
			}
		case "stream_options":
			if v.Type == gjson.Null {
				return true
			}
			iu := v.Get("include_usage")
			if !v.IsObject() || (iu.Exists() && iu.Type != gjson.True && iu.Type != gjson.False && iu.Type != gjson.Null) {
				problem = errOpenAIParam("stream_options", "'stream_options' must be an object whose include_usage is a boolean")
				return false
			}
			req.includeUsage = iu.Type == gjson.True
		case "max_tokens", "max_completion_tokens":
			if v.Type == gjson.Null {
				return true
			}
			if v.Type != gjson.Number || v.Num < 0 || v.Num > 1<<40 || v.Num != float64(int64(v.Num)) {
				problem = errOpenAIParam(name, fmt.Sprintf("'%s' must be a non-negative integer", name))
				return false
			}
			if n := int64(v.Num); req.maxTokensParam == "" || n > req.maxTokens {
				req.maxTokens, req.maxTokensParam = n, name
			}
		}
		return true
	})
	if problem != nil {
		return nil, req, problem
	}
	return body, req, nil
}

// applyTokenCap holds a call to the caller's completion-token cap: a
// request asking for more is refused, one asking for nothing is given
// the cap as max_completion_tokens (the field every current OpenAI model
// takes; providers that only know max_tokens ignore it).
func applyTokenCap(body []byte, req openAIRequest, t tier.Tier) ([]byte, error) {
	if t.MaxTokens <= 0 {
		return body, nil
	}
	if req.maxTokensParam != "" {
		if req.maxTokens > t.MaxTokens {
			return nil, errOpenAIParam(req.maxTokensParam, fmt.Sprintf("'%s' is %d; the %s tier allows at most %d completion tokens per call",
				req.maxTokensParam, req.maxTokens, t.Name, t.MaxTokens))
		}
		return body, nil
	}
	// The budget's hold stays what the client asked for (the prompt
	// alone): holding the whole cap would refuse calls near the end of a
	// budget that would have fitted.
	out, err := sjson.SetBytes(body, "max_completion_tokens", t.MaxTokens)
	if err != nil {
		return nil, fmt.Errorf("set max_completion_tokens: %w", err)
	}
	return out, nil
}

// withModel returns body naming model, adding it when the client named
// none (the deployment's default model then applies).
func withModel(body []byte, req openAIRequest, model string) ([]byte, error) {
	if req.hasModel {
		return body, nil
	}
	out, err := sjson.SetBytes(body, "model", model)
	if err != nil {
		return nil, fmt.Errorf("set model: %w", err)
	}
	return out, nil
}

// compactJSON is the cache's normal form of a body: the same request with
// different whitespace is the same request.
func compactJSON(body []byte) []byte {
	if !hasSpaceOutsideStrings(body) {
		// Compact would copy the body byte for byte (or fail on it, and
		// then the body is used as it is too); SDKs that send compact
		// JSON skip the copy and the scanner.
		return body
	}
	var b bytes.Buffer
	b.Grow(len(body))
	if json.Compact(&b, body) != nil {
		return body
	}
	return b.Bytes()
}

// hasSpaceOutsideStrings reports whether body has a byte json.Compact
// would remove: JSON whitespace outside string literals.
func hasSpaceOutsideStrings(body []byte) bool {
	inString, escaped := false, false
	for _, c := range body {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return true
		}
	}
	return false
}

// bypassCache reports whether the client asked not to be served from the
// cache (and not to have the answer stored), with Cache-Control.
func bypassCache(r *http.Request) bool {
	cc := strings.ToLower(r.Header.Get("Cache-Control"))
	return strings.Contains(cc, "no-cache") || strings.Contains(cc, "no-store")
}

// handleChatCompletions is POST /v1/chat/completions: OpenAI's request and
// answer, plain or streamed, limited, cached, budgeted and counted.
func handleChatCompletions(m *modelRoutes) http.Handler {
	logger, gw := m.logger, m.gw
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := m.limitBody(w, r)
		body, req, err := readOpenAIRequest(r)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		model := req.model
		if !req.hasModel {
			model = gw.DefaultModel()
		}
		if !gw.Allowed(model) {
			writeError(w, r, logger, errModelNotAllowed(model))
			return
		}
		if body, err = withModel(body, req, model); err != nil {
			writeError(w, r, logger, err)
			return
		}
		if body, err = applyTokenCap(body, req, t); err != nil {
			writeError(w, r, logger, err)
			return
		}
		if req.stream {
			// The upstream is always asked for usage, so every stream is
			// counted; if the client did not ask for it, the extra usage
			// chunk is not passed on. Streams are not cached: the cache
			// keeps whole answers.
			if !req.includeUsage {
				if body, err = sjson.SetBytes(body, "stream_options.include_usage", true); err != nil {
					writeError(w, r, logger, err)
					return
				}
			}
			call, ok := m.begin(w, r, gateway.Spec{Endpoint: "v1/chat/completions", Model: model, Body: body,
				Estimate: gateway.EstimateRequest(body, req.maxTokens)})
			if !ok {
				return
			}
			m.relay(w, r, call, body, model, openAIChunks{passUsage: req.includeUsage})
			return
		}
		m.plainCall(w, r, "v1/chat/completions", body, req, model, (*gateway.Call).Complete, func(resp *llm.Response) string {
			text, _ := resp.Content()
			return text
		})
	})
}

// handleEmbeddings is POST /v1/embeddings, passed through like a plain
// chat completion.
func handleEmbeddings(m *modelRoutes) http.Handler {
	logger, gw := m.logger, m.gw
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.limitBody(w, r)
		body, req, err := readOpenAIRequest(r)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if !req.hasModel {
			writeError(w, r, logger, errOpenAIParam("model", "you must provide a model parameter"))
			return
		}
		if req.stream {
			writeError(w, r, logger, errOpenAIParam("stream", "embeddings cannot be streamed"))
			return
		}
		if !gw.Allowed(req.model) {
			writeError(w, r, logger, errModelNotAllowed(req.model))
			return
		}
		m.plainCall(w, r, "v1/embeddings", body, req, req.model, (*gateway.Call).Embeddings, func(*llm.Response) string { return "" })
	})
}

// plainCall serves a non-streamed call: cache, budget, upstream, usage,
// cache again, and the upstream's body as it came.
func (m *modelRoutes) plainCall(w http.ResponseWriter, r *http.Request, endpoint string, body []byte, req openAIRequest, model string,
	do func(*gateway.Call, context.Context) (*llm.Response, error), answerText func(*llm.Response) string) {
	ctx := r.Context()
	spec := gateway.Spec{Endpoint: endpoint, Model: model, Body: body, Estimate: gateway.EstimateRequest(body, req.maxTokens),
		Cache: m.gw.Caching() && !bypassCache(r)}
	if spec.Cache {
		spec.CacheBody = compactJSON(body)
	}
	call, ok := m.begin(w, r, spec)
	if !ok {
		return
	}
	if cached, hit := call.Cached(); hit {
		// A hit generated nothing, so it costs no tokens and no budget.
		w.Header().Set("X-Cache", "hit")
		writeRawJSON(w, http.StatusOK, cached)
		return
	}
	resp, err := do(call, ctx)
	if err != nil {
		writeError(w, r, m.logger, err)
		return
	}
	u := resp.Usage
	if u.TotalTokens == 0 {
		// Reading the answer's text means parsing the whole body again;
		// only an upstream that reported no usage needs it.
		u = gateway.UsageOrEstimate(u, body, answerText(resp))
	}
	call.Finish(ctx, usedModel(resp, model), u)
	if !call.Caching() {
		writeRawJSON(w, http.StatusOK, resp.Body)
		return
	}
	w.Header().Set("X-Cache", "miss")
	answerThenStore(ctx, w, call, resp.Body, resp.Body)
}

// handleModels is GET /v1/models.
func handleModels(m *modelRoutes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := m.gw.ModelsFor(r.Context(), callerOf(r.Context()))
		if err != nil {
			writeError(w, r, m.logger, err)
			return
		}
		writeRawJSON(w, http.StatusOK, body)
	})
}

// handleModel is GET /v1/models/{model}: one entry of the list.
func handleModel(m *modelRoutes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("model")
		body, err := m.gw.ModelsFor(r.Context(), callerOf(r.Context()))
		if err != nil {
			writeError(w, r, m.logger, err)
			return
		}
		for _, m := range gjson.GetBytes(body, "data").Array() {
			if m.Get("id").Str == id {
				writeRawJSON(w, http.StatusOK, []byte(m.Raw))
				return
			}
		}
		writeError(w, r, m.logger, errModelNotAllowed(id))
	})
}
