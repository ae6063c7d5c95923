package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// routeRecorder collects the patterns addRoutes registers.
type routeRecorder struct{ patterns []string }

func (r *routeRecorder) Handle(pattern string, _ http.Handler) {
	r.patterns = append(r.patterns, pattern)
}

func TestEveryRouteIsDocumented(t *testing.T) {
	t.Parallel()
	rec := &routeRecorder{}
	addRoutes(rec, Deps{}, newAccountStates(nil, nil), nil)
	var registered []string
	for _, p := range rec.patterns {
		m, path := routePath(p)
		registered = append(registered, m+" "+path)
	}
	slices.Sort(registered)
	documented := documentedRoutes(operations())
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is registered but missing from operations()", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("operations() documents %s, which no route serves", d)
		}
	}
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	r := a.do("GET", "/openapi.json", "", nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("openapi.json: %d %s", r.status, r.header.Get("Content-Type"))
	}
	doc, err := libopenapi.NewDocument(r.body)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid document: %s: %s", e.Message, e.Reason)
		}
	}
	var m struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	json.Unmarshal(r.body, &m)
	if m.OpenAPI != "3.1.0" {
		t.Fatalf("openapi version %q", m.OpenAPI)
	}
	chat := m.Paths["/chat"]["post"]
	if chat["security"] == nil || chat["requestBody"] == nil {
		t.Fatalf("POST /chat lacks security or request body: %v", chat)
	}
	body, _ := json.Marshal(chat["requestBody"])
	for _, want := range []string{`"message"`, `"maxLength":32000`, `"required":["message"]`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("chat request schema lacks %s: %s", want, body)
		}
	}
	resp, _ := json.Marshal(chat["responses"])
	for _, want := range []string{`"429"`, `"tokens_used"`, `"from_cache"`} {
		if !strings.Contains(string(resp), want) {
			t.Errorf("chat responses lack %s", want)
		}
	}
}

func TestDocsServedOffline(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	page := a.do("GET", "/docs", "", nil)
	if page.status != 200 || !strings.Contains(string(page.body), "/docs/swagger-ui-bundle.js") || strings.Contains(string(page.body), "https://") {
		t.Fatalf("docs page: %d %s", page.status, page.body)
	}
	for _, asset := range []string{"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js"} {
		r := a.do("GET", asset, "", nil)
		if r.status != 200 || len(r.body) < 100 {
			t.Errorf("%s: %d, %d bytes", asset, r.status, len(r.body))
		}
	}
	if r := a.do("GET", "/docs/missing.js", "", nil); r.status != 404 {
		t.Errorf("missing asset: %d", r.status)
	}
}

