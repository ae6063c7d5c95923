package httpapi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/tidwall/gjson"
)

func TestAPIKeyLifecycle(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	tok := a.user("keys@example.com")
	ctx := context.Background()

	r := a.do("POST", "/keys", tok, map[string]string{"name": "laptop"})
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	m := r.json(t)
	key, id := m["key"].(string), m["id"].(string)
	if !auth.LooksLikeAPIKey(key) || m["name"] != "laptop" || !strings.HasPrefix(key, m["prefix"].(string)) || m["created_at"] == "" {
		t.Fatalf("created %v", m)
	}
	// Only a hash is stored.
	if k, err := a.store.APIKeyByHash(ctx, auth.HashAPIKey(key)); err != nil || k.ID != id || strings.Contains(k.Hash, key) {
		t.Fatalf("stored key %+v, %v", k, err)
	}

	list := a.do("GET", "/keys", tok, nil)
	if list.status != 200 || strings.Contains(string(list.body), key) || strings.Contains(string(list.body), auth.HashAPIKey(key)) {
		t.Fatalf("list: %d %s (must show neither the key nor its hash)", list.status, list.body)
	}
	if keys := gjson.GetBytes(list.body, "keys").Array(); len(keys) != 1 || keys[0].Get("id").Str != id || keys[0].Get("revoked_at").Type != gjson.Null {
		t.Fatalf("list %s", list.body)
	}

	// The key acts as its owner on /chat, the quota and /usage.
	uid := a.userID(tok)
	if r := a.do("POST", "/chat", key, map[string]string{"message": "by key"}); r.status != 200 {
		t.Fatalf("chat with key: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/chat/quota", key, nil); r.status != 200 || r.json(t)["user_id"] != uid || r.json(t)["tier"] != "free" {
		t.Fatalf("quota with key: %d %s", r.status, r.body)
	}
	waitFor(t, func() bool {
		r := a.do("GET", "/usage", key, nil)
		return r.status == 200 && gjson.GetBytes(r.body, "totals.total_tokens").Int() == 12
	})
	// The key was marked used.
	if keys := gjson.GetBytes(a.do("GET", "/keys", tok, nil).body, "keys").Array(); keys[0].Get("last_used_at").Type == gjson.Null {
		t.Fatalf("last_used_at not set after use")
	}

	// A key cannot manage keys: a leaked one must not mint more.
	for _, c := range []struct{ method, path string }{{"POST", "/keys"}, {"GET", "/keys"}, {"DELETE", "/keys/" + id}} {
		if r := a.do(c.method, c.path, key, map[string]string{"name": "x"}); r.status != 403 {
			t.Fatalf("%s %s with a key: %d %s", c.method, c.path, r.status, r.body)
		}
	}

	// Someone else can neither see nor revoke it.
	other := a.user("other@example.com")
	if r := a.do("DELETE", "/keys/"+id, other, nil); r.status != 404 {
		t.Fatalf("another user's revoke: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/keys", other, nil); gjson.GetBytes(r.body, "keys.#").Int() != 0 {
		t.Fatalf("another user's list: %s", r.body)
	}
	if r := a.do("POST", "/chat", key, map[string]string{"message": "still mine"}); r.status != 200 {
		t.Fatalf("key stopped working after a foreign revoke attempt: %d", r.status)
	}

	// Revocation applies to the very next request on this replica.
	if r := a.do("DELETE", "/keys/"+id, tok, nil); r.status != 204 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/chat", key, map[string]string{"message": "revoked"}); r.status != 401 || r.json(t)["error"] != "Invalid API key" {
		t.Fatalf("revoked key: %d %s", r.status, r.body)
	}
	if r := a.do("DELETE", "/keys/"+id, tok, nil); r.status != 204 {
		t.Fatalf("second revoke: %d", r.status)
	}
	if keys := gjson.GetBytes(a.do("GET", "/keys", tok, nil).body, "keys").Array(); keys[0].Get("revoked_at").Type == gjson.Null {
		t.Fatal("revoked_at not shown")
	}
	if r := a.do("DELETE", "/keys/no-such-key", tok, nil); r.status != 404 {
		t.Fatalf("unknown key: %d", r.status)
	}
}

func TestAPIKeyValidation(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("names@example.com")
	for _, body := range []any{map[string]string{}, map[string]string{"name": ""}, map[string]string{"name": strings.Repeat("n", 101)},
		map[string]string{"name": "tab\there"}, map[string]any{"name": 5}} {
		if r := a.do("POST", "/keys", tok, body); r.status != 422 || !strings.Contains(string(r.body), `"field":"name"`) {
			t.Errorf("%v: %d %s", body, r.status, r.body)
		}
	}
	if r := a.do("POST", "/keys", tok, `{"name":`); r.status != 400 {
		t.Errorf("malformed: %d", r.status)
	}
	if r := a.do("POST", "/keys", "", map[string]string{"name": "x"}); r.status != 401 {
		t.Errorf("anonymous: %d", r.status)
	}
	if r := a.do("GET", "/keys", tok, nil); gjson.GetBytes(r.body, "keys.#").Int() != 0 {
		t.Fatalf("bad requests created keys: %s", r.body)
	}
	// Fill the account up to the cap straight in the store (the API path
	// is tested above), then ask for one more.
	uid := a.userID(tok)
	var last string
	for i := range maxActiveKeys {
		_, _, hash, err := auth.NewAPIKey()
		if err != nil {
			t.Fatal(err)
		}
		k, err := a.store.CreateAPIKey(context.Background(), store.APIKey{UserID: uid, Name: fmt.Sprint("k", i), Hash: hash})
		if err != nil {
			t.Fatal(err)
		}
		last = k.ID
	}
	if r := a.do("POST", "/keys", tok, map[string]string{"name": "one too many"}); r.status != 409 {
		t.Fatalf("key %d: %d %s", maxActiveKeys+1, r.status, r.body)
	}
	// Revoked keys do not count.
	a.do("DELETE", "/keys/"+last, tok, nil)
	if r := a.do("POST", "/keys", tok, map[string]string{"name": "replacement"}); r.status != 201 {
		t.Fatalf("after revoking one: %d %s", r.status, r.body)
	}
}

func TestRevocationReachesOtherReplicas(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 1000})
	b := newTestAPI(t, testOptions{capacity: 1000, store: a.store})
	tok := a.user("replicas@example.com")
	id, key := a.newKey(tok, "shared")
	// Replica b has the key cached as good.
	if r := b.do("GET", "/v1/models", key, nil); r.status != 200 {
		t.Fatalf("key on b: %d %s", r.status, r.body)
	}
	if r := a.do("DELETE", "/keys/"+id, tok, nil); r.status != 204 {
		t.Fatal(r.status)
	}
	// b learns within its cache time (2s); the bound here only stops a hang.
	waitFor(t, func() bool { return b.do("GET", "/v1/models", key, nil).status == 401 })
}

