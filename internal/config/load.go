package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/joho/godotenv"

	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/tier"
)

// fixedVariables are the variables that do not depend on the tier list, in
// the order docs/configuration.md and .env.example present them.
var fixedVariables = []string{
	// application
	"APP_NAME", "APP_ENV", "DEMO_USER",
	// server
	"HOST", "PORT", "READ_HEADER_TIMEOUT", "MAX_BODY_BYTES", "CORS_ORIGINS",
	"STREAM_WRITE_TIMEOUT", "SHUTDOWN_TIMEOUT",
	// auth
	"SECRET_KEY", "SECRET_KEY_PREVIOUS", "ALGORITHM", "ACCESS_TOKEN_EXPIRE_MINUTES",
	"REFRESH_TOKEN_EXPIRE_DAYS", "JWT_ISSUER", "JWT_AUDIENCE", "LOGIN_ATTEMPTS", "TRUSTED_PROXIES",
	// database
	"DATABASE_URL",
	// redis
	"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "REDIS_KEY_PREFIX",
	"RATE_LIMIT_ON_REDIS_ERROR", "RATE_LIMIT_REDIS_TIMEOUT",
	// upstream
	"OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL", "LLM_MODELS", "UPSTREAM_TIMEOUT",
	"UPSTREAM_FALLBACKS", "UPSTREAM_RETRIES", "UPSTREAM_BREAKER_FAILURES", "UPSTREAM_BREAKER_COOLDOWN",
	// model catalogue
	"MODELS_FILE", "MODELS_RELOAD_INTERVAL",
	// responses
	"RESPONSES_TTL", "RESPONSES_CONTEXT_TOKENS", "RESPONSES_WS_IDLE_TIMEOUT", "RESPONSES_WS_MEMORY_BYTES",
	// mcp
	"MCP_CALL_TIMEOUT", "MCP_MAX_OUTPUT_BYTES", "MCP_TOOLS_TTL",
	// agent (server-side tools of /v1/responses)
	"MCP_MAX_TURNS", "MCP_RESPONSE_TIMEOUT", "MCP_MAX_RESPONSE_OUTPUT_BYTES", "MCP_ALLOW_USER_SERVERS",
	"MCP_ALLOW_USER_HTTP", "MCP_BUILTIN_SERVER",
	// cache
	"CACHE_TTL", "CACHE_SCOPE", "CACHE_MAX_BYTES",
	// observability
	"LOG_LEVEL", "ACCESS_LOG_BATCH", "METRICS_ADDR", "OTEL_EXPORTER_OTLP_ENDPOINT",
}

// tierVariables names one tier's variables: each is a prefix, the tier's
// suffix (tier.EnvSuffix) and, for refill rates, "_REFILL".
type tierVariables struct {
	rateLimit, rateLimitRefill       string
	mcpRateLimit, mcpRateLimitRefill string
	maxTokens, maxBodyBytes          string
	tokenBudget                      string
	spendLimit                       string
	maxToolCalls                     string
}

func variablesOf(name string) tierVariables {
	s := tier.EnvSuffix(name)
	return tierVariables{
		rateLimit:          "RATE_LIMIT_" + s,
		rateLimitRefill:    "RATE_LIMIT_" + s + "_REFILL",
		mcpRateLimit:       "MCP_RATE_LIMIT_" + s,
		mcpRateLimitRefill: "MCP_RATE_LIMIT_" + s + "_REFILL",
		maxTokens:          "MAX_TOKENS_" + s,
		maxBodyBytes:       "MAX_BODY_BYTES_" + s,
		tokenBudget:        "TOKEN_BUDGET_" + s,
		spendLimit:         "SPEND_LIMIT_" + s,
		maxToolCalls:       "MAX_TOOL_CALLS_" + s,
	}
}

func (v tierVariables) list() []string {
	return []string{v.rateLimit, v.rateLimitRefill, v.mcpRateLimit, v.mcpRateLimitRefill, v.maxTokens, v.maxBodyBytes, v.tokenBudget, v.spendLimit, v.maxToolCalls}
}

// Variables lists every environment variable Load reads, and only those:
// Load looks up nothing else, so this list is what .env.example and
// docs/configuration.md must document.
func Variables() []string {
	out := slices.Clone(fixedVariables)
	for _, name := range tier.Names() {
		out = append(out, variablesOf(name).list()...)
	}
	return out
}

