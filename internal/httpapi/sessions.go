package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
)

// defaultRefreshTTL is a refresh token's lifetime when Deps leaves it 0.
const defaultRefreshTTL = 14 * 24 * time.Hour

// sessionStore keeps refresh-token families (see store.RefreshToken).
type sessionStore interface {
	StartRefreshFamily(ctx context.Context, userID, hash string, expiresAt time.Time) (store.RefreshToken, error)
	RotateRefreshToken(ctx context.Context, oldHash, newHash string, expiresAt time.Time) (store.RefreshToken, error)
	RevokeRefreshFamily(ctx context.Context, userID, familyID string) error
	RevokeRefreshFamilyOf(ctx context.Context, userID, hash string) error
}

// revoker refuses an access token id from now until exp, on every replica.
type revoker interface {
	Revoke(ctx context.Context, jti string, exp time.Time) error
}

// sessions issues access and refresh tokens and ends sessions.
type sessions struct {
	logger  *slog.Logger
	tokens  *auth.Tokens
	store   sessionStore // nil: no refresh tokens
	ttl     time.Duration
	revoker revoker
}

func newSessions(d Deps) *sessions {
	ttl := d.RefreshTTL
	if ttl <= 0 {
		ttl = defaultRefreshTTL
	}
	return &sessions{logger: d.Logger, tokens: d.Tokens, store: d.Sessions, ttl: ttl, revoker: d.Revoker}
}

// refreshRequest is the body of POST /auth/refresh, and the optional body of
// POST /auth/logout.
type refreshRequest struct {
	RefreshToken *string `json:"refresh_token" jsonschema:"required"`
}

// start opens a session for a user who just proved who they are: a new
// refresh family and an access token that names it.
func (s *sessions) start(ctx context.Context, userID, tier string) (loginResponse, error) {
	if s.store == nil {
		tok, _, err := s.tokens.Issue(userID, tier)
		return loginResponse{AccessToken: tok, TokenType: "bearer", ExpiresIn: int64(s.tokens.TTL().Seconds())}, err
	}
	rt, hash, err := auth.NewRefreshToken()
	if err != nil {
		return loginResponse{}, err
	}
	fam, err := s.store.StartRefreshFamily(ctx, userID, hash, time.Now().Add(s.ttl))
	if err != nil {
		return loginResponse{}, err
	}
	return s.answer(userID, tier, fam.FamilyID, rt)
}

func (s *sessions) answer(userID, tier, familyID, refreshToken string) (loginResponse, error) {
	tok, _, err := s.tokens.IssueSession(userID, tier, familyID)
	if err != nil {
		return loginResponse{}, err
	}
	return loginResponse{AccessToken: tok, TokenType: "bearer", ExpiresIn: int64(s.tokens.TTL().Seconds()),
		RefreshToken: refreshToken, RefreshExpiresIn: int64(s.ttl.Seconds())}, nil
}

