package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
)

// modelProvider is the model behind /chat and /v1: plain and streamed chat
// completions, embeddings and the model list. llm.Client, llm.Router and
// llm.Mock all have these methods.
type modelProvider interface {
	Complete(ctx context.Context, body []byte) (*llm.Response, error)
	Stream(ctx context.Context, body []byte) (*llm.Stream, error)
	Embeddings(ctx context.Context, body []byte) (*llm.Response, error)
	Models(ctx context.Context) ([]byte, error)
}

// budgeter holds and settles daily token budgets (budget.Memory or
// budget.Redis).
type budgeter interface {
	Reserve(ctx context.Context, userID string, limit, amount int64) (budget.Reservation, budget.Status, error)
	Settle(ctx context.Context, r budget.Reservation, actual int64) error
	Status(ctx context.Context, userID string, limit int64) (budget.Status, error)
}

// TokenBudgets maps a tier to its tokens per user per UTC day; a missing
// tier or 0 means no budget.
type TokenBudgets map[string]int64

// any reports whether some tier has a budget.
func (b TokenBudgets) any() bool {
	for _, v := range b {
		if v > 0 {
			return true
		}
	}
	return false
}

// settleTimeout bounds the bookkeeping after a call, which runs even when
// the client has gone.
const settleTimeout = 2 * time.Second

// defaultStreamWriteTimeout is used when Deps.StreamWriteTimeout is zero.
const defaultStreamWriteTimeout = 30 * time.Second

// gateway is what every handler that calls the model shares: the provider,
// the rate limiter, the cache, budgets, usage accounting, the tiers' caps
// and the model allowlist. It is built once from Deps.
type gateway struct {
	logger       *slog.Logger
	llm          modelProvider
	limiter      limiter
	policies     Policies
	admitter     Admitter // nil: the limiter, then the cache
	caps         TierCaps
	cache        responseCache // nil: no caching
	cacheScope   string
	usage        usageRecorder // nil: nothing recorded
	budget       budgeter      // nil: no budgets
	budgets      TokenBudgets
	failOpen     bool // budget store down: let calls through (true) or 503 (false)
	models       []string
	defaultModel string
	writeTimeout time.Duration
	models60     *modelListCache
	metrics      *metrics.Metrics // nil records nothing
}

func newGateway(d Deps) *gateway {
	g := &gateway{
		logger:       d.Logger,
		llm:          d.LLM,
		limiter:      d.Limiter,
		policies:     d.Policies,
		admitter:     d.Admitter,
		caps:         d.Caps,
		cache:        d.Cache,
		cacheScope:   d.CacheScope,
		usage:        d.Usage,
		budgets:      d.TokenBudgets,
		failOpen:     d.BudgetFailOpen,
		models:       d.Models,
		defaultModel: d.DefaultModel,
		writeTimeout: d.StreamWriteTimeout,
		models60:     &modelListCache{},
		metrics:      d.Metrics,
	}
	// Budgets count only when one exists, but then for every tier, so that
	// a user moved to a tier with a budget mid-day finds the day counted.
	if d.Budget != nil && d.TokenBudgets.any() {
		g.budget = d.Budget
	}
	if g.writeTimeout <= 0 {
		g.writeTimeout = defaultStreamWriteTimeout
	}
	return g
}

// Admitter makes the rate-limit decision and reads the cache in one call
// (admission.Pipelined: one Redis round trip for both).
type Admitter interface {
	AllowAndGet(ctx context.Context, key string, p ratelimit.Policy, k cache.Key) (admission.Result, error)
}

