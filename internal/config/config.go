// Package config loads agentapi's settings from the environment and an optional
// .env file. It is the only place in the program that reads either.
//
// config.go holds the settings' types, load.go the one list of variables and
// how they become a Config, parse.go the parsers of single values.
package config

import (
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/tier"
)

// Environments the service knows.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// PlaceholderSecret is the sample SECRET_KEY of the example files; production
// refuses it.
const PlaceholderSecret = "your-secret-key-here"

// MinSecretBytes is the shortest SECRET_KEY production accepts (256 bits for HS256).
const MinSecretBytes = 32

// Config is every setting the service reads, loaded once at start and grouped
// by the part of the service that uses it.
type Config struct {
	// AppName is shown by /health and the API docs (APP_NAME).
	AppName string
	// Env is EnvDevelopment or EnvProduction (APP_ENV).
	Env string
	// DemoUser creates user@example.com / password at start (DEMO_USER;
	// development only).
	DemoUser bool

	Server        Server
	Auth          Auth
	Database      Database
	Redis         Redis
	Upstream      Upstreams
	Tiers         tier.Table
	Responses     Responses
	MCP           MCP
	Agent         Agent
	Cache         Cache
	Observability Observability
}

// Server is the HTTP listener and the bounds it puts on every request.
type Server struct {
	Host string
	Port int
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers (READ_HEADER_TIMEOUT): the slow-header defence.
	ReadHeaderTimeout time.Duration
	// MaxBodyBytes bounds every request body; the tiers' bounds sit within
	// it (MAX_BODY_BYTES).
	MaxBodyBytes int64
	// CORSOrigins are the browser origins allowed by CORS (CORS_ORIGINS).
	CORSOrigins []string
	// StreamWriteTimeout bounds each write of a streamed answer to the
	// client, so a client that stops reading cannot hold a stream open.
	StreamWriteTimeout time.Duration
	// ShutdownTimeout is how long SIGTERM waits for requests in flight.
	ShutdownTimeout time.Duration
}

