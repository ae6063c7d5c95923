package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/config"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/telemetry"
	"github.com/redis/go-redis/v9"
)

// Sub-prefixes under REDIS_KEY_PREFIX: token budgets, spend budgets and
// the deployments' per-minute capacity.
const (
	redisBudgetPrefix   = "budget:"
	redisSpendPrefix    = "spend:"
	redisCapacityPrefix = "capacity:"
)

// openCatalogue loads MODELS_FILE, when set, and watches it for changes
// until ctx ends. Key references are resolved through getenv, the
// environment the program was started with.
func openCatalogue(ctx context.Context, cfg config.Config, getenv func(string) string, logger *slog.Logger) (*catalog.Live, error) {
	if cfg.Upstream.ModelsFile == "" {
		return nil, nil
	}
	var tiers []string
	for _, t := range cfg.Tiers.All() {
		tiers = append(tiers, t.Name)
	}
	live, err := catalog.Open(catalog.Options{Path: cfg.Upstream.ModelsFile, Tiers: tiers, Getenv: getenv, Logger: logger})
	if err != nil {
		return nil, err
	}
	go live.Watch(ctx, cfg.Upstream.ModelsReload)
	return live, nil
}

// gatewayCatalog and adminCatalogue hand the catalogue on as an interface
// that is nil, not a typed nil, without one.
func gatewayCatalog(l *catalog.Live) gateway.Catalog {
	if l == nil {
		return nil
	}
	return l
}

func adminCatalogue(l *catalog.Live) interface {
	Current() *catalog.Catalog
	Put(m catalog.Model) (*catalog.Catalog, error)
	Delete(name string) error
} {
	if l == nil {
		return nil
	}
	return l
}

// provider is what serve hands the HTTP layer as its model.
type provider interface {
	Complete(ctx context.Context, body []byte) (*llm.Response, error)
	Stream(ctx context.Context, body []byte) (*llm.Stream, error)
	Embeddings(ctx context.Context, body []byte) (*llm.Response, error)
	Models(ctx context.Context) ([]byte, error)
}

// newProvider is the offline mock without OPENAI_API_KEY, else a router over
// OPENAI_BASE_URL and each of UPSTREAM_FALLBACKS in order. Upstreams are
// named "openai", "fallback-1", ... in logs and metrics: never by URL, which
// may carry credentials, and never by key.
func newProvider(cfg config.Config, models *catalog.Live, rdb redis.UniversalClient, m *metrics.Metrics, tracing *telemetry.Tracing, logger *slog.Logger) (provider, error) {
	retries := cfg.Upstream.Retries
	if retries == 0 {
		retries = -1 // RouterOptions reads 0 as "the default"
	}
	routing := llm.RouterOptions{
		Timeout:         cfg.Upstream.Timeout,
		Retries:         retries,
		BreakerFailures: uint32(cfg.Upstream.BreakerFailures),
		BreakerCooldown: cfg.Upstream.BreakerCooldown,
		Logger:          logger,
		OnRetry:         m.UpstreamRetry,
	}
	if models != nil {
		// Deployments are named in logs and metrics by their catalogue
		// name, never by URL or key.
		var capacity llm.Capacity
		if rdb != nil {
			capacity = catalog.NewRedisCapacity(rdb, cfg.Redis.KeyPrefix+redisCapacityPrefix, nil)
		}
		logger.Info("model provider: catalogue", "models_file", cfg.Upstream.ModelsFile, "models", len(models.Current().Models))
		return llm.NewCatalogueRouter(models, llm.CatalogueOptions{Router: routing, Capacity: capacity,
			Transport: func(name string) http.RoundTripper {
				return tracing.Transport(&metrics.Transport{Base: llm.NewTransport(), Upstream: name, Metrics: m})
			}}), nil
	}
	if cfg.MockLLM() {
		logger.Warn("OPENAI_API_KEY is not set: answering with the built-in offline mock model (development only)")
		return llm.NewMock(), nil
	}
	type upstream struct {
		name, baseURL, key, variable string
	}
	ups := []upstream{{"openai", cfg.Upstream.BaseURL, cfg.Upstream.APIKey, "OPENAI_BASE_URL"}}
	for i, f := range cfg.Upstream.Fallbacks {
		ups = append(ups, upstream{fmt.Sprintf("fallback-%d", i+1), f.BaseURL, f.APIKey, "UPSTREAM_FALLBACKS"})
	}
	clients := make([]*llm.Client, 0, len(ups))
	for _, u := range ups {
		c, err := llm.NewClient(llm.Options{BaseURL: u.baseURL, APIKey: u.key, Timeout: cfg.Upstream.Timeout, Name: u.name,
			Transport: tracing.Transport(&metrics.Transport{Base: llm.NewTransport(), Upstream: u.name, Metrics: m})})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u.variable, err)
		}
		clients = append(clients, c)
	}
	r, err := llm.NewRouter(clients, routing)
	if err != nil {
		return nil, err
	}
	logger.Info("model provider", "base_url", cfg.Upstream.BaseURL, "fallbacks", len(cfg.Upstream.Fallbacks),
		"retries", cfg.Upstream.Retries, "default_model", cfg.Upstream.Model)
	return r, nil
}

// newBudget keeps budgets (tokens, or spend in picodollars) in Redis
// under prefix when there is one (every replica enforces one budget), else
// in this process.
func newBudget(cfg config.Config, rdb redis.UniversalClient, prefix string) interface {
	Reserve(ctx context.Context, userID string, limit, amount int64) (budget.Reservation, budget.Status, error)
	Settle(ctx context.Context, r budget.Reservation, actual int64) error
	Status(ctx context.Context, userID string, limit int64) (budget.Status, error)
} {
	if rdb != nil {
		return budget.NewRedis(rdb, cfg.Redis.KeyPrefix+prefix, nil)
	}
	return budget.NewMemory(nil)
}

// inflight counts requests inside the handler, so that shutdown can wait
// for those that srv.Close cut off to finish their bookkeeping (a cut stream
// still records its usage) before the usage recorder closes.
type inflight struct{ n atomic.Int64 }

func (f *inflight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.n.Add(1)
		defer f.n.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// wait returns once no request is inside the handler, or ctx ends.
func (f *inflight) wait(ctx context.Context) bool {
	for f.n.Load() > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}
