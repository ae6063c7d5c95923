package httpapi

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
)

// Bounds on /chat input.
const (
	maxMessageChars = 32000
	maxModelBytes   = 200
)

// rateLimitBody is the legacy /chat contract's 429 detail, field for field.
type rateLimitBody struct {
	Error string `json:"error"`
	Tier  string `json:"tier"`
	Limit int64  `json:"limit"`
}

// The RateLimit header names in the canonical form net/http sends them in;
// Header.Set would canonicalize, and allocate, on every request.
const (
	rateLimitPolicyHeader = "Ratelimit-Policy"
	rateLimitHeader       = "Ratelimit"
)

// setRateLimitHeaders writes draft-ietf-httpapi-ratelimit-headers fields. A
// token bucket's "window" is the time it takes to refill from empty. The
// values are appended by hand because they are on every limited request:
// `"pro";q=1000;w=100`, exactly what fmt's %q and %d would print.
func setRateLimitHeaders(h http.Header, pol ratelimit.Policy, d ratelimit.Decision) {
	window := int64(math.Ceil(float64(pol.Capacity) / pol.RefillPerSecond))
	b := make([]byte, 0, 96)
	b = strconv.AppendQuote(b, pol.Name)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, pol.Capacity, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, window, 10)
	h[rateLimitPolicyHeader] = []string{string(b)}
	b = strconv.AppendQuote(b[:0], pol.Name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(d.Reset, 0), 10)
	h[rateLimitHeader] = []string{string(b)}
}

func ceilSeconds(d time.Duration, min int64) int64 {
	s := int64(math.Ceil(d.Seconds()))
	if s < min {
		return min
	}
	return s
}

// chatRequest is the body of POST /chat.
type chatRequest struct {
	Message *string `json:"message" jsonschema:"required,minLength=1,maxLength=32000"`
	Model   *string `json:"model,omitempty" jsonschema:"maxLength=200"`
	// Stream asks for the answer as server-sent events (see the README).
	Stream *bool `json:"stream,omitempty"`
}

// chatResponse is POST /chat's answer, in the legacy /chat contract's shape.
type chatResponse struct {
	Response   string `json:"response"`
	TokensUsed int64  `json:"tokens_used"`
	FromCache  bool   `json:"from_cache"`
}

// validModel accepts model names as providers spell them: short, printable,
// no spaces or control characters.
func validModel(m string) bool {
	if m == "" || len(m) > maxModelBytes || !utf8.ValidString(m) {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func handleChat(m *modelRoutes) http.Handler {
	logger, gw := m.logger, m.gw
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := m.limitBody(w, r)
		var in chatRequest
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		var problems []fieldProblem
		if in.Message == nil {
			problems = append(problems, fieldProblem{"message", "is required"})
		} else if n := utf8.RuneCountInString(*in.Message); n < 1 || n > maxMessageChars || !utf8.ValidString(*in.Message) {
			problems = append(problems, fieldProblem{"message", fmt.Sprintf("must be 1 to %d characters", maxMessageChars)})
		}
		model := gw.DefaultModel()
		if in.Model != nil {
			model = *in.Model
			if !validModel(model) {
				problems = append(problems, fieldProblem{"model", fmt.Sprintf("must be a model name of at most %d bytes without spaces", maxModelBytes)})
			} else if !gw.Allowed(model) {
				problems = append(problems, fieldProblem{"model", "is not one of the models this service allows (see GET /v1/models)"})
			}
		}
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		ctx := r.Context()
		body, err := json.Marshal(upstreamChat{Model: model, Messages: []upstreamMessage{{Role: "user", Content: *in.Message}},
			MaxCompletionTokens: t.MaxTokens})
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		spec := gateway.Spec{Endpoint: "chat", Model: model, Body: body, Estimate: llm.EstimateTokens(*in.Message)}
		if in.Stream != nil && *in.Stream {
			// Streams are not cached: the cache keeps whole answers.
			if spec.Body, err = streamingBody(body); err != nil {
				writeError(w, r, logger, err)
				return
			}
			call, ok := m.begin(w, r, spec)
			if !ok {
				return
			}
			m.relay(w, r, call, spec.Body, model, chatEvents{})
			return
		}
		spec.Cache = gw.Caching()
		call, ok := m.begin(w, r, spec)
		if !ok {
			return
		}
		if cached, hit := call.Cached(); hit {
			var prev chatResponse
			if json.Unmarshal(cached, &prev) == nil {
				// A hit costs no tokens: nothing was generated for it.
				writeJSON(w, http.StatusOK, chatResponse{Response: prev.Response, TokensUsed: 0, FromCache: true})
				return
			}
			// Not an answer of ours: ask the model, and overwrite it.
			call.Unusable()
		}
		resp, err := call.Complete(ctx)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		content, err := resp.Content()
		if err != nil {
			// The tokens were generated (and billed upstream) all the same.
			call.Finish(ctx, usedModel(resp, model), resp.Usage)
			writeError(w, r, logger, fmt.Errorf("chat: upstream answer: %w", err))
			return
		}
		u := gateway.UsageOrEstimate(resp.Usage, body, content)
		call.Finish(ctx, usedModel(resp, model), u)
		out := chatResponse{Response: content, TokensUsed: u.TotalTokens}
		if call.Caching() {
			if b, err := json.Marshal(out); err == nil {
				// The bytes cached are the answer, as writeJSON would
				// write it (it appends the newline too); marshal once.
				answerThenStore(ctx, w, call, append(b, '\n'), b)
				return
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func usedModel(resp *llm.Response, requested string) string {
	if resp.Model != "" {
		return resp.Model
	}
	return requested
}

// upstreamChat is the OpenAI chat-completions request /chat sends.
type upstreamChat struct {
	Model    string            `json:"model"`
	Messages []upstreamMessage `json:"messages"`
	// MaxCompletionTokens is the tier's cap, when it has one.
	MaxCompletionTokens int64 `json:"max_completion_tokens,omitempty"`
}

type upstreamMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// quotaResponse is the caller's rate-limit state, and the tokens used in the
// current budget period.
type quotaResponse struct {
	UserID       string          `json:"user_id"`
	Tier         string          `json:"tier"`
	Limit        int64           `json:"limit"`
	Remaining    int64           `json:"remaining"`
	ResetSeconds int64           `json:"reset_seconds"`
	TokenBudget  tokenBudgetInfo `json:"token_budget"`
}

func handleQuota(m *modelRoutes, reports usageStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		p := principalFrom(ctx)
		q, err := m.gw.Quota(ctx, callerOf(ctx), requestID(ctx), reports)
		if err != nil {
			writeError(w, r, m.logger, err)
			return
		}
		tb := tokenBudgetInfo{Period: "day", Used: q.Used, ResetSeconds: ceilSeconds(q.Reset, 0)}
		if q.Limit > 0 {
			limit, rem := q.Limit, max(q.Limit-q.Used, 0)
			tb.Limit, tb.Remaining = &limit, &rem
		}
		setRateLimitHeaders(w.Header(), q.Policy, q.Decision)
		writeJSON(w, http.StatusOK, quotaResponse{UserID: p.UserID, Tier: q.Policy.Name, Limit: q.Policy.Capacity,
			Remaining: q.Decision.Remaining, ResetSeconds: ceilSeconds(q.Decision.Reset, 0), TokenBudget: tb})
	})
}
