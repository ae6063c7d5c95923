package httpapi

import "net/http"

// addRoutes is the one list of every route and what guards it.
func addRoutes(mux *http.ServeMux, d Deps) {
	authn := requireAuth(d.Logger, d.Tokens)
	limit := rateLimit(d.Logger, d.Limiter, d.Policies)

	mux.Handle("GET /{$}", handleRoot(d.AppName))
	mux.Handle("GET /health", handleHealth())
	mux.Handle("GET /ready", handleReady(d.Ready))

	mux.Handle("POST /auth/register", handleRegister(d.Logger, d.Users, d.Hasher))
	mux.Handle("POST /auth/login", handleLogin(d.Logger, d.Users, d.Hasher, d.Tokens))

	mux.Handle("POST /chat", authn(limit(handleChat(d.Logger, d.Cache, d.CacheScope, d.LLM, d.DefaultModel, d.Usage))))
	mux.Handle("GET /chat/quota", authn(handleQuota(d.Logger, d.Limiter, d.Policies)))
}
