// Package mcpgateway is agentapi's MCP gateway: one MCP server, served over
// Streamable HTTP at /mcp, that fronts every MCP server of the registry for
// agents and IDEs. It lists their tools as <server_label>__<tool> (or, at
// /mcp/{server_label}, one server's tools by their own names) and forwards
// tools/call with the registry's credentials added, under the same
// governance as model calls: the caller's tier decides what it may list and
// call, each call spends from the tier's MCP bucket on the shared limiter,
// is bounded in time and size, audited, measured and traced.
//
// It is stateless: the SDK's stateless Streamable HTTP mode answers every
// request on its own, so any replica serves any request of a session and no
// load balancer needs sticky sessions. Authentication happens before it
// (httpapi puts the caller in the request's context with WithCaller).
package mcpgateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

// Separator joins a server's label and a tool's name in /mcp's tool names.
const Separator = "__"

// Via is the audit's name for calls made through the gateway.
const Via = "gateway"

// JSON-RPC error codes of the gateway's own refusals, in the range JSON-RPC
// leaves to servers. An unknown tool is the spec's invalid params.
const (
	CodeUnknownTool         = jsonrpc.CodeInvalidParams
	CodeRateLimited         = -32010
	CodeForbidden           = -32011
	CodeUpstreamUnavailable = -32012
	CodeUpstreamTimeout     = -32013
	CodeInternal            = jsonrpc.CodeInternalError
)

// Outcomes of refused calls, beside mcp's outcomes of forwarded ones.
const (
	OutcomeRateLimited = "rate_limited"
	OutcomeForbidden   = "forbidden"
	OutcomeUnknownTool = "unknown_tool"
)

// Caller is who a request acts for, as authentication found it.
type Caller struct {
	UserID string
	// Tier is the account's current tier.
	Tier string
	// KeyID is the API key used; "" for an access token.
	KeyID string
}

type callerKey struct{}

// WithCaller returns ctx acting for c; the gateway refuses requests
// without one.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// registry is what the gateway reads of the MCP registry.
type registry interface {
	List(ctx context.Context) ([]mcp.Server, error)
	Get(ctx context.Context, label string) (mcp.Server, error)
}

// client calls the servers.
type client interface {
	ListTools(ctx context.Context, s mcp.Server) ([]mcp.Tool, error)
	CallToolRaw(ctx context.Context, s mcp.Server, name string, args json.RawMessage) (*sdk.CallToolResult, error)
	MaxOutputBytes() int
	CallTimeout() time.Duration
}

// limiter is the rate limiter model calls spend from.
type limiter interface {
	Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error)
}

// auditStore keeps the audit records.
type auditStore interface {
	RecordMCPCalls(ctx context.Context, calls []store.MCPCall) error
}

// Options configures New.
type Options struct {
	Registry registry
	Client   client
	Limiter  limiter
	Tiers    tier.Table
	// Audit keeps one record per tools/call; nil keeps none.
	Audit  auditStore
	Logger *slog.Logger
	// OnRefused is told of calls the gateway refused itself (rate limited,
	// forbidden, unknown tool), for metrics; forwarded calls are measured
	// by the client.
	OnRefused func(server, tool, outcome string)
	// Version is the gateway's version in its serverInfo.
	Version string
	// MaxBodyBytes bounds a request's body; 0 means the SDK's default.
	MaxBodyBytes int64
}

// Gateway is the /mcp server. It is safe for concurrent use.
type Gateway struct {
	o       Options
	logger  *slog.Logger
	handler http.Handler
	audit   *auditor
	now     func() time.Time
}

// New builds the gateway.
func New(o Options) *Gateway {
	g := &Gateway{o: o, logger: o.Logger, now: time.Now}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	if o.Audit != nil {
		g.audit = newAuditor(o.Audit, g.logger)
	}
	server := sdk.NewServer(&sdk.Implementation{Name: "agentapi", Title: "agentapi MCP gateway", Version: o.Version},
		&sdk.ServerOptions{HasTools: true, Instructions: "Tools of the MCP servers registered with agentapi, named <server>__<tool>."})
	server.AddReceivingMiddleware(g.intercept)
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server }, &sdk.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		// Callers authenticate with a bearer credential on every request,
		// which a DNS-rebinding page cannot send; and behind a proxy on
		// the same host the Host header is the public name, which the
		// SDK's loopback check would refuse.
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        o.MaxBodyBytes,
	})
	g.handler = auth.RequireBearerToken(g.verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(inner)
	return g
}

