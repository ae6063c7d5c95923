package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

const mockToolRequest = `{"model":"m","messages":[{"role":"user","content":"Weather in Paris?"}],` +
	`"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",` +
	`"properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":2},"extra":{"type":"boolean"}},` +
	`"required":["location","unit","days"]}}},{"type":"function","function":{"name":"other"}}]}`

func TestMockCallsTheFirstToolWithSchemaArguments(t *testing.T) {
	t.Parallel()
	resp, err := NewMock().Complete(context.Background(), []byte(mockToolRequest))
	if err != nil {
		t.Fatal(err)
	}
	ch := gjson.GetBytes(resp.Body, "choices.0")
	if ch.Get("finish_reason").Str != "tool_calls" || ch.Get("message.tool_calls.#").Int() != 1 {
		t.Fatalf("answer = %s, want one tool call", resp.Body)
	}
	call := ch.Get("message.tool_calls.0")
	if call.Get("function.name").Str != "get_weather" || call.Get("id").Str == "" || call.Get("type").Str != "function" {
		t.Errorf("call = %s", call.Raw)
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(call.Get("function.arguments").Str), &args); err != nil {
		t.Fatalf("arguments are not JSON: %v", err)
	}
	if args["unit"] != "celsius" || args["days"] != float64(2) || args["location"] != "mock location" || len(args) != 3 {
		t.Errorf("arguments = %v, want the three required properties from the schema", args)
	}
	if !ch.Get("message.content").Exists() || ch.Get("message.content").Type != gjson.Null {
		t.Errorf("content = %s, want null beside tool calls", ch.Get("message.content").Raw)
	}

	named := strings.Replace(mockToolRequest, `"tools"`, `"tool_choice":{"type":"function","function":{"name":"other"}},"tools"`, 1)
	resp, err = NewMock().Complete(context.Background(), []byte(named))
	if err != nil || gjson.GetBytes(resp.Body, "choices.0.message.tool_calls.0.function.name").Str != "other" ||
		gjson.GetBytes(resp.Body, "choices.0.message.tool_calls.0.function.arguments").Str != "{}" {
		t.Errorf("tool_choice other: %s, %v", resp.Body, err)
	}
	none := strings.Replace(mockToolRequest, `"tools"`, `"tool_choice":"none","tools"`, 1)
	resp, err = NewMock().Complete(context.Background(), []byte(none))
	if err != nil || gjson.GetBytes(resp.Body, "choices.0.finish_reason").Str != "stop" {
		t.Errorf("tool_choice none: %s, %v", resp.Body, err)
	}
}

func TestMockAnswersAfterAToolResultAndCountsImages(t *testing.T) {
	t.Parallel()
	after := `{"model":"m","messages":[{"role":"user","content":"Weather?"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},` +
		`{"role":"tool","tool_call_id":"c1","content":"sunny, 21C"}],"tools":[{"type":"function","function":{"name":"get_weather"}}]}`
	resp, err := NewMock().Complete(context.Background(), []byte(after))
	if err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(resp.Body, "choices.0.message.content").Str; got != "Mock reply: the tool said: sunny, 21C" {
		t.Errorf("after tool = %q", got)
	}
	img := `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}`
	resp, err = NewMock().Complete(context.Background(), []byte(img))
	if err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(resp.Body, "choices.0.message.content").Str; got != "Mock reply: What is this? (1 image(s) received)" {
		t.Errorf("image answer = %q", got)
	}
}

func TestMockStreamsToolCallDeltas(t *testing.T) {
	t.Parallel()
	m := NewMock()
	plain, err := m.Complete(context.Background(), []byte(mockToolRequest))
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(mockToolRequest, `"model"`, `"stream":true,"stream_options":{"include_usage":true},"model"`, 1)
	s, err := m.Stream(context.Background(), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var id, name, args, finish string
	for {
		p, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c := gjson.ParseBytes(p)
		for _, tc := range c.Get("choices.0.delta.tool_calls").Array() {
			if tc.Get("index").Int() != 0 {
				t.Errorf("tool call index = %d", tc.Get("index").Int())
			}
			id += tc.Get("id").Str
			name += tc.Get("function.name").Str
			args += tc.Get("function.arguments").Str
		}
		if f := c.Get("choices.0.finish_reason").Str; f != "" {
			finish = f
		}
	}
	want := gjson.GetBytes(plain.Body, "choices.0.message.tool_calls.0")
	if !strings.HasPrefix(id, "call_mock_") || name != "get_weather" || args != want.Get("function.arguments").Str || finish != "tool_calls" {
		t.Errorf("streamed call id=%q name=%q args=%q finish=%q, want the plain answer's %s", id, name, args, finish, want.Raw)
	}
	if u, ok := s.Usage(); !ok || u != plain.Usage {
		t.Errorf("stream usage = %+v %v, want %+v", u, ok, plain.Usage)
	}
}

func TestMockPicksTheToolThePromptNamesAndItsExpression(t *testing.T) {
	t.Parallel()
	tools := `"tools":[{"type":"function","function":{"name":"current_time","parameters":{"type":"object","properties":{"timezone":{"type":"string"}}}}},` +
		`{"type":"function","function":{"name":"calculate","parameters":{"type":"object","properties":{"expression":{"type":"string"}},"required":["expression"]}}}]`
	tests := []struct {
		prompt, tool, args string
	}{
		{"Please calculate (2+3)*4 for me", "calculate", `{"expression":"(2+3)*4"}`},
		{"What time is it?", "current_time", `{"timezone":"UTC"}`},
		{"hello there", "current_time", `{"timezone":"UTC"}`},
		{"calculate something", "calculate", `{"expression":"mock expression"}`},
	}
	for _, tt := range tests {
		body := `{"model":"m","messages":[{"role":"user","content":` + strconvQuote(tt.prompt) + `}],` + tools + `}`
		resp, err := NewMock().Complete(context.Background(), []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		call := gjson.GetBytes(resp.Body, "choices.0.message.tool_calls.0.function")
		if call.Get("name").Str != tt.tool || call.Get("arguments").Str != tt.args {
			t.Errorf("%q: called %s", tt.prompt, call.Raw)
		}
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
