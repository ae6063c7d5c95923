// Package budget enforces daily token budgets: how many model tokens (prompt
// plus completion) one user may spend per UTC calendar day.
//
// A call first reserves an estimate of its tokens and, once it has finished,
// settles the reservation to the tokens it really used. The check and the
// reservation are one atomic step, so concurrent calls see each other's
// reservations:
//
//   - A call is admitted when the day's counter — tokens of finished calls
//     plus the reservations of calls still running — is below the limit at
//     the moment it reserves. "Would start past the budget" means exactly
//     that the counter has reached the limit.
//   - The counter can therefore pass the limit only through the last call
//     admitted below it, and through calls that use more than they reserved
//     (the estimate is a guess, and streams may run long). It can never pass
//     because many calls checked at once: each one that is admitted makes the
//     counter larger for the next.
//   - Tokens count towards the day their call started, even when the call
//     ends after midnight.
//
// Two implementations share those semantics: [Memory] for one process, and
// [Redis] for replicas sharing one Redis, where the check-and-reserve is a
// single Lua script on one key per user and day.
package budget

import (
	"errors"
	"fmt"
	"time"
)

// ErrExceeded is returned by Reserve when the day's budget is used up. The
// error also carries the [Status] through [ExceededError].
var ErrExceeded = errors.New("budget: daily token budget used up")

// Reservation is one call's hold on its user's budget for one day. The zero
// value holds nothing and settles to nothing.
type Reservation struct {
	// UserID owns the budget.
	UserID string
	// Day is the UTC date (YYYY-MM-DD) the tokens count towards.
	Day string
	// Amount is the number of tokens held.
	Amount int64
}

// Status describes a user's budget for the current day.
type Status struct {
	// Used is the counter: tokens of finished calls and reservations of
	// running ones.
	Used int64
	// Limit is the budget; 0 means none.
	Limit int64
	// Reset is the time until the next UTC midnight, when a new day's
	// budget starts.
	Reset time.Duration
}

// Remaining is what is left of the budget, never negative; 0 when there is
// no budget, so check Limit first.
func (s Status) Remaining() int64 {
	if s.Limit <= 0 || s.Used >= s.Limit {
		return 0
	}
	return s.Limit - s.Used
}

// ExceededError is the error Reserve returns when the budget is used up. It
// unwraps to ErrExceeded.
type ExceededError struct {
	Status Status
}

// Error names the budget and its state, without anything secret.
func (e *ExceededError) Error() string {
	return fmt.Sprintf("budget: daily token budget of %d used up (%d used)", e.Status.Limit, e.Status.Used)
}

// Unwrap makes errors.Is(err, ErrExceeded) true.
func (e *ExceededError) Unwrap() error { return ErrExceeded }

// dayOf is the UTC date that now falls on.
func dayOf(now time.Time) string { return now.UTC().Format(time.DateOnly) }

// untilMidnight is the time from now until the next UTC midnight.
func untilMidnight(now time.Time) time.Duration {
	u := now.UTC()
	next := time.Date(u.Year(), u.Month(), u.Day()+1, 0, 0, 0, 0, time.UTC)
	return next.Sub(u)
}

// validate checks Reserve's arguments, which come from our own code.
func validate(userID string, amount int64) error {
	if userID == "" {
		return errors.New("budget: empty user id")
	}
	if amount < 0 {
		return fmt.Errorf("budget: negative reservation %d", amount)
	}
	return nil
}