// Handler serves /mcp and /mcp/{server_label} (the label read with
// PathValue("server_label")). The caller must be in the request's context.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Close writes the audit records still queued, until ctx ends.
func (g *Gateway) Close(ctx context.Context) error {
	if g.audit == nil {
		return nil
	}
	return g.audit.close(ctx)
}

// scope is what one request may see: the caller, and the one server of
// /mcp/{server_label} ("" for all).
type scope struct {
	caller Caller
	label  string
}

// verify hands the caller that httpapi authenticated to the SDK, which
// passes it to every method as the request's TokenInfo.
func (g *Gateway) verify(ctx context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	if !ok || c.UserID == "" {
		return nil, fmt.Errorf("%w: not authenticated", auth.ErrInvalidToken)
	}
	return &auth.TokenInfo{UserID: c.UserID, Extra: map[string]any{"scope": scope{caller: c, label: r.PathValue("server_label")}}}, nil
}

func scopeOf(req sdk.Request) (scope, bool) {
	extra := req.GetExtra()
	if extra == nil || extra.TokenInfo == nil {
		return scope{}, false
	}
	s, ok := extra.TokenInfo.Extra["scope"].(scope)
	return s, ok
}

// intercept answers tools/list and tools/call itself; everything else
// (initialize, ping, ...) goes to the SDK's server.
func (g *Gateway) intercept(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		switch method {
		case "tools/list", "tools/call":
		default:
			return next(ctx, method, req)
		}
		sc, ok := scopeOf(req)
		if !ok {
			return nil, &jsonrpc.Error{Code: CodeForbidden, Message: "not authenticated"}
		}
		if method == "tools/list" {
			return g.listTools(ctx, sc)
		}
		call, ok := req.(*sdk.CallToolRequest)
		if !ok || call.Params == nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "tools/call needs params"}
		}
		return g.callTool(ctx, sc, call.Params.Name, call.Params.Arguments)
	}
}

// visible returns the servers the scope may use: the caller's tier is
// listed, and the server is the scope's one when it names one.
func (g *Gateway) visible(ctx context.Context, sc scope) ([]mcp.Server, error) {
	all, err := g.o.Registry.List(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if sc.label != "" && s.Label != sc.label {
			continue
		}
		if s.AllowsTier(sc.caller.Tier) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (g *Gateway) listTools(ctx context.Context, sc scope) (*sdk.ListToolsResult, error) {
	servers, err := g.visible(ctx, sc)
	if err != nil {
		g.logger.LogAttrs(ctx, slog.LevelWarn, "mcp gateway: registry unavailable", slog.String("error", err.Error()))
		return nil, &jsonrpc.Error{Code: CodeInternal, Message: "the MCP registry is unavailable; retry later"}
	}
	if sc.label != "" && len(servers) == 0 {
		return nil, g.unknownServer(ctx, sc)
	}
	// Every server is asked at once; one that is down or slow costs the
	// listing its timeout and is left out, the rest are listed.
	lists := make([][]*sdk.Tool, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			tools, err := g.o.Client.ListTools(ctx, s)
			if err != nil {
				g.logger.LogAttrs(ctx, slog.LevelWarn, "mcp gateway: could not list a server's tools", slog.String("server", s.Label), slog.String("error", err.Error()))
				return
			}
			for _, t := range tools {
				if !s.AllowsTool(t.Name) {
					continue
				}
				name := t.Name
				if sc.label == "" {
					name = s.Label + Separator + t.Name
				}
				desc := t.Description
				if sc.label == "" && s.Description != "" {
					desc = strings.TrimSpace(desc + " (" + s.Description + ")")
				}
				tool := &sdk.Tool{Name: name, Description: desc, InputSchema: t.InputSchema}
				if len(t.Annotations) > 0 {
					var a sdk.ToolAnnotations
					if json.Unmarshal(t.Annotations, &a) == nil {
						tool.Annotations = &a
					}
				}
				lists[i] = append(lists[i], tool)
			}
		})
	}
	wg.Wait()
	res := &sdk.ListToolsResult{Tools: []*sdk.Tool{}}
	for _, l := range lists {
		res.Tools = append(res.Tools, l...)
	}
	return res, nil
}

