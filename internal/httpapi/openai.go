package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/llm"
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
func applyTokenCap(body []byte, req openAIRequest, c RequestCaps, tier string) ([]byte, error) {
	if c.MaxTokens <= 0 {
		return body, nil
	}
	if req.maxTokensParam != "" {
		if req.maxTokens > c.MaxTokens {
			return nil, errOpenAIParam(req.maxTokensParam, fmt.Sprintf("'%s' is %d; the %s tier allows at most %d completion tokens per call",
				req.maxTokensParam, req.maxTokens, tier, c.MaxTokens))
		}
		return body, nil
	}
	// The budget's hold stays what the client asked for (the prompt
	// alone): holding the whole cap would refuse calls near the end of a
	// budget that would have fitted.
	out, err := sjson.SetBytes(body, "max_completion_tokens", c.MaxTokens)
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

// usageOrEstimate is the usage an upstream reported, or an estimate from
// the request and answer sizes when it reported none (some local upstreams
// never do), so that every call counts.
func usageOrEstimate(u llm.Usage, request []byte, answer string) llm.Usage {
	if u.TotalTokens > 0 {
		return u
	}
	u.PromptTokens = llm.EstimateTokens(promptText(request))
	u.CompletionTokens = llm.EstimateTokens(answer)
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// promptText is the text a request asks the model to read: the messages'
// contents (text parts of multi-part contents included) or an embeddings
// input. A request of another shape counts whole, JSON syntax and all,
// which overstates it, the safe side for accounting.
func promptText(request []byte) string {
	var b strings.Builder
	add := func(v gjson.Result) {
		switch {
		case v.Type == gjson.String:
			b.WriteString(v.Str)
		case v.IsArray():
			for _, part := range v.Array() {
				if part.Type == gjson.String {
					b.WriteString(part.Str)
				} else if t := part.Get("text"); t.Type == gjson.String {
					b.WriteString(t.Str)
				}
			}
		}
	}
	found := false
	for _, m := range gjson.GetBytes(request, "messages").Array() {
		found = true
		add(m.Get("content"))
	}
	if in := gjson.GetBytes(request, "input"); in.Exists() {
		found = true
		add(in)
	}
	if !found {
		return string(request)
	}
	return b.String()
}

// handleChatCompletions is POST /v1/chat/completions: OpenAI's request and
// answer, plain or streamed, limited, cached, budgeted and counted.
func handleChatCompletions(g *gateway) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caps := g.limitBody(w, r)
		body, req, err := readOpenAIRequest(r)
		if err != nil {
			writeError(w, r, g.logger, err)
			return
		}
		model := req.model
		if !req.hasModel {
			model = g.defaultModel
		}
		if !g.allowed(model) {
			writeError(w, r, g.logger, errModelNotAllowed(model))
			return
		}
		if body, err = withModel(body, req, model); err != nil {
			writeError(w, r, g.logger, err)
			return
		}
		if body, err = applyTokenCap(body, req, caps, g.policies.For(principalFrom(r.Context()).Tier).Name); err != nil {
			writeError(w, r, g.logger, err)
			return
		}
		if req.stream {
			// Streams are not cached: the cache keeps whole answers.
			if _, _, ok := g.admit(w, r, "", false); !ok {
				return
			}
			g.streamOpenAI(w, r, body, req, model)
			return
		}
		g.plainCall(w, r, "v1/chat/completions", body, req, model, g.llm.Complete, func(resp *llm.Response) string {
			text, _ := resp.Content()
			return text
		})
	})
}

// handleEmbeddings is POST /v1/embeddings, passed through like a plain
// chat completion.
func handleEmbeddings(g *gateway) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.limitBody(w, r)
		body, req, err := readOpenAIRequest(r)
		if err != nil {
			writeError(w, r, g.logger, err)
			return
		}
		if !req.hasModel {
			writeError(w, r, g.logger, errOpenAIParam("model", "you must provide a model parameter"))
			return
		}
		if req.stream {
			writeError(w, r, g.logger, errOpenAIParam("stream", "embeddings cannot be streamed"))
			return
		}
		if !g.allowed(req.model) {
			writeError(w, r, g.logger, errModelNotAllowed(req.model))
			return
		}
		g.plainCall(w, r, "v1/embeddings", body, req, req.model, g.llm.Embeddings, func(*llm.Response) string { return "" })
	})
}

