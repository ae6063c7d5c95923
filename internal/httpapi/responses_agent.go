package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/agentapi/agentapi/internal/agent"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/netguard"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/tier"
)

// AgentDeps is what the Responses tool loop (tools of type "mcp") is
// built from; cli wires it from internal/mcp and internal/netguard.
type AgentDeps struct {
	// Servers is the registry of MCP servers (mcp.Registry): built-in
	// and admin-registered ones.
	Servers mcpServerLookup
	// Client lists and calls the servers' tools (mcp.Client); it dials
	// user-supplied servers through the guarded client it was given.
	Client mcpToolClient
	// Guard checks a user-supplied server's host before anything is
	// sent, so a refused address is a 400; the dial is checked again.
	Guard *netguard.Guard
	// Limits bound each response's loop.
	Limits agent.Limits
	// AllowUserServers lets a request give its own server_url;
	// AllowUserHTTP lets that URL be plain http.
	AllowUserServers, AllowUserHTTP bool
	// Observer counts calls that never reached a server (metrics).
	Observer agent.Observer
}

// mcpServerLookup finds a registered MCP server by label.
type mcpServerLookup interface {
	Get(ctx context.Context, label string) (mcp.Server, error)
}

// mcpToolClient reaches MCP servers (mcp.Client).
type mcpToolClient interface {
	ListTools(ctx context.Context, s mcp.Server) ([]mcp.Tool, error)
	CallTool(ctx context.Context, s mcp.Server, name string, args json.RawMessage) (mcp.Result, error)
}

// agentRunner is the tool loop of the Responses API with its settings.
type agentRunner struct {
	loop *agent.Loop
	d    AgentDeps
}

func newAgentRunner(d Deps) *agentRunner {
	if d.Agent == nil || d.Agent.Servers == nil || d.Agent.Client == nil {
		return nil
	}
	return &agentRunner{d: *d.Agent, loop: agent.New(agent.Options{Gateway: d.Gateway, Logger: d.Logger, Tracer: d.Tracer,
		Observer: d.Agent.Observer, Limits: d.Agent.Limits})}
}

// agentRequest is a request's MCP servers, resolved: what the loop may
// use and how to reach each.
type agentRequest struct {
	servers      []agent.Server
	byLabel      map[string]mcp.Server
	maxToolCalls int
}

// usesAgent reports whether req needs the tool loop: it offers MCP
// servers or answers an approval request.
func usesAgent(req *responses.Request) bool {
	if len(req.MCPServers()) > 0 {
		return true
	}
	for _, it := range req.Input {
		if it.Type == responses.TypeMCPApprovalResponse {
			return true
		}
	}
	return false
}

// agentTools resolves a request's MCP tools for prepare: refused when the
// loop is not wired.
func (a *responsesAPI) agentTools(ctx context.Context, tr tier.Tier, req *responses.Request) (*agentRequest, error) {
	if a.agent == nil {
		return nil, &responses.ParamError{Param: "tools", Code: "unsupported_parameter", Message: "Tools of type 'mcp' are not enabled on this server."}
	}
	return a.agent.resolve(ctx, callerOf(ctx), tr, req)
}

// errMCPForbidden is a registered server the caller's tier may not use.
func errMCPForbidden(param, label, tierName string) *apiError {
	return &apiError{status: http.StatusForbidden,
		message: fmt.Sprintf("The MCP server '%s' is not available to the %s tier.", label, tierName),
		openAI:  openAIErrorFields{typ: "invalid_request_error", code: "mcp_server_forbidden", param: param}}
}