// tierDefaults are what a tier gets for the variables left unset.
type tierDefaults struct {
	rateLimit       int64
	rateLimitRefill float64
	maxTokens       int64
	// maxBodyBytes 0 means the server-wide MAX_BODY_BYTES.
	maxBodyBytes int64
	// maxToolCalls is the most MCP tool calls of one response.
	maxToolCalls int64
}

// defaultsFor keeps the defaults per tier; a tier without its own entry
// gets the least privileged tier's. A /chat message may be 32,000
// characters: up to 375 KiB of JSON when each is an astral character a
// client escapes as two \u sequences (12 bytes). The free tier's body bound
// leaves room for that.
var defaultsFor = map[string]tierDefaults{
	tier.Free: {rateLimit: 10, rateLimitRefill: 1, maxTokens: 4096, maxBodyBytes: 512 << 10, maxToolCalls: 8},
	tier.Pro:  {rateLimit: 1000, rateLimitRefill: 10, maxTokens: 0, maxBodyBytes: 0, maxToolCalls: 32},
}

// Load reads the configuration. getenv is the process environment (os.Getenv in
// production, a map in tests); envFile, when non-empty and present, is a .env file
// whose values apply only where the environment has none. Every problem found is
// reported at once, each naming its variable.
func Load(getenv func(string) string, envFile string) (Config, error) {
	file := map[string]string{}
	if envFile != "" {
		m, err := godotenv.Read(envFile)
		switch {
		case err == nil:
			file = m
		case errors.Is(err, os.ErrNotExist):
		default:
			return Config{}, fmt.Errorf("config: read %s: %w", envFile, err)
		}
	}
	names := Variables()
	l := loader{values: make(map[string]string), declared: make(map[string]bool, len(names))}
	for _, k := range names {
		l.declared[k] = true
		if v := getenv(k); v != "" {
			l.values[k] = v
		} else if v := file[k]; v != "" {
			l.values[k] = v
		}
	}

	c := Config{
		AppName: l.str("APP_NAME", "AI Agent API"),
		Env:     l.oneOf("APP_ENV", EnvDevelopment, EnvDevelopment, EnvProduction),
	}
	c.DemoUser = l.boolean("DEMO_USER", c.Env == EnvDevelopment)
	c.Server = l.server()
	c.Auth = l.auth(c.Production())
	c.Database = l.database()
	c.Redis = l.redis()
	c.Upstream = l.upstream()
	c.Tiers = l.tiers(c.Server.MaxBodyBytes)
	c.Responses = Responses{
		TTL:           l.duration("RESPONSES_TTL", 30*24*time.Hour, time.Minute),
		ContextTokens: l.integer("RESPONSES_CONTEXT_TOKENS", 128000, 0, 1<<30),
		SocketIdle:    l.duration("RESPONSES_WS_IDLE_TIMEOUT", 10*time.Minute, time.Second),
		SocketMemory:  l.integer("RESPONSES_WS_MEMORY_BYTES", 16<<20, 64<<10, 1<<32),
	}
	c.MCP = l.mcp()
	c.Agent = Agent{
		MaxTurns:               int(l.integer("MCP_MAX_TURNS", 8, 1, 64)),
		ResponseTimeout:        l.duration("MCP_RESPONSE_TIMEOUT", 5*time.Minute, time.Second),
		MaxResponseOutputBytes: int(l.integer("MCP_MAX_RESPONSE_OUTPUT_BYTES", 1<<20, 1<<10, 64<<20)),
		AllowUserServers:       l.boolean("MCP_ALLOW_USER_SERVERS", false),
		AllowUserHTTP:          l.boolean("MCP_ALLOW_USER_HTTP", false),
		BuiltinServer:          l.boolean("MCP_BUILTIN_SERVER", true),
	}
	c.Cache = Cache{
		TTL:      l.duration("CACHE_TTL", time.Hour, 0),
		Scope:    l.oneOf("CACHE_SCOPE", "user", "user", "global"),
		MaxBytes: l.integer("CACHE_MAX_BYTES", 64<<20, 1<<10, 1<<40),
	}
	c.Observability = l.observability()

	if c.Production() {
		switch {
		case c.Auth.SecretKey == "":
			l.fail("SECRET_KEY", "is required when APP_ENV=production")
		case c.Auth.SecretKey == PlaceholderSecret:
			l.fail("SECRET_KEY", "is the placeholder value from the example; set a random secret")
		case len(c.Auth.SecretKey) < MinSecretBytes:
			l.fail("SECRET_KEY", fmt.Sprintf("must be at least %d bytes when APP_ENV=production (got %d)", MinSecretBytes, len(c.Auth.SecretKey)))
		}
		if c.Upstream.APIKey == "" && c.Upstream.ModelsFile == "" {
			l.fail("OPENAI_API_KEY", "is required when APP_ENV=production without MODELS_FILE (the offline mock model is for development)")
		}
		if c.DemoUser {
			l.fail("DEMO_USER", "the demo account is never created when APP_ENV=production")
		}
	}
	if len(l.problems) > 0 {
		return Config{}, fmt.Errorf("config: %d invalid setting(s):\n  %s", len(l.problems), strings.Join(l.problems, "\n  "))
	}
	if c.Auth.SecretKey == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return Config{}, fmt.Errorf("config: generate SECRET_KEY: %w", err)
		}
		c.Auth.SecretKey = hex.EncodeToString(b)
		c.Auth.SecretKeyGenerated = true
	}
	return c, nil
}

