package llm

import (
	"errors"
	"fmt"
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

// TestFirstMessageContentFastPathAgrees checks that the fast path of
// FirstMessageContent gives exactly what the general one gives, errors
// included, on ordinary and odd bodies.
func TestFirstMessageContentFastPathAgrees(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"choices":[{"message":{"content":"hello \u00e9 \ud83d\ude00 \"q\""}}]}`,
		`{"choices":[{"message":{"content":null}}]}`,
		`{"choices":[{"message":{}}]}`,
		`{"choices":[null]}`,
		`{"choices":[]}`,
		`{"choices":null}`,
		`{}`,
		`{"Choices":[{"MESSAGE":{"Content":"case-folded keys"}}]}`,
		`{"choices":[{"message":{"content":"first"}}],"choices":[{"message":{"content":"last wins"}}]}`,
		`{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}}]}`,
		`{"choices":[{"message":{"content":42}}]}`,
		`{"choices":[{"message":{"content":{"text":"object"}}}]}`,
		`{"choices":[{"message":{"content":"ok"}},{"message":{"content":1e400}}]}`,
		`{"choices":[{"message":{"content":"ok"}},"not an object"]}`,
		`{"choices":[{"message":{"content":"invalid utf-8 ` + "\xff" + `"}}]}`,
		`{"choices":[{"message":{"content":"trailing"}}]} x`,
		`not json`,
		``,
		`null`,
		`[]`,
	} {
		got, gotErr := FirstMessageContent([]byte(body))
		want, wantErr := firstMessageContent([]byte(body))
		if got != want || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Errorf("body %q:\n fast path %q, %v\n general   %q, %v", body, got, gotErr, want, wantErr)
		}
	}
}

// FuzzFirstMessageContentFastPathAgrees looks for a body on which the two
// paths of FirstMessageContent disagree.
func FuzzFirstMessageContentFastPathAgrees(f *testing.F) {
	f.Add([]byte(`{"choices":[{"message":{"content":"hi"}}]}`))
	f.Add([]byte(`{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}}]}`))
	f.Add([]byte(`{"choices":[{"message":{"content":"ok"}},{"message":{"content":1e400}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := FirstMessageContent(body)
		want, wantErr := firstMessageContent(body)
		if got != want || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("body %q: fast path %q, %v; general %q, %v", body, got, gotErr, want, wantErr)
		}
	})
}
