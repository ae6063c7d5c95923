// Package httpapi is agentapi's HTTP surface: routes, handlers, middleware and
// the mapping of errors to responses. It is the only package that knows about
// status codes and JSON error bodies.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/store"
	"go.opentelemetry.io/otel/trace"
)

// userStore is what the handlers need from the account database.
type userStore interface {
	CreateUser(ctx context.Context, u store.User) (store.User, error)
	UserByEmail(ctx context.Context, email string) (store.User, error)
	UserByID(ctx context.Context, id string) (store.User, error)
}

// limiter decides and reports per-key token buckets.
type limiter interface {
	Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error)
	Peek(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error)
}

// ReadyCheck is one dependency /ready asks about.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
	// Optional dependencies degrade the service when down but do not take
	// the replica out of rotation.
	Optional bool
}

// Deps is everything the HTTP layer is built from. run builds each one
// explicitly; nothing here reaches for a global.
type Deps struct {
	Logger  *slog.Logger
	AppName string
	Version string
	Metrics *metrics.Metrics // nil records nothing
	// AccessLog makes each request's log line and counts its metrics; nil
	// means NewAccessLog(Logger, Metrics, 0), a line per request as it ends.
	AccessLog *AccessLog
	// Tracer opens the request spans; nil means no tracing.
	Tracer trace.Tracer
	// MetricsOnAPI serves /metrics on the API's own port; off when
	// METRICS_ADDR gives metrics a listener of their own.
	MetricsOnAPI bool
	Users        userStore
	Admin        adminStore
	Hasher       *auth.Hasher
	Tokens       *auth.Tokens
	// Gateway runs every governed model call: tiers, rate limits, the
	// cache, budgets and usage.
	Gateway *gateway.Gateway
	// Limiter is the rate limiter the login throttle spends from.
	Limiter limiter
	// APIKeys lets API keys (sk-...) authenticate on /chat, /v1 and /usage,
	// and keeps the keys managed through /keys.
	APIKeys keyStore
	// UsageReports answers GET /usage and the day's tokens in the quota.
	UsageReports usageStore
	// StreamWriteTimeout bounds each write of a streamed answer; 0 means 30s.
	StreamWriteTimeout time.Duration
	Ready              []ReadyCheck
	CORSOrigins        []string
	MaxBodyBytes       int64
	// Sessions keeps refresh tokens; nil means logins return an access
	// token only and /auth/refresh answers 404.
	Sessions sessionStore
	// RefreshTTL is a refresh token's lifetime; 0 means 14 days.
	RefreshTTL time.Duration
	// Revoker spreads a logout to every replica; nil refuses the
	// logged-out token in this process only.
	Revoker revoker
	// LoginLimits throttle POST /auth/login on the Limiter.
	LoginLimits LoginLimits
	// Responses stores /v1/responses' responses; nil leaves only
	// store: false responses possible (the rest answer 503).
	Responses responseStore
	// ResponsesTTL is how long a stored response is kept; 0 means 30
	// days.
	ResponsesTTL time.Duration
	// ResponsesContextTokens bounds the estimated conversation a response
	// sends upstream; 0 means no bound.
	ResponsesContextTokens int64
	// Agent runs tools of type "mcp" in /v1/responses (the tool loop);
	// nil refuses them.
	Agent *AgentDeps
	// Conversations keeps the Conversations API's conversations; nil
	// answers its routes (and a response given a conversation) 503.
	Conversations conversationStore
	// CompactionSealer seals the compaction items of
	// /v1/responses/compact; nil refuses compaction.
	CompactionSealer *responses.Sealer
	// Sockets tracks the WebSockets of GET /v1/responses so that shutdown
	// can close them after their running turn; nil means a private one
	// nobody shuts down.
	Sockets *Sockets
	// ResponsesSocketIdle closes a WebSocket idle this long; 0 means 10
	// minutes. ResponsesSocketMemory bounds a socket's memory of its
	// store: false responses; 0 means 16 MiB.
	ResponsesSocketIdle   time.Duration
	ResponsesSocketMemory int64
	// MCPServers is the registry of MCP servers admins manage through
	// /admin/mcp-servers; nil means an empty one that cannot be written.
	MCPServers mcpRegistry
	// MCPGateway serves /mcp; nil answers 404 there.
	MCPGateway mcpGateway
	// MCPCalls reads the tool calls' audit (/admin/mcp-calls,
	// /usage/mcp-calls); nil lists nothing.
	MCPCalls mcpCallStore

	// Models is the model catalogue the admin API reads and changes; nil
	// without MODELS_FILE.
	Models modelCatalogue
}

// NewHandler builds the whole HTTP handler: middleware around every route.
// It fails only if the OpenAPI document cannot be generated (a programming
// error caught by the tests).
func NewHandler(d Deps) (http.Handler, error) {
	doc, err := buildOpenAPI(d.AppName, d.Version, operations())
	if err != nil {
		return nil, err
	}
	if d.AccessLog == nil {
		d.AccessLog = NewAccessLog(d.Logger, d.Metrics, 0)
	}
	rt := newRoutes(d.Logger)
	addRoutes(rt, d, newAccountStates(d.Users, d.Logger), doc)
	var h http.Handler = rt.serve
	h = withBodyLimit(d.Logger, d.MaxBodyBytes)(h)
	h = withCORS(d.CORSOrigins)(h)
	h = withSecurityHeaders(h)
	h = withRecover(d.Logger)(h)
	h = withAccessLog(d.AccessLog)(h)
	h = withTracing(d.Tracer)(h)
	h = withRequestID(h)
	return h, nil
}

// ServerOptions adjusts NewServerWith's limits; zero values keep the defaults.
type ServerOptions struct {
	// ReadHeaderTimeout cuts a client that has not sent its whole request
	// header by then (a slow-header attack); 0 means 10s.
	ReadHeaderTimeout time.Duration
}

// NewServerWith wraps the handler in an http.Server with timeouts that stop
// slow clients from holding connections. There is no WriteTimeout: it would
// cut long model answers; handlers bound their own work instead.
func NewServerWith(addr string, h http.Handler, logger *slog.Logger, o ServerOptions) *http.Server {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