func (l *loader) server() Server {
	return Server{
		Host:               l.str("HOST", "0.0.0.0"),
		Port:               int(l.integer("PORT", 8000, 0, 65535)),
		ReadHeaderTimeout:  l.duration("READ_HEADER_TIMEOUT", 10*time.Second, 10*time.Millisecond),
		MaxBodyBytes:       l.integer("MAX_BODY_BYTES", 1<<20, 1, 1<<30),
		CORSOrigins:        l.origins("CORS_ORIGINS"),
		StreamWriteTimeout: l.duration("STREAM_WRITE_TIMEOUT", 30*time.Second, 100*time.Millisecond),
		ShutdownTimeout:    l.duration("SHUTDOWN_TIMEOUT", 30*time.Second, time.Millisecond),
	}
}

func (l *loader) auth(production bool) Auth {
	a := Auth{
		SecretKey:         l.str("SECRET_KEY", ""),
		SecretKeyPrevious: l.str("SECRET_KEY_PREVIOUS", ""),
		Algorithm:         l.oneOf("ALGORITHM", "HS256", "HS256", "HS384", "HS512"),
		AccessTokenTTL:    time.Duration(l.integer("ACCESS_TOKEN_EXPIRE_MINUTES", 30, 1, 60*24*30)) * time.Minute,
		RefreshTokenTTL:   time.Duration(l.integer("REFRESH_TOKEN_EXPIRE_DAYS", 14, 1, 365)) * 24 * time.Hour,
		Issuer:            l.str("JWT_ISSUER", "agentapi"),
		Audience:          l.str("JWT_AUDIENCE", "agentapi"),
		LoginAttempts:     l.integer("LOGIN_ATTEMPTS", 5, 1, 1000),
		TrustedProxies:    l.prefixes("TRUSTED_PROXIES"),
	}
	if a.SecretKeyPrevious != "" && a.SecretKeyPrevious == a.SecretKey {
		l.fail("SECRET_KEY_PREVIOUS", "equals SECRET_KEY; set it to the key being rotated out, or leave it unset")
	}
	if a.SecretKeyPrevious != "" && production && len(a.SecretKeyPrevious) < MinSecretBytes {
		l.fail("SECRET_KEY_PREVIOUS", fmt.Sprintf("must be at least %d bytes when APP_ENV=production (got %d)", MinSecretBytes, len(a.SecretKeyPrevious)))
	}
	return a
}

func (l *loader) database() Database {
	if v, ok := l.lookup("DATABASE_URL"); ok && strings.TrimSpace(v) == "" {
		l.fail("DATABASE_URL", "must not be blank")
	}
	return Database{URL: l.str("DATABASE_URL", "agentapi.db")}
}

func (l *loader) redis() Redis {
	return Redis{
		URL:            l.redisURL(),
		KeyPrefix:      l.redisKeyPrefix(),
		OnError:        l.fallbackMode("RATE_LIMIT_ON_REDIS_ERROR", ratelimit.FallbackLocal),
		LimiterTimeout: l.duration("RATE_LIMIT_REDIS_TIMEOUT", 250*time.Millisecond, time.Millisecond),
	}
}

