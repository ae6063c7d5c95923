package llm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestFirstMessageContent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    string
		wantErr bool
	}{
		{name: "string", body: `{"choices":[{"message":{"role":"assistant","content":"Hello \u00e9"}},{"message":{"content":"second"}}]}`, want: "Hello é"},
		{name: "null content", body: `{"choices":[{"message":{"content":null,"tool_calls":[]}}]}`, want: ""},
		{name: "missing content", body: `{"choices":[{"message":{}}]}`, want: ""},
		{name: "parts", body: `{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}}]}`, want: "a\nb"},
		{name: "no choices", body: `{"choices":[]}`, wantErr: true},
		{name: "not json", body: `<html>`, wantErr: true},
		{name: "content is a number", body: `{"choices":[{"message":{"content":5}}]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := FirstMessageContent([]byte(tt.body))
			if tt.wantErr {
				if !errors.Is(err, ErrUpstreamUnavailable) {
					t.Errorf("err = %v, want ErrUpstreamUnavailable", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestStreamDelta(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		chunk   string
		want    string
		wantErr bool
	}{
		{name: "content", chunk: `{"choices":[{"index":0,"delta":{"content":"Hi "}}]}`, want: "Hi "},
		{name: "role only", chunk: `{"choices":[{"delta":{"role":"assistant"}}]}`, want: ""},
		{name: "finish", chunk: `{"choices":[{"delta":{},"finish_reason":"stop"}]}`, want: ""},
		{name: "usage chunk", chunk: `{"choices":[],"usage":{"total_tokens":3}}`, want: ""},
		{name: "not json", chunk: `[DONE`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := StreamDelta([]byte(tt.chunk))
			if tt.wantErr {
				if !errors.Is(err, ErrUpstreamUnavailable) {
					t.Errorf("err = %v, want ErrUpstreamUnavailable", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	t.Parallel()
	tests := map[string]int64{
		"":                          0,
		"a":                         1,
		"abcd":                      1,
		"abcde":                     2,
		"héllo wörld":               3, // 11 code points, not 13 bytes
		"日本語のテキスト":                  2,
		"The quick brown fox jumps": 7,
	}
	for in, want := range tests {
		if got := EstimateTokens(in); got != want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestFirstMessageContentOddBodies pins what FirstMessageContent makes of
// bodies an upstream should never send: "" with no error means it read an
// empty content, "error" an error.
func TestFirstMessageContentOddBodies(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		`{"choices":[{"message":{"content":"hello \u00e9 \ud83d\ude00 \"q\""}}]}`: "hello é 😀 \"q\"",
		`{"choices":[{"message":{"content":"line\none\ttab \\ \/"}}]}`:            "line\none\ttab \\ /",
		`{"choices":[{"message":{"content":"lone \ud800 surrogate"}}]}`:           "lone \ufffd surrogate",
		`{"choices":[{"message":{"content":"invalid utf-8 ` + "\xff" + `"}}]}`:    "invalid utf-8 \ufffd",
		`{"choices":[{"message":{"content":null}}]}`:                              "",
		`{"choices":[{"message":{}}]}`:                                            "",
		`{"choices":[{"message":null}]}`:                                          "",
		`{"choices":[null]}`:                                                      "",
		`{"choices":[]}`:                                                          "error",
		`{"choices":null}`:                                                        "error",
		`{}`:                                                                      "error",
		`null`:                                                                    "error",
		`{"Choices":[{"MESSAGE":{"Content":"case-folded keys"}}]}`:                "error", // keys as OpenAI spells them
		`{"choices":[{"message":{"content":"first"}}],"choices":[{"message":{"content":"last"}}]}`:                           "first",
		`{"choices":[{"message":{"content":"ok"}},"not an object"]}`:                                                         "ok", // only choices[0] is read
		`{"choices":[{"message":{"content":"ok"}},{"message":{"content":1e400}}]}`:                                           "ok",
		`{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}}]}`: "a\nb",
		`{"choices":[{"message":{"content":42}}]}`:                                                                           "error",
		`{"choices":[{"message":{"content":{"text":"object"}}}]}`:                                                            "error",
		`{"choices":[{"message":"text"}]}`:                                                                                   "error",
		`{"choices":["text"]}`:                                                                                               "error",
		`{"choices":{"0":{"message":{"content":"not an array"}}}}`:                                                           "error",
		`{"choices":[{"message":{"content":"trailing"}}]} x`:                                                                 "error",
		`not json`: "error",
		``:         "error",
		`[]`:       "error",
	} {
		got, err := FirstMessageContent([]byte(body))
		if want == "error" {
			if !errors.Is(err, ErrUpstreamUnavailable) {
				t.Errorf("body %q: got %q, %v; want an error wrapping ErrUpstreamUnavailable", body, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("body %q: got %q, %v; want %q", body, got, err, want)
		}
	}
}

// choiceContentDecoded is firstChoiceContent by encoding/json, the
// reference FuzzChoiceContent holds it to.
func choiceContentDecoded(body []byte, field string) (string, bool, error) {
	var answer struct {
		Choices []map[string]json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return "", false, err
	}
	if len(answer.Choices) == 0 {
		return "", false, nil
	}
	var holder struct {
		Content json.RawMessage `json:"content"`
	}
	if raw, ok := answer.Choices[0][field]; ok {
		if err := json.Unmarshal(raw, &holder); err != nil {
			return "", true, err
		}
	}
	text, err := contentText(holder.Content)
	return text, true, err
}

// FuzzChoiceContent holds firstChoiceContent to encoding/json. On any body
// it accepts only valid JSON. Bodies encoding/json decodes are compared in
// their decoded and re-encoded form (which has no repeated keys), unless a
// key on the path is spelled with other cases or a choice after the first
// is neither an object nor null, where the two differ by design (see
// firstChoiceContent). On valid JSON, skipping the validity check (as
// Response.Content does for a body the Client checked) changes nothing.
func FuzzChoiceContent(f *testing.F) {
	f.Add([]byte(`{"choices":[{"message":{"content":"hi \u00e9\n"}}]}`))
	f.Add([]byte(`{"choices":[{"delta":{"content":[{"type":"text","text":"a"}]}}]}`))
	f.Add([]byte(`{"choices":[null,{"message":{"content":"x"}}]}`))
	f.Add([]byte(`{"choices":[{"message":{"content":"ok"}},{"message":{"content":1e400}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, field := range []string{"message", "delta"} {
			got, gotChoice, gotErr := firstChoiceContent(body, field, false)
			if gotErr == nil && !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			if json.Valid(body) {
				trusted, trustedChoice, trustedErr := firstChoiceContent(body, field, true)
				if trusted != got || trustedChoice != gotChoice || (trustedErr == nil) != (gotErr == nil) {
					t.Fatalf("body %q, field %s: unchecked %q, %v, %v; checked %q, %v, %v",
						body, field, trusted, trustedChoice, trustedErr, got, gotChoice, gotErr)
				}
			}
			var v any
			if json.Unmarshal(body, &v) != nil {
				continue
			}
			canon, err := json.Marshal(v)
			if err != nil || !comparableAnswer(v, field) {
				continue
			}
			got, gotChoice, gotErr = firstChoiceContent(canon, field, false)
			want, wantChoice, wantErr := choiceContentDecoded(canon, field)
			if got != want || gotChoice != wantChoice || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("body %s, field %s: got %q, %v, %v; encoding/json %q, %v, %v",
					canon, field, got, gotChoice, gotErr, want, wantChoice, wantErr)
			}
		}
	})
}

