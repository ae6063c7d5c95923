package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/tidwall/gjson"
)

// The rest of gateway.Provider for the provider that panics (api_test.go).

func (panicProvider) Stream(context.Context, []byte) (*llm.Stream, error) {
	panic("secret internal detail")
}

func (panicProvider) Embeddings(context.Context, []byte) (*llm.Response, error) {
	panic("secret internal detail")
}

func (panicProvider) Models(context.Context) ([]byte, error) { panic("secret internal detail") }

func lastMessage(body []byte) string {
	msgs := gjson.GetBytes(body, "messages").Array()
	if len(msgs) == 0 {
		return ""
	}
	return msgs[len(msgs)-1].Get("content").Str
}

// newKey creates an API key with the token and returns its id and secret.
func (a *testAPI) newKey(token, name string) (string, string) {
	a.t.Helper()
	r := a.do("POST", "/keys", token, map[string]string{"name": name})
	if r.status != 201 {
		a.t.Fatalf("create key: %d %s", r.status, r.body)
	}
	m := r.json(a.t)
	return m["id"].(string), m["key"].(string)
}

func (a *testAPI) userID(token string) string {
	a.t.Helper()
	c, err := a.tokens.Verify(token)
	if err != nil {
		a.t.Fatal(err)
	}
	return c.UserID
}

// sdk is the official OpenAI Go SDK pointed at our /v1 with key.
func (a *testAPI) sdk(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(a.srv.URL+"/v1"), option.WithAPIKey(key),
		option.WithMaxRetries(0), option.WithHTTPClient(a.srv.Client()))
}

// sentToUpstream is the body of the upstream's last request.
func (a *testAPI) sentToUpstream() []byte {
	body, _ := a.upstream.LastRequest()
	return body
}

