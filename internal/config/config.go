// Package config loads agentapi's settings from the environment and an optional
// .env file. It is the only place in the program that reads either.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/joho/godotenv"
)

// Environments the service knows.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// PlaceholderSecret is the prototype's sample SECRET_KEY; production refuses it.
const PlaceholderSecret = "your-secret-key-here"

// MinSecretBytes is the shortest SECRET_KEY production accepts (256 bits for HS256).
const MinSecretBytes = 32

// Config is every setting the service reads, loaded once at start.
type Config struct {
	AppName string
	Debug   bool
	Env     string
	Host    string
	Port    int

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
	// LoginAttempts is the login throttle's base: attempts per account and
	// address before 429 (LOGIN_ATTEMPTS; see httpapi.LoginLimits).
	LoginAttempts int64
	// TrustedProxies are the networks whose X-Forwarded-For is believed when
	// telling clients apart for the login throttle (TRUSTED_PROXIES).
	TrustedProxies []netip.Prefix
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers (READ_HEADER_TIMEOUT): the slow-header defence.
	ReadHeaderTimeout time.Duration
	JWTIssuer         string
	JWTAudience       string

	DatabaseURL string

	// RedisURL is set from REDIS_URL, or built from an explicitly set REDIS_HOST
	// (with REDIS_PORT, REDIS_DB, REDIS_PASSWORD). Empty means in-process backends.
	RedisURL string
	// RedisKeyPrefix starts every key agentapi writes to Redis; the limiter
	// and the cache append their own "rl:" and "cache:". Deployments (or
	// tests) sharing one Redis stay apart by using different prefixes.
	RedisKeyPrefix        string
	RateLimitOnRedisError string
	// RateLimitRedisTimeout bounds one limiter decision in Redis; past it the
	// RATE_LIMIT_ON_REDIS_ERROR fallback decides. Longer means exact limits
	// through slower Redis moments, shorter means less added latency.
	RateLimitRedisTimeout time.Duration

	OpenAIAPIKey    string
	OpenAIBaseURL   string
	LLMModel        string
	UpstreamTimeout time.Duration
	// LLMModels is the allowlist from LLM_MODELS: the models requests may
	// name and GET /v1/models lists. Empty means any model, and the list
	// comes from the upstream.
	LLMModels []string
	// UpstreamFallbacks are tried in order after OPENAI_BASE_URL when it
	// fails with a connection error, a 429 or a 5xx (UPSTREAM_FALLBACKS).
	UpstreamFallbacks []Upstream
	// UpstreamRetries is how many extra rounds over the upstreams a call
	// gets when all failed in a retryable way (UPSTREAM_RETRIES).
	UpstreamRetries int
	// UpstreamBreakerFailures consecutive failures open an upstream's
	// circuit for UpstreamBreakerCooldown, after which one probe goes
	// through.
	UpstreamBreakerFailures int
	UpstreamBreakerCooldown time.Duration
	// StreamWriteTimeout bounds each write of a streamed answer to the
	// client, so a client that stops reading cannot hold a stream open.
	StreamWriteTimeout time.Duration

	// TokenBudgetFree and TokenBudgetPro are tokens per user per UTC day;
	// 0 means no budget.
	TokenBudgetFree int64
	TokenBudgetPro  int64

	RateLimitFree       int64
	RateLimitPro        int64
	RateLimitFreeRefill float64
	RateLimitProRefill  float64

	CORSOrigins  []string
	MaxBodyBytes int64
	// MaxTokensFree and MaxTokensPro cap the completion tokens one call
	// of the tier may ask for (MAX_TOKENS_FREE, MAX_TOKENS_PRO); 0 means
	// no cap.
	MaxTokensFree int64
	MaxTokensPro  int64
	// MaxBodyBytesFree and MaxBodyBytesPro bound a model call's request
	// body per tier, within MaxBodyBytes (MAX_BODY_BYTES_FREE,
	// MAX_BODY_BYTES_PRO).
	MaxBodyBytesFree int64
	MaxBodyBytesPro  int64

	// ResponsesTTL is how long a stored response of /v1/responses is kept
	// (RESPONSES_TTL); a background purge deletes older ones.
	ResponsesTTL time.Duration
	// ResponsesContextTokens bounds the estimated size of the conversation
	// a response sends upstream, its chain included
	// (RESPONSES_CONTEXT_TOKENS); 0 means no bound. Beyond it, truncation
	// "disabled" is a 400 and "auto" drops the chain's oldest items.
	ResponsesContextTokens int64

	CacheTTL      time.Duration
	CacheScope    string
	CacheMaxBytes int64

	LogLevel slog.Level
	// AccessLogBatch is how long access-log lines and request metrics may
	// wait to be made in a batch (ACCESS_LOG_BATCH, at most 1s); 0 makes
	// each request make its own as it ends.
	AccessLogBatch  time.Duration
	ShutdownTimeout time.Duration
	// MetricsAddr, when set, serves /metrics on its own listener (and not on
	// the API port), so scrapes can stay on a private network.
	MetricsAddr string
	// OTLPEndpoint, when set, exports trace spans over OTLP/HTTP there
	// (OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://otel-collector:4318).
	OTLPEndpoint string
	// DemoUser creates user@example.com / password at start (development only).
	DemoUser bool
}

