package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

func TestRootHealthReady(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	for path, want := range map[string]string{
		"/":       `{"message":"AI Agent API"}`,
		"/health": `{"status":"healthy"}`,
		"/ready":  `{"status":"ready","checks":{"database":"ok"}}`,
	} {
		r := a.do("GET", path, "", nil)
		if r.status != 200 || strings.TrimSpace(string(r.body)) != want {
			t.Errorf("GET %s = %d %s, want %s", path, r.status, r.body, want)
		}
	}
	a.store.Close()
	if r := a.do("GET", "/ready", "", nil); r.status != 503 {
		t.Errorf("ready with the database closed = %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/health", "", nil); r.status != 200 {
		t.Errorf("health must not depend on the database: %d", r.status)
	}
}

func TestUnknownRoutesAreJSON(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	r := a.do("GET", "/nope", "", nil)
	if r.status != 404 || r.json(t)["path"] != "/nope" {
		t.Fatalf("404: %d %s", r.status, r.body)
	}
	r = a.do("DELETE", "/health", "", nil)
	if r.status != 405 || r.header.Get("Allow") == "" || r.json(t)["error"] != "Method not allowed" {
		t.Fatalf("405: %d %v %s", r.status, r.header, r.body)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	r := a.do("POST", "/auth/register", "", map[string]any{"email": "Alice@Example.com", "password": "password123", "tier": "pro", "role": "admin"})
	if r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["email"] != "alice@example.com" || m["tier"] != "free" || m["id"] == "" {
		t.Fatalf("register body %v (tier must ignore the client's value)", m)
	}
	u, err := a.store.UserByEmail(context.Background(), "alice@example.com")
	if err != nil || u.Tier != "free" || u.Role == "admin" || strings.Contains(u.PasswordHash, "password123") {
		t.Fatalf("stored user %+v %v", u, err)
	}

	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"duplicate any case", map[string]string{"email": "ALICE@example.COM", "password": "password123"}, 409, ""},
		{"bad email", map[string]string{"email": "not-an-email", "password": "password123"}, 422, "email"},
		{"display name", map[string]string{"email": "Bob <bob@example.com>", "password": "password123"}, 422, "email"},
		{"short password", map[string]string{"email": "bob@example.com", "password": "short"}, 422, "password"},
		{"long password", map[string]string{"email": "bob@example.com", "password": strings.Repeat("p", 1025)}, 422, "password"},
		{"missing fields", map[string]string{}, 422, "email"},
		{"wrong type", `{"email": 5, "password": "password123"}`, 422, "email"},
		{"malformed", `{"email": `, 400, ""},
		{"not an object", `[1,2]`, 422, ""},
		{"empty", ``, 400, ""},
		{"two objects", `{} {}`, 400, ""},
		{"stray closing brace", `{}}`, 400, ""}, // found by the body decoder's fuzz target (jsonbody.FuzzDecode)
	}
	for _, tc := range cases {
		r := a.do("POST", "/auth/register", "", tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		m := r.json(t)
		if m["path"] != "/auth/register" || m["error"] == nil {
			t.Errorf("%s: error shape %s", tc.name, r.body)
		}
		if tc.field != "" && !strings.Contains(string(r.body), `"field":"`+tc.field+`"`) {
			t.Errorf("%s: details do not name %s: %s", tc.name, tc.field, r.body)
		}
	}
	if r := a.do("POST", "/auth/register", "", "email=a", "Content-Type", "application/x-www-form-urlencoded"); r.status != 415 {
		t.Errorf("form body: %d", r.status)
	}
	users, _ := a.store.ListUsers(context.Background(), 100, 0, "")
	if len(users) != 1 {
		t.Errorf("bad requests changed the database: %d users", len(users))
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{maxBody: 1024})
	big := `{"email":"a@example.com","password":"` + strings.Repeat("x", 2000) + `"}`
	if r := a.do("POST", "/auth/register", "", big); r.status != 413 || r.json(t)["path"] != "/auth/register" {
		t.Fatalf("oversize body: %d %s", r.status, r.body)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	a.do("POST", "/auth/register", "", map[string]string{"email": "carol@example.com", "password": "password123"})
	r := a.do("POST", "/auth/login", "", map[string]string{"email": "Carol@example.com", "password": "password123"})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["token_type"] != "bearer" || m["expires_in"].(float64) != 1800 {
		t.Fatalf("login body %v", m)
	}
	c, err := a.tokens.Verify(m["access_token"].(string))
	if err != nil || c.Tier != "free" {
		t.Fatalf("issued token: %+v %v", c, err)
	}
	wrong := a.do("POST", "/auth/login", "", map[string]string{"email": "carol@example.com", "password": "password124"})
	unknown := a.do("POST", "/auth/login", "", map[string]string{"email": "nobody@example.com", "password": "password123"})
	if wrong.status != 401 || unknown.status != 401 || string(wrong.body) != string(unknown.body) {
		t.Fatalf("wrong password %d %s vs unknown email %d %s", wrong.status, wrong.body, unknown.status, unknown.body)
	}
}

func TestAuthenticationFailuresAre401AndFree(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 3})
	good := a.user("dave@example.com")
	c, _ := a.tokens.Verify(good)
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		m := jwt.MapClaims{"sub": c.UserID, "tier": "pro", "typ": "access", "iss": "agentapi", "aud": "agentapi",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "x"}
		mod(m)
		return m
	}
	sign := func(m jwt.SigningMethod, key []byte, cl jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, cl).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	secret := []byte("test-secret-test-secret-test-secret")
	parts := strings.Split(good, ".")
	cases := map[string]string{
		"garbage":        "garbage",
		"alg none":       "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".",
		"other key":      sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-xxx"), claims(func(jwt.MapClaims) {})),
		"other alg":      sign(jwt.SigningMethodHS384, secret, claims(func(jwt.MapClaims) {})),
		"expired":        sign(jwt.SigningMethodHS256, secret, claims(func(m jwt.MapClaims) { m["exp"] = now.Add(-time.Hour).Unix() })),
		"edited payload": parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2],
	}
	for name, tok := range cases {
		for _, path := range []string{"/chat", "/chat/quota"} {
			method := "POST"
			if path == "/chat/quota" {
				method = "GET"
			}
			r := a.do(method, path, tok, map[string]string{"message": "hi"})
			if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s on %s: %d %v %s", name, path, r.status, r.header.Get("WWW-Authenticate"), r.body)
			}
		}
	}
	for _, hdr := range []string{"", "Basic dXNlcjpwYXNz", "Bearer", "bearer  "} {
		req, _ := http.NewRequest("GET", a.srv.URL+"/chat/quota", nil)
		if hdr != "" {
			req.Header.Set("Authorization", hdr)
		}
		resp, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: %d", hdr, resp.StatusCode)
		}
	}
	// None of the failures above spent the real user's quota.
	q := a.do("GET", "/chat/quota", good, nil).json(t)
	if q["remaining"].(float64) != 3 {
		t.Fatalf("failed authentications consumed quota: %v", q)
	}
	if a.upstream.Calls() != 0 {
		t.Fatalf("upstream called %d times by unauthenticated requests", a.upstream.Calls())
	}
}