func TestOpenAISDKAgainstGateway(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	tok := a.user("sdk@example.com")
	keyID, key := a.newKey(tok, "sdk")
	client := a.sdk(key)
	ctx := context.Background()

	page, err := client.Models.List(ctx)
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	if len(page.Data) != 2 || page.Data[0].ID != "up-model-1" {
		t.Fatalf("models = %+v, want the upstream's list", page.Data)
	}

	comp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello SDK")},
	})
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	if comp.Choices[0].Message.Content != "echo: Hello SDK" || comp.Usage.TotalTokens != 12 || comp.Model != "gpt-test" {
		t.Fatalf("completion = %q usage %+v model %q", comp.Choices[0].Message.Content, comp.Usage, comp.Model)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "gpt-test",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Stream me please")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	acc := openai.ChatCompletionAccumulator{}
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if acc.Choices[0].Message.Content != "echo: Stream me please" || acc.Usage.TotalTokens != 12 {
		t.Fatalf("streamed %q with usage %+v", acc.Choices[0].Message.Content, acc.Usage)
	}

	comp, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
			Name:       "get_weather",
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		})},
	})
	if err != nil {
		t.Fatalf("tool call: %v", err)
	}
	calls := comp.Choices[0].Message.ToolCalls
	if len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"Paris"}` || comp.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("tool calls = %+v", calls)
	}
	if tools := gjson.GetBytes(a.sentToUpstream(), "tools.0.function.name").Str; tools != "get_weather" {
		t.Fatalf("the upstream did not get the tools: %s", a.sentToUpstream())
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "emb-test",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed me")}})
	if err != nil || len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 2 || emb.Usage.PromptTokens != 3 {
		t.Fatalf("embeddings = %+v, %v", emb, err)
	}

	// Every call was counted for the key's owner, under the key.
	uid := a.userID(tok)
	waitFor(t, func() bool {
		n, _ := a.store.TokensUsed(ctx, uid, time.Now().Add(-time.Hour))
		return n == 12+12+30+3
	})

	if r := a.do("DELETE", "/keys/"+keyID, tok, nil); r.status != 204 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-test", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("still there?")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" || apiErr.Type != "authentication_error" {
		t.Fatalf("revoked key: %v (want the SDK's 401 error with code invalid_api_key)", err)
	}
}

// recordingUsage captures usage records instead of writing them.
type recordingUsage struct {
	mu   sync.Mutex
	recs []store.UsageRecord
}

func (u *recordingUsage) Record(_ context.Context, rec store.UsageRecord) error {
	u.mu.Lock()
	u.recs = append(u.recs, rec)
	u.mu.Unlock()
	return nil
}

func (u *recordingUsage) all() []store.UsageRecord {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]store.UsageRecord(nil), u.recs...)
}

func TestV1PassesBodiesThroughAndCaches(t *testing.T) {
	t.Parallel()
	rec := &recordingUsage{}
	a := newTestAPI(t, testOptions{capacity: 100, recorder: rec})
	tok := a.user("pass@example.com")
	keyID, key := a.newKey(tok, "k")
	body := `{"model":"gpt-x","messages":[{"role":"user","content":"hi"}],"temperature":0.25,"response_format":{"type":"json_object"},"x_vendor":{"a":[1,2]}}`
	r := a.do("POST", "/v1/chat/completions", key, body)
	if r.status != 200 || gjson.GetBytes(r.body, "choices.0.message.content").Str != "echo: hi" || r.header.Get("X-Cache") != "miss" {
		t.Fatalf("completion: %d %v %s", r.status, r.header, r.body)
	}
	if got := string(a.sentToUpstream()); got != body {
		t.Fatalf("upstream got %s, want the client's bytes unchanged", got)
	}
	// The same request laid out differently is the same request: a hit,
	// byte for byte the first answer, and no tokens.
	spaced := strings.ReplaceAll(strings.ReplaceAll(body, ",", ", "), ":", ": ")
	hit := a.do("POST", "/v1/chat/completions", key, spaced)
	if hit.status != 200 || string(hit.body) != string(r.body) || hit.header.Get("X-Cache") != "hit" || a.upstream.Calls() != 1 {
		t.Fatalf("repeat: %d %v calls %d", hit.status, hit.header, a.upstream.Calls())
	}
	// Cache-Control: no-cache goes to the model.
	a.do("POST", "/v1/chat/completions", key, body, "Cache-Control", "no-cache")
	if a.upstream.Calls() != 2 {
		t.Fatalf("no-cache was served from the cache")
	}
	// /chat's cache is separate even when the upstream request is identical.
	chatBody := `{"model":"test-model","messages":[{"role":"user","content":"same"}]}`
	a.do("POST", "/v1/chat/completions", key, chatBody)
	if r := a.do("POST", "/chat", key, map[string]string{"message": "same"}); r.json(t)["from_cache"] != false || r.json(t)["response"] != "echo: same" {
		t.Fatalf("/chat got /v1's cache entry: %s", r.body)
	}
	// Without a model, the default one is used.
	a.do("POST", "/v1/chat/completions", key, `{"messages":[{"role":"user","content":"default"}]}`)
	if m := gjson.GetBytes(a.sentToUpstream(), "model").Str; m != "test-model" {
		t.Fatalf("model sent upstream %q, want the default", m)
	}
	recs := rec.all()
	uid := a.userID(tok)
	if len(recs) != 5 {
		t.Fatalf("%d usage records, want 5 (hits count nothing): %+v", len(recs), recs)
	}
	for _, u := range recs {
		if u.UserID != uid || u.KeyID != keyID || u.PromptTokens != 7 || u.CompletionTokens != 5 || u.RequestID == "" {
			t.Errorf("usage record %+v", u)
		}
	}
	if recs[0].Model != "gpt-x" || recs[4].Model != "test-model" {
		t.Errorf("models recorded %q, %q", recs[0].Model, recs[4].Model)
	}
}

func TestV1ErrorsAreOpenAIShaped(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, maxBody: 4096, models: []string{"test-model", "other"}})
	tok := a.user("err@example.com")
	cases := []struct {
		name         string
		method, path string
		token        string
		body         any
		status       int
		typ, code    string
		param        string
	}{
		{"no credential", "POST", "/v1/chat/completions", "", `{}`, 401, "authentication_error", "invalid_api_key", ""},
		{"unknown key", "GET", "/v1/models", "sk-" + strings.Repeat("A", 43), nil, 401, "authentication_error", "invalid_api_key", ""},
		{"garbage token", "GET", "/v1/models", "nonsense", nil, 401, "authentication_error", "invalid_api_key", ""},
		{"malformed", "POST", "/v1/chat/completions", tok, `{"model": `, 400, "invalid_request_error", "", ""},
		{"not an object", "POST", "/v1/chat/completions", tok, `[1]`, 400, "invalid_request_error", "", ""},
		{"empty", "POST", "/v1/chat/completions", tok, ``, 400, "invalid_request_error", "", ""},
		{"model type", "POST", "/v1/chat/completions", tok, `{"model": 5}`, 400, "invalid_request_error", "", "model"},
		{"stream type", "POST", "/v1/chat/completions", tok, `{"model":"test-model","stream":"yes"}`, 400, "invalid_request_error", "", "stream"},
		{"max_tokens", "POST", "/v1/chat/completions", tok, `{"model":"test-model","max_tokens":-1}`, 400, "invalid_request_error", "", "max_tokens"},
		{"duplicate model", "POST", "/v1/chat/completions", tok, `{"model":"test-model","messages":[],"model":"expensive"}`, 400, "invalid_request_error", "", "model"},
		{"duplicate stream", "POST", "/v1/chat/completions", tok, `{"stream":false,"messages":[],"stream":true}`, 400, "invalid_request_error", "", "stream"},
		{"duplicate max_completion_tokens", "POST", "/v1/chat/completions", tok, `{"max_completion_tokens":1,"max_tokens":2,"max_completion_tokens":3}`, 400, "invalid_request_error", "", "max_completion_tokens"},
		{"model not allowed", "POST", "/v1/chat/completions", tok, `{"model":"expensive","messages":[]}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"embeddings model", "POST", "/v1/embeddings", tok, `{"input":"x"}`, 400, "invalid_request_error", "", "model"},
		{"too large", "POST", "/v1/chat/completions", tok, `{"model":"test-model","pad":"` + strings.Repeat("x", 5000) + `"}`, 413, "invalid_request_error", "", ""},
		{"unknown route", "GET", "/v1/nope", tok, nil, 404, "invalid_request_error", "", ""},
		{"wrong method", "DELETE", "/v1/models", tok, nil, 405, "invalid_request_error", "", ""},
		{"unknown model", "GET", "/v1/models/nope", tok, nil, 404, "invalid_request_error", "model_not_found", "model"},
	}
	for _, tc := range cases {
		r := a.do(tc.method, tc.path, tc.token, tc.body)
		var got openAIErrorBody
		if err := json.Unmarshal(r.body, &got); err != nil || r.status != tc.status || got.Error.Message == "" || got.Error.Type != tc.typ {
			t.Errorf("%s: %d %s", tc.name, r.status, r.body)
			continue
		}
		if code := deref(got.Error.Code); code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, code, tc.code)
		}
		if param := deref(got.Error.Param); param != tc.param {
			t.Errorf("%s: param %q, want %q", tc.name, param, tc.param)
		}
		if strings.Contains(string(r.body), `"path"`) {
			t.Errorf("%s: the prototype's error shape leaked into /v1: %s", tc.name, r.body)
		}
	}
	if a.upstream.Calls() != 0 {
		t.Fatalf("bad requests reached the upstream %d times", a.upstream.Calls())
	}

	// The upstream's own trouble.
	upstreamCases := []struct {
		name    string
		handler http.HandlerFunc
		status  int
		typ     string
		message string
	}{
		{"refused", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"message":"messages: field required","type":"invalid_request_error","param":"messages","code":null}}`)
		}, 400, "invalid_request_error", "messages: field required"},
		{"broken", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"boom at /srv/internal.py"}}`, 500)
		}, 502, "api_error", "(request id v1-broken)"},
		{"our key refused", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided: upstream-key-canary"}}`)
		}, 502, "api_error", "(request id v1-our key refused)"},
	}
	for _, tc := range upstreamCases {
		a.upstream.Handle(tc.handler)
		r := a.do("POST", "/v1/chat/completions", tok, `{"model":"test-model","messages":[{"role":"user","content":"x"}]}`,
			"X-Request-ID", "v1-"+strings.ReplaceAll(tc.name, " ", "-"))
		var got openAIErrorBody
		json.Unmarshal(r.body, &got)
		want := strings.ReplaceAll(tc.message, "v1-our key refused", "v1-our-key-refused")
		if r.status != tc.status || got.Error.Type != tc.typ || !strings.Contains(got.Error.Message, want) {
			t.Errorf("%s: %d %s", tc.name, r.status, r.body)
		}
		if strings.Contains(string(r.body), "internal.py") || strings.Contains(string(r.body), "upstream-key-canary") {
			t.Errorf("%s: leaks upstream internals: %s", tc.name, r.body)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestV1RateLimitShared(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 3})
	tok := a.user("rl@example.com")
	_, key1 := a.newKey(tok, "one")
	_, key2 := a.newKey(tok, "two")
	// One bucket per user, whatever the credential or endpoint.
	a.do("POST", "/chat", tok, map[string]string{"message": "1"})
	a.do("POST", "/v1/chat/completions", key1, `{"messages":[{"role":"user","content":"2"}]}`)
	a.do("POST", "/v1/embeddings", key2, `{"model":"e","input":"3"}`)
	r := a.do("POST", "/v1/chat/completions", key2, `{"messages":[{"role":"user","content":"4"}]}`)
	var got openAIErrorBody
	json.Unmarshal(r.body, &got)
	if r.status != 429 || deref(got.Error.Code) != "rate_limit_exceeded" || r.header.Get("Retry-After") == "" || !strings.Contains(got.Error.Message, "free") {
		t.Fatalf("fourth call: %d %v %s", r.status, r.header, r.body)
	}
	if r := a.do("POST", "/chat", key1, map[string]string{"message": "5"}); r.status != 429 || !strings.Contains(string(r.body), `"tier":"free"`) {
		t.Fatalf("/chat with a key after the bucket emptied: %d %s", r.status, r.body)
	}
}