func (l *loader) upstream() Upstreams {
	u := Upstreams{
		APIKey:          l.str("OPENAI_API_KEY", ""),
		BaseURL:         l.httpURL("OPENAI_BASE_URL", "https://api.openai.com/v1"),
		Model:           l.str("LLM_MODEL", "gpt-4o-mini"),
		Models:          l.models("LLM_MODELS"),
		Timeout:         l.duration("UPSTREAM_TIMEOUT", 60*time.Second, time.Millisecond),
		Fallbacks:       l.upstreams("UPSTREAM_FALLBACKS"),
		Retries:         int(l.integer("UPSTREAM_RETRIES", 2, 0, 10)),
		BreakerFailures: int(l.integer("UPSTREAM_BREAKER_FAILURES", 5, 1, 1000)),
		BreakerCooldown: l.duration("UPSTREAM_BREAKER_COOLDOWN", 30*time.Second, 100*time.Millisecond),
		ModelsFile:      l.str("MODELS_FILE", ""),
		ModelsReload:    l.duration("MODELS_RELOAD_INTERVAL", 5*time.Second, 100*time.Millisecond),
	}
	if strings.ContainsAny(u.Model, " \t\r\n") || len(u.Model) > 200 {
		l.fail("LLM_MODEL", "must be a model name without spaces, at most 200 characters")
	}
	if len(u.Models) > 0 && !slices.Contains(u.Models, u.Model) {
		l.fail("LLM_MODEL", fmt.Sprintf("%q is not in LLM_MODELS; the default model must be one of the allowed ones", u.Model))
	}
	if len(u.Fallbacks) > 0 && u.APIKey == "" && u.ModelsFile == "" {
		l.fail("UPSTREAM_FALLBACKS", "needs OPENAI_API_KEY: without it the offline mock model answers and fallbacks would never be used")
	}
	return u
}

// tiers builds the tier table from each tier's variables. maxBody is
// MAX_BODY_BYTES, which bounds every tier's body bound.
func (l *loader) tiers(maxBody int64) tier.Table {
	var all []tier.Tier
	for _, name := range tier.Names() {
		d, ok := defaultsFor[name]
		if !ok {
			d = defaultsFor[tier.Names()[0]]
		}
		v := variablesOf(name)
		bodyDefault := d.maxBodyBytes
		if bodyDefault == 0 {
			bodyDefault = maxBody
		}
		rate := ratelimit.Policy{
			Capacity:        l.integer(v.rateLimit, d.rateLimit, 1, 1<<40),
			RefillPerSecond: l.float(v.rateLimitRefill, d.rateLimitRefill),
		}
		all = append(all, tier.Tier{
			Name:      name,
			RateLimit: rate,
			MCPRateLimit: ratelimit.Policy{
				Capacity:        l.integer(v.mcpRateLimit, rate.Capacity, 1, 1<<40),
				RefillPerSecond: l.float(v.mcpRateLimitRefill, rate.RefillPerSecond),
			},
			MaxTokens:    l.integer(v.maxTokens, d.maxTokens, 0, 1<<30),
			MaxBodyBytes: l.bodyCap(v.maxBodyBytes, bodyDefault, maxBody),
			DailyTokens:  l.integer(v.tokenBudget, 0, 0, 1<<50),
			DailySpend:   l.usd(v.spendLimit),
			MaxToolCalls: l.integer(v.maxToolCalls, d.maxToolCalls, 0, 1<<20),
		})
	}
	t, err := tier.New(all...)
	if err != nil {
		// Unreachable while every value above is range-checked; reported
		// rather than trusted.
		l.fail("RATE_LIMIT_*", err.Error())
	}
	return t
}

// mcp reads the MCP group. More of the MCP settings (user-supplied
// servers, turn caps) join it here.
func (l *loader) mcp() MCP {
	return MCP{
		CallTimeout:    l.duration("MCP_CALL_TIMEOUT", 30*time.Second, 10*time.Millisecond),
		MaxOutputBytes: l.integer("MCP_MAX_OUTPUT_BYTES", 256<<10, 256, 64<<20),
		ToolsTTL:       l.duration("MCP_TOOLS_TTL", time.Minute, 0),
	}
}

func (l *loader) observability() Observability {
	o := Observability{
		LogLevel:       l.level("LOG_LEVEL", slog.LevelInfo),
		AccessLogBatch: l.duration("ACCESS_LOG_BATCH", 5*time.Millisecond, 0),
		MetricsAddr:    l.hostPort("METRICS_ADDR"),
		OTLPEndpoint:   l.optionalHTTPURL("OTEL_EXPORTER_OTLP_ENDPOINT"),
	}
	if o.AccessLogBatch > time.Second {
		l.fail("ACCESS_LOG_BATCH", fmt.Sprintf("%s is above the maximum 1s: lines would wait too long", o.AccessLogBatch))
	}
	return o
}
