package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentapi/agentapi/internal/budget"
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

// Models returns the body of GET /v1/models: the allowlist when there is
// one, else the upstream's own list, reused for a minute.
func (g *Gateway) Models(ctx context.Context) ([]byte, error) {
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
