package responses

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tidwall/gjson"
)

func TestParseRefusesWhatItDoesNotImplement(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body, param, code string
	}{
		{`{"input":"hi","conversation":"conv_1","previous_response_id":"resp_1"}`, "conversation", ""},
		{`{"input":"hi","conversation":{"name":"x"}}`, "conversation", ""},
		{`{"input":"hi","frobnicate":1}`, "frobnicate", "unknown_parameter"},
		{`{"input":"hi","tools":[{"type":"web_search"}]}`, "tools[0].type", "unsupported_parameter"},
		{`{"input":[{"type":"reasoning","summary":[]}]}`, "input[0].type", "unsupported_parameter"},
		{`{"input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}`, "input[0].content[0].type", "unsupported_parameter"},
		{`{"input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]}`, "input[0].content[0].file_id", "unsupported_parameter"},
		{`{"input":[{"role":"robot","content":"x"}]}`, "input[0].role", ""},
		{`{"input":"hi","background":true}`, "background", ""},
		{`{"input":"hi","temperature":3}`, "temperature", ""},
		{`{"input":"hi","max_output_tokens":1.5}`, "max_output_tokens", ""},
		{`{"input":"hi","store":"yes"}`, "store", ""},
		{`{"input":"hi","truncation":"sometimes"}`, "truncation", ""},
		{`{"input":"hi","tool_choice":{"type":"function","name":"nope"}}`, "tool_choice", ""},
		{`{"input":"hi","text":{"format":{"type":"json_schema"}}}`, "text.format.name", ""},
		{`{"input":"hi","include":["reasoning.encrypted_content"]}`, "include", ""},
		{`{"input":[{"type":"function_call_output","output":"x"}]}`, "input[0]", ""},
		{`{"model":"m"}`, "input", "missing_required_parameter"},
	} {
		_, err := Parse([]byte(tc.body))
		pe, ok := errors.AsType[*ParamError](err)
		if !ok {
			t.Errorf("Parse(%s) err = %v, want a ParamError", tc.body, err)
			continue
		}
		if pe.Param != tc.param || pe.Code != tc.code || pe.Message == "" {
			t.Errorf("Parse(%s) = param %q code %q (%s), want param %q code %q", tc.body, pe.Param, pe.Code, pe.Message, tc.param, tc.code)
		}
	}
}

func TestParseReadsEveryInputShape(t *testing.T) {
	t.Parallel()
	body := `{"model":"m","instructions":"Be brief.","store":false,"stream":true,"metadata":{"k":"v"},
	"input":[
		{"type":"message","role":"system","content":"sys"},
		{"role":"developer","content":[{"type":"input_text","text":"dev"}]},
		{"role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"low"}]},
		{"type":"message","role":"assistant","phase":"commentary","content":"thinking"},
		{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"hi","annotations":[],"logprobs":[]}]},
		{"type":"function_call","id":"fc_1","call_id":"c1","name":"f","arguments":"{}","status":"completed"},
		{"type":"function_call_output","call_id":"c1","output":"42"}
	],
	"tools":[{"type":"function","name":"f","description":"d","parameters":{"type":"object"}}],"tool_choice":"required"}`
	req, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if req.Store || !req.Stream || *req.Instructions != "Be brief." || req.Metadata["k"] != "v" || len(req.Input) != 7 {
		t.Fatalf("req = %+v", req)
	}
	want := []Item{
		{Type: TypeMessage, Status: StatusCompleted, Role: "system", Content: []Part{{Type: PartInputText, Text: "sys"}}},
		{Type: TypeMessage, Status: StatusCompleted, Role: "developer", Content: []Part{{Type: PartInputText, Text: "dev"}}},
		{Type: TypeMessage, Status: StatusCompleted, Role: "user", Content: []Part{{Type: PartInputText, Text: "look"},
			{Type: PartInputImage, ImageURL: "data:image/png;base64,AAAA", Detail: "low"}}},
		{Type: TypeMessage, Status: StatusCompleted, Role: "assistant", Phase: "commentary", Content: []Part{{Type: PartOutputText, Text: "thinking"}}},
		{Type: TypeMessage, ID: "msg_1", Status: StatusCompleted, Role: "assistant", Content: []Part{{Type: PartOutputText, Text: "hi"}}},
		{Type: TypeFunctionCall, ID: "fc_1", Status: StatusCompleted, CallID: "c1", Name: "f", Arguments: "{}"},
		{Type: TypeFunctionCallOutput, Status: StatusCompleted, CallID: "c1", Output: "42"},
	}
	if diff := cmp.Diff(want, req.Input, cmp.AllowUnexported(Item{})); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
	// Items written by MarshalJSON read back the same.
	raw, err := json.Marshal(req.Input)
	if err != nil {
		t.Fatal(err)
	}
	var again []Item
	if err := json.Unmarshal(raw, &again); err != nil {
		t.Fatalf("read back %s: %v", raw, err)
	}
	if diff := cmp.Diff(req.Input, again, cmp.AllowUnexported(Item{})); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if *req.Tools[0].Strict != true || string(req.Tools[0].Parameters) != `{"type":"object"}` {
		t.Errorf("tool = %+v", req.Tools[0])
	}
}