// unknownServer is the error for a /mcp/{server_label} the caller cannot
// use: unknown, or not for the caller's tier (named as such, since the
// label is the caller's own input).
func (g *Gateway) unknownServer(ctx context.Context, sc scope) error {
	s, err := g.o.Registry.Get(ctx, sc.label)
	if err == nil && !s.AllowsTier(sc.caller.Tier) {
		return &jsonrpc.Error{Code: CodeForbidden, Message: fmt.Sprintf("MCP server %q is not available to the %s tier", sc.label, sc.caller.Tier)}
	}
	return &jsonrpc.Error{Code: CodeUnknownTool, Message: fmt.Sprintf("no MCP server %q", sc.label)}
}

// resolve finds the server and tool a tools/call names.
func (g *Gateway) resolve(ctx context.Context, sc scope, name string) (mcp.Server, string, error) {
	if sc.label != "" {
		s, err := g.o.Registry.Get(ctx, sc.label)
		if err != nil {
			return mcp.Server{}, "", err
		}
		return s, name, nil
	}
	// A label may itself contain "__": try each split, shortest label
	// first, against the registry.
	var firstErr error
	for i := 0; ; {
		j := strings.Index(name[i:], Separator)
		if j < 0 {
			break
		}
		label, tool := name[:i+j], name[i+j+len(Separator):]
		s, err := g.o.Registry.Get(ctx, label)
		if err == nil {
			return s, tool, nil
		}
		if !errors.Is(err, mcp.ErrServerNotFound) && firstErr == nil {
			firstErr = err
		}
		i += j + len(Separator)
	}
	if firstErr != nil {
		return mcp.Server{}, "", firstErr
	}
	return mcp.Server{}, "", fmt.Errorf("%w: no server in tool name %q", mcp.ErrServerNotFound, name)
}

