package anthropic

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestToChat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, request string
		checks        map[string]string // gjson path → expected raw or string value
		wantErr       string
	}{
		{name: "system blocks, image, tool choice",
			request: `{"model":"x","max_tokens":9,"system":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
				"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAA"}}]}],
				"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"},"stop_sequences":["END"]}`,
			checks: map[string]string{"messages.0.content": "a\nb", "messages.1.content.1.image_url.url": "data:image/png;base64,AAA",
				"tool_choice.function.name": "f", "stop.0": "END", "max_tokens": "9", "model": "routed"}},
		{name: "any is required", request: `{"max_tokens":1,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"any"}}`,
			checks: map[string]string{"tool_choice": "required", "messages.0.content": "x"}},
		{name: "error tool result", request: `{"max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"boom"}],"is_error":true}]}]}`,
			checks: map[string]string{"messages.0.tool_calls.0.function.arguments": `{"a":1}`, "messages.1.role": "tool", "messages.1.content": "Error: boom"}},
		{name: "no messages", request: `{"max_tokens":1,"messages":[]}`, wantErr: "at least one message"},
		{name: "server tool", request: `{"max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, wantErr: "server tool"},
		{name: "document block", request: `{"max_tokens":1,"messages":[{"role":"user","content":[{"type":"document"}]}]}`, wantErr: "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r Request
			if err := json.Unmarshal([]byte(tc.request), &r); err != nil {
				t.Fatal(err)
			}
			out, err := ToChat(r, "routed")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range tc.checks {
				if got := gjson.GetBytes(out, path); got.String() != want {
					t.Errorf("%s = %s, want %s (body %s)", path, got.Raw, want, out)
				}
			}
		})
	}
}

func TestStreamEvents(t *testing.T) {
	t.Parallel()
	s := NewStream("msg_1", "m", 3)
	buf := s.Start(nil)
	for _, chunk := range []string{
		`{"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}}]}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}`,
		`{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}`,
	} {
		buf, _ = s.Chunk(buf, []byte(chunk))
	}
	buf = s.End(buf, Usage{InputTokens: 3, OutputTokens: 4})
	var names []string
	for _, line := range strings.Split(string(buf), "\n") {
		if name, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, name)
		}
	}
	want := "message_start ping content_block_start content_block_delta content_block_stop content_block_start content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("events:\n %s\nwant\n %s", got, want)
	}
	if !strings.Contains(string(buf), `"stop_reason":"tool_use"`) || !strings.Contains(string(buf), `"index":1`) {
		t.Fatalf("stream: %s", buf)
	}
}
