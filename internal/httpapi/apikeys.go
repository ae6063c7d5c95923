package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/store"
)

// keyStore is what API keys need from the database.
type keyStore interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) (store.APIKey, error)
	ListAPIKeys(ctx context.Context, userID string) ([]store.APIKey, error)
	RevokeAPIKey(ctx context.Context, userID, id string) (store.APIKey, error)
	APIKeyByHash(ctx context.Context, hash string) (store.APIKey, error)
	TouchAPIKey(ctx context.Context, id string, at time.Time) error
}

// apiKeyTTL is how long a replica trusts what it looked up about a key.
// A key revoked on another replica stops working here within this time;
// on the replica that revoked it, at once.
const apiKeyTTL = 2 * time.Second

// apiKeyTouchEvery limits how often a key's last use is written: at most
// once a minute per key and replica, so the write costs nothing on the
// request path of a busy key.
const apiKeyTouchEvery = time.Minute

// maxAPIKeyEntries bounds the lookup cache, which also remembers unknown
// keys briefly; past it the cache starts over.
const maxAPIKeyEntries = 100_000

// Limits on key management.
const (
	maxKeyNameChars   = 100
	maxActiveKeys     = 100
	keyStoreTimeout   = 2 * time.Second
	errKeyNameProblem = "must be 1 to 100 printable characters"
)

// errInvalidAPIKey covers an unknown and a revoked key alike, so a caller
// cannot tell which keys ever existed. It is built per use: an error value
// carries a header map, which no two responses should share.
func errInvalidAPIKey() *apiError {
	return &apiError{status: http.StatusUnauthorized, message: "Invalid API key",
		header: http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}},
		openAI: openAIErrorFields{message: "Incorrect API key provided.", code: "invalid_api_key"}}
}

// apiKeys resolves API keys to their owners, with a short-lived cache so
// that a busy key costs one database read per replica every few seconds.
type apiKeys struct {
	store  keyStore
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]keyEntry // by hash
}

type keyEntry struct {
	key     store.APIKey
	found   bool
	fetched time.Time
}

func newAPIKeys(s keyStore, logger *slog.Logger) *apiKeys {
	return &apiKeys{store: s, logger: logger, now: time.Now, entries: map[string]keyEntry{}}
}

// resolve returns the live key whose secret is given, or errInvalidAPIKey.
// Other errors mean the database could not answer.
func (a *apiKeys) resolve(ctx context.Context, secret string) (store.APIKey, error) {
	hash := auth.HashAPIKey(secret)
	now := a.now()
	a.mu.Lock()
	e, ok := a.entries[hash]
	a.mu.Unlock()
	if !ok || now.Sub(e.fetched) >= apiKeyTTL {
		k, err := a.store.APIKeyByHash(ctx, hash)
		switch {
		case errors.Is(err, store.ErrNotFound):
			e = keyEntry{found: false, fetched: now}
		case err != nil:
			return store.APIKey{}, fmt.Errorf("api key lookup: %w", err)
		default:
			e = keyEntry{key: k, found: true, fetched: now}
		}
		a.mu.Lock()
		if len(a.entries) >= maxAPIKeyEntries {
			a.entries = map[string]keyEntry{}
		}
		a.entries[hash] = e
		a.mu.Unlock()
		if e.found && e.key.RevokedAt == nil && (e.key.LastUsedAt == nil || now.Sub(*e.key.LastUsedAt) >= apiKeyTouchEvery) {
			a.touch(ctx, e.key.ID, now)
		}
	}
	if !e.found || e.key.RevokedAt != nil {
		return store.APIKey{}, errInvalidAPIKey()
	}
	return e.key, nil
}

// touch records the key's use. It is bookkeeping: a failure is logged and
// the request goes on.
func (a *apiKeys) touch(ctx context.Context, id string, at time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyStoreTimeout)
	defer cancel()
	if err := a.store.TouchAPIKey(ctx, id, at); err != nil {
		a.logger.LogAttrs(ctx, slog.LevelWarn, "api key last-use update failed",
			slog.String("request_id", requestID(ctx)), slog.String("key_id", id), slog.String("error", err.Error()))
	}
}

// forget drops what this replica knows about a key, so a revocation made
// here applies to the very next request.
func (a *apiKeys) forget(hash string) {
	a.mu.Lock()
	delete(a.entries, hash)
	a.mu.Unlock()
}

