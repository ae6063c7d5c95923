package httpapi

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/invopop/jsonschema"
)

// operation documents one route. The table in operations is the source of the
// OpenAPI document, and a test fails when a route registered in addRoutes is
// missing from it (or the other way round).
type operation struct {
	Method, Path string
	Summary      string
	Description  string
	Tag          string
	Auth         bool // a Bearer credential (JWT or API key) is required
	Request      any  // a value of the request body's Go type, or nil
	Responses    []docResponse
}

// docResponse is one documented status of an operation.
type docResponse struct {
	Status      int
	Description string
	Body        any    // a value of the body's Go type, or nil for no body
	ContentType string // application/json when empty
}

// Reusable response entries.
var (
	docValidation   = docResponse{Status: 422, Description: "Invalid field values; details name each field.", Body: errorBody{}}
	docMalformed    = docResponse{Status: 400, Description: "Malformed JSON.", Body: errorBody{}}
	docTooLarge     = docResponse{Status: 413, Description: "Body larger than MAX_BODY_BYTES.", Body: errorBody{}}
	docChatTooLarge = docResponse{Status: 413, Description: "Body larger than MAX_BODY_BYTES, or than the tier's MAX_BODY_BYTES_<TIER>.", Body: errorBody{}}
	docUnauthorized = docResponse{Status: 401, Description: "Missing, invalid or expired credential.", Body: errorBody{}}
	docForbidden    = docResponse{Status: 403, Description: "Authenticated, but not allowed.", Body: errorBody{}}
	docRateLimited  = docResponse{Status: 429, Description: "Rate limit exceeded; see Retry-After and the RateLimit headers.", Body: rateLimitErrorBody{}}
	docNotFound     = docResponse{Status: 404, Description: "No such resource (or not yours).", Body: errorBody{}}
	docUpstream     = docResponse{Status: 502, Description: "The model provider failed or could not be reached.", Body: errorBody{}}
	docUpstreamBusy = docResponse{Status: 503, Description: "The model provider is rate limiting us, or a dependency is down; see Retry-After.", Body: errorBody{}}
	docTimeout      = docResponse{Status: 504, Description: "The model provider sent nothing within UPSTREAM_TIMEOUT.", Body: errorBody{}}
)

// rateLimitErrorBody documents the 429 body of /chat, the legacy contract's shape.
type rateLimitErrorBody struct {
	Error rateLimitBody `json:"error"`
	Path  string        `json:"path"`
}

