package gateway

import (
	"context"
	"errors"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/tier"
)

type staticCatalog struct{ c *catalog.Catalog }

func (s staticCatalog) Current() *catalog.Catalog { return s.c }

// TestSpendLimit: the mock's answers cost a known amount; calls are
// admitted while the day's spend is below the limit, each records its
// exact cost, and a tier the model does not list is refused before any
// spending.
func TestSpendLimit(t *testing.T) {
	t.Parallel()
	usd := func(s string) catalog.USD { v, _ := catalog.ParseUSD(s); return v }
	cat, err := catalog.New("", []catalog.Model{
		{Name: "m", Price: catalog.Price{InputPerMillion: usd("1000"), OutputPerMillion: usd("2000")},
			Deployments: []catalog.Deployment{{BaseURL: "http://unused/v1"}}},
		{Name: "pro-only", Tiers: []string{tier.Pro}, Deployments: []catalog.Deployment{{BaseURL: "http://unused/v1"}}},
	}, catalog.Validation{Tiers: tier.Names()})
	if err != nil {
		t.Fatal(err)
	}
	tiers, err := tier.New(
		tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 1}, DailySpend: decimal.RequireFromString("0.05")},
		tier.Tier{Name: tier.Pro, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 1}},
	)
	if err != nil {
		t.Fatal(err)
	}
	usage := &records{}
	g := New(Options{Provider: llm.NewMock(), Admitter: admission.Sequential{Limiter: ratelimit.NewMemory(100)}, Tiers: tiers,
		Usage: usage, Spend: budget.NewMemory(nil), Catalog: staticCatalog{cat}})
	ctx := context.Background()

	if _, err := g.Begin(ctx, alice, Spec{Model: "pro-only"}); !errors.As(err, new(*ModelForbiddenError)) {
		t.Fatalf("free tier on a pro model: %v, want ModelForbiddenError", err)
	}
	if _, err := g.Begin(ctx, alice, Spec{Model: "nope"}); !errors.Is(err, catalog.ErrUnknownModel) {
		t.Fatalf("unknown model: %v, want ErrUnknownModel", err)
	}

	u := llm.Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15} // 0.01 + 0.01 = 0.02 USD
	admitted := 0
	for range 6 {
		call, err := g.Begin(ctx, alice, Spec{Model: "m", Estimate: 10, Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := call.Complete(ctx); err != nil {
			var exceeded *SpendExceededError
			if !errors.As(err, &exceeded) {
				t.Fatal(err)
			}
			if !exceeded.Used.Equal(decimal.RequireFromString("0.06")) || !exceeded.Limit.Equal(decimal.RequireFromString("0.05")) {
				t.Fatalf("refusal says %s of %s USD, want 0.06 of 0.05", exceeded.Used, exceeded.Limit)
			}
			continue
		}
		call.Finish(ctx, "m", u)
		admitted++
	}
	// 0, 0.02, 0.04 are below 0.05: three calls; then 0.06 is not.
	if admitted != 3 {
		t.Fatalf("%d calls admitted, want 3", admitted)
	}
	for _, r := range usage.recs {
		if !r.Cost.Equal(decimal.RequireFromString("0.02")) {
			t.Fatalf("recorded cost %s, want 0.02", r.Cost)
		}
	}
}
