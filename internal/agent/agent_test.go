package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/tidwall/gjson"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/agentapi/agentapi/internal/tier"
)

// toolServer is a real MCP server (the official SDK's) with test tools,
// served over Streamable HTTP on loopback.
type toolServer struct {
	url       string
	calls     sync.Map // tool → *atomic.Int64
	started   chan string
	cancelled atomic.Int64
}

func (ts *toolServer) count(tool string) int64 {
	v, _ := ts.calls.LoadOrStore(tool, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (ts *toolServer) hit(tool string) {
	v, _ := ts.calls.LoadOrStore(tool, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	select {
	case ts.started <- tool:
	default:
	}
}

type echoIn struct {
	Text string `json:"text"`
}

func startToolServer(t *testing.T) *toolServer {
	t.Helper()
	ts := &toolServer{started: make(chan string, 16)}
	s := mcp.NewServer(&mcp.Implementation{Name: "test-tools", Version: "1"}, nil)
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes text"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		ts.hit("echo")
		return text("echo: " + in.Text), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "secret", Description: "must not be reachable when not allowed"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		ts.hit("secret")
		return text("secret"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "hang", Description: "never answers"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		ts.hit("hang")
		<-ctx.Done()
		ts.cancelled.Add(1)
		return nil, nil, ctx.Err()
	})
	mcp.AddTool(s, &mcp.Tool{Name: "big", Description: "a large answer"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		ts.hit("big")
		return text(strings.Repeat("x", 1000)), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "answers with a tool error"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		ts.hit("fail")
		return nil, nil, errors.New("the widget is broken")
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{PropagateRequestCancellation: true}))
	t.Cleanup(srv.Close)
	ts.url = srv.URL
	return ts
}

// sdkTools is Tools over the SDK's Streamable HTTP client: one session
// per server label.
type sdkTools struct {
	sessions map[string]*mcp.ClientSession
}

func connectTools(t *testing.T, servers map[string]string) *sdkTools {
	t.Helper()
	st := &sdkTools{sessions: map[string]*mcp.ClientSession{}}
	for label, url := range servers {
		c := mcp.NewClient(&mcp.Implementation{Name: "agent-test", Version: "1"}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.Close() })
		st.sessions[label] = cs
	}
	return st
}

func (st *sdkTools) ListTools(ctx context.Context, server string) ([]Tool, error) {
	res, err := st.sessions[server].ListTools(ctx, nil)
	if err != nil {
		return nil, err
	}
	var out []Tool
	for _, tl := range res.Tools {
		schema, _ := json.Marshal(tl.InputSchema)
		out = append(out, Tool{Name: tl.Name, Description: tl.Description, InputSchema: schema})
	}
	return out, nil
}

func (st *sdkTools) CallTool(ctx context.Context, server, tool string, args json.RawMessage) (Result, error) {
	res, err := st.sessions[server].CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return Result{}, err
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return Result{Output: b.String(), IsError: res.IsError, Bytes: b.Len()}, nil
}

type records struct {
	mu     sync.Mutex
	tokens int64
	n      int
}

func (r *records) Record(_ context.Context, rec store.UsageRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens += rec.PromptTokens + rec.CompletionTokens
	r.n++
	return nil
}

type harness struct {
	gw    *gateway.Gateway
	fake  *fakeopenai.Server
	usage *records
	ts    *toolServer
	tools *sdkTools
}

// newHarness runs a gateway over the fake upstream whose answers respond
// chooses, and the test tool server as label "t".
func newHarness(t *testing.T, respond func(fakeopenai.Request) fakeopenai.Answer) *harness {
	t.Helper()
	h := &harness{usage: &records{}, ts: startToolServer(t)}
	h.fake = fakeopenai.New(t, fakeopenai.Options{Respond: respond, Record: true})
	client, err := llm.NewClient(llm.Options{BaseURL: h.fake.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	tiers, err := tier.New(tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 1}})
	if err != nil {
		t.Fatal(err)
	}
	h.gw = gateway.New(gateway.Options{Provider: client, Admitter: admission.Sequential{Limiter: ratelimit.NewMemory(100)},
		Tiers: tiers, Usage: h.usage, DefaultModel: "gpt-test"})
	h.tools = connectTools(t, map[string]string{"t": h.ts.url})
	return h
}

// lastIsTool reports whether the request's last message is a tool's
// answer (the model has seen a tool result).
func lastIsTool(r fakeopenai.Request) bool {
	return gjson.GetBytes(r.Body, "messages.@reverse.0.role").String() == "tool"
}

// callThenAnswer asks for tool with args once, then answers with what the
// tool said.
func callThenAnswer(tool, args string) func(fakeopenai.Request) fakeopenai.Answer {
	return func(r fakeopenai.Request) fakeopenai.Answer {
		if lastIsTool(r) {
			return fakeopenai.Answer{Text: "The tool said: " + r.LastMessage(), Usage: fakeopenai.Usage{Prompt: 20, Completion: 7}}
		}
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{{ID: "call_1", Name: tool, Arguments: args}},
			Usage: fakeopenai.Usage{Prompt: 10, Completion: 5}}
	}
}

