package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	anthropicsdk "github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/tidwall/gjson"

	"github.com/agentapi/agentapi/internal/testkit"
)

// claude is Anthropic's official Go SDK pointed at us; auth is its
// credential option (x-api-key or a bearer token).
func (a *testAPI) claude(auth anthropicoption.RequestOption) anthropicsdk.Client {
	return anthropicsdk.NewClient(anthropicoption.WithBaseURL(a.srv.URL), auth,
		anthropicoption.WithMaxRetries(0), anthropicoption.WithHTTPClient(a.srv.Client()))
}

func hello(text string) anthropicsdk.MessageNewParams {
	return anthropicsdk.MessageNewParams{Model: "test-model", MaxTokens: 100,
		System:   []anthropicsdk.TextBlockParam{{Text: "Be brief."}},
		Messages: []anthropicsdk.MessageParam{anthropicsdk.NewUserMessage(anthropicsdk.NewTextBlock(text))}}
}

var claudeWeatherTool = anthropicsdk.ToolUnionParam{OfTool: &anthropicsdk.ToolParam{Name: "get_weather", Description: anthropicsdk.String("The weather in a city"),
	InputSchema: anthropicsdk.ToolInputSchemaParam{Properties: map[string]any{"city": map[string]string{"type": "string"}}, Required: []string{"city"}}}}

func TestAnthropicSDKPlainAndStreamed(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	tok := a.user("claude@example.com")
	_, key := a.newKey(tok, "claude")
	ctx := context.Background()

	// x-api-key, as ANTHROPIC_API_KEY sends it.
	plain := a.claude(anthropicoption.WithAPIKey(key))
	msg, err := plain.Messages.New(ctx, hello("hi there"))
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text != "echo: hi there" ||
		msg.StopReason != "end_turn" || msg.Usage.InputTokens != 7 || msg.Usage.OutputTokens != 5 || msg.Model != "test-model" {
		t.Fatalf("message: %+v", msg)
	}
	sent := a.sentToUpstream()
	if gjson.GetBytes(sent, "messages.0.role").Str != "system" || gjson.GetBytes(sent, "messages.0.content").Str != "Be brief." ||
		gjson.GetBytes(sent, "max_tokens").Int() != 100 {
		t.Fatalf("sent upstream: %s", sent)
	}

	// A bearer token, as ANTHROPIC_AUTH_TOKEN sends it; streamed.
	bearer := a.claude(anthropicoption.WithAuthToken(key))
	stream := bearer.Messages.NewStreaming(ctx, hello("stream me"))
	var acc anthropicsdk.Message
	events := map[string]int{}
	for stream.Next() {
		ev := stream.Current()
		events[ev.Type]++
		if err := acc.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Content) != 1 || acc.Content[0].Text != "echo: stream me" || acc.StopReason != "end_turn" || acc.Usage.OutputTokens != 5 {
		t.Fatalf("streamed message: %+v", acc)
	}
	for _, want := range []string{"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"} {
		if events[want] == 0 {
			t.Errorf("no %s event (got %v)", want, events)
		}
	}

	count, err := plain.Messages.CountTokens(ctx, anthropicsdk.MessageCountTokensParams{Model: "test-model",
		Messages: []anthropicsdk.MessageParam{anthropicsdk.NewUserMessage(anthropicsdk.NewTextBlock(strings.Repeat("word ", 40)))}})
	if err != nil || count.InputTokens < 40 || count.InputTokens > 60 {
		t.Fatalf("count_tokens: %+v, %v; want about 50", count, err)
	}

	// Both calls were counted (count_tokens is not a call).
	testkit.Eventually(t, 5*time.Second, "usage of two calls", func() bool {
		r := a.do("GET", "/usage", tok, nil)
		return gjson.GetBytes(r.body, "totals.requests").Int() == 2 && gjson.GetBytes(r.body, "totals.total_tokens").Int() == 24
	})
}

