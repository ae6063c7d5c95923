// Package gateway is the one lifecycle of a governed model call: the
// caller's tier, the rate-limit decision and the cache lookup (one Redis
// round trip where both live there), the daily token budget's hold, the
// upstream call, and afterwards the budget's settlement, the usage record
// and the cache write.
//
// Every route that calls a model goes through it: /chat, the OpenAI
// chat-completions and embeddings routes, and each model turn of a
// Responses request. It knows nothing of HTTP: it returns typed errors
// (LimitedError, BudgetExceededError, ErrBudgetUnavailable and the
// dependencies' own) that the HTTP layer maps to answers, and an Outcome
// that the HTTP layer copies into its access-log record.
package gateway

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

// Provider is the model behind the gateway: plain and streamed chat
// completions, embeddings and the model list. llm.Client, llm.Router and
// llm.Mock all have these methods.
type Provider interface {
	Complete(ctx context.Context, body []byte) (*llm.Response, error)
	Stream(ctx context.Context, body []byte) (*llm.Stream, error)
	Embeddings(ctx context.Context, body []byte) (*llm.Response, error)
	Models(ctx context.Context) ([]byte, error)
}

// Admitter makes the rate-limit decision, alone or together with a cache
// lookup. admission.Pipelined sends both to Redis in one round trip;
// admission.Sequential asks the limiter, then the cache.
type Admitter interface {
	Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error)
	Peek(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error)
	AllowAndGet(ctx context.Context, key string, p ratelimit.Policy, k cache.Key) (admission.Result, error)
}

// Cache stores whole answers by key.
type Cache interface {
	Get(ctx context.Context, k cache.Key) ([]byte, bool, error)
	Set(ctx context.Context, k cache.Key, v []byte) error
}

// Budgets holds and settles daily token budgets (budget.Memory or
// budget.Redis).
type Budgets interface {
	Reserve(ctx context.Context, userID string, limit, amount int64) (budget.Reservation, budget.Status, error)
	Settle(ctx context.Context, r budget.Reservation, actual int64) error
	Status(ctx context.Context, userID string, limit int64) (budget.Status, error)
}

// UsageRecorder accepts one record per model call that used tokens.
type UsageRecorder interface {
	Record(ctx context.Context, rec store.UsageRecord) error
}

// CacheScope says whose answers a cached answer may be served to.
type CacheScope int

const (
	// ScopeUser keeps each user's cached answers to that user.
	ScopeUser CacheScope = iota
	// ScopeGlobal shares answers to identical requests across users.
	ScopeGlobal
)

// Options are what a Gateway is built from. Provider, Admitter and Tiers
// are required; the rest may be left out.
type Options struct {
	Logger   *slog.Logger
	Provider Provider
	// Admitter makes every rate-limit decision; the choice between one
	// Redis round trip and two is made when it is built.
	Admitter Admitter
	Tiers    tier.Table
	// Cache, when set, keeps answers of calls whose Spec asks for it.
	// Lookups go through the Admitter, which must read the same cache; the
	// gateway reads it itself only when the Admitter could not.
	Cache      Cache
	CacheScope CacheScope
	// Usage records each call's tokens; nil records nothing.
	Usage UsageRecorder
	// Budget holds daily token budgets; it is used only when some tier has
	// a budget, and then for every tier. While it fails, BudgetFailOpen
	// lets calls through (else they fail with ErrBudgetUnavailable).
	Budget         Budgets
	BudgetFailOpen bool
	// Spend holds daily spend limits, in picodollars, with the same
	// semantics (a second budget store under its own keys); it is used
	// only when some tier has a spend limit, and fails open or closed as
	// BudgetFailOpen says.
	Spend Budgets
	// Models, when not empty, is the allowlist of model names.
	Models []string
	// DefaultModel is the model of a request that names none.
	DefaultModel string
	// Catalog, when set, is the model catalogue: only its models exist
	// (Models above is then unused), each for the tiers it lists, and its
	// prices give every usage record its cost.
	Catalog Catalog
}

