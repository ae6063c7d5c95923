package httpapi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/tidwall/gjson"

	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/agentapi/agentapi/internal/tier"
)

// catalogueAPI is a test server routing by a catalogue file over two
// fake upstreams: "open" (every tier) on a, "premium" (pro only) on b.
type catalogueAPI struct {
	*testAPI
	path string
	live *catalog.Live
	a, b *fakeopenai.Server
}

const testCatalogue = `
models:
  - name: open
    price: {input_per_million: 0.15, output_per_million: "0.60"}
    deployments:
      - name: open-a
        base_url: %A%/v1
        api_key_env: TEST_A_API_KEY
        model: upstream-open
  - name: premium
    tiers: [pro]
    price: {input_per_million: 3, output_per_million: 15}
    deployments:
      - base_url: %B%/v1
`

func newCatalogueAPI(t *testing.T, extra string) *catalogueAPI {
	t.Helper()
	// Every call uses a different number of tokens, so that a cost
	// computed from the wrong count or price shows.
	varied := func(r fakeopenai.Request) fakeopenai.Answer {
		u := fakeopenai.Usage{Prompt: 1000 + int(r.Call)*37, Completion: 500 + int(r.Call)*11}
		return fakeopenai.Answer{Text: "one two", Usage: u, StreamUsage: u}
	}
	a := fakeopenai.New(t, fakeopenai.Options{Key: "key-of-a", Respond: varied})
	b := fakeopenai.New(t, fakeopenai.Options{Respond: varied})
	path := filepath.Join(t.TempDir(), "models.yaml")
	text := strings.NewReplacer("%A%", a.URL, "%B%", b.URL).Replace(testCatalogue) + extra
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := catalog.Open(catalog.Options{Path: path, Tiers: tier.Names(),
		Getenv: testkit.Env(map[string]string{"TEST_A_API_KEY": "key-of-a"})})
	if err != nil {
		t.Fatal(err)
	}
	return &catalogueAPI{testAPI: newTestAPI(t, testOptions{catalogue: live, capacity: 1000}), path: path, live: live, a: a, b: b}
}

func chatWith(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
}

func TestCatalogueModelsByTier(t *testing.T) {
	t.Parallel()
	a := newCatalogueAPI(t, "")
	free := a.user("free@example.com")
	pro := a.user("pro@example.com")
	if _, err := a.store.SetTier(context.Background(), "pro@example.com", tier.Pro); err != nil {
		t.Fatal(err)
	}

	ids := func(tok string) string {
		r := a.do("GET", "/v1/models", tok, nil)
		if r.status != 200 {
			t.Fatalf("GET /v1/models: %d %s", r.status, r.body)
		}
		var out []string
		for _, m := range gjson.GetBytes(r.body, "data.#.id").Array() {
			out = append(out, m.Str)
		}
		return strings.Join(out, ",")
	}
	if got := ids(free); got != "open" {
		t.Errorf("free tier lists %q, want open", got)
	}
	if got := ids(pro); got != "open,premium" {
		t.Errorf("pro tier lists %q, want open,premium", got)
	}

	for _, tc := range []struct {
		name, token, model string
		status             int
		code, answeredBy   string
	}{
		{"free uses open", free, "open", 200, "", "open"},
		{"free may not use premium", free, "premium", 403, "model_not_allowed", ""},
		{"pro uses premium", pro, "premium", 200, "", "premium"},
		{"unknown model", pro, "nope", 404, "model_not_found", ""},
	} {
		r := a.do("POST", "/v1/chat/completions", tc.token, chatWith(tc.model))
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		if tc.code != "" && gjson.GetBytes(r.body, "error.code").Str != tc.code {
			t.Errorf("%s: error code %q, want %q: %s", tc.name, gjson.GetBytes(r.body, "error.code").Str, tc.code, r.body)
		}
		if tc.answeredBy != "" && gjson.GetBytes(r.body, "model").Str != tc.answeredBy {
			t.Errorf("%s: answer names model %q, want %q", tc.name, gjson.GetBytes(r.body, "model").Str, tc.answeredBy)
		}
	}
	if a.a.CallsOf("upstream-open") != 1 || a.b.CallsOf("premium") != 1 {
		t.Errorf("upstream calls: a %d (upstream-open %d), b %d; want one each (refused calls reach no upstream)",
			a.a.Calls(), a.a.CallsOf("upstream-open"), a.b.Calls())
	}
	if r := a.do("GET", "/v1/models/premium", free, nil); r.status != 404 {
		t.Errorf("free GET /v1/models/premium: %d, want 404", r.status)
	}
}

