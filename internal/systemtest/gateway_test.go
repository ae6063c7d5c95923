package systemtest

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// openAIFake is an upstream that accepts one key, lists "fallback-model",
// and answers "from the fallback" plainly and "one two three" streamed,
// with 4+3 tokens; streamGate, when set, runs before each streamed word
// and may hold it.
func openAIFake(t *testing.T, key string, streamGate func(r *http.Request, i int)) *fakeopenai.Server {
	return fakeopenai.New(t, fakeopenai.Options{Key: key, Models: []string{"fallback-model"}, Gate: streamGate,
		Answer: fakeopenai.Answer{Text: "from the fallback", Words: []string{"one ", "two ", "three"}}})
}

// raw sends a request with a string body and returns status and body.
func raw(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGatewayThroughTheProgram runs the OpenAI-compatible surface through
// Run: the primary upstream is down, so the fallback answers; a key is
// created, used, and revoked; usage and the token budget add up.
func TestGatewayThroughTheProgram(t *testing.T) {
	t.Parallel()
	up := openAIFake(t, "sk-fallback-secret", nil)
	s := startServer(t, map[string]string{
		"DATABASE_URL":       filepath.Join(t.TempDir(), "agentapi.db"),
		"OPENAI_API_KEY":     "sk-primary-secret",
		"OPENAI_BASE_URL":    "http://127.0.0.1:1/v1", // nothing listens there
		"UPSTREAM_FALLBACKS": up.URL + "/v1|sk-fallback-secret",
		"UPSTREAM_RETRIES":   "0",
		"TOKEN_BUDGET_FREE":  "15",
		"RATE_LIMIT_FREE":    "100",
		"LLM_MODEL":          "gpt-test",
	})
	_, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	token := m["access_token"].(string)
	status, m, _ := call(t, "POST", s.url+"/keys", token, map[string]string{"name": "e2e"})
	if status != 201 {
		t.Fatalf("create key: %d %v", status, m)
	}
	key, keyID := m["key"].(string), m["id"].(string)

	if status, body := raw(t, "GET", s.url+"/v1/models", key, ""); status != 200 || !strings.Contains(body, "fallback-model") {
		t.Fatalf("models: %d %s", status, body)
	}
	status, body := raw(t, "POST", s.url+"/v1/chat/completions", key, `{"messages":[{"role":"user","content":"hi"}]}`)
	if status != 200 || !strings.Contains(body, "from the fallback") || !strings.Contains(body, `"model":"gpt-test"`) {
		t.Fatalf("completion: %d %s", status, body)
	}
	status, body = raw(t, "POST", s.url+"/v1/chat/completions", key, `{"stream":true,"messages":[{"role":"user","content":"stream"}]}`)
	if status != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Contains(body, `"usage"`) {
		t.Fatalf("stream: %d %s", status, body)
	}
	// 7 + 7 tokens are below 15; the next call may start, the one after not.
	if status, body = raw(t, "POST", s.url+"/v1/chat/completions", key, `{"messages":[{"role":"user","content":"third"}]}`); status != 200 {
		t.Fatalf("third call: %d %s", status, body)
	}
	status, body = raw(t, "POST", s.url+"/v1/chat/completions", key, `{"messages":[{"role":"user","content":"fourth"}]}`)
	if status != 429 || !strings.Contains(body, "insufficient_quota") {
		t.Fatalf("past the budget: %d %s", status, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, m, _ = call(t, "GET", s.url+"/usage", key, nil)
		if totals, _ := m["totals"].(map[string]any); totals != nil && totals["total_tokens"] == 21.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %v, want 21 tokens", m)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if status, _, _ := call(t, "DELETE", s.url+"/keys/"+keyID, token, nil); status != 204 {
		t.Fatalf("revoke: %d", status)
	}
	if status, body := raw(t, "GET", s.url+"/v1/models", key, ""); status != 401 || !strings.Contains(body, "invalid_api_key") {
		t.Fatalf("revoked key: %d %s", status, body)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	out := s.out.String()
	for _, secret := range []string{"sk-primary-secret", "sk-fallback-secret", key, token} {
		if strings.Contains(out, secret) {
			t.Errorf("the log shows a secret (%.12s...)", secret)
		}
	}
	if !strings.Contains(out, `"upstream":"openai"`) {
		t.Error("the failed primary attempts are not logged by upstream name")
	}
}

// TestShutdownCutsStreamButKeepsItsUsage stops the server while a stream
// is held open by the upstream: the stream is cut at the shutdown deadline
// and the tokens it had streamed are still written before Run returns.
func TestShutdownCutsStreamButKeepsItsUsage(t *testing.T) {
	t.Parallel()
	up := openAIFake(t, "sk-up", func(r *http.Request, i int) {
		if i == 2 {
			<-r.Context().Done() // never finishes on its own
		}
	})
	db := filepath.Join(t.TempDir(), "agentapi.db")
	s := startServer(t, map[string]string{
		"DATABASE_URL": db, "OPENAI_API_KEY": "sk-up", "OPENAI_BASE_URL": up.URL + "/v1",
		"SHUTDOWN_TIMEOUT": "300ms",
	})
	_, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	token := m["access_token"].(string)
	req, _ := http.NewRequest("POST", s.url+"/chat", strings.NewReader(`{"message":"long story","stream":true}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	deltas := 0
	for deltas < 2 && sc.Scan() {
		if sc.Text() == "event: delta" {
			deltas++
		}
	}
	if deltas != 2 {
		t.Fatalf("got %d deltas before the stall", deltas)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	n, err := demoTokensUsed(t, db)
	if err != nil || n == 0 {
		t.Fatalf("tokens recorded for the cut stream: %d, %v", n, err)
	}
}

// TestBudgetAndKeysAcrossReplicas runs two replicas on one Redis and one
// database: the token budget is one budget whichever replica a call lands
// on, and a key revoked on one replica stops working on the other.
func TestBudgetAndKeysAcrossReplicas(t *testing.T) {
	t.Parallel()
	up := openAIFake(t, "sk-upstream-test", nil)
	env := replicaEnv(t, redistest.URL(t), sharedDatabase(t), up.URL)
	env["RATE_LIMIT_FREE"] = "100"
	env["TOKEN_BUDGET_FREE"] = "15" // each call costs 7 tokens
	rs := startReplicas(t, 2, env)
	token := signUp(t, rs[0], rs[1], "budget-replicas@example.com")
	r := do(t, "POST", rs[0].url+"/keys", token, map[string]string{"name": "shared"})
	key, _ := r.body["key"].(string)
	keyID, _ := r.body["id"].(string)
	if r.status != http.StatusCreated || key == "" {
		t.Fatalf("create key: %d %v", r.status, r.body)
	}
	// Different messages, so the shared cache answers none of them.
	body := func(i int) string {
		return fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"q%d"}]}`, i)
	}
	// 0, 7 and 14 tokens are below 15, alternating replicas; then 21 is not.
	for i, s := range []*server{rs[0], rs[1], rs[0]} {
		if status, b := raw(t, "POST", s.url+"/v1/chat/completions", key, body(i)); status != 200 {
			t.Fatalf("call %d: %d %s", i, status, b)
		}
	}
	if status, b := raw(t, "POST", rs[1].url+"/v1/chat/completions", key, body(3)); status != 429 || !strings.Contains(b, "insufficient_quota") {
		t.Fatalf("fourth call on the other replica: %d %s", status, b)
	}
	q := do(t, "GET", rs[0].url+"/chat/quota", key, nil)
	if tb, _ := q.body["token_budget"].(map[string]any); tb == nil || tb["used"] != 21.0 || tb["limit"] != 15.0 {
		t.Fatalf("quota: %v", q.body)
	}

	if r := do(t, "DELETE", rs[0].url+"/keys/"+keyID, token, nil); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d", r.status)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, _ := raw(t, "GET", rs[1].url+"/v1/models", key, "")
		if status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica still accepts the revoked key: %d", status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