func TestChatRequestConvertsTheConversation(t *testing.T) {
	t.Parallel()
	req, err := Parse([]byte(`{"model":"m","instructions":"Be brief.","max_output_tokens":100,"temperature":0.5,
		"text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}},
		"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}],
		"tool_choice":{"type":"function","name":"get_weather"},"parallel_tool_calls":false,
		"input":[{"type":"function_call_output","call_id":"c1","output":"sunny"},
		         {"role":"user","content":[{"type":"input_text","text":"and this?"},{"type":"input_image","image_url":"https://example.com/a.png"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	history := []Item{
		{Type: TypeMessage, Role: "developer", Content: []Part{{Type: PartInputText, Text: "old rules"}}},
		{Type: TypeMessage, Role: "user", Content: []Part{{Type: PartInputText, Text: "weather?"}}},
		{Type: TypeMessage, Role: "assistant", Content: []Part{{Type: PartOutputText, Text: ""}}},
		{Type: TypeFunctionCall, CallID: "c1", Name: "get_weather", Arguments: `{"city":"Paris"}`},
	}
	chat, err := ChatRequest(req, history, ChatOptions{Model: "up-model", Stream: true, DefaultMaxTokens: 4096})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(chat.Body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"model": "up-model",
		"messages": []any{
			map[string]any{"role": "system", "content": "Be brief."},
			map[string]any{"role": "system", "content": "old rules"},
			map[string]any{"role": "user", "content": "weather?"},
			map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c1", "type": "function",
				"function": map[string]any{"name": "get_weather", "arguments": `{"city":"Paris"}`}}}},
			map[string]any{"role": "tool", "tool_call_id": "c1", "content": "sunny"},
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "and this?"},
				map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/a.png"}}}},
		},
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "get_weather",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}, "strict": true}}},
		"tool_choice":           map[string]any{"type": "function", "function": map[string]any{"name": "get_weather"}},
		"parallel_tool_calls":   false,
		"max_completion_tokens": float64(100),
		"temperature":           0.5,
		"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "out",
			"schema": map[string]any{"type": "object"}, "strict": true}},
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chat request (-want +got):\n%s", diff)
	}
}

func TestChatRequestChecksCallIDsAndContext(t *testing.T) {
	t.Parallel()
	req, _ := Parse([]byte(`{"input":[{"type":"function_call_output","call_id":"nope","output":"x"}]}`))
	_, err := ChatRequest(req, nil, ChatOptions{Model: "m"})
	if pe, ok := errors.AsType[*ParamError](err); !ok || pe.Param != "input[0].call_id" {
		t.Errorf("unmatched call_id err = %v", err)
	}

	long := strings.Repeat("word ", 400) // about 500 tokens
	history := []Item{
		{Type: TypeMessage, Role: "user", Content: []Part{{Type: PartInputText, Text: long}}},
		{Type: TypeFunctionCall, CallID: "c1", Name: "f", Arguments: "{}"},
		{Type: TypeFunctionCallOutput, CallID: "c1", Output: long},
		{Type: TypeMessage, Role: "user", Content: []Part{{Type: PartInputText, Text: "recent"}}},
	}
	req, _ = Parse([]byte(`{"input":"now"}`))
	_, err = ChatRequest(req, history, ChatOptions{Model: "m", ContextTokens: 300})
	if pe, ok := errors.AsType[*ParamError](err); !ok || pe.Code != "context_length_exceeded" || !strings.Contains(pe.Message, "300") {
		t.Errorf("over the limit with truncation disabled: err = %v", err)
	}
	req, _ = Parse([]byte(`{"input":"now","truncation":"auto"}`))
	chat, err := ChatRequest(req, history, ChatOptions{Model: "m", ContextTokens: 300})
	if err != nil {
		t.Fatal(err)
	}
	msgs := gjson.GetBytes(chat.Body, "messages").Array()
	// The long message and its call go; the tool output left without
	// its call goes too.
	if chat.Dropped != 3 || len(msgs) != 2 || msgs[0].Get("content").Str != "recent" || chat.Estimate > 300 {
		t.Errorf("auto truncation: dropped %d, messages %v, estimate %d", chat.Dropped, msgs, chat.Estimate)
	}
}

func TestResponseFromCompletion(t *testing.T) {
	t.Parallel()
	req, _ := Parse([]byte(`{"input":"hi","max_tool_calls":1,"tools":[{"type":"function","name":"f"}]}`))
	r := NewResponse(req, "resp_1", "m", time.Unix(100, 0))
	ans, err := ParseCompletion([]byte(`{"model":"m-2025","choices":[{"finish_reason":"tool_calls","message":{"role":"assistant","content":"Let me check.",
		"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"id":"c2","type":"function","function":{"name":"f","arguments":"{}"}}]}}],
		"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Complete(ans, time.Unix(101, 0))
	if r.Status != StatusCompleted || len(r.Output) != 2 || r.Output[0].Text() != "Let me check." ||
		r.Output[1].CallID != "c1" || r.Output[1].Arguments != `{"a":1}` || *r.CompletedAt != 101 {
		t.Fatalf("response = %+v (max_tool_calls 1 keeps the first call)", r)
	}
	if u := r.Usage; u.InputTokens != 10 || u.OutputTokens != 5 || u.TotalTokens != 15 || u.InputTokensDetails.CachedTokens != 4 || u.OutputTokensDetails.ReasoningTokens != 2 {
		t.Errorf("usage = %+v", u)
	}
	raw, _ := json.Marshal(r)
	for _, k := range []string{"id", "object", "created_at", "completed_at", "status", "incomplete_details", "model", "previous_response_id",
		"instructions", "output", "error", "tools", "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p", "presence_penalty",
		"frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage", "max_output_tokens", "max_tool_calls", "store", "background",
		"service_tier", "metadata", "safety_identifier", "prompt_cache_key"} {
		if !gjson.GetBytes(raw, k).Exists() {
			t.Errorf("response JSON lacks %q: %s", k, raw)
		}
	}
	if gjson.GetBytes(raw, "output.0.content.0.annotations").Raw != "[]" || gjson.GetBytes(raw, "tools.0.strict").Raw != "true" ||
		gjson.GetBytes(raw, "text.format.type").Str != "text" {
		t.Errorf("output part or tool echo wrong: %s", raw)
	}

	cut := NewResponse(req, "resp_2", "m", time.Unix(100, 0))
	ans, _ = ParseCompletion([]byte(`{"choices":[{"finish_reason":"length","message":{"content":"trunc"}}]}`))
	cut.Complete(ans, time.Unix(101, 0))
	if cut.Status != StatusIncomplete || cut.IncompleteDetails.Reason != "max_output_tokens" || cut.Output[0].Status != StatusIncomplete {
		t.Errorf("length-cut response = %+v", cut)
	}
}

// replay rebuilds a response from its events as a client does, and
// checks the events' order rules on the way.
func replay(t *testing.T, events []Event) (*Response, string) {
	t.Helper()
	var final *Response
	var text strings.Builder
	items := map[int]json.RawMessage{}
	for i, ev := range events {
		d := gjson.ParseBytes(ev.Data)
		if d.Get("type").Str != ev.Type || d.Get("sequence_number").Int() != int64(i) {
			t.Fatalf("event %d = %s, want type %s and sequence %d", i, ev.Data, ev.Type, i)
		}
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(d.Get("delta").Str)
		case "response.output_item.done":
			items[int(d.Get("output_index").Int())] = json.RawMessage(d.Get("item").Raw)
		case "response.completed", "response.incomplete", "response.failed":
			final = &Response{}
			if err := json.Unmarshal([]byte(d.Get("response").Raw), final); err != nil {
				t.Fatal(err)
			}
		}
	}
	if final == nil {
		t.Fatal("no terminal event")
	}
	for i, it := range final.Output {
		want, _ := json.Marshal(it)
		if string(items[i]) != string(want) {
			t.Errorf("output_item.done %d = %s, final has %s", i, items[i], want)
		}
	}
	return final, text.String()
}

func TestTranslatorStreamsTextAndToolCalls(t *testing.T) {
	t.Parallel()
	req, _ := Parse([]byte(`{"input":"hi"}`))
	tr := NewTranslator(NewResponse(req, "resp_1", "m", time.Unix(1, 0)))
	events := tr.Start()
	for _, chunk := range []string{
		`{"model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}`,
		`{"choices":[{"delta":{"content":"Hel"}}]}`,
		`{"choices":[{"delta":{"content":"lo"}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":""}}]}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"g","arguments":"{}"}}]}}]}`,
		`{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}`,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
	} {
		ev, err := tr.Chunk([]byte(chunk))
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev...)
	}
	u, ok := tr.Usage()
	if !ok || u.TotalTokens != 7 {
		t.Fatalf("usage = %+v, %v", u, ok)
	}
	events = append(events, tr.Close(false, u, time.Unix(2, 0))...)
	events = append(events, tr.Terminal())
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	want := []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done",
		"response.completed"}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Fatalf("event types (-want +got):\n%s", diff)
	}
	final, text := replay(t, events)
	if text != "Hello" || final.OutputText() != "Hello" || final.Status != StatusCompleted || len(final.Output) != 3 ||
		final.Output[1].Arguments != `{"a":1}` || final.Output[2].Name != "g" || final.Usage.TotalTokens != 7 {
		t.Errorf("final = %+v, text %q", final, text)
	}
	if gjson.GetBytes(events[0].Data, "response.status").Str != StatusInProgress || gjson.GetBytes(events[0].Data, "response.output").Raw != "[]" {
		t.Errorf("response.created = %s", events[0].Data)
	}
}

func TestTranslatorCutShortIsIncomplete(t *testing.T) {
	t.Parallel()
	req, _ := Parse([]byte(`{"input":"hi"}`))
	tr := NewTranslator(NewResponse(req, "resp_1", "m", time.Unix(1, 0)))
	events := tr.Start()
	ev, _ := tr.Chunk([]byte(`{"choices":[{"delta":{"content":"partial"}}]}`))
	events = append(events, ev...)
	events = append(events, tr.Close(true, Usage{TotalTokens: 9}, time.Unix(2, 0))...)
	events = append(events, tr.Terminal())
	final, _ := replay(t, events)
	if final.Status != StatusIncomplete || final.IncompleteDetails.Reason != "interrupted" || final.Output[0].Status != StatusIncomplete ||
		final.OutputText() != "partial" || final.Usage.TotalTokens != 9 || events[len(events)-1].Type != "response.incomplete" {
		t.Errorf("cut response = %+v", final)
	}
	if got := string(events[len(events)-1].AppendSSE(nil)); !strings.HasPrefix(got, "event: response.incomplete\ndata: {") || !strings.HasSuffix(got, "}\n\n") || strings.Count(got, "\n") != 3 {
		t.Errorf("SSE framing = %q", got)
	}
}