func TestCatalogueReloadsFileWithoutRestart(t *testing.T) {
	t.Parallel()
	a := newCatalogueAPI(t, "")
	tok := a.user("u@example.com")
	if r := a.do("POST", "/v1/chat/completions", tok, chatWith("later")); r.status != 404 {
		t.Fatalf("later before the change: %d, want 404", r.status)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.live.Watch(ctx, 10*time.Millisecond)
	data, _ := os.ReadFile(a.path)
	data = append(data, []byte("  - name: later\n    deployments:\n      - base_url: "+a.b.URL+"/v1\n")...)
	if err := os.WriteFile(a.path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the new model is served", func() bool {
		return a.do("POST", "/v1/chat/completions", tok, chatWith("later")).status == 200
	})
	// A broken file is refused and the catalogue in use stays.
	cancel()
	if err := os.WriteFile(a.path, []byte("models: [{name: broken}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The watcher may have met the file already; either way it is
	// refused.
	if changed, _ := a.live.Reload(); changed {
		t.Fatal("a catalogue without deployments was accepted")
	}
	if r := a.do("POST", "/v1/chat/completions", tok, chatWith("later")); r.status != 200 {
		t.Fatalf("after a broken file: %d, want the previous catalogue still in use", r.status)
	}
}

func TestAdminModels(t *testing.T) {
	t.Parallel()
	a := newCatalogueAPI(t, "")
	admin := a.adminToken("admin@example.com")
	user := a.user("u@example.com")

	if r := a.do("PUT", "/admin/models/extra", user, map[string]any{}); r.status != 403 {
		t.Fatalf("a user's PUT: %d, want 403", r.status)
	}
	r := a.do("GET", "/admin/models", admin, nil)
	if r.status != 200 || !strings.Contains(string(r.body), "TEST_A_API_KEY") || strings.Contains(string(r.body), "key-of-a") {
		t.Fatalf("GET /admin/models: %d %s; want the key's reference and never the key", r.status, r.body)
	}

	put := map[string]any{
		"price":       map[string]any{"input_per_million": "1.25", "output_per_million": 10},
		"fallbacks":   []string{"open"},
		"deployments": []map[string]any{{"base_url": a.b.URL + "/v1", "model": "upstream-extra", "weight": 2}},
	}
	if r := a.do("PUT", "/admin/models/extra", admin, put); r.status != 200 || gjson.GetBytes(r.body, "price.input_per_million").Str != "1.25" {
		t.Fatalf("PUT /admin/models/extra: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/v1/chat/completions", user, chatWith("extra")); r.status != 200 || a.b.CallsOf("upstream-extra") != 1 {
		t.Fatalf("extra after PUT: %d %s (b calls %d)", r.status, r.body, a.b.CallsOf("upstream-extra"))
	}
	// The change is in the file, so it outlives this process.
	reopened, err := catalog.Open(catalog.Options{Path: a.path, Tiers: tier.Names(),
		Getenv: testkit.Env(map[string]string{"TEST_A_API_KEY": "key-of-a"})})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := reopened.Current().Model("extra"); !ok {
		t.Fatal("the PUT model is not in the file")
	}

	for _, bad := range []struct {
		name string
		body map[string]any
		want string
	}{
		{"no deployments", map[string]any{}, "needs 1 to"},
		{"env var not a key", map[string]any{"deployments": []map[string]any{{"base_url": "http://x/v1", "api_key_env": "SECRET_KEY"}}}, "_API_KEY"},
		{"key file", map[string]any{"deployments": []map[string]any{{"base_url": "http://x/v1", "api_key_file": "/etc/passwd"}}}, "cannot be read"},
		{"unknown fallback", map[string]any{"fallbacks": []string{"nope"}, "deployments": []map[string]any{{"base_url": "http://x/v1"}}}, "not in the catalogue"},
		{"unknown tier", map[string]any{"tiers": []string{"gold"}, "deployments": []map[string]any{{"base_url": "http://x/v1"}}}, "unknown tier"},
	} {
		r := a.do("PUT", "/admin/models/bad", admin, bad.body)
		if r.status != 422 || !strings.Contains(string(r.body), bad.want) {
			t.Errorf("%s: %d %s, want 422 naming %q", bad.name, r.status, r.body, bad.want)
		}
	}
	if r := a.do("DELETE", "/admin/models/open", admin, nil); r.status != 422 {
		t.Errorf("deleting a model another falls back on: %d %s, want 422", r.status, r.body)
	}
	if r := a.do("DELETE", "/admin/models/extra", admin, nil); r.status != 204 {
		t.Fatalf("DELETE extra: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/v1/chat/completions", user, chatWith("extra")); r.status != 404 {
		t.Fatalf("extra after DELETE: %d, want 404", r.status)
	}
	if r := a.do("DELETE", "/admin/models/extra", admin, nil); r.status != 404 {
		t.Fatalf("DELETE of a missing model: %d, want 404", r.status)
	}
}

// TestCostInUsageRows: over a mixed run (two models at different prices,
// plain and streamed calls, each using different tokens) every usage row's
// cost is its tokens times its model's price, exactly, and so is the total.
func TestCostInUsageRows(t *testing.T) {
	t.Parallel()
	a := newCatalogueAPI(t, "")
	tok := a.user("pro@example.com")
	if _, err := a.store.SetTier(context.Background(), "pro@example.com", tier.Pro); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		model := []string{"open", "premium"}[i%2]
		// Each question differs: a cached answer would cost nothing.
		q := fmt.Sprint("question ", i)
		body := `{"model":"` + model + `","messages":[{"role":"user","content":"` + q + `"}]}`
		if i%3 == 0 {
			body = `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"` + q + `"}]}`
		}
		if r := a.do("POST", "/v1/chat/completions", tok, body); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	prices := map[string][2]decimal.Decimal{
		"open":    {decimal.RequireFromString("0.15"), decimal.RequireFromString("0.60")},
		"premium": {decimal.RequireFromString("3"), decimal.RequireFromString("15")},
	}
	var rows gjson.Result
	testkit.Eventually(t, 5*time.Second, "12 calls recorded", func() bool {
		r := a.do("GET", "/usage", tok, nil)
		rows = gjson.ParseBytes(r.body)
		return rows.Get("totals.requests").Int() == 12
	})
	total := decimal.Zero
	for _, d := range rows.Get("days").Array() {
		p := prices[d.Get("model").Str]
		want := p[0].Mul(decimal.NewFromInt(d.Get("prompt_tokens").Int())).Add(p[1].Mul(decimal.NewFromInt(d.Get("completion_tokens").Int()))).Div(decimal.NewFromInt(1_000_000))
		got := decimal.RequireFromString(d.Get("cost_usd").Str)
		if !got.Equal(want) || want.IsZero() {
			t.Errorf("%s: cost_usd %s, want %s (%d prompt, %d completion tokens)", d.Get("model").Str, got, want, d.Get("prompt_tokens").Int(), d.Get("completion_tokens").Int())
		}
		total = total.Add(want)
	}
	if got := decimal.RequireFromString(rows.Get("totals.cost_usd").Str); !got.Equal(total) {
		t.Errorf("total cost_usd %s, want %s", got, total)
	}
}