type runOpts struct {
	stream       bool
	servers      []Server
	limits       Limits
	maxToolCalls int
	input        []responses.Item
	history      []responses.Item
	ctx          context.Context
	emit         func([]responses.Event) error
}

func (h *harness) run(t *testing.T, o runOpts) (*responses.Response, Outcome, []responses.Event, error) {
	t.Helper()
	if o.servers == nil {
		o.servers = []Server{{Label: "t", Approval: responses.Approval{Set: true, Mode: "never"}}}
	}
	if o.maxToolCalls == 0 {
		o.maxToolCalls = 10
	}
	if o.input == nil {
		o.input = []responses.Item{{Type: responses.TypeMessage, Role: "user", Content: []responses.Part{{Type: responses.PartInputText, Text: "hello"}}}}
	}
	if o.ctx == nil {
		o.ctx = context.Background()
	}
	req := &responses.Request{Input: o.input, Store: true, Stream: o.stream}
	resp := responses.NewResponse(req, responses.NewID("resp"), "gpt-test", time.Now())
	tr := responses.NewTranslator(resp)
	var mu sync.Mutex
	var events []responses.Event
	emit := func(ev []responses.Event) error {
		mu.Lock()
		events = append(events, ev...)
		mu.Unlock()
		if o.emit != nil {
			return o.emit(ev)
		}
		return nil
	}
	loop := New(Options{Gateway: h.gw, Limits: o.limits})
	out, err := loop.Run(o.ctx, Run{Principal: gateway.Principal{UserID: "u1", Tier: tier.Free}, RequestID: "req-1",
		Request: req, History: o.history, Chat: responses.ChatOptions{Model: "gpt-test", Stream: o.stream},
		Translator: tr, Servers: o.servers, Tools: h.tools, MaxToolCalls: o.maxToolCalls, Emit: emit})
	mu.Lock()
	defer mu.Unlock()
	return resp, out, events, err
}

func types(items []responses.Item) string {
	var s []string
	for _, it := range items {
		s = append(s, it.Type)
	}
	return strings.Join(s, ",")
}