// Production reports whether the service runs with production safeguards.
func (c Config) Production() bool { return c.Env == EnvProduction }

// Addr is the listen address built from HOST and PORT.
func (c Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// MockLLM reports whether the built-in offline model answers instead of an upstream.
func (c Config) MockLLM() bool { return c.OpenAIAPIKey == "" }

// LogValue prints the effective configuration with every secret masked, so the
// start-up log line can show it without leaking anything.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("app_name", c.AppName),
		slog.String("env", c.Env),
		slog.Bool("debug", c.Debug),
		slog.String("addr", c.Addr()),
		slog.String("secret_key", maskSecret(c.SecretKey)),
		slog.Bool("secret_key_generated", c.SecretKeyGenerated),
		slog.String("secret_key_previous", maskSecret(c.SecretKeyPrevious)),
		slog.String("refresh_token_ttl", c.RefreshTokenTTL.String()),
		slog.Int64("login_attempts", c.LoginAttempts),
		slog.Int("trusted_proxies", len(c.TrustedProxies)),
		slog.String("read_header_timeout", c.ReadHeaderTimeout.String()),
		slog.String("algorithm", c.Algorithm),
		slog.String("access_token_ttl", c.AccessTokenTTL.String()),
		slog.String("database_url", redactURL(c.DatabaseURL)),
		slog.String("redis_url", redactURL(c.RedisURL)),
		slog.String("redis_key_prefix", c.RedisKeyPrefix),
		slog.String("rate_limit_on_redis_error", c.RateLimitOnRedisError),
		slog.String("rate_limit_redis_timeout", c.RateLimitRedisTimeout.String()),
		slog.String("openai_api_key", maskSecret(c.OpenAIAPIKey)),
		slog.String("openai_base_url", redactURL(c.OpenAIBaseURL)),
		slog.String("llm_model", c.LLMModel),
		slog.String("upstream_timeout", c.UpstreamTimeout.String()),
		slog.Any("llm_models", c.LLMModels),
		slog.Any("upstream_fallbacks", upstreamsForLog(c.UpstreamFallbacks)),
		slog.Int("upstream_retries", c.UpstreamRetries),
		slog.Int("upstream_breaker_failures", c.UpstreamBreakerFailures),
		slog.String("upstream_breaker_cooldown", c.UpstreamBreakerCooldown.String()),
		slog.String("stream_write_timeout", c.StreamWriteTimeout.String()),
		slog.Int64("token_budget_free", c.TokenBudgetFree),
		slog.Int64("token_budget_pro", c.TokenBudgetPro),
		slog.Int64("rate_limit_free", c.RateLimitFree),
		slog.Float64("rate_limit_free_refill", c.RateLimitFreeRefill),
		slog.Int64("rate_limit_pro", c.RateLimitPro),
		slog.Float64("rate_limit_pro_refill", c.RateLimitProRefill),
		slog.Any("cors_origins", c.CORSOrigins),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.Int64("max_tokens_free", c.MaxTokensFree),
		slog.Int64("max_tokens_pro", c.MaxTokensPro),
		slog.Int64("max_body_bytes_free", c.MaxBodyBytesFree),
		slog.Int64("max_body_bytes_pro", c.MaxBodyBytesPro),
		slog.String("responses_ttl", c.ResponsesTTL.String()),
		slog.Int64("responses_context_tokens", c.ResponsesContextTokens),
		slog.String("cache_ttl", c.CacheTTL.String()),
		slog.String("cache_scope", c.CacheScope),
		slog.Int64("cache_max_bytes", c.CacheMaxBytes),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("access_log_batch", c.AccessLogBatch.String()),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.String("otel_exporter_otlp_endpoint", redactURL(c.OTLPEndpoint)),
		slog.Bool("demo_user", c.DemoUser),
	)
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
	l := loader{lookup: func(k string) (string, bool) {
		if v := getenv(k); v != "" {
			return v, true
		}
		v, ok := file[k]
		return v, ok && v != ""
	}}
	c := Config{
		AppName:               l.str("APP_NAME", "AI Agent API"),
		Debug:                 l.boolean("DEBUG", false),
		Env:                   l.oneOf("APP_ENV", EnvDevelopment, EnvDevelopment, EnvProduction),
		Host:                  l.str("HOST", "0.0.0.0"),
		Port:                  int(l.integer("PORT", 8000, 0, 65535)),
		SecretKey:             l.str("SECRET_KEY", ""),
		Algorithm:             l.oneOf("ALGORITHM", "HS256", "HS256", "HS384", "HS512"),
		AccessTokenTTL:        time.Duration(l.integer("ACCESS_TOKEN_EXPIRE_MINUTES", 30, 1, 60*24*30)) * time.Minute,
		JWTIssuer:             l.str("JWT_ISSUER", "agentapi"),
		JWTAudience:           l.str("JWT_AUDIENCE", "agentapi"),
		DatabaseURL:           l.str("DATABASE_URL", "agentapi.db"),
		RateLimitOnRedisError: l.oneOf("RATE_LIMIT_ON_REDIS_ERROR", "local", "local", "allow", "deny"),
		RateLimitRedisTimeout: l.duration("RATE_LIMIT_REDIS_TIMEOUT", 250*time.Millisecond, time.Millisecond),
		OpenAIAPIKey:          l.str("OPENAI_API_KEY", ""),
		OpenAIBaseURL:         l.httpURL("OPENAI_BASE_URL", "https://api.openai.com/v1"),
		LLMModel:              l.str("LLM_MODEL", "gpt-4o-mini"),
		UpstreamTimeout:       l.duration("UPSTREAM_TIMEOUT", 60*time.Second, time.Millisecond),
		RateLimitFree:         l.integer("RATE_LIMIT_FREE", 10, 1, 1<<40),
		RateLimitPro:          l.integer("RATE_LIMIT_PRO", 1000, 1, 1<<40),
		RateLimitFreeRefill:   l.float("RATE_LIMIT_FREE_REFILL", 1),
		RateLimitProRefill:    l.float("RATE_LIMIT_PRO_REFILL", 10),
		CORSOrigins:           l.origins("CORS_ORIGINS"),
		MaxBodyBytes:          l.integer("MAX_BODY_BYTES", 1<<20, 1, 1<<30),
		CacheTTL:              l.duration("CACHE_TTL", time.Hour, 0),
		CacheScope:            l.oneOf("CACHE_SCOPE", "user", "user", "global"),
		CacheMaxBytes:         l.integer("CACHE_MAX_BYTES", 64<<20, 1<<10, 1<<40),
		LogLevel:              l.level("LOG_LEVEL", slog.LevelInfo),
		AccessLogBatch:        l.duration("ACCESS_LOG_BATCH", 5*time.Millisecond, 0),
		ShutdownTimeout:       l.duration("SHUTDOWN_TIMEOUT", 30*time.Second, time.Millisecond),
		MetricsAddr:           l.hostPort("METRICS_ADDR"),
		OTLPEndpoint:          l.optionalHTTPURL("OTEL_EXPORTER_OTLP_ENDPOINT"),
		SecretKeyPrevious:     l.str("SECRET_KEY_PREVIOUS", ""),
		RefreshTokenTTL:       time.Duration(l.integer("REFRESH_TOKEN_EXPIRE_DAYS", 14, 1, 365)) * 24 * time.Hour,
		LoginAttempts:         l.integer("LOGIN_ATTEMPTS", 5, 1, 1000),
		TrustedProxies:        l.prefixes("TRUSTED_PROXIES"),
		ReadHeaderTimeout:     l.duration("READ_HEADER_TIMEOUT", 10*time.Second, 10*time.Millisecond),
	}
	if c.SecretKeyPrevious != "" && c.SecretKeyPrevious == c.SecretKey {
		l.fail("SECRET_KEY_PREVIOUS", "equals SECRET_KEY; set it to the key being rotated out, or leave it unset")
	}
	if c.SecretKeyPrevious != "" && c.Env == EnvProduction && len(c.SecretKeyPrevious) < MinSecretBytes {
		l.fail("SECRET_KEY_PREVIOUS", fmt.Sprintf("must be at least %d bytes when APP_ENV=production (got %d)", MinSecretBytes, len(c.SecretKeyPrevious)))
	}
	c.DemoUser = l.boolean("DEMO_USER", c.Env == EnvDevelopment)
	c.LLMModels = l.models("LLM_MODELS")
	c.UpstreamFallbacks = l.upstreams("UPSTREAM_FALLBACKS")
	c.UpstreamRetries = int(l.integer("UPSTREAM_RETRIES", 2, 0, 10))
	c.UpstreamBreakerFailures = int(l.integer("UPSTREAM_BREAKER_FAILURES", 5, 1, 1000))
	c.UpstreamBreakerCooldown = l.duration("UPSTREAM_BREAKER_COOLDOWN", 30*time.Second, 100*time.Millisecond)
	c.StreamWriteTimeout = l.duration("STREAM_WRITE_TIMEOUT", 30*time.Second, 100*time.Millisecond)
	c.TokenBudgetFree = l.integer("TOKEN_BUDGET_FREE", 0, 0, 1<<50)
	c.TokenBudgetPro = l.integer("TOKEN_BUDGET_PRO", 0, 0, 1<<50)
	c.MaxTokensFree = l.integer("MAX_TOKENS_FREE", 4096, 0, 1<<30)
	c.MaxTokensPro = l.integer("MAX_TOKENS_PRO", 0, 0, 1<<30)
	c.ResponsesTTL = l.duration("RESPONSES_TTL", 30*24*time.Hour, time.Minute)
	c.ResponsesContextTokens = l.integer("RESPONSES_CONTEXT_TOKENS", 128000, 0, 1<<30)
	if c.AccessLogBatch > time.Second {
		l.fail("ACCESS_LOG_BATCH", fmt.Sprintf("%s is above the maximum 1s: lines would wait too long", c.AccessLogBatch))
	}
	// A /chat message may be 32,000 characters: up to 375 KiB of JSON
	// when each is an astral character a client escapes as two \u
	// sequences (12 bytes). The free default leaves room for that.
	c.MaxBodyBytesFree = l.bodyCap("MAX_BODY_BYTES_FREE", 512<<10, c.MaxBodyBytes)
	c.MaxBodyBytesPro = l.bodyCap("MAX_BODY_BYTES_PRO", c.MaxBodyBytes, c.MaxBodyBytes)
	c.RedisURL = l.redisURL()
	c.RedisKeyPrefix = l.redisKeyPrefix()
	if v, ok := l.lookup("DATABASE_URL"); ok && strings.TrimSpace(v) == "" {
		l.fail("DATABASE_URL", "must not be blank")
	}
	if strings.ContainsAny(c.LLMModel, " \t\r\n") || len(c.LLMModel) > 200 {
		l.fail("LLM_MODEL", "must be a model name without spaces, at most 200 characters")
	}
	if len(c.LLMModels) > 0 && !slices.Contains(c.LLMModels, c.LLMModel) {
		l.fail("LLM_MODEL", fmt.Sprintf("%q is not in LLM_MODELS; the default model must be one of the allowed ones", c.LLMModel))
	}
	if len(c.UpstreamFallbacks) > 0 && c.OpenAIAPIKey == "" {
		l.fail("UPSTREAM_FALLBACKS", "needs OPENAI_API_KEY: without it the offline mock model answers and fallbacks would never be used")
	}

	if c.Production() {
		switch {
		case c.SecretKey == "":
			l.fail("SECRET_KEY", "is required when APP_ENV=production")
		case c.SecretKey == PlaceholderSecret:
			l.fail("SECRET_KEY", "is the placeholder value from the example; set a random secret")
		case len(c.SecretKey) < MinSecretBytes:
			l.fail("SECRET_KEY", fmt.Sprintf("must be at least %d bytes when APP_ENV=production (got %d)", MinSecretBytes, len(c.SecretKey)))
		}
		if c.OpenAIAPIKey == "" {
			l.fail("OPENAI_API_KEY", "is required when APP_ENV=production (the offline mock model is for development)")
		}
		if c.DemoUser {
			l.fail("DEMO_USER", "the demo account is never created when APP_ENV=production")
		}
	}
	if len(l.problems) > 0 {
		return Config{}, fmt.Errorf("config: %d invalid setting(s):\n  %s", len(l.problems), strings.Join(l.problems, "\n  "))
	}
	if c.SecretKey == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return Config{}, fmt.Errorf("config: generate SECRET_KEY: %w", err)
		}
		c.SecretKey = hex.EncodeToString(b)
		c.SecretKeyGenerated = true
	}
	return c, nil
}