func TestChatAndCache(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("erin@example.com")
	r := a.do("POST", "/chat", tok, map[string]string{"message": "Hello 0"})
	if r.status != 200 {
		t.Fatalf("chat: %d %s", r.status, r.body)
	}
	if diff := cmp.Diff(map[string]any{"response": "echo: Hello 0", "tokens_used": 12.0, "from_cache": false}, r.json(t)); diff != "" {
		t.Fatalf("chat body (-want +got):\n%s", diff)
	}
	sentBody, hdr := a.upstream.LastRequest()
	sent := string(sentBody)
	if hdr.Get("Authorization") != "Bearer upstream-key-canary" {
		t.Fatalf("upstream got Authorization %q; must be our key, never the user's token", hdr.Get("Authorization"))
	}
	if !strings.Contains(sent, `"model":"test-model"`) {
		t.Fatalf("default model not sent: %s", sent)
	}

	r = a.do("POST", "/chat", tok, map[string]string{"message": "Hello 0"})
	if diff := cmp.Diff(map[string]any{"response": "echo: Hello 0", "tokens_used": 0.0, "from_cache": true}, r.json(t)); diff != "" {
		t.Fatalf("repeat (-want +got):\n%s", diff)
	}
	if n := a.upstream.Calls(); n != 1 {
		t.Fatalf("upstream called %d times, want 1 (second was a cache hit)", n)
	}
	// Another model is another answer.
	a.do("POST", "/chat", tok, map[string]string{"message": "Hello 0", "model": "other-model"})
	// Another user does not see erin's cache with the default user scope.
	other := a.user("frank@example.com")
	if r := a.do("POST", "/chat", other, map[string]string{"message": "Hello 0"}); r.json(t)["from_cache"] != false {
		t.Fatalf("user scope leaked a cached answer across users: %s", r.body)
	}
	if n := a.upstream.Calls(); n != 3 {
		t.Fatalf("upstream calls %d, want 3", n)
	}

	// Usage is recorded for the two upstream calls of erin (not for the hit).
	c, _ := a.tokens.Verify(tok)
	waitFor(t, func() bool {
		n, _ := a.store.TokensUsed(context.Background(), c.UserID, time.Now().Add(-time.Hour))
		return n == 24
	})
}

