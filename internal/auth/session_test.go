package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	oldSecret = "old-secret-old-secret-old-secret-0"
	newSecret = "new-secret-new-secret-new-secret-1"
)

// TestKeyRotation: a token signed with the previous key verifies while the
// previous key is configured, new tokens are signed with the new key and name
// it, and once the previous key is dropped its tokens stop working.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	opts := TokenOptions{Algorithm: "HS256", TTL: time.Hour, Issuer: "agentapi", Audience: "agentapi"}
	before := opts
	before.Secret = oldSecret
	oldTokens, err := NewTokens(before)
	if err != nil {
		t.Fatal(err)
	}
	oldTok, _, err := oldTokens.Issue("u1", "free")
	if err != nil {
		t.Fatal(err)
	}

	during := opts
	during.Secret, during.PreviousSecret = newSecret, oldSecret
	rotated, err := NewTokens(during)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.Verify(oldTok); err != nil {
		t.Fatalf("token of the previous key during the overlap: %v", err)
	}
	newTok, _, err := rotated.Issue("u1", "free")
	if err != nil {
		t.Fatal(err)
	}
	if kid := headerOf(t, newTok)["kid"]; kid != KeyID(newSecret) {
		t.Fatalf("new token's kid = %v, want the new key's %q", kid, KeyID(newSecret))
	}
	if KeyID(newSecret) == KeyID(oldSecret) || strings.Contains(KeyID(newSecret), "new-secret") {
		t.Fatal("key ids must differ per key and not reveal it")
	}
	// The new key's tokens are not valid under the old configuration.
	if _, err := oldTokens.Verify(newTok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("new token under the old key alone: %v", err)
	}

	after := opts
	after.Secret = newSecret
	done, err := NewTokens(after)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := done.Verify(oldTok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of a retired key: %v", err)
	}
	if _, err := done.Verify(newTok); err != nil {
		t.Fatalf("new token after the overlap: %v", err)
	}

	// A token signed with the previous key but claiming the new key's id
	// (or the other way round) fails its signature check.
	now := time.Now()
	claims := jwt.MapClaims{"sub": "u1", "tier": "pro", "typ": "access", "iss": "agentapi", "aud": "agentapi",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "j1"}
	for name, tok := range map[string]string{
		"old key, new kid": forgeKid(t, []byte(oldSecret), KeyID(newSecret), claims),
		"new key, old kid": forgeKid(t, []byte(newSecret), KeyID(oldSecret), claims),
		"old key, no kid":  forge(t, jwt.SigningMethodHS256, []byte(oldSecret), claims),
	} {
		if _, err := rotated.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := rotated.Verify(forge(t, jwt.SigningMethodHS256, []byte(newSecret), claims)); err != nil {
		t.Errorf("current key without kid (a token from before key ids): %v", err)
	}
}