// handleRefresh exchanges a refresh token for a new access token and a new
// refresh token; the old refresh token stops working. Presenting a replaced
// token again revokes its whole family: whoever holds the newest token (the
// user or a thief) has to log in again.
func handleRefresh(s *sessions, states *accountStates) http.Handler {
	invalid := &apiError{status: http.StatusUnauthorized, message: "Invalid refresh token"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.store == nil {
			writeError(w, r, s.logger, errStatus(http.StatusNotFound, "Refresh tokens are not enabled"))
			return
		}
		var in refreshRequest
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, s.logger, err)
			return
		}
		if in.RefreshToken == nil {
			writeError(w, r, s.logger, errValidation(fieldProblem{"refresh_token", "is required"}))
			return
		}
		// An access token, an API key or anything else is not a refresh
		// token, and is refused before the database is asked.
		if !auth.LooksLikeRefreshToken(*in.RefreshToken) {
			writeError(w, r, s.logger, invalid)
			return
		}
		rt, hash, err := auth.NewRefreshToken()
		if err != nil {
			writeError(w, r, s.logger, err)
			return
		}
		next, err := s.store.RotateRefreshToken(r.Context(), auth.HashRefreshToken(*in.RefreshToken), hash, time.Now().Add(s.ttl))
		switch {
		case errors.Is(err, store.ErrRefreshReused):
			requestInfoFrom(r.Context()).userID = next.UserID
			s.logger.LogAttrs(r.Context(), slog.LevelWarn, "refresh token presented twice; its session is revoked",
				slog.String("request_id", requestID(r.Context())), slog.String("user_id", next.UserID), slog.String("session_id", next.FamilyID))
			writeError(w, r, s.logger, invalid)
			return
		case errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrNotFound):
			writeError(w, r, s.logger, invalid)
			return
		case err != nil:
			writeError(w, r, s.logger, err)
			return
		}
		requestInfoFrom(r.Context()).userID = next.UserID
		st, known, err := accountOf(r.Context(), states, next.UserID)
		switch {
		case errors.Is(err, errAccountGone):
			writeError(w, r, s.logger, invalid)
			return
		case err != nil:
			writeError(w, r, s.logger, err)
			return
		case !known:
			// The database answered the rotation a moment ago but not the
			// account; refuse rather than guess the tier.
			writeError(w, r, s.logger, errStatus(http.StatusServiceUnavailable, "Service temporarily unavailable"))
			return
		case st.Disabled:
			writeError(w, r, s.logger, &apiError{status: http.StatusUnauthorized, message: "Account disabled"})
			return
		}
		resp, err := s.answer(next.UserID, st.Tier, next.FamilyID, rt)
		if err != nil {
			writeError(w, r, s.logger, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// handleLogout ends the session of the bearer access token: the token itself
// is refused from now on (on every replica within a second), and so are the
// refresh tokens of its session, and of the session of the refresh token in
// the body, if one is given.
func handleLogout(s *sessions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalFrom(r.Context())
		var in refreshRequest
		if r.ContentLength != 0 {
			if err := decodeJSON(r, &in); err != nil {
				writeError(w, r, s.logger, err)
				return
			}
		}
		if p.TokenID != "" {
			if err := s.revoke(r.Context(), p.TokenID, p.TokenExpires); err != nil {
				// Refused here already; other replicas learn it once
				// Redis is back (the revoker retries).
				s.logger.LogAttrs(r.Context(), slog.LevelWarn, "logout not yet shared with other replicas",
					slog.String("request_id", requestID(r.Context())), slog.String("error", err.Error()))
			}
		}
		if s.store != nil {
			if p.SessionID != "" {
				if err := s.store.RevokeRefreshFamily(r.Context(), p.UserID, p.SessionID); err != nil && !errors.Is(err, store.ErrNotFound) {
					writeError(w, r, s.logger, err)
					return
				}
			}
			// Another user's refresh token, or garbage, is silently
			// ignored: the answer must not tell which tokens exist.
			if in.RefreshToken != nil && auth.LooksLikeRefreshToken(*in.RefreshToken) {
				err := s.store.RevokeRefreshFamilyOf(r.Context(), p.UserID, auth.HashRefreshToken(*in.RefreshToken))
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					writeError(w, r, s.logger, err)
					return
				}
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func (s *sessions) revoke(ctx context.Context, jti string, exp time.Time) error {
	if s.revoker != nil {
		return s.revoker.Revoke(ctx, jti, exp)
	}
	s.tokens.Revoke(jti, exp)
	return nil
}

// LoginLimits configures the login throttle. Attempts is the burst one
// client address gets against one account (default 5), refilled over 15
// minutes; an address gets ten times that over all accounts, and an account
// ten times that over all addresses — except from addresses that logged in
// to it successfully within 30 days, which the account-wide bucket never
// slows. So guessing is slowed on every axis, while an attacker spreading
// guesses over many addresses cannot lock the owner out of an address the
// owner has used.
type LoginLimits struct {
	Attempts int64
	// TrustedProxies are the networks whose X-Forwarded-For is believed;
	// without them the client is the connection's peer address.
	TrustedProxies []netip.Prefix
}

// loginWindow is the time the throttle's buckets take to refill from empty.
const loginWindow = 15 * time.Minute

// knownAddressPeriod is how long a successful login marks an address as the
// account owner's.
const knownAddressPeriod = 30 * 24 * time.Hour

type loginThrottle struct {
	lim                        limiter
	trusted                    []netip.Prefix
	pair, address, account, ok ratelimit.Policy
}

func newLoginThrottle(lim limiter, l LoginLimits) *loginThrottle {
	n := l.Attempts
	if n <= 0 {
		n = 5
	}
	per := func(name string, capacity int64, window time.Duration) ratelimit.Policy {
		return ratelimit.Policy{Name: name, Capacity: capacity, RefillPerSecond: float64(capacity) / window.Seconds()}
	}
	return &loginThrottle{lim: lim, trusted: l.TrustedProxies,
		pair: per("login", n, loginWindow), address: per("login-address", 10*n, loginWindow),
		account: per("login-account", 10*n, loginWindow), ok: per("login-known", 1, knownAddressPeriod)}
}

// accountKey names an account in limiter keys without putting the email
// (personal data) into Redis.
func accountKey(email string) string {
	sum := sha256.Sum256([]byte("agentapi/login/" + email))
	return hex.EncodeToString(sum[:12])
}

// check spends one attempt of the buckets that apply, and returns a 429
// *apiError with Retry-After when one is empty.
func (l *loginThrottle) check(ctx context.Context, email string, addr netip.Addr) error {
	acct, a := accountKey(email), addressKey(addr)
	buckets := []struct {
		key string
		pol ratelimit.Policy
	}{{"login:pair:" + acct + ":" + a, l.pair}, {"login:addr:" + a, l.address}}
	known, err := l.lim.Peek(ctx, "login:ok:"+acct+":"+a, l.ok)
	if err != nil {
		return err
	}
	if known.Remaining > 0 { // never logged in from here (or long ago)
		buckets = append(buckets, struct {
			key string
			pol ratelimit.Policy
		}{"login:acct:" + acct, l.account})
	}
	for _, b := range buckets {
		d, err := l.lim.Allow(ctx, b.key, b.pol)
		if err != nil {
			return err
		}
		if !d.Allowed {
			return &apiError{status: http.StatusTooManyRequests, message: "Too many login attempts; try again later",
				header: http.Header{"Retry-After": {strconv.FormatInt(ceilSeconds(d.RetryAfter, 1), 10)}}}
		}
	}
	return nil
}

// succeeded marks the address as the account owner's.
func (l *loginThrottle) succeeded(ctx context.Context, email string, addr netip.Addr) error {
	_, err := l.lim.Allow(ctx, "login:ok:"+accountKey(email)+":"+addressKey(addr), l.ok)
	return err
}

// addressKey is the address, or for IPv6 its /64: one subscriber usually
// holds a whole /64, so single IPv6 addresses cost an attacker nothing.
func addressKey(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.Unmap().String()
}

// clientAddr is the address of the client: the connection's peer, or, when
// the peer is a trusted proxy, the right-most address in X-Forwarded-For
// that is not a trusted proxy (addresses further left are the client's own
// claims and cannot be believed).
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	addr := peer.Addr().Unmap()
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !isTrusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a malformed hop: stop believing the chain here
		}
		a = a.Unmap()
		if !isTrusted(a) {
			return a
		}
		addr = a
	}
	return addr
}
