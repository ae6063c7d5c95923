package responses

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// TypeCompaction is the item POST /v1/responses/compact returns: the
// model's summary of a conversation, sealed so that a client can pass it
// back as input but can neither read nor forge it.
const TypeCompaction = "compaction"

// compactionPrefix starts every sealed content this version writes; a
// later format takes another prefix, so an old one is told apart.
const compactionPrefix = "agc1."

// maxEncryptedContent bounds a compaction item's sealed content (the
// Open Responses schema allows 10 MiB; a summary is far smaller).
const maxEncryptedContent = 1 << 20

// compactionInfo is the HKDF info of the sealing key: it ties the key to
// this one use of SECRET_KEY.
const compactionInfo = "agentapi/responses/compaction/v1"

// ErrSealedContent reports sealed content this server cannot open:
// tampered with, sealed by another server or for another user, or sealed
// under a SECRET_KEY that has since been rotated.
var ErrSealedContent = errors.New("responses: sealed content cannot be opened")

// Sealer seals and opens the summaries of compaction items with
// XChaCha20-Poly1305 under a key derived (HKDF-SHA256) from the server's
// secret. Rotating the secret makes every earlier compaction unreadable,
// which is the point: nothing sealed outlives the key it was sealed with.
type Sealer struct {
	aead interface {
		Seal(dst, nonce, plaintext, additionalData []byte) []byte
		Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
		NonceSize() int
	}
}

// NewSealer derives the sealing key from secret (SECRET_KEY).
func NewSealer(secret []byte) (*Sealer, error) {
	if len(secret) == 0 {
		return nil, errors.New("responses: compaction sealer: empty secret")
	}
	key, err := hkdf.Key(sha256.New, secret, nil, compactionInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("responses: compaction sealer: derive key: %w", err)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("responses: compaction sealer: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// sealedSummary is what a compaction item's content holds once opened.
type sealedSummary struct {
	Summary   string `json:"summary"`
	CreatedAt int64  `json:"created_at"`
}

// additional data binds a sealed content to its owner: a compaction is
// only ever opened for the user it was made for.
func sealAD(userID string) []byte { return []byte("compaction\x00" + userID) }

// Seal returns the sealed content of a compaction item holding summary,
// for userID only.
func (s *Sealer) Seal(userID, summary string, now time.Time) string {
	plain, _ := json.Marshal(sealedSummary{Summary: summary, CreatedAt: now.Unix()}) // strings and ints always encode
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+32)
	_, _ = rand.Read(nonce) // crypto/rand.Read does not fail
	return compactionPrefix + base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, sealAD(userID)))
}

// Open returns the summary sealed in content for userID, or an error
// wrapping ErrSealedContent.
func (s *Sealer) Open(userID, content string) (string, error) {
	rest, ok := strings.CutPrefix(content, compactionPrefix)
	if !ok {
		return "", fmt.Errorf("%w: not sealed by this server", ErrSealedContent)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", fmt.Errorf("%w: malformed", ErrSealedContent)
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], sealAD(userID))
	if err != nil {
		return "", fmt.Errorf("%w: authentication failed", ErrSealedContent)
	}
	var v sealedSummary
	if err := json.Unmarshal(plain, &v); err != nil {
		return "", fmt.Errorf("%w: malformed", ErrSealedContent)
	}
	return v.Summary, nil
}

// Unseal opens the summary of every compaction item of items in place,
// for userID. A compaction it cannot open is a *ParamError naming the
// item (param is the items' parameter, such as "input").
func (s *Sealer) Unseal(userID string, items []Item, param string) error {
	for i := range items {
		it := &items[i]
		if it.Type != TypeCompaction || it.summary != "" {
			continue
		}
		if s == nil {
			return &ParamError{Param: param, Code: "invalid_encrypted_content",
				Message: "Compaction items are not available on this server."}
		}
		summary, err := s.Open(userID, it.EncryptedContent)
		if err != nil {
			p := param + "[" + strconv.Itoa(i) + "].encrypted_content"
			return &ParamError{Param: p, Code: "invalid_encrypted_content", Message: fmt.Sprintf(
				"The compaction item %s ('%s') cannot be read: it was altered, made by another server or for another user, or sealed under a SECRET_KEY that has since been rotated. Compact the conversation again.",
				p, firstRunes(it.ID, 64))}
		}
		it.summary = summary
	}
	return nil
}

