package fakeopenai_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

func sdk(s *fakeopenai.Server, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(s.URL+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func params(message string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: "gpt-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(message)}}
}

// stream reads a whole streamed answer through the SDK's accumulator.
func stream(t *testing.T, c openai.Client, p openai.ChatCompletionNewParams) (openai.ChatCompletionAccumulator, error) {
	t.Helper()
	s := c.Chat.Completions.NewStreaming(context.Background(), p)
	acc := openai.ChatCompletionAccumulator{}
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	return acc, s.Err()
}

// TestOfficialSDKReadsEveryAnswer: the official SDK decodes the fake's
// plain and streamed answers, text and tool calls, its model list and its
// embeddings, and is refused without the key.
func TestOfficialSDKReadsEveryAnswer(t *testing.T) {
	t.Parallel()
	calls := []fakeopenai.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}
	up := fakeopenai.New(t, fakeopenai.Options{Key: "sk-test", Models: []string{"m1", "m2"}, UsageNull: true,
		Respond: func(r fakeopenai.Request) fakeopenai.Answer {
			if strings.Contains(r.LastMessage(), "weather") {
				return fakeopenai.Answer{ToolCalls: calls, Usage: fakeopenai.Usage{Prompt: 10, Completion: 5}}
			}
			return fakeopenai.Answer{Text: "echo: " + r.LastMessage()}
		}})
	c := sdk(up, "sk-test")
	ctx := context.Background()

	comp, err := c.Chat.Completions.New(ctx, params("hello there"))
	if err != nil || comp.Choices[0].Message.Content != "echo: hello there" || comp.Usage.TotalTokens != 7 || comp.Model != "gpt-test" {
		t.Fatalf("plain: %+v, %v", comp, err)
	}
	p := params("stream me")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	acc, err := stream(t, c, p)
	if err != nil || acc.Choices[0].Message.Content != "echo: stream me" || acc.Usage.TotalTokens != 7 {
		t.Fatalf("stream: %q usage %+v, %v", acc.Choices[0].Message.Content, acc.Usage, err)
	}

	comp, err = c.Chat.Completions.New(ctx, params("weather in Paris?"))
	if err != nil || comp.Choices[0].FinishReason != "tool_calls" || len(comp.Choices[0].Message.ToolCalls) != 1 ||
		comp.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || comp.Usage.TotalTokens != 15 {
		t.Fatalf("plain tool call: %+v, %v", comp, err)
	}
	acc, err = stream(t, c, params("weather in Paris?"))
	if err != nil || len(acc.Choices) != 1 || len(acc.Choices[0].Message.ToolCalls) != 1 {
		t.Fatalf("streamed tool call: %+v, %v", acc.Choices, err)
	}
	if tc := acc.Choices[0].Message.ToolCalls[0]; tc.ID != "call_1" || tc.Function.Name != "get_weather" || tc.Function.Arguments != `{"city":"Paris"}` || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed tool call: %+v finish %q", tc, acc.Choices[0].FinishReason)
	}

	page, err := c.Models.List(ctx)
	if err != nil || len(page.Data) != 2 || page.Data[1].ID != "m2" {
		t.Fatalf("models: %+v, %v", page, err)
	}
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "emb",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}}})
	if err != nil || len(emb.Data) != 2 || len(emb.Data[1].Embedding) == 0 || emb.Usage.PromptTokens == 0 {
		t.Fatalf("embeddings: %+v, %v", emb, err)
	}
	if up.Calls() != 6 || up.CallsOf("gpt-test") != 4 {
		t.Errorf("calls %d, of gpt-test %d; want 6 (every request) and 4 (chats)", up.Calls(), up.CallsOf("gpt-test"))
	}

	wrong := sdk(up, "sk-wrong")
	_, err = wrong.Chat.Completions.New(ctx, params("hi"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
		t.Fatalf("wrong key: %v", err)
	}
}

