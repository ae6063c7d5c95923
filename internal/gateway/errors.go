package gateway

import (
	"errors"
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/ratelimit"
)

// LimitedError is a call refused by the caller's rate-limit bucket.
type LimitedError struct {
	Policy   ratelimit.Policy
	Decision ratelimit.Decision
}

func (e *LimitedError) Error() string {
	return fmt.Sprintf("gateway: rate limit of tier %q exceeded", e.Policy.Name)
}

// BudgetExceededError is a call refused because the caller's daily token
// budget is used up.
type BudgetExceededError struct {
	Tier   string
	Status budget.Status
	cause  error
}

func (e *BudgetExceededError) Error() string {
	return fmt.Sprintf("gateway: daily token budget of tier %q used up (%d of %d)", e.Tier, e.Status.Used, e.Status.Limit)
}

func (e *BudgetExceededError) Unwrap() error { return e.cause }

// ErrBudgetUnavailable wraps the budget store's failure when calls may not
// go on without it.
var ErrBudgetUnavailable = errors.New("gateway: token budget unavailable")

// ModelForbiddenError is a call naming a catalogue model that the
// caller's tier may not use.
type ModelForbiddenError struct {
	Model string
	Tier  string
}

func (e *ModelForbiddenError) Error() string {
	return fmt.Sprintf("gateway: the %s tier may not use model %q", e.Tier, e.Model)
}

// SpendExceededError is a call refused because the caller's daily spend
// limit is used up. Amounts are USD.
type SpendExceededError struct {
	Tier        string
	Limit, Used decimal.Decimal
	Reset       time.Duration
	cause       error
}

func (e *SpendExceededError) Error() string {
	return fmt.Sprintf("gateway: daily spend limit of tier %q used up (%s of %s USD)", e.Tier, e.Used, e.Limit)
}

func (e *SpendExceededError) Unwrap() error { return e.cause }
