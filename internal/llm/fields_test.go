package llm

import (
	"errors"
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