func TestModelsAllowlist(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, models: []string{"test-model", "gpt-small", "org/model-x"}})
	tok := a.user("models@example.com")
	r := a.do("GET", "/v1/models", tok, nil)
	ids := gjson.GetBytes(r.body, "data.#.id").String()
	if r.status != 200 || ids != `["test-model","gpt-small","org/model-x"]` || gjson.GetBytes(r.body, "object").Str != "list" {
		t.Fatalf("models: %d %s", r.status, r.body)
	}
	// Model names with a slash (as many providers spell them) are one id.
	if r := a.do("GET", "/v1/models/org/model-x", tok, nil); r.status != 200 || gjson.GetBytes(r.body, "id").Str != "org/model-x" {
		t.Fatalf("model with a slash: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/v1/models/gpt-small", tok, nil); r.status != 200 || gjson.GetBytes(r.body, "id").Str != "gpt-small" {
		t.Fatalf("one model: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/chat", tok, map[string]string{"message": "x", "model": "gpt-large"}); r.status != 422 || !strings.Contains(string(r.body), `"field":"model"`) {
		t.Fatalf("/chat with a model not allowed: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/chat", tok, map[string]string{"message": "x", "model": "gpt-small"}); r.status != 200 {
		t.Fatalf("/chat with an allowed model: %d %s", r.status, r.body)
	}
	if n := a.upstream.Calls(); n != 1 {
		t.Fatalf("upstream calls %d: the allowlist was not checked first, or the model list was fetched", n)
	}
}

func TestModelListFromUpstreamIsKept(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("list@example.com")
	for range 3 {
		if r := a.do("GET", "/v1/models", tok, nil); r.status != 200 || gjson.GetBytes(r.body, "data.1.id").Str != "up-model-2" {
			t.Fatalf("models: %d %s", r.status, r.body)
		}
	}
	if n := a.upstream.Calls(); n != 1 {
		t.Fatalf("upstream asked %d times for its model list, want once a minute", n)
	}
}

// sseEvent is one server-sent event as a client sees it.
type sseEvent struct {
	name string
	data string
}

// readEvents parses an event stream until it ends or stop says so.
func readEvents(t *testing.T, body io.Reader, stop func(sseEvent) bool) []sseEvent {
	t.Helper()
	var out []sseEvent
	sc := bufio.NewScanner(body)
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data != "" || cur.name != "" {
				out = append(out, cur)
				if stop != nil && stop(cur) {
					return out
				}
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

// stream posts body and returns the open response.
func (a *testAPI) stream(ctx context.Context, path, token, body string) *http.Response {
	a.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", a.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp
}

func TestV1StreamHidesTheUsageChunkItAskedFor(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("hidden@example.com")
	resp := a.stream(context.Background(), "/v1/chat/completions", tok,
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"one two"}]}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	events := readEvents(t, resp.Body, nil)
	var text strings.Builder
	for _, e := range events {
		if gjson.Get(e.data, "usage").Exists() && gjson.Get(e.data, "usage").Type != gjson.Null {
			t.Errorf("the client did not ask for usage but got %s", e.data)
		}
		text.WriteString(gjson.Get(e.data, "choices.0.delta.content").Str)
	}
	if last := events[len(events)-1].data; last != "[DONE]" || text.String() != "echo: one two" {
		t.Fatalf("events %+v", events)
	}
	if !gjson.GetBytes(a.sentToUpstream(), "stream_options.include_usage").Bool() {
		t.Fatalf("usage not requested upstream: %s", a.sentToUpstream())
	}
	// The usage the client never saw was counted.
	uid := a.userID(tok)
	waitFor(t, func() bool {
		n, _ := a.store.TokensUsed(context.Background(), uid, time.Now().Add(-time.Hour))
		return n == 12
	})
}

func TestV1StreamPassesChunksAsTheyCome(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("live@example.com")
	release := make(chan struct{})
	a.upstream.SetGate(func(r *http.Request, i int) {
		if i == 1 {
			// Hold the rest until the client has the first word: if
			// the gateway buffered, the test would never get here.
			<-release
		}
	})
	resp := a.stream(context.Background(), "/v1/chat/completions", tok,
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"a b c"}]}`)
	defer resp.Body.Close()
	got := readEvents(t, resp.Body, func(e sseEvent) bool {
		return gjson.Get(e.data, "choices.0.delta.content").Str == "echo: "
	})
	close(release)
	rest := readEvents(t, resp.Body, nil)
	if len(got) != 2 || rest[len(rest)-1].data != "[DONE]" {
		t.Fatalf("before release %+v, after %+v", got, rest)
	}
}

func TestV1StreamClientDisconnectCancelsUpstreamAndCounts(t *testing.T) {
	t.Parallel()
	rec := &recordingUsage{}
	a := newTestAPI(t, testOptions{recorder: rec})
	tok := a.user("gone@example.com")
	a.upstream.SetGate(func(r *http.Request, i int) {
		if i == 2 {
			<-r.Context().Done() // generate forever, until cancelled
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	resp := a.stream(ctx, "/v1/chat/completions", tok,
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"never ending story"}]}`)
	readEvents(t, resp.Body, func(e sseEvent) bool {
		return gjson.Get(e.data, "choices.0.delta.content").Str == "never "
	})
	cancel()
	resp.Body.Close()
	testkit.Eventually(t, 5*time.Second, "the upstream call to be cancelled when the client left", func() bool { return a.upstream.Cancelled() == 1 })
	// No usage chunk came: the tokens so far are estimated and recorded.
	waitFor(t, func() bool { return len(rec.all()) == 1 })
	u := rec.all()[0]
	if u.CompletionTokens != llm.EstimateTokens("echo: never ") || u.PromptTokens <= 0 || u.Model != "m" {
		t.Fatalf("usage recorded %+v", u)
	}
}

