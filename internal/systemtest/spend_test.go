package systemtest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// TestSpendLimitAcrossReplicas: two replicas share one user's daily spend
// limit through Redis. Each call uses 4 + 3 tokens of a model priced at
// 1000 USD per million either way, 0.007 USD; a limit of 0.035 USD lets
// exactly five calls through, whichever replica takes them, and the usage
// records cost exactly the limit.
func TestSpendLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	up := fakeopenai.New(t, fakeopenai.Options{})
	models := filepath.Join(t.TempDir(), "models.yaml")
	catalogue := fmt.Sprintf(`models:
  - name: priced
    price: {input_per_million: 1000, output_per_million: 1000}
    deployments:
      - base_url: %s/v1
`, up.URL)
	if err := os.WriteFile(models, []byte(catalogue), 0o600); err != nil {
		t.Fatal(err)
	}
	db := sharedDatabase(t)
	env := replicaEnv(t, redistest.URL(t), db, up.URL)
	delete(env, "OPENAI_API_KEY")
	env["MODELS_FILE"] = models
	env["RATE_LIMIT_FREE"] = "100"
	env["SPEND_LIMIT_FREE"] = "0.035"
	rs := startReplicas(t, 2, env)
	token, id := newFaultUser(t, rs[0], "spender@example.com")

	admitted := 0
	for i := range 10 {
		// Each question differs: a cached answer would cost nothing.
		body := map[string]any{"model": "priced", "messages": []map[string]string{{"role": "user", "content": fmt.Sprint("question ", i)}}}
		r := do(t, "POST", rs[i%2].url+"/v1/chat/completions", token, body)
		switch r.status {
		case http.StatusOK:
			admitted++
			if admitted > 5 {
				t.Fatalf("call %d admitted past the limit: %v", i, r.body)
			}
		case http.StatusTooManyRequests:
			e, _ := r.body["error"].(map[string]any)
			if e["code"] != "insufficient_quota" || r.header.Get("X-Should-Retry") != "false" {
				t.Fatalf("call %d: 429 %v, want insufficient_quota and X-Should-Retry: false", i, r.body)
			}
		default:
			t.Fatalf("call %d: %d %v", i, r.status, r.body)
		}
		if i >= 5 && r.status != http.StatusTooManyRequests {
			t.Fatalf("call %d on replica %d: %d, want 429 once 0.035 USD is spent", i, i%2, r.status)
		}
	}
	if admitted != 5 || up.Calls() != 5 {
		t.Fatalf("%d calls admitted, %d reached the upstream; want exactly 5", admitted, up.Calls())
	}

	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var cost decimal.Decimal
	testkit.Eventually(t, 10*time.Second, "five usage records", func() bool {
		days, err := st.UsageByDay(context.Background(), id, time.Now().AddDate(0, 0, -1), time.Now().AddDate(0, 0, 1))
		if err != nil {
			t.Fatal(err)
		}
		cost = decimal.Zero
		var n int64
		for _, d := range days {
			cost = cost.Add(d.Cost)
			n += d.Requests
		}
		return n == 5
	})
	if !cost.Equal(decimal.RequireFromString("0.035")) {
		t.Fatalf("recorded cost %s USD, want exactly 0.035", cost)
	}
}