// loader parses variables and collects every problem instead of stopping at the first.
type loader struct {
	lookup   func(string) (string, bool)
	problems []string
}

func (l *loader) fail(name, msg string) {
	l.problems = append(l.problems, name+": "+msg)
}

func (l *loader) str(name, def string) string {
	if v, ok := l.lookup(name); ok {
		return strings.TrimSpace(v)
	}
	return def
}

func (l *loader) boolean(name string, def bool) bool {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		l.fail(name, fmt.Sprintf("%q is not a boolean (use true or false)", v))
		return def
	}
	return b
}

func (l *loader) integer(name string, def, lo, hi int64) int64 {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		l.fail(name, fmt.Sprintf("%q is not a whole number", v))
		return def
	}
	if n < lo || n > hi {
		l.fail(name, fmt.Sprintf("%d is out of range [%d, %d]", n, lo, hi))
		return def
	}
	return n
}

// bodyCap reads a per-tier body bound, which may not exceed ceiling (the
// server-wide MAX_BODY_BYTES); an unset one defaults to def or ceiling,
// whichever is smaller.
func (l *loader) bodyCap(name string, def, ceiling int64) int64 {
	v := l.integer(name, min(def, ceiling), 1, 1<<30)
	if v > ceiling {
		l.fail(name, fmt.Sprintf("%d is above MAX_BODY_BYTES (%d), which bounds every request first", v, ceiling))
		return ceiling
	}
	return v
}

