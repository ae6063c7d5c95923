package systemtest

// The MCP gateway scaled out: two replicas of the whole program in front of
// two real MCP servers of the SDK, with the SDK's client in front, its
// requests alternating between the replicas.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/store"
)

// mcpUpstream is an MCP server of the SDK that remembers the credentials
// it was sent.
type mcpUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func newMCPUpstream(t *testing.T, name, tool string) *mcpUpstream {
	t.Helper()
	s := sdk.NewServer(&sdk.Implementation{Name: name, Version: "1"}, nil)
	sdk.AddTool(s, &sdk.Tool{Name: tool, Description: name + " " + tool}, func(_ context.Context, _ *sdk.CallToolRequest, in map[string]any) (*sdk.CallToolResult, any, error) {
		b, _ := json.Marshal(in)
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: name + ":" + tool + ":" + string(b)}}}, nil, nil
	})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s }, nil)
	u := &mcpUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Api-Key"))
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// alternate sends each request of an MCP client to the next replica in
// turn, with the caller's credential: no stickiness at all.
type alternate struct {
	replicas []*url.URL
	n        atomic.Int64
	token    atomic.Value // string
	mu       sync.Mutex
	hosts    []string // the replica each request went to
}

func (a *alternate) RoundTrip(r *http.Request) (*http.Response, error) {
	u := a.replicas[int(a.n.Add(1))%len(a.replicas)]
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	r.Header.Set("Authorization", "Bearer "+a.token.Load().(string))
	a.mu.Lock()
	a.hosts = append(a.hosts, u.Host)
	a.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func TestMCPGatewayAcrossReplicas(t *testing.T) {
	t.Parallel()
	docs := newMCPUpstream(t, "docs", "search")
	math := newMCPUpstream(t, "math", "add")
	db := sharedDatabase(t)
	env := replicaEnv(t, redistest.URL(t), db, newCountingUpstream(t).URL)
	env["MCP_RATE_LIMIT_FREE"] = "5"
	env["MCP_RATE_LIMIT_FREE_REFILL"] = "0.0001"
	rs := startReplicas(t, 2, env)

	// An admin registers both servers on one replica.
	admin := signUp(t, rs[0], rs[1], "mcp-admin@example.com")
	st, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.UserByEmail(t.Context(), "mcp-admin@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetRole(t.Context(), u.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	for _, reg := range []map[string]any{
		{"server_label": "docs", "server_url": docs.srv.URL, "headers": map[string]string{"Authorization": "Bearer docs-registry-secret"}},
		{"server_label": "math", "server_url": math.srv.URL, "headers": map[string]string{"X-Api-Key": "math-registry-secret"}, "tiers": []string{"free", "pro"}},
		{"server_label": "vault", "server_url": math.srv.URL, "tiers": []string{"pro"}},
	} {
		if r := do(t, "POST", rs[0].url+"/admin/mcp-servers", admin, reg); r.status != http.StatusCreated {
			t.Fatalf("register %v: %d %v", reg["server_label"], r.status, r.body)
		}
	}

	// A user with an API key made on the other replica.
	user := signUp(t, rs[1], rs[0], "mcp-user@example.com")
	r := do(t, "POST", rs[1].url+"/keys", user, map[string]string{"name": "ide"})
	key, _ := r.body["key"].(string)
	keyID, _ := r.body["id"].(string)
	if r.status != http.StatusCreated || key == "" {
		t.Fatalf("create key: %d %v", r.status, r.body)
	}

	var replicas []*url.URL
	for _, s := range rs {
		u, _ := url.Parse(s.url)
		replicas = append(replicas, u)
	}
	alt := &alternate{replicas: replicas}
	alt.token.Store(key)
	client := sdk.NewClient(&sdk.Implementation{Name: "ide", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: rs[0].url + "/mcp", HTTPClient: &http.Client{Transport: alt}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect through alternating replicas: %v", err)
	}
	defer cs.Close()

	list, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	// The built-in server (MCP_BUILTIN_SERVER, on by default) is listed
	// with the registered ones.
	if !slices.Equal(names, []string{"agentapi__calculate", "agentapi__current_time", "docs__search", "math__add"}) {
		t.Errorf("tools = %v, want the built-in agentapi's, docs__search and math__add (vault is pro only)", names)
	}

	// Five calls fit the free tier's MCP bucket, across both replicas; the
	// sixth is refused, whichever replica takes it: one exact limit.
	for i := range 5 {
		tool := []string{"docs__search", "math__add"}[i%2]
		res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: tool, Arguments: map[string]any{"i": i}})
		if err != nil || res.IsError {
			t.Fatalf("call %d (%s): %v %v", i, tool, res, err)
		}
		want := strings.Replace(tool, "__", ":", 1) + fmt.Sprintf(`:{"i":%d}`, i)
		if got := res.Content[0].(*sdk.TextContent).Text; got != want {
			t.Errorf("call %d = %q, want %q", i, got, want)
		}
	}
	for range 2 {
		_, err = cs.CallTool(t.Context(), &sdk.CallToolParams{Name: "math__add", Arguments: map[string]any{}})
		if err == nil || !strings.Contains(err.Error(), "rate limited") || !strings.Contains(err.Error(), "retry after") {
			t.Fatalf("call over the limit: %v, want rate limited with retry after", err)
		}
	}
	if _, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: "vault__add", Arguments: map[string]any{}}); err == nil || !strings.Contains(err.Error(), "not available to the free tier") {
		t.Errorf("vault for free: %v", err)
	}

	alt.mu.Lock()
	hosts := slices.Clone(alt.hosts)
	alt.mu.Unlock()
	if !slices.Contains(hosts, replicas[0].Host) || !slices.Contains(hosts, replicas[1].Host) {
		t.Errorf("requests went to %v, want both replicas", hosts)
	}

	// Upstreams saw the registry's credentials; the user's key never.
	for _, up := range []*mcpUpstream{docs, math} {
		up.mu.Lock()
		for _, s := range up.seen {
			if strings.Contains(s, key) {
				t.Error("the caller's API key reached an MCP server")
			}
			if up == docs && s != "Bearer docs-registry-secret|" {
				t.Errorf("docs saw %q", s)
			}
			if up == math && s != "|math-registry-secret" {
				t.Errorf("math saw %q", s)
			}
		}
		up.mu.Unlock()
	}

	// The audit: the user reads their own calls; the admin filters.
	waitFor(t, "8 audit records", func() bool {
		r := do(t, "GET", rs[0].url+"/usage/mcp-calls", key, nil)
		data, _ := r.body["data"].([]any)
		return r.status == 200 && len(data) == 8
	})
	r = do(t, "GET", rs[1].url+"/admin/mcp-calls?outcome=ok&server=docs", admin, nil)
	if data, _ := r.body["data"].([]any); r.status != 200 || len(data) != 3 {
		t.Errorf("admin audit docs/ok: %d %v", r.status, r.body)
	}
	r = do(t, "GET", rs[1].url+"/admin/mcp-calls?outcome=rate_limited", admin, nil)
	if data, _ := r.body["data"].([]any); r.status != 200 || len(data) != 2 {
		t.Errorf("admin audit rate_limited: %d %v", r.status, r.body)
	}
	if r := do(t, "GET", rs[1].url+"/admin/mcp-calls", key, nil); r.status != http.StatusForbidden && r.status != http.StatusUnauthorized {
		t.Errorf("audit of everyone with a user's key: %d", r.status)
	}

	// The key is revoked on one replica: the other refuses it too, within
	// the accounts' cache period, without a new session.
	if r := do(t, "DELETE", rs[0].url+"/keys/"+keyID, user, nil); r.status != http.StatusNoContent && r.status != http.StatusOK {
		t.Fatalf("revoke: %d %v", r.status, r.body)
	}
	waitFor(t, "the revoked key refused on every replica", func() bool {
		return refusedEverywhere(rs, key)
	})
	if _, err := cs.ListTools(t.Context(), nil); err == nil {
		t.Error("the open session still lists tools with a revoked key")
	}

	// A session on the user's access token (the SDK's client ends a
	// session refused with 401), then the account is disabled on one
	// replica: every replica refuses it.
	alt.token.Store(user)
	cs, err = client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: rs[0].url + "/mcp", HTTPClient: &http.Client{Transport: alt}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect on the access token: %v", err)
	}
	defer cs.Close()
	userRow, err := st.UserByEmail(t.Context(), "mcp-user@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, "PATCH", rs[1].url+"/admin/users/"+userRow.ID, admin, map[string]any{"disabled": true}); r.status != http.StatusOK {
		t.Fatalf("disable: %d %v", r.status, r.body)
	}
	waitFor(t, "the disabled account refused through /mcp on every replica", func() bool {
		return refusedEverywhere(rs, user)
	})
	if _, err := cs.ListTools(t.Context(), nil); err == nil {
		t.Error("the open session of a disabled account still lists tools")
	}
}

// refusedEverywhere reports whether every replica answers a tools/list with
// credential 401.
func refusedEverywhere(rs []*server, credential string) bool {
	for _, s := range rs {
		req, _ := http.NewRequest("POST", s.url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+credential)
		resp, err := testClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return false
		}
	}
	return true
}
