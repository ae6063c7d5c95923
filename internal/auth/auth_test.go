package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestPasswordHashAndVerify(t *testing.T) {
	t.Parallel()
	h, err := NewHasher(2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hash, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("unexpected hash format %q", hash)
	}
	if strings.Contains(hash, "correct horse") {
		t.Fatal("hash contains the password")
	}
	if err := h.Verify(ctx, hash, "correct horse"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := h.Verify(ctx, hash, "correct horsE"); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := h.VerifyDummy(ctx, "anything"); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("dummy: %v", err)
	}
	hash2, _ := h.Hash(ctx, "correct horse")
	if hash2 == hash {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	if err := h.Verify(ctx, "$argon2id$v=19$m=4294967295,t=1,p=1$AAAA$AAAA", "x"); err == nil || errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("absurd parameters must be refused as malformed, got %v", err)
	}
	if err := h.Verify(ctx, "plaintext", "plaintext"); err == nil {
		t.Fatal("a non-hash must never verify")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	// Fill the slots so that acquire must wait, then see it give up.
	h.slots <- struct{}{}
	h.slots <- struct{}{}
	if _, err := h.Hash(cancelled, "password1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("hash with cancelled context while busy: %v", err)
	}
	<-h.slots
	<-h.slots
}

func TestValidatePassword(t *testing.T) {
	t.Parallel()
	for pw, ok := range map[string]bool{
		"":                                 false,
		"1234567":                          false,
		"12345678":                         true,
		"пароль12":                         true,
		strings.Repeat("a", 1024):          true,
		strings.Repeat("a", 1025):          false,
		"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8": false,
	} {
		if got := ValidatePassword(pw) == ""; got != ok {
			t.Errorf("ValidatePassword(%.20q) ok=%v, want %v", pw, got, ok)
		}
	}
}

func newTokens(t *testing.T, secret, alg string, now func() time.Time) *Tokens {
	t.Helper()
	tk, err := NewTokens(TokenOptions{Secret: secret, Algorithm: alg, TTL: 30 * time.Minute, Issuer: "agentapi", Audience: "agentapi", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		tk := newTokens(t, "0123456789abcdef0123456789abcdef", alg, nil)
		s, c, err := tk.Issue("u1", "pro")
		if err != nil {
			t.Fatal(err)
		}
		got, err := tk.Verify(s)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if got.UserID != "u1" || got.Tier != "pro" || got.ID != c.ID || len(got.ID) != 32 {
			t.Fatalf("%s: claims %+v", alg, got)
		}
	}
	if _, err := NewTokens(TokenOptions{Secret: "x", Algorithm: "RS256"}); err == nil {
		t.Fatal("RS256 must be refused: we only hold an HMAC secret")
	}
}

// forge signs arbitrary claims with an arbitrary method and key.
func forge(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestForgedTokensRefused(t *testing.T) {
	t.Parallel()
	secret := "0123456789abcdef0123456789abcdef"
	tk := newTokens(t, secret, "HS256", nil)
	now := time.Now()
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "u1", "tier": "free", "typ": "access", "iss": "agentapi", "aud": "agentapi",
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "abc"}
	}
	with := func(k string, v any) jwt.MapClaims { c := valid(); c[k] = v; return c }
	without := func(k string) jwt.MapClaims { c := valid(); delete(c, k); return c }

	good := forge(t, jwt.SigningMethodHS256, []byte(secret), valid())
	if _, err := tk.Verify(good); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	parts := strings.Split(good, ".")
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	edited := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u1","tier":"pro","typ":"access","iss":"agentapi","aud":"agentapi","exp":9999999999,"jti":"abc"}`))

	cases := map[string]string{
		"alg none":         noneHeader + "." + parts[1] + ".",
		"other algorithm":  forge(t, jwt.SigningMethodHS512, []byte(secret), valid()),
		"other key":        forge(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), valid()),
		"expired":          forge(t, jwt.SigningMethodHS256, []byte(secret), with("exp", now.Add(-time.Hour).Unix())),
		"not yet valid":    forge(t, jwt.SigningMethodHS256, []byte(secret), with("nbf", now.Add(time.Hour).Unix())),
		"wrong issuer":     forge(t, jwt.SigningMethodHS256, []byte(secret), with("iss", "evil")),
		"wrong audience":   forge(t, jwt.SigningMethodHS256, []byte(secret), with("aud", "other")),
		"no exp":           forge(t, jwt.SigningMethodHS256, []byte(secret), without("exp")),
		"no sub":           forge(t, jwt.SigningMethodHS256, []byte(secret), without("sub")),
		"not access typ":   forge(t, jwt.SigningMethodHS256, []byte(secret), with("typ", "refresh")),
		"edited claims":    parts[0] + "." + edited + "." + parts[2],
		"garbage":          "not-a-token",
		"empty":            "",
		"100000 dots":      strings.Repeat(".", 100000),
		"issued in future": forge(t, jwt.SigningMethodHS256, []byte(secret), with("iat", now.Add(time.Hour).Unix())),
	}
	for name, tok := range cases {
		if _, err := tk.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
}

func TestTokenExpiryWithLeeway(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clock := func() time.Time { return now }
	tk := newTokens(t, "0123456789abcdef0123456789abcdef", "HS256", clock)
	s, _, _ := tk.Issue("u1", "free")
	now = now.Add(30*time.Minute + 10*time.Second) // within leeway
	if _, err := tk.Verify(s); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	now = now.Add(time.Minute)
	if _, err := tk.Verify(s); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("past leeway: %v", err)
	}
}

func TestAPIKeyFormat(t *testing.T) {
	t.Parallel()
	k, display, hash, err := NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	if !LooksLikeAPIKey(k) || !strings.HasPrefix(display, "sk-") || !strings.HasPrefix(k, display) {
		t.Fatalf("key %q display %q", k, display)
	}
	if hash != HashAPIKey(k) || strings.Contains(hash, k[3:]) || len(hash) != 64 {
		t.Fatalf("hash %q", hash)
	}
	k2, _, _, _ := NewAPIKey()
	if k2 == k {
		t.Fatal("keys repeat")
	}
	if LooksLikeAPIKey("eyJhbGciOi.x.y") {
		t.Fatal("a JWT looks like an API key")
	}
}

// TestVerifyRemembersOnlyWhatPassed checks the cache of verified tokens: a
// second Verify gives the same claims, expiry still applies to a remembered
// token with the same error as a fresh parse, and a token that failed once
// fails again.
func TestVerifyRemembersOnlyWhatPassed(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clock := func() time.Time { return now }
	tk := newTokens(t, "0123456789abcdef0123456789abcdef", "HS256", clock)
	s, _, _ := tk.Issue("u1", "pro")
	first, err := tk.Verify(s)
	if err != nil {
		t.Fatal(err)
	}
	second, err := tk.Verify(s)
	if err != nil || second != first {
		t.Fatalf("second Verify = %+v, %v; first gave %+v", second, err, first)
	}
	forged := s[:len(s)-4] + "AAAA"
	for range 2 {
		if _, err := tk.Verify(forged); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("forged token: %v", err)
		}
	}
	now = now.Add(31*time.Minute + time.Second) // past expiry and leeway
	_, err = tk.Verify(s)
	if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired remembered token: %v", err)
	}
	fresh := newTokens(t, "0123456789abcdef0123456789abcdef", "HS256", clock)
	_, want := fresh.Verify(s)
	if want == nil || err.Error() != want.Error() {
		t.Fatalf("remembered token's expiry error %q differs from a fresh parse's %q", err, want)
	}
}