func TestV1StreamUpstreamFailsMidway(t *testing.T) {
	t.Parallel()
	rec := &recordingUsage{}
	a := newTestAPI(t, testOptions{recorder: rec})
	tok := a.user("midway@example.com")
	_, key := a.newKey(tok, "k")
	a.upstream.SetGate(func(r *http.Request, i int) {
		if i == 2 {
			panic(http.ErrAbortHandler) // the connection drops mid-answer
		}
	})
	client := a.sdk(key)
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("cut me off")},
	})
	var text strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if stream.Err() == nil || !strings.Contains(stream.Err().Error(), "broke off") {
		t.Fatalf("SDK stream error = %v after %q; want the gateway's error event", stream.Err(), text.String())
	}
	if text.String() != "echo: cut " {
		t.Fatalf("text before the failure %q", text.String())
	}
	waitFor(t, func() bool { return len(rec.all()) == 1 })
	if u := rec.all()[0]; u.CompletionTokens != llm.EstimateTokens("echo: cut ") {
		t.Fatalf("usage %+v", u)
	}
}

func TestStreamRetriedBeforeFirstByte(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{routed: &llm.RouterOptions{BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond}})
	tok := a.user("retry@example.com")
	a.upstream.Handle(func(w http.ResponseWriter, r *http.Request) {
		if a.upstream.Calls() == 1 {
			// Drop the first connection without a word.
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		// A 503 to the second call; the fake itself answers the third.
		a.upstream.Handle(nil)
		w.WriteHeader(503)
	})
	resp := a.stream(context.Background(), "/v1/chat/completions", tok,
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"third time lucky"}]}`)
	defer resp.Body.Close()
	events := readEvents(t, resp.Body, nil)
	if resp.StatusCode != 200 || len(events) == 0 || events[len(events)-1].data != "[DONE]" || a.upstream.Calls() != 3 {
		t.Fatalf("%d, %d events after %d upstream calls", resp.StatusCode, len(events), a.upstream.Calls())
	}
}

func TestStreamStallBeforeFirstEventIs504(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{timeout: 200 * time.Millisecond, routed: &llm.RouterOptions{Timeout: 200 * time.Millisecond}})
	tok := a.user("stall@example.com")
	cancelled := make(chan struct{}, 1)
	a.upstream.Handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		cancelled <- struct{}{}
	})
	r := a.do("POST", "/v1/chat/completions", tok, `{"model":"m","stream":true,"messages":[]}`)
	if r.status != 504 || gjson.GetBytes(r.body, "error.type").Str != "api_error" {
		t.Fatalf("stalled stream: %d %s", r.status, r.body)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalled upstream call was not cancelled")
	}
}

func TestChatStream(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("chatstream@example.com")
	resp := a.stream(context.Background(), "/chat", tok, `{"message":"hello there","stream":true}`)
	defer resp.Body.Close()
	events := readEvents(t, resp.Body, nil)
	var text strings.Builder
	for _, e := range events[:len(events)-1] {
		if e.name != "delta" {
			t.Fatalf("event %+v, want only deltas before the end", e)
		}
		text.WriteString(gjson.Get(e.data, "content").Str)
	}
	done := events[len(events)-1]
	if text.String() != "echo: hello there" || done.name != "done" || gjson.Get(done.data, "tokens_used").Int() != 12 || gjson.Get(done.data, "from_cache").Bool() {
		t.Fatalf("text %q, last event %+v", text.String(), done)
	}
	sent := a.sentToUpstream()
	if !gjson.GetBytes(sent, "stream").Bool() || !gjson.GetBytes(sent, "stream_options.include_usage").Bool() || lastMessage(sent) != "hello there" {
		t.Fatalf("upstream request %s", sent)
	}
	uid := a.userID(tok)
	waitFor(t, func() bool {
		n, _ := a.store.TokensUsed(context.Background(), uid, time.Now().Add(-time.Hour))
		return n == 12
	})

	// Failing midway ends with an error event.
	a.upstream.SetGate(func(r *http.Request, i int) {
		if i == 1 {
			panic(http.ErrAbortHandler)
		}
	})
	resp2 := a.stream(context.Background(), "/chat", tok, `{"message":"fail","stream":true}`)
	defer resp2.Body.Close()
	events = readEvents(t, resp2.Body, nil)
	last := events[len(events)-1]
	if last.name != "error" || gjson.Get(last.data, "error").Str != "Upstream model failed" || gjson.Get(last.data, "request_id").Str == "" {
		t.Fatalf("events %+v", events)
	}
	// Errors before the stream starts are ordinary JSON errors.
	a.upstream.Handle(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	if r := a.do("POST", "/chat", tok, map[string]any{"message": "x", "stream": true}); r.status != 502 || r.json(t)["path"] != "/chat" {
		t.Fatalf("failure before the first event: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/chat", tok, map[string]any{"message": "x", "stream": "yes"}); r.status != 422 {
		t.Fatalf("stream of the wrong type: %d %s", r.status, r.body)
	}
}

func TestStreamWithMockProvider(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{provider: llm.NewMock()})
	tok := a.user("mock@example.com")
	resp := a.stream(context.Background(), "/v1/chat/completions", tok,
		`{"model":"mock-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	events := readEvents(t, resp.Body, nil)
	if events[len(events)-1].data != "[DONE]" {
		t.Fatalf("events %+v", events)
	}
	uid := a.userID(tok)
	waitFor(t, func() bool {
		n, _ := a.store.TokensUsed(context.Background(), uid, time.Now().Add(-time.Hour))
		return n > 0
	})
}

// TestStreamToAClientThatStopsReading checks the per-write deadline: a
// client that stops reading cannot hold a stream (and its upstream call)
// open, although the server has no overall write timeout.
func TestStreamToAClientThatStopsReading(t *testing.T) {
	t.Parallel()
	rec := &recordingUsage{}
	a := newTestAPI(t, testOptions{writeTimeout: 200 * time.Millisecond, recorder: rec})
	tok := a.user("stuck@example.com")
	cancelled := make(chan struct{})
	chunk := `data: {"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 32<<10) + `"}}]}` + "\n\n"
	a.upstream.Handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		// Far more than socket buffers hold: the gateway's writes to the
		// client must block, and the deadline must end them.
		for range 8192 {
			if _, err := io.WriteString(w, chunk); err != nil {
				break
			}
			http.NewResponseController(w).Flush()
		}
		<-r.Context().Done()
		close(cancelled)
	})
	resp := a.stream(context.Background(), "/v1/chat/completions", tok,
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"flood"}]}`)
	defer resp.Body.Close()
	// Read nothing more: the client is stuck.
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream call outlived a client that stopped reading")
	}
	waitFor(t, func() bool { return len(rec.all()) == 1 && rec.all()[0].CompletionTokens > 0 })
}
