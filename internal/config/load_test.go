package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/tier"
)

// TestEveryVariableIsRead sets each listed variable, one at a time, to a
// value of its own and checks that Load either refuses it by name or loads
// a different Config: nothing in Variables is listed but ignored. (The other
// direction, nothing read but unlisted, is the loader's panic below.)
func TestEveryVariableIsRead(t *testing.T) {
	t.Parallel()
	// REDIS_HOST is set so that REDIS_PASSWORD counts; SECRET_KEY so that
	// two loads are comparable.
	base := map[string]string{"REDIS_HOST": "cache", "SECRET_KEY": "a-fixed-secret-for-comparison-0123"}
	want, err := Load(env(base), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Variables() {
		e := map[string]string{}
		for k, v := range base {
			e[k] = v
		}
		e[name] = "canary-value"
		got, err := Load(env(e), "")
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%s=canary-value: error does not name it: %v", name, err)
			}
			continue
		}
		if reflect.DeepEqual(got, want) {
			t.Errorf("%s=canary-value changed nothing: listed in Variables but not read", name)
		}
	}
}

func TestReadingAnUnlistedVariablePanics(t *testing.T) {
	t.Parallel()
	l := loader{declared: map[string]bool{"PORT": true}}
	defer func() {
		if recover() == nil {
			t.Fatal("lookup of an unlisted name did not panic")
		}
	}()
	l.lookup("NOT_LISTED")
}

func TestVariablesNameEachTier(t *testing.T) {
	t.Parallel()
	vars := strings.Join(Variables(), " ")
	for _, name := range tier.Names() {
		s := tier.EnvSuffix(name)
		for _, v := range []string{"RATE_LIMIT_" + s, "RATE_LIMIT_" + s + "_REFILL", "MCP_RATE_LIMIT_" + s, "MCP_RATE_LIMIT_" + s + "_REFILL",
			"MAX_TOKENS_" + s, "MAX_BODY_BYTES_" + s, "TOKEN_BUDGET_" + s} {
			if !strings.Contains(" "+vars+" ", " "+v+" ") {
				t.Errorf("Variables lacks %s", v)
			}
		}
	}
	seen := map[string]bool{}
	for _, v := range Variables() {
		if seen[v] {
			t.Errorf("%s listed twice", v)
		}
		seen[v] = true
	}
}

func TestTierTable(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{
		"RATE_LIMIT_PRO": "50", "RATE_LIMIT_PRO_REFILL": "5", "MCP_RATE_LIMIT_PRO": "7", "TOKEN_BUDGET_FREE": "900",
	}), "")
	if err != nil {
		t.Fatal(err)
	}
	free, pro := c.Tiers.For(tier.Free), c.Tiers.For(tier.Pro)
	if free.MCPRateLimit.Capacity != 10 || free.MCPRateLimit.RefillPerSecond != 1 {
		t.Errorf("free MCP limit %+v, want the model-call numbers 10 and 1", free.MCPRateLimit)
	}
	if pro.MCPRateLimit.Capacity != 7 || pro.MCPRateLimit.RefillPerSecond != 5 {
		t.Errorf("pro MCP limit %+v, want 7 and the model-call refill 5", pro.MCPRateLimit)
	}
	if pro.RateLimit.Capacity != 50 || pro.RateLimit.Name != tier.Pro || free.DailyTokens != 900 || !c.Tiers.AnyBudget() {
		t.Errorf("tiers: free %+v, pro %+v", free, pro)
	}
	if got := c.Tiers.For("gold"); got.Name != tier.Free {
		t.Errorf("unknown tier resolves to %q, want the least privileged", got.Name)
	}
	_, err = Load(env(map[string]string{"MCP_RATE_LIMIT_FREE": "0", "MCP_RATE_LIMIT_PRO_REFILL": "-1"}), "")
	if err == nil || !strings.Contains(err.Error(), "MCP_RATE_LIMIT_FREE:") || !strings.Contains(err.Error(), "MCP_RATE_LIMIT_PRO_REFILL:") {
		t.Errorf("err = %v, want both MCP variables named", err)
	}
}

func TestFallbackModeIsTyped(t *testing.T) {
	t.Parallel()
	cases := map[string]ratelimit.FallbackMode{"": ratelimit.FallbackLocal, " Deny ": ratelimit.FallbackDeny, "allow": ratelimit.FallbackAllow}
	for in, want := range cases {
		c, err := Load(env(map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": in}), "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Redis.OnError != want || c.Redis.FailsOpen() != (want != ratelimit.FallbackDeny) {
			t.Errorf("%q: OnError %q, FailsOpen %v", in, c.Redis.OnError, c.Redis.FailsOpen())
		}
	}
	_, err := Load(env(map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "panic"}), "")
	if err == nil || !strings.Contains(err.Error(), "RATE_LIMIT_ON_REDIS_ERROR:") {
		t.Errorf("err = %v", err)
	}
}
