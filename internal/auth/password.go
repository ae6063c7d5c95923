// Package auth holds the credentials logic: password hashing, access-token
// issuing and verification, and API-key format. It knows nothing about HTTP.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password length bounds. The upper bound keeps hashing cost predictable and
// stops a megabyte "password" from becoming a denial of service.
const (
	MinPasswordChars = 8
	MaxPasswordBytes = 1024
)

// ErrPasswordMismatch reports a password that does not match its hash.
var ErrPasswordMismatch = errors.New("auth: password does not match")

// argon2id parameters from the OWASP password storage cheat sheet
// (m=19 MiB, t=2, p=1): about 30 ms per hash on one core.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// Hasher hashes and verifies passwords with argon2id. It keeps a hash of a
// random password so that a login for an unknown account can spend the same
// time as one for a known account (no user enumeration by timing).
//
// Each hash takes 19 MiB and tens of milliseconds of CPU, so at most
// `concurrency` run at once; the rest wait (or give up with their context).
// Without that bound, a burst of logins could exhaust memory.
type Hasher struct {
	dummy string
	slots chan struct{}
}

// NewHasher builds a Hasher allowing concurrency simultaneous hashes
// (runtime.GOMAXPROCS(0) when < 1), computing its dummy hash once.
func NewHasher(concurrency int) (*Hasher, error) {
	if concurrency < 1 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("auth: dummy password: %w", err)
	}
	h := &Hasher{slots: make(chan struct{}, concurrency)}
	d, err := h.Hash(context.Background(), base64.RawStdEncoding.EncodeToString(b))
	if err != nil {
		return nil, err
	}
	h.dummy = d
	return h, nil
}

// acquire waits for a hashing slot; release must follow a nil return.
func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("auth: waiting to hash: %w", ctx.Err())
	}
}

func (h *Hasher) release() { <-h.slots }

// ValidatePassword returns a human-readable problem with pw, or "" when it is acceptable.
func ValidatePassword(pw string) string {
	switch {
	case len(pw) > MaxPasswordBytes:
		return fmt.Sprintf("must be at most %d bytes", MaxPasswordBytes)
	case !utf8.ValidString(pw):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(pw) < MinPasswordChars:
		return fmt.Sprintf("must be at least %d characters", MinPasswordChars)
	}
	return ""
}

// Hash returns pw's argon2id hash in the PHC string format, with a fresh salt.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	if len(pw) > MaxPasswordBytes {
		return "", fmt.Errorf("auth: password longer than %d bytes", MaxPasswordBytes)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify checks pw against an encoded hash. It returns ErrPasswordMismatch for a
// wrong password and another error for a malformed hash.
func (h *Hasher) Verify(ctx context.Context, encoded, pw string) error {
	if err := h.acquire(ctx); err != nil {
		return err
	}
	defer h.release()
	if len(pw) > MaxPasswordBytes {
		// Still spend the time, so oversize input is not a timing oracle.
		_ = h.verify(h.dummy, "")
		return ErrPasswordMismatch
	}
	return h.verify(encoded, pw)
}

// VerifyDummy spends the time of one verification and always fails; call it
// when the account does not exist.
func (h *Hasher) VerifyDummy(ctx context.Context, pw string) error {
	if err := h.acquire(ctx); err != nil {
		return err
	}
	defer h.release()
	if len(pw) > MaxPasswordBytes {
		pw = ""
	}
	_ = h.verify(h.dummy, pw)
	return ErrPasswordMismatch
}

func (h *Hasher) verify(encoded, pw string) error {
	parts := strings.Split(encoded, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[1] != "argon2id" {
		return errors.New("auth: unsupported password hash format")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return errors.New("auth: unsupported argon2 version")
	}
	var mem, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &t, &p); err != nil {
		return fmt.Errorf("auth: bad argon2 parameters: %w", err)
	}
	// Refuse absurd parameters so a tampered row cannot exhaust memory.
	if mem == 0 || mem > 1<<20 || t == 0 || t > 16 || p == 0 {
		return errors.New("auth: argon2 parameters out of range")
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return fmt.Errorf("auth: bad salt: %w", err)
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 128 {
		return errors.New("auth: bad argon2 key")
	}
	got := argon2.IDKey([]byte(pw), salt, t, mem, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrPasswordMismatch
	}
	return nil
}