func (l *loader) float(name string, def float64) float64 {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f <= 0 || f > 1e9 {
		l.fail(name, fmt.Sprintf("%q must be a positive number", v))
		return def
	}
	return f
}

func (l *loader) duration(name string, def, min time.Duration) time.Duration {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		l.fail(name, fmt.Sprintf("%q is not a duration (examples: 30s, 5m, 1h)", v))
		return def
	}
	if d < min {
		l.fail(name, fmt.Sprintf("%s is below the minimum %s", d, min))
		return def
	}
	return d
}

func (l *loader) oneOf(name, def string, allowed ...string) string {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	v = strings.TrimSpace(v)
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	l.fail(name, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	return def
}

func (l *loader) level(name string, def slog.Level) slog.Level {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.TrimSpace(v))); err != nil {
		l.fail(name, fmt.Sprintf("%q is not a log level (debug, info, warn, error)", v))
		return def
	}
	return lv
}

// prefixes parses a comma-separated list of CIDR networks or single addresses.
func (l *loader) prefixes(name string) []netip.Prefix {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			a, aerr := netip.ParseAddr(part)
			if aerr != nil {
				l.fail(name, fmt.Sprintf("%q is not a network such as 10.0.0.0/8 or an address such as 10.0.0.7", part))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

// optionalHTTPURL is an http(s) URL when set, "" otherwise.
func (l *loader) optionalHTTPURL(name string) string {
	if _, ok := l.lookup(name); !ok {
		return ""
	}
	return l.httpURL(name, "")
}

func (l *loader) hostPort(name string) string {
	v, ok := l.lookup(name)
	if !ok {
		return ""
	}
	v = strings.TrimSpace(v)
	_, port, err := net.SplitHostPort(v)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		l.fail(name, fmt.Sprintf("%q is not a host:port address such as 127.0.0.1:9090", v))
		return ""
	}
	return v
}

func (l *loader) httpURL(name, def string) string {
	v := l.str(name, def)
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.fail(name, fmt.Sprintf("%q is not an http(s) URL", redactURL(v)))
		return def
	}
	return strings.TrimRight(v, "/")
}

