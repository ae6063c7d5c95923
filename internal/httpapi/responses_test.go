package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/openai/openai-go/v3"
	oresponses "github.com/openai/openai-go/v3/responses"
	"github.com/tidwall/gjson"
)

// weatherTool is the Open Responses suite's function tool.
func weatherTool() oresponses.ToolUnionParam {
	return oresponses.ToolUnionParam{OfFunction: &oresponses.FunctionToolParam{
		Name:        "get_weather",
		Description: openai.String("Get the current weather for a location"),
		Parameters: map[string]any{"type": "object", "properties": map[string]any{
			"location": map[string]any{"type": "string"}}, "required": []string{"location"}},
		Strict: openai.Bool(false),
	}}
}

// toolOutput is a function_call_output input item.
func toolOutput(callID, output string) oresponses.ResponseInputItemUnionParam {
	it := oresponses.ResponseInputItemParamOfFunctionCallOutput(output)
	it.OfFunctionCallOutput.CallID = openai.String(callID)
	return it
}

func userInput(text string) oresponses.ResponseNewParamsInputUnion {
	return oresponses.ResponseNewParamsInputUnion{OfString: openai.String(text)}
}

// apiStatus is the HTTP status of an SDK error (0 when it is not one).
func apiStatus(err error) (int, *openai.Error) {
	var e *openai.Error
	if errors.As(err, &e) {
		return e.StatusCode, e
	}
	return 0, nil
}

func TestResponsesSDKPlainChainAndDelete(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, provider: llm.NewMock()})
	tok := a.user("resp@example.com")
	_, key := a.newKey(tok, "sdk")
	client := a.sdk(key)
	ctx := context.Background()

	first, err := client.Responses.New(ctx, oresponses.ResponseNewParams{
		Model: "mock-chat", Input: userInput("My name is Alice."), Instructions: openai.String("Be brief."),
		Metadata: map[string]string{"case": "plain"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != oresponses.ResponseStatusCompleted || first.OutputText() != "Mock reply: My name is Alice." ||
		!strings.HasPrefix(first.ID, "resp_") || first.Instructions.OfString != "Be brief." || first.Metadata["case"] != "plain" {
		t.Fatalf("first = %s", first.RawJSON())
	}
	if first.Usage.TotalTokens == 0 || first.Usage.TotalTokens != first.Usage.InputTokens+first.Usage.OutputTokens {
		t.Errorf("usage = %+v", first.Usage)
	}

	second, err := client.Responses.New(ctx, oresponses.ResponseNewParams{
		Model: "mock-chat", Input: userInput("What is my name?"), PreviousResponseID: openai.String(first.ID),
	})
	if err != nil {
		t.Fatal(err)
	}
	if second.PreviousResponseID != first.ID || second.OutputText() != "Mock reply: What is my name?" {
		t.Fatalf("second = %s", second.RawJSON())
	}
	// The first turn's input came along to the model: its prompt grew.
	if second.Usage.InputTokens <= first.Usage.InputTokens {
		t.Errorf("second turn's input tokens %d, first's %d: the chain was not sent", second.Usage.InputTokens, first.Usage.InputTokens)
	}

	got, err := client.Responses.Get(ctx, second.ID, oresponses.ResponseGetParams{})
	if err != nil || got.RawJSON() != second.RawJSON() {
		t.Fatalf("get = %v\n%s\nwant\n%s", err, got.RawJSON(), second.RawJSON())
	}
	page, err := client.Responses.InputItems.List(ctx, first.ID, oresponses.InputItemListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].Type != "message" || page.Data[0].Role != "user" ||
		gjson.Get(page.Data[0].RawJSON(), "content.0.text").Str != "My name is Alice." || page.Data[0].ID == "" || page.HasMore {
		t.Fatalf("input items = %v %+v", err, page)
	}

	if err := client.Responses.Delete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Responses.Get(ctx, first.ID, oresponses.ResponseGetParams{}); !isStatus(err, 404) {
		t.Errorf("get after delete: %v, want 404", err)
	}
	if err := client.Responses.Delete(ctx, first.ID); !isStatus(err, 404) {
		t.Errorf("second delete: %v, want 404", err)
	}
	_, err = client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "mock-chat", Input: userInput("again"), PreviousResponseID: openai.String(first.ID)})
	assertPreviousNotFound(t, "deleted", err)
}