func TestDisabledOwnerStopsKeys(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 1000})
	tok := a.user("disabled@example.com")
	_, key := a.newKey(tok, "k")
	if r := a.do("GET", "/v1/models", key, nil); r.status != 200 {
		t.Fatal(r.status)
	}
	if _, err := a.store.SetDisabled(context.Background(), a.userID(tok), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		r := a.do("GET", "/v1/models", key, nil)
		return r.status == 401 && gjson.GetBytes(r.body, "error.code").Str == "account_disabled"
	})
	if r := a.do("POST", "/chat", key, map[string]string{"message": "x"}); r.status != 401 {
		t.Fatalf("/chat with a disabled owner's key: %d", r.status)
	}
}

func TestAPIKeysDoNotGrantAdmin(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("boss@example.com")
	if _, err := a.store.SetRole(context.Background(), a.userID(tok), "admin"); err != nil {
		t.Fatal(err)
	}
	_, key := a.newKey(tok, "k")
	if r := a.do("GET", "/admin/users", key, nil); r.status != 401 && r.status != 403 {
		t.Fatalf("admin route with an API key: %d %s", r.status, r.body)
	}
}

func TestTokenBudget(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, budgetFree: 30})
	tok := a.user("budget@example.com")
	_, key := a.newKey(tok, "k")
	// Each call uses 12 tokens: 0, 12 and 24 are below 30, so three start.
	for i := range 3 {
		if r := a.do("POST", "/chat", tok, map[string]string{"message": fmt.Sprint("q", i)}); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	r := a.do("POST", "/chat", tok, map[string]string{"message": "one more"})
	if r.status != 429 || r.header.Get("X-Should-Retry") != "false" || r.header.Get("Retry-After") == "" {
		t.Fatalf("past the budget: %d %v %s", r.status, r.header, r.body)
	}
	if e := gjson.GetBytes(r.body, "error"); e.Get("error").Str != "Daily token budget exceeded" || e.Get("budget").Int() != 30 || e.Get("used").Int() != 36 || e.Get("tier").Str != "free" {
		t.Fatalf("429 body %s", r.body)
	}
	v1 := a.do("POST", "/v1/chat/completions", key, `{"messages":[{"role":"user","content":"x"}]}`)
	if v1.status != 429 || gjson.GetBytes(v1.body, "error.code").Str != "insufficient_quota" || !strings.Contains(gjson.GetBytes(v1.body, "error.message").Str, "free tier") {
		t.Fatalf("/v1 past the budget: %d %s", v1.status, v1.body)
	}
	if calls := a.upstream.Calls(); calls != 3 {
		t.Fatalf("upstream called %d times, want 3", calls)
	}
	// Answers from the cache generate nothing and are still served.
	if r := a.do("POST", "/chat", tok, map[string]string{"message": "q0"}); r.status != 200 || r.json(t)["from_cache"] != true {
		t.Fatalf("cache hit past the budget: %d %s", r.status, r.body)
	}
	q := a.do("GET", "/chat/quota", tok, nil)
	tb := gjson.GetBytes(q.body, "token_budget")
	if tb.Get("period").Str != "day" || tb.Get("used").Int() != 36 || tb.Get("limit").Int() != 30 || tb.Get("remaining").Int() != 0 || tb.Get("reset_seconds").Int() <= 0 {
		t.Fatalf("quota %s", q.body)
	}
	// Another user has their own budget.
	if r := a.do("POST", "/chat", a.user("fresh@example.com"), map[string]string{"message": "hi"}); r.status != 200 {
		t.Fatalf("another user: %d", r.status)
	}
}