// resolve checks a request's MCP tools against the registry and the
// deployment's rules, before anything is spent: a registered server is
// named by label and may only be narrowed (tools) or tightened
// (approval); a request's own server_url must be allowed, https (unless
// allowed otherwise) and at a public address.
func (ar *agentRunner) resolve(ctx context.Context, p gateway.Principal, t tier.Tier, req *responses.Request) (*agentRequest, error) {
	out := &agentRequest{byLabel: map[string]mcp.Server{}, maxToolCalls: int(t.MaxToolCalls)}
	if req.MaxToolCalls != nil && *req.MaxToolCalls < t.MaxToolCalls {
		out.maxToolCalls = int(*req.MaxToolCalls)
	}
	for i, tool := range req.Tools {
		s := tool.MCP
		if s == nil {
			continue
		}
		param := "tools[" + strconv.Itoa(i) + "]"
		reg, err := ar.d.Servers.Get(ctx, s.Label)
		registered := err == nil
		if err != nil && !errors.Is(err, mcp.ErrServerNotFound) {
			return nil, fmt.Errorf("responses: look up mcp server %q: %w", s.Label, err)
		}
		var srv mcp.Server
		var as agent.Server
		switch {
		case s.URL == "" && !registered:
			return nil, &responses.ParamError{Param: param + ".server_label", Code: "mcp_server_not_found",
				Message: fmt.Sprintf("No MCP server is registered as '%s'; name a registered server or give server_url.", s.Label)}
		case s.URL == "":
			if !reg.AllowsTier(p.Tier) && !reg.AllowsTier(t.Name) {
				return nil, errMCPForbidden(param+".server_label", s.Label, t.Name)
			}
			if len(s.Headers) > 0 {
				return nil, &responses.ParamError{Param: param + ".headers",
					Message: fmt.Sprintf("'%s.headers' may be given only with server_url; the registered server '%s' brings its own.", param, s.Label)}
			}
			srv = reg
			as = agent.Server{Label: s.Label, Description: reg.Description, AllowedTools: narrow(reg.AllowedTools, s.AllowedTools),
				Approval: tighten(reg.RequireApproval, s.Approval)}
		case registered:
			return nil, &responses.ParamError{Param: param + ".server_label",
				Message: fmt.Sprintf("'%s' names a registered MCP server; leave out server_url to use it, or choose another label.", s.Label)}
		default:
			if err := ar.checkUserURL(ctx, s.URL); err != nil {
				return nil, &responses.ParamError{Param: param + ".server_url", Code: "mcp_server_refused",
					Message: fmt.Sprintf("The MCP server '%s' cannot be used: %s", s.Label, err)}
			}
			srv = mcp.Server{Label: s.Label, URL: s.URL, Description: s.Description, Headers: s.Headers,
				AllowedTools: s.AllowedTools, UserSupplied: true}
			approval := s.Approval
			if !approval.Set {
				approval = responses.Approval{Set: true, Mode: "always"}
			}
			as = agent.Server{Label: s.Label, Description: s.Description, AllowedTools: s.AllowedTools, Approval: approval, UserSupplied: true}
		}
		out.byLabel[s.Label] = srv
		out.servers = append(out.servers, as)
	}
	return out, nil
}

// checkUserURL refuses a request's own server_url: not allowed here, not
// https (unless allowed), carrying credentials, or naming a host that
// resolves to an address the guard refuses. The words are for the client.
func (ar *agentRunner) checkUserURL(ctx context.Context, raw string) error {
	if !ar.d.AllowUserServers {
		return errors.New("this server does not allow a request's own server_url; name a registered server by server_label")
	}
	if err := netguard.CheckURL(raw, ar.d.AllowUserHTTP); err != nil {
		if ar.d.AllowUserHTTP {
			return errors.New("server_url must be an http or https URL")
		}
		return errors.New("server_url must be an https URL")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return errors.New("server_url is not a valid URL")
	}
	if u.User != nil {
		return errors.New("server_url must not carry credentials; send them in headers")
	}
	if ar.d.Guard == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ar.d.Limits.CallTimeout)
	defer cancel()
	if err := ar.d.Guard.CheckHost(ctx, u.Hostname()); err != nil {
		var be *netguard.BlockedError
		if errors.As(err, &be) {
			return fmt.Errorf("its host resolves to a %s address, which is not allowed", be.Reason)
		}
		return errors.New("its host cannot be resolved")
	}
	return nil
}

// narrow is the tools both lists allow (nil: every tool).
func narrow(registry, request []string) []string {
	switch {
	case registry == nil:
		return request
	case request == nil:
		return registry
	}
	out := []string{}
	for _, n := range request {
		if slices.Contains(registry, n) {
			out = append(out, n)
		}
	}
	return out
}

// tighten is the approval rule of a registered server as a request may
// change it: a registry's "always" holds whatever the request says; over
// a registry's "never", the request's own rule applies (it can only add
// approvals).
func tighten(registry string, request responses.Approval) responses.Approval {
	if registry != mcp.ApprovalNever {
		return responses.Approval{Set: true, Mode: "always"}
	}
	if request.Set {
		return request
	}
	return responses.Approval{Set: true, Mode: "never"}
}

// agentTools is agent.Tools over the MCP client and the request's
// resolved servers.
type agentTools struct {
	client  mcpToolClient
	servers map[string]mcp.Server
}

func (t agentTools) ListTools(ctx context.Context, label string) ([]agent.Tool, error) {
	s, ok := t.servers[label]
	if !ok {
		return nil, fmt.Errorf("%w: %q", mcp.ErrServerNotFound, label)
	}
	tools, err := t.client.ListTools(ctx, s)
	if err != nil {
		return nil, agentErr(err)
	}
	return tools, nil
}

func (t agentTools) CallTool(ctx context.Context, label, tool string, args json.RawMessage) (agent.Result, error) {
	s, ok := t.servers[label]
	if !ok {
		return agent.Result{}, fmt.Errorf("%w: %q", mcp.ErrServerNotFound, label)
	}
	res, err := t.client.CallTool(ctx, s, tool, args)
	if err != nil {
		return agent.Result{}, agentErr(err)
	}
	return res, nil
}

