package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/tidwall/gjson"
)

// TestTierCaps checks the free tier's caps on completion tokens and body
// size on /v1 and /chat, that a refused request reaches neither the
// upstream nor the rate limiter, and that the pro tier's larger caps apply
// to a pro user.
func TestTierCaps(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, caps: TierCaps{
		"free": {MaxTokens: 100, MaxBodyBytes: 2048},
		"pro":  {MaxTokens: 0, MaxBodyBytes: 8192},
	}})
	free := a.user("free@example.com")
	quota := func() float64 { return a.do("GET", "/chat/quota", free, nil).json(t)["remaining"].(float64) }
	before := quota()

	refused := []struct {
		name, path, body string
		status           int
		param            string
	}{
		{"max_tokens over the cap", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":101}`, 400, "max_tokens"},
		{"max_completion_tokens over the cap", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_completion_tokens":500}`, 400, "max_completion_tokens"},
		{"streamed, over the cap", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":1000}`, 400, "max_tokens"},
		{"v1 body over the tier's bound", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 3000) + `"}]}`, 413, ""},
		{"chat body over the tier's bound", "/chat", `{"message":"` + strings.Repeat("x", 3000) + `"}`, 413, ""},
		{"embeddings body over the tier's bound", "/v1/embeddings", `{"model":"m","input":"` + strings.Repeat("x", 3000) + `"}`, 413, ""},
	}
	for _, c := range refused {
		r := a.do("POST", c.path, free, c.body)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			continue
		}
		if c.status == 413 && !strings.Contains(string(r.body), "2048") {
			t.Errorf("%s: the answer does not name the bound: %s", c.name, r.body)
		}
		if c.param != "" {
			if p := gjson.GetBytes(r.body, "error.param").Str; p != c.param {
				t.Errorf("%s: error.param %q, want %q: %s", c.name, p, c.param, r.body)
			}
			if msg := gjson.GetBytes(r.body, "error.message").Str; !strings.Contains(msg, "free tier allows at most 100") {
				t.Errorf("%s: message %q does not give the cap", c.name, msg)
			}
		}
	}
	if n := a.upstream.Calls(); n != 0 {
		t.Errorf("refused requests reached the upstream %d times", n)
	}
	if after := quota(); after != before {
		t.Errorf("refused requests spent rate-limit tokens: remaining %v before, %v after", before, after)
	}

	// Within the cap the client's own value goes through untouched.
	if r := a.do("POST", "/v1/chat/completions", free, `{"messages":[{"role":"user","content":"a"}],"max_tokens":50}`); r.status != 200 {
		t.Fatalf("max_tokens within the cap: %d %s", r.status, r.body)
	}
	sent := a.sentToUpstream()
	if gjson.GetBytes(sent, "max_tokens").Int() != 50 || gjson.GetBytes(sent, "max_completion_tokens").Exists() {
		t.Errorf("upstream got %s, want the client's max_tokens alone", sent)
	}
	// A call that names no limit is given the tier's.
	for _, c := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"b"}]}`},
		{"/chat", `{"message":"c"}`},
	} {
		if r := a.do("POST", c.path, free, c.body); r.status != 200 {
			t.Fatalf("%s: %d %s", c.path, r.status, r.body)
		}
		if got := gjson.GetBytes(a.sentToUpstream(), "max_completion_tokens").Int(); got != 100 {
			t.Errorf("%s: upstream got max_completion_tokens %d, want the cap 100: %s", c.path, got, a.sentToUpstream())
		}
	}

	// A pro user: a larger body, and no token cap to add or enforce.
	a.do("POST", "/auth/register", "", map[string]string{"email": "pro@example.com", "password": "password123"})
	if _, err := a.store.SetTier(context.Background(), "pro@example.com", "pro"); err != nil {
		t.Fatal(err)
	}
	pro := a.do("POST", "/auth/login", "", map[string]string{"email": "pro@example.com", "password": "password123"}).json(t)["access_token"].(string)
	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("y", 3000) + `"}],"max_tokens":100000}`
	if r := a.do("POST", "/v1/chat/completions", pro, big); r.status != 200 {
		t.Fatalf("pro within its caps: %d %s", r.status, r.body)
	}
	if gjson.GetBytes(a.sentToUpstream(), "max_completion_tokens").Exists() {
		t.Errorf("a tier without a token cap had one added: %s", a.sentToUpstream())
	}
}