// operations lists every route's documentation.
func operations() []operation {
	return append([]operation{
		{Method: "GET", Path: "/", Tag: "service", Summary: "Service name",
			Responses: []docResponse{{Status: 200, Description: "The configured APP_NAME.", Body: map[string]string{}}}},
		{Method: "GET", Path: "/health", Tag: "service", Summary: "Liveness",
			Description: "200 whenever the process serves HTTP; checks no dependency.",
			Responses:   []docResponse{{Status: 200, Description: "Alive.", Body: map[string]string{}}}},
		{Method: "GET", Path: "/ready", Tag: "service", Summary: "Readiness",
			Description: "200 when the database (and Redis, when configured) answer; 503 otherwise.",
			Responses: []docResponse{{Status: 200, Description: "Ready.", Body: readyResponse{}},
				{Status: 503, Description: "A dependency is unavailable.", Body: readyResponse{}}}},
		{Method: "GET", Path: "/metrics", Tag: "service", Summary: "Prometheus metrics",
			Responses: []docResponse{{Status: 200, Description: "Prometheus text exposition format.", ContentType: "text/plain"}}},
		{Method: "GET", Path: "/openapi.json", Tag: "service", Summary: "This OpenAPI document",
			Responses: []docResponse{{Status: 200, Description: "OpenAPI 3.1 document.", Body: map[string]any{}}}},
		{Method: "GET", Path: "/docs", Tag: "service", Summary: "Interactive API documentation",
			Responses: []docResponse{{Status: 200, Description: "HTML page; its assets are served by this binary.", ContentType: "text/html"}}},
		{Method: "GET", Path: "/docs/{asset}", Tag: "service", Summary: "Assets of the documentation page",
			Responses: []docResponse{{Status: 200, Description: "JavaScript or CSS.", ContentType: "application/octet-stream"}, docNotFound}},

		{Method: "POST", Path: "/auth/register", Tag: "auth", Summary: "Create an account",
			Description: "The email is unique without regard to case. Passwords are 8 characters to 1024 bytes and stored as argon2id hashes.",
			Request:     credentials{},
			Responses: []docResponse{{Status: 201, Description: "Created.", Body: registerResponse{}},
				docMalformed, {Status: 409, Description: "Email already registered.", Body: errorBody{}}, docTooLarge, docValidation}},
		{Method: "POST", Path: "/auth/login", Tag: "auth", Summary: "Get an access token and a refresh token",
			Description: "A wrong password and an unknown email get the same 401. Attempts are throttled per account and client address (LOGIN_ATTEMPTS).",
			Request:     credentials{},
			Responses: []docResponse{{Status: 200, Description: "A bearer JWT and a single-use refresh token.", Body: loginResponse{}},
				docMalformed, {Status: 401, Description: "Invalid credentials.", Body: errorBody{}}, docValidation,
				{Status: 429, Description: "Too many login attempts; see Retry-After.", Body: errorBody{}}}},
		{Method: "POST", Path: "/auth/refresh", Tag: "auth", Summary: "Exchange a refresh token for new tokens",
			Description: "The refresh token is single use: the answer carries its successor. Presenting a replaced refresh token again ends the whole session (every refresh token descended from the same login).",
			Request:     refreshRequest{},
			Responses: []docResponse{{Status: 200, Description: "A new access token and refresh token.", Body: loginResponse{}},
				docMalformed, {Status: 401, Description: "Unknown, expired, replaced or revoked refresh token.", Body: errorBody{}}, docValidation}},
		{Method: "POST", Path: "/auth/logout", Tag: "auth", Auth: true, Summary: "End the session",
			Description: "Refuses the bearer access token from now on (every replica within a second) and revokes the refresh tokens of its session. An optional JSON body {\"refresh_token\": ...} revokes that token's session too (another user's token is ignored). API keys cannot log out.",
			Responses:   []docResponse{{Status: 204, Description: "Logged out."}, docMalformed, docUnauthorized}},

		{Method: "POST", Path: "/chat", Tag: "chat", Auth: true, Summary: "Ask the model",
			Description: "Rate limited per user by tier (a request refused as invalid spends nothing), and counted against the tier's daily token budget; the upstream call carries the tier's completion-token cap (MAX_TOKENS_<TIER>) as max_completion_tokens. Identical requests within CACHE_TTL are answered from the cache (from_cache: true, tokens_used: 0). " +
				"With stream: true the answer is text/event-stream: delta events ({content}), then one done ({tokens_used, from_cache, model}) or error ({error, request_id}) event. Accepts a JWT or an API key.",
			Request: chatRequest{},
			Responses: []docResponse{{Status: 200, Description: "The model's answer (JSON, or an event stream with stream: true).", Body: chatResponse{}},
				docMalformed, docUnauthorized, docChatTooLarge, docValidation, docBudgetExceeded, docUpstream, docUpstreamBusy, docTimeout}},
		{Method: "GET", Path: "/chat/quota", Tag: "chat", Auth: true, Summary: "Rate-limit state",
			Description: "Reads the caller's bucket without spending from it, and the tokens used today against the tier's daily budget (token_budget).",
			Responses:   []docResponse{{Status: 200, Description: "The caller's bucket.", Body: quotaResponse{}}, docUnauthorized}},

		{Method: "GET", Path: "/admin/users", Tag: "admin", Auth: true, Summary: "List or find users (admins only)",
			Description: "Query: email (substring), limit (1-500, default 100), offset.",
			Responses:   []docResponse{{Status: 200, Description: "Users, oldest first.", Body: adminUserList{}}, docUnauthorized, docForbidden, docValidation}},
		{Method: "GET", Path: "/admin/users/{id}", Tag: "admin", Auth: true, Summary: "One user (admins only)",
			Responses: []docResponse{{Status: 200, Description: "The user.", Body: adminUser{}}, docUnauthorized, docForbidden, docNotFound}},
		{Method: "PATCH", Path: "/admin/users/{id}", Tag: "admin", Auth: true, Summary: "Change a user's tier, role or disabled flag (admins only)",
			Description: "A disabled user's tokens and API keys stop working within seconds on every replica.",
			Request:     adminUserPatch{},
			Responses: []docResponse{{Status: 200, Description: "The updated user.", Body: adminUser{}},
				docMalformed, docUnauthorized, docForbidden, docNotFound, docValidation}},
		{Method: "GET", Path: "/admin/users/{id}/usage", Tag: "admin", Auth: true, Summary: "A user's token usage (admins only)",
			Description: "Query: from, to (YYYY-MM-DD, UTC; default the current month).",
			Responses:   []docResponse{{Status: 200, Description: "Totals by day and model.", Body: usageReport{}}, docUnauthorized, docForbidden, docNotFound, docValidation}},
	}, slices.Concat(gatewayOperations(), consoleOperations(), responsesOperations(), mcpServerOperations(), mcpGatewayOperations(), modelsOperations(), messagesOperations())...)
}