func TestTwoStepLoop(t *testing.T) {
	t.Parallel()
	for _, stream := range []bool{false, true} {
		name := "plain"
		if stream {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, callThenAnswer("echo", `{"text":"hi"}`))
			resp, out, events, err := h.run(t, runOpts{stream: stream})
			if err != nil {
				t.Fatal(err)
			}
			if got := types(resp.Output); got != "mcp_list_tools,mcp_call,message" {
				t.Fatalf("output %s", got)
			}
			list, call := resp.Output[0], resp.Output[1]
			if list.ServerLabel != "t" || len(list.Tools) != 5 || list.Error != nil {
				t.Errorf("list %+v", list)
			}
			if call.Name != "echo" || call.Output != "echo: hi" || call.Error != nil || call.Status != responses.StatusCompleted || call.Arguments != `{"text":"hi"}` {
				t.Errorf("call %+v", call)
			}
			if txt := resp.OutputText(); txt != "The tool said: echo: hi" {
				t.Errorf("answer %q", txt)
			}
			if resp.Status != responses.StatusCompleted || out.Turns != 2 || out.ToolCalls != 1 {
				t.Errorf("status %s turns %d calls %d", resp.Status, out.Turns, out.ToolCalls)
			}
			// Usage is the sum of both turns, in the response and in
			// what the gateway recorded.
			if resp.Usage.TotalTokens != 42 || resp.Usage.InputTokens != 30 || resp.Usage.OutputTokens != 12 {
				t.Errorf("usage %+v", resp.Usage)
			}
			if h.usage.tokens != 42 || h.usage.n != 2 {
				t.Errorf("recorded %d tokens in %d records", h.usage.tokens, h.usage.n)
			}
			if h.ts.count("echo") != 1 || h.fake.Calls() != 2 {
				t.Errorf("echo calls %d, model calls %d", h.ts.count("echo"), h.fake.Calls())
			}
			if stream {
				var seen []string
				for _, ev := range events {
					seen = append(seen, ev.Type)
				}
				want := []string{"response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
					"response.output_item.done", "response.output_item.added", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
					"response.mcp_call.in_progress", "response.mcp_call.completed", "response.output_item.done", "response.output_item.added",
					"response.content_part.added"}
				if got := strings.Join(seen, " "); !strings.HasPrefix(got, strings.Join(want, " ")) {
					t.Errorf("events\n%s\nwant prefix\n%s", got, strings.Join(want, " "))
				}
				for i, ev := range events {
					if seq := gjson.GetBytes(ev.Data, "sequence_number").Int(); seq != int64(i) {
						t.Fatalf("event %d has sequence_number %d", i, seq)
					}
				}
			}
		})
	}
}

func TestToolErrorReachesTheModel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, callThenAnswer("fail", `{}`))
	resp, _, _, err := h.run(t, runOpts{})
	if err != nil {
		t.Fatal(err)
	}
	call := resp.Output[1]
	if call.Error == nil || !strings.Contains(*call.Error, "the widget is broken") || call.Status != responses.StatusFailed {
		t.Fatalf("call %+v", call)
	}
	body, _ := h.fake.LastRequest()
	if got := gjson.GetBytes(body, "messages.@reverse.0.content").String(); !strings.Contains(got, "Error:") || !strings.Contains(got, "the widget is broken") {
		t.Errorf("the model saw %q", got)
	}
	if resp.Status != responses.StatusCompleted {
		t.Errorf("status %s", resp.Status)
	}
}

