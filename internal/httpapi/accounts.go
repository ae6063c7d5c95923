package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/store"
)

// maxEmailBytes is RFC 5321's limit on a forward path.
const maxEmailBytes = 254

// credentials is the body of register and login.
type credentials struct {
	Email    *string `json:"email" jsonschema:"required,format=email,maxLength=254"`
	Password *string `json:"password" jsonschema:"required,minLength=8"`
}

// validEmail accepts a plain addr-spec with a dotted domain, nothing more
// (no display names, no comments).
func validEmail(s string) bool {
	if len(s) == 0 || len(s) > maxEmailBytes {
		return false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	return at > 0 && strings.Contains(s[at+1:], ".")
}

// registerResponse is the new account, as POST /auth/register answers.
type registerResponse struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Tier  string `json:"tier"`
}

// loginResponse is POST /auth/login's answer, in the legacy contract's shape.
type loginResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	// RefreshToken gets the next pair from POST /auth/refresh; it is used
	// once, and a second use ends the session.
	RefreshToken     string `json:"refresh_token,omitempty"`
	RefreshExpiresIn int64  `json:"refresh_expires_in,omitempty"`
}

func handleRegister(logger *slog.Logger, users userStore, hasher *auth.Hasher) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in credentials
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		var problems []fieldProblem
		email := ""
		if in.Email == nil {
			problems = append(problems, fieldProblem{"email", "is required"})
		} else if email = strings.ToLower(strings.TrimSpace(*in.Email)); !validEmail(email) {
			problems = append(problems, fieldProblem{"email", "must be a valid email address"})
		}
		if in.Password == nil {
			problems = append(problems, fieldProblem{"password", "is required"})
		} else if p := auth.ValidatePassword(*in.Password); p != "" {
			problems = append(problems, fieldProblem{"password", p})
		}
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		hash, err := hasher.Hash(r.Context(), *in.Password)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		u, err := users.CreateUser(r.Context(), store.User{Email: email, PasswordHash: hash, Tier: store.DefaultTier})
		if errors.Is(err, store.ErrConflict) {
			writeError(w, r, logger, errStatus(http.StatusConflict, "Email already registered"))
			return
		}
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		requestInfoFrom(r.Context()).userID = u.ID
		writeJSON(w, http.StatusCreated, registerResponse{ID: u.ID, Email: u.Email, Tier: u.Tier})
	})
}

func handleLogin(logger *slog.Logger, users userStore, hasher *auth.Hasher, sess *sessions, throttle *loginThrottle) http.Handler {
	// One answer for an unknown email, a wrong password and a disabled account,
	// so the endpoint does not reveal which accounts exist.
	invalid := &apiError{status: http.StatusUnauthorized, message: "Invalid credentials"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in credentials
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		var problems []fieldProblem
		if in.Email == nil || len(*in.Email) > maxEmailBytes {
			problems = append(problems, fieldProblem{"email", "is required (at most 254 bytes)"})
		}
		if in.Password == nil || len(*in.Password) > auth.MaxPasswordBytes {
			problems = append(problems, fieldProblem{"password", "is required (at most 1024 bytes)"})
		}
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		email := strings.ToLower(strings.TrimSpace(*in.Email))
		addr := clientAddr(r, throttle.trusted)
		// Throttled before the (deliberately slow) password check, and the
		// same for existing and unknown accounts.
		if err := throttle.check(r.Context(), email, addr); err != nil {
			writeError(w, r, logger, err)
			return
		}
		u, err := users.UserByEmail(r.Context(), email)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Spend the time a real check would, then fail the same way.
			if err := hasher.VerifyDummy(r.Context(), *in.Password); err != nil && !errors.Is(err, auth.ErrPasswordMismatch) {
				writeError(w, r, logger, err)
				return
			}
			writeError(w, r, logger, invalid)
			return
		case err != nil:
			writeError(w, r, logger, err)
			return
		}
		err = hasher.Verify(r.Context(), u.PasswordHash, *in.Password)
		if errors.Is(err, auth.ErrPasswordMismatch) || (err == nil && u.Disabled) {
			writeError(w, r, logger, invalid)
			return
		}
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		resp, err := sess.start(r.Context(), u.ID, u.Tier)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if err := throttle.succeeded(r.Context(), email, addr); err != nil {
			logger.LogAttrs(r.Context(), slog.LevelWarn, "login throttle: could not remember the address",
				slog.String("request_id", requestID(r.Context())), slog.String("error", err.Error()))
		}
		requestInfoFrom(r.Context()).userID = u.ID
		writeJSON(w, http.StatusOK, resp)
	})
}

// principal is who a request acts for, once authenticated.
type principal struct {
	UserID string
	Tier   string
	Role   string
	KeyID  string // set when an API key, not a JWT, authenticated the request
	// TokenID, TokenExpires and SessionID describe the access token that
	// authenticated the request (empty for API keys), for logout.
	TokenID      string
	TokenExpires time.Time
	SessionID    string
}

// principalFrom returns who the request acts for; the zero principal before
// authentication.
func principalFrom(ctx context.Context) principal {
	if p, ok := ctx.Value(ctxPrincipal).(*principal); ok {
		return *p
	}
	return principal{}
}

// authenticated returns r acting for p. The access log learns the user's
// id too, when the request has a record.
func authenticated(r *http.Request, p principal) *http.Request {
	if ri := requestInfoFrom(r.Context()); ri != nil {
		ri.userID = p.UserID
	}
	return r.WithContext(context.WithValue(r.Context(), ctxPrincipal, &p))
}

// requireAuth admits requests with a valid bearer access token whose account
// still exists and is not disabled; the account's current tier and role come
// from the database (cached for a few seconds), so a change made by an admin
// applies to tokens already issued. Failures never reach the rate limiter, so
// they cannot spend anyone's quota.
func requireAuth(logger *slog.Logger, tokens *auth.Tokens, states *accountStates) func(http.Handler) http.Handler {
	missing := &apiError{status: http.StatusUnauthorized, message: "Not authenticated",
		header: http.Header{"Www-Authenticate": {`Bearer`}}}
	disabled := &apiError{status: http.StatusUnauthorized, message: "Account disabled",
		header: http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}}}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cred, ok := bearer(r)
			if !ok {
				writeError(w, r, logger, missing)
				return
			}
			c, err := tokens.Verify(cred)
			if err != nil {
				writeError(w, r, logger, err)
				return
			}
			p := principal{UserID: c.UserID, Tier: c.Tier, Role: store.DefaultRole,
				TokenID: c.ID, TokenExpires: c.ExpiresAt, SessionID: c.SessionID}
			st, known, err := accountOf(r.Context(), states, c.UserID)
			switch {
			case errors.Is(err, errAccountGone):
				writeError(w, r, logger, fmt.Errorf("%w: %w", auth.ErrInvalidToken, err))
				return
			case err != nil:
				writeError(w, r, logger, err)
				return
			case known && st.Disabled:
				writeError(w, r, logger, disabled)
				return
			case known:
				p.Tier, p.Role = st.Tier, st.Role
			}
			next.ServeHTTP(w, authenticated(r, p))
		})
	}
}

// requireAdmin lets only administrators through; it runs after requireAuth.
func requireAdmin(logger *slog.Logger) func(http.Handler) http.Handler {
	forbidden := errStatus(http.StatusForbidden, "Administrator role required")
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if principalFrom(r.Context()).Role != roleAdmin {
				writeError(w, r, logger, forbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