// TestHostileKeyIDs: the kid header only ever selects from the configured
// keys; values aimed at file paths, queries, type confusion or sheer size are
// refused like any other unknown kid.
func TestHostileKeyIDs(t *testing.T) {
	t.Parallel()
	tk := newTokens(t, newSecret, "HS256", nil)
	now := time.Now()
	claims := jwt.MapClaims{"sub": "u1", "tier": "pro", "typ": "access", "iss": "agentapi", "aud": "agentapi",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "j1"}
	for name, kid := range map[string]any{
		"path traversal": "../../../../dev/null",
		"absolute path":  "/etc/passwd",
		"sql":            "x' OR '1'='1",
		"url":            "https://evil.example/key",
		"empty":          "",
		"huge":           strings.Repeat("a", 100_000),
		"number":         1,
		"object":         map[string]any{"kid": KeyID(newSecret)},
		"array":          []any{KeyID(newSecret)},
		"null":           nil,
		"prefix of ours": KeyID(newSecret)[:6],
		"ours plus junk": KeyID(newSecret) + "\x00",
	} {
		// Signed with the real key: only the kid is hostile, so a refusal
		// proves the kid is checked, not the signature.
		if _, err := tk.Verify(forgeKid(t, []byte(newSecret), kid, claims)); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("kid %s: err = %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := tk.Verify(forgeKid(t, []byte(newSecret), KeyID(newSecret), claims)); err != nil {
		t.Fatalf("control token with our kid refused: %v", err)
	}
}

// TestDenyListBeatsCache: a token verified (and so cached) before its
// logout is refused right after it, and other tokens keep working.
func TestDenyListBeatsCache(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clock := func() time.Time { return now }
	deny := NewDenyList(clock)
	tk, err := NewTokens(TokenOptions{Secret: newSecret, Algorithm: "HS256", TTL: 30 * time.Minute,
		Issuer: "agentapi", Audience: "agentapi", Now: clock, DenyList: deny})
	if err != nil {
		t.Fatal(err)
	}
	s, c, _ := tk.Issue("u1", "free")
	other, _, _ := tk.Issue("u1", "free")
	for range 2 { // the second Verify is answered by the cache
		if _, err := tk.Verify(s); err != nil {
			t.Fatal(err)
		}
	}
	if !deny.Add(c.ID, c.ExpiresAt) || deny.Add(c.ID, c.ExpiresAt) {
		t.Fatal("Add must report a new id once")
	}
	if _, err := tk.Verify(s); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("cached token after logout: %v", err)
	}
	// A fresh Tokens (nothing cached) refuses it too.
	fresh, _ := NewTokens(TokenOptions{Secret: newSecret, Algorithm: "HS256", TTL: 30 * time.Minute,
		Issuer: "agentapi", Audience: "agentapi", Now: clock, DenyList: deny})
	if _, err := fresh.Verify(s); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("uncached token after logout: %v", err)
	}
	if _, err := tk.Verify(other); err != nil {
		t.Fatalf("another token of the same user after a logout: %v", err)
	}
	// Entries leave once their token could no longer verify anyway.
	if deny.Len() != 1 {
		t.Fatalf("Len = %d, want 1", deny.Len())
	}
	now = now.Add(31*time.Minute + time.Second)
	deny.Prune()
	if deny.Len() != 0 || deny.Has(c.ID) {
		t.Fatalf("after expiry: Len = %d, Has = %v", deny.Len(), deny.Has(c.ID))
	}
	if deny.Add("late", now.Add(-time.Hour)) {
		t.Fatal("an already expired token was added")
	}
	var none *DenyList
	if none.Has("x") || none.Len() != 0 {
		t.Fatal("a nil list must hold nothing")
	}
}

// TestRefreshTokensAreNotAccessTokens: the two kinds never pass for each
// other: a refresh token is not a JWT, and a JWT lacks the refresh shape.
func TestRefreshTokensAreNotAccessTokens(t *testing.T) {
	t.Parallel()
	rt, hash, err := NewRefreshToken()
	if err != nil {
		t.Fatal(err)
	}
	if !LooksLikeRefreshToken(rt) || LooksLikeAPIKey(rt) || hash != HashRefreshToken(rt) || strings.Contains(hash, rt[3:]) {
		t.Fatalf("refresh token %q hash %q", rt, hash)
	}
	rt2, _, _ := NewRefreshToken()
	if rt2 == rt {
		t.Fatal("refresh tokens repeat")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(rt, RefreshTokenPrefix))
	if err != nil || len(raw) != 32 {
		t.Fatalf("refresh token carries %d random bytes (%v), want 32", len(raw), err)
	}
	tk := newTokens(t, newSecret, "HS256", nil)
	if _, err := tk.Verify(rt); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("refresh token as an access token: %v", err)
	}
	access, _, _ := tk.Issue("u1", "free")
	if LooksLikeRefreshToken(access) {
		t.Fatal("an access token has the refresh shape")
	}
	if typ := payloadOf(t, access)["typ"]; typ != "access" {
		t.Fatalf("access token typ = %v", typ)
	}
}

func forgeKid(t *testing.T, key []byte, kid any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func headerOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	p, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Header
}

func payloadOf(t *testing.T, tok string) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatal(err)
	}
	return c
}