func TestGlobalCacheScope(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{cacheScope: "global"})
	a.do("POST", "/chat", a.user("g1@example.com"), map[string]string{"message": "shared"})
	r := a.do("POST", "/chat", a.user("g2@example.com"), map[string]string{"message": "shared"})
	if r.json(t)["from_cache"] != true || a.upstream.Calls() != 1 {
		t.Fatalf("global scope: %s, calls %d", r.body, a.upstream.Calls())
	}
}

func TestChatValidation(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100})
	tok := a.user("gina@example.com")
	cases := []struct {
		body   any
		status int
	}{
		{map[string]string{}, 422},
		{map[string]string{"message": ""}, 422},
		{map[string]string{"message": strings.Repeat("あ", 32001)}, 422},
		{map[string]any{"message": 12}, 422},
		{map[string]string{"message": "hi", "model": "bad model"}, 422},
		{map[string]string{"message": "hi", "model": strings.Repeat("m", 201)}, 422},
		{`{"message": "hi"`, 400},
	}
	for _, tc := range cases {
		if r := a.do("POST", "/chat", tok, tc.body); r.status != tc.status || r.json(t)["path"] != "/chat" {
			t.Errorf("%v: %d %s", tc.body, r.status, r.body)
		}
	}
	if r := a.do("POST", "/chat", tok, map[string]string{"message": strings.Repeat("あ", 32000)}); r.status != 200 {
		t.Errorf("32,000 characters must be accepted: %d", r.status)
	}
	if a.upstream.Calls() != 1 {
		t.Fatalf("invalid requests reached the upstream: %d calls", a.upstream.Calls())
	}
}

