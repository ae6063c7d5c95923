package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maypok86/otter/v2"
)

// ErrInvalidToken covers every reason an access token is refused: malformed,
// wrong algorithm or key, unknown key id, expired, not yet valid, wrong issuer
// or audience, not an access token, or revoked.
var ErrInvalidToken = errors.New("auth: invalid token")

// maxTokenBytes bounds what the parser will even look at; real tokens are a few
// hundred bytes, and a huge header should cost nothing.
const maxTokenBytes = 8 << 10

// leeway tolerates small clock differences between replicas.
const leeway = 30 * time.Second

// verifiedCacheSize bounds the cache of tokens already verified: about 400
// bytes each, so a few MiB at most. A client sends the same token for its
// whole lifetime, so even a small cache answers nearly every request.
const verifiedCacheSize = 1 << 14

// tokenTypeAccess marks access tokens, so other token kinds can never pass as one.
const tokenTypeAccess = "access"

// Claims is what an access token says about its bearer.
type Claims struct {
	UserID    string
	Tier      string
	ID        string // jti
	ExpiresAt time.Time
	// SessionID names the refresh-token family the token was issued in
	// (login or refresh), so a logout can end the session; empty for
	// tokens issued outside one.
	SessionID string
}

type accessClaims struct {
	Tier string `json:"tier"`
	Typ  string `json:"typ"`
	SID  string `json:"sid,omitempty"`
	jwt.RegisteredClaims
}

// maxKeyIDBytes bounds the kid header we look up; ours are 12 hex digits.
const maxKeyIDBytes = 64

// Tokens issues and verifies access tokens with one HMAC algorithm. New
// tokens are signed with the current key and name it in their kid header;
// a previous key, during a rotation, still verifies the tokens that name it.
type Tokens struct {
	key   []byte
	keyID string
	// keys maps every key id we accept to its key. The kid header of a token
	// is only ever a lookup in this map, never a file name, URL or query.
	keys     map[string][]byte
	method   jwt.SigningMethod
	ttl      time.Duration
	issuer   string
	audience string
	now      func() time.Time
	parser   *jwt.Parser
	// verified remembers the claims of tokens that passed every check, by
	// the exact token string. Parsing and checking a token costs about
	// 15µs and 65 allocations; a lookup costs well under 1µs and none.
	// Only successes are kept, so forged tokens cannot fill it.
	verified *otter.Cache[string, Claims]
	// denied lists revoked token ids; it is consulted on every Verify,
	// cached or not, so a logout is never hidden by the cache above.
	denied *DenyList
}

// TokenOptions configures Tokens.
type TokenOptions struct {
	Secret string
	// PreviousSecret, when set, verifies tokens signed before a key
	// rotation (those whose kid names it); it never signs.
	PreviousSecret string
	Algorithm      string // HS256, HS384 or HS512
	TTL            time.Duration
	Issuer         string
	Audience       string
	Now            func() time.Time // for tests; time.Now when nil
	// DenyList holds the refused token ids (logged-out tokens); it may be
	// shared with a revocation.List. Nil gives the Tokens a list of its own.
	DenyList *DenyList
}

// KeyID names a signing key in the kid header: the start of a SHA-256 of
// the key, so replicas configured alike agree on it without configuration,
// and the key itself cannot be recovered from it.
func KeyID(secret string) string {
	sum := sha256.Sum256([]byte("agentapi/jwt-kid/" + secret))
	return hex.EncodeToString(sum[:6])
}