func (l *loader) origins(name string) []string {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				l.fail(name, fmt.Sprintf("%q is not an origin like https://app.example.com", o))
				continue
			}
			o = u.Scheme + "://" + u.Host
		}
		out = append(out, o)
	}
	return out
}

// DefaultRedisKeyPrefix is REDIS_KEY_PREFIX when unset.
const DefaultRedisKeyPrefix = "agentapi:"

// maxRedisKeyPrefix bounds REDIS_KEY_PREFIX; it is repeated in every key.
const maxRedisKeyPrefix = 100

// redisKeyPrefix reads REDIS_KEY_PREFIX. Redis accepts any bytes in a key,
// but whitespace or control characters in a prefix are almost certainly a
// quoting mistake in the environment, and they make keys hard to inspect
// with redis-cli, so they are refused.
func (l *loader) redisKeyPrefix() string {
	v := l.str("REDIS_KEY_PREFIX", DefaultRedisKeyPrefix)
	switch {
	case v == "":
		l.fail("REDIS_KEY_PREFIX", "must not be blank")
		return DefaultRedisKeyPrefix
	case len(v) > maxRedisKeyPrefix:
		l.fail("REDIS_KEY_PREFIX", fmt.Sprintf("is %d bytes, at most %d allowed", len(v), maxRedisKeyPrefix))
		return DefaultRedisKeyPrefix
	case !utf8.ValidString(v) || strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		l.fail("REDIS_KEY_PREFIX", fmt.Sprintf("%q is not valid UTF-8 without whitespace or control characters", v))
		return DefaultRedisKeyPrefix
	}
	return v
}

