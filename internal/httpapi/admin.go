package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

// Roles an account can have.
const (
	roleAdmin = "admin"
	roleUser  = store.DefaultRole
)

// adminStore is what the admin endpoints need from the database.
type adminStore interface {
	UserByID(ctx context.Context, id string) (store.User, error)
	ListUsers(ctx context.Context, limit, offset int, emailContains string) ([]store.User, error)
	SetTier(ctx context.Context, email, tier string) (store.User, error)
	SetRole(ctx context.Context, id, role string) (store.User, error)
	SetDisabled(ctx context.Context, id string, disabled bool) (store.User, error)
	UsageByDay(ctx context.Context, userID string, from, to time.Time) ([]store.UsageDay, error)
}

// adminUser is an account as admins see it (never the password hash).
type adminUser struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Tier      string    `json:"tier"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

type adminUserList struct {
	Users  []adminUser `json:"users"`
	Limit  int         `json:"limit"`
	Offset int         `json:"offset"`
}

// adminUserPatch changes any of tier, role and disabled; absent fields stay.
type adminUserPatch struct {
	Tier     *string `json:"tier,omitempty" jsonschema:"enum=free,enum=pro"`
	Role     *string `json:"role,omitempty" jsonschema:"enum=user,enum=admin"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// usageReport is token usage totals by day and model over [from, to].
type usageReport struct {
	UserID string      `json:"user_id"`
	From   string      `json:"from"`
	To     string      `json:"to"`
	Days   []usageDay  `json:"days"`
	Totals usageTotals `json:"totals"`
}

// usageDay is one day's usage of one model.
type usageDay struct {
	Day              string `json:"day"`
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	Requests         int64  `json:"requests"`
	// CostUSD is exact, as a decimal string.
	CostUSD decimal.Decimal `json:"cost_usd"`
}

type usageTotals struct {
	PromptTokens     int64           `json:"prompt_tokens"`
	CompletionTokens int64           `json:"completion_tokens"`
	TotalTokens      int64           `json:"total_tokens"`
	Requests         int64           `json:"requests"`
	CostUSD          decimal.Decimal `json:"cost_usd"`
}

func toAdminUser(u store.User) adminUser {
	return adminUser{ID: u.ID, Email: u.Email, Tier: u.Tier, Role: u.Role, Disabled: u.Disabled, CreatedAt: u.CreatedAt}
}

func handleAdminListUsers(logger *slog.Logger, users adminStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, offset := 100, 0
		var problems []fieldProblem
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 500 {
				problems = append(problems, fieldProblem{"limit", "must be a whole number from 1 to 500"})
			}
			limit = n
		}
		if v := q.Get("offset"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				problems = append(problems, fieldProblem{"offset", "must be a whole number from 0"})
			}
			offset = n
		}
		email := q.Get("email")
		if len(email) > maxEmailBytes {
			problems = append(problems, fieldProblem{"email", "must be at most 254 bytes"})
		}
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		list, err := users.ListUsers(r.Context(), limit, offset, email)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		out := adminUserList{Users: make([]adminUser, 0, len(list)), Limit: limit, Offset: offset}
		for _, u := range list {
			out.Users = append(out.Users, toAdminUser(u))
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func handleAdminGetUser(logger *slog.Logger, users adminStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := users.UserByID(r.Context(), r.PathValue("id"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, toAdminUser(u))
	})
}