// NewCompaction is a compaction item holding sealed.
func NewCompaction(sealed string) Item {
	return Item{Type: TypeCompaction, ID: NewID("cmp"), EncryptedContent: sealed}
}

// compactionMessage is the text a compaction item stands for upstream.
func compactionMessage(summary string) string {
	return "Summary of the earlier part of this conversation, which it replaces:\n\n" + summary
}

// CompactInstructions is the system message of a compaction call: the
// model is asked for a summary a later model turn can continue from.
const CompactInstructions = "You compact conversations. Summarise the conversation below so that it can be continued from the summary alone: keep every fact, decision, name, number, open question and commitment, the user's goals and preferences, and the state of any tool calls. Write the summary only, in the conversation's language, without any preamble."

// compactPrompt closes the conversation of a compaction call.
const compactPrompt = "Write the summary of the conversation above now."

// CompactRequest is a parsed POST /v1/responses/compact body.
type CompactRequest struct {
	Model              string
	Input              []Item
	Instructions       *string
	PreviousResponseID string
	PromptCacheKey     *string
}

// ParseCompact reads a POST /v1/responses/compact body: model (required),
// input, previous_response_id, instructions and prompt_cache_key.
func ParseCompact(body []byte) (*CompactRequest, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, &ParamError{Message: "The request body must be a JSON object."}
	}
	var req Request
	out := &CompactRequest{}
	for _, name := range []string{"model", "input", "instructions", "previous_response_id", "prompt_cache_key"} {
		raw, ok := fields[name]
		delete(fields, name)
		if !ok || isNull(raw) {
			continue
		}
		if err := req.set(name, raw); err != nil {
			return nil, err
		}
	}
	for name := range fields {
		return nil, &ParamError{Param: name, Code: "unknown_parameter", Message: fmt.Sprintf("Unknown parameter: '%s'.", firstRunes(name, 64))}
	}
	if req.Model == "" {
		return nil, &ParamError{Param: "model", Code: "missing_required_parameter", Message: "Missing required parameter: 'model'."}
	}
	if req.Input == nil && req.PreviousResponseID == "" {
		return nil, &ParamError{Param: "input", Code: "missing_required_parameter", Message: "Give 'input', 'previous_response_id', or both."}
	}
	out.Model, out.Input, out.Instructions, out.PreviousResponseID, out.PromptCacheKey = req.Model, req.Input, req.Instructions, req.PreviousResponseID, req.PromptCacheKey
	return out, nil
}

// Request is the compaction call as a Responses request: the
// conversation to compact as input, the compaction instructions, and the
// closing prompt. The caller's own instructions stay part of what is
// summarised.
func (c *CompactRequest) Request() *Request {
	input := make([]Item, 0, len(c.Input)+2)
	if c.Instructions != nil && *c.Instructions != "" {
		input = append(input, Item{Type: TypeMessage, Role: "developer", Content: []Part{{Type: PartInputText, Text: *c.Instructions}}})
	}
	input = append(input, c.Input...)
	input = append(input, Item{Type: TypeMessage, Role: "user", Content: []Part{{Type: PartInputText, Text: compactPrompt}}})
	instr := CompactInstructions
	return &Request{Model: c.Model, Input: input, Instructions: &instr, Truncation: "disabled",
		PromptCacheKey: c.PromptCacheKey, Text: TextConfig{Format: TextFormat{Type: "text"}}}
}

// Compacted is the answer of POST /v1/responses/compact.
type Compacted struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	CreatedAt int64  `json:"created_at"`
	Output    []Item `json:"output"`
	Usage     Usage  `json:"usage"`
}
