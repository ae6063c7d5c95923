package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/agentapi/agentapi/internal/mcp"
)

func TestAdminMCPServers(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{mcpBuiltin: []mcp.Server{{Label: "agentapi", Description: "Built in", Handler: http.NotFoundHandler()}}})
	admin := a.user("root@example.com")
	if _, err := a.store.SetRole(t.Context(), a.userID(admin), roleAdmin); err != nil {
		t.Fatal(err)
	}
	user := a.user("joe@example.com")

	create := map[string]any{"server_label": "docs", "server_url": "http://10.1.2.3:8080/mcp", "server_description": "Docs",
		"headers": map[string]string{"Authorization": "Bearer registry-secret-canary"}, "allowed_tools": []string{"search"}, "tiers": []string{"pro"}}
	r := a.do("POST", "/admin/mcp-servers", admin, create)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r)
	}
	got := r.json(t)
	if got["require_approval"] != "always" || got["tiers"].([]any)[0] != "pro" || got["header_names"].([]any)[0] != "Authorization" {
		t.Errorf("created = %s", r)
	}

	tests := []struct {
		name, method, path, token string
		body                      any
		status                    int
	}{
		{"not an admin", "GET", "/admin/mcp-servers", user, nil, http.StatusForbidden},
		{"anonymous", "POST", "/admin/mcp-servers", "", create, http.StatusUnauthorized},
		{"duplicate", "POST", "/admin/mcp-servers", admin, create, http.StatusConflict},
		{"builtin label", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "agentapi", "server_url": "http://x/mcp"}, http.StatusConflict},
		{"bad label", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "a/b", "server_url": "http://x/mcp"}, http.StatusUnprocessableEntity},
		{"bad url", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "x", "server_url": "file:///etc/passwd"}, http.StatusUnprocessableEntity},
		{"url with password", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "x", "server_url": "http://u:p@x/mcp"}, http.StatusUnprocessableEntity},
		{"bad approval", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "x", "server_url": "http://x/mcp", "require_approval": "sometimes"}, http.StatusUnprocessableEntity},
		{"bad tier", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "x", "server_url": "http://x/mcp", "tiers": []string{"gold"}}, http.StatusUnprocessableEntity},
		{"bad header", "POST", "/admin/mcp-servers", admin, map[string]any{"server_label": "x", "server_url": "http://x/mcp", "headers": map[string]string{"X-A": "a\r\nb"}}, http.StatusUnprocessableEntity},
		{"get unknown", "GET", "/admin/mcp-servers/nope", admin, nil, http.StatusNotFound},
		{"patch builtin", "PATCH", "/admin/mcp-servers/agentapi", admin, map[string]any{"server_description": "x"}, http.StatusConflict},
		{"delete builtin", "DELETE", "/admin/mcp-servers/agentapi", admin, nil, http.StatusConflict},
		{"empty patch", "PATCH", "/admin/mcp-servers/docs", admin, map[string]any{}, http.StatusUnprocessableEntity},
		{"patch unknown", "PATCH", "/admin/mcp-servers/nope", admin, map[string]any{"server_description": "x"}, http.StatusNotFound},
	}
	for _, tc := range tests {
		if r := a.do(tc.method, tc.path, tc.token, tc.body); r.status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, r.status, r, tc.status)
		}
	}
	// Nothing that was refused was registered.
	r = a.do("GET", "/admin/mcp-servers", admin, nil)
	list := r.json(t)["data"].([]any)
	if r.status != 200 || len(list) != 2 || list[0].(map[string]any)["server_label"] != "agentapi" || list[0].(map[string]any)["builtin"] != true {
		t.Fatalf("list: %d %s", r.status, r)
	}

	r = a.do("PATCH", "/admin/mcp-servers/docs", admin, map[string]any{"tiers": nil, "require_approval": "never"})
	if r.status != 200 || r.json(t)["tiers"] != nil || r.json(t)["require_approval"] != "never" {
		t.Errorf("patch: %d %s", r.status, r)
	}
	if s, err := a.store.MCPServer(t.Context(), "docs"); err != nil || s.Tiers != nil {
		t.Errorf("stored after patch: %+v, %v", s, err)
	}
	if r := a.do("GET", "/admin/mcp-servers/docs", admin, nil); r.status != 200 || r.json(t)["allowed_tools"].([]any)[0] != "search" {
		t.Errorf("get: %d %s", r.status, r)
	}
	if r := a.do("DELETE", "/admin/mcp-servers/docs", admin, nil); r.status != http.StatusNoContent {
		t.Errorf("delete: %d %s", r.status, r)
	}
	if r := a.do("GET", "/admin/mcp-servers/docs", admin, nil); r.status != http.StatusNotFound {
		t.Errorf("get after delete: %d", r.status)
	}
	// The header's value was never answered, nor logged.
	if strings.Contains(a.logs.String(), "registry-secret-canary") {
		t.Error("the registry's header value reached the log")
	}
}

func TestMCPCallsQuery(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("calls@example.com")
	tests := []struct {
		query  string
		status int
	}{
		{"", http.StatusOK},
		{"?server=docs&tool=search&outcome=ok&since=2026-01-31&limit=10&offset=5", http.StatusOK},
		{"?since=2026-01-31T12:00:00Z", http.StatusOK},
		{"?limit=0", http.StatusUnprocessableEntity},
		{"?limit=501", http.StatusUnprocessableEntity},
		{"?offset=-1", http.StatusUnprocessableEntity},
		{"?since=yesterday", http.StatusUnprocessableEntity},
		{"?tool=" + strings.Repeat("x", 300), http.StatusUnprocessableEntity},
	}
	for _, tc := range tests {
		if r := a.do("GET", "/usage/mcp-calls"+tc.query, tok, nil); r.status != tc.status {
			t.Errorf("%q: %d %s, want %d", tc.query, r.status, r, tc.status)
		}
	}
	if r := a.do("GET", "/usage/mcp-calls", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("anonymous: %d", r.status)
	}
	if r := a.do("GET", "/admin/mcp-calls", tok, nil); r.status != http.StatusForbidden {
		t.Errorf("admin audit for a user: %d", r.status)
	}
	// Without a gateway /mcp answers a clear 404, after authentication.
	if r := a.do("POST", "/mcp", tok, map[string]any{"jsonrpc": "2.0", "id": 1, "method": "ping"}); r.status != http.StatusNotFound {
		t.Errorf("/mcp without a gateway: %d %s", r.status, r)
	}
	if r := a.do("POST", "/mcp", "", map[string]any{"jsonrpc": "2.0", "id": 1, "method": "ping"}); r.status != http.StatusUnauthorized {
		t.Errorf("/mcp anonymous: %d", r.status)
	}
}