// TestMalformedRequestsSpendNoToken: the limiter is asked only once a
// request has proved valid, so a client's broken requests cannot use up
// its own (or anyone's) bucket, and the refusal is the 400 that explains
// the mistake.
func TestMalformedRequestsSpendNoToken(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 2})
	tok := a.user("careless@example.com")
	for range 5 {
		if r := a.do("POST", "/v1/chat/completions", tok, `{"model":7}`); r.status != 400 {
			t.Fatalf("bad model: %d %s", r.status, r.body)
		}
		if r := a.do("POST", "/chat", tok, `{"message":""}`); r.status != 422 {
			t.Fatalf("empty message: %d %s", r.status, r.body)
		}
	}
	for i := range 2 {
		if r := a.do("POST", "/chat", tok, map[string]string{"message": fmt.Sprint("ok ", i)}); r.status != 200 {
			t.Fatalf("valid request %d after the bad ones: %d %s", i, r.status, r.body)
		}
	}
	if r := a.do("POST", "/chat", tok, map[string]string{"message": "third"}); r.status != 429 {
		t.Fatalf("third valid request: %d, want 429", r.status)
	}
}

// fakeAdmitter answers admissions with a fixed result and counts them;
// decisions without a lookup go to a real in-process limiter.
type fakeAdmitter struct {
	res   admission.Result
	calls atomic.Int64
	once  sync.Once
	lim   *ratelimit.Memory
}

func (f *fakeAdmitter) limiter() *ratelimit.Memory {
	f.once.Do(func() { f.lim = ratelimit.NewMemory(100) })
	return f.lim
}

func (f *fakeAdmitter) Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	return f.limiter().Allow(ctx, key, p)
}

func (f *fakeAdmitter) Peek(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	return f.limiter().Peek(ctx, key, p)
}

func (f *fakeAdmitter) AllowAndGet(_ context.Context, _ string, p ratelimit.Policy, _ cache.Key) (admission.Result, error) {
	f.calls.Add(1)
	r := f.res
	r.Decision.Limit = p.Capacity
	return r, nil
}

// countingCache is a cache that counts its lookups and never has anything.
type countingCache struct{ gets, sets atomic.Int64 }

func (c *countingCache) Get(context.Context, cache.Key) ([]byte, bool, error) {
	c.gets.Add(1)
	return nil, false, nil
}

func (c *countingCache) Set(context.Context, cache.Key, []byte) error {
	c.sets.Add(1)
	return nil
}

// TestAdmitterAnswersDecisionAndLookup checks how the handlers use an
// admitter: its lookup replaces the cache's Get, a decision made without
// a lookup sends the handler to the cache itself, a refusal is the 429
// with the RateLimit headers, and streams (never cached) go through the
// plain limiter.
func TestAdmitterAnswersDecisionAndLookup(t *testing.T) {
	t.Parallel()
	hitBody, _ := json.Marshal(chatResponse{Response: "from the pipeline", TokensUsed: 9})
	cases := []struct {
		name            string
		res             admission.Result
		status          int
		wantGets        int64
		wantUpstream    int64
		wantFromCache   bool
		wantRateLimited bool
	}{
		{"looked up, hit", admission.Result{Decision: ratelimit.Decision{Allowed: true, Remaining: 4}, LookedUp: true, Hit: true, Value: hitBody}, 200, 0, 0, true, false},
		{"looked up, miss", admission.Result{Decision: ratelimit.Decision{Allowed: true, Remaining: 4}, LookedUp: true}, 200, 0, 1, false, false},
		{"not looked up", admission.Result{Decision: ratelimit.Decision{Allowed: true, Remaining: 4}}, 200, 1, 1, false, false},
		{"refused", admission.Result{Decision: ratelimit.Decision{Allowed: false, RetryAfter: 3e9}, LookedUp: true, Hit: true, Value: hitBody}, 429, 0, 0, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			adm := &fakeAdmitter{res: c.res}
			cc := &countingCache{}
			a := newTestAPI(t, testOptions{cache: cc, admitter: adm})
			tok := a.user("pipe@example.com")
			r := a.do("POST", "/chat", tok, map[string]string{"message": "hello"})
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if adm.calls.Load() != 1 || cc.gets.Load() != c.wantGets || a.upstream.Calls() != c.wantUpstream {
				t.Errorf("admissions %d, cache gets %d, upstream calls %d; want 1, %d, %d",
					adm.calls.Load(), cc.gets.Load(), a.upstream.Calls(), c.wantGets, c.wantUpstream)
			}
			if r.header.Get("Ratelimit-Policy") == "" {
				t.Error("no RateLimit-Policy header")
			}
			if c.wantRateLimited && r.header.Get("Retry-After") != "3" {
				t.Errorf("Retry-After %q, want 3", r.header.Get("Retry-After"))
			}
			if c.status == 200 {
				m := r.json(t)
				if m["from_cache"] != c.wantFromCache {
					t.Errorf("from_cache %v, want %v: %s", m["from_cache"], c.wantFromCache, r.body)
				}
				if c.wantFromCache && m["response"] != "from the pipeline" {
					t.Errorf("hit answered %s", r.body)
				}
			}
		})
	}

	t.Run("streams use the plain limiter", func(t *testing.T) {
		t.Parallel()
		adm := &fakeAdmitter{}
		a := newTestAPI(t, testOptions{cache: &countingCache{}, admitter: adm, capacity: 1})
		tok := a.user("stream@example.com")
		for i, want := range []int{200, 429} {
			r := a.do("POST", "/v1/chat/completions", tok, `{"messages":[{"role":"user","content":"s"}],"stream":true}`)
			if r.status != want {
				t.Fatalf("stream %d: status %d, want %d: %s", i, r.status, want, r.body)
			}
		}
		if n := adm.calls.Load(); n != 0 {
			t.Errorf("streams went through the admitter %d times", n)
		}
	})
}

