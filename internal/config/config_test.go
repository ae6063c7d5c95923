package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentapi/agentapi/internal/tier"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil), "")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"AppName", c.AppName, "AI Agent API"},
		{"Env", c.Env, EnvDevelopment},
		{"Addr", c.Server.Addr(), "0.0.0.0:8000"},
		{"Algorithm", c.Auth.Algorithm, "HS256"},
		{"AccessTokenTTL", c.Auth.AccessTokenTTL, 30 * time.Minute},
		{"OpenAIBaseURL", c.Upstream.BaseURL, "https://api.openai.com/v1"},
		{"RateLimitFree", c.Tiers.For(tier.Free).RateLimit.Capacity, int64(10)},
		{"RateLimitPro", c.Tiers.For(tier.Pro).RateLimit.Capacity, int64(1000)},
		{"RateLimitFreeRefill", c.Tiers.For(tier.Free).RateLimit.RefillPerSecond, 1.0},
		{"RateLimitProRefill", c.Tiers.For(tier.Pro).RateLimit.RefillPerSecond, 10.0},
		{"UpstreamTimeout", c.Upstream.Timeout, 60 * time.Second},
		{"MaxBodyBytes", c.Server.MaxBodyBytes, int64(1 << 20)},
		{"MaxTokensFree", c.Tiers.For(tier.Free).MaxTokens, int64(4096)},
		{"MaxTokensPro", c.Tiers.For(tier.Pro).MaxTokens, int64(0)},
		{"MaxBodyBytesFree", c.Tiers.For(tier.Free).MaxBodyBytes, int64(512 << 10)},
		{"MaxBodyBytesPro", c.Tiers.For(tier.Pro).MaxBodyBytes, int64(1 << 20)},
		{"CacheTTL", c.Cache.TTL, time.Hour},
		{"CacheScope", c.Cache.Scope, "user"},
		{"DatabaseURL", c.Database.URL, "agentapi.db"},
		{"RedisURL", c.Redis.URL, ""},
		{"RedisKeyPrefix", c.Redis.KeyPrefix, "agentapi:"},
		{"CORSOrigins", len(c.Server.CORSOrigins), 0},
		{"LogLevel", c.Observability.LogLevel, slog.LevelInfo},
		{"AccessLogBatch", c.Observability.AccessLogBatch, 5 * time.Millisecond},
		{"DemoUser", c.DemoUser, true},
		{"MockLLM", c.MockLLM(), true},
		{"SecretKeyGenerated", c.Auth.SecretKeyGenerated, true},
	}
	for _, ck := range checks {
		if diff := cmp.Diff(ck.want, ck.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", ck.name, diff)
		}
	}
	if len(c.Auth.SecretKey) < MinSecretBytes {
		t.Errorf("generated secret is %d bytes, want >= %d", len(c.Auth.SecretKey), MinSecretBytes)
	}
	c2, _ := Load(env(nil), "")
	if c2.Auth.SecretKey == c.Auth.SecretKey {
		t.Error("two loads generated the same random secret")
	}
}

func TestEnvironmentWinsOverDotEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	os.WriteFile(path, []byte("PORT=9001\nAPP_NAME=From File\n# comment\nLLM_MODEL=file-model\n"), 0o600)
	c, err := Load(env(map[string]string{"PORT": "9002"}), path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Port != 9002 || c.AppName != "From File" || c.Upstream.Model != "file-model" {
		t.Fatalf("got port %d name %q model %q", c.Server.Port, c.AppName, c.Upstream.Model)
	}
	if _, err := Load(env(nil), filepath.Join(dir, "missing.env")); err != nil {
		t.Fatalf("a missing .env must be fine: %v", err)
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	t.Parallel()
	_, err := Load(env(map[string]string{
		"PORT":             "eighty",
		"UPSTREAM_TIMEOUT": "soon",
		"ALGORITHM":        "RS256",
		"OPENAI_BASE_URL":  "ftp://x",
		"REDIS_URL":        "http://localhost",
		"RATE_LIMIT_FREE":  "-3",
		"CACHE_SCOPE":      "team",
		"CORS_ORIGINS":     "https://ok.example, not a url",
		"LOG_LEVEL":        "loud",
		"DEMO_USER":        "maybe",
		"ACCESS_LOG_BATCH": "2s",
	}), "")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, name := range []string{"PORT", "UPSTREAM_TIMEOUT", "ALGORITHM", "OPENAI_BASE_URL", "REDIS_URL", "RATE_LIMIT_FREE", "CACHE_SCOPE", "CORS_ORIGINS", "LOG_LEVEL", "DEMO_USER", "ACCESS_LOG_BATCH"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestProductionSafeguards(t *testing.T) {
	t.Parallel()
	strong := strings.Repeat("k", 32)
	cases := []struct {
		name    string
		env     map[string]string
		wantErr string // substring; "" means success
	}{
		{"missing secret", map[string]string{"OPENAI_API_KEY": "x"}, "SECRET_KEY"},
		{"placeholder secret", map[string]string{"SECRET_KEY": PlaceholderSecret, "OPENAI_API_KEY": "x"}, "SECRET_KEY"},
		{"short secret", map[string]string{"SECRET_KEY": strings.Repeat("k", 31), "OPENAI_API_KEY": "x"}, "SECRET_KEY"},
		{"no api key", map[string]string{"SECRET_KEY": strong}, "OPENAI_API_KEY"},
		{"demo user forced", map[string]string{"SECRET_KEY": strong, "OPENAI_API_KEY": "x", "DEMO_USER": "true"}, "DEMO_USER"},
		{"ok", map[string]string{"SECRET_KEY": strong, "OPENAI_API_KEY": "x"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["APP_ENV"] = "production"
			c, err := Load(env(tc.env), "")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.DemoUser || c.Auth.SecretKeyGenerated || c.MockLLM() {
					t.Fatalf("production config has demo=%v generated=%v mock=%v", c.DemoUser, c.Auth.SecretKeyGenerated, c.MockLLM())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want error naming %s, got %v", tc.wantErr, err)
			}
		})
	}
}

func TestRedisSelection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, ""},
		{map[string]string{"REDIS_PORT": "6380"}, ""}, // port alone does not switch Redis on
		{map[string]string{"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_DB": "2"}, "redis://cache:6380/2"},
		{map[string]string{"REDIS_URL": "rediss://:pw@r.example:6379/1", "REDIS_HOST": "ignored"}, "rediss://:pw@r.example:6379/1"},
		{map[string]string{"REDIS_URL": "redis+cluster://u:pw@n1:7000,n2:7000"}, "redis+cluster://u:pw@n1:7000,n2:7000"},
		{map[string]string{"REDIS_URL": "rediss+sentinel://s1:26379,s2:26379/mymaster"}, "rediss+sentinel://s1:26379,s2:26379/mymaster"},
	}
	for _, tc := range cases {
		c, err := Load(env(tc.env), "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Redis.URL != tc.want {
			t.Errorf("%v: RedisURL = %q, want %q", tc.env, c.Redis.URL, tc.want)
		}
	}
}

