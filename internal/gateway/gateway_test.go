package gateway

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

type records struct {
	mu   sync.Mutex
	recs []store.UsageRecord
}

func (r *records) Record(_ context.Context, rec store.UsageRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}

// failingProvider fails every call.
type failingProvider struct{ *llm.Mock }

var errUpstream = errors.New("upstream down")

func (failingProvider) Complete(context.Context, []byte) (*llm.Response, error) {
	return nil, errUpstream
}

type fixture struct {
	g       *Gateway
	budgets *budget.Memory
	usage   *records
	cache   *cache.Memory
}

func newFixture(t *testing.T, p Provider, capacity, daily int64) fixture {
	t.Helper()
	tiers, err := tier.New(
		tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: capacity, RefillPerSecond: 0.001}, DailyTokens: daily},
		tier.Tier{Name: tier.Pro, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 1}},
	)
	if err != nil {
		t.Fatal(err)
	}
	lim := ratelimit.NewMemory(100)
	c := cache.NewMemory(1<<20, time.Hour)
	t.Cleanup(c.Close)
	f := fixture{budgets: budget.NewMemory(nil), usage: &records{}, cache: c}
	f.g = New(Options{Provider: p, Admitter: admission.Sequential{Limiter: lim, Cache: c}, Tiers: tiers,
		Cache: c, Usage: f.usage, Budget: f.budgets, DefaultModel: "m"})
	return f
}

var alice = Principal{UserID: "u-alice", Tier: tier.Free, KeyID: "k-1"}

func spec() Spec {
	return Spec{Endpoint: "v1/chat/completions", Model: "m", Estimate: 10, RequestID: "req-1",
		Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hello"}]}`)}
}

func TestCallLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, llm.NewMock(), 5, 1000)
	call, err := f.g.Begin(ctx, alice, spec())
	if err != nil {
		t.Fatal(err)
	}
	if o := call.Outcome(); o.Limit != LimitAllowed || o.Tier.Name != tier.Free || o.Decision.Remaining != 4 {
		t.Fatalf("outcome after Begin = %+v", o)
	}
	resp, err := call.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The hold is on while the call runs.
	if st, _ := f.budgets.Status(ctx, alice.UserID, 1000); st.Used != 10 {
		t.Fatalf("budget during the call: %d used, want the estimate 10", st.Used)
	}
	u := llm.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}
	call.Finish(ctx, resp.Model, u)
	call.Finish(ctx, resp.Model, llm.Usage{TotalTokens: 500}) // only the first counts
	if st, _ := f.budgets.Status(ctx, alice.UserID, 1000); st.Used != 7 {
		t.Fatalf("budget after Finish: %d used, want 7", st.Used)
	}
	if len(f.usage.recs) != 1 || f.usage.recs[0].KeyID != "k-1" || f.usage.recs[0].PromptTokens != 3 || f.usage.recs[0].RequestID != "req-1" {
		t.Fatalf("usage records = %+v", f.usage.recs)
	}
	if o := call.Outcome(); o.Usage != u || o.Model != resp.Model {
		t.Errorf("outcome after Finish = %+v", o)
	}
}

func TestLaterTurnsSpendNoToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, llm.NewMock(), 1, 0)
	if _, err := f.g.Begin(ctx, alice, spec()); err != nil {
		t.Fatal(err)
	}
	s := spec()
	s.NoLimit, s.Cache = true, true
	for i := range 3 {
		call, err := f.g.Begin(ctx, alice, s)
		if err != nil {
			t.Fatalf("turn %d: %v", i, err)
		}
		if o := call.Outcome(); o.Limit != LimitNone || o.Cache != CacheNone || call.Caching() {
			t.Fatalf("turn %d outcome %+v, caching %v", i, o, call.Caching())
		}
	}
	_, err := f.g.Begin(ctx, alice, spec())
	var limited *LimitedError
	if !errors.As(err, &limited) || limited.Policy.Capacity != 1 || limited.Decision.Allowed {
		t.Fatalf("second paying call: %v, want a LimitedError of capacity 1", err)
	}
}

func TestUpstreamFailureReleasesHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, failingProvider{llm.NewMock()}, 5, 1000)
	call, err := f.g.Begin(ctx, alice, spec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Complete(ctx); !errors.Is(err, errUpstream) {
		t.Fatalf("Complete: %v", err)
	}
	if st, _ := f.budgets.Status(ctx, alice.UserID, 1000); st.Used != 0 {
		t.Fatalf("budget after a failed call: %d used, want 0", st.Used)
	}
	if len(f.usage.recs) != 0 {
		t.Fatalf("a failed call recorded usage: %+v", f.usage.recs)
	}
}

func TestBudgetExceeded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, llm.NewMock(), 5, 8)
	// A call may start while the day is below the budget; it uses 10 of 8.
	call, err := f.g.Begin(ctx, alice, spec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	call.Finish(ctx, "m", llm.Usage{TotalTokens: 10})
	if call, err = f.g.Begin(ctx, alice, spec()); err != nil {
		t.Fatal(err)
	}
	_, err = call.Complete(ctx)
	var exceeded *BudgetExceededError
	if !errors.As(err, &exceeded) || exceeded.Tier != tier.Free || exceeded.Status.Limit != 8 || !errors.Is(err, budget.ErrExceeded) {
		t.Fatalf("Complete over budget: %v", err)
	}
	// A tier without a budget is not held back by the other's.
	pro := Principal{UserID: "u-pro", Tier: tier.Pro}
	call, err = f.g.Begin(ctx, pro, spec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Complete(ctx); err != nil {
		t.Fatalf("pro call: %v", err)
	}
}

func TestCacheHitAndStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, llm.NewMock(), 5, 0)
	s := spec()
	s.Cache = true
	call, err := f.g.Begin(ctx, alice, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, hit := call.Cached(); hit || call.Outcome().Cache != CacheMiss {
		t.Fatalf("first call: hit %v, outcome %+v", hit, call.Outcome())
	}
	call.Store(ctx, []byte("answer"))
	again, err := f.g.Begin(ctx, alice, s)
	if err != nil {
		t.Fatal(err)
	}
	if v, hit := again.Cached(); !hit || string(v) != "answer" || again.Outcome().Cache != CacheHit {
		t.Fatalf("second call: %q %v", v, hit)
	}
	// Another user does not see alice's answer under the user scope.
	other, err := f.g.Begin(ctx, Principal{UserID: "u-bob", Tier: tier.Free}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, hit := other.Cached(); hit {
		t.Fatal("bob was served alice's cached answer")
	}
}

func TestUnknownTierGetsLeastPrivileged(t *testing.T) {
	t.Parallel()
	f := newFixture(t, llm.NewMock(), 5, 0)
	if got := f.g.Tier(Principal{Tier: "platinum"}).Name; got != tier.Free {
		t.Fatalf("tier of an unknown name: %q", got)
	}
}
