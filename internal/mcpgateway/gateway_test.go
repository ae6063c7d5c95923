package mcpgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

// upstream is a real MCP server of the SDK over Streamable HTTP that
// remembers the Authorization header of every request it got.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.auth)
}

func newUpstream(t *testing.T, name string, tools map[string]string) *upstream {
	t.Helper()
	server := sdk.NewServer(&sdk.Implementation{Name: name, Version: "1"}, nil)
	for tool, answer := range tools {
		sdk.AddTool(server, &sdk.Tool{Name: tool, Description: name + " " + tool}, func(ctx context.Context, req *sdk.CallToolRequest, in map[string]any) (*sdk.CallToolResult, any, error) {
			switch answer {
			case "hang":
				<-ctx.Done()
				return nil, nil, ctx.Err()
			case "big":
				return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strings.Repeat("x", 10000)}}}, nil, nil
			}
			b, _ := json.Marshal(in)
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: answer + " " + string(b)}}}, nil, nil
		})
	}
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server }, nil)
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.auth = append(u.auth, r.Header.Get("Authorization"))
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// memRegistry is a registry of fixed servers.
type memRegistry []mcp.Server

func (r memRegistry) List(context.Context) ([]mcp.Server, error) { return slices.Clone(r), nil }
func (r memRegistry) Get(_ context.Context, label string) (mcp.Server, error) {
	for _, s := range r {
		if s.Label == label {
			return s, nil
		}
	}
	return mcp.Server{}, mcp.ErrServerNotFound
}

// memAudit keeps audit records.
type memAudit struct {
	mu    sync.Mutex
	calls []store.MCPCall
}

func (a *memAudit) RecordMCPCalls(_ context.Context, calls []store.MCPCall) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, calls...)
	return nil
}

// fixture is a gateway in front of two upstreams (plus one down and one
// pro-only), behind a stand-in for httpapi's authentication: the bearer
// token names the caller.
type fixture struct {
	url      string
	docs     *upstream
	math     *upstream
	audit    *memAudit
	gw       *Gateway
	callers  map[string]Caller
	captured *bytes.Buffer // every byte the gateway sent its clients
	capMu    sync.Mutex
}

func newFixture(t *testing.T, mcpCapacity int64) *fixture {
	t.Helper()
	f := &fixture{audit: &memAudit{}, captured: &bytes.Buffer{}}
	f.docs = newUpstream(t, "docs", map[string]string{"search": "found", "admin": "secret stuff", "slow": "hang", "big": "big"})
	f.math = newUpstream(t, "math", map[string]string{"add": "sum"})
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	reg := memRegistry{
		{Label: "docs", URL: f.docs.srv.URL, Headers: map[string]string{"Authorization": "Bearer docs-upstream-secret"}, AllowedTools: []string{"search", "slow", "big"}, RequireApproval: mcp.ApprovalNever},
		{Label: "math", URL: f.math.srv.URL, Headers: map[string]string{"X-Api-Key": "math-upstream-secret"}, RequireApproval: mcp.ApprovalNever},
		{Label: "vault", URL: f.math.srv.URL, Tiers: []string{tier.Pro}, RequireApproval: mcp.ApprovalNever},
		{Label: "gone", URL: downURL, RequireApproval: mcp.ApprovalNever},
	}
	tiers, err := tier.New(
		tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 1}, MCPRateLimit: ratelimit.Policy{Capacity: mcpCapacity, RefillPerSecond: 0.001}},
		tier.Tier{Name: tier.Pro, RateLimit: ratelimit.Policy{Capacity: 100, RefillPerSecond: 1}},
	)
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(mcp.ClientOptions{CallTimeout: 500 * time.Millisecond, MaxOutputBytes: 2000, ToolsTTL: time.Minute})
	t.Cleanup(func() { client.Close() })
	f.gw = New(Options{Registry: reg, Client: client, Limiter: ratelimit.NewMemory(100), Tiers: tiers, Audit: f.audit, Version: "test"})
	t.Cleanup(func() { f.gw.Close(context.Background()) })
	f.callers = map[string]Caller{
		"free-token": {UserID: "u-free", Tier: tier.Free, KeyID: "k1"},
		"pro-token":  {UserID: "u-pro", Tier: tier.Pro},
	}
	mux := http.NewServeMux()
	authn := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := f.callers[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if !ok {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		rec := &teeWriter{ResponseWriter: w, f: f}
		f.gw.Handler().ServeHTTP(rec, r.WithContext(WithCaller(r.Context(), c)))
	})
	mux.Handle("POST /mcp", authn)
	mux.Handle("POST /mcp/{server_label}", authn)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.url = srv.URL + "/mcp"
	return f
}

type teeWriter struct {
	http.ResponseWriter
	f *fixture
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.f.capMu.Lock()
	w.f.captured.Write(p)
	w.f.capMu.Unlock()
	return w.ResponseWriter.Write(p)
}