func TestAllowedToolsEnforced(t *testing.T) {
	t.Parallel()
	h := newHarness(t, callThenAnswer("secret", `{}`))
	resp, _, _, err := h.run(t, runOpts{servers: []Server{{Label: "t", AllowedTools: []string{"echo"}, Approval: responses.Approval{Mode: "never"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Output[0].Tools); n != 1 || resp.Output[0].Tools[0].Name != "echo" {
		t.Errorf("listed %+v", resp.Output[0].Tools)
	}
	body, _ := h.fake.LastRequest()
	if names := gjson.GetBytes(body, "tools.#.function.name").String(); names != `["echo"]` {
		t.Errorf("offered %s", names)
	}
	// The model's call of a tool it was not offered is not run: it goes
	// back to the client as a function call.
	if h.ts.count("secret") != 0 {
		t.Errorf("secret was called")
	}
	if got := types(resp.Output); got != "mcp_list_tools,function_call" {
		t.Errorf("output %s", got)
	}
}

func TestHungToolHitsCallTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, callThenAnswer("hang", `{}`))
	resp, out, _, err := h.run(t, runOpts{limits: Limits{CallTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	call := resp.Output[1]
	if call.Error == nil || !strings.Contains(*call.Error, "did not answer within 300ms") {
		t.Fatalf("call %+v", call)
	}
	if resp.Status != responses.StatusCompleted || out.Turns != 2 {
		t.Errorf("status %s after %d turns", resp.Status, out.Turns)
	}
	testkit.Eventually(t, 5*time.Second, "the hung tool is cancelled", func() bool { return h.ts.cancelled.Load() == 1 })
}

func TestTurnCap(t *testing.T) {
	t.Parallel()
	// A model that never stops asking.
	h := newHarness(t, func(fakeopenai.Request) fakeopenai.Answer {
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{{ID: "c", Name: "echo", Arguments: `{"text":"again"}`}}}
	})
	resp, out, _, err := h.run(t, runOpts{limits: Limits{MaxTurns: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != responses.StatusIncomplete || resp.IncompleteDetails == nil || resp.IncompleteDetails.Reason != ReasonMaxTurns {
		t.Fatalf("status %s %+v", resp.Status, resp.IncompleteDetails)
	}
	if out.Turns != 3 || h.fake.Calls() != 3 || h.ts.count("echo") != 3 {
		t.Errorf("turns %d, model calls %d, tool calls %d", out.Turns, h.fake.Calls(), h.ts.count("echo"))
	}
	if got := types(resp.Output); got != "mcp_list_tools,mcp_call,mcp_call,mcp_call" {
		t.Errorf("output %s", got)
	}
}

func TestMaxToolCalls(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(fakeopenai.Request) fakeopenai.Answer {
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{
			{ID: "c1", Name: "echo", Arguments: `{"text":"1"}`}, {ID: "c2", Name: "echo", Arguments: `{"text":"2"}`}}}
	})
	resp, out, _, err := h.run(t, runOpts{maxToolCalls: 1})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != responses.StatusIncomplete || resp.IncompleteDetails.Reason != ReasonMaxToolCalls {
		t.Fatalf("status %s %+v", resp.Status, resp.IncompleteDetails)
	}
	if out.ToolCalls != 1 || h.ts.count("echo") != 1 {
		t.Errorf("calls %d / %d", out.ToolCalls, h.ts.count("echo"))
	}
	second := resp.Output[2]
	if second.Status != responses.StatusIncomplete || second.Error == nil {
		t.Errorf("second call %+v", second)
	}
}

func TestOutputCap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(fakeopenai.Request) fakeopenai.Answer {
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{{ID: "c", Name: "big", Arguments: `{}`}}}
	})
	resp, _, _, err := h.run(t, runOpts{limits: Limits{MaxOutputBytes: 100}})
	if err != nil {
		t.Fatal(err)
	}
	first := resp.Output[1]
	if !strings.HasPrefix(first.Output, strings.Repeat("x", 100)+"\n[output truncated: 100 of 1000 bytes]") {
		t.Errorf("first output %q", first.Output)
	}
	if resp.Status != responses.StatusIncomplete || resp.IncompleteDetails.Reason != ReasonMaxToolOutput {
		t.Fatalf("status %s %+v", resp.Status, resp.IncompleteDetails)
	}
	if h.ts.count("big") != 1 {
		t.Errorf("big called %d times", h.ts.count("big"))
	}
}

func TestDisconnectCancelsToolCall(t *testing.T) {
	t.Parallel()
	h := newHarness(t, callThenAnswer("hang", `{}`))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// The client leaves once the tool is running.
		for tool := range h.ts.started {
			if tool == "hang" {
				cancel()
				return
			}
		}
	}()
	resp, out, _, err := h.run(t, runOpts{ctx: ctx, stream: true, limits: Limits{CallTimeout: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Cut || resp.Status != responses.StatusIncomplete || resp.IncompleteDetails.Reason != "interrupted" {
		t.Errorf("cut %v status %s %+v", out.Cut, resp.Status, resp.IncompleteDetails)
	}
	testkit.Eventually(t, 5*time.Second, "the tool call is cancelled on the server", func() bool { return h.ts.cancelled.Load() == 1 })
	if h.fake.Calls() != 1 {
		t.Errorf("model calls %d after the client left", h.fake.Calls())
	}
}

func TestApproval(t *testing.T) {
	t.Parallel()
	h := newHarness(t, callThenAnswer("echo", `{"text":"ok?"}`))
	always := []Server{{Label: "t", Approval: responses.Approval{Set: true, Mode: "always"}}}
	first, _, _, err := h.run(t, runOpts{servers: always})
	if err != nil {
		t.Fatal(err)
	}
	if got := types(first.Output); got != "mcp_list_tools,mcp_approval_request" || first.Status != responses.StatusCompleted {
		t.Fatalf("output %s status %s", got, first.Status)
	}
	if h.ts.count("echo") != 0 {
		t.Fatal("the tool ran before approval")
	}
	ask := first.Output[1]
	history := responses.History([]responses.Item{{Type: responses.TypeMessage, Role: "user", Content: []responses.Part{{Type: responses.PartInputText, Text: "hello"}}}}, first)

	for _, approve := range []bool{true, false} {
		input := []responses.Item{{Type: responses.TypeMCPApprovalResponse, ID: "mcpa_1", ApprovalRequestID: ask.ID, Approve: approve, Reason: "not today"}}
		req := &responses.Request{Input: input}
		if err := CheckApprovals(req, history); err != nil {
			t.Fatal(err)
		}
		before := h.ts.count("echo")
		second, _, _, err := h.run(t, runOpts{servers: always, history: history, input: input})
		if err != nil {
			t.Fatal(err)
		}
		// The stored list is reused: no second mcp_list_tools.
		if got := types(second.Output); got != "mcp_call,message" {
			t.Fatalf("approve=%v: output %s", approve, got)
		}
		call := second.Output[0]
		if call.ApprovalRequestID != ask.ID {
			t.Errorf("approval_request_id %q", call.ApprovalRequestID)
		}
		ran := h.ts.count("echo") - before
		if approve && (ran != 1 || call.Output != "echo: ok?") {
			t.Errorf("approved: ran %d, call %+v", ran, call)
		}
		if !approve && (ran != 0 || call.Error == nil || !strings.Contains(*call.Error, "denied") || !strings.Contains(*call.Error, "not today")) {
			t.Errorf("denied: ran %d, call %+v", ran, call)
		}
		// An answered request cannot be answered again.
		again := responses.History(append(append([]responses.Item(nil), history...), input...), second)
		if err := CheckApprovals(&responses.Request{Input: input}, again); err == nil {
			t.Errorf("a second answer was accepted")
		}
	}
	bad := &responses.Request{Input: []responses.Item{{Type: responses.TypeMCPApprovalResponse, ApprovalRequestID: "mcpr_nope", Approve: true}}}
	if err := CheckApprovals(bad, history); err == nil {
		t.Errorf("an unknown approval_request_id was accepted")
	}
}

func TestModelFailureIsAnError(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(r fakeopenai.Request) fakeopenai.Answer {
		if lastIsTool(r) {
			return fakeopenai.Answer{Fault: fakeopenai.Status500}
		}
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{{ID: "c", Name: "echo", Arguments: `{}`}}}
	})
	_, out, _, err := h.run(t, runOpts{})
	if err == nil {
		t.Fatal("no error")
	}
	if out.Turns != 2 || out.ToolCalls != 1 {
		t.Errorf("outcome %+v", out)
	}
}
