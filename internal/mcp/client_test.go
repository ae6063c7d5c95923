package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstream is a real MCP server from the SDK, served over Streamable HTTP,
// that counts the requests it gets and remembers their Authorization.
type upstream struct {
	srv      *httptest.Server
	requests atomic.Int64
	inits    atomic.Int64
	mu       sync.Mutex
	auth     []string
	release  chan struct{} // closed to free "hang" calls
}

func newUpstream(t *testing.T, stateless bool) *upstream {
	t.Helper()
	u := &upstream{release: make(chan struct{})}
	server := sdk.NewServer(&sdk.Implementation{Name: "test", Version: "1"}, nil)
	type echoIn struct {
		Text string `json:"text"`
	}
	sdk.AddTool(server, &sdk.Tool{Name: "echo", Description: "Echo text."}, func(ctx context.Context, req *sdk.CallToolRequest, in echoIn) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "echo: " + in.Text}}}, nil, nil
	})
	sdk.AddTool(server, &sdk.Tool{Name: "fail", Description: "Always fails."}, func(ctx context.Context, req *sdk.CallToolRequest, in struct{}) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "it broke"}}}, nil, nil
	})
	sdk.AddTool(server, &sdk.Tool{Name: "big", Description: "A long answer."}, func(ctx context.Context, req *sdk.CallToolRequest, in struct{}) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strings.Repeat("é", 5000)}}}, nil, nil
	})
	sdk.AddTool(server, &sdk.Tool{Name: "hang", Description: "Never answers."}, func(ctx context.Context, req *sdk.CallToolRequest, in struct{}) (*sdk.CallToolResult, any, error) {
		select {
		case <-ctx.Done():
		case <-u.release:
		}
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "late"}}}, nil, nil
	})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server }, &sdk.StreamableHTTPOptions{Stateless: stateless, JSONResponse: true})
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		u.mu.Lock()
		u.auth = append(u.auth, r.Header.Get("Authorization"))
		u.mu.Unlock()
		if r.Method == http.MethodPost {
			body := peekBody(r)
			if strings.Contains(body, `"method":"initialize"`) {
				u.inits.Add(1)
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(u.release)
		u.srv.Close()
	})
	return u
}

func (u *upstream) authSeen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...)
}