// Catalog is the model catalogue in use (catalog.Live).
type Catalog interface {
	Current() *catalog.Catalog
}

// Gateway runs governed model calls. It is safe for concurrent use.
type Gateway struct {
	logger       *slog.Logger
	provider     Provider
	admitter     Admitter
	tiers        tier.Table
	cache        Cache
	scope        CacheScope
	usage        UsageRecorder
	budget       Budgets // nil: no tier has a budget
	spend        Budgets // nil: no tier has a spend limit
	failOpen     bool
	models       []string
	defaultModel string
	catalog      Catalog // nil: no catalogue
	modelList    modelListCache
}

// New builds a Gateway from o.
func New(o Options) *Gateway {
	g := &Gateway{
		logger:       o.Logger,
		provider:     o.Provider,
		admitter:     o.Admitter,
		tiers:        o.Tiers,
		cache:        o.Cache,
		scope:        o.CacheScope,
		usage:        o.Usage,
		failOpen:     o.BudgetFailOpen,
		models:       o.Models,
		defaultModel: o.DefaultModel,
		catalog:      o.Catalog,
	}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	if o.Budget != nil && o.Tiers.AnyBudget() {
		g.budget = o.Budget
	}
	if o.Spend != nil && o.Tiers.AnySpendLimit() {
		g.spend = o.Spend
	}
	return g
}

// Principal is who a call is made for.
type Principal struct {
	UserID string
	// Tier is the account's tier name; an unknown one gets the least
	// privileged tier's treatment.
	Tier string
	// KeyID is the API key that authenticated the request, if one did;
	// usage is recorded against it.
	KeyID string
}

// Tier returns the tier a principal's calls are governed by.
func (g *Gateway) Tier(p Principal) tier.Tier { return g.tiers.For(p.Tier) }

// Tiers returns the tier table.
func (g *Gateway) Tiers() tier.Table { return g.tiers }

// Caching reports whether answers are cached at all.
func (g *Gateway) Caching() bool { return g.cache != nil }

// DefaultModel is the model of a request that names none: the
// catalogue's default_model when it has one.
func (g *Gateway) DefaultModel() string {
	if g.catalog != nil {
		if d := g.catalog.Current().DefaultModel; d != "" {
			return d
		}
	}
	return g.defaultModel
}

// Allowed reports whether the deployment lets requests name model: the
// catalogue lists it, or (without one) the allowlist, when set, does.
// Whether the caller's tier may use it is Begin's to check.
func (g *Gateway) Allowed(model string) bool {
	if g.catalog != nil {
		_, ok := g.catalog.Current().Model(model)
		return ok
	}
	return len(g.models) == 0 || slices.Contains(g.models, model)
}

// checkModel refuses a model the catalogue does not list or the tier may
// not use. Without a catalogue every model passes here.
func (g *Gateway) checkModel(model, tierName string) error {
	if g.catalog == nil {
		return nil
	}
	m, ok := g.catalog.Current().Model(model)
	if !ok {
		return &catalog.UnknownModelError{Model: model}
	}
	if !m.AllowsTier(tierName) {
		return &ModelForbiddenError{Model: model, Tier: tierName}
	}
	return nil
}

// RateLimitKey is the bucket of one user: the same key for every credential
// the user holds, so a second API key does not double the limit.
func RateLimitKey(userID string) string { return "user:" + userID }

// settleTimeout bounds the bookkeeping after a call, which runs even when
// the client has gone.
const settleTimeout = 2 * time.Second

// modelListTTL is how long an upstream's model list is reused. Lists
// change rarely and SDKs fetch them often (some at every start).
const modelListTTL = time.Minute

type modelListCache struct {
	mu      sync.Mutex
	body    []byte
	fetched time.Time
}

// price returns the catalogue's price of model, when there is one.
func (g *Gateway) price(model string) (catalog.Price, bool) {
	if g.catalog == nil {
		return catalog.Price{}, false
	}
	m, ok := g.catalog.Current().Model(model)
	return m.Price, ok
}