func (g *Gateway) callTool(ctx context.Context, sc scope, name string, args json.RawMessage) (*sdk.CallToolResult, error) {
	start := g.now()
	rec := store.MCPCall{UserID: sc.caller.UserID, KeyID: sc.caller.KeyID, Via: Via, Tool: name, At: start.UTC()}
	finish := func(outcome string, bytes int) {
		rec.Outcome, rec.Bytes, rec.Duration = outcome, int64(bytes), g.now().Sub(start)
		if g.audit != nil {
			g.audit.record(rec)
		}
	}
	refuse := func(outcome string, err *jsonrpc.Error) (*sdk.CallToolResult, error) {
		finish(outcome, 0)
		if g.o.OnRefused != nil {
			server, tool := rec.Server, rec.Tool
			if server == "" {
				server, tool = "(unknown)", "(unknown)" // unbounded input stays out of labels
			}
			g.o.OnRefused(server, tool, outcome)
		}
		return nil, err
	}

	s, tool, err := g.resolve(ctx, sc, name)
	switch {
	case errors.Is(err, mcp.ErrServerNotFound):
		rec.Server = ""
		return refuse(OutcomeUnknownTool, &jsonrpc.Error{Code: CodeUnknownTool, Message: fmt.Sprintf("unknown tool %q", name)})
	case errors.Is(err, mcp.ErrHeadersUnreadable):
		rec.Server = sc.label
		return refuse(mcp.OutcomeUnavailable, &jsonrpc.Error{Code: CodeUpstreamUnavailable, Message: "the MCP server's stored credentials cannot be read; ask an administrator to set them again"})
	case err != nil:
		g.logger.LogAttrs(ctx, slog.LevelWarn, "mcp gateway: registry unavailable", slog.String("error", err.Error()))
		return nil, &jsonrpc.Error{Code: CodeInternal, Message: "the MCP registry is unavailable; retry later"}
	}
	rec.Server, rec.Tool = s.Label, tool
	if !s.AllowsTier(sc.caller.Tier) {
		return refuse(OutcomeForbidden, &jsonrpc.Error{Code: CodeForbidden,
			Message: fmt.Sprintf("MCP server %q is not available to the %s tier", s.Label, sc.caller.Tier)})
	}
	if !s.AllowsTool(tool) {
		return refuse(OutcomeForbidden, &jsonrpc.Error{Code: CodeForbidden,
			Message: fmt.Sprintf("tool %q of MCP server %q is not allowed", tool, s.Label)})
	}

	t := g.o.Tiers.For(sc.caller.Tier)
	d, err := g.o.Limiter.Allow(ctx, RateLimitKey(sc.caller.UserID), t.MCPRateLimit)
	if err != nil {
		g.logger.LogAttrs(ctx, slog.LevelWarn, "mcp gateway: rate limiter unavailable", slog.String("error", err.Error()))
		return nil, &jsonrpc.Error{Code: CodeInternal, Message: "the rate limiter is unavailable; retry later"}
	}
	if !d.Allowed {
		secs := int64(math.Ceil(d.RetryAfter.Seconds()))
		if secs < 1 {
			secs = 1
		}
		data, _ := json.Marshal(map[string]any{"retry_after_seconds": secs, "limit": d.Limit, "tier": t.Name})
		return refuse(OutcomeRateLimited, &jsonrpc.Error{Code: CodeRateLimited, Data: data,
			Message: fmt.Sprintf("rate limited: the %s tier allows %d tool calls (refilling %g per second); retry after %d s", t.Name, t.MCPRateLimit.Capacity, t.MCPRateLimit.RefillPerSecond, secs)})
	}

	res, err := g.o.Client.CallToolRaw(ctx, s, tool, args)
	outcome := mcp.OutcomeOf(res, err)
	if err != nil {
		finish(outcome, 0)
		return nil, g.upstreamError(s, err)
	}
	res, size := g.capResult(res)
	finish(outcome, size)
	return res, nil
}

// RateLimitKey is the limiter key of a user's tool calls: a bucket apart
// from the model calls' (gateway.RateLimitKey), on the same limiter.
func RateLimitKey(userID string) string { return "mcp:user:" + userID }

// upstreamError turns a failed forward into the caller's JSON-RPC error:
// the server's own error passes through, named; timeouts and outages say
// so.
func (g *Gateway) upstreamError(s mcp.Server, err error) error {
	if rpc, ok := mcp.ServerError(err); ok {
		return &jsonrpc.Error{Code: rpc.Code, Message: fmt.Sprintf("MCP server %q: %s", s.Label, rpc.Message), Data: rpc.Data}
	}
	switch {
	case errors.Is(err, mcp.ErrTimeout):
		return &jsonrpc.Error{Code: CodeUpstreamTimeout, Message: fmt.Sprintf("MCP server %q did not answer within %s", s.Label, g.o.Client.CallTimeout())}
	case errors.Is(err, context.Canceled):
		return &jsonrpc.Error{Code: CodeInternal, Message: "the call was cancelled"}
	default:
		return &jsonrpc.Error{Code: CodeUpstreamUnavailable, Message: fmt.Sprintf("MCP server %q is unavailable", s.Label)}
	}
}

// capResult keeps a result within MaxOutputBytes (measured as JSON): a
// larger one becomes its text, cut and marked, so a client still gets the
// beginning. It returns the size before cutting.
func (g *Gateway) capResult(res *sdk.CallToolResult) (*sdk.CallToolResult, int) {
	b, err := json.Marshal(res)
	if err != nil {
		return res, 0
	}
	max := g.o.Client.MaxOutputBytes()
	if len(b) <= max {
		return res, len(b)
	}
	var parts []string
	for _, c := range res.Content {
		if t, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	text := strings.Join(parts, "\n")
	if text == "" {
		text = string(b)
	}
	cut, _ := mcp.Truncate(text, max)
	return &sdk.CallToolResult{IsError: res.IsError, Content: []sdk.Content{&sdk.TextContent{Text: cut}}}, len(b)
}
