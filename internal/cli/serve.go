package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/agent"
	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/config"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/httpapi"
	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/mcp/builtin"
	"github.com/agentapi/agentapi/internal/mcpgateway"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/netguard"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/revocation"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/telemetry"
	"github.com/agentapi/agentapi/internal/usage"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
)

// Demo account of the legacy contract's test script; development only.
const (
	demoEmail    = "user@example.com"
	demoPassword = "password"
)

// Sub-prefixes under REDIS_KEY_PREFIX, so limiter and cache keys never meet.
const (
	redisLimitPrefix = "rl:"
	redisCachePrefix = "cache:"
	// redisRevokedKey is the sorted set of logged-out access tokens.
	redisRevokedKey = "revoked"
)

// maxLimiterKeys bounds the in-process limiter's memory (about 100 bytes a key).
const maxLimiterKeys = 1 << 20

// maxCacheEntryBytes keeps one huge answer from crowding out the cache.
const maxCacheEntryBytes = 1 << 20

// serve runs the HTTP server until ctx ends, then drains it.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		return errUsage
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	logger := newLogger(stdout, cfg.Observability.LogLevel)
	m := metrics.New()
	tracing := telemetry.Disabled()
	if cfg.Observability.OTLPEndpoint != "" {
		if tracing, err = telemetry.NewOTLP(ctx, cfg.Observability.OTLPEndpoint, "agentapi", Version); err != nil {
			return fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
		logger.Info("tracing enabled", "otlp_endpoint", cfg.Observability.OTLPEndpoint)
	}
	// Spans still buffered are sent before exit, after the server drained.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), telemetry.ShutdownTimeout)
		defer cancel()
		if err := tracing.Shutdown(ctx); err != nil {
			logger.Warn("flushing trace spans failed", "error", err.Error())
		}
	}()
	logger.Info("starting", "version", Version, "config", cfg)
	switch {
	case cfg.Auth.SecretKeyGenerated:
		logger.Warn("SECRET_KEY is not set: using a random key for this process; tokens stop working on restart and differ between replicas")
	case cfg.Auth.SecretKey == config.PlaceholderSecret || len(cfg.Auth.SecretKey) < config.MinSecretBytes:
		logger.Warn("SECRET_KEY is weak (placeholder or shorter than 32 bytes); APP_ENV=production would refuse it")
	}

	st, err := store.Open(ctx, cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer st.Close()
	logger.Info("database ready", "dialect", st.Dialect())

	hasher, err := auth.NewHasher(0)
	if err != nil {
		return err
	}
	if cfg.DemoUser {
		if err := ensureDemoUser(ctx, st, hasher); err != nil {
			return err
		}
		logger.Warn("development demo account is enabled: user@example.com with the demo password from the README (set DEMO_USER=false to disable; never created in production)")
	}
	deny := auth.NewDenyList(nil)
	tokens, err := auth.NewTokens(auth.TokenOptions{Secret: cfg.Auth.SecretKey, PreviousSecret: cfg.Auth.SecretKeyPrevious, Algorithm: cfg.Auth.Algorithm,
		TTL: cfg.Auth.AccessTokenTTL, Issuer: cfg.Auth.Issuer, Audience: cfg.Auth.Audience, DenyList: deny})
	if err != nil {
		return err
	}
	if cfg.Auth.SecretKeyPrevious != "" {
		logger.Info("key rotation: tokens signed with SECRET_KEY_PREVIOUS still verify; unset it once ACCESS_TOKEN_EXPIRE_MINUTES have passed")
	}

	ready := []httpapi.ReadyCheck{{Name: "database", Check: st.Ping}}
	var rdb redis.UniversalClient
	if cfg.Redis.URL != "" {
		// The limiter's deadline (RATE_LIMIT_REDIS_TIMEOUT) may exceed the
		// client's default read timeout, which would otherwise cut it short.
		rdb, err = redisconn.Open(redisconn.Options{URL: cfg.Redis.URL, IOTimeout: max(cfg.Redis.LimiterTimeout, cache.DefaultCallTimeout)})
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		defer rdb.Close()
		// go-redis reports trouble (failed dials above all) through a
		// logger of its own, a package-level variable that prints plain
		// text to stderr. Pointing it at our logger keeps every line JSON.
		// Being global, it is set here, once per serve, which in a
		// process is once; the last serve to start wins if tests run
		// several in one process.
		redis.SetLogger(redisconn.NewLogger(logger))
		rdb.AddHook(metrics.RedisHook{Metrics: m})
		// With RATE_LIMIT_ON_REDIS_ERROR=deny a replica without Redis only
		// answers 503, so it should leave the load balancer; otherwise it
		// serves on (local limits, no cache) and stays in.
		ready = append(ready, httpapi.ReadyCheck{Name: "redis", Optional: cfg.Redis.FailsOpen(),
			Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	}

	lim, err := newLimiter(cfg, rdb, logger, m)
	if err != nil {
		return err
	}
	// Background work ends when serve returns, whatever the reason.
	bg, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	revoked, err := newRevocations(bg, cfg, rdb, deny, logger)
	if err != nil {
		return err
	}
	go pruneRefreshTokens(bg, st, logger)
	go purgeResponses(bg, st, logger)
	respCache, written, admit := newCache(cfg, rdb, lim, logger)
	var tracer trace.Tracer
	if cfg.Observability.OTLPEndpoint != "" {
		tracer = tracing.Tracer()
		lim = telemetry.Limiter{Next: lim, Tracer: tracer}
		if respCache != nil {
			respCache = telemetry.Cache{Next: respCache, Tracer: tracer}
		}
		if admit != nil {
			admit.Tracer = tracer
		}
	}
	// The one admitter: the rate-limit decision and the cache lookup in one
	// Redis round trip when both live there, else one after the other.
	var admitter gateway.Admitter = admission.Sequential{Limiter: lim, Cache: respCache}
	if admit != nil {
		admit.Direct = lim
		admitter = admit
	}
	models, err := openCatalogue(bg, cfg, getenv, logger)
	if err != nil {
		return err
	}
	provider, err := newProvider(cfg, models, rdb, m, tracing, logger)
	if err != nil {
		return err
	}

	rec := usage.NewRecorder(st, logger, usage.Options{})
	scope := gateway.ScopeUser
	if cfg.Cache.Scope == "global" {
		scope = gateway.ScopeGlobal
	}
	gw := gateway.New(gateway.Options{
		Logger:   logger,
		Provider: provider,
		Admitter: admitter,
		Tiers:    cfg.Tiers,
		Cache:    respCache, CacheScope: scope,
		Usage: rec,
		// Token budgets are a cost control: while their store is down
		// calls go on, unless the operator chose deny for Redis trouble.
		Budget:         newBudget(cfg, rdb, redisBudgetPrefix),
		Spend:          newBudget(cfg, rdb, redisSpendPrefix),
		BudgetFailOpen: cfg.Redis.FailsOpen(),
		Models:         cfg.Upstream.Models,
		DefaultModel:   cfg.Upstream.Model,
		Catalog:        gatewayCatalog(models),
	})
	mcpServers, mcpClient, err := newMCP(cfg, st, m, tracer, logger)
	if err != nil {
		return err
	}
	defer mcpClient.Close()
	mcpGateway := mcpgateway.New(mcpgateway.Options{
		Registry: mcpServers, Client: mcpClient,
		// Tool calls spend from the tier's MCP bucket on the limiter
		// model calls use, so the limit is exact across replicas.
		Limiter: lim, Tiers: cfg.Tiers,
		Audit: st, Logger: logger,
		OnRefused:    func(server, tool, outcome string) { m.MCPToolCall(server, tool, outcome, 0) },
		Version:      Version,
		MaxBodyBytes: cfg.Server.MaxBodyBytes,
	})
	defer func() {
		// Normally closed after the server drained (below); this covers
		// the early returns.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mcpGateway.Close(ctx)
	}()
	// Closed (flushed) below once the last request is done; the deferred
	// Close covers the early returns.
	accessLog := httpapi.NewAccessLog(logger, m, cfg.Observability.AccessLogBatch)
	defer accessLog.Close()

	// Compaction items are sealed under a key derived from SECRET_KEY, so
	// rotating it retires them; every replica with the same key opens them.
	sealer, err := responses.NewSealer([]byte(cfg.Auth.SecretKey))
	if err != nil {
		return err
	}
	sockets := httpapi.NewSockets()
	handler, err := httpapi.NewHandler(httpapi.Deps{
		Logger:       logger,
		AppName:      cfg.AppName,
		Version:      Version,
		Metrics:      m,
		AccessLog:    accessLog,
		Tracer:       tracer,
		MetricsOnAPI: cfg.Observability.MetricsAddr == "",
		Users:        st,
		Admin:        st,
		Hasher:       hasher,
		Tokens:       tokens,
		Gateway:      gw,
		Limiter:      lim,
		Ready:        ready,
		CORSOrigins:  cfg.Server.CORSOrigins,
		MaxBodyBytes: cfg.Server.MaxBodyBytes,

		APIKeys:            st,
		UsageReports:       st,
		StreamWriteTimeout: cfg.Server.StreamWriteTimeout,

		// Sessions: refresh tokens, logouts shared through Redis, and
		// the login throttle (on the limiter above, so shared too).
		Sessions:    st,
		RefreshTTL:  cfg.Auth.RefreshTokenTTL,
		Revoker:     revoked,
		LoginLimits: httpapi.LoginLimits{Attempts: cfg.Auth.LoginAttempts, TrustedProxies: cfg.Auth.TrustedProxies},

		// The Responses API keeps its responses in the same database.
		Responses:              st,
		ResponsesTTL:           cfg.Responses.TTL,
		ResponsesContextTokens: cfg.Responses.ContextTokens,
		Conversations:          st,
		CompactionSealer:       sealer,
		Sockets:                sockets,
		ResponsesSocketIdle:    cfg.Responses.SocketIdle,
		ResponsesSocketMemory:  cfg.Responses.SocketMemory,

		// MCP: the admin registry of MCP servers, the /mcp gateway in
		// front of them, and the audit of their tool calls.
		MCPServers: mcpServers,
		MCPGateway: mcpGateway,
		MCPCalls:   st,

		Models: adminCatalogue(models),
		// The tool loop of /v1/responses (tools of type "mcp").
		Agent: &httpapi.AgentDeps{Servers: mcpServers, Client: mcpClient, Observer: m,
			Guard: netguard.NewGuard(netguard.Options{AllowHTTP: cfg.Agent.AllowUserHTTP}),
			Limits: agent.Limits{MaxTurns: cfg.Agent.MaxTurns, CallTimeout: cfg.MCP.CallTimeout,
				Deadline: cfg.Agent.ResponseTimeout, MaxOutputBytes: cfg.Agent.MaxResponseOutputBytes},
			AllowUserServers: cfg.Agent.AllowUserServers, AllowUserHTTP: cfg.Agent.AllowUserHTTP},
	})
	if err != nil {
		return err
	}
	tracked := &inflight{}
	srv := httpapi.NewServerWith(cfg.Server.Addr(), tracked.wrap(handler), logger, httpapi.ServerOptions{ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout})
	// Shutdown neither waits for nor closes hijacked connections: the
	// WebSockets of /v1/responses close themselves after their running
	// turn, and are waited for below.
	srv.RegisterOnShutdown(sockets.Drain)
	ln, err := net.Listen("tcp", cfg.Server.Addr())
	if err != nil {
		return fmt.Errorf("listen on %s (HOST/PORT): %w", cfg.Server.Addr(), err)
	}
	logger.Info("listening", "addr", ln.Addr().String())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	if cfg.Observability.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.Observability.MetricsAddr)
		if err != nil {
			srv.Close()
			rec.Close(context.Background())
			return fmt.Errorf("listen on %s (METRICS_ADDR): %w", cfg.Observability.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", httpapi.MetricsHandler(m, accessLog))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
		go msrv.Serve(mln)
		defer msrv.Close()
		logger.Info("metrics listening", "addr", mln.Addr().String())
	}

	select {
	case err := <-serveErr:
		rec.Close(context.Background())
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.Server.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	if err := sockets.Wait(shutdownCtx); err != nil {
		logger.Warn("WebSocket turns still running at the shutdown deadline were cut", "error", err.Error())
		sockets.Abort()
		abortCtx, cancelAbort := context.WithTimeout(context.Background(), 5*time.Second)
		_ = sockets.Wait(abortCtx)
		cancelAbort()
	}
	if shutdownErr != nil {
		logger.Warn("requests still running at the shutdown deadline were cut", "error", shutdownErr.Error())
		srv.Close()
		// The cut requests' handlers still record what they used.
		drainCtx, cancelDrain := context.WithTimeout(context.Background(), 5*time.Second)
		tracked.wait(drainCtx)
		cancelDrain()
	}
	// Usage written after the last request finished, so nothing is lost.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelFlush()
	accessLog.Close()
	if err := mcpGateway.Close(flushCtx); err != nil {
		logger.Warn("tool-call audit records still queued at exit were dropped", "error", err.Error())
	}
	if err := rec.Close(flushCtx); err != nil {
		return err
	}
	// Answers still being written to the cache are kept too (a cache
	// write is best effort; this only spares the next replica a call).
	if written != nil {
		if err := written.Wait(flushCtx); err != nil {
			logger.Warn("cache writes still pending at exit were dropped", "error", err.Error())
		}
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// newMCP builds the registry of MCP servers (store-backed, headers sealed
// under SECRET_KEY) and the client that calls them, with MCP_* bounds,
// metrics per call and a span per call when tracing is on.
func newMCP(cfg config.Config, st *store.Store, m *metrics.Metrics, tracer trace.Tracer, logger *slog.Logger) (*mcp.Registry, *mcp.Client, error) {
	var builtins []mcp.Server
	if cfg.Agent.BuiltinServer {
		// The built-in server answers in-process, without a network.
		builtins = append(builtins, mcp.Server{Label: builtin.Label, Description: builtin.Description,
			Handler: builtin.Handler(builtin.Options{Version: Version}), RequireApproval: mcp.ApprovalNever})
	}
	reg, err := mcp.NewRegistry(mcp.RegistryOptions{Store: st, Builtin: builtins, SecretKey: cfg.Auth.SecretKey, PreviousSecretKey: cfg.Auth.SecretKeyPrevious})
	if err != nil {
		return nil, nil, fmt.Errorf("mcp registry: %w", err)
	}
	var public *http.Client
	if cfg.Agent.AllowUserServers {
		// A request's own server_url is dialled only at public addresses.
		public = netguard.NewClient(netguard.Options{AllowHTTP: cfg.Agent.AllowUserHTTP, Timeout: cfg.MCP.CallTimeout})
	}
	client := mcp.NewClient(mcp.ClientOptions{
		PublicHTTP:     public,
		CallTimeout:    cfg.MCP.CallTimeout,
		MaxOutputBytes: int(cfg.MCP.MaxOutputBytes),
		ToolsTTL:       cfg.MCP.ToolsTTL,
		Version:        Version,
		Logger:         logger,
		Tracer:         tracer,
		OnCall:         m.MCPToolCall,
	})
	return reg, client, nil
}

// newRevocations builds the list that spreads logouts: in-process only
// without Redis, else through Redis, polled in the background until ctx
// ends. The first poll runs before serving, so a restarted replica refuses
// tokens logged out while it was away (when Redis answers).
func newRevocations(ctx context.Context, cfg config.Config, rdb redis.UniversalClient, deny *auth.DenyList, logger *slog.Logger) (*revocation.List, error) {
	o := revocation.Options{Logger: logger}
	if rdb != nil {
		o.Redis, o.Key, o.MaxTokenLifetime = rdb, cfg.Redis.KeyPrefix+redisRevokedKey, cfg.Auth.AccessTokenTTL
	}
	l, err := revocation.New(deny, o)
	if err != nil {
		return nil, err
	}
	if rdb != nil {
		if err := l.Poll(ctx); err != nil {
			logger.Warn("revocation list: could not load logouts from Redis at start; retrying in the background", "error", err.Error())
		}
		go l.Run(ctx)
	}
	return l, nil
}

// pruneRefreshTokens deletes expired refresh tokens now and then, so the
// table holds live sessions only.
func pruneRefreshTokens(ctx context.Context, st *store.Store, logger *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := st.DeleteExpiredRefreshTokens(ctx, time.Now()); err != nil && ctx.Err() == nil {
			logger.Warn("could not delete expired refresh tokens", "error", err.Error())
		}
	}
}

// purgeResponsesEvery is how often expired responses are deleted. Reads
// skip them from the moment they expire; the purge only frees the space.
const purgeResponsesEvery = 10 * time.Minute

// purgeResponses deletes expired stored responses now and then, in
// batches, so no one statement holds the table for long. Every replica
// runs it; a row deleted twice is simply not found the second time.
func purgeResponses(ctx context.Context, st *store.Store, logger *slog.Logger) {
	t := time.NewTicker(purgeResponsesEvery)
	defer t.Stop()
	for {
		for {
			n, err := st.PurgeExpiredResponses(ctx, time.Now(), 1000)
			if err != nil {
				if ctx.Err() == nil {
					logger.Warn("could not purge expired responses", "error", err.Error())
				}
				break
			}
			if n < 1000 {
				break
			}
		}
		// Conversations expire by the same RESPONSES_TTL, their items
		// with them.
		for {
			n, err := st.PurgeExpiredConversations(ctx, time.Now(), 1000)
			if err != nil {
				if ctx.Err() == nil {
					logger.Warn("could not purge expired conversations", "error", err.Error())
				}
				break
			}
			if n < 1000 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newLimiter picks the in-process limiter, or the Redis one (shared by all
// replicas) wrapped in the configured behaviour for when Redis fails.
func newLimiter(cfg config.Config, rdb redis.UniversalClient, logger *slog.Logger, m *metrics.Metrics) (ratelimit.Limiter, error) {
	mem := ratelimit.NewMemory(maxLimiterKeys)
	if rdb == nil {
		return mem, nil
	}
	return ratelimit.NewFallback(ratelimit.NewRedis(rdb, cfg.Redis.KeyPrefix+redisLimitPrefix), mem, ratelimit.FallbackOptions{Mode: cfg.Redis.OnError, Logger: logger, OnFallback: m.LimiterFallback, SharedTimeout: cfg.Redis.LimiterTimeout})
}

// newCache returns the response cache, nil (caching off) when CACHE_TTL is
// 0. A Redis cache comes with what goes with it: its writes are made in the
// background (written, waited for at exit), and, when the limiter is in
// Redis too, the admitter that sends the rate-limit decision and the cache
// lookup to Redis in one round trip.
func newCache(cfg config.Config, rdb redis.UniversalClient, lim ratelimit.Limiter, logger *slog.Logger) (c cache.Store, written *cache.Background, admit *admission.Pipelined) {
	switch {
	case cfg.Cache.TTL == 0:
		return nil, nil, nil
	case rdb != nil:
		shared := cache.NewRedis(rdb, cfg.Redis.KeyPrefix+redisCachePrefix, cfg.Cache.TTL, maxCacheEntryBytes)
		written = cache.NewBackground(shared, 0, 0, logger)
		if f, ok := lim.(*ratelimit.Fallback); ok {
			// A user's entries live in the slot of the user's bucket, so
			// on a Redis Cluster the decision and the lookup still go to
			// one node in one round trip.
			shared.PlaceNear(cfg.Redis.KeyPrefix + redisLimitPrefix)
			admit = &admission.Pipelined{Limiter: f, Cache: shared}
		}
		return written, written, admit
	default:
		return cache.NewMemory(cfg.Cache.MaxBytes, cfg.Cache.TTL), nil, nil
	}
}

func ensureDemoUser(ctx context.Context, st *store.Store, hasher *auth.Hasher) error {
	if _, err := st.UserByEmail(ctx, demoEmail); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	hash, err := hasher.Hash(ctx, demoPassword)
	if err != nil {
		return err
	}
	_, err = st.CreateUser(ctx, store.User{Email: demoEmail, PasswordHash: hash, Tier: store.DefaultTier})
	if errors.Is(err, store.ErrConflict) {
		return nil // another replica created it first
	}
	return err
}
