package httpapi

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/openai/openai-go/v3"
	oresponses "github.com/openai/openai-go/v3/responses"
	"github.com/tidwall/gjson"

	"github.com/agentapi/agentapi/internal/agent"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/mcp/builtin"
	"github.com/agentapi/agentapi/internal/netguard"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/agentapi/agentapi/internal/tier"
)

// agentFixture is a tool server (the SDK's, over Streamable HTTP), a
// registry with the built-in server and three registered ones over it,
// and the MCP client.
type agentFixture struct {
	deps    *AgentDeps
	echoes  atomic.Int64
	hangs   atomic.Int64
	cancels atomic.Int64
	started chan struct{}
}

func newAgentFixture(t *testing.T, allowUser bool) *agentFixture {
	t.Helper()
	f := &agentFixture{started: make(chan struct{}, 8)}
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "fixture", Version: "1"}, nil)
	type echoIn struct {
		Text string `json:"text"`
	}
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "echo", Description: "echoes text"}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, any, error) {
		f.echoes.Add(1)
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
	})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "hang", Description: "never answers"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
		f.hangs.Add(1)
		f.started <- struct{}{}
		<-ctx.Done()
		f.cancels.Add(1)
		return nil, nil, ctx.Err()
	})
	srv := httptest.NewServer(sdkmcp.NewStreamableHTTPHandler(func(*http.Request) *sdkmcp.Server { return s }, nil))
	t.Cleanup(srv.Close)
	reg, err := mcp.NewRegistry(mcp.RegistryOptions{Builtin: []mcp.Server{
		{Label: builtin.Label, Description: builtin.Description, Handler: builtin.Handler(builtin.Options{}), RequireApproval: mcp.ApprovalNever},
		{Label: "tools", URL: srv.URL, RequireApproval: mcp.ApprovalNever},
		{Label: "gated", URL: srv.URL, RequireApproval: mcp.ApprovalAlways},
		{Label: "proonly", URL: srv.URL, RequireApproval: mcp.ApprovalNever, Tiers: []string{tier.Pro}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// The guard's resolver answers "public.example" with a public address
	// and "rebind.example" with loopback; nothing is really resolved.
	resolver := fixedResolver{"public.example": netip.MustParseAddr("93.184.215.14"), "rebind.example": netip.MustParseAddr("127.0.0.1")}
	guardOpts := netguard.Options{AllowHTTP: true, Resolver: resolver}
	client := mcp.NewClient(mcp.ClientOptions{CallTimeout: 2 * time.Second, PublicHTTP: netguard.NewClient(guardOpts)})
	t.Cleanup(func() { client.Close() })
	f.deps = &AgentDeps{Servers: reg, Client: client, Guard: netguard.NewGuard(guardOpts),
		Limits: agent.Limits{CallTimeout: 2 * time.Second, MaxTurns: 4}, AllowUserServers: allowUser, AllowUserHTTP: true}
	return f
}

type fixedResolver map[string]netip.Addr

func (r fixedResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// scripted is a fake upstream that asks for tool with args, then answers
// with what the tool said.
func scripted(t *testing.T, tool, args string) *llm.Client {
	t.Helper()
	up := fakeopenai.New(t, fakeopenai.Options{Respond: func(r fakeopenai.Request) fakeopenai.Answer {
		if gjson.GetBytes(r.Body, "messages.@reverse.0.role").String() == "tool" {
			return fakeopenai.Answer{Text: "The tool said: " + r.LastMessage(), Usage: fakeopenai.Usage{Prompt: 20, Completion: 7}}
		}
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{{ID: "call_1", Name: tool, Arguments: args}},
			Usage: fakeopenai.Usage{Prompt: 10, Completion: 5}}
	}})
	c, err := llm.NewClient(llm.Options{BaseURL: up.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mcpTool(label string) oresponses.ToolUnionParam {
	return oresponses.ToolUnionParam{OfMcp: &oresponses.ToolMcpParam{ServerLabel: label}}
}

// checkKnown fails on any output item the SDK does not know.
func checkKnown(t *testing.T, items []oresponses.ResponseOutputItemUnion) {
	t.Helper()
	for i, it := range items {
		if it.AsAny() == nil {
			t.Errorf("output[%d] has a type the SDK does not know: %s", i, it.RawJSON())
		}
	}
}

// TestAgentBuiltinWithMockSDK runs the whole loop on embedded defaults:
// the offline mock model asks the built-in server's calculate tool, and
// openai-go reads every item.
func TestAgentBuiltinWithMockSDK(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, false)
	a := newTestAPI(t, testOptions{capacity: 100, provider: llm.NewMock(), agent: f.deps, maxToolCalls: 8})
	_, key := a.newKey(a.user("builtin@example.com"), "sdk")
	client := a.sdk(key)
	ctx := context.Background()
	resp, err := client.Responses.New(ctx, oresponses.ResponseNewParams{Model: "mock-chat",
		Input: userInput("Please calculate (2+3)*4"), Tools: []oresponses.ToolUnionParam{mcpTool(builtin.Label)}})
	if err != nil {
		t.Fatal(err)
	}
	checkKnown(t, resp.Output)
	var kinds []string
	for _, it := range resp.Output {
		kinds = append(kinds, it.Type)
	}
	if strings.Join(kinds, ",") != "mcp_list_tools,mcp_call,message" {
		t.Fatalf("output %v: %s", kinds, resp.RawJSON())
	}
	list := resp.Output[0].AsMcpListTools()
	if list.ServerLabel != builtin.Label || len(list.Tools) != 2 {
		t.Errorf("list %s", list.RawJSON())
	}
	call := resp.Output[1].AsMcpCall()
	if call.Name != builtin.ToolCalculate || call.Arguments != `{"expression":"(2+3)*4"}` || !strings.Contains(call.Output, `"result":20`) || call.Error.Type != "" {
		t.Errorf("call %s", call.RawJSON())
	}
	if !strings.Contains(resp.OutputText(), `"result":20`) || resp.Status != oresponses.ResponseStatusCompleted {
		t.Errorf("answer %q, status %s", resp.OutputText(), resp.Status)
	}
	// Two model turns were counted, and the usage is their sum.
	if resp.Usage.TotalTokens == 0 {
		t.Errorf("no usage")
	}
	testkit.Eventually(t, 5*time.Second, "usage recorded is the response's", func() bool {
		return gjson.GetBytes(a.do("GET", "/usage", key, nil).body, "totals.total_tokens").Int() == resp.Usage.TotalTokens
	})
	// Stored: GET reads the same items back.
	got, err := client.Responses.Get(ctx, resp.ID, oresponses.ResponseGetParams{})
	if err != nil || len(got.Output) != 3 {
		t.Fatalf("get: %v", err)
	}
	if line := a.logs.String(); !strings.Contains(line, `"tool_calls":1`) || !strings.Contains(line, `"turns":2`) {
		t.Errorf("the access log does not count the tool call: %s", line)
	}
}

func TestAgentStreamedSDKReadsEveryEvent(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, false)
	a := newTestAPI(t, testOptions{capacity: 100, provider: scripted(t, "echo", `{"text":"hi"}`), agent: f.deps, maxToolCalls: 8})
	_, key := a.newKey(a.user("stream@example.com"), "sdk")
	client := a.sdk(key)
	st := client.Responses.NewStreaming(context.Background(), oresponses.ResponseNewParams{Model: "gpt-test",
		Input: userInput("say hi through the tool"), Tools: []oresponses.ToolUnionParam{mcpTool("tools")}})
	var types []string
	var final oresponses.Response
	for st.Next() {
		ev := st.Current()
		if ev.AsAny() == nil {
			t.Errorf("event the SDK does not know: %s", ev.RawJSON())
		}
		types = append(types, ev.Type)
		if ev.Type == "response.completed" {
			final = ev.Response
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(types, " ")
	for _, want := range []string{"response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
		"response.mcp_call_arguments.delta", "response.mcp_call_arguments.done", "response.mcp_call.in_progress",
		"response.mcp_call.completed", "response.output_text.delta", "response.completed"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %s in %s", want, joined)
		}
	}
	checkKnown(t, final.Output)
	if final.OutputText() != "The tool said: echo: hi" || final.Usage.TotalTokens != 42 {
		t.Errorf("final %q usage %d", final.OutputText(), final.Usage.TotalTokens)
	}
	if f.echoes.Load() != 1 {
		t.Errorf("echo ran %d times", f.echoes.Load())
	}
}

// TestAgentApprovalOnAnotherReplica asks for approval on one replica and
// approves (then denies) it on another that shares the database.
func TestAgentApprovalOnAnotherReplica(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, false)
	provider := scripted(t, "echo", `{"text":"approved"}`)
	first := newTestAPI(t, testOptions{capacity: 100, provider: provider, agent: f.deps, maxToolCalls: 8})
	second := newTestAPI(t, testOptions{capacity: 100, provider: provider, agent: f.deps, maxToolCalls: 8, store: first.store})
	tok := first.user("approve@example.com")
	_, key := first.newKey(tok, "sdk")
	ctx := context.Background()
	c1, c2 := first.sdk(key), second.sdk(key)
	asked, err := c1.Responses.New(ctx, oresponses.ResponseNewParams{Model: "gpt-test",
		Input: userInput("echo please"), Tools: []oresponses.ToolUnionParam{mcpTool("gated")}})
	if err != nil {
		t.Fatal(err)
	}
	checkKnown(t, asked.Output)
	if len(asked.Output) != 2 || asked.Output[1].Type != "mcp_approval_request" || f.echoes.Load() != 0 {
		t.Fatalf("output %s, echoes %d", asked.RawJSON(), f.echoes.Load())
	}
	req := asked.Output[1].AsMcpApprovalRequest()

	for _, approve := range []bool{true, false} {
		before := f.echoes.Load()
		input := oresponses.ResponseInputParam{{OfMcpApprovalResponse: &oresponses.ResponseInputItemMcpApprovalResponseParam{
			ApprovalRequestID: req.ID, Approve: approve}}}
		resp, err := c2.Responses.New(ctx, oresponses.ResponseNewParams{Model: "gpt-test",
			PreviousResponseID: openai.String(asked.ID), Input: oresponses.ResponseNewParamsInputUnion{OfInputItemList: input},
			Tools: []oresponses.ToolUnionParam{mcpTool("gated")}})
		if err != nil {
			t.Fatal(err)
		}
		checkKnown(t, resp.Output)
		if len(resp.Output) != 2 || resp.Output[0].Type != "mcp_call" {
			t.Fatalf("approve=%v: %s", approve, resp.RawJSON())
		}
		call := resp.Output[0].AsMcpCall()
		ran := f.echoes.Load() - before
		if call.ApprovalRequestID != req.ID {
			t.Errorf("approval_request_id %q", call.ApprovalRequestID)
		}
		if approve && (ran != 1 || call.Output != "echo: approved") {
			t.Errorf("approved: ran %d, %s", ran, call.RawJSON())
		}
		if !approve && (ran != 0 || call.Error.Type != "mcp_tool_execution_error" || !strings.Contains(call.Error.RawJSON(), "denied")) {
			t.Errorf("denied: ran %d, %s", ran, call.RawJSON())
		}
	}
	// An id that was never asked is a 400 that runs nothing.
	r := second.do("POST", "/v1/responses", key, map[string]any{"model": "gpt-test", "previous_response_id": asked.ID,
		"tools": []any{map[string]any{"type": "mcp", "server_label": "gated"}},
		"input": []any{map[string]any{"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": true}}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.String(), "mcpr_nope") {
		t.Errorf("unknown approval id: %d %s", r.status, r)
	}
}

// TestAgentRegistryRules: a request may narrow and tighten a registered
// server, not widen it; a tier not listed is refused; a request's own
// server is refused unless allowed, and then at private addresses.
func TestAgentRegistryRules(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, false)
	a := newTestAPI(t, testOptions{capacity: 100, provider: scripted(t, "echo", `{"text":"x"}`), agent: f.deps, maxToolCalls: 8})
	key := a.user("rules@example.com")
	post := func(tool map[string]any) result {
		return a.do("POST", "/v1/responses", key, map[string]any{"model": "gpt-test", "input": "hi", "tools": []any{tool}})
	}
	tests := []struct {
		name   string
		tool   map[string]any
		status int
		want   string
	}{
		{"unknown label", map[string]any{"type": "mcp", "server_label": "nope"}, 400, "nope"},
		{"tier not listed", map[string]any{"type": "mcp", "server_label": "proonly"}, 403, "proonly"},
		{"headers on a registered server", map[string]any{"type": "mcp", "server_label": "tools", "headers": map[string]string{"Authorization": "x"}}, 400, "headers"},
		{"own server not allowed", map[string]any{"type": "mcp", "server_label": "mine", "server_url": "https://public.example/mcp"}, 400, "mine"},
		{"bad require_approval", map[string]any{"type": "mcp", "server_label": "tools", "require_approval": "sometimes"}, 400, "require_approval"},
	}
	for _, tt := range tests {
		r := post(tt.tool)
		if r.status != tt.status || !strings.Contains(r.String(), tt.want) {
			t.Errorf("%s: %d %s", tt.name, r.status, r)
		}
	}
	if a.upstream.Calls() != 0 || f.echoes.Load() != 0 {
		t.Errorf("a refused request reached the model or a tool")
	}

	// Narrowing: the request's allowed_tools leaves "echo" out, so the
	// model is not offered it and its call of it goes back as a function
	// call; nothing runs.
	r := post(map[string]any{"type": "mcp", "server_label": "tools", "allowed_tools": []string{"hang"}})
	if r.status != 200 || gjson.GetBytes(r.body, "output.1.type").String() != "function_call" || f.echoes.Load() != 0 {
		t.Errorf("narrowed: %d %s", r.status, r)
	}
	// Tightening: "never" on a registry's "always" still asks.
	r = post(map[string]any{"type": "mcp", "server_label": "gated", "require_approval": "never"})
	if r.status != 200 || gjson.GetBytes(r.body, "output.1.type").String() != "mcp_approval_request" {
		t.Errorf("a request lifted the registry's approval: %s", r)
	}
	// And "always" on a registry's "never" asks too.
	r = post(map[string]any{"type": "mcp", "server_label": "tools", "require_approval": "always"})
	if r.status != 200 || gjson.GetBytes(r.body, "output.1.type").String() != "mcp_approval_request" {
		t.Errorf("the request's approval was not kept: %s", r)
	}
	// Headers are never echoed.
	if strings.Contains(r.String(), `"headers":{`) {
		t.Errorf("headers echoed: %s", r)
	}
}

// TestAgentUserServers: with MCP_ALLOW_USER_SERVERS, a request's own
// server at a private address (literal, or a name resolving to one) is a
// 400 naming it, and nothing is dialled.
func TestAgentUserServers(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, true)
	a := newTestAPI(t, testOptions{capacity: 100, provider: scripted(t, "echo", `{"text":"x"}`), agent: f.deps, maxToolCalls: 8})
	key := a.user("user-servers@example.com")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, u := range []string{
		"http://127.0.0.1:" + port + "/mcp",
		"http://rebind.example:" + port + "/mcp",
		"http://169.254.169.254/mcp",
		"http://[::ffff:10.0.0.1]/mcp",
		"ftp://public.example/mcp",
		"https://user:pw@public.example/mcp",
	} {
		r := a.do("POST", "/v1/responses", key, map[string]any{"model": "gpt-test", "input": "hi",
			"tools": []any{map[string]any{"type": "mcp", "server_label": "mine", "server_url": u}}})
		if r.status != 400 || !strings.Contains(r.String(), "mine") || gjson.GetBytes(r.body, "error.param").String() != "tools[0].server_url" {
			t.Errorf("%s: %d %s", u, r.status, r)
		}
	}
	if accepts.Load() != 0 || a.upstream.Calls() != 0 {
		t.Errorf("accepts %d, model calls %d", accepts.Load(), a.upstream.Calls())
	}
}

func TestAgentDisconnectCancelsTheToolCall(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, false)
	f.deps.Limits.CallTimeout = time.Minute
	a := newTestAPI(t, testOptions{capacity: 100, provider: scripted(t, "hang", `{}`), agent: f.deps, maxToolCalls: 8})
	key := a.user("disconnect@example.com")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"model":"gpt-test","input":"hang","stream":true,"tools":[{"type":"mcp","server_label":"tools"}]}`
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp := a.stream(ctx, "/v1/responses", key, body)
		if resp != nil {
			defer resp.Body.Close()
			buf := make([]byte, 4096)
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					return
				}
			}
		}
	}()
	testkit.Await(t, f.started, 10*time.Second, "the tool starts")
	cancel()
	testkit.Await(t, done, 10*time.Second, "the client's stream ends")
	testkit.Eventually(t, 10*time.Second, "the tool call is cancelled on the server", func() bool { return f.cancels.Load() == 1 })
	// The stored response says it was interrupted.
	var stored store.StoredResponse
	testkit.Eventually(t, 10*time.Second, "the interrupted response is stored", func() bool {
		list, _ := a.store.ResponseChain(context.Background(), a.userID(key), lastResponseID(t, a), 1)
		if len(list) == 1 {
			stored = list[0]
		}
		return len(list) == 1
	})
	if gjson.GetBytes(stored.Body, "incomplete_details.reason").String() != "interrupted" {
		t.Errorf("stored %s", stored.Body)
	}
}

// lastResponseID finds the response id in the access log's neighbour: the
// info line the handler logs when a client leaves.
func lastResponseID(t *testing.T, a *testAPI) string {
	t.Helper()
	for _, l := range strings.Split(a.logs.String(), "\n") {
		if strings.Contains(l, "agent response ended by the client") {
			var v struct {
				ID string `json:"response_id"`
			}
			_ = json.Unmarshal([]byte(l), &v)
			return v.ID
		}
	}
	return ""
}

// TestAgentOverWebSocket runs server-side tools in WebSocket mode: the
// loop's events go out as messages in order, with the mcp_* events, and
// an approval asked on a store:false response is answered on the same
// socket from its memory.
func TestAgentOverWebSocket(t *testing.T) {
	t.Parallel()
	f := newAgentFixture(t, false)
	a := newTestAPI(t, testOptions{capacity: 100, provider: scripted(t, "echo", `{"text":"over the socket"}`), agent: f.deps, maxToolCalls: 8})
	conn := a.dialResponses(a.user("ws-agent@example.com"))

	types, last := socketTurn(t, conn, `{"type":"response.create","model":"m","store":false,"input":"echo please","tools":[{"type":"mcp","server_label":"tools"}]}`)
	joined := strings.Join(types, " ")
	for _, want := range []string{"response.created", "response.mcp_list_tools.completed", "response.mcp_call.in_progress", "response.mcp_call.completed", "response.output_text.delta"} {
		if !strings.Contains(joined, want) {
			t.Errorf("events lack %s: %v", want, types)
		}
	}
	if last.Get("type").Str != "response.completed" || types[0] != "response.created" {
		t.Fatalf("turn: %v, last %s", types, last.Raw)
	}
	out := last.Get("response.output")
	if out.Get("#").Int() != 3 || out.Get("1.type").Str != "mcp_call" || out.Get("1.output").Str != "echo: over the socket" {
		t.Errorf("output %s", out.Raw)
	}
	if last.Get("response.usage.total_tokens").Int() != 42 || f.echoes.Load() != 1 {
		t.Errorf("usage %s, echoes %d", last.Get("response.usage").Raw, f.echoes.Load())
	}

	// An approval: asked, then answered from the socket's memory.
	_, asked := socketTurn(t, conn, `{"type":"response.create","model":"m","store":false,"input":"echo please","tools":[{"type":"mcp","server_label":"gated"}]}`)
	req := asked.Get(`response.output.#(type=="mcp_approval_request")`)
	if asked.Get("type").Str != "response.completed" || req.Get("id").Str == "" || f.echoes.Load() != 1 {
		t.Fatalf("approval turn: %s", asked.Raw)
	}
	_, done := socketTurn(t, conn, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+asked.Get("response.id").Str+
		`","tools":[{"type":"mcp","server_label":"gated"}],"input":[{"type":"mcp_approval_response","approval_request_id":"`+req.Get("id").Str+`","approve":true}]}`)
	if done.Get("type").Str != "response.completed" || done.Get(`response.output.#(type=="mcp_call").output`).Str != "echo: over the socket" || f.echoes.Load() != 2 {
		t.Errorf("approved turn: %s (echoes %d)", done.Raw, f.echoes.Load())
	}
}