func TestMetricsMove(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 2})
	tok := a.user("metrics@example.com")
	a.do("POST", "/chat", tok, map[string]string{"message": "one"})
	a.do("POST", "/chat", tok, map[string]string{"message": "one"}) // cache hit
	a.do("POST", "/chat", tok, map[string]string{"message": "two"}) // limited
	a.do("GET", "/nope", "", nil)
	body := string(a.do("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`agentapi_http_requests_total{code="200",method="POST",route="POST /chat"} 2`,
		`agentapi_http_requests_total{code="429",method="POST",route="POST /chat"} 1`,
		`agentapi_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`agentapi_ratelimit_decisions_total{result="allowed",tier="free"} 2`,
		`agentapi_ratelimit_decisions_total{result="limited",tier="free"} 1`,
		`agentapi_cache_lookups_total{result="hit"} 1`,
		`agentapi_cache_lookups_total{result="miss"} 1`,
		`agentapi_tokens_total{kind="prompt",model="test-model",tier="free"} 7`,
		`agentapi_tokens_total{kind="completion",model="test-model",tier="free"} 5`,
		`agentapi_http_request_duration_seconds_count{method="POST",route="POST /chat"} 3`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// adminToken makes an admin account directly in the store and logs in.
func (a *testAPI) adminToken(email string) string {
	a.t.Helper()
	tok := a.user(email)
	c, _ := a.tokens.Verify(tok)
	if _, err := a.store.SetRole(context.Background(), c.UserID, roleAdmin); err != nil {
		a.t.Fatal(err)
	}
	return tok
}

func TestAdminAuthorization(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	userTok := a.user("plain@example.com")
	uc, _ := a.tokens.Verify(userTok)
	for _, req := range []struct{ method, path string }{
		{"GET", "/admin/users"}, {"GET", "/admin/users/" + uc.UserID},
		{"PATCH", "/admin/users/" + uc.UserID}, {"GET", "/admin/users/" + uc.UserID + "/usage"},
	} {
		if r := a.do(req.method, req.path, userTok, map[string]string{"tier": "pro"}); r.status != 403 {
			t.Errorf("non-admin %s %s: %d %s", req.method, req.path, r.status, r.body)
		}
		if r := a.do(req.method, req.path, "", nil); r.status != 401 {
			t.Errorf("anonymous %s %s: %d", req.method, req.path, r.status)
		}
	}
	if u, _ := a.store.UserByID(context.Background(), uc.UserID); u.Tier != "free" {
		t.Fatal("a non-admin changed a tier")
	}

	adminTok := a.adminToken("boss@example.com")
	ac, _ := a.tokens.Verify(adminTok)
	waitFor(t, func() bool { return a.do("GET", "/admin/users", adminTok, nil).status == 200 })
	list := a.do("GET", "/admin/users?email=plain", adminTok, nil).json(t)
	users := list["users"].([]any)
	if len(users) != 1 || users[0].(map[string]any)["email"] != "plain@example.com" || strings.Contains(a.do("GET", "/admin/users", adminTok, nil).String(), "argon2") {
		t.Fatalf("list: %v", list)
	}
	if r := a.do("GET", "/admin/users?limit=0", adminTok, nil); r.status != 422 {
		t.Errorf("limit=0: %d", r.status)
	}
	if r := a.do("GET", "/admin/users/nope", adminTok, nil); r.status != 404 {
		t.Errorf("unknown id: %d", r.status)
	}
	if r := a.do("PATCH", "/admin/users/"+uc.UserID, adminTok, map[string]string{"tier": "gold"}); r.status != 422 {
		t.Errorf("bad tier: %d", r.status)
	}
	if r := a.do("PATCH", "/admin/users/"+ac.UserID, adminTok, map[string]bool{"disabled": true}); r.status != 422 {
		t.Errorf("admin disabling self: %d", r.status)
	}

	// A tier change applies to the token the user already holds.
	if r := a.do("PATCH", "/admin/users/"+uc.UserID, adminTok, map[string]string{"tier": "pro"}); r.status != 200 || r.json(t)["tier"] != "pro" {
		t.Fatalf("set tier: %d %s", r.status, r.body)
	}
	waitFor(t, func() bool { return a.do("GET", "/chat/quota", userTok, nil).json(t)["tier"] == "pro" })

	// Usage of any user.
	a.do("POST", "/chat", userTok, map[string]string{"message": "count me"})
	waitFor(t, func() bool {
		rep := a.do("GET", "/admin/users/"+uc.UserID+"/usage", adminTok, nil).json(t)
		tot, _ := rep["totals"].(map[string]any)
		return tot != nil && tot["total_tokens"].(float64) == 12 && tot["requests"].(float64) == 1
	})
	if r := a.do("GET", "/admin/users/"+uc.UserID+"/usage?from=2026-13-01", adminTok, nil); r.status != 422 {
		t.Errorf("bad date: %d", r.status)
	}
}

func TestDisabledUserIsRefused(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	userTok := a.user("soon-disabled@example.com")
	uc, _ := a.tokens.Verify(userTok)
	adminTok := a.adminToken("boss2@example.com")
	waitFor(t, func() bool { return a.do("GET", "/admin/users", adminTok, nil).status == 200 })
	if r := a.do("GET", "/chat/quota", userTok, nil); r.status != 200 {
		t.Fatalf("before: %d", r.status)
	}
	if r := a.do("PATCH", "/admin/users/"+uc.UserID, adminTok, map[string]bool{"disabled": true}); r.status != 200 || r.json(t)["disabled"] != true {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	// This replica forgets at once; others within accountStateTTL.
	if r := a.do("POST", "/chat", userTok, map[string]string{"message": "hi"}); r.status != 401 {
		t.Fatalf("disabled user's token still works: %d", r.status)
	}
	if r := a.do("POST", "/auth/login", "", map[string]string{"email": "soon-disabled@example.com", "password": "password123"}); r.status != 401 {
		t.Fatalf("disabled user can log in: %d", r.status)
	}
	// A disabled change made elsewhere (straight in the database) is seen
	// within the state TTL.
	other := a.user("other@example.com")
	oc, _ := a.tokens.Verify(other)
	a.do("GET", "/chat/quota", other, nil)
	if _, err := a.store.SetDisabled(context.Background(), oc.UserID, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(accountStateTTL + 3*time.Second)
	for a.do("GET", "/chat/quota", other, nil).status != 401 {
		if time.Now().After(deadline) {
			t.Fatal("a user disabled in the database kept access past the state TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAnswerSentBeforeAccessLog: a complete answer reaches the client while
// its access-log line (and so the metrics beside it) is still being made,
// framed by its length rather than chunked.
func TestAnswerSentBeforeAccessLog(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("early@example.com")
	release := make(chan struct{})
	a.logs.hold.Store(&release)
	t.Cleanup(func() { close(release) })
	// A connection whose handler waits on its log line serves nothing
	// else meanwhile, so each request has its own.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	for _, c := range []struct{ path, body string }{
		{"/chat", `{"message":"hello"}`},
		{"/v1/chat/completions", `{"model":"test-model","messages":[{"role":"user","content":"hello"}]}`},
		{"/chat", `{"message":""}`}, // an error answer too
	} {
		resp, body, err := postWithin(t, client, a.srv.URL+c.path, tok, c.body)
		if resp == nil {
			t.Fatalf("%s: no answer while the access log waits: %v", c.path, err)
		}
		if err != nil || resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0 || !json.Valid(body) {
			t.Fatalf("%s: %d, length %d, transfer %v, body %q, %v", c.path, resp.StatusCode, resp.ContentLength, resp.TransferEncoding, body, err)
		}
	}
	if strings.Contains(a.logs.String(), `"path":"/v1/chat/completions"`) {
		t.Fatal("the held access-log line was written")
	}
}

// heldCache is a cache whose writes wait until release is closed.
type heldCache struct {
	release chan struct{}
	sets    atomic.Int64
}

func (c *heldCache) Get(context.Context, cache.Key) ([]byte, bool, error) { return nil, false, nil }

func (c *heldCache) Set(context.Context, cache.Key, []byte) error {
	c.sets.Add(1)
	<-c.release
	return nil
}

// TestAnswerSentBeforeCacheWrite: a miss's answer reaches the client while
// its cache write is still going on (a Redis round trip, in production).
func TestAnswerSentBeforeCacheWrite(t *testing.T) {
	t.Parallel()
	held := &heldCache{release: make(chan struct{})}
	a := newTestAPI(t, testOptions{cache: held})
	// Registered after the server's cleanup, so it runs first: the held
	// writes end before the server waits for its handlers.
	t.Cleanup(func() { close(held.release) })
	tok := a.user("cachewrite@example.com")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i, c := range []struct{ path, body string }{
		{"/chat", `{"message":"hello"}`},
		{"/v1/chat/completions", `{"model":"test-model","messages":[{"role":"user","content":"hello"}]}`},
	} {
		resp, body, err := postWithin(t, client, a.srv.URL+c.path, tok, c.body)
		if resp == nil {
			t.Fatalf("%s: no answer while the cache write waits: %v", c.path, err)
		}
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Cache") == "hit" || !json.Valid(body) {
			t.Fatalf("%s: %d %q %v", c.path, resp.StatusCode, body, err)
		}
		// The write begins once the answer is out; it must begin.
		deadline := time.Now().Add(5 * time.Second)
		for held.sets.Load() != int64(i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d cache writes begun, want %d", c.path, held.sets.Load(), i+1)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// postWithin posts a JSON body with a bearer credential and reads the
// answer, giving up after 5 seconds. resp is nil when no answer came; err
// then says why, or else reports reading the body.
func postWithin(t *testing.T, client *http.Client, url, cred, body string) (resp *http.Response, got []byte, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cred)
	req.Header.Set("Content-Type", "application/json")
	if resp, err = client.Do(req); err != nil {
		return nil, nil, err
	}
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, got, err
}
