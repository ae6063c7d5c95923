package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// RefreshTokenPrefix starts every refresh token, so one is recognisable at a
// glance (and by secret scanners) and can never parse as a JWT or pass for an
// API key.
const RefreshTokenPrefix = "rt_"

// refreshRandomBytes is 256 bits.
const refreshRandomBytes = 32

// NewRefreshToken returns a fresh opaque refresh token and the hash to store.
func NewRefreshToken() (token, hash string, err error) {
	b := make([]byte, refreshRandomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("auth: refresh token: %w", err)
	}
	token = RefreshTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashRefreshToken(token), nil
}

// LooksLikeRefreshToken reports whether s has the shape of our refresh tokens.
func LooksLikeRefreshToken(s string) bool {
	return strings.HasPrefix(s, RefreshTokenPrefix) && len(s) == len(RefreshTokenPrefix)+43
}

// HashRefreshToken is the stored form of a refresh token. As for API keys, a
// fast hash is right: 256 random bits leave nothing to brute-force.
func HashRefreshToken(token string) string {
	sum := sha256.Sum256([]byte("agentapi/refresh/" + token))
	return hex.EncodeToString(sum[:])
}
