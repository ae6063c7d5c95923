package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The MCP targets measure what the MCP gateway adds to a tool call: the
// same tools/call, with the same unique arguments, sent straight to an MCP
// server of the SDK (mcp-direct) and through agentapi's /mcp (mcp-gateway:
// authentication, the registry, the MCP bucket, the forward over a pooled
// session, the size cap and the audit record).

// mcpBenchLabel is the label the harness registers its MCP server under.
const mcpBenchLabel = "bench"

// mcpProtocolVersion is the protocol version the raw requests declare.
const mcpProtocolVersion = "2025-06-18"

// startMCPUpstream serves an MCP server of the SDK on loopback, stateless
// with JSON answers, so that a bare tools/call POST works without a
// handshake, for the direct target and for the gateway alike. Its one tool,
// echo, answers with its arguments.
func startMCPUpstream() (url string, stop func(), err error) {
	server := sdk.NewServer(&sdk.Implementation{Name: "harness", Version: "1"}, nil)
	sdk.AddTool(server, &sdk.Tool{Name: "echo", Description: "Answers with its arguments."}, func(_ context.Context, _ *sdk.CallToolRequest, in map[string]any) (*sdk.CallToolResult, any, error) {
		b, _ := json.Marshal(in)
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: string(b)}}}, nil, nil
	})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server },
		&sdk.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go labelled("server", "mcp-upstream", func() { srv.Serve(ln) })
	return "http://" + ln.Addr().String() + "/mcp", func() { srv.Close() }, nil
}

// registerMCPServer registers the harness's MCP server on g (whose user is
// an admin); false when this build has no MCP registry.
func registerMCPServer(g *gateway, upstream string) (bool, error) {
	body, _ := json.Marshal(map[string]any{"server_label": mcpBenchLabel, "server_url": upstream, "require_approval": "never"})
	req, err := http.NewRequest(http.MethodPost, g.url+"/admin/mcp-servers", bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("register the MCP server: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusCreated:
		return true, nil
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return false, nil
	default:
		return false, fmt.Errorf("register the MCP server: %d %s", resp.StatusCode, raw)
	}
}

// mcpCallBody is the n-th tools/call of tool, with unique arguments.
func mcpCallBody(tool string) func(n uint64) []byte {
	return func(n uint64) []byte {
		b := make([]byte, 0, 256)
		b = append(b, `{"jsonrpc":"2.0","id":`...)
		b = strconv.AppendUint(b, n+1, 10)
		b = append(b, `,"method":"tools/call","params":{"name":"`...)
		b = append(b, tool...)
		b = append(b, `","arguments":{"q":"`...)
		b = prompt(b, n)
		return append(b, `"}}}`...)
	}
}

// mcpHeader is what an MCP client sends with a request.
func mcpHeader(token string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"},
		"Mcp-Protocol-Version": {mcpProtocolVersion}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return h
}

// checkMCPCall accepts a successful tools/call answer.
func checkMCPCall(status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", status, body)
	}
	var r struct {
		Result *struct {
			IsError bool `json:"isError"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Result == nil || r.Result.IsError || len(r.Result.Content) == 0 || r.Error != nil {
		return fmt.Errorf("not a tools/call result: %.300s", body)
	}
	return nil
}