func TestRateLimitPrototypeFlow(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 10, refill: 1})
	tok := a.user("hank@example.com")
	ok, limited := 0, 0
	var last result
	for i := 0; i < 15; i++ {
		r := a.do("POST", "/chat", tok, map[string]string{"message": fmt.Sprintf("Hello %d", i)})
		switch r.status {
		case 200:
			ok++
		case 429:
			limited++
			last = r
		default:
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		if r.header.Get("RateLimit-Policy") != `"free";q=10;w=10` || !strings.HasPrefix(r.header.Get("RateLimit"), `"free";r=`) {
			t.Fatalf("request %d headers: %q %q", i, r.header.Get("RateLimit-Policy"), r.header.Get("RateLimit"))
		}
	}
	// The loop takes far less than a second on any machine we run on, but a
	// slow one may refill one token: allow for that without loosening the check.
	if ok < 10 || ok > 11 || ok+limited != 15 {
		t.Fatalf("ok %d limited %d", ok, limited)
	}
	if got := strings.TrimSpace(string(last.body)); got != `{"error":{"error":"Rate limit exceeded","tier":"free","limit":10},"path":"/chat"}` {
		t.Fatalf("429 body %s", got)
	}
	ra, err := strconv.Atoi(last.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", last.header.Get("Retry-After"))
	}
	q := a.do("GET", "/chat/quota", tok, nil)
	m := q.json(t)
	c, _ := a.tokens.Verify(tok)
	if m["user_id"] != c.UserID || m["tier"] != "free" || m["limit"].(float64) != 10 || m["remaining"].(float64) > 1 {
		t.Fatalf("quota %v", m)
	}
	if rs := m["reset_seconds"].(float64); rs < 9 || rs > 10 {
		t.Fatalf("reset_seconds %v, want about 10 (an empty bucket refilling at 1/s)", rs)
	}
	// Quota reads never spend.
	for i := 0; i < 5; i++ {
		a.do("GET", "/chat/quota", tok, nil)
	}
	if m2 := a.do("GET", "/chat/quota", tok, nil).json(t); m2["remaining"].(float64) < m["remaining"].(float64) {
		t.Fatalf("quota reads consumed tokens: %v then %v", m, m2)
	}
}

func TestRateLimitExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 5, refill: 0.0001})
	tok := a.user("ivy@example.com")
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	start := make(chan struct{})
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", a.srv.URL+"/chat", strings.NewReader(fmt.Sprintf(`{"message":"m%d"}`, i)))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := a.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			mu.Unlock()
		}(i)
	}
	close(start)
	wg.Wait()
	if counts[200] != 5 || counts[429] != 35 {
		t.Fatalf("statuses %v, want exactly 5 OK and 35 limited", counts)
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 100, timeout: 300 * time.Millisecond})
	tok := a.user("jack@example.com")
	hung := make(chan struct{})
	cases := []struct {
		name    string
		handler http.HandlerFunc
		status  int
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"boom at /internal/x.go"}}`, 500)
		}, 502},
		{"429", func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Retry-After", "7"); w.WriteHeader(429) }, 503},
		{"hang", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				hung <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		}, 504},
		{"garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, 502},
	}
	for i, tc := range cases {
		a.upstream.Handle(tc.handler)
		r := a.do("POST", "/chat", tok, map[string]string{"message": "fail " + tc.name}, "X-Request-ID", fmt.Sprintf("req-%d", i))
		m := r.json(t)
		if r.status != tc.status || m["request_id"] != fmt.Sprintf("req-%d", i) || m["path"] != "/chat" {
			t.Errorf("%s: %d %s", tc.name, r.status, r.body)
		}
		if strings.Contains(string(r.body), "internal/x.go") || strings.Contains(string(r.body), "upstream-key") {
			t.Errorf("%s: body leaks internals: %s", tc.name, r.body)
		}
		if tc.name == "429" && r.header.Get("Retry-After") != "7" {
			t.Errorf("429: Retry-After %q", r.header.Get("Retry-After"))
		}
		if tc.name == "hang" {
			select {
			case <-hung:
			case <-time.After(5 * time.Second):
				t.Error("the hung upstream call was never cancelled")
			}
		}
	}
	// Errors are not cached: the same message now succeeds.
	a.upstream.Handle(nil)
	r := a.do("POST", "/chat", tok, map[string]string{"message": "fail 500"})
	if r.status != 200 || r.json(t)["from_cache"] != false {
		t.Fatalf("after recovery: %d %s", r.status, r.body)
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("kim@example.com")
	cancelled := make(chan struct{}, 1)
	a.upstream.Handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", a.srv.URL+"/chat", strings.NewReader(`{"message":"bye"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	go func() {
		for a.upstream.Calls() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := a.srv.Client().Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("client request: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream call not cancelled after the client left")
	}
}

