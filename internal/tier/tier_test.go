package tier

import (
	"errors"
	"testing"

	"github.com/agentapi/agentapi/internal/ratelimit"
)

func table(t *testing.T) Table {
	t.Helper()
	tb, err := New(
		Tier{Name: Free, RateLimit: ratelimit.Policy{Capacity: 10, RefillPerSecond: 1}, MaxTokens: 100},
		Tier{Name: Pro, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 10}, DailyTokens: 5000},
	)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestForUnknownIsLeastPrivileged(t *testing.T) {
	tb := table(t)
	if got := tb.For(Pro); got.Name != Pro || got.RateLimit.Capacity != 100 || got.RateLimit.Name != Pro {
		t.Fatalf("For(pro) = %+v", got)
	}
	for _, name := range []string{"", "gold", "PRO"} {
		if got := tb.For(name); got.Name != Free {
			t.Errorf("For(%q) = %q, want free", name, got.Name)
		}
	}
	if tb.Default().Name != Free {
		t.Errorf("Default = %q", tb.Default().Name)
	}
	if !tb.Known(Pro) || tb.Known("gold") {
		t.Error("Known wrong")
	}
	if !tb.AnyBudget() {
		t.Error("AnyBudget = false with a pro budget")
	}
}

func TestMCPRateLimitDefaultsToModelLimit(t *testing.T) {
	tb := table(t)
	if got := tb.For(Free).MCPRateLimit; got.Capacity != 10 || got.RefillPerSecond != 1 || got.Name != Free {
		t.Fatalf("MCPRateLimit = %+v", got)
	}
}

func TestNewRefusesBadTables(t *testing.T) {
	ok := ratelimit.Policy{Capacity: 1, RefillPerSecond: 1}
	cases := map[string][]Tier{
		"empty":     nil,
		"no name":   {{RateLimit: ok}},
		"duplicate": {{Name: Free, RateLimit: ok}, {Name: Free, RateLimit: ok}},
		"bad rate":  {{Name: Free, RateLimit: ratelimit.Policy{Capacity: 0, RefillPerSecond: 1}}},
		"negative":  {{Name: Free, RateLimit: ok, MaxTokens: -1}},
	}
	for name, tiers := range cases {
		if _, err := New(tiers...); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
