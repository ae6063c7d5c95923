// Package tier is the table of account tiers: each tier's name, its
// rate-limit bucket, its per-request caps and its daily token budget, in one
// place. The table is built once from the configuration and handed to every
// part of the service that treats tiers differently.
package tier

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/agentapi/agentapi/internal/ratelimit"
)

// The tiers agentapi knows, least privileged first. These constants are the
// only place their names are spelled outside tests and docs.
const (
	Free = "free"
	Pro  = "pro"
)

// Names lists the known tiers, least privileged first.
func Names() []string { return []string{Free, Pro} }

// EnvSuffix is the suffix of a tier's configuration variables
// (RATE_LIMIT_FREE, MAX_TOKENS_PRO, ...).
func EnvSuffix(name string) string { return strings.ToUpper(name) }

// Tier is everything that differs between tiers.
type Tier struct {
	// Name is the tier's name as stored on accounts.
	Name string
	// RateLimit is the bucket every model call spends one token of.
	RateLimit ratelimit.Policy
	// MaxTokens is the most completion tokens one call may ask for; a call
	// asking for none is sent with this cap. 0 means no cap.
	MaxTokens int64
	// MaxBodyBytes bounds the request body of the routes that call the
	// model, within the server-wide bound. 0 means that bound alone.
	MaxBodyBytes int64
	// DailyTokens is the tokens a user may spend per UTC day. 0 means no
	// budget.
	DailyTokens int64
	// DailySpend is the USD a user may spend per UTC day, priced by the
	// model catalogue. 0 means no limit.
	DailySpend decimal.Decimal
	// MCPRateLimit is the bucket every tool call through the MCP gateway
	// spends one token of; a zero Capacity means the model-call bucket's
	// numbers apply.
	MCPRateLimit ratelimit.Policy
	// MaxToolCalls is the most server-side (MCP) tool calls one response
	// may make; a request's max_tool_calls is capped by it. 0 means the
	// tier's responses may make none.
	MaxToolCalls int64
}

// Table holds the tiers, least privileged first. The zero Table is empty;
// build one with New.
type Table struct {
	tiers []Tier
}

// ErrInvalid reports a table that cannot be used.
var ErrInvalid = errors.New("tier: invalid table")

// New builds a table from tiers given least privileged first. Every tier
// needs a unique, non-empty name and a valid rate-limit policy.
func New(tiers ...Tier) (Table, error) {
	if len(tiers) == 0 {
		return Table{}, fmt.Errorf("%w: no tiers", ErrInvalid)
	}
	seen := make(map[string]bool, len(tiers))
	out := make([]Tier, len(tiers))
	for i, t := range tiers {
		if t.Name == "" {
			return Table{}, fmt.Errorf("%w: tier %d has no name", ErrInvalid, i)
		}
		if seen[t.Name] {
			return Table{}, fmt.Errorf("%w: tier %q listed twice", ErrInvalid, t.Name)
		}
		seen[t.Name] = true
		t.RateLimit.Name = t.Name
		if err := t.RateLimit.Validate(); err != nil {
			return Table{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if t.MCPRateLimit.Capacity == 0 {
			t.MCPRateLimit = t.RateLimit
		}
		t.MCPRateLimit.Name = t.Name
		if err := t.MCPRateLimit.Validate(); err != nil {
			return Table{}, fmt.Errorf("%w: mcp: %w", ErrInvalid, err)
		}
		if t.MaxTokens < 0 || t.MaxBodyBytes < 0 || t.DailyTokens < 0 || t.DailySpend.IsNegative() || t.MaxToolCalls < 0 {
			return Table{}, fmt.Errorf("%w: tier %q has a negative cap or budget", ErrInvalid, t.Name)
		}
		out[i] = t
	}
	return Table{tiers: out}, nil
}

// For returns the named tier. An unknown name (a tier retired since the
// account was made, or a hand-edited row) gets the least privileged tier.
func (t Table) For(name string) Tier {
	for _, v := range t.tiers {
		if v.Name == name {
			return v
		}
	}
	if len(t.tiers) == 0 {
		return Tier{}
	}
	return t.tiers[0]
}

// Known reports whether name is a tier of the table.
func (t Table) Known(name string) bool {
	for _, v := range t.tiers {
		if v.Name == name {
			return true
		}
	}
	return false
}

// Default is the tier new accounts get: the least privileged.
func (t Table) Default() Tier { return t.For("") }

// All returns the tiers, least privileged first.
func (t Table) All() []Tier { return append([]Tier(nil), t.tiers...) }

// AnyBudget reports whether some tier has a daily token budget. Budgets are
// counted for every tier as soon as one has a budget, so a user moved to a
// budgeted tier mid-day finds their day counted.
func (t Table) AnyBudget() bool {
	for _, v := range t.tiers {
		if v.DailyTokens > 0 {
			return true
		}
	}
	return false
}

// AnySpendLimit reports whether some tier has a daily spend limit; as with
// token budgets, spend is then counted for every tier.
func (t Table) AnySpendLimit() bool {
	for _, v := range t.tiers {
		if v.DailySpend.IsPositive() {
			return true
		}
	}
	return false
}
