package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentapi/agentapi/internal/tier"
)

func TestGatewayDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil), "")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"LLMModels", len(c.Upstream.Models), 0},
		{"UpstreamFallbacks", len(c.Upstream.Fallbacks), 0},
		{"UpstreamRetries", c.Upstream.Retries, 2},
		{"UpstreamBreakerFailures", c.Upstream.BreakerFailures, 5},
		{"UpstreamBreakerCooldown", c.Upstream.BreakerCooldown, 30 * time.Second},
		{"StreamWriteTimeout", c.Server.StreamWriteTimeout, 30 * time.Second},
		{"TokenBudgetFree", c.Tiers.For(tier.Free).DailyTokens, int64(0)},
		{"TokenBudgetPro", c.Tiers.For(tier.Pro).DailyTokens, int64(0)},
	}
	for _, ck := range checks {
		if diff := cmp.Diff(ck.want, ck.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", ck.name, diff)
		}
	}
}

func TestGatewaySettings(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{
		"OPENAI_API_KEY":            "sk-primary",
		"LLM_MODEL":                 "gpt-b",
		"LLM_MODELS":                " gpt-a, gpt-b ,,gpt-a",
		"UPSTREAM_FALLBACKS":        "https://a.example/v1/|sk-a-secret, http://localhost:11434/v1 ,",
		"UPSTREAM_RETRIES":          "0",
		"UPSTREAM_BREAKER_FAILURES": "3",
		"UPSTREAM_BREAKER_COOLDOWN": "5s",
		"STREAM_WRITE_TIMEOUT":      "2s",
		"TOKEN_BUDGET_FREE":         "100000",
		"TOKEN_BUDGET_PRO":          "0",
	}), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []Upstream{{BaseURL: "https://a.example/v1", APIKey: "sk-a-secret"}, {BaseURL: "http://localhost:11434/v1"}}
	if diff := cmp.Diff(want, c.Upstream.Fallbacks); diff != "" {
		t.Errorf("fallbacks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"gpt-a", "gpt-b"}, c.Upstream.Models); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
	if c.Upstream.Retries != 0 || c.Upstream.BreakerFailures != 3 || c.Upstream.BreakerCooldown != 5*time.Second ||
		c.Server.StreamWriteTimeout != 2*time.Second || c.Tiers.For(tier.Free).DailyTokens != 100000 || c.Tiers.For(tier.Pro).DailyTokens != 0 {
		t.Errorf("config %+v", c)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c)
	if strings.Contains(buf.String(), "sk-a-secret") || strings.Contains(buf.String(), "sk-primary") {
		t.Errorf("start-up line leaks an upstream key: %s", buf.String())
	}
	if !strings.Contains(buf.String(), "https://a.example/v1") {
		t.Errorf("start-up line does not show the fallback URL: %s", buf.String())
	}
}

func TestGatewaySettingsValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env     map[string]string
		names   []string
		secrets []string // must not appear in the message
	}{
		{map[string]string{"OPENAI_API_KEY": "k", "UPSTREAM_FALLBACKS": "ftp://x|sk-never-shown"}, []string{"UPSTREAM_FALLBACKS", "entry 1"}, []string{"sk-never-shown"}},
		{map[string]string{"OPENAI_API_KEY": "k", "UPSTREAM_FALLBACKS": "https://ok/v1|a,not a url|sk-hidden"}, []string{"UPSTREAM_FALLBACKS", "entry 2"}, []string{"sk-hidden"}},
		{map[string]string{"UPSTREAM_FALLBACKS": "https://ok/v1|a"}, []string{"UPSTREAM_FALLBACKS", "OPENAI_API_KEY"}, nil},
		{map[string]string{"LLM_MODELS": "a,bad model"}, []string{"LLM_MODELS"}, nil},
		{map[string]string{"LLM_MODELS": "a,b", "LLM_MODEL": "c"}, []string{"LLM_MODEL", "not in LLM_MODELS"}, nil},
		{map[string]string{"UPSTREAM_RETRIES": "11", "UPSTREAM_BREAKER_FAILURES": "0"}, []string{"UPSTREAM_RETRIES", "UPSTREAM_BREAKER_FAILURES"}, nil},
		{map[string]string{"UPSTREAM_BREAKER_COOLDOWN": "1ms", "STREAM_WRITE_TIMEOUT": "soon"}, []string{"UPSTREAM_BREAKER_COOLDOWN", "STREAM_WRITE_TIMEOUT"}, nil},
		{map[string]string{"TOKEN_BUDGET_FREE": "-1", "TOKEN_BUDGET_PRO": "lots"}, []string{"TOKEN_BUDGET_FREE", "TOKEN_BUDGET_PRO"}, nil},
	}
	for _, tc := range cases {
		_, err := Load(env(tc.env), "")
		if err == nil {
			t.Errorf("%v: accepted", tc.env)
			continue
		}
		for _, n := range tc.names {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%v: error %q does not name %s", tc.env, err, n)
			}
		}
		for _, s := range tc.secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%v: error %q shows a key", tc.env, err)
			}
		}
	}
}