// routePath turns a ServeMux pattern ("GET /keys/{id}", "GET /{$}") into the
// method and the OpenAPI path.
func routePath(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.ReplaceAll(path, "{$}", "")
	path = strings.ReplaceAll(path, "...}", "}")
	if path == "" {
		path = "/"
	}
	return method, path
}

var pathParam = regexp.MustCompile(`\{([a-zA-Z_]+)\}`)

// buildOpenAPI renders the operations as an OpenAPI 3.1 document. JSON
// Schemas come from the Go types the handlers decode and encode, so the
// document cannot drift from the code.
func buildOpenAPI(title, version string, ops []operation) ([]byte, error) {
	reqReflector := &jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true, RequiredFromJSONSchemaTags: true, AllowAdditionalProperties: true}
	respReflector := &jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true, AllowAdditionalProperties: true}
	schemaOf := func(r *jsonschema.Reflector, v any) (map[string]any, error) {
		b, err := json.Marshal(r.Reflect(v))
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		delete(m, "$schema")
		delete(m, "$id")
		return m, nil
	}
	paths := map[string]map[string]any{}
	for _, op := range ops {
		o := map[string]any{
			"summary":     op.Summary,
			"operationId": operationID(op),
			"tags":        []string{op.Tag},
		}
		if op.Description != "" {
			o["description"] = op.Description
		}
		if op.Auth {
			o["security"] = []map[string][]string{{"bearer": {}}}
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(op.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		if params != nil {
			o["parameters"] = params
		}
		if op.Request != nil {
			s, err := schemaOf(reqReflector, op.Request)
			if err != nil {
				return nil, fmt.Errorf("openapi: %s %s request: %w", op.Method, op.Path, err)
			}
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": s}}}
		}
		responses := map[string]any{}
		for _, r := range op.Responses {
			entry := map[string]any{"description": r.Description}
			ct := r.ContentType
			if ct == "" {
				ct = "application/json"
			}
			switch {
			case r.Body != nil:
				s, err := schemaOf(respReflector, r.Body)
				if err != nil {
					return nil, fmt.Errorf("openapi: %s %s %d: %w", op.Method, op.Path, r.Status, err)
				}
				entry["content"] = map[string]any{ct: map[string]any{"schema": s}}
			case r.ContentType != "":
				entry["content"] = map[string]any{ct: map[string]any{"schema": map[string]string{"type": "string"}}}
			}
			responses[fmt.Sprint(r.Status)] = entry
		}
		o["responses"] = responses
		if paths[op.Path] == nil {
			paths[op.Path] = map[string]any{}
		}
		paths[op.Path][strings.ToLower(op.Method)] = o
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       title,
			"version":     version,
			"description": "AI Agent API: accounts, JWT and API-key authentication, per-user rate limits, response cache, usage accounting and an OpenAI-compatible surface. Errors outside /v1 are a JSON object whose \"error\" is a message or an object and whose \"path\" is the request path; a 5xx adds \"request_id\". Errors on /v1 are OpenAI-shaped. A web console for people is at /console/.",
		},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer",
					"description": "An access token from POST /auth/login, or an API key (sk-...) where API keys are accepted."},
			},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// operationID is a stable, unique name: method plus the path's words.
func operationID(op operation) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(op.Method))
	for _, part := range strings.FieldsFunc(op.Path, func(r rune) bool { return r == '/' || r == '{' || r == '}' || r == '.' || r == '_' || r == '-' }) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	if op.Path == "/" {
		b.WriteString("Root")
	}
	return b.String()
}

//go:embed docsui
var docsAssets embed.FS

// handleOpenAPI serves the document built once at start.
func handleOpenAPI(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}

// handleDocs serves Swagger UI from files embedded in the binary: no CDN, so
// the page works offline and nothing third-party runs in the browser.
func handleDocs() http.Handler {
	sub, err := fs.Sub(docsAssets, "docsui")
	if err != nil {
		panic(err) // the directory is embedded at build time; absence is a build bug
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A relaxed Cache-Control for static assets; the security headers
		// middleware set no-store for API answers.
		w.Header().Set("Cache-Control", "public, max-age=3600")
		if r.URL.Path == "/docs" || r.URL.Path == "/docs/" {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/"
			files.ServeHTTP(w, r2)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/docs")
		files.ServeHTTP(w, r2)
	})
}

// documentedRoutes returns "METHOD path" for every documented operation, sorted.
func documentedRoutes(ops []operation) []string {
	out := make([]string, 0, len(ops))
	for _, op := range ops {
		out = append(out, op.Method+" "+op.Path)
	}
	sort.Strings(out)
	return out
}