// agentErr makes the MCP client's timeout read as one to the loop, and a
// server's JSON-RPC error as an agent.ProtocolError.
func agentErr(err error) error {
	if rpc, ok := mcp.ServerError(err); ok {
		return fmt.Errorf("%w: %w", &agent.ProtocolError{Code: rpc.Code, Message: rpc.Message}, err)
	}
	if errors.Is(err, mcp.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// runAgent runs a response with server-side tools over HTTP: plain (the
// stored response as JSON) or streamed (server-sent events). call is the
// request's first governed call, which spent its rate-limit token; no
// model call is made on it.
func (a *responsesAPI) runAgent(w http.ResponseWriter, r *http.Request, call *gateway.Call, tn *turn) error {
	m := a.m
	var rc *http.ResponseController
	var end func()
	defer func() {
		if end != nil {
			end()
		}
	}()
	var emit func([]responses.Event) error
	if tn.req.Stream {
		buf := make([]byte, 0, 1024)
		emit = func(events []responses.Event) error {
			if rc == nil {
				rc, end = m.openEventStream(w)
			}
			for _, ev := range events {
				buf = ev.AppendSSE(buf[:0])
				if err := m.writeEvent(rc, w, buf); err != nil {
					return err
				}
			}
			return nil
		}
	}
	cut, err := a.agentTurn(r.Context(), call, tn, emit)
	if err != nil || cut || tn.req.Stream {
		return err
	}
	writeJSON(w, http.StatusOK, tn.resp)
	return nil
}

// agentTurn runs the tool loop for one response and stores it. With emit,
// every event goes out through it, response.created first; without, the
// caller answers with tn.resp. An error is returned only while nothing
// has gone out (the caller answers it with its own status); after that,
// failures go out as events. cut reports a client that left.
func (a *responsesAPI) agentTurn(ctx context.Context, call *gateway.Call, tn *turn, emit func([]responses.Event) error) (cut bool, err error) {
	req, resp, history, ar, opts := tn.req, tn.resp, tn.history, tn.tools, tn.chatOpts
	m := a.m
	info := requestInfoFrom(ctx)
	call.Finish(ctx, resp.Model, llm.Usage{})

	t := responses.NewTranslator(resp)
	started := t.Start()
	sent := false
	var clientErr error
	write := func(events []responses.Event) error {
		if clientErr != nil {
			return clientErr
		}
		if !sent {
			sent = true
			if clientErr = emit(started); clientErr != nil {
				return clientErr
			}
		}
		clientErr = emit(events)
		return clientErr
	}
	var loopEmit func([]responses.Event) error
	if emit != nil {
		loopEmit = write
	}
	out, err := a.agent.loop.Run(ctx, agent.Run{
		Principal: callerOf(ctx), RequestID: info.id, Request: req, History: history, Chat: opts,
		Translator: t, Servers: ar.servers, Tools: agentTools{client: a.agent.d.Client, servers: ar.byLabel},
		MaxToolCalls: ar.maxToolCalls, Emit: loopEmit,
		OnCall: func(c *gateway.Call) { info.noteCall(c) },
	})
	if info != nil {
		info.toolCalls, info.turns = out.ToolCalls, out.Turns
	}
	now := time.Now()
	if err != nil {
		if errors.Is(err, agent.ErrUpstreamAnswer) {
			err = &apiError{status: http.StatusBadGateway, message: "Upstream model failed", cause: err}
		}
		if !sent {
			// Nothing has gone out: the error gets its own status.
			return false, err
		}
		info.err = err
		m.logger.LogAttrs(ctx, slog.LevelError, "agent response failed", slog.String("request_id", info.id), slog.String("error", err.Error()))
		write(t.Fail("server_error", "The model failed during the response (request id "+info.id+").", out.Usage, now))
	}
	if out.Cut {
		info.err = errors.Join(clientErr, ctx.Err())
		if err := a.finish(ctx, tn); err != nil {
			m.logger.LogAttrs(ctx, slog.LevelError, "could not store an interrupted response", slog.String("request_id", info.id), slog.String("error", err.Error()))
		}
		m.logger.LogAttrs(ctx, slog.LevelInfo, "agent response ended by the client", slog.String("request_id", info.id),
			slog.String("response_id", resp.ID), slog.Int64("tokens", out.Usage.TotalTokens), slog.Int("tool_calls", out.ToolCalls))
		return true, nil
	}
	if err := a.finish(ctx, tn); err != nil {
		if emit == nil {
			return false, err
		}
		info.err = err
		m.logger.LogAttrs(ctx, slog.LevelError, "could not store a response", slog.String("request_id", info.id), slog.String("error", err.Error()))
		write([]responses.Event{t.ErrorEvent("store_unavailable", "The response could not be stored; retry (request id "+info.id+").")})
		return false, nil
	}
	if emit != nil {
		write([]responses.Event{t.Terminal()})
	}
	return false, nil
}
