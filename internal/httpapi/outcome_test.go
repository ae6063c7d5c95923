package httpapi

import (
	"context"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/tier"
)

// TestTakeOutcomesSumsTurns: a request that makes several model calls (an
// agent's turns) is logged with the first call's tier and limit result and
// the tokens of all of them.
func TestTakeOutcomesSumsTurns(t *testing.T) {
	t.Parallel()
	tiers, err := tier.New(tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: 5, RefillPerSecond: 1}})
	if err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(gateway.Options{Provider: llm.NewMock(), Admitter: admission.Sequential{Limiter: ratelimit.NewMemory(10)}, Tiers: tiers})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ri := &requestInfo{}
	p := gateway.Principal{UserID: "u", Tier: "unknown"}
	for turn, u := range []llm.Usage{{PromptTokens: 5, CompletionTokens: 2, TotalTokens: 7}, {}, {PromptTokens: 9, CompletionTokens: 4, TotalTokens: 13}} {
		call, err := gw.Begin(ctx, p, gateway.Spec{Endpoint: "v1/responses", Model: "m", NoLimit: turn > 0})
		if err != nil {
			t.Fatal(err)
		}
		ri.noteCall(call)
		call.Finish(ctx, "m-"+string(rune('a'+turn)), u)
	}
	ri.takeOutcomes()
	if ri.tier != tier.Free || ri.limit != "allowed" || ri.cache != "" {
		t.Errorf("tier %q limit %q cache %q, want free, allowed, none", ri.tier, ri.limit, ri.cache)
	}
	if ri.tokens != 20 || ri.prompt != 14 || ri.completion != 6 || ri.model != "m-c" {
		t.Errorf("tokens %d (%d+%d) model %q, want 20 (14+6) m-c", ri.tokens, ri.prompt, ri.completion, ri.model)
	}
}