func TestRedisKeyPrefix(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"REDIS_KEY_PREFIX": " tenant-a:agentapi: "}), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.KeyPrefix != "tenant-a:agentapi:" {
		t.Errorf("RedisKeyPrefix = %q, want the trimmed value", c.Redis.KeyPrefix)
	}
	for _, bad := range []string{"   ", "two words:", "tab\there:", "ctl\x01:", "bad\xffutf8:", strings.Repeat("p", 101)} {
		_, err := Load(env(map[string]string{"REDIS_KEY_PREFIX": bad}), "")
		if err == nil || !strings.Contains(err.Error(), "REDIS_KEY_PREFIX:") {
			t.Errorf("REDIS_KEY_PREFIX=%q: error %v, want one naming the variable", bad, err)
		}
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{
		"SECRET_KEY":     "super-secret-signing-key-0123456789",
		"OPENAI_API_KEY": "sk-upstream-canary",
		"REDIS_URL":      "redis://:redispw-canary@localhost:6379/0",
		"DATABASE_URL":   "postgres://u:dbpw-canary@localhost/db",
	}), "")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("start", "config", c)
	out := b.String()
	for _, secret := range []string{"super-secret-signing-key", "sk-upstream-canary", "redispw-canary", "dbpw-canary"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line leaks %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, `"llm_model":"gpt-4o-mini"`) {
		t.Errorf("log line lacks the effective settings: %s", out)
	}
}

func TestTierBodyCaps(t *testing.T) {
	t.Parallel()
	// A smaller server-wide bound lowers the tiers' defaults with it.
	c, err := Load(env(map[string]string{"MAX_BODY_BYTES": "100000"}), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Tiers.For(tier.Free).MaxBodyBytes != 100000 || c.Tiers.For(tier.Pro).MaxBodyBytes != 100000 {
		t.Errorf("tier bounds %d, %d under MAX_BODY_BYTES=100000, want both 100000", c.Tiers.For(tier.Free).MaxBodyBytes, c.Tiers.For(tier.Pro).MaxBodyBytes)
	}
	// A tier bound set above it is a mistake, reported by name.
	_, err = Load(env(map[string]string{"MAX_BODY_BYTES": "100000", "MAX_BODY_BYTES_PRO": "200000", "MAX_TOKENS_FREE": "-1"}), "")
	if err == nil || !strings.Contains(err.Error(), "MAX_BODY_BYTES_PRO: 200000 is above MAX_BODY_BYTES") || !strings.Contains(err.Error(), "MAX_TOKENS_FREE") {
		t.Errorf("err = %v, want MAX_BODY_BYTES_PRO and MAX_TOKENS_FREE named", err)
	}
}

// TestRedisURLErrorHidesPassword feeds REDIS_URL values that url.Parse
// refuses (a host list whose last host has no port) and checks that the
// error names the variable without quoting the password.
func TestRedisURLErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"redis+cluster://agent:hunter2@n1:7000,n2", "redis+cluster://:hunter2@n1:1,n2/0"} {
		_, err := Load(env(map[string]string{"REDIS_URL": v}), "")
		if err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
			t.Errorf("%s: err = %v, want one naming REDIS_URL", v, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
}