func isStatus(err error, status int) bool {
	s, _ := apiStatus(err)
	return s == status
}

func assertPreviousNotFound(t *testing.T, what string, err error) {
	t.Helper()
	status, e := apiStatus(err)
	if status != 400 || e.Code != "previous_response_not_found" || e.Param != "previous_response_id" {
		t.Errorf("%s previous_response_id: %v, want 400 previous_response_not_found", what, err)
	}
}

func TestResponsesOwnershipFailsClosed(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, provider: llm.NewMock()})
	alice := a.sdk(a.user("alice-r@example.com"))
	bob := a.sdk(a.user("bob-r@example.com"))
	ctx := context.Background()
	r, err := alice.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("secret plans")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Responses.Get(ctx, r.ID, oresponses.ResponseGetParams{}); !isStatus(err, 404) {
		t.Errorf("bob reads alice's response: %v, want 404", err)
	}
	if _, err := bob.Responses.InputItems.List(ctx, r.ID, oresponses.InputItemListParams{}); !isStatus(err, 404) {
		t.Errorf("bob lists alice's input items: %v, want 404", err)
	}
	if err := bob.Responses.Delete(ctx, r.ID); !isStatus(err, 404) {
		t.Errorf("bob deletes alice's response: %v, want 404", err)
	}
	_, err = bob.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("tell me"), PreviousResponseID: openai.String(r.ID)})
	assertPreviousNotFound(t, "another user's", err)
	_, err = bob.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("x"), PreviousResponseID: openai.String("resp_unknown")})
	assertPreviousNotFound(t, "unknown", err)
	// Unknown ids and others' ids read alike.
	_, e1 := apiStatus(func() error { _, err := bob.Responses.Get(ctx, r.ID, oresponses.ResponseGetParams{}); return err }())
	_, e2 := apiStatus(func() error {
		_, err := bob.Responses.Get(ctx, "resp_nope", oresponses.ResponseGetParams{})
		return err
	}())
	if e1 == nil || e2 == nil || strings.Replace(e1.Message, r.ID, "X", 1) != strings.Replace(e2.Message, "resp_nope", "X", 1) {
		t.Errorf("404s differ: %v / %v", e1, e2)
	}
	// Alice still has it.
	if _, err := alice.Responses.Get(ctx, r.ID, oresponses.ResponseGetParams{}); err != nil {
		t.Errorf("alice's own read: %v", err)
	}
}

func TestResponsesStoreFalseWritesNothing(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, provider: llm.NewMock()})
	tok := a.user("nostore@example.com")
	client := a.sdk(tok)
	ctx := context.Background()
	r, err := client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("forget me"), Store: openai.Bool(false)})
	if err != nil || gjson.Get(r.RawJSON(), "store").Raw != "false" || r.Status != "completed" {
		t.Fatalf("store:false = %v %s", err, r.RawJSON())
	}
	if _, err := a.store.ResponseChain(ctx, a.userID(tok), r.ID, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("store:false response in the store: %v", err)
	}
	if _, err := client.Responses.Get(ctx, r.ID, oresponses.ResponseGetParams{}); !isStatus(err, 404) {
		t.Errorf("get store:false response: %v, want 404", err)
	}
	_, err = client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("x"), PreviousResponseID: openai.String(r.ID)})
	assertPreviousNotFound(t, "store:false", err)
}