// bearer adds a token to every request of the SDK client.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func connect(t *testing.T, url, token string) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "ide", Version: "1"}, nil)
	cs, err := c.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{token}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func toolNames(t *testing.T, cs *sdk.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func text(r *sdk.CallToolResult) string {
	if r == nil {
		return "(no result)"
	}
	var parts []string
	for _, c := range r.Content {
		if t, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func TestGatewayListsAndCalls(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 100)
	free := connect(t, f.url, "free-token")
	pro := connect(t, f.url, "pro-token")

	// Merged, allowlisted (docs__admin hidden), tier-filtered (vault only
	// for pro); the server that is down is left out, not an error.
	if got, want := toolNames(t, free), []string{"docs__big", "docs__search", "docs__slow", "math__add"}; !slices.Equal(got, want) {
		t.Errorf("free tools = %v, want %v", got, want)
	}
	if got := toolNames(t, pro); !slices.Contains(got, "vault__add") {
		t.Errorf("pro tools = %v, want vault__add among them", got)
	}

	ctx := t.Context()
	for _, tc := range []struct{ tool, want string }{
		{"docs__search", `found {"q":"mcp"}`},
		{"math__add", `sum {"q":"mcp"}`},
	} {
		res, err := free.CallTool(ctx, &sdk.CallToolParams{Name: tc.tool, Arguments: map[string]any{"q": "mcp"}})
		if err != nil || res.IsError || text(res) != tc.want {
			t.Errorf("%s = %v %q, %v; want %q", tc.tool, res != nil && res.IsError, text(res), err, tc.want)
		}
	}

	// The upstreams saw the registry's credentials, never the caller's.
	for _, a := range f.docs.seen() {
		if a != "Bearer docs-upstream-secret" {
			t.Errorf("docs upstream got Authorization %q", a)
		}
	}
	for _, a := range f.math.seen() {
		if a != "" {
			t.Errorf("math upstream got Authorization %q (the caller's token leaked upstream)", a)
		}
	}
	f.capMu.Lock()
	sent := f.captured.String()
	f.capMu.Unlock()
	if strings.Contains(sent, "upstream-secret") {
		t.Error("a registry credential reached the client")
	}

	// One server's own endpoint lists its tools by their own names.
	one := connect(t, strings.TrimSuffix(f.url, "/mcp")+"/mcp/math", "free-token")
	if got := toolNames(t, one); !slices.Equal(got, []string{"add"}) {
		t.Errorf("/mcp/math tools = %v", got)
	}
	if res, err := one.CallTool(ctx, &sdk.CallToolParams{Name: "add", Arguments: map[string]any{}}); err != nil || text(res) != "sum {}" {
		t.Errorf("/mcp/math add = %v, %v", res, err)
	}
	for label, want := range map[string]string{"vault": "not available to the free tier", "nope": `no MCP server "nope"`} {
		cs := connect(t, strings.TrimSuffix(f.url, "/mcp")+"/mcp/"+label, "free-token")
		if _, err := cs.ListTools(ctx, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("/mcp/%s tools/list: %v, want %q", label, err, want)
		}
	}
}

func TestGatewayRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 100)
	free := connect(t, f.url, "free-token")
	ctx := t.Context()
	tests := []struct {
		name, tool string
		wantErr    []string // all in the error's text
	}{
		{"unknown tool", "nope", []string{"unknown tool", `"nope"`}},
		{"unknown server", "wiki__search", []string{"unknown tool"}},
		{"not in the allowlist", "docs__admin", []string{"not allowed", "docs"}},
		{"not for the tier", "vault__add", []string{"not available to the free tier", "vault"}},
		{"server down", "gone__anything", []string{"unavailable", "gone"}},
		{"hung tool", "docs__slow", []string{"did not answer within 500ms"}},
	}
	for _, tc := range tests {
		_, err := free.CallTool(ctx, &sdk.CallToolParams{Name: tc.tool, Arguments: map[string]any{}})
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, w := range tc.wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
	// The session outlived every refusal and the hung upstream.
	if _, err := free.CallTool(ctx, &sdk.CallToolParams{Name: "math__add", Arguments: map[string]any{}}); err != nil {
		t.Fatalf("after refusals: %v", err)
	}
	// A result over the cap is cut and marked.
	res, err := free.CallTool(ctx, &sdk.CallToolParams{Name: "docs__big", Arguments: map[string]any{}})
	if err != nil || len(text(res)) > 2000 || !strings.Contains(text(res), "truncated") {
		t.Errorf("big: %d bytes, %v", len(text(res)), err)
	}

	// Every call is audited, refusals included; nothing of the arguments.
	if err := f.gw.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.audit.mu.Lock()
	defer f.audit.mu.Unlock()
	var outcomes []string
	for _, c := range f.audit.calls {
		if c.UserID != "u-free" || c.KeyID != "k1" || c.Via != Via || c.At.IsZero() {
			t.Errorf("audit record %+v", c)
		}
		outcomes = append(outcomes, c.Server+"/"+c.Tool+"="+c.Outcome)
	}
	want := []string{"/nope=unknown_tool", "/wiki__search=unknown_tool", "docs/admin=forbidden", "vault/add=forbidden",
		"gone/anything=unavailable", "docs/slow=timeout", "math/add=ok", "docs/big=ok"}
	if !slices.Equal(outcomes, want) {
		t.Errorf("audit outcomes = %v\nwant %v", outcomes, want)
	}
	if big := f.audit.calls[len(f.audit.calls)-1]; big.Bytes <= 10000 {
		t.Errorf("big call's bytes = %d, want its size before cutting", big.Bytes)
	}
}

func TestGatewayRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3)
	free := connect(t, f.url, "free-token")
	for i := range 3 {
		if _, err := free.CallTool(t.Context(), &sdk.CallToolParams{Name: "math__add", Arguments: map[string]any{}}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := free.CallTool(t.Context(), &sdk.CallToolParams{Name: "math__add", Arguments: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), "rate limited") || !strings.Contains(err.Error(), "retry after") {
		t.Fatalf("4th call err = %v, want rate limited with retry after", err)
	}
	// Listing spends nothing.
	if got := toolNames(t, free); len(got) == 0 {
		t.Error("listing refused after the bucket ran dry")
	}
}

// TestGatewayNeedsCaller: without authentication in front, nothing is
// served.
func TestGatewayNeedsCaller(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3)
	srv := httptest.NewServer(f.gw.Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer free-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no caller: %d %s", resp.StatusCode, b)
	}
}