// redisScheme reports whether s is a REDIS_URL scheme package redisconn
// connects with: one server, a cluster, or Sentinel, each plain or TLS.
func redisScheme(s string) bool {
	switch s {
	case "redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel":
		return true
	}
	return false
}

// redisURL prefers REDIS_URL; otherwise an explicitly set REDIS_HOST (the
// prototype's variables) selects Redis. Neither means in-process backends.
func (l *loader) redisURL() string {
	if v, ok := l.lookup("REDIS_URL"); ok {
		v = strings.TrimSpace(v)
		u, err := url.Parse(v)
		if err != nil || !redisScheme(u.Scheme) || u.Host == "" {
			l.fail("REDIS_URL", fmt.Sprintf("%q is not a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL", redactURL(v)))
			return ""
		}
		return v
	}
	host, ok := l.lookup("REDIS_HOST")
	port := l.integer("REDIS_PORT", 6379, 1, 65535)
	db := l.integer("REDIS_DB", 0, 0, 1<<20)
	if !ok {
		return ""
	}
	u := url.URL{Scheme: "redis", Host: net.JoinHostPort(strings.TrimSpace(host), strconv.FormatInt(port, 10)), Path: "/" + strconv.FormatInt(db, 10)}
	if pw, ok := l.lookup("REDIS_PASSWORD"); ok {
		u.User = url.UserPassword("", pw)
	}
	return u.String()
}

// Upstream is one more OpenAI-compatible API to fall back on.
type Upstream struct {
	BaseURL string
	APIKey  string
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

// maxModels bounds LLM_MODELS; a longer allowlist is surely a mistake.
const maxModels = 1000

// models reads a comma-separated list of model names; blanks between commas
// are ignored and duplicates kept once.
func (l *loader) models(name string) []string {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	for _, m := range strings.Split(v, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
			continue
		case len(m) > 200 || strings.ContainsAny(m, " \t\r\n"):
			l.fail(name, fmt.Sprintf("%q is not a model name (no spaces, at most 200 characters)", m))
			continue
		case slices.Contains(out, m):
			continue
		}
		out = append(out, m)
	}
	if len(out) > maxModels {
		l.fail(name, fmt.Sprintf("lists %d models, at most %d allowed", len(out), maxModels))
		return nil
	}
	return out
}

// upstreams reads UPSTREAM_FALLBACKS: comma-separated entries, each a base
// URL, optionally followed by "|" and that upstream's API key, as in
// "https://a.example/v1|sk-a,http://localhost:11434/v1". Messages about a
// bad entry name its position and its URL, never its key.
func (l *loader) upstreams(name string) []Upstream {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []Upstream
	for i, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		base, key, _ := strings.Cut(entry, "|")
		base, key = strings.TrimSpace(base), strings.TrimSpace(key)
		u, err := url.Parse(base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			shown := "(unparsable)"
			if err == nil {
				shown = redactURL(base)
			}
			l.fail(name, fmt.Sprintf("entry %d %q is not an http(s) base URL; the format is URL|KEY,URL|KEY", i+1, shown))
			continue
		}
		out = append(out, Upstream{BaseURL: strings.TrimRight(base, "/"), APIKey: key})
	}
	return out
}