func TestResponsesFunctionToolRoundTrip(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, provider: llm.NewMock()})
	client := a.sdk(a.user("tools@example.com"))
	ctx := context.Background()
	r, err := client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("Weather in San Francisco?"),
		Tools: []oresponses.ToolUnionParam{weatherTool()}})
	if err != nil {
		t.Fatal(err)
	}
	var call oresponses.ResponseFunctionToolCall
	for _, it := range r.Output {
		if it.Type == "function_call" {
			call = it.AsFunctionCall()
		}
	}
	if call.Name != "get_weather" || call.CallID == "" || !gjson.Valid(call.Arguments) || gjson.Get(call.Arguments, "location").Str == "" {
		t.Fatalf("function call = %+v in %s", call, r.RawJSON())
	}
	if tool := gjson.Get(r.RawJSON(), "tools.0"); tool.Get("strict").Raw != "false" || tool.Get("name").Str != "get_weather" {
		t.Errorf("echoed tool = %s", tool.Raw)
	}
	final, err := client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", PreviousResponseID: openai.String(r.ID),
		Tools: []oresponses.ToolUnionParam{weatherTool()},
		Input: oresponses.ResponseNewParamsInputUnion{OfInputItemList: oresponses.ResponseInputParam{
			toolOutput(call.CallID, `{"temperature":"18C"}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	if final.OutputText() != `Mock reply: the tool said: {"temperature":"18C"}` || final.Status != "completed" {
		t.Fatalf("final = %s", final.RawJSON())
	}
	// A tool output naming no call of the chain is refused before the model runs.
	_, err = client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "m", PreviousResponseID: openai.String(r.ID),
		Input: oresponses.ResponseNewParamsInputUnion{OfInputItemList: oresponses.ResponseInputParam{
			toolOutput("call_unknown", "x")}}})
	if status, e := apiStatus(err); status != 400 || e.Param != "input[0].call_id" {
		t.Errorf("unknown call_id: %v", err)
	}
}

func TestResponsesSDKStreamEqualsFinal(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, provider: llm.NewMock()})
	client := a.sdk(a.user("stream-r@example.com"))
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		tools []oresponses.ToolUnionParam
	}{{"text", nil}, {"tool call", []oresponses.ToolUnionParam{weatherTool()}}} {
		stream := client.Responses.NewStreaming(ctx, oresponses.ResponseNewParams{Model: "m", Input: userInput("Count from 1 to 5."), Tools: tc.tools})
		var (
			seq      int64 = -1
			text     strings.Builder
			args     strings.Builder
			done     = map[int64]string{}
			final    oresponses.Response
			terminal int
		)
		for stream.Next() {
			ev := stream.Current()
			if ev.SequenceNumber != seq+1 {
				t.Errorf("%s: sequence %d after %d", tc.name, ev.SequenceNumber, seq)
			}
			seq = ev.SequenceNumber
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.function_call_arguments.delta":
				args.WriteString(ev.Delta)
			case "response.output_item.done":
				done[ev.OutputIndex] = ev.Item.RawJSON()
			case "response.completed":
				final = ev.Response
				terminal++
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if terminal != 1 || final.Status != "completed" || len(final.Output) != len(done) {
			t.Fatalf("%s: final = %s (%d terminal events, %d items done)", tc.name, final.RawJSON(), terminal, len(done))
		}
		for i, it := range final.Output {
			if !jsonEqual(it.RawJSON(), done[int64(i)]) {
				t.Errorf("%s: item %d: output_item.done %s, final %s", tc.name, i, done[int64(i)], it.RawJSON())
			}
			if it.Type == "function_call" && it.Arguments.OfString != args.String() {
				t.Errorf("%s: streamed arguments %q, final %q", tc.name, args.String(), it.Arguments.OfString)
			}
		}
		if final.OutputText() != text.String() {
			t.Errorf("%s: streamed text %q, final %q", tc.name, text.String(), final.OutputText())
		}
		// Stored before the terminal event: readable at once, equal.
		got, err := client.Responses.Get(ctx, final.ID, oresponses.ResponseGetParams{})
		if err != nil || !jsonEqual(got.RawJSON(), final.RawJSON()) {
			t.Errorf("%s: stored %v %s, streamed %s", tc.name, err, got.RawJSON(), final.RawJSON())
		}
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func TestResponsesRefusesBadRequestsAndSpendsNothing(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 2, provider: llm.NewMock(), caps: TierCaps{"free": {MaxTokens: 100}}})
	tok := a.user("bad-r@example.com")
	for _, tc := range []struct {
		body, param string
	}{
		{`{"model":"m","input":"hi","conversation":"conv_1","previous_response_id":"resp_1"}`, "conversation"},
		{`{"model":"m","input":"hi","bogus":true}`, "bogus"},
		{`{"model":"m","input":"hi","max_output_tokens":101}`, "max_output_tokens"},
		{`{"model":"m","input":"hi","tools":[{"type":"file_search"}]}`, "tools[0].type"},
		{`{"model":"m","input":"hi","previous_response_id":"resp_x"}`, "previous_response_id"},
	} {
		r := a.do("POST", "/v1/responses", tok, tc.body)
		if r.status != 400 || gjson.GetBytes(r.body, "error.param").Str != tc.param {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, r.status, r.body, tc.param)
		}
	}
	// None of those spent a token of the bucket of 2.
	for i := range 2 {
		if r := a.do("POST", "/v1/responses", tok, `{"model":"m","input":"hi"}`); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	if r := a.do("POST", "/v1/responses", tok, `{"model":"m","input":"hi"}`); r.status != 429 {
		t.Errorf("third call: %d, want 429", r.status)
	}
	// Reads spend nothing.
	if r := a.do("GET", "/v1/responses/resp_x", tok, nil); r.status != 404 {
		t.Errorf("read after the bucket is empty: %d, want 404", r.status)
	}
}

func TestResponsesUsageRecorded(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	tok := a.user("usage-r@example.com")
	_, key := a.newKey(tok, "k")
	client := a.sdk(key)
	r, err := client.Responses.New(context.Background(), oresponses.ResponseNewParams{Model: "up-model", Input: userInput("count me")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Usage.InputTokens != 7 || r.Usage.OutputTokens != 5 || r.OutputText() != "echo: count me" {
		t.Fatalf("response = %s", r.RawJSON())
	}
	sent := a.sentToUpstream()
	if gjson.GetBytes(sent, "model").Str != "up-model" || gjson.GetBytes(sent, "messages.0.content").Str != "count me" {
		t.Errorf("upstream got %s", sent)
	}
	waitFor(t, func() bool {
		u := a.do("GET", "/usage", tok, nil)
		return gjson.GetBytes(u.body, "totals.total_tokens").Int() == 12 && gjson.GetBytes(u.body, "days.0.model").Str == "up-model"
	})
}

func TestResponsesDisconnectStoresIncomplete(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	released := make(chan struct{})
	a.upstream.SetGate(func(r *http.Request, i int) {
		if i == 2 {
			<-r.Context().Done() // hold the stream until we are cancelled
			close(released)
		}
	})
	tok := a.user("cut@example.com")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", a.srv.URL+"/v1/responses",
		strings.NewReader(`{"model":"up","input":"one two three four","stream":true}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	var id string
	deltas := 0
	for sc.Scan() && deltas < 2 {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if v := gjson.Get(data, "response.id"); v.Exists() && id == "" {
			id = v.Str
		}
		if gjson.Get(data, "type").Str == "response.output_text.delta" {
			deltas++
		}
	}
	cancel()
	resp.Body.Close()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream call was not cancelled when the client left")
	}
	var got result
	waitFor(t, func() bool {
		got = a.do("GET", "/v1/responses/"+id, tok, nil)
		return got.status == 200
	})
	if gjson.GetBytes(got.body, "status").Str != "incomplete" || gjson.GetBytes(got.body, "incomplete_details.reason").Str != "interrupted" ||
		gjson.GetBytes(got.body, "usage.total_tokens").Int() == 0 || gjson.GetBytes(got.body, "output.0.content.0.text").Str != "echo: one " {
		t.Errorf("stored after disconnect: %s", got.body)
	}
	// The tokens spent before the cut are counted.
	waitFor(t, func() bool {
		u := a.do("GET", "/usage", tok, nil)
		return gjson.GetBytes(u.body, "totals.total_tokens").Int() == gjson.GetBytes(got.body, "usage.total_tokens").Int()
	})
}
