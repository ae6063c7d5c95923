package systemtest

import (
	"context"
	"strings"
	"testing"

	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/openai/openai-go/v3"
	oresponses "github.com/openai/openai-go/v3/responses"
	"github.com/tidwall/gjson"
)

// TestAgentApprovalAcrossReplicas runs the tool loop in the real program:
// a response on one replica asks for approval to call the built-in
// server's calculate tool (the request tightens the server's "never" to
// "always"); the approval goes to the other replica, which finds the
// request in the shared database, runs the tool in-process and lets the
// model answer with its result.
func TestAgentApprovalAcrossReplicas(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t) // skips without TEST_DATABASE_URL
	up := fakeopenai.New(t, fakeopenai.Options{Record: true, Respond: func(r fakeopenai.Request) fakeopenai.Answer {
		if gjson.GetBytes(r.Body, "messages.@reverse.0.role").Str == "tool" {
			return fakeopenai.Answer{Text: "It is " + r.LastMessage()}
		}
		return fakeopenai.Answer{ToolCalls: []fakeopenai.ToolCall{{ID: "call_1", Name: "calculate", Arguments: `{"expression":"6*7"}`}}}
	}})
	env := replicaEnv(t, redistest.URL(t), db, up.URL)
	env["RATE_LIMIT_FREE"] = "100"
	servers := startReplicas(t, 2, env)
	token := signUp(t, servers[0], servers[1], "agent@example.com")
	ctx := context.Background()
	tools := []oresponses.ToolUnionParam{{OfMcp: &oresponses.ToolMcpParam{ServerLabel: "agentapi",
		RequireApproval: oresponses.ToolMcpRequireApprovalUnionParam{OfMcpToolApprovalSetting: openai.String("always")}}}}

	c0, c1 := sdkOf(servers[0], token), sdkOf(servers[1], token)
	asked, err := c0.Responses.New(ctx, oresponses.ResponseNewParams{Model: "gpt-test", Input: oresponses.ResponseNewParamsInputUnion{OfString: openai.String("what is 6*7?")}, Tools: tools})
	if err != nil {
		t.Fatal(err)
	}
	if len(asked.Output) != 2 || asked.Output[1].Type != "mcp_approval_request" {
		t.Fatalf("first response: %s", asked.RawJSON())
	}
	req := asked.Output[1].AsMcpApprovalRequest()
	if req.Name != "calculate" || req.ServerLabel != "agentapi" {
		t.Errorf("approval request %s", req.RawJSON())
	}
	answered, err := c1.Responses.New(ctx, oresponses.ResponseNewParams{Model: "gpt-test", PreviousResponseID: openai.String(asked.ID), Tools: tools,
		Input: oresponses.ResponseNewParamsInputUnion{OfInputItemList: oresponses.ResponseInputParam{{OfMcpApprovalResponse: &oresponses.ResponseInputItemMcpApprovalResponseParam{
			ApprovalRequestID: req.ID, Approve: true}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(answered.Output) != 2 || answered.Output[0].Type != "mcp_call" {
		t.Fatalf("second response: %s", answered.RawJSON())
	}
	call := answered.Output[0].AsMcpCall()
	if call.ApprovalRequestID != req.ID || !strings.Contains(call.Output, `"result":42`) {
		t.Errorf("call %s", call.RawJSON())
	}
	if !strings.Contains(answered.OutputText(), `"result":42`) {
		t.Errorf("answer %q", answered.OutputText())
	}
	if up.Calls() != 2 {
		t.Errorf("model calls %d, want 2 (one per response)", up.Calls())
	}
}
