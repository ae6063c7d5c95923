package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// APIKeyPrefix starts every key we issue, so keys are recognisable (and
// findable by secret scanners) and cannot be mistaken for a JWT.
const APIKeyPrefix = "sk-"

// apiKeyRandomBytes is 256 bits, twice the minimum we promise.
const apiKeyRandomBytes = 32

// NewAPIKey returns a fresh secret key, a short display prefix that identifies
// it in listings, and the hash to store. The secret itself is never stored.
func NewAPIKey() (key, display, hash string, err error) {
	b := make([]byte, apiKeyRandomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", "", fmt.Errorf("auth: api key: %w", err)
	}
	key = APIKeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, key[:len(APIKeyPrefix)+6], HashAPIKey(key), nil
}

// LooksLikeAPIKey reports whether a bearer credential has our API-key shape.
func LooksLikeAPIKey(s string) bool {
	return strings.HasPrefix(s, APIKeyPrefix) && len(s) == len(APIKeyPrefix)+43
}

// HashAPIKey is the stored form of a key. A fast hash is right here: the key
// has 256 bits of entropy, so there is nothing to brute-force.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