// plainCall serves a non-streamed call: cache, budget, upstream, usage,
// cache again, and the upstream's body as it came.
func (g *gateway) plainCall(w http.ResponseWriter, r *http.Request, endpoint string, body []byte, req openAIRequest, model string,
	call func(context.Context, []byte) (*llm.Response, error), answerText func(*llm.Response) string) {
	ctx := r.Context()
	p := principalFrom(ctx)
	useCache := g.cache != nil && !bypassCache(r)
	var key cache.Key
	if useCache {
		key = g.cacheKey(endpoint, p, model, compactJSON(body))
	}
	cached, hit, ok := g.admit(w, r, key, useCache)
	if !ok {
		return
	}
	if hit {
		// A hit generated nothing, so it costs no tokens and no budget.
		w.Header().Set("X-Cache", "hit")
		writeRawJSON(w, http.StatusOK, cached)
		return
	}
	res, err := g.reserve(ctx, p, estimateRequest(body, req.maxTokens))
	if err != nil {
		writeError(w, r, g.logger, err)
		return
	}
	resp, err := call(ctx, body)
	if err != nil {
		g.finish(ctx, p, res, model, llm.Usage{})
		writeError(w, r, g.logger, err)
		return
	}
	u := resp.Usage
	if u.TotalTokens == 0 {
		// Reading the answer's text means parsing the whole body again;
		// only an upstream that reported no usage needs it.
		u = usageOrEstimate(u, body, answerText(resp))
	}
	g.finish(ctx, p, res, usedModel(resp, model), u)
	if !useCache {
		writeRawJSON(w, http.StatusOK, resp.Body)
		return
	}
	w.Header().Set("X-Cache", "miss")
	g.answerThenStore(ctx, w, key, resp.Body, resp.Body)
}

// answerThenStore sends a complete answer, then keeps stored in the cache
// under key. The cache write (a Redis round trip, or otter's bookkeeping)
// then does not hold up the answer. A client reusing its connection still
// finds the entry: net/http reads a connection's next request only once
// this handler has returned.
func (g *gateway) answerThenStore(ctx context.Context, w http.ResponseWriter, key cache.Key, answer, stored []byte) {
	writeRawJSON(w, http.StatusOK, answer)
	_ = http.NewResponseController(w).Flush()
	g.store(context.WithoutCancel(ctx), key, stored)
}

// writeRawJSON writes a JSON body we already have as bytes. It states the
// length, so the answer can be sent before the handler chain returns (see
// withAccessLog) without being chunked.
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
}

var jsonContentType = []string{"application/json"}

// modelListTTL is how long an upstream's model list is reused. Lists
// change rarely and SDKs fetch them often (some at every start).
const modelListTTL = time.Minute

// modelListCache keeps the upstream's model list for modelListTTL.
type modelListCache struct {
	mu      sync.Mutex
	body    []byte
	fetched time.Time
}

// modelList returns GET /v1/models's body: the allowlist when there is one,
// else the upstream's own list.
func (g *gateway) modelList(ctx context.Context) ([]byte, error) {
	if len(g.models) > 0 {
		type model struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		}
		list := struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{Object: "list", Data: make([]model, len(g.models))}
		for i, m := range g.models {
			list.Data[i] = model{ID: m, Object: "model", OwnedBy: "agentapi"}
		}
		return json.Marshal(list)
	}
	c := g.models60
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body != nil && time.Since(c.fetched) < modelListTTL {
		return c.body, nil
	}
	body, err := g.llm.Models(ctx)
	if err != nil {
		return nil, err
	}
	c.body, c.fetched = body, time.Now()
	return body, nil
}

// handleModels is GET /v1/models.
func handleModels(g *gateway) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := g.modelList(r.Context())
		if err != nil {
			writeError(w, r, g.logger, err)
			return
		}
		writeRawJSON(w, http.StatusOK, body)
	})
}

// handleModel is GET /v1/models/{model}: one entry of the list.
func handleModel(g *gateway) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("model")
		body, err := g.modelList(r.Context())
		if err != nil {
			writeError(w, r, g.logger, err)
			return
		}
		for _, m := range gjson.GetBytes(body, "data").Array() {
			if m.Get("id").Str == id {
				writeRawJSON(w, http.StatusOK, []byte(m.Raw))
				return
			}
		}
		writeError(w, r, g.logger, errModelNotAllowed(id))
	})
}