// admit spends one token of the caller's bucket and, when lookup is set,
// reads the cache entry under key. It answers a refused request itself
// (429 with the prototype's body, or the limiter's error) and returns
// ok=false; otherwise it returns the cached answer, if there is one. Every
// answer carries the IETF RateLimit headers.
//
// Handlers call it once the request is known to be valid, so a request
// refused as malformed spends nothing, and a cacheable one pays a single
// Redis round trip for the decision and the lookup together.
func (g *gateway) admit(w http.ResponseWriter, r *http.Request, key cache.Key, lookup bool) (cached []byte, hit, ok bool) {
	ctx := r.Context()
	p := principalFrom(ctx)
	pol := g.policies.For(p.Tier)
	info := requestInfoFrom(ctx)
	info.tier = pol.Name
	lookup = lookup && g.cache != nil
	var res admission.Result
	var err error
	if lookup && g.admitter != nil {
		res, err = g.admitter.AllowAndGet(ctx, rateLimitKey(p.UserID), pol, key)
	} else {
		res.Decision, err = g.limiter.Allow(ctx, rateLimitKey(p.UserID), pol)
	}
	if err != nil {
		info.limit = "error"
		writeError(w, r, g.logger, err)
		return nil, false, false
	}
	d := res.Decision
	setRateLimitHeaders(w.Header(), pol, d)
	if !d.Allowed {
		info.limit = "limited"
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(d.RetryAfter, 1), 10))
		writeError(w, r, g.logger, &apiError{status: http.StatusTooManyRequests, message: rateLimitBody{
			Error: "Rate limit exceeded", Tier: pol.Name, Limit: pol.Capacity,
		}})
		return nil, false, false
	}
	info.limit = "allowed"
	if !lookup {
		return nil, false, true
	}
	if !res.LookedUp {
		res.Value, res.Hit, res.CacheErr = g.cache.Get(ctx, key)
	}
	if res.CacheErr != nil {
		// The cache is an optimisation: on trouble, go to the model.
		g.logger.LogAttrs(ctx, slog.LevelWarn, "cache get failed", slog.String("request_id", info.id), slog.String("error", res.CacheErr.Error()))
	}
	if res.Hit {
		info.cache = "hit"
		return res.Value, true, true
	}
	info.cache = "miss"
	return nil, false, true
}

// store keeps a model's answer in the cache. A failure is logged and
// otherwise ignored: the caller has its answer already.
func (g *gateway) store(ctx context.Context, key cache.Key, answer []byte) {
	if err := g.cache.Set(ctx, key, answer); err != nil {
		g.logger.LogAttrs(ctx, slog.LevelWarn, "cache set failed", slog.String("request_id", requestID(ctx)), slog.String("error", err.Error()))
	}
}

// RequestCaps bound what one request of a tier may ask for.
type RequestCaps struct {
	// MaxTokens is the most completion tokens one call may ask for. A
	// /v1 call asking for more (max_tokens or max_completion_tokens) gets
	// 400; one asking for none is sent with max_completion_tokens set to
	// the cap, and /chat always is. 0 means no cap.
	MaxTokens int64
	// MaxBodyBytes bounds the request body of the routes that call the
	// model, within Deps.MaxBodyBytes (which bounds every route before
	// the caller is known). 0 means that bound alone.
	MaxBodyBytes int64
}

// TierCaps maps a tier to its caps. A tier not listed gets the free
// tier's, as with Policies.
type TierCaps map[string]RequestCaps

// For returns tier's caps.
func (c TierCaps) For(tier string) RequestCaps {
	if v, ok := c[tier]; ok {
		return v
	}
	return c["free"]
}

// limitBody bounds the request body by the caller's tier. The answer to
// a larger body names the limit (413), like the server-wide bound's.
func (g *gateway) limitBody(w http.ResponseWriter, r *http.Request) RequestCaps {
	c := g.caps.For(principalFrom(r.Context()).Tier)
	if c.MaxBodyBytes > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, c.MaxBodyBytes)
	}
	return c
}

// allowed reports whether the deployment lets requests name model.
func (g *gateway) allowed(model string) bool {
	return len(g.models) == 0 || slices.Contains(g.models, model)
}

// errModelNotAllowed is OpenAI's answer for a model one may not use.
func errModelNotAllowed(model string) *apiError {
	msg := fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model)
	return &apiError{status: http.StatusNotFound, message: msg,
		openAI: openAIErrorFields{typ: "invalid_request_error", code: "model_not_found", param: "model"}}
}

// cacheKey derives the cache key of a request on one endpoint. The
// endpoint is part of the scope because /chat and /v1 store different
// shapes of answer for what could be the same upstream request.
func (g *gateway) cacheKey(endpoint string, p principal, model string, body []byte) cache.Key {
	scope := "user:" + p.UserID
	if g.cacheScope == "global" {
		scope = "global"
	}
	return cache.NewKey(endpoint+"|"+scope, model, body)
}

