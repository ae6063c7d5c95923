package systemtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	oresponses "github.com/openai/openai-go/v3/responses"
)

// chainUpstream answers each chat completion with how many messages it
// was sent, and keeps the last request's messages.
type chainUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	last []string
}

func newChainUpstream(t *testing.T) *chainUpstream {
	u := &chainUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model    string `json:"model"`
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		var seen []string
		for _, m := range req.Messages {
			seen = append(seen, m.Role+":"+m.Content)
		}
		u.mu.Lock()
		u.last = seen
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"seen %d"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":2,"total_tokens":%d}}`,
			req.Model, len(req.Messages), len(req.Messages), len(req.Messages)+2)
	}))
	t.Cleanup(u.Close)
	return u
}

// TestResponsesChainAcrossReplicas continues a conversation of three turns
// on two replicas that share Redis and PostgreSQL, alternating replica at
// every turn with the official SDK: each turn is stored before its answer
// is sent, so the other replica finds it at once.
func TestResponsesChainAcrossReplicas(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t) // skips without TEST_DATABASE_URL
	up := newChainUpstream(t)
	env := replicaEnv(t, redistest.URL(t), db, up.URL)
	env["RATE_LIMIT_FREE"] = "50"
	servers := startReplicas(t, 2, env)
	token := signUp(t, servers[0], servers[1], "chain@example.com")
	sdk := func(s *server) openai.Client {
		return openai.NewClient(option.WithBaseURL(s.url+"/v1"), option.WithAPIKey(token), option.WithMaxRetries(0))
	}
	ctx := context.Background()
	prev := ""
	var ids []string
	for turn, text := range []string{"one", "two", "three"} {
		p := oresponses.ResponseNewParams{Model: "up-model", Input: oresponses.ResponseNewParamsInputUnion{OfString: openai.String(text)}}
		if prev != "" {
			p.PreviousResponseID = openai.String(prev)
		}
		client := sdk(servers[turn%2])
		r, err := client.Responses.New(ctx, p)
		if err != nil {
			t.Fatalf("turn %d on replica %d: %v", turn+1, turn%2, err)
		}
		if want := fmt.Sprintf("seen %d", 2*turn+1); r.OutputText() != want {
			t.Fatalf("turn %d: %q, want %q", turn+1, r.OutputText(), want)
		}
		prev = r.ID
		ids = append(ids, r.ID)
	}
	up.mu.Lock()
	got := fmt.Sprint(up.last)
	up.mu.Unlock()
	if want := "[user:one assistant:seen 1 user:two assistant:seen 3 user:three]"; got != want {
		t.Errorf("third turn sent upstream %s, want %s", got, want)
	}
	// Each replica reads every turn; the other user reads none.
	other := signUp(t, servers[1], servers[0], "other@example.com")
	for _, s := range servers {
		for _, id := range ids {
			if r := do(t, "GET", s.url+"/v1/responses/"+id, token, nil); r.status != 200 || r.body["id"] != id {
				t.Errorf("GET %s on %s: %d %v", id, s.url, r.status, r.body)
			}
			if r := do(t, "GET", s.url+"/v1/responses/"+id, other, nil); r.status != 404 {
				t.Errorf("other user's GET %s: %d", id, r.status)
			}
		}
	}
	// A deletion on one replica is seen by the other.
	if r := do(t, "DELETE", servers[0].url+"/v1/responses/"+ids[2], token, nil); r.status != 200 || r.body["deleted"] != true {
		t.Fatalf("delete: %d %v", r.status, r.body)
	}
	r := do(t, "POST", servers[1].url+"/v1/responses", token, map[string]any{"model": "up-model", "input": "four", "previous_response_id": ids[2]})
	if e, _ := r.body["error"].(map[string]any); r.status != 400 || e["code"] != "previous_response_not_found" {
		t.Errorf("continuing a deleted response on the other replica: %d %v", r.status, r.body)
	}
}
