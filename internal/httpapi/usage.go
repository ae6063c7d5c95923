package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"
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
