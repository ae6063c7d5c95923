package mcp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// sealPrefix starts every sealed value, naming the scheme so that a later
// one can be told apart.
const sealPrefix = "v1:"

// hkdfInfo separates the header key from anything else derived from
// SECRET_KEY.
const hkdfInfo = "agentapi mcp server headers v1"

// sealer encrypts the registry's headers at rest with AES-256-GCM under a key
// derived (HKDF-SHA256) from SECRET_KEY, and opens them with that key or
// the one derived from SECRET_KEY_PREVIOUS, so a key rotation does not lose
// them (the next write seals them under the new key).
type sealer struct {
	current  cipher.AEAD
	previous cipher.AEAD // nil without a previous key
}

func newSealer(secret, previous string) (*sealer, error) {
	if secret == "" {
		return nil, fmt.Errorf("mcp: a secret key is required to seal server headers")
	}
	s := &sealer{}
	var err error
	if s.current, err = aeadFor(secret); err != nil {
		return nil, err
	}
	if previous != "" {
		if s.previous, err = aeadFor(previous); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func aeadFor(secret string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, hkdfInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("mcp: derive header key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("mcp: header cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// seal returns headers encrypted, "" for none. label is bound into the
// ciphertext as associated data, so sealed headers copied onto another
// server's row do not open.
func (s *sealer) seal(label string, headers map[string]string) (string, error) {
	if len(headers) == 0 {
		return "", nil
	}
	plain, err := json.Marshal(headers)
	if err != nil {
		return "", fmt.Errorf("mcp: seal headers: %w", err)
	}
	nonce := make([]byte, s.current.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("mcp: seal headers: %w", err)
	}
	out := s.current.Seal(nonce, nonce, plain, []byte(label))
	return sealPrefix + base64.RawStdEncoding.EncodeToString(out), nil
}

// open reverses seal.
func (s *sealer) open(label, sealed string) (map[string]string, error) {
	if sealed == "" {
		return nil, nil
	}
	rest, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: %q: unknown format", ErrHeadersUnreadable, label)
	}
	raw, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrHeadersUnreadable, label, err)
	}
	for _, a := range []cipher.AEAD{s.current, s.previous} {
		if a == nil || len(raw) < a.NonceSize() {
			continue
		}
		plain, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], []byte(label))
		if err != nil {
			continue
		}
		var h map[string]string
		if err := json.Unmarshal(plain, &h); err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrHeadersUnreadable, label, err)
		}
		return h, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrHeadersUnreadable, label)
}
