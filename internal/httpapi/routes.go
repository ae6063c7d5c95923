package httpapi

import "net/http"

// router is where routes are registered: an *http.ServeMux, or a recorder in
// the test that checks every route is documented.
type router interface {
	Handle(pattern string, h http.Handler)
}

// addRoutes is the one list of every route and what guards it.
func addRoutes(mux router, d Deps, states *accountStates, openapi []byte) {
	authn := requireAuth(d.Logger, d.Tokens, states)
	admin := func(h http.Handler) http.Handler { return authn(requireAdmin(d.Logger)(h)) }
	keys := newAPIKeys(d.APIKeys, d.Logger)
	// authnKey also takes API keys; key management itself needs a login.
	authnKey := acceptAPIKeys(d.Logger, keys, states, authn)
	login := requireLogin(d.Logger)
	m := newModelRoutes(d)
	sess := newSessions(d)
	resp := newResponsesAPI(d, m)

	mux.Handle("GET /{$}", handleRoot(d.AppName))
	mux.Handle("GET /health", handleHealth())
	mux.Handle("GET /ready", handleReady(d.Ready))
	mux.Handle("GET /metrics", handleMetrics(d.Logger, d.Metrics, d.AccessLog, d.MetricsOnAPI))
	mux.Handle("GET /openapi.json", handleOpenAPI(openapi))
	mux.Handle("GET /docs", handleDocs())
	mux.Handle("GET /docs/{asset}", handleDocs())

	mux.Handle("POST /auth/register", handleRegister(d.Logger, d.Users, d.Hasher))
	mux.Handle("POST /auth/login", handleLogin(d.Logger, d.Users, d.Hasher, sess, newLoginThrottle(d.Limiter, d.LoginLimits)))
	mux.Handle("POST /auth/refresh", handleRefresh(sess, states))
	mux.Handle("POST /auth/logout", authn(handleLogout(sess)))

	// The routes that call the model spend a rate-limit token inside the
	// handler, once the request has proved valid (modelRoutes.begin), so
	// the decision and the cache lookup can share one Redis round trip.
	mux.Handle("POST /chat", authnKey(handleChat(m)))
	mux.Handle("GET /chat/quota", authnKey(handleQuota(m, d.UsageReports)))
	mux.Handle("GET /usage", authnKey(handleUsage(d.Logger, d.UsageReports)))

	mux.Handle("POST /keys", authnKey(login(handleCreateKey(d.Logger, d.APIKeys))))
	mux.Handle("GET /keys", authnKey(login(handleListKeys(d.Logger, d.APIKeys))))
	mux.Handle("DELETE /keys/{id}", authnKey(login(handleRevokeKey(d.Logger, d.APIKeys, keys))))

	mux.Handle("POST /v1/chat/completions", authnKey(handleChatCompletions(m)))
	mux.Handle("POST /v1/embeddings", authnKey(handleEmbeddings(m)))
	mux.Handle("GET /v1/models", authnKey(handleModels(m)))
	// Anthropic's Messages API, for Claude Code and the Anthropic SDKs.
	mux.Handle("POST /v1/messages", withAnthropicKey(authnKey(handleMessages(m))))
	mux.Handle("POST /v1/messages/count_tokens", withAnthropicKey(authnKey(handleCountTokens(m))))
	mux.Handle("GET /v1/models/{model...}", authnKey(handleModel(m)))
	// Responses: creating one runs the model (one rate-limit token);
	// reading, listing and deleting spend none.
	mux.Handle("POST /v1/responses", authnKey(handleCreateResponse(resp)))
	// The WebSocket mode: one rate-limit token per response.create.
	mux.Handle("GET /v1/responses", authnKey(handleResponsesSocket(resp, authnKey)))
	mux.Handle("GET /v1/responses/{id}", authnKey(handleGetResponse(resp)))
	mux.Handle("DELETE /v1/responses/{id}", authnKey(handleDeleteResponse(resp)))
	mux.Handle("GET /v1/responses/{id}/input_items", authnKey(handleInputItems(resp)))
	// Compaction runs the model (one token); conversations only read and
	// write the store (none), except through a response.
	mux.Handle("POST /v1/responses/compact", authnKey(handleCompactResponse(resp)))
	mux.Handle("POST /v1/conversations", authnKey(handleCreateConversation(resp)))
	mux.Handle("GET /v1/conversations/{id}", authnKey(handleGetConversation(resp)))
	mux.Handle("POST /v1/conversations/{id}", authnKey(handleUpdateConversation(resp)))
	mux.Handle("DELETE /v1/conversations/{id}", authnKey(handleDeleteConversation(resp)))
	mux.Handle("GET /v1/conversations/{id}/items", authnKey(handleListConversationItems(resp)))
	mux.Handle("POST /v1/conversations/{id}/items", authnKey(handleAddConversationItems(resp)))
	mux.Handle("GET /v1/conversations/{id}/items/{item_id}", authnKey(handleGetConversationItem(resp)))
	mux.Handle("DELETE /v1/conversations/{id}/items/{item_id}", authnKey(handleDeleteConversationItem(resp)))

	mux.Handle("GET /admin/users", admin(handleAdminListUsers(d.Logger, d.Admin)))
	mux.Handle("GET /admin/users/{id}", admin(handleAdminGetUser(d.Logger, d.Admin)))
	mux.Handle("PATCH /admin/users/{id}", admin(handleAdminPatchUser(d.Logger, d.Admin, states)))
	mux.Handle("GET /admin/users/{id}/usage", admin(handleAdminUserUsage(d.Logger, d.Admin)))
	mux.Handle("GET /admin/models", admin(handleAdminListModels(d.Logger, d.Models)))
	mux.Handle("PUT /admin/models/{name}", admin(handleAdminPutModel(d.Logger, d.Models)))
	mux.Handle("DELETE /admin/models/{name}", admin(handleAdminDeleteModel(d.Logger, d.Models)))

	mcpServers := d.MCPServers
	if mcpServers == nil {
		mcpServers = emptyMCPRegistry()
	}
	mux.Handle("GET /admin/mcp-servers", admin(handleAdminListMCPServers(d.Logger, mcpServers)))
	mux.Handle("POST /admin/mcp-servers", admin(handleAdminCreateMCPServer(d.Logger, mcpServers)))
	mux.Handle("GET /admin/mcp-servers/{label}", admin(handleAdminGetMCPServer(d.Logger, mcpServers)))
	mux.Handle("PATCH /admin/mcp-servers/{label}", admin(handleAdminPatchMCPServer(d.Logger, mcpServers)))
	mux.Handle("DELETE /admin/mcp-servers/{label}", admin(handleAdminDeleteMCPServer(d.Logger, mcpServers)))
	mux.Handle("GET /admin/mcp-calls", admin(handleAdminMCPCalls(d.Logger, d.MCPCalls)))

	// The MCP gateway authenticates every request (it is stateless); each
	// tools/call spends from the tier's MCP bucket inside it.
	mcpHandler := authnKey(handleMCP(d.Logger, d.MCPGateway))
	mux.Handle("POST /mcp", mcpHandler)
	mux.Handle("POST /mcp/{server_label}", mcpHandler)
	mux.Handle("GET /usage/mcp-calls", authnKey(handleMyMCPCalls(d.Logger, d.MCPCalls)))

	addConsoleRoutes(mux, d, sess, states, authn)
}