// NewTokens builds a Tokens from its options.
func NewTokens(o TokenOptions) (*Tokens, error) {
	m := jwt.GetSigningMethod(o.Algorithm)
	if _, ok := m.(*jwt.SigningMethodHMAC); !ok {
		return nil, fmt.Errorf("auth: unsupported algorithm %q", o.Algorithm)
	}
	if o.Secret == "" {
		return nil, errors.New("auth: empty signing secret")
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	t := &Tokens{key: []byte(o.Secret), keyID: KeyID(o.Secret), method: m, ttl: o.TTL, issuer: o.Issuer, audience: o.Audience, now: now,
		verified: otter.Must(&otter.Options[string, Claims]{MaximumSize: verifiedCacheSize}), denied: o.DenyList}
	if t.denied == nil {
		t.denied = NewDenyList(now)
	}
	t.keys = map[string][]byte{t.keyID: t.key}
	if o.PreviousSecret != "" && o.PreviousSecret != o.Secret {
		t.keys[KeyID(o.PreviousSecret)] = []byte(o.PreviousSecret)
	}
	// The parser pins the one configured algorithm: a token claiming "none",
	// RS256 or any other alg is refused before its signature is looked at.
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{m.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(o.Issuer),
		jwt.WithAudience(o.Audience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
	)
	return t, nil
}

// Revoke refuses the token id from now until exp, in this process (see
// package revocation for every replica).
func (t *Tokens) Revoke(jti string, exp time.Time) { t.denied.Add(jti, exp) }

// TTL is how long an issued token lives.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue signs a new access token for a user.
func (t *Tokens) Issue(userID, tier string) (string, Claims, error) {
	return t.IssueSession(userID, tier, "")
}

// IssueSession signs a new access token for a user within a session (a
// refresh-token family), whose id the token carries as "sid".
func (t *Tokens) IssueSession(userID, tier, sessionID string) (string, Claims, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", Claims{}, fmt.Errorf("auth: token id: %w", err)
	}
	now := t.now()
	exp := now.Add(t.ttl)
	c := accessClaims{
		Tier: tier,
		Typ:  tokenTypeAccess,
		SID:  sessionID,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   userID,
			Issuer:    t.issuer,
			Audience:  jwt.ClaimStrings{t.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        hex.EncodeToString(jti),
		},
	}
	tok := jwt.NewWithClaims(t.method, c)
	tok.Header["kid"] = t.keyID
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("auth: sign token: %w", err)
	}
	return s, Claims{UserID: userID, Tier: tier, ID: c.ID, ExpiresAt: exp.Truncate(time.Second), SessionID: sessionID}, nil
}

// Verify checks a token's signature and claims and returns what it says.
// Every failure is ErrInvalidToken (wrapping the parser's reason for logs).
func (t *Tokens) Verify(token string) (Claims, error) {
	if len(token) == 0 || len(token) > maxTokenBytes {
		return Claims{}, ErrInvalidToken
	}
	// The same string, signed with our fixed key and checked against our
	// fixed issuer and audience, gives the same answer every time, except
	// that time passes: not-before and issued-at only become more valid,
	// so expiry is the one check to repeat. Past it, the full parse below
	// runs and reports the expiry exactly as it always did.
	if c, ok := t.verified.GetIfPresent(token); ok {
		if t.now().Before(c.ExpiresAt.Add(leeway)) {
			if t.denied.Has(c.ID) {
				return Claims{}, errRevoked
			}
			return c, nil
		}
		t.verified.Invalidate(token)
	}
	var c accessClaims
	_, err := t.parser.ParseWithClaims(token, &c, t.keyFor)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Typ != tokenTypeAccess || c.Subject == "" || c.Tier == "" || c.ID == "" {
		return Claims{}, fmt.Errorf("%w: missing claims", ErrInvalidToken)
	}
	if t.denied.Has(c.ID) {
		return Claims{}, errRevoked
	}
	out := Claims{UserID: c.Subject, Tier: c.Tier, ID: c.ID, ExpiresAt: c.ExpiresAt.Time, SessionID: c.SID}
	t.verified.Set(token, out)
	return out, nil
}

var errRevoked = fmt.Errorf("%w: revoked", ErrInvalidToken)

var errUnknownKey = errors.New("unknown key id")

// keyFor picks the verification key by the token's kid header. A token
// without one was issued before key ids existed and can only be signed with
// the current key; anything else must name a key in the map exactly.
func (t *Tokens) keyFor(tok *jwt.Token) (any, error) {
	raw, present := tok.Header["kid"]
	if !present {
		return t.key, nil
	}
	kid, ok := raw.(string)
	if !ok || len(kid) > maxKeyIDBytes {
		return nil, errUnknownKey
	}
	key, ok := t.keys[kid]
	if !ok {
		return nil, errUnknownKey
	}
	return key, nil
}
