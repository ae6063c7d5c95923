package gateway

import (
	"errors"
	"fmt"

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