func newTestClient(t *testing.T, o ClientOptions) *Client {
	t.Helper()
	c := NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientListAndCall(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, false)
	var calls []string
	var mu sync.Mutex
	c := newTestClient(t, ClientOptions{ToolsTTL: time.Minute, MaxOutputBytes: 1000,
		OnCall: func(server, tool, outcome string, d time.Duration) {
			mu.Lock()
			calls = append(calls, server+"/"+tool+"/"+outcome)
			mu.Unlock()
		}})
	s := Server{Label: "docs", URL: up.srv.URL, Headers: map[string]string{"Authorization": "Bearer upstream-secret"}}
	ctx := t.Context()

	tools, err := c.ListTools(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]Tool{}
	for _, tl := range tools {
		names[tl.Name] = tl
	}
	if len(names) != 4 || names["echo"].Description != "Echo text." || !strings.Contains(string(names["echo"].InputSchema), `"text"`) {
		t.Fatalf("tools = %+v", tools)
	}
	before := up.requests.Load()
	if _, err := c.ListTools(ctx, s); err != nil {
		t.Fatal(err)
	}
	if up.requests.Load() != before {
		t.Errorf("second ListTools within the TTL reached the server")
	}

	tests := []struct {
		tool, args string
		want       Result
	}{
		{"echo", `{"text":"hi"}`, Result{Output: "echo: hi", Bytes: 8}},
		{"fail", `{}`, Result{Output: "it broke", IsError: true, Bytes: 8}},
	}
	for _, tc := range tests {
		got, err := c.CallTool(ctx, s, tc.tool, json.RawMessage(tc.args))
		if err != nil {
			t.Fatalf("%s: %v", tc.tool, err)
		}
		if got != tc.want {
			t.Errorf("%s = %+v, want %+v", tc.tool, got, tc.want)
		}
	}
	big, err := c.CallTool(ctx, s, "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !big.Truncated || len(big.Output) > 1000 || big.Bytes != 10000 || !strings.Contains(big.Output, "truncated") {
		t.Errorf("big: truncated %v, %d bytes kept of %d, output tail %q", big.Truncated, len(big.Output), big.Bytes, big.Output[max(0, len(big.Output)-80):])
	}
	if !strings.HasPrefix(big.Output, "é") || strings.ContainsRune(big.Output, '\uFFFD') {
		t.Errorf("big output cut inside a character")
	}

	// One session for everything: a single initialize handshake.
	if n := up.inits.Load(); n != 1 {
		t.Errorf("initialize sent %d times, want once (the session is reused)", n)
	}
	for i, a := range up.authSeen() {
		if a != "Bearer upstream-secret" {
			t.Errorf("request %d reached the upstream with Authorization %q", i, a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "docs/echo/ok,docs/fail/tool_error,docs/big/ok"; strings.Join(calls, ",") != want {
		t.Errorf("OnCall saw %v, want %s", calls, want)
	}
}

func TestClientFailures(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, true)
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	tests := []struct {
		name    string
		server  Server
		tool    string
		wantErr error
	}{
		{"hung tool costs its timeout", Server{Label: "up", URL: up.srv.URL}, "hang", ErrTimeout},
		{"server down", Server{Label: "down", URL: downURL}, "echo", ErrUnavailable},
		{"user server without a guarded dialer", Server{Label: "u", URL: up.srv.URL, UserSupplied: true}, "echo", ErrUserServersRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestClient(t, ClientOptions{CallTimeout: 300 * time.Millisecond})
			_, err := c.CallTool(t.Context(), tc.server, tc.tool, nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}

	t.Run("unknown tool is the server's error", func(t *testing.T) {
		t.Parallel()
		c := newTestClient(t, ClientOptions{})
		_, err := c.CallTool(t.Context(), Server{Label: "up", URL: up.srv.URL}, "nope", nil)
		if err == nil || errors.Is(err, ErrUnavailable) || OutcomeOf(nil, err) != OutcomeProtocolError {
			t.Fatalf("err = %v (outcome %s), want the server's JSON-RPC error", err, OutcomeOf(nil, err))
		}
		// The session survives a protocol error.
		if _, err := c.CallTool(t.Context(), Server{Label: "up", URL: up.srv.URL}, "echo", json.RawMessage(`{"text":"x"}`)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("caller's cancellation", func(t *testing.T) {
		t.Parallel()
		c := newTestClient(t, ClientOptions{})
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			time.Sleep(50 * time.Millisecond)
			cancel()
		}()
		_, err := c.CallTool(ctx, Server{Label: "up", URL: up.srv.URL}, "hang", nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

// TestClientReconnectsForgottenSession: a stateful server that restarted
// (and so forgot the session) answers 404; the client connects again and
// the call succeeds, without the caller noticing.
func TestClientReconnectsForgottenSession(t *testing.T) {
	t.Parallel()
	newHandler := func() http.Handler {
		server := sdk.NewServer(&sdk.Implementation{Name: "test", Version: "1"}, nil)
		sdk.AddTool(server, &sdk.Tool{Name: "echo"}, func(ctx context.Context, req *sdk.CallToolRequest, in struct{}) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "ok"}}}, nil, nil
		})
		return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server }, nil)
	}
	var current atomic.Value
	current.Store(newHandler())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, ClientOptions{})
	s := Server{Label: "s", URL: srv.URL}
	if _, err := c.CallTool(t.Context(), s, "echo", nil); err != nil {
		t.Fatal(err)
	}
	current.Store(newHandler()) // the "restart"
	res, err := c.CallTool(t.Context(), s, "echo", nil)
	if err != nil || res.Output != "ok" {
		t.Fatalf("after restart: %+v, %v", res, err)
	}
}

// TestClientInProcessHandler: a server with a Handler is reached without a
// socket, through the same SDK client.
func TestClientInProcessHandler(t *testing.T) {
	t.Parallel()
	server := sdk.NewServer(&sdk.Implementation{Name: "builtin", Version: "1"}, nil)
	sdk.AddTool(server, &sdk.Tool{Name: "now"}, func(ctx context.Context, req *sdk.CallToolRequest, in struct{}) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "noon"}}}, nil, nil
	})
	for _, stateless := range []bool{false, true} {
		h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server }, &sdk.StreamableHTTPOptions{Stateless: stateless})
		c := newTestClient(t, ClientOptions{})
		s := Server{Label: "agentapi", Handler: h}
		tools, err := c.ListTools(t.Context(), s)
		if err != nil || len(tools) != 1 || tools[0].Name != "now" {
			t.Fatalf("stateless=%v: tools = %+v, %v", stateless, tools, err)
		}
		res, err := c.CallTool(t.Context(), s, "now", nil)
		if err != nil || res.Output != "noon" {
			t.Fatalf("stateless=%v: call = %+v, %v", stateless, res, err)
		}
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		max     int
		wantCut bool
	}{
		{"short", 100, false},
		{strings.Repeat("a", 100), 100, false},
		{strings.Repeat("a", 500), 100, true},
		{strings.Repeat("日本", 200), 90, true},
		{strings.Repeat("a", 500), 10, true},
	}
	for _, tc := range tests {
		got, cut := Truncate(tc.in, tc.max)
		if cut != tc.wantCut || len(got) > tc.max {
			t.Errorf("Truncate(%d bytes, %d) = %d bytes, cut %v", len(tc.in), tc.max, len(got), cut)
		}
		if !cut && got != tc.in {
			t.Errorf("uncut output changed")
		}
	}
}

// peekBody reads r's body and puts it back.
func peekBody(r *http.Request) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	r.Body = readCloser{strings.NewReader(b.String())}
	return b.String()
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }
