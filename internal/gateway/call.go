package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
	"github.com/shopspring/decimal"
)

// Spec describes one model call.
type Spec struct {
	// Endpoint names the kind of call ("chat", "v1/chat/completions",
	// "v1/embeddings", "v1/responses"). It is part of the cache scope,
	// because endpoints store different shapes of answer for what could be
	// the same upstream request.
	Endpoint string
	// Model is the model the body names.
	Model string
	// Body is the request sent upstream: an OpenAI chat-completions (or
	// embeddings) body.
	Body []byte
	// CacheBody, when set, is what the cache key is derived from instead
	// of Body (say, Body without insignificant whitespace).
	CacheBody []byte
	// Estimate is the tokens held against the daily budget until the call
	// settles.
	Estimate int64
	// Cache asks for a lookup before the call and lets Store keep the
	// answer. It has no effect when the gateway has no cache.
	Cache bool
	// NoLimit spends no rate-limit token: a later model turn of a request
	// that paid for its first.
	NoLimit bool
	// RequestID ties logs and the usage record to the request.
	RequestID string
}

// Limit is the rate limiter's part in a call.
type Limit int

const (
	LimitNone    Limit = iota // not asked (NoLimit)
	LimitAllowed              // a token was spent
	LimitRefused              // the bucket was empty
	LimitError                // the limiter could not decide
)

// String is the access log's word for l.
func (l Limit) String() string {
	switch l {
	case LimitAllowed:
		return "allowed"
	case LimitRefused:
		return "limited"
	case LimitError:
		return "error"
	}
	return ""
}

// CacheResult is the cache's part in a call.
type CacheResult int

const (
	CacheNone CacheResult = iota // not looked up
	CacheHit
	CacheMiss
)

// String is the access log's word for c.
func (c CacheResult) String() string {
	switch c {
	case CacheHit:
		return "hit"
	case CacheMiss:
		return "miss"
	}
	return ""
}

// Outcome is what happened to a call, for the access log and headers.
type Outcome struct {
	// Tier is the tier the call was governed by.
	Tier tier.Tier
	// Limit and Decision are the rate limiter's answer.
	Limit    Limit
	Decision ratelimit.Decision
	Cache    CacheResult
	// Model answered the call (the upstream's more specific name when it
	// gave one); Usage is what it used. Both are set by Finish.
	Model string
	Usage llm.Usage
	// Cost is what the call cost in USD, by the catalogue's price of
	// Model (zero without one).
	Cost decimal.Decimal
}

// Call is one governed model call, begun by Begin. Its methods are not safe
// for concurrent use.
type Call struct {
	g       *Gateway
	p       Principal
	spec    Spec
	key     cache.Key
	cached  []byte
	res     budget.Reservation
	held    bool // a budget reservation is open
	spent   budget.Reservation
	holding bool // a spend reservation is open
	done    bool // Finish has run
	outcome Outcome
}

// Begin starts a call for p: it resolves the tier, spends one rate-limit
// token (unless s.NoLimit) and, when s.Cache, looks the answer up in the
// same step. A refused call returns a *LimitedError; the returned Call
// carries the outcome either way, so the caller can report it. A nil Call
// comes only with an error from the limiter itself.
func (g *Gateway) Begin(ctx context.Context, p Principal, s Spec) (*Call, error) {
	c := &Call{g: g, p: p, spec: s}
	t := g.tiers.For(p.Tier)
	c.outcome.Tier = t
	if err := g.checkModel(s.Model, t.Name); err != nil {
		// Refused before the limiter: a call that may not run spends
		// nothing.
		return c, err
	}
	if s.NoLimit {
		// A later model turn of a request: it paid its rate-limit token
		// with the first, and its answer (one step of a loop) is not
		// worth caching.
		c.spec.Cache = false
		return c, nil
	}
	lookup := s.Cache && g.cache != nil
	if lookup {
		c.key = g.cacheKey(s, p)
	}
	var res admission.Result
	var err error
	if lookup {
		res, err = g.admitter.AllowAndGet(ctx, RateLimitKey(p.UserID), t.RateLimit, c.key)
	} else {
		res.Decision, err = g.admitter.Allow(ctx, RateLimitKey(p.UserID), t.RateLimit)
	}
	if err != nil {
		c.outcome.Limit = LimitError
		return c, err
	}
	c.outcome.Decision = res.Decision
	if !res.Decision.Allowed {
		c.outcome.Limit = LimitRefused
		return c, &LimitedError{Policy: t.RateLimit, Decision: res.Decision}
	}
	c.outcome.Limit = LimitAllowed
	if !lookup {
		return c, nil
	}
	if !res.LookedUp {
		res.Value, res.Hit, res.CacheErr = g.cache.Get(ctx, c.key)
	}
	if res.CacheErr != nil {
		// The cache is an optimisation: on trouble, go to the model.
		g.logger.LogAttrs(ctx, slog.LevelWarn, "cache get failed", slog.String("request_id", s.RequestID), slog.String("error", res.CacheErr.Error()))
	}
	if res.Hit {
		c.outcome.Cache = CacheHit
		c.cached = res.Value
		return c, nil
	}
	c.outcome.Cache = CacheMiss
	return c, nil
}