// acceptAPIKeys extends a token authenticator to API keys: a bearer
// credential shaped like one of our keys is resolved here, anything else
// goes to tokenAuth unchanged. A key acts as its owner, with the owner's
// current tier, but never with the admin role: administration needs a
// login. A disabled or deleted owner makes the key useless at once (within
// the account cache's few seconds on other replicas).
func acceptAPIKeys(logger *slog.Logger, keys *apiKeys, states *accountStates, tokenAuth func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	disabled := &apiError{status: http.StatusUnauthorized, message: "Account disabled",
		header: http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}},
		openAI: openAIErrorFields{code: "account_disabled"}}
	return func(next http.Handler) http.Handler {
		viaToken := tokenAuth(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cred, ok := bearer(r)
			if !ok || !auth.LooksLikeAPIKey(cred) {
				viaToken.ServeHTTP(w, r)
				return
			}
			ctx := r.Context()
			k, err := keys.resolve(ctx, cred)
			if err != nil {
				writeError(w, r, logger, err)
				return
			}
			// Least privilege while the database cannot say more.
			p := principal{UserID: k.UserID, Tier: store.DefaultTier, Role: store.DefaultRole, KeyID: k.ID}
			st, known, err := accountOf(ctx, states, k.UserID)
			switch {
			case errors.Is(err, errAccountGone):
				writeError(w, r, logger, errInvalidAPIKey())
				return
			case err != nil:
				writeError(w, r, logger, err)
				return
			case known && st.Disabled:
				writeError(w, r, logger, disabled)
				return
			case known:
				p.Tier = st.Tier
			}
			next.ServeHTTP(w, authenticated(r, p))
		})
	}
}

// requireLogin refuses requests authenticated by an API key, for actions a
// leaked key must not be able to take (such as minting more keys).
func requireLogin(logger *slog.Logger) func(http.Handler) http.Handler {
	forbidden := errStatus(http.StatusForbidden, "API keys cannot manage API keys; use an access token from /auth/login")
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if principalFrom(r.Context()).KeyID != "" {
				writeError(w, r, logger, forbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// keyCreateRequest is the body of POST /keys.
type keyCreateRequest struct {
	Name *string `json:"name" jsonschema:"required,minLength=1,maxLength=100"`
}

// keyCreated is POST /keys's answer: the only time the key itself is shown.
type keyCreated struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key"`
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"created_at"`
}

// keyInfo describes a key without its secret.
type keyInfo struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// keyList is GET /keys's answer, newest key first, revoked ones included.
type keyList struct {
	Keys []keyInfo `json:"keys"`
}

func validKeyName(s string) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxKeyNameChars {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func handleCreateKey(logger *slog.Logger, keys keyStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in keyCreateRequest
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		if in.Name == nil {
			writeError(w, r, logger, errValidation(fieldProblem{"name", "is required"}))
			return
		}
		if !validKeyName(*in.Name) {
			writeError(w, r, logger, errValidation(fieldProblem{"name", errKeyNameProblem}))
			return
		}
		ctx := r.Context()
		p := principalFrom(ctx)
		existing, err := keys.ListAPIKeys(ctx, p.UserID)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		active := 0
		for _, k := range existing {
			if k.RevokedAt == nil {
				active++
			}
		}
		if active >= maxActiveKeys {
			writeError(w, r, logger, errStatus(http.StatusConflict, fmt.Sprintf("At most %d active API keys per account; revoke one first", maxActiveKeys)))
			return
		}
		secret, prefix, hash, err := auth.NewAPIKey()
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		k, err := keys.CreateAPIKey(ctx, store.APIKey{UserID: p.UserID, Name: *in.Name, Hash: hash, Prefix: prefix})
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		logger.LogAttrs(ctx, slog.LevelInfo, "api key created", slog.String("request_id", requestID(ctx)),
			slog.String("user_id", p.UserID), slog.String("key_id", k.ID))
		writeJSON(w, http.StatusCreated, keyCreated{ID: k.ID, Name: k.Name, Key: secret, Prefix: k.Prefix, CreatedAt: k.CreatedAt})
	})
}

func handleListKeys(logger *slog.Logger, keys keyStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list, err := keys.ListAPIKeys(r.Context(), principalFrom(r.Context()).UserID)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		out := keyList{Keys: make([]keyInfo, 0, len(list))}
		for _, k := range list {
			out.Keys = append(out.Keys, keyInfo{ID: k.ID, Name: k.Name, Prefix: k.Prefix, CreatedAt: k.CreatedAt,
				LastUsedAt: k.LastUsedAt, RevokedAt: k.RevokedAt})
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// handleRevokeKey revokes one of the caller's keys. Another user's key, or
// no key at all, is the same 404, so ids reveal nothing.
func handleRevokeKey(logger *slog.Logger, keys keyStore, cache *apiKeys) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		p := principalFrom(ctx)
		k, err := keys.RevokeAPIKey(ctx, p.UserID, r.PathValue("id"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		cache.forget(k.Hash)
		logger.LogAttrs(ctx, slog.LevelInfo, "api key revoked", slog.String("request_id", requestID(ctx)),
			slog.String("user_id", p.UserID), slog.String("key_id", k.ID))
		w.WriteHeader(http.StatusNoContent)
	})
}
