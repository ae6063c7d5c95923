package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
)

// UsageCounter counts a user's recorded tokens since a time; it answers
// the day's tokens when no budget counter does.
type UsageCounter interface {
	TokensUsed(ctx context.Context, userID string, since time.Time) (int64, error)
}

// Quota is a user's rate-limit bucket and day of tokens, as they stand.
type Quota struct {
	Policy   ratelimit.Policy
	Decision ratelimit.Decision
	// Used is the tokens of the current UTC day; Limit is the tier's
	// daily budget, 0 when it has none.
	Used  int64
	Limit int64
	// Reset is the time until the day's budget resets (UTC midnight).
	Reset time.Duration
}

// Quota reports p's bucket (without spending from it) and day of tokens.
// With budgets on the day is the budget's own counter, which includes calls
// still running; without, or while the budget store is down and calls go on
// without it, it is the recorded usage.
func (g *Gateway) Quota(ctx context.Context, p Principal, requestID string, recorded UsageCounter) (Quota, error) {
	t := g.tiers.For(p.Tier)
	q := Quota{Policy: t.RateLimit}
	d, err := g.admitter.Peek(ctx, RateLimitKey(p.UserID), t.RateLimit)
	if err != nil {
		return q, err
	}
	q.Decision = d
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	q.Reset = midnight.AddDate(0, 0, 1).Sub(now)
	if g.budget == nil {
		q.Used, err = recorded.TokensUsed(ctx, p.UserID, midnight)
		return q, err
	}
	q.Limit = t.DailyTokens
	st, err := g.budget.Status(ctx, p.UserID, t.DailyTokens)
	if err != nil {
		if ctx.Err() != nil {
			return q, ctx.Err()
		}
		// As for a call (see reserve), the configuration says whether a
		// budget store that is down fails the request or is carried on
		// through with the recorded usage as the best count there is.
		g.logger.LogAttrs(ctx, slog.LevelWarn, "token budget unavailable", slog.String("request_id", requestID),
			slog.Bool("fail_open", g.failOpen), slog.String("error", err.Error()))
		if !g.failOpen {
			return q, fmt.Errorf("%w: %w", ErrBudgetUnavailable, err)
		}
		used, err := recorded.TokensUsed(ctx, p.UserID, midnight)
		if err != nil {
			return q, err
		}
		st = budget.Status{Used: used, Limit: t.DailyTokens}
	}
	q.Used = st.Used
	return q, nil
}

// ModelsFor returns the body of GET /v1/models for p: with a catalogue,
// the models p's tier may use; else as Models.
func (g *Gateway) ModelsFor(ctx context.Context, p Principal) ([]byte, error) {
	if g.catalog == nil {
		return g.Models(ctx)
	}
	t := g.tiers.For(p.Tier)
	var names []string
	for _, m := range g.catalog.Current().Models {
		if m.AllowsTier(t.Name) {
			names = append(names, m.Name)
		}
	}
	return llm.ModelList(names)
}

// Models returns the body of GET /v1/models: the allowlist when there is
// one, else the upstream's own list, reused for a minute.
func (g *Gateway) Models(ctx context.Context) ([]byte, error) {
	if len(g.models) > 0 {
		return llm.ModelList(g.models)
	}
	c := &g.modelList
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body != nil && time.Since(c.fetched) < modelListTTL {
		return c.body, nil
	}
	body, err := g.provider.Models(ctx)
	if err != nil {
		return nil, err
	}
	c.body, c.fetched = body, time.Now()
	return body, nil
}