func TestQuotaWithoutBudget(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("nobudget@example.com")
	a.do("POST", "/chat", tok, map[string]string{"message": "count me"})
	waitFor(t, func() bool {
		q := a.do("GET", "/chat/quota", tok, nil)
		tb := gjson.GetBytes(q.body, "token_budget")
		return tb.Get("used").Int() == 12 && tb.Get("limit").Type == gjson.Null && tb.Get("remaining").Type == gjson.Null
	})
}

func TestUsageReport(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	tok := a.user("report@example.com")
	a.do("POST", "/chat", tok, map[string]string{"message": "a"})
	a.do("POST", "/chat", tok, map[string]string{"message": "b", "model": "other"})
	a.do("POST", "/v1/embeddings", tok, `{"model":"emb","input":"x"}`)
	other := a.user("bystander@example.com")
	a.do("POST", "/chat", other, map[string]string{"message": "not mine"})

	today := time.Now().UTC().Format(time.DateOnly)
	waitFor(t, func() bool {
		r := a.do("GET", "/usage", tok, nil)
		return gjson.GetBytes(r.body, "totals.requests").Int() == 3
	})
	r := a.do("GET", "/usage?from="+today+"&to="+today, tok, nil)
	days := gjson.GetBytes(r.body, "days").Array()
	if r.status != 200 || len(days) != 3 || gjson.GetBytes(r.body, "totals.total_tokens").Int() != 12+12+3 {
		t.Fatalf("usage: %d %s", r.status, r.body)
	}
	for _, d := range days {
		if d.Get("day").Str != today || d.Get("requests").Int() != 1 {
			t.Errorf("day %s", d.Raw)
		}
	}
	if models := gjson.GetBytes(r.body, "days.#.model").String(); models != `["emb","other","test-model"]` {
		t.Errorf("models %s", models)
	}
	for _, q := range []string{"?from=yesterday", "?to=2026-13-01", "?from=2026-03-02&to=2026-03-01", "?from=2020-01-01&to=2026-01-01"} {
		if r := a.do("GET", "/usage"+q, tok, nil); r.status != 422 {
			t.Errorf("GET /usage%s: %d %s", q, r.status, r.body)
		}
	}
	if r := a.do("GET", "/usage?from=2000-01-01&to=2000-01-31", tok, nil); r.status != 200 || gjson.GetBytes(r.body, "days.#").Int() != 0 {
		t.Errorf("an empty range: %d %s", r.status, r.body)
	}
}
