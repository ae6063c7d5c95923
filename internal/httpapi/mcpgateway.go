package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/agentapi/agentapi/internal/mcpgateway"
	"github.com/agentapi/agentapi/internal/store"
)

// mcpGateway is the /mcp server (internal/mcpgateway.Gateway).
type mcpGateway interface {
	Handler() http.Handler
}

// mcpCallStore reads the tool calls' audit.
type mcpCallStore interface {
	MCPCalls(ctx context.Context, f store.MCPCallFilter) ([]store.MCPCall, error)
}

// mcpCallView is one audit record as the API shows it.
type mcpCallView struct {
	ID          string    `json:"id"`
	UserID      string    `json:"user_id"`
	KeyID       string    `json:"key_id,omitempty"`
	Via         string    `json:"via" jsonschema:"description=gateway (/mcp) or agent (the Responses API's tool loop)."`
	ServerLabel string    `json:"server_label"`
	Tool        string    `json:"tool"`
	StartedAt   time.Time `json:"started_at"`
	DurationMS  int64     `json:"duration_ms"`
	Outcome     string    `json:"outcome" jsonschema:"description=ok, tool_error, timeout, unavailable, protocol_error, cancelled, rate_limited, forbidden or unknown_tool."`
	Bytes       int64     `json:"bytes" jsonschema:"description=Size of the result the server sent."`
}

type mcpCallList struct {
	Data   []mcpCallView `json:"data"`
	Limit  int           `json:"limit"`
	Offset int           `json:"offset"`
}

// handleMCP hands an authenticated request to the MCP gateway, acting for
// the request's principal. Authentication ran first on every request (a
// stateless gateway has no session to trust), so a disabled account or a
// revoked key is refused as quickly as on the model routes.
func handleMCP(logger *slog.Logger, g mcpGateway) http.Handler {
	if g == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, r, logger, errStatus(http.StatusNotFound, "The MCP gateway is not enabled"))
		})
	}
	h := g.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalFrom(r.Context())
		ctx := mcpgateway.WithCaller(r.Context(), mcpgateway.Caller{UserID: p.UserID, Tier: p.Tier, KeyID: p.KeyID})
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// handleAdminMCPCalls lists everyone's tool calls; query: user, server,
// tool, outcome, since, limit, offset.
func handleAdminMCPCalls(logger *slog.Logger, calls mcpCallStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveMCPCalls(w, r, logger, calls, r.URL.Query().Get("user"))
	})
}

// handleMyMCPCalls lists the caller's own tool calls.
func handleMyMCPCalls(logger *slog.Logger, calls mcpCallStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveMCPCalls(w, r, logger, calls, principalFrom(r.Context()).UserID)
	})
}

func serveMCPCalls(w http.ResponseWriter, r *http.Request, logger *slog.Logger, calls mcpCallStore, userID string) {
	q := r.URL.Query()
	f := store.MCPCallFilter{UserID: userID, Server: q.Get("server"), Tool: q.Get("tool"), Outcome: q.Get("outcome"), Limit: 100}
	var problems []fieldProblem
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			problems = append(problems, fieldProblem{"limit", "must be a whole number from 1 to 500"})
		}
		f.Limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			problems = append(problems, fieldProblem{"offset", "must be a whole number from 0"})
		}
		f.Offset = n
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			if t, err = time.Parse("2006-01-02", v); err != nil {
				problems = append(problems, fieldProblem{"since", "must be a time like 2026-01-31T12:00:00Z or a date like 2026-01-31"})
			}
		}
		f.Since = t
	}
	for _, p := range []struct{ name, v string }{{"user", userID}, {"server", f.Server}, {"tool", f.Tool}, {"outcome", f.Outcome}} {
		if len(p.v) > 256 {
			problems = append(problems, fieldProblem{p.name, "must be at most 256 bytes"})
		}
	}
	if len(problems) > 0 {
		writeError(w, r, logger, errValidation(problems...))
		return
	}
	if calls == nil {
		writeJSON(w, http.StatusOK, mcpCallList{Data: []mcpCallView{}, Limit: f.Limit, Offset: f.Offset})
		return
	}
	list, err := calls.MCPCalls(r.Context(), f)
	if err != nil {
		writeError(w, r, logger, err)
		return
	}
	out := mcpCallList{Data: make([]mcpCallView, 0, len(list)), Limit: f.Limit, Offset: f.Offset}
	for _, c := range list {
		out.Data = append(out.Data, mcpCallView{ID: c.ID, UserID: c.UserID, KeyID: c.KeyID, Via: c.Via, ServerLabel: c.Server, Tool: c.Tool,
			StartedAt: c.At, DurationMS: c.Duration.Milliseconds(), Outcome: c.Outcome, Bytes: c.Bytes})
	}
	writeJSON(w, http.StatusOK, out)
}

func mcpGatewayOperations() []operation {
	mcpDesc := "The MCP gateway: an MCP server over Streamable HTTP (stateless; any replica answers any request) that lists the tools of every registered MCP server " +
		"the caller's tier may use, as <server_label>__<tool>, and forwards tools/call with the registry's credentials added. " +
		"Each tools/call spends one token of the tier's MCP_RATE_LIMIT_<TIER> bucket and is audited. Refusals are JSON-RPC errors. Accepts a JWT or an API key. See docs/mcp.md."
	return []operation{
		{Method: "POST", Path: "/mcp", Tag: "mcp", Auth: true, Summary: "MCP gateway (all servers)", Description: mcpDesc,
			Request: map[string]any{},
			Responses: []docResponse{{Status: 200, Description: "A JSON-RPC response.", Body: map[string]any{}},
				{Status: 202, Description: "A notification was accepted."}, docUnauthorized,
				{Status: 405, Description: "GET and DELETE: the gateway is stateless and keeps no stream or session.", Body: nil}}},
		{Method: "POST", Path: "/mcp/{server_label}", Tag: "mcp", Auth: true, Summary: "MCP gateway (one server, tools by their own names)", Description: mcpDesc,
			Request: map[string]any{},
			Responses: []docResponse{{Status: 200, Description: "A JSON-RPC response.", Body: map[string]any{}},
				{Status: 202, Description: "A notification was accepted."}, docUnauthorized}},
		{Method: "GET", Path: "/usage/mcp-calls", Tag: "mcp", Auth: true, Summary: "Your tool calls through agentapi",
			Description: "Newest first. Query: server, tool, outcome, since (RFC 3339 time or date), limit (1-500, default 100), offset. Never arguments or results.",
			Responses:   []docResponse{{Status: 200, Description: "Audit records.", Body: mcpCallList{}}, docUnauthorized, docValidation}},
		{Method: "GET", Path: "/admin/mcp-calls", Tag: "admin", Auth: true, Summary: "Everyone's tool calls (admins only)",
			Description: "Newest first. Query: user (id), server, tool, outcome, since (RFC 3339 time or date), limit (1-500, default 100), offset. Never arguments or results.",
			Responses:   []docResponse{{Status: 200, Description: "Audit records.", Body: mcpCallList{}}, docUnauthorized, docForbidden, docValidation}},
	}
}