func TestAnthropicSDKToolUse(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	_, key := a.newKey(a.user("tools@example.com"), "tools")
	c := a.claude(anthropicoption.WithAPIKey(key))
	ctx := context.Background()
	params := hello("weather in Paris?")
	params.Tools = []anthropicsdk.ToolUnionParam{claudeWeatherTool}

	msg, err := c.Messages.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.StopReason != "tool_use" || len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" || msg.Content[0].Name != "get_weather" ||
		gjson.GetBytes(msg.Content[0].Input, "city").Str != "Paris" || msg.Content[0].ID != "call_1" {
		t.Fatalf("tool use: %+v", msg)
	}
	sent := a.sentToUpstream()
	if gjson.GetBytes(sent, "tools.0.function.name").Str != "get_weather" || gjson.GetBytes(sent, "tools.0.function.parameters.required.0").Str != "city" {
		t.Fatalf("tools sent upstream: %s", sent)
	}

	// The streamed call gives the same tool call through input_json_delta.
	stream := c.Messages.NewStreaming(ctx, params)
	var acc anthropicsdk.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.StopReason != "tool_use" || len(acc.Content) != 1 || acc.Content[0].Name != "get_weather" || gjson.GetBytes(acc.Content[0].Input, "city").Str != "Paris" {
		t.Fatalf("streamed tool use: %+v", acc)
	}

	// The answer goes back as a tool_result; upstream it is a tool message
	// after the assistant's call.
	params.Messages = append(params.Messages, msg.ToParam(),
		anthropicsdk.NewUserMessage(anthropicsdk.NewToolResultBlock("call_1", "18°C, sunny", false)))
	if _, err := c.Messages.New(ctx, params); err != nil {
		t.Fatal(err)
	}
	sent = a.sentToUpstream()
	msgs := gjson.GetBytes(sent, "messages").Array()
	last := msgs[len(msgs)-1]
	prev := msgs[len(msgs)-2]
	if last.Get("role").Str != "tool" || last.Get("tool_call_id").Str != "call_1" || last.Get("content").Str != "18°C, sunny" ||
		prev.Get("role").Str != "assistant" || prev.Get("tool_calls.0.id").Str != "call_1" || prev.Get("tool_calls.0.function.name").Str != "get_weather" {
		t.Fatalf("conversation sent upstream: %s", sent)
	}
	var args map[string]string
	if json.Unmarshal([]byte(prev.Get("tool_calls.0.function.arguments").Str), &args) != nil || args["city"] != "Paris" {
		t.Fatalf("tool arguments sent upstream: %s", prev.Raw)
	}
}

func TestAnthropicSDKErrors(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 1})
	_, key := a.newKey(a.user("limited@example.com"), "limited")
	c := a.claude(anthropicoption.WithAPIKey(key))
	ctx := context.Background()
	if _, err := c.Messages.New(ctx, hello("one")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Messages.New(ctx, hello("two"))
	var apiErr *anthropicsdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || string(apiErr.Type()) != "rate_limit_error" {
		t.Fatalf("second call: %v, want a 429 rate_limit_error", err)
	}
	if apiErr.Response.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}

	for _, tc := range []struct {
		name, key, body string
		status          int
		typ             string
	}{
		{"bad key", "sk-nope", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, 401, "authentication_error"},
		{"no max_tokens", key, `{"model":"m","messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error"},
		{"bad role", key, `{"model":"m","max_tokens":5,"messages":[{"role":"robot","content":"x"}]}`, 400, "invalid_request_error"},
	} {
		r := a.do("POST", "/v1/messages", "", tc.body, "x-api-key", tc.key, "anthropic-version", "2023-06-01")
		if r.status != tc.status || gjson.GetBytes(r.body, "type").Str != "error" || gjson.GetBytes(r.body, "error.type").Str != tc.typ {
			t.Errorf("%s: %d %s, want %d %s in Anthropic's shape", tc.name, r.status, r.body, tc.status, tc.typ)
		}
	}
}
