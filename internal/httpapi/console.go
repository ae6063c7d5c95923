package httpapi

import (
	"net/http"

	"github.com/agentapi/agentapi/internal/console"
)

// addConsoleRoutes registers the web console (internal/console): its pages
// and assets, and its session endpoints, which wrap the same login, refresh
// and logout handlers as /auth but keep the refresh token in an HttpOnly
// cookie (see SECURITY.md).
func addConsoleRoutes(mux router, d Deps, sess *sessions, states *accountStates, authn func(http.Handler) http.Handler) {
	c, err := console.New(d.Logger, console.Sessions{
		Login:   handleLogin(d.Logger, d.Users, d.Hasher, sess, newLoginThrottle(d.Limiter, d.LoginLimits)),
		Refresh: handleRefresh(sess, states),
		Logout:  authn(handleLogout(sess)),
	})
	if err != nil {
		panic(err) // the templates are embedded at build time; failing to parse them is a build bug
	}
	mux.Handle("GET /console", c.Root())
	mux.Handle("GET /console/{$}", c.Page())
	mux.Handle("GET /console/{page}", c.Page())
	mux.Handle("GET /console/assets/{file}", c.Asset())
	mux.Handle("POST /console/api/session", c.SignIn())
	mux.Handle("POST /console/api/session/refresh", c.Refresh())
	mux.Handle("DELETE /console/api/session", c.SignOut())
	mux.Handle("GET /console/api/me", authn(handleConsoleMe()))
}

// consoleMe is who the console's access token acts for, as the account is
// now (an admin's change shows at once).
type consoleMe struct {
	UserID string `json:"user_id"`
	Tier   string `json:"tier"`
	Role   string `json:"role"`
}

// handleConsoleMe answers the console's question "who am I, and am I still
// allowed in?": it reads nothing but the request's principal, so the
// console can ask it every second to notice a disabled account.
func handleConsoleMe() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalFrom(r.Context())
		writeJSON(w, http.StatusOK, consoleMe{UserID: p.UserID, Tier: p.Tier, Role: p.Role})
	})
}

// consoleOperations documents the console's routes.
func consoleOperations() []operation {
	page := docResponse{Status: 200, Description: "HTML page; its scripts and styles are served by this binary.", ContentType: "text/html"}
	session := docResponse{Status: 200, Description: "An access token; the refresh token is set in an HttpOnly cookie.", Body: struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
		Persistent  bool   `json:"persistent"`
	}{}}
	crossSite := docResponse{Status: 403, Description: "The browser says the request came from another site.", Body: errorBody{}}
	return []operation{
		{Method: "GET", Path: "/console", Tag: "console", Summary: "Redirect to the web console",
			Responses: []docResponse{{Status: 301, Description: "To /console/."}}},
		{Method: "GET", Path: "/console/", Tag: "console", Summary: "Web console: overview", Responses: []docResponse{page}},
		{Method: "GET", Path: "/console/{page}", Tag: "console", Summary: "Web console pages",
			Description: "signin, register, keys, playground, usage, admin.",
			Responses:   []docResponse{page, {Status: 404, Description: "No such page.", ContentType: "text/plain"}}},
		{Method: "GET", Path: "/console/assets/{file}", Tag: "console", Summary: "Web console scripts, styles and images",
			Responses: []docResponse{{Status: 200, Description: "The asset.", ContentType: "application/octet-stream"}, docNotFound}},
		{Method: "POST", Path: "/console/api/session", Tag: "console", Summary: "Console sign-in",
			Description: "POST /auth/login for the console: the same body, checks and throttle; the refresh token is set in an HttpOnly, Secure, SameSite=Strict cookie scoped to /console/api/session instead of the body.",
			Request:     credentials{},
			Responses: []docResponse{session, docMalformed, {Status: 401, Description: "Invalid credentials.", Body: errorBody{}}, crossSite,
				{Status: 415, Description: "Not JSON.", Body: errorBody{}}, docValidation, {Status: 429, Description: "Too many login attempts; see Retry-After.", Body: errorBody{}}}},
		{Method: "POST", Path: "/console/api/session/refresh", Tag: "console", Summary: "Console token refresh",
			Description: "POST /auth/refresh with the cookie's refresh token; its successor replaces it in the cookie.",
			Responses:   []docResponse{session, {Status: 401, Description: "No cookie, or its refresh token is no longer valid (the cookie is cleared).", Body: errorBody{}}, crossSite}},
		{Method: "DELETE", Path: "/console/api/session", Tag: "console", Auth: true, Summary: "Console sign-out",
			Description: "POST /auth/logout with the cookie's refresh token; clears the cookie.",
			Responses:   []docResponse{{Status: 204, Description: "Signed out."}, docUnauthorized, crossSite}},
		{Method: "GET", Path: "/console/api/me", Tag: "console", Auth: true, Summary: "Who the console's token acts for",
			Responses: []docResponse{{Status: 200, Description: "The account's id, tier and role now.", Body: consoleMe{}}, docUnauthorized}},
	}
}