// comparableAnswer reports whether a decoded body is one on which
// firstChoiceContent and encoding/json must agree.
func comparableAnswer(v any, field string) bool {
	obj, ok := v.(map[string]any)
	if !ok {
		return true
	}
	if variantKey(obj, "choices") {
		return false
	}
	choices, _ := obj["choices"].([]any)
	for i, c := range choices {
		choice, ok := c.(map[string]any)
		if !ok {
			if c != nil {
				return i == 0
			}
			continue
		}
		if i > 0 {
			continue
		}
		if holder, ok := choice[field].(map[string]any); ok && variantKey(holder, "content") {
			return false
		}
	}
	return true
}

// variantKey reports whether obj has a key that is name with other cases.
func variantKey(obj map[string]any, name string) bool {
	for k := range obj {
		if k != name && strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// TestResponseContentChecksWhatTheClientDidNot: a Response made by hand
// (a mock, another provider) has an unchecked body, and Content still
// refuses one that is not JSON; a body the Client read was checked.
func TestResponseContentChecksWhatTheClientDidNot(t *testing.T) {
	bad := &Response{Body: []byte(`{"choices":[{"message":{"content":"hi"}}]`)} // one brace short
	if text, err := bad.Content(); err == nil {
		t.Fatalf("Content of a body that is not JSON = %q, nil", text)
	}
	good := &Response{Body: []byte(`{"choices":[{"message":{"content":"hi"}}]}`)}
	if text, err := good.Content(); err != nil || text != "hi" {
		t.Fatalf("Content = %q, %v; want hi", text, err)
	}
	good.valid = true
	if text, err := good.Content(); err != nil || text != "hi" {
		t.Fatalf("Content of a checked body = %q, %v; want hi", text, err)
	}
}
