package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/agentapi/agentapi/internal/tier"
	"github.com/agentapi/agentapi/internal/usage"
	"github.com/tidwall/gjson"
)

// syncBuffer is the test server's log: a testkit.SyncBuffer whose
// access-log lines can be held back.
type syncBuffer struct {
	testkit.SyncBuffer
	// hold, while set, makes each access-log line wait until it is closed.
	hold atomic.Pointer[chan struct{}]
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	if h := s.hold.Load(); h != nil && bytes.Contains(p, []byte(`"msg":"request"`)) {
		<-*h
	}
	return s.SyncBuffer.Write(p)
}

// newFakeUpstream is the fake OpenAI of every handler test: it answers
// like OpenAI on every endpoint the gateway uses (two models, embeddings
// of two numbers and 3 tokens, chat completions plain and streamed that
// echo the last message with 7+5 tokens, and a get_weather tool call
// with 20+10 when the request offers tools), and keeps the last request.
// A test that needs other bytes sets them with Handle.
func newFakeUpstream(t *testing.T) *fakeopenai.Server {
	return fakeopenai.New(t, fakeopenai.Options{
		Record: true, RoleChunk: true, UsageWhenAsked: true,
		Models:    []string{"up-model-1", "up-model-2"},
		Embedding: []float64{0.5, -0.5}, EmbeddingTokens: 3,
		Respond: func(r fakeopenai.Request) fakeopenai.Answer {
			if gjson.GetBytes(r.Body, "tools").Exists() {
				return fakeopenai.Answer{Usage: fakeopenai.Usage{Prompt: 20, Completion: 10},
					ToolCalls: []fakeopenai.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}}
			}
			return fakeopenai.Answer{Text: "echo: " + r.LastMessage(), Usage: fakeopenai.Usage{Prompt: 7, Completion: 5}}
		},
	})
}

type testAPI struct {
	t        *testing.T
	srv      *httptest.Server
	store    *store.Store
	upstream *fakeopenai.Server
	tokens   *auth.Tokens
	hasher   *auth.Hasher
	logs     *syncBuffer
	usage    *usage.Recorder
	metrics  *metrics.Metrics
}

type testOptions struct {
	capacity   int64
	refill     float64
	cacheScope string
	noCache    bool
	timeout    time.Duration
	cors       []string
	maxBody    int64
	provider   gateway.Provider // overrides the fake upstream client
	// budgetFree is the free tier's daily token budget (0: none).
	budgetFree int64
	// models is the model allowlist (empty: any).
	models []string
	// writeTimeout is the stream write timeout (0: the default).
	writeTimeout time.Duration
	// store shares another testAPI's database, as a second replica does.
	store *store.Store
	// recorder replaces the usage recorder.
	recorder gateway.UsageRecorder
	// routed puts the fake upstream behind an llm.Router with these options.
	routed *llm.RouterOptions
	// loginLimits throttle logins (zero: the defaults).
	loginLimits LoginLimits
	// denyList and revoker share logouts, as replicas on one Redis do.
	denyList *auth.DenyList
	revoker  revoker
	// budget replaces the in-process budget store; budgetFailClosed
	// answers 503 while it fails (RATE_LIMIT_ON_REDIS_ERROR=deny).
	budget           gateway.Budgets
	budgetFailClosed bool
	// caps are the tiers' request caps (nil: none).
	caps TierCaps
	// cache replaces the in-process cache; admitter is Deps.Admitter.
	cache    cache.Store
	admitter gateway.Admitter
	// mcpBuiltin are built-in MCP servers of the registry (which is
	// always store-backed).
	mcpBuiltin []mcp.Server
	// sockets and socketIdle are the WebSocket mode's tracker and idle
	// timeout (nil, 0: the defaults).
	sockets    *Sockets
	socketIdle time.Duration
	// catalogue routes by model name over its deployments (and serves
	// the admin model routes).
	catalogue *catalog.Live
	// agent runs tools of type "mcp" (nil: refused); maxToolCalls is
	// every tier's MAX_TOOL_CALLS.
	agent        *AgentDeps
	maxToolCalls int64
}

// RequestCaps and TierCaps give the tiers' request caps in tests.
type RequestCaps struct{ MaxTokens, MaxBodyBytes int64 }

type TierCaps map[string]RequestCaps