// TestFaults plays each fault to the SDK, asked for by a marker.
func TestFaults(t *testing.T) {
	t.Parallel()
	up := fakeopenai.New(t, fakeopenai.Options{SlowGap: time.Millisecond, SlowDelay: time.Millisecond})
	c := sdk(up, "")
	ctx := context.Background()
	var apiErr *openai.Error

	_, err := c.Chat.Completions.New(ctx, params("x "+fakeopenai.Status500.Marker()))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 {
		t.Errorf("500: %v", err)
	}
	_, err = c.Chat.Completions.New(ctx, params("x "+fakeopenai.Status429.Marker()))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Response.Header.Get("Retry-After") != "1" {
		t.Errorf("429: %v", err)
	}
	if _, err := c.Chat.Completions.New(ctx, params("x "+fakeopenai.Cut.Marker())); err == nil {
		t.Error("cut plain answer decoded")
	}
	if acc, err := stream(t, c, params("x "+fakeopenai.Cut.Marker())); err == nil && acc.Usage.TotalTokens != 0 {
		t.Errorf("cut stream ended normally: %+v", acc)
	}
	acc, err := stream(t, c, params("x "+fakeopenai.Slow.Marker()))
	if err != nil || acc.Choices[0].Message.Content != "one two threeone two three" {
		t.Errorf("slow stream: %q, %v", acc.Choices[0].Message.Content, err)
	}

	hung, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.Chat.Completions.New(hung, openai.ChatCompletionNewParams{Model: "hung",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fakeopenai.Hang.Marker())}})
		done <- err
	}()
	testkit.Eventually(t, 5*time.Second, "the hung call to arrive", func() bool { return up.CallsOf("hung") == 1 })
	cancel()
	if err := testkit.Await(t, done, 5*time.Second, "the hung call to end"); err == nil {
		t.Error("hung call answered")
	}
	testkit.Eventually(t, 5*time.Second, "the hang to see its caller leave", func() bool { return up.CancelledOf("hung") == 1 })
}

// TestHeldStreamWaitsForRelease: a held stream sends its first chunk and
// the rest only after Release.
func TestHeldStreamWaitsForRelease(t *testing.T) {
	t.Parallel()
	up := fakeopenai.New(t, fakeopenai.Options{Respond: func(fakeopenai.Request) fakeopenai.Answer {
		return fakeopenai.Answer{Fault: fakeopenai.Held}
	}})
	resp, err := http.Post(up.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 4096)
	n, err := resp.Body.Read(first)
	if err != nil || !strings.Contains(string(first[:n]), `"content":"one "`) || strings.Contains(string(first[:n]), "[DONE]") {
		t.Fatalf("first read: %q, %v", first[:n], err)
	}
	up.Release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(rest), `"content":"three"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("after release: %q, %v", rest, err)
	}
}

// TestFaultMarkers: each fault's marker is found in a body, and an
// unknown one asks for none.
func TestFaultMarkers(t *testing.T) {
	for f := fakeopenai.None; f < fakeopenai.NumFaults; f++ {
		body := []byte(`{"messages":[{"content":"hello ` + f.Marker() + ` there"}]}`)
		if f == fakeopenai.None {
			body = []byte(`{"messages":[{"content":"hello [fault:nonsense] there"}]}`)
		}
		if got := fakeopenai.FaultIn(body); got != f {
			t.Errorf("FaultIn(%s) = %s, want %s", body, got, f)
		}
	}
}

// TestStreamShapeAndHandle: with the stream options OpenAI's own streams
// have, the role comes first and usage only when asked for; Handle
// answers instead of the fake while the fake still counts and records.
func TestStreamShapeAndHandle(t *testing.T) {
	t.Parallel()
	up := fakeopenai.New(t, fakeopenai.Options{RoleChunk: true, UsageWhenAsked: true, Record: true})
	post := func(body string) string {
		resp, err := http.Post(up.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	plain := post(`{"model":"m","stream":true}`)
	if !strings.HasPrefix(plain, `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1735689600,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}`) ||
		strings.Contains(plain, `"usage"`) || !strings.HasSuffix(plain, "data: [DONE]\n\n") {
		t.Errorf("stream without include_usage: %s", plain)
	}
	if asked := post(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`); !strings.Contains(asked, `"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`) {
		t.Errorf("stream with include_usage: %s", asked)
	}
	up.Handle(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(append([]byte("raw:"), b...))
	})
	if got := post(`{"x":1}`); got != `raw:{"x":1}` {
		t.Errorf("handled: %q", got)
	}
	if body, h := up.LastRequest(); string(body) != `{"x":1}` || h.Get("Content-Type") != "application/json" || up.Calls() != 3 {
		t.Errorf("last request %q %v, calls %d", body, h, up.Calls())
	}
}
