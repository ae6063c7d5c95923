package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Usage is the token count of one call, in OpenAI's "usage" shape.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// withTotal fills TotalTokens when an upstream reported only the parts.
func (u Usage) withTotal() Usage {
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u
}

// meta is what readMeta extracts, with the usage already completed.
type meta struct {
	Model string
	Usage Usage
}

// readMeta reads the model and usage of a plain JSON answer, the only fields
// of it the gateway acts on. The body must be a valid JSON object; "model",
// when present and not null, a string; "usage" an object whose token counts
// are integers. Keys are matched as OpenAI spells them, and of a repeated
// key the first counts. It looks up the two fields instead of decoding the
// answer, which costs about a third as much on a usual answer.
func readMeta(body []byte) (meta, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return meta{}, errors.New("not a JSON object")
	}
	if !gjson.ValidBytes(body) {
		return meta{}, errors.New("not valid JSON")
	}
	fields := gjson.GetManyBytes(body, "model", "usage")
	var out meta
	switch m := fields[0]; m.Type {
	case gjson.Null: // absent or null
	case gjson.String:
		// encoding/json would have replaced bytes that are not UTF-8.
		out.Model = strings.ToValidUTF8(m.Str, "\uFFFD")
	default:
		return meta{}, errors.New(`"model" is not a string`)
	}
	switch u := fields[1]; {
	case u.Type == gjson.Null:
	case u.IsObject():
		var err error
		for _, f := range []struct {
			key string
			n   *int64
		}{
			{"prompt_tokens", &out.Usage.PromptTokens},
			{"completion_tokens", &out.Usage.CompletionTokens},
			{"total_tokens", &out.Usage.TotalTokens},
		} {
			if *f.n, err = tokenCount(u, f.key); err != nil {
				return meta{}, err
			}
		}
		out.Usage = out.Usage.withTotal()
	default:
		return meta{}, errors.New(`"usage" is not an object`)
	}
	return out, nil
}

// tokenCount is usage.<key>: 0 when absent or null, else an integer.
func tokenCount(usage gjson.Result, key string) (int64, error) {
	r := usage.Get(key)
	switch r.Type {
	case gjson.Null:
		return 0, nil
	case gjson.Number:
		if n, err := strconv.ParseInt(r.Raw, 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("usage.%s is not an integer", key)
}

// FirstMessageContent returns choices[0].message.content of a
// chat-completions answer. A null content (as in an answer made only of
// tool calls) gives "". A body that is not such an answer gives an error
// wrapping ErrUpstreamUnavailable, since it means the upstream sent
// something malformed.
func FirstMessageContent(body []byte) (string, error) {
	return messageContent(body, false)
}

// messageContent is FirstMessageContent; valid says body is known to be
// well-formed JSON already.
func messageContent(body []byte, valid bool) (string, error) {
	text, hasChoice, err := firstChoiceContent(body, "message", valid)
	if err != nil {
		return "", fmt.Errorf("%w: reading choices[0].message.content: %w", ErrUpstreamUnavailable, err)
	}
	if !hasChoice {
		return "", fmt.Errorf("%w: answer has no choices", ErrUpstreamUnavailable)
	}
	return text, nil
}

// StreamDelta returns choices[0].delta.content of one streamed chunk (a
// payload returned by Stream.Next). Chunks without it, such as the role
// announcement, the finish chunk or the final usage chunk, give "". A
// payload that is not JSON gives an error wrapping ErrUpstreamUnavailable.
func StreamDelta(chunk []byte) (string, error) {
	text, _, err := firstChoiceContent(chunk, "delta", false)
	if err != nil {
		return "", fmt.Errorf("%w: reading choices[0].delta.content: %w", ErrUpstreamUnavailable, err)
	}
	return text, nil
}

// firstChoiceContent reads choices[0].<field>.content of a JSON object as
// text, and whether there was a first choice. It looks the path up instead
// of decoding the body (a third of the cost on a usual answer), so it
// reads keys as OpenAI spells them, takes the first of a repeated key, and
// looks at nothing but the path: other choices may hold anything. On
// bodies without such oddities it gives what decoding with encoding/json
// gives (FuzzChoiceContent checks it). valid skips checking that body is
// well-formed JSON, for a caller that has checked it already: on a body
// that is not, the lookups below answer nonsense instead of an error.
func firstChoiceContent(body []byte, field string, valid bool) (text string, hasChoice bool, err error) {
	if !valid && !gjson.ValidBytes(body) {
		return "", false, errors.New("not valid JSON")
	}
	root := gjson.ParseBytes(body)
	if root.Type == gjson.Null {
		return "", false, nil
	}
	if !root.IsObject() {
		return "", false, errors.New("not a JSON object")
	}
	choices := root.Get("choices")
	if choices.Type == gjson.Null {
		return "", false, nil
	}
	if !choices.IsArray() {
		return "", false, errors.New("choices is not an array")
	}
	first := choices.Get("0")
	switch {
	case !first.Exists():
		return "", false, nil
	case first.Type == gjson.Null:
		return "", true, nil
	case !first.IsObject():
		return "", true, errors.New("choices[0] is not an object")
	}
	holder := first.Get(field)
	switch {
	case holder.Type == gjson.Null:
		return "", true, nil
	case !holder.IsObject():
		return "", true, fmt.Errorf("choices[0].%s is not an object", field)
	}
	content := holder.Get("content")
	// A string with no escapes but \n and the like, in valid UTF-8, is
	// what gjson unescapes exactly as encoding/json does; contentText
	// takes every other value.
	if content.Type == gjson.String && utf8.ValidString(content.Raw) && !strings.Contains(content.Raw, `\u`) {
		return content.Str, true, nil
	}
	text, err = contentText([]byte(content.Raw))
	return text, true, err
}

// contentText turns an OpenAI "content" value into text. Besides the usual
// string (or null), it accepts the array-of-parts form, keeping the text
// parts, because requests use it and a few upstreams answer with it too.
func contentText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", err
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Type != "text" {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(p.Text)
		}
		return b.String(), nil
	default:
		return "", errors.New("content is neither a string nor an array of parts")
	}
}

// EstimateTokens roughly estimates the tokens in s, for when an upstream
// reports no usage: about four characters (Unicode code points) per token,
// rounded up, so any non-empty text counts as at least one token and empty
// text as none. It is a budget-keeping guess, not a tokenizer; English
// prose comes out close, code and CJK text are undercounted.
func EstimateTokens(s string) int64 {
	n := utf8.RuneCountInString(s)
	return int64((n + 3) / 4)
}

// UsageOnlyChunk reports whether a streamed chunk is the extra one that
// stream_options.include_usage adds at the end: a usage object and an empty
// choices array. A gateway that asked for usage on the client's behalf
// drops exactly that chunk. Chunks without a usage key are recognised by a
// byte scan, without decoding.
func UsageOnlyChunk(chunk []byte) bool {
	if !mayHaveUsage(chunk) {
		return false
	}
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   *Usage            `json:"usage"`
	}
	if json.Unmarshal(chunk, &c) != nil {
		return false
	}
	return c.Usage != nil && len(c.Choices) == 0
}