func handleAdminPatchUser(logger *slog.Logger, users adminStore, states *accountStates) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in adminUserPatch
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		id := r.PathValue("id")
		self := principalFrom(r.Context()).UserID == id
		var problems []fieldProblem
		if in.Tier != nil && !slices.Contains(tier.Names(), *in.Tier) {
			problems = append(problems, fieldProblem{"tier", "must be " + strings.Join(tier.Names(), " or ")})
		}
		if in.Role != nil && *in.Role != roleAdmin && *in.Role != roleUser {
			problems = append(problems, fieldProblem{"role", "must be user or admin"})
		}
		// An admin locking themselves out leaves nobody to undo it.
		if self && in.Disabled != nil && *in.Disabled {
			problems = append(problems, fieldProblem{"disabled", "an administrator cannot disable their own account"})
		}
		if self && in.Role != nil && *in.Role != roleAdmin {
			problems = append(problems, fieldProblem{"role", "an administrator cannot remove their own admin role"})
		}
		if in.Tier == nil && in.Role == nil && in.Disabled == nil {
			problems = append(problems, fieldProblem{"body", "set at least one of tier, role, disabled"})
		}
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		ctx := r.Context()
		u, err := users.UserByID(ctx, id)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if in.Tier != nil {
			if u, err = users.SetTier(ctx, u.Email, *in.Tier); err != nil {
				writeError(w, r, logger, err)
				return
			}
		}
		if in.Role != nil {
			if u, err = users.SetRole(ctx, id, *in.Role); err != nil {
				writeError(w, r, logger, err)
				return
			}
		}
		if in.Disabled != nil {
			if u, err = users.SetDisabled(ctx, id, *in.Disabled); err != nil {
				writeError(w, r, logger, err)
				return
			}
		}
		states.forget(id)
		logger.LogAttrs(ctx, slog.LevelInfo, "admin changed user", slog.String("request_id", requestID(ctx)),
			slog.String("admin_id", principalFrom(ctx).UserID), slog.String("target_id", id),
			slog.String("tier", u.Tier), slog.String("role", u.Role), slog.Bool("disabled", u.Disabled))
		writeJSON(w, http.StatusOK, toAdminUser(u))
	})
}

func handleAdminUserUsage(logger *slog.Logger, users adminStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		from, to, err := usageRange(r, time.Now().UTC())
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if _, err := users.UserByID(r.Context(), id); err != nil {
			writeError(w, r, logger, err)
			return
		}
		rep, err := buildUsageReport(r.Context(), users, id, from, to)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
}

// usageRange reads from and to (YYYY-MM-DD, UTC, both inclusive) from the
// query; the default is the current month so far.
func usageRange(r *http.Request, now time.Time) (from, to time.Time, err error) {
	const layout = "2006-01-02"
	q := r.URL.Query()
	from = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	to = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	var problems []fieldProblem
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(layout, v); err != nil {
			problems = append(problems, fieldProblem{"from", "must be a date like 2026-01-31"})
		}
	}
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(layout, v); err != nil {
			problems = append(problems, fieldProblem{"to", "must be a date like 2026-01-31"})
		}
	}
	if len(problems) == 0 && to.Before(from) {
		problems = append(problems, fieldProblem{"to", "must not be before from"})
	}
	if len(problems) == 0 && to.Sub(from) > 366*24*time.Hour {
		problems = append(problems, fieldProblem{"to", "the range must be at most 366 days"})
	}
	if len(problems) > 0 {
		return time.Time{}, time.Time{}, errValidation(problems...)
	}
	return from, to, nil
}

type usageReader interface {
	UsageByDay(ctx context.Context, userID string, from, to time.Time) ([]store.UsageDay, error)
}

// buildUsageReport totals a user's usage over the inclusive date range.
func buildUsageReport(ctx context.Context, usage usageReader, userID string, from, to time.Time) (usageReport, error) {
	days, err := usage.UsageByDay(ctx, userID, from, to.AddDate(0, 0, 1))
	if err != nil {
		return usageReport{}, fmt.Errorf("usage report: %w", err)
	}
	rep := usageReport{UserID: userID, From: from.Format("2006-01-02"), To: to.Format("2006-01-02"), Days: make([]usageDay, 0, len(days))}
	for _, d := range days {
		rep.Days = append(rep.Days, usageDay{Day: d.Day, Model: d.Model, PromptTokens: d.PromptTokens, CompletionTokens: d.CompletionTokens,
			TotalTokens: d.TotalTokens, Requests: d.Requests, CostUSD: d.Cost})
		rep.Totals.CostUSD = rep.Totals.CostUSD.Add(d.Cost)
		rep.Totals.PromptTokens += d.PromptTokens
		rep.Totals.CompletionTokens += d.CompletionTokens
		rep.Totals.TotalTokens += d.TotalTokens
		rep.Totals.Requests += d.Requests
	}
	return rep, nil
}
