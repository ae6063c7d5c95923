package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentapi/agentapi/internal/budget"
)

// usageStore is what GET /usage and the quota's token count read.
type usageStore interface {
	usageReader
	TokensUsed(ctx context.Context, userID string, since time.Time) (int64, error)
}

// tokenBudgetInfo is the token side of GET /chat/quota: what the caller
// used in the current budget period (the UTC day) and, when their tier has
// a budget, how much of it is left. Limit and Remaining are null without a
// budget.
type tokenBudgetInfo struct {
	Period       string `json:"period"`
	Used         int64  `json:"used"`
	Limit        *int64 `json:"limit"`
	Remaining    *int64 `json:"remaining"`
	ResetSeconds int64  `json:"reset_seconds"`
}

// tokenBudget reports the caller's tokens of the day. With budgets on it is
// the budget's own counter, which includes calls still running; without,
// or while the budget store is down and calls go on without it, it is the
// recorded usage (written within a second or so of each call).
func (g *gateway) tokenBudget(ctx context.Context, p principal, reports usageStore) (tokenBudgetInfo, error) {
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	info := tokenBudgetInfo{Period: "day", ResetSeconds: ceilSeconds(midnight.AddDate(0, 0, 1).Sub(now), 0)}
	if g.budget == nil {
		used, err := reports.TokensUsed(ctx, p.UserID, midnight)
		if err != nil {
			return info, err
		}
		info.Used = used
		return info, nil
	}
	limit := g.budgets[p.Tier]
	st, err := g.budget.Status(ctx, p.UserID, limit)
	if err != nil {
		if ctx.Err() != nil {
			return info, ctx.Err()
		}
		// The budget store is down. As for a call (see reserve), the
		// configuration says whether that is a 503 or something to carry
		// on through; carrying on, calls go unbudgeted meanwhile and the
		// recorded usage is the best count there is.
		g.logger.LogAttrs(ctx, slog.LevelWarn, "token budget unavailable", slog.String("request_id", requestID(ctx)),
			slog.Bool("fail_open", g.failOpen), slog.String("error", err.Error()))
		if !g.failOpen {
			return info, &apiError{status: http.StatusServiceUnavailable, message: "Token budget unavailable",
				header: http.Header{"Retry-After": {"1"}}, cause: err}
		}
		used, err := reports.TokensUsed(ctx, p.UserID, midnight)
		if err != nil {
			return info, err
		}
		st = budget.Status{Used: used, Limit: limit}
	}
	info.Used = st.Used
	if limit > 0 {
		rem := st.Remaining()
		info.Limit, info.Remaining = &limit, &rem
	}
	return info, nil
}

// handleUsage is GET /usage: the caller's token usage by day and model over
// from..to (YYYY-MM-DD, UTC, inclusive; default the current month so far).
func handleUsage(logger *slog.Logger, reports usageStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, to, err := usageRange(r, time.Now().UTC())
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		rep, err := buildUsageReport(r.Context(), reports, principalFrom(r.Context()).UserID, from, to)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
}