// Addr is the listen address built from HOST and PORT.
func (s Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Auth is how tokens are signed and checked, and how logins are throttled.
type Auth struct {
	SecretKey string
	// SecretKeyGenerated reports that SECRET_KEY was unset in development and a
	// random per-process key was made instead (tokens die with the process).
	SecretKeyGenerated bool
	// SecretKeyPrevious still verifies tokens signed before a key rotation
	// (those whose kid names it); it never signs (SECRET_KEY_PREVIOUS).
	SecretKeyPrevious string
	Algorithm         string
	AccessTokenTTL    time.Duration
	// RefreshTokenTTL is a refresh token's lifetime (REFRESH_TOKEN_EXPIRE_DAYS).
	RefreshTokenTTL time.Duration
	Issuer          string
	Audience        string
	// LoginAttempts is the login throttle's base: attempts per account and
	// address before 429 (LOGIN_ATTEMPTS; see httpapi.LoginLimits).
	LoginAttempts int64
	// TrustedProxies are the networks whose X-Forwarded-For is believed when
	// telling clients apart for the login throttle (TRUSTED_PROXIES).
	TrustedProxies []netip.Prefix
}

// Database is where accounts, keys and usage are stored.
type Database struct {
	// URL is a SQLite path (optionally sqlite://path) or a postgres:// URL
	// (DATABASE_URL).
	URL string
}

// Redis is the shared store of limits, cache, budgets and logouts.
type Redis struct {
	// URL is set from REDIS_URL, or built from an explicitly set REDIS_HOST
	// (with REDIS_PORT, REDIS_DB, REDIS_PASSWORD). Empty means in-process
	// backends.
	URL string
	// KeyPrefix starts every key agentapi writes to Redis; the limiter
	// and the cache append their own "rl:" and "cache:". Deployments (or
	// tests) sharing one Redis stay apart by using different prefixes.
	KeyPrefix string
	// OnError is what the limiter does while Redis fails
	// (RATE_LIMIT_ON_REDIS_ERROR).
	OnError ratelimit.FallbackMode
	// LimiterTimeout bounds one limiter decision in Redis; past it OnError
	// decides (RATE_LIMIT_REDIS_TIMEOUT). Longer means exact limits through
	// slower Redis moments, shorter means less added latency.
	LimiterTimeout time.Duration
}

// FailsOpen reports whether requests go on while Redis is out (every mode but
// deny): a replica without Redis then stays ready, and token budgets let calls
// through.
func (r Redis) FailsOpen() bool { return r.OnError != ratelimit.FallbackDeny }

// Upstreams are the OpenAI-compatible APIs that answer model calls.
type Upstreams struct {
	// APIKey is OPENAI_API_KEY; empty means the built-in offline model.
	APIKey  string
	BaseURL string
	// Model is the model used when a request names none (LLM_MODEL).
	Model string
	// Models is the allowlist from LLM_MODELS: the models requests may
	// name and GET /v1/models lists. Empty means any model, and the list
	// comes from the upstream.
	Models  []string
	Timeout time.Duration
	// Fallbacks are tried in order after BaseURL when it fails with a
	// connection error, a 429 or a 5xx (UPSTREAM_FALLBACKS).
	Fallbacks []Upstream
	// Retries is how many extra rounds over the upstreams a call gets when
	// all failed in a retryable way (UPSTREAM_RETRIES).
	Retries int
	// BreakerFailures consecutive failures open an upstream's circuit for
	// BreakerCooldown, after which one probe goes through.
	BreakerFailures int
	BreakerCooldown time.Duration
	// ModelsFile is the model catalogue (MODELS_FILE): with it, requests
	// are routed by model name to the catalogue's deployments and the
	// variables above serve only as defaults (LLM_MODEL) and timings.
	// ModelsReload is how often the file is checked for changes.
	ModelsFile   string
	ModelsReload time.Duration
}

// Upstream is one more OpenAI-compatible API to fall back on.
type Upstream struct {
	BaseURL string
	APIKey  string
}

// Responses is the stored state of the Responses API (/v1/responses).
type Responses struct {
	// TTL is how long a stored response is kept (RESPONSES_TTL); a
	// background purge deletes older ones.
	TTL time.Duration
	// ContextTokens bounds the estimated size of the conversation a
	// response sends upstream, its chain included
	// (RESPONSES_CONTEXT_TOKENS); 0 means no bound. Beyond it, truncation
	// "disabled" is a 400 and "auto" drops the chain's oldest items.
	ContextTokens int64
	// SocketIdle closes a WebSocket of GET /v1/responses that has run no
	// response for this long (RESPONSES_WS_IDLE_TIMEOUT).
	SocketIdle time.Duration
	// SocketMemory bounds the store: false responses one WebSocket keeps
	// for continuation, in bytes (RESPONSES_WS_MEMORY_BYTES); the oldest
	// are forgotten first.
	SocketMemory int64
}

// MCP is how agentapi talks to MCP servers: the agent loop's tool calls
// and the MCP gateway's share these bounds.
type MCP struct {
	// CallTimeout bounds one tool call (or tool listing) to an MCP server,
	// connecting included (MCP_CALL_TIMEOUT).
	CallTimeout time.Duration
	// MaxOutputBytes is the most of a tool's result agentapi passes on;
	// the rest is cut and the result marked as cut (MCP_MAX_OUTPUT_BYTES).
	MaxOutputBytes int64
	// ToolsTTL is how long a server's tool list is reused before it is
	// asked again (MCP_TOOLS_TTL); 0 asks every time.
	ToolsTTL time.Duration
}

// Agent is the server-side tool loop of /v1/responses: tools of type
// "mcp" that agentapi runs for the client.
type Agent struct {
	// MaxTurns is the most model turns of one response (MCP_MAX_TURNS).
	MaxTurns int
	// ResponseTimeout bounds a whole response with its tool calls
	// (MCP_RESPONSE_TIMEOUT).
	ResponseTimeout time.Duration
	// MaxResponseOutputBytes bounds the tools' output over one response
	// (MCP_MAX_RESPONSE_OUTPUT_BYTES).
	MaxResponseOutputBytes int
	// AllowUserServers lets a request name its own server_url
	// (MCP_ALLOW_USER_SERVERS); only public addresses are dialled.
	AllowUserServers bool
	// AllowUserHTTP lets such a URL be plain http (MCP_ALLOW_USER_HTTP).
	AllowUserHTTP bool
	// BuiltinServer serves the built-in "agentapi" MCP server
	// (MCP_BUILTIN_SERVER).
	BuiltinServer bool
}

// Cache is the response cache.
type Cache struct {
	// TTL is a cached answer's longest life; 0 turns the cache off.
	TTL time.Duration
	// Scope is "user" (each user's own answers) or "global".
	Scope string
	// MaxBytes bounds the in-process cache's memory.
	MaxBytes int64
}

// Observability is logging, metrics and tracing.
type Observability struct {
	LogLevel slog.Level
	// AccessLogBatch is how long access-log lines and request metrics may
	// wait to be made in a batch (ACCESS_LOG_BATCH, at most 1s); 0 makes
	// each request make its own as it ends.
	AccessLogBatch time.Duration
	// MetricsAddr, when set, serves /metrics on its own listener (and not on
	// the API port), so scrapes can stay on a private network.
	MetricsAddr string
	// OTLPEndpoint, when set, exports trace spans over OTLP/HTTP there
	// (OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://otel-collector:4318).
	OTLPEndpoint string
}

// Production reports whether the service runs with production safeguards.
func (c Config) Production() bool { return c.Env == EnvProduction }

// MockLLM reports whether the built-in offline model answers instead of an upstream.
func (c Config) MockLLM() bool { return c.Upstream.APIKey == "" && c.Upstream.ModelsFile == "" }

// LogValue prints the effective configuration with every secret masked, so the
// start-up log line can show it without leaking anything. Keys are the
// variables' names in lower case, grouped as Config is.
func (c Config) LogValue() slog.Value {
	s, a, r, u, ch, o := c.Server, c.Auth, c.Redis, c.Upstream, c.Cache, c.Observability
	return slog.GroupValue(
		slog.String("app_name", c.AppName),
		slog.String("env", c.Env),
		slog.Bool("demo_user", c.DemoUser),
		slog.Group("server",
			slog.String("addr", s.Addr()),
			slog.String("read_header_timeout", s.ReadHeaderTimeout.String()),
			slog.Int64("max_body_bytes", s.MaxBodyBytes),
			slog.Any("cors_origins", s.CORSOrigins),
			slog.String("stream_write_timeout", s.StreamWriteTimeout.String()),
			slog.String("shutdown_timeout", s.ShutdownTimeout.String()),
		),
		slog.Group("auth",
			slog.String("secret_key", maskSecret(a.SecretKey)),
			slog.Bool("secret_key_generated", a.SecretKeyGenerated),
			slog.String("secret_key_previous", maskSecret(a.SecretKeyPrevious)),
			slog.String("algorithm", a.Algorithm),
			slog.String("access_token_ttl", a.AccessTokenTTL.String()),
			slog.String("refresh_token_ttl", a.RefreshTokenTTL.String()),
			slog.String("jwt_issuer", a.Issuer),
			slog.String("jwt_audience", a.Audience),
			slog.Int64("login_attempts", a.LoginAttempts),
			slog.Int("trusted_proxies", len(a.TrustedProxies)),
		),
		slog.String("database_url", redactURL(c.Database.URL)),
		slog.Group("redis",
			slog.String("redis_url", redactURL(r.URL)),
			slog.String("redis_key_prefix", r.KeyPrefix),
			slog.String("rate_limit_on_redis_error", string(r.OnError)),
			slog.String("rate_limit_redis_timeout", r.LimiterTimeout.String()),
		),
		slog.Group("upstream",
			slog.String("openai_api_key", maskSecret(u.APIKey)),
			slog.String("openai_base_url", redactURL(u.BaseURL)),
			slog.String("llm_model", u.Model),
			slog.Any("llm_models", u.Models),
			slog.String("upstream_timeout", u.Timeout.String()),
			slog.Any("upstream_fallbacks", upstreamsForLog(u.Fallbacks)),
			slog.Int("upstream_retries", u.Retries),
			slog.Int("upstream_breaker_failures", u.BreakerFailures),
			slog.String("upstream_breaker_cooldown", u.BreakerCooldown.String()),
			slog.String("models_file", u.ModelsFile),
			slog.String("models_reload_interval", u.ModelsReload.String()),
		),
		slog.Any("tiers", tiersForLog(c.Tiers)),
		slog.Group("responses",
			slog.String("responses_ttl", c.Responses.TTL.String()),
			slog.Int64("responses_context_tokens", c.Responses.ContextTokens),
		),
		slog.Group("mcp",
			slog.String("mcp_call_timeout", c.MCP.CallTimeout.String()),
			slog.Int64("mcp_max_output_bytes", c.MCP.MaxOutputBytes),
			slog.String("mcp_tools_ttl", c.MCP.ToolsTTL.String()),
		),
		slog.Group("agent",
			slog.Int("mcp_max_turns", c.Agent.MaxTurns),
			slog.String("mcp_response_timeout", c.Agent.ResponseTimeout.String()),
			slog.Int("mcp_max_response_output_bytes", c.Agent.MaxResponseOutputBytes),
			slog.Bool("mcp_allow_user_servers", c.Agent.AllowUserServers),
			slog.Bool("mcp_allow_user_http", c.Agent.AllowUserHTTP),
			slog.Bool("mcp_builtin_server", c.Agent.BuiltinServer),
		),
		slog.Group("cache",
			slog.String("cache_ttl", ch.TTL.String()),
			slog.String("cache_scope", ch.Scope),
			slog.Int64("cache_max_bytes", ch.MaxBytes),
		),
		slog.Group("observability",
			slog.String("log_level", o.LogLevel.String()),
			slog.String("access_log_batch", o.AccessLogBatch.String()),
			slog.String("metrics_addr", o.MetricsAddr),
			slog.String("otel_exporter_otlp_endpoint", redactURL(o.OTLPEndpoint)),
		),
	)
}

// tiersForLog renders each tier as one group named after it.
func tiersForLog(t tier.Table) slog.Value {
	var attrs []slog.Attr
	for _, v := range t.All() {
		attrs = append(attrs, slog.Group(v.Name,
			slog.Int64("rate_limit", v.RateLimit.Capacity),
			slog.Float64("rate_limit_refill", v.RateLimit.RefillPerSecond),
			slog.Int64("mcp_rate_limit", v.MCPRateLimit.Capacity),
			slog.Float64("mcp_rate_limit_refill", v.MCPRateLimit.RefillPerSecond),
			slog.Int64("max_tokens", v.MaxTokens),
			slog.Int64("max_tool_calls", v.MaxToolCalls),
			slog.Int64("max_body_bytes", v.MaxBodyBytes),
			slog.Int64("token_budget", v.DailyTokens),
		))
	}
	return slog.GroupValue(attrs...)
}

func maskSecret(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}

// redactURL hides a password inside a URL (redis://:pw@host, postgres://u:pw@host).
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		// Unparsable (a host list with a port missing, say): whatever
		// stands between the scheme and the last '@' may be a password.
		if scheme, rest, ok := strings.Cut(s, "://"); ok {
			end := strings.IndexAny(rest, "/?#")
			if end < 0 {
				end = len(rest)
			}
			if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
				return scheme + "://xxxxx" + rest[at:]
			}
		}
		return s
	}
	if u.User == nil {
		return s
	}
	return u.Redacted()
}

// String shows the URL (without any password) and hides the key, so an
// Upstream printed by mistake leaks nothing.
func (u Upstream) String() string {
	if u.APIKey == "" {
		return redactURL(u.BaseURL) + " (no key)"
	}
	return redactURL(u.BaseURL) + " (key ***)"
}

// LogValue is String, for slog.
func (u Upstream) LogValue() slog.Value { return slog.StringValue(u.String()) }

// upstreamsForLog renders fallbacks one string each; slog does not call
// LogValue on the elements of a slice.
func upstreamsForLog(ups []Upstream) []string {
	out := make([]string, len(ups))
	for i, u := range ups {
		out[i] = u.String()
	}
	return out
}