// TestCacheWriteAfterAnswer: with a background cache, the answer is sent
// while the cache write is still held up, and the write lands afterwards.
func TestCacheWriteAfterAnswer(t *testing.T) {
	t.Parallel()
	held := &heldStore{release: make(chan struct{}), started: make(chan struct{}, 8), m: map[cache.Key][]byte{}}
	bg := cache.NewBackground(held, 4, 0, nil)
	a := newTestAPI(t, testOptions{cache: bg})
	tok := a.user("async@example.com")
	done := make(chan result, 1)
	go func() {
		done <- a.do("POST", "/v1/chat/completions", tok, `{"messages":[{"role":"user","content":"q"}]}`)
	}()
	select {
	case r := <-done:
		if r.status != http.StatusOK || r.header.Get("X-Cache") != "miss" {
			t.Fatalf("status %d, X-Cache %q: %s", r.status, r.header.Get("X-Cache"), r.body)
		}
	case <-time.After(10 * time.Second):
		close(held.release)
		t.Fatal("the answer waited for the cache write")
	}
	<-held.started // the write was begun, and is still held
	close(held.release)
	if err := bg.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := a.do("POST", "/v1/chat/completions", tok, `{"messages":[{"role":"user","content":"q"}]}`); r.header.Get("X-Cache") != "hit" {
		t.Errorf("after the write finished: X-Cache %q, want hit", r.header.Get("X-Cache"))
	}
}

// heldStore is an in-process store whose Set waits for release.
type heldStore struct {
	release chan struct{}
	started chan struct{}
	mu      sync.Mutex
	m       map[cache.Key][]byte
}

func (h *heldStore) Get(_ context.Context, k cache.Key) ([]byte, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.m[k]
	return v, ok, nil
}

func (h *heldStore) Set(_ context.Context, k cache.Key, v []byte) error {
	h.started <- struct{}{}
	<-h.release
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[k] = v
	return nil
}

// downBudget is a budget store that cannot be reached.
type downBudget struct{}

func (downBudget) Reserve(context.Context, string, int64, int64) (budget.Reservation, budget.Status, error) {
	return budget.Reservation{}, budget.Status{}, errors.New("budget store: connection refused")
}
func (downBudget) Settle(context.Context, budget.Reservation, int64) error {
	return errors.New("budget store: connection refused")
}
func (downBudget) Status(context.Context, string, int64) (budget.Status, error) {
	return budget.Status{}, errors.New("budget store: connection refused")
}

// TestQuotaWithBudgetStoreDown: GET /chat/quota follows the same rule as
// the calls while the budget store is down. Failing open, calls go on and
// the quota reports the recorded usage; failing closed, both are 503.
func TestQuotaWithBudgetStoreDown(t *testing.T) {
	t.Parallel()
	t.Run("open", func(t *testing.T) {
		t.Parallel()
		a := newTestAPI(t, testOptions{budget: downBudget{}, budgetFree: 1000})
		tok := a.user("open@example.com")
		if r := a.do("POST", "/chat", tok, map[string]string{"message": "still served"}); r.status != 200 {
			t.Fatalf("chat with the budget store down, failing open: %d %s", r.status, r.body)
		}
		var tb map[string]any
		waitFor(t, func() bool {
			r := a.do("GET", "/chat/quota", tok, nil)
			if r.status != 200 {
				t.Fatalf("quota: %d %s", r.status, r.body)
			}
			tb = r.json(t)["token_budget"].(map[string]any)
			return tb["used"] == 12.0
		})
		if tb["limit"] != 1000.0 || tb["remaining"] != 988.0 {
			t.Errorf("token_budget %v, want the recorded 12 of 1000", tb)
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		a := newTestAPI(t, testOptions{budget: downBudget{}, budgetFree: 1000, budgetFailClosed: true})
		tok := a.user("closed@example.com")
		for _, path := range []string{"/chat", "/chat/quota"} {
			method, body := "POST", any(map[string]string{"message": "refused"})
			if path == "/chat/quota" {
				method, body = "GET", nil
			}
			r := a.do(method, path, tok, body)
			if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(string(r.body), "request_id") {
				t.Errorf("%s with the budget store down, failing closed: %d %v %s; want 503 with Retry-After and a request id", path, r.status, r.header, r.body)
			}
		}
	})
}