type panicProvider struct{}

func (panicProvider) Complete(context.Context, []byte) (*llm.Response, error) {
	panic("secret internal detail")
}

func TestPanicBecomes500(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{provider: panicProvider{}})
	tok := a.user("leo@example.com")
	r := a.do("POST", "/chat", tok, map[string]string{"message": "boom"})
	m := r.json(t)
	if r.status != 500 || m["error"] != "Internal server error" || m["request_id"] == "" || m["path"] != "/chat" {
		t.Fatalf("panic: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "secret internal detail") || strings.Contains(string(r.body), "goroutine") {
		t.Fatalf("panic leaked to the client: %s", r.body)
	}
	if !strings.Contains(a.logs.String(), "secret internal detail") {
		t.Fatal("panic not logged")
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	if r := a.do("GET", "/health", "", nil, "X-Request-ID", "abc-123"); r.header.Get("X-Request-ID") != "abc-123" {
		t.Fatalf("accepted id not echoed: %q", r.header.Get("X-Request-ID"))
	}
	r := a.do("GET", "/health", "", nil, "X-Request-ID", "bad id\"}{")
	if got := r.header.Get("X-Request-ID"); got == "" || strings.ContainsAny(got, " \"{}") {
		t.Fatalf("invalid id not replaced: %q", got)
	}
	if r := a.do("GET", "/health", "", nil); len(r.header.Get("X-Request-ID")) != 24 {
		t.Fatalf("generated id %q", r.header.Get("X-Request-ID"))
	}
}

func TestLogsAreJSONAndCarryNoSecrets(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	const pw, prompt = "canary-password-1", "canary prompt text"
	a.do("POST", "/auth/register", "", map[string]string{"email": "mia@example.com", "password": pw})
	r := a.do("POST", "/auth/login", "", map[string]string{"email": "mia@example.com", "password": pw})
	tok := r.json(t)["access_token"].(string)
	a.do("POST", "/chat", tok, map[string]string{"message": prompt}, "X-Request-ID", "log-test-1")
	a.do("POST", "/auth/login", "", map[string]string{"email": "mia@example.com", "password": "wrong\n{\"level\":\"ERROR\"}"})
	a.do("GET", "/chat/quota?token="+tok, "", nil)
	logs := a.logs.String()
	for _, secret := range []string{pw, prompt, tok, "upstream-key-canary", "echo: canary"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q", secret)
		}
	}
	var chatLine map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not one JSON object: %q", line)
		}
		if m["request_id"] == "log-test-1" && m["msg"] == "request" {
			chatLine = m
		}
	}
	c, _ := a.tokens.Verify(tok)
	if chatLine == nil || chatLine["user_id"] != c.UserID || chatLine["status"].(float64) != 200 ||
		chatLine["cache"] != "miss" || chatLine["tokens"].(float64) != 12 || chatLine["path"] != "/chat" || chatLine["duration_ms"] == nil {
		t.Fatalf("access log line %v", chatLine)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{cors: []string{"https://app.example.com"}})
	r := a.do("GET", "/health", "", nil, "Origin", "https://app.example.com")
	if r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || r.header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("allowed origin: %v", r.header)
	}
	r = a.do("GET", "/health", "", nil, "Origin", "https://evil.example.com")
	if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("foreign origin got CORS headers: %v", r.header)
	}
	r = a.do("OPTIONS", "/chat", "", nil, "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	if r.status != 204 || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
	wild := newTestAPI(t, testOptions{cors: []string{"*"}})
	r = wild.do("GET", "/health", "", nil, "Origin", "https://any.example.com")
	if r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("wildcard must never come with credentials: %v", r.header)
	}
	none := newTestAPI(t, testOptions{})
	if r := none.do("GET", "/health", "", nil, "Origin", "https://app.example.com"); r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS headers without an allowlist")
	}
}

// waitFor polls cond for up to 5s, failing the test if it never holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "the condition", cond)
}