// tokenBudgetBody is the 429 detail of a used-up budget outside /v1, in
// the spirit of the prototype's rate-limit body.
type tokenBudgetBody struct {
	Error        string `json:"error"`
	Tier         string `json:"tier"`
	Budget       int64  `json:"budget"`
	Used         int64  `json:"used"`
	ResetSeconds int64  `json:"reset_seconds"`
}

// reserve holds an estimate of a call's tokens against the caller's daily
// budget. A used-up budget is a 429 that names it; a budget store that
// cannot answer lets the call through or refuses it with 503, as
// configured.
func (g *gateway) reserve(ctx context.Context, p principal, estimate int64) (budget.Reservation, error) {
	if g.budget == nil {
		return budget.Reservation{}, nil
	}
	limit := g.budgets[p.Tier]
	res, _, err := g.budget.Reserve(ctx, p.UserID, limit, estimate)
	var exceeded *budget.ExceededError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &exceeded):
		st := exceeded.Status
		reset := ceilSeconds(st.Reset, 1)
		msg := fmt.Sprintf("Daily token budget of the %s tier (%d tokens per UTC day) is used up: %d used; it resets at 00:00 UTC, in %d seconds.",
			p.Tier, st.Limit, st.Used, reset)
		return budget.Reservation{}, &apiError{status: http.StatusTooManyRequests,
			message: tokenBudgetBody{Error: "Daily token budget exceeded", Tier: p.Tier, Budget: st.Limit, Used: st.Used, ResetSeconds: reset},
			// Waiting seconds will not help, so tell the SDKs not to retry.
			header: http.Header{"Retry-After": {strconv.FormatInt(reset, 10)}, "X-Should-Retry": {"false"}},
			openAI: openAIErrorFields{message: msg, typ: "insufficient_quota", code: "insufficient_quota"},
			cause:  err}
	case ctx.Err() != nil:
		return budget.Reservation{}, ctx.Err()
	}
	g.logger.LogAttrs(ctx, slog.LevelWarn, "token budget unavailable", slog.String("request_id", requestID(ctx)),
		slog.Bool("fail_open", g.failOpen), slog.String("error", err.Error()))
	if g.failOpen {
		return budget.Reservation{}, nil
	}
	return budget.Reservation{}, &apiError{status: http.StatusServiceUnavailable, message: "Token budget unavailable",
		header: http.Header{"Retry-After": {"1"}}, cause: err}
}

// finish settles the reservation to the tokens really used and records the
// call's usage. It runs when the call is over, whether it succeeded, failed
// or lost its client, so it does not use the request's cancellation.
func (g *gateway) finish(ctx context.Context, p principal, res budget.Reservation, model string, u llm.Usage) {
	info := requestInfoFrom(ctx)
	if g.budget != nil && res.UserID != "" {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		err := g.budget.Settle(bg, res, u.TotalTokens)
		cancel()
		if err != nil {
			g.logger.LogAttrs(ctx, slog.LevelWarn, "token budget settle failed", slog.String("request_id", info.id), slog.String("error", err.Error()))
		}
	}
	if u.TotalTokens == 0 {
		return
	}
	info.tokens, info.prompt, info.completion, info.model = u.TotalTokens, u.PromptTokens, u.CompletionTokens, model
	if g.usage == nil {
		return
	}
	// Record only queues the record; the client leaving changes nothing.
	if err := g.usage.Record(context.WithoutCancel(ctx), store.UsageRecord{
		UserID: p.UserID, KeyID: p.KeyID, Model: model,
		PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		At: time.Now().UTC(), RequestID: info.id,
	}); err != nil {
		g.logger.LogAttrs(ctx, slog.LevelError, "usage record failed", slog.String("request_id", info.id), slog.String("error", err.Error()))
	}
}

// estimateRequest is the reservation for a call: the request's size as
// prompt tokens (it overstates them, which is the safe side for a hold)
// plus the completion cap when the client set one.
func estimateRequest(body []byte, maxTokens int64) int64 {
	return int64(len(body)+3)/4 + maxTokens
}
