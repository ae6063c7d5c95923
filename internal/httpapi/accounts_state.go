package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/store"
)

// accountStateTTL is how stale a replica's view of an account may be: a
// disabled user, a tier change or a role change reaches every replica within
// this time, at the cost of one database read per active user per period.
const accountStateTTL = 2 * time.Second

// maxAccountStates bounds the map; past it the map starts over (a burst of
// lookups, not a correctness problem).
const maxAccountStates = 100_000

// accountState is what requests need to know about an account beyond its
// token: whether it still may act, its current tier and its role.
type accountState struct {
	Tier     string
	Role     string
	Disabled bool
}

type accountLookup interface {
	UserByID(ctx context.Context, id string) (store.User, error)
}

// accountStates caches account states briefly, so that checking every
// request against the database costs one read per user every few seconds.
type accountStates struct {
	users  accountLookup
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]accountEntry
}

type accountEntry struct {
	state   accountState
	fetched time.Time
}

func newAccountStates(users accountLookup, logger *slog.Logger) *accountStates {
	return &accountStates{users: users, logger: logger, now: time.Now, entries: map[string]accountEntry{}}
}

// errAccountGone reports a token whose user no longer exists.
var errAccountGone = errors.New("httpapi: account no longer exists")

// get returns the account's current state. When the database cannot answer,
// a stale entry is used if there is one; otherwise ok is false and the caller
// falls back to what the signed token says (availability over freshness
// during an outage; the token itself is still verified). dbFailed reports
// that outage.
func (a *accountStates) get(ctx context.Context, userID string) (st accountState, ok, dbFailed bool, err error) {
	now := a.now()
	a.mu.Lock()
	e, found := a.entries[userID]
	a.mu.Unlock()
	if found && now.Sub(e.fetched) < accountStateTTL {
		return e.state, true, false, nil
	}
	u, err := a.users.UserByID(ctx, userID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.forget(userID)
		return accountState{}, false, false, errAccountGone
	case err != nil:
		if ctx.Err() != nil {
			return accountState{}, false, false, ctx.Err()
		}
		a.logger.LogAttrs(ctx, slog.LevelWarn, "account lookup failed; using the last known state or the token's claims",
			slog.String("request_id", requestID(ctx)), slog.String("error", err.Error()))
		return e.state, found, true, nil
	}
	st = accountState{Tier: u.Tier, Role: u.Role, Disabled: u.Disabled}
	a.mu.Lock()
	if len(a.entries) >= maxAccountStates {
		a.entries = map[string]accountEntry{}
	}
	a.entries[userID] = accountEntry{state: st, fetched: now}
	a.mu.Unlock()
	return st, true, false, nil
}

// accountOf is get for a request: a database failure it survived is noted
// in the request's access-log record.
func accountOf(ctx context.Context, states *accountStates, userID string) (accountState, bool, error) {
	st, ok, dbFailed, err := states.get(ctx, userID)
	if dbFailed {
		if ri := requestInfoFrom(ctx); ri != nil {
			ri.dbError = true
		}
	}
	return st, ok, err
}

// forget drops a cached state, so a change made on this replica applies at once.
func (a *accountStates) forget(userID string) {
	a.mu.Lock()
	delete(a.entries, userID)
	a.mu.Unlock()
}