func newTestAPI(t *testing.T, o testOptions) *testAPI {
	t.Helper()
	if o.capacity == 0 {
		o.capacity = 10
	}
	if o.refill == 0 {
		o.refill = 0.001
	}
	if o.cacheScope == "" {
		o.cacheScope = "user"
	}
	if o.timeout == 0 {
		o.timeout = 5 * time.Second
	}
	if o.maxBody == 0 {
		o.maxBody = 1 << 20
	}
	ctx := context.Background()
	st := o.store
	if st == nil {
		var err error
		if st, err = store.Open(ctx, filepath.Join(t.TempDir(), "test.db")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	hasher, err := auth.NewHasher(0)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.TokenOptions{Secret: "test-secret-test-secret-test-secret", Algorithm: "HS256",
		TTL: 30 * time.Minute, Issuer: "agentapi", Audience: "agentapi", DenyList: o.denyList})
	if err != nil {
		t.Fatal(err)
	}
	up := newFakeUpstream(t)
	provider := o.provider
	if provider == nil {
		client, err := llm.NewClient(llm.Options{BaseURL: up.URL + "/v1", APIKey: "upstream-key-canary", Timeout: o.timeout, Name: "test"})
		if err != nil {
			t.Fatal(err)
		}
		provider = client
		if o.catalogue != nil {
			provider = llm.NewCatalogueRouter(o.catalogue, llm.CatalogueOptions{Router: llm.RouterOptions{Timeout: o.timeout, Retries: -1}})
		}
		if o.routed != nil {
			if provider, err = llm.NewRouter([]*llm.Client{client}, *o.routed); err != nil {
				t.Fatal(err)
			}
		}
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := usage.NewRecorder(st, logger, usage.Options{FlushInterval: 20 * time.Millisecond})
	t.Cleanup(func() { rec.Close(context.Background()) })
	var recorder gateway.UsageRecorder = rec
	if o.recorder != nil {
		recorder = o.recorder
	}
	var c cache.Store
	switch {
	case o.cache != nil:
		c = o.cache
	case !o.noCache:
		c = cache.NewMemory(8<<20, time.Hour)
	}
	var bud gateway.Budgets = budget.NewMemory(nil)
	if o.budget != nil {
		bud = o.budget
	}
	lim := ratelimit.NewMemory(1000)
	var adm gateway.Admitter = admission.Sequential{Limiter: lim, Cache: c}
	if o.admitter != nil {
		adm = o.admitter
	}
	tiers, err := tier.New(
		tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: o.capacity, RefillPerSecond: o.refill},
			MaxTokens: o.caps[tier.Free].MaxTokens, MaxBodyBytes: o.caps[tier.Free].MaxBodyBytes, DailyTokens: o.budgetFree,
			MaxToolCalls: o.maxToolCalls},
		tier.Tier{Name: tier.Pro, RateLimit: ratelimit.Policy{Capacity: 1000, RefillPerSecond: 10},
			MaxTokens: o.caps[tier.Pro].MaxTokens, MaxBodyBytes: o.caps[tier.Pro].MaxBodyBytes, MaxToolCalls: o.maxToolCalls},
	)
	if err != nil {
		t.Fatal(err)
	}
	scope := gateway.ScopeUser
	if o.cacheScope == "global" {
		scope = gateway.ScopeGlobal
	}
	gw := gateway.New(gateway.Options{
		Logger: logger, Provider: provider, Admitter: adm, Tiers: tiers,
		Cache: c, CacheScope: scope, Usage: recorder,
		Budget: bud, BudgetFailOpen: !o.budgetFailClosed,
		Models: o.models, DefaultModel: "test-model",
	})
	var models modelCatalogue
	if o.catalogue != nil {
		gw = gateway.New(gateway.Options{
			Logger: logger, Provider: provider, Admitter: adm, Tiers: tiers,
			Cache: c, CacheScope: scope, Usage: recorder,
			Budget: bud, BudgetFailOpen: !o.budgetFailClosed,
			DefaultModel: "test-model", Catalog: o.catalogue,
		})
		models = o.catalogue
	}
	m := metrics.New()
	mcpServers, err := mcp.NewRegistry(mcp.RegistryOptions{Store: st, Builtin: o.mcpBuiltin, SecretKey: "test-secret-test-secret-test-secret", TTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := responses.NewSealer([]byte("test secret"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Deps{
		Logger:  logger,
		AppName: "AI Agent API",
		Version: "test",
		Metrics: m, MetricsOnAPI: true,
		Users:   st,
		Admin:   st,
		Hasher:  hasher,
		Tokens:  tokens,
		Gateway: gw,
		Limiter: lim,
		APIKeys: st, UsageReports: st,
		StreamWriteTimeout:  o.writeTimeout,
		Ready:               []ReadyCheck{{Name: "database", Check: st.Ping}},
		CORSOrigins:         o.cors,
		MaxBodyBytes:        o.maxBody,
		Sessions:            st,
		Revoker:             o.revoker,
		LoginLimits:         o.loginLimits,
		Responses:           st,
		MCPServers:          mcpServers,
		Conversations:       st,
		CompactionSealer:    sealer,
		Sockets:             o.sockets,
		ResponsesSocketIdle: o.socketIdle,
		MCPCalls:            st,
		Models:              models,
		Agent:               o.agent,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testAPI{t: t, srv: srv, store: st, upstream: up, tokens: tokens, hasher: hasher, logs: logs, usage: rec, metrics: m}
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func (a *testAPI) do(method, path, token string, body any, hdr ...string) result {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

// user registers an account and returns a token for it.
func (a *testAPI) user(email string) string {
	a.t.Helper()
	if r := a.do("POST", "/auth/register", "", map[string]string{"email": email, "password": "password123"}); r.status != 201 {
		a.t.Fatalf("register %s: %d %s", email, r.status, r.body)
	}
	r := a.do("POST", "/auth/login", "", map[string]string{"email": email, "password": "password123"})
	if r.status != 200 {
		a.t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	return r.json(a.t)["access_token"].(string)
}

func (r result) String() string { return string(r.body) }