// Cached returns the cached answer of a call that found one.
func (c *Call) Cached() ([]byte, bool) {
	return c.cached, c.outcome.Cache == CacheHit
}

// Unusable reports that the cached answer could not be used (it is not an
// answer of this endpoint's shape); the call then goes to the model and
// its answer overwrites the entry.
func (c *Call) Unusable() {
	c.cached = nil
	c.outcome.Cache = CacheMiss
}

// Outcome returns what has happened to the call so far.
func (c *Call) Outcome() Outcome { return c.outcome }

// Complete reserves the budget and makes a plain chat-completions call. On
// an upstream error the reservation is released (Finish with no usage);
// on success the caller must call Finish with the usage it counts.
func (c *Call) Complete(ctx context.Context) (*llm.Response, error) {
	return c.do(ctx, c.g.provider.Complete)
}

// Embeddings is Complete for an embeddings call.
func (c *Call) Embeddings(ctx context.Context) (*llm.Response, error) {
	return c.do(ctx, c.g.provider.Embeddings)
}

func (c *Call) do(ctx context.Context, call func(context.Context, []byte) (*llm.Response, error)) (*llm.Response, error) {
	if err := c.reserve(ctx); err != nil {
		return nil, err
	}
	resp, err := call(ctx, c.spec.Body)
	if err != nil {
		c.Finish(ctx, c.spec.Model, llm.Usage{})
		return nil, err
	}
	return resp, nil
}

// Stream reserves the budget and opens a streamed call. On an upstream
// error the reservation is released; otherwise the caller must call
// Finish once the stream is over, however it ended.
func (c *Call) Stream(ctx context.Context) (*llm.Stream, error) {
	if err := c.reserve(ctx); err != nil {
		return nil, err
	}
	s, err := c.g.provider.Stream(ctx, c.spec.Body)
	if err != nil {
		c.Finish(ctx, c.spec.Model, llm.Usage{})
		return nil, err
	}
	return s, nil
}

// reserve holds the call's estimate against the caller's daily budget. A
// used-up budget is a *BudgetExceededError; a budget store that cannot
// answer lets the call through or fails with ErrBudgetUnavailable, as
// configured.
func (c *Call) reserve(ctx context.Context) error {
	if err := c.reserveTokens(ctx); err != nil {
		return err
	}
	if err := c.reserveSpend(ctx); err != nil {
		c.settle(ctx, 0, decimal.Zero)
		return err
	}
	return nil
}

// reserveSpend holds the call's estimated cost (its estimate of tokens at
// the model's input price) against the caller's daily spend limit.
func (c *Call) reserveSpend(ctx context.Context) error {
	g := c.g
	if g.spend == nil || c.holding {
		return nil
	}
	t := c.outcome.Tier
	var hold int64
	if p, ok := g.price(c.spec.Model); ok {
		hold = picoUSD(p.Cost(c.spec.Estimate, 0))
	}
	limit := picoUSD(t.DailySpend)
	res, _, err := g.spend.Reserve(ctx, c.p.UserID, limit, hold)
	var exceeded *budget.ExceededError
	switch {
	case err == nil:
		c.spent, c.holding = res, true
		return nil
	case errors.As(err, &exceeded):
		return &SpendExceededError{Tier: t.Name, Limit: t.DailySpend, Used: usdOf(exceeded.Status.Used), Reset: exceeded.Status.Reset, cause: err}
	case ctx.Err() != nil:
		return ctx.Err()
	}
	g.logger.LogAttrs(ctx, slog.LevelWarn, "spend limit unavailable", slog.String("request_id", c.spec.RequestID),
		slog.Bool("fail_open", g.failOpen), slog.String("error", err.Error()))
	if g.failOpen {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrBudgetUnavailable, err)
}

// picoPerUSD converts USD to the spend budget's unit, picodollars: exact
// for every catalogue price (at most 6 decimal places per million tokens).
var picoPerUSD = decimal.New(1, 12)

func picoUSD(d decimal.Decimal) int64 { return d.Mul(picoPerUSD).Ceil().IntPart() }

func usdOf(pico int64) decimal.Decimal { return decimal.New(pico, -12) }

// reserveTokens holds the call's estimate against the daily token budget.
func (c *Call) reserveTokens(ctx context.Context) error {
	g := c.g
	if g.budget == nil || c.held {
		return nil
	}
	t := c.outcome.Tier
	res, _, err := g.budget.Reserve(ctx, c.p.UserID, t.DailyTokens, c.spec.Estimate)
	var exceeded *budget.ExceededError
	switch {
	case err == nil:
		c.res, c.held = res, true
		return nil
	case errors.As(err, &exceeded):
		return &BudgetExceededError{Tier: t.Name, Status: exceeded.Status, cause: err}
	case ctx.Err() != nil:
		return ctx.Err()
	}
	g.logger.LogAttrs(ctx, slog.LevelWarn, "token budget unavailable", slog.String("request_id", c.spec.RequestID),
		slog.Bool("fail_open", g.failOpen), slog.String("error", err.Error()))
	if g.failOpen {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrBudgetUnavailable, err)
}

// Finish ends the call: it settles the budget's hold to the tokens really
// used and records the usage against model. It runs whether the call
// succeeded, failed or lost its client, so it does not use ctx's
// cancellation. Only the first Finish counts.
func (c *Call) Finish(ctx context.Context, model string, u llm.Usage) {
	if c.done {
		return
	}
	c.done = true
	g := c.g
	var cost decimal.Decimal
	if p, ok := g.price(model); ok {
		cost = p.Cost(u.PromptTokens, u.CompletionTokens)
	}
	c.settle(ctx, u.TotalTokens, cost)
	if u.TotalTokens == 0 {
		return
	}
	c.outcome.Cost = cost
	c.outcome.Model, c.outcome.Usage = model, u
	if g.usage == nil {
		return
	}
	// Record only queues the record; the client leaving changes nothing.
	if err := g.usage.Record(context.WithoutCancel(ctx), store.UsageRecord{
		UserID: c.p.UserID, KeyID: c.p.KeyID, Model: model,
		PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		At: time.Now().UTC(), RequestID: c.spec.RequestID, Cost: cost,
	}); err != nil {
		g.logger.LogAttrs(ctx, slog.LevelError, "usage record failed", slog.String("request_id", c.spec.RequestID), slog.String("error", err.Error()))
	}
}

// settle replaces the call's holds by what it used: tokens, and cost in
// USD.
func (c *Call) settle(ctx context.Context, tokens int64, cost decimal.Decimal) {
	g := c.g
	if c.held {
		c.held = false
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		err := g.budget.Settle(bg, c.res, tokens)
		cancel()
		if err != nil {
			g.logger.LogAttrs(ctx, slog.LevelWarn, "token budget settle failed", slog.String("request_id", c.spec.RequestID), slog.String("error", err.Error()))
		}
	}
	if c.holding {
		c.holding = false
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		err := g.spend.Settle(bg, c.spent, picoUSD(cost))
		cancel()
		if err != nil {
			g.logger.LogAttrs(ctx, slog.LevelWarn, "spend limit settle failed", slog.String("request_id", c.spec.RequestID), slog.String("error", err.Error()))
		}
	}
}

// Store keeps answer in the cache under the call's key, when the call was
// looked up. A failure is logged and otherwise ignored: the caller has its
// answer already. It does not use ctx's cancellation.
func (c *Call) Store(ctx context.Context, answer []byte) {
	if c.key == "" || !c.spec.Cache || c.g.cache == nil {
		return
	}
	if err := c.g.cache.Set(context.WithoutCancel(ctx), c.key, answer); err != nil {
		c.g.logger.LogAttrs(ctx, slog.LevelWarn, "cache set failed", slog.String("request_id", c.spec.RequestID), slog.String("error", err.Error()))
	}
}

// Caching reports whether Store will keep the answer.
func (c *Call) Caching() bool { return c.key != "" && c.spec.Cache && c.g.cache != nil }

// cacheKey derives the cache key of a call.
func (g *Gateway) cacheKey(s Spec, p Principal) cache.Key {
	body := s.CacheBody
	if body == nil {
		body = s.Body
	}
	if g.scope == ScopeGlobal {
		return cache.NewKey(s.Endpoint+"|global", s.Model, body)
	}
	// A user's entries are kept near the user's rate-limit bucket, which
	// the same call reads (one Redis Cluster node, one round trip).
	return cache.NewKey(s.Endpoint+"|user:"+p.UserID, s.Model, body).Near(RateLimitKey(p.UserID))
}
