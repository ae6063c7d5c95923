// Package agent is the server-side tool loop of the Responses API: it runs
// model turns, each one governed call of the gateway, and the tool calls
// the model asks for on MCP servers, feeding each result back, until the
// model answers, a call needs the user's approval, the model asks for a
// function the client runs, or a cap is reached.
//
// It knows nothing of HTTP. The caller resolves which MCP servers a
// request may use (the registry's rules, the tier, the SSRF guard) and
// hands them over with a Tools client; the loop builds the response's
// output items and stream events through a responses.Translator, and
// hands the events to the caller's Emit as they come.
//
// Nothing a tool is given or answers is logged: only server and tool
// names, outcomes and timings.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/responses"
)

// Tool is one tool an MCP server offers: internal/mcp's, so the client's
// lists pass through unchanged.
type Tool = mcp.Tool

// Result is what a tool call answered: internal/mcp's. Its Output is
// already cut, and marked as cut, by the client when over its size cap.
type Result = mcp.Result

// Tools reaches the request's MCP servers by label (internal/mcp's
// client over the servers the caller resolved). Every call must respect
// ctx's deadline; an error is a failure to get an answer (transport,
// timeout, protocol), not a tool's error result.
type Tools interface {
	ListTools(ctx context.Context, server string) ([]Tool, error)
	CallTool(ctx context.Context, server, tool string, args json.RawMessage) (Result, error)
}

// Server is an MCP server a request may use, with the rules that apply to
// it already merged (the registry's and the request's).
type Server struct {
	Label       string
	Description string
	// AllowedTools, when not nil, are the only tools offered.
	AllowedTools []string
	Approval     responses.Approval
	// UserSupplied servers (a request's own server_url) are counted in
	// metrics under one label, since their names are the user's.
	UserSupplied bool
}

// Gateway begins governed model calls (*gateway.Gateway).
type Gateway interface {
	Begin(ctx context.Context, p gateway.Principal, s gateway.Spec) (*gateway.Call, error)
}

// Observer counts the tool calls that never reached a server (denied by
// the user, or not available to the request): the MCP client counts the
// calls it makes itself (metrics.MCPToolCall has this method). outcome is
// one of the Outcome constants.
type Observer interface {
	MCPToolCall(server, tool, outcome string, d time.Duration)
}

// Outcomes of a tool call, for metrics and spans.
const (
	OutcomeOK        = "ok"
	OutcomeToolError = "tool_error" // the tool answered with an error result
	OutcomeError     = "error"      // no answer: transport or protocol failure
	OutcomeTimeout   = "timeout"
	OutcomeCancelled = "cancelled" // the client left
	OutcomeDenied    = "denied"    // the user refused its approval
	OutcomeForbidden = "forbidden" // not available to this request
)

// Reasons an agent response ends incomplete (incomplete_details.reason).
const (
	ReasonMaxToolCalls  = "max_tool_calls"
	ReasonMaxTurns      = "max_turns"
	ReasonTimeout       = "timeout"
	ReasonMaxToolOutput = "max_tool_output"
)

// Limits bound one response's loop.
type Limits struct {
	// MaxTurns is the most model turns (default 8).
	MaxTurns int
	// CallTimeout bounds each tool call and tool listing (default 30 s).
	CallTimeout time.Duration
	// Deadline bounds the whole response (default 5 min).
	Deadline time.Duration
	// MaxOutputBytes bounds the tools' output over the whole response
	// (default 1 MiB); one call's output is cut by the client.
	MaxOutputBytes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxTurns <= 0 {
		l.MaxTurns = 8
	}
	if l.CallTimeout <= 0 {
		l.CallTimeout = 30 * time.Second
	}
	if l.Deadline <= 0 {
		l.Deadline = 5 * time.Minute
	}
	if l.MaxOutputBytes <= 0 {
		l.MaxOutputBytes = 1 << 20
	}
	return l
}

// Options build a Loop.
type Options struct {
	Gateway  Gateway
	Logger   *slog.Logger
	Tracer   trace.Tracer
	Observer Observer
	Limits   Limits
}

// Loop runs agent responses. It is safe for concurrent use.
type Loop struct {
	gw       Gateway
	logger   *slog.Logger
	tracer   trace.Tracer
	observer Observer
	limits   Limits
}

// New builds a Loop.
func New(o Options) *Loop {
	l := &Loop{gw: o.Gateway, logger: o.Logger, tracer: o.Tracer, observer: o.Observer, limits: o.Limits.withDefaults()}
	if l.logger == nil {
		l.logger = slog.New(slog.DiscardHandler)
	}
	if l.tracer == nil {
		l.tracer = noop.NewTracerProvider().Tracer("agent")
	}
	return l
}

// Limits returns the loop's limits.
func (l *Loop) Limits() Limits { return l.limits }

// Run is one agent response to run.
type Run struct {
	Principal gateway.Principal
	RequestID string
	Request   *responses.Request
	// History is the conversation previous_response_id continues.
	History []responses.Item
	// Chat are the conversion settings (model, stream, token caps); the
	// MCP tools' functions are added by the loop.
	Chat responses.ChatOptions
	// Translator builds the response (started by the caller, which also
	// sends its terminal event once the response is stored).
	Translator *responses.Translator
	Servers    []Server
	Tools      Tools
	// MaxToolCalls is the most MCP tool calls the response may make (the
	// request's, capped by the tier's); 0 means the tier allows none.
	MaxToolCalls int
	// Emit sends events as they come (nil for a plain response); an error
	// means the client is gone.
	Emit func([]responses.Event) error
	// OnCall is told of each governed model call (the access log's
	// record).
	OnCall func(*gateway.Call)
}

// Outcome is what a run did.
type Outcome struct {
	Usage     responses.Usage
	Turns     int
	ToolCalls int
	// Cut says the client left (or could not be written to): the response
	// is incomplete ("interrupted").
	Cut bool
	// Reason is the cap that ended the response, if one did.
	Reason string
	// Started says some event went to the client before an error; the
	// caller then fails the stream rather than answering with an error
	// status.
	Started bool
}

// errDeadline is the cause of the response's overall deadline.
var errDeadline = errors.New("agent: response deadline reached")

// Run runs the loop for r until the model answers or a cap is reached.
// An error is the model's failure (or the gateway's refusal) with the
// outcome so far; a tool's failure is never an error, it becomes an
// mcp_call with an error that the model sees. The response is closed
// (Translator.Close) unless Run returns an error.
func (l *Loop) Run(ctx context.Context, r Run) (Outcome, error) {
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, l.limits.Deadline, errDeadline)
	defer cancel()
	st := &state{l: l, r: r, ctx: ctx, parent: parent, t: r.Translator, offered: map[string]offer{}}
	st.out.Started = false
	err := st.run()
	return st.out, err
}

// offer is a function the model was offered that runs on an MCP server.
type offer struct {
	server string
	tool   string
}

type state struct {
	l       *Loop
	r       Run
	ctx     context.Context
	parent  context.Context
	t       *responses.Translator
	out     Outcome
	offered map[string]offer // function name → MCP tool
	funcs   []responses.FunctionDef
	bytes   int
	sendErr error
}

// send passes events on; once the client is gone nothing more is sent.
func (s *state) send(ev []responses.Event) {
	if len(ev) == 0 || s.r.Emit == nil || s.sendErr != nil {
		return
	}
	s.out.Started = true
	s.sendErr = s.r.Emit(ev)
}

// gone reports that the client left.
func (s *state) gone() bool { return s.sendErr != nil || s.parent.Err() != nil }

// timedOut reports that the overall deadline passed.
func (s *state) timedOut() bool { return errors.Is(context.Cause(s.ctx), errDeadline) }

func (s *state) run() error {
	s.t.SetClassifier(s.classify)
	s.listTools()
	s.answerApprovals()
	if s.out.Reason != "" {
		s.finish()
		return nil
	}
	for turn := 1; ; turn++ {
		if s.gone() || s.timedOut() {
			break
		}
		tr, err := s.modelTurn(turn)
		if err != nil {
			if s.gone() {
				break
			}
			if s.timedOut() {
				s.out.Reason = ReasonTimeout
				break
			}
			return err
		}
		if len(tr.MCPCalls) == 0 {
			break
		}
		s.runCalls(tr.MCPCalls)
		if s.out.Reason != "" || s.gone() {
			break
		}
		if s.timedOut() {
			s.out.Reason = ReasonTimeout
			break
		}
		if tr.Approvals > 0 || tr.Functions > 0 {
			// The client has its part to play (approve, or run its
			// functions) before the model goes on.
			break
		}
		if turn >= s.l.limits.MaxTurns {
			s.out.Reason = ReasonMaxTurns
			break
		}
	}
	s.finish()
	return nil
}

// finish closes the response's items and sets its final status.
func (s *state) finish() {
	now := time.Now()
	// Calls left in progress (the client left, or the deadline came
	// mid-turn) are closed as not run.
	for i, it := range s.t.Response().Output {
		if it.Type == responses.TypeMCPCall && it.Status == responses.StatusInProgress {
			s.send(s.t.CallSkipped(i, "The call was not run: the response ended first."))
		}
	}
	if s.gone() {
		s.out.Cut = true
		s.t.Close(true, s.out.Usage, now)
		return
	}
	s.send(s.t.Close(false, s.out.Usage, now))
	if s.out.Reason != "" {
		s.t.Response().Incomplete(s.out.Reason)
	}
}

// classify tells the translator what a call of name is.
func (s *state) classify(name string) (responses.ToolKind, string) {
	o, ok := s.offered[name]
	if !ok {
		return responses.KindFunction, ""
	}
	if srv := s.server(o.server); srv != nil && srv.Approval.Needs(o.tool) {
		return responses.KindApproval, o.server
	}
	return responses.KindMCP, o.server
}

func (s *state) server(label string) *Server {
	for i := range s.r.Servers {
		if s.r.Servers[i].Label == label {
			return &s.r.Servers[i]
		}
	}
	return nil
}

func allowed(srv *Server, tool string) bool {
	if srv.AllowedTools == nil {
		return true
	}
	for _, n := range srv.AllowedTools {
		if n == tool {
			return true
		}
	}
	return false
}

// listTools offers each server's tools to the model. A server listed
// earlier in the conversation (an mcp_list_tools item in the history) is
// not asked again: the stored list is what the conversation saw. A
// server that cannot be listed gets an mcp_list_tools item with an error
// and offers nothing.
func (s *state) listTools() {
	taken := map[string]bool{}
	for _, t := range s.r.Request.Tools {
		if t.Type == "function" {
			taken[t.Name] = true
		}
	}
	earlier := map[string][]responses.MCPTool{}
	for _, it := range append(append([]responses.Item(nil), s.r.History...), s.r.Request.Input...) {
		if it.Type == responses.TypeMCPListTools && it.Error == nil {
			earlier[it.ServerLabel] = it.Tools
		}
	}
	for i := range s.r.Servers {
		srv := &s.r.Servers[i]
		tools, ok := earlier[srv.Label]
		if !ok {
			tools = s.list(srv)
		}
		for _, tl := range tools {
			if !allowed(srv, tl.Name) {
				continue
			}
			if taken[tl.Name] || !validFunctionName(tl.Name) {
				// Two tools of one name cannot both be offered; the
				// first (a function tool, or an earlier server's) wins.
				s.l.logger.LogAttrs(s.ctx, slog.LevelInfo, "mcp tool not offered: name taken or invalid",
					slog.String("request_id", s.r.RequestID), slog.String("server", srv.Label), slog.String("tool", tl.Name))
				continue
			}
			taken[tl.Name] = true
			s.offered[tl.Name] = offer{server: srv.Label, tool: tl.Name}
			params := tl.InputSchema
			if len(params) == 0 {
				params = json.RawMessage(`{"type":"object","properties":{}}`)
			}
			s.funcs = append(s.funcs, responses.FunctionDef{Name: tl.Name, Description: tl.Description, Parameters: params})
		}
	}
}

// list asks a server for its tools, as an mcp_list_tools item.
func (s *state) list(srv *Server) []responses.MCPTool {
	i, ev := s.t.ListTools(srv.Label)
	s.send(ev)
	ctx, cancel := context.WithTimeout(s.ctx, s.l.limits.CallTimeout)
	defer cancel()
	ctx, span := s.l.tracer.Start(ctx, "agent.list_tools", trace.WithAttributes(attribute.String("mcp.server", srv.Label)))
	tools, err := s.r.Tools.ListTools(ctx, srv.Label)
	outcome := s.outcomeOf(ctx, err, false)
	span.SetAttributes(attribute.String("mcp.outcome", outcome))
	if err != nil {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
	if err != nil {
		s.l.logger.LogAttrs(s.ctx, slog.LevelWarn, "mcp list tools failed", slog.String("request_id", s.r.RequestID),
			slog.String("server", srv.Label), slog.String("outcome", outcome), slog.String("error", err.Error()))
		s.send(s.t.ListToolsDone(i, nil, s.failureMessage(srv.Label, outcome)))
		return nil
	}
	out := make([]responses.MCPTool, 0, len(tools))
	for _, tl := range tools {
		if allowed(srv, tl.Name) {
			out = append(out, responses.MCPTool{Name: tl.Name, Description: tl.Description, InputSchema: tl.InputSchema, Annotations: tl.Annotations})
		}
	}
	s.send(s.t.ListToolsDone(i, out, ""))
	return out
}

func validFunctionName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// modelTurn runs one model turn: a governed call (the first spends the
// request's rate-limit token only if the caller has not; see Run), its
// answer as output items, its tokens settled.
func (s *state) modelTurn(turn int) (responses.Turn, error) {
	req := *s.r.Request
	req.Input = append(append([]responses.Item(nil), s.r.Request.Input...), s.t.Response().Output...)
	opts := s.r.Chat
	opts.Functions = s.funcs
	chat, err := responses.ChatRequest(&req, s.r.History, opts)
	if err != nil {
		return responses.Turn{}, err
	}
	estimate := chat.Estimate
	if req.MaxOutputTokens != nil {
		estimate += *req.MaxOutputTokens
	}
	ctx, span := s.l.tracer.Start(s.ctx, "agent.turn", trace.WithAttributes(attribute.Int("agent.turn", turn)))
	defer span.End()
	call, err := s.l.gw.Begin(ctx, s.r.Principal, gateway.Spec{Endpoint: "v1/responses", Model: opts.Model, Body: chat.Body,
		Estimate: estimate, NoLimit: true, RequestID: s.r.RequestID})
	if call != nil && s.r.OnCall != nil {
		s.r.OnCall(call)
	}
	if err != nil {
		return responses.Turn{}, err
	}
	s.out.Turns++
	s.t.BeginTurn()
	var tr responses.Turn
	if opts.Stream {
		tr, err = s.streamTurn(ctx, call, chat.Body)
	} else {
		tr, err = s.plainTurn(ctx, call, chat.Body)
	}
	if err != nil {
		span.SetStatus(codes.Error, "model call failed")
	}
	return tr, err
}

func (s *state) plainTurn(ctx context.Context, call *gateway.Call, body []byte) (responses.Turn, error) {
	up, err := call.Complete(ctx)
	if err != nil {
		return responses.Turn{}, err
	}
	ans, err := responses.ParseCompletion(up.Body)
	if err != nil {
		call.Finish(ctx, s.r.Chat.Model, up.Usage)
		return responses.Turn{}, fmt.Errorf("agent: %w: %w", ErrUpstreamAnswer, err)
	}
	s.send(s.t.Answer(ans))
	ev, tr := s.t.EndTurn()
	s.send(ev)
	s.settle(ctx, call, tr, body, ans.Model)
	return tr, nil
}

// ErrUpstreamAnswer is an answer of the model that could not be read.
var ErrUpstreamAnswer = errors.New("agent: unreadable model answer")

func (s *state) streamTurn(ctx context.Context, call *gateway.Call, body []byte) (responses.Turn, error) {
	st, err := call.Stream(ctx)
	if err != nil {
		return responses.Turn{}, err
	}
	defer st.Close()
	var streamErr error
	for !s.gone() {
		payload, err := st.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		ev, err := s.t.Chunk(payload)
		if err != nil {
			streamErr = err
			break
		}
		s.send(ev)
	}
	// Stop the upstream before the bookkeeping: a client that left must
	// not keep it generating.
	st.Close()
	ev, tr := s.t.EndTurn()
	if !tr.HasUsage {
		if lu, ok := st.Usage(); ok {
			tr.Usage, tr.HasUsage = responses.FromLLMUsage(lu), true
		}
	}
	s.settle(ctx, call, tr, body, s.t.Model())
	if streamErr != nil && !s.gone() {
		return tr, streamErr
	}
	s.send(ev)
	return tr, nil
}

// settle finishes the turn's call with its usage (the reported one, else
// an estimate) and adds it to the response's.
func (s *state) settle(ctx context.Context, call *gateway.Call, tr responses.Turn, body []byte, model string) {
	u := tr.Usage
	if !tr.HasUsage || u.TotalTokens == 0 {
		u = responses.FromLLMUsage(gateway.UsageOrEstimate(llm.Usage{}, body, tr.Text))
	}
	if model == "" {
		model = s.r.Chat.Model
	}
	call.Finish(ctx, model, u.LLMUsage())
	s.out.Usage.Add(u)
}

// runCalls runs the turn's MCP calls in order, each under the per-call
// timeout, until a cap stops them.
func (s *state) runCalls(idx []int) {
	for n, i := range idx {
		if s.gone() {
			return
		}
		reason := ""
		switch {
		case s.out.ToolCalls >= s.r.MaxToolCalls:
			reason = ReasonMaxToolCalls
		case s.bytes >= s.l.limits.MaxOutputBytes:
			reason = ReasonMaxToolOutput
		case s.timedOut():
			reason = ReasonTimeout
		}
		if reason != "" {
			s.out.Reason = reason
			for _, j := range idx[n:] {
				s.send(s.t.CallSkipped(j, "The call was not run: the response reached its "+reason+" limit."))
			}
			return
		}
		it := s.t.Response().Output[i]
		s.send(s.t.CallStarted(i))
		out, callErr := s.call(it.ServerLabel, it.Name, it.Arguments)
		s.send(s.t.CallDone(i, out, callErr))
	}
}

// call runs one tool call and returns its output or the error the model
// sees.
func (s *state) call(server, tool, arguments string) (string, *responses.CallError) {
	s.out.ToolCalls++
	srv := s.server(server)
	if srv == nil || !allowed(srv, tool) {
		if srv != nil {
			s.observe(srv, tool, OutcomeForbidden, 0)
		}
		return "", &responses.CallError{Type: responses.ErrToolExecution, Message: fmt.Sprintf("Tool %q is not available on server %q in this request.", tool, server)}
	}
	args := json.RawMessage(arguments)
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	if !json.Valid(args) {
		return "", &responses.CallError{Type: responses.ErrToolExecution, Message: "The arguments are not valid JSON."}
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.l.limits.CallTimeout)
	defer cancel()
	ctx, span := s.l.tracer.Start(ctx, "agent.tool_call", trace.WithAttributes(
		attribute.String("mcp.server", server), attribute.String("mcp.tool", tool)))
	start := time.Now()
	res, err := s.r.Tools.CallTool(ctx, server, tool, args)
	d := time.Since(start)
	outcome := s.outcomeOf(ctx, err, res.IsError)
	span.SetAttributes(attribute.String("mcp.outcome", outcome))
	if outcome != OutcomeOK {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
	s.l.logger.LogAttrs(s.ctx, slog.LevelInfo, "mcp tool call", slog.String("request_id", s.r.RequestID),
		slog.String("server", server), slog.String("tool", tool), slog.String("outcome", outcome),
		slog.Duration("duration", d), slog.Int("output_bytes", len(res.Output)))
	if err != nil {
		s.l.logger.LogAttrs(s.ctx, slog.LevelWarn, "mcp tool call failed", slog.String("request_id", s.r.RequestID),
			slog.String("server", server), slog.String("tool", tool), slog.String("error", err.Error()))
		return "", s.callError(server, outcome, err)
	}
	out := res.Output
	s.bytes += len(out)
	if s.bytes > s.l.limits.MaxOutputBytes {
		keep := max(0, len(out)-(s.bytes-s.l.limits.MaxOutputBytes))
		out = cut(out, keep) + responses.MCPTruncationNote(keep, len(res.Output))
	}
	if res.IsError {
		return "", &responses.CallError{Type: responses.ErrToolExecution, Message: out}
	}
	return out, nil
}

// ProtocolError is a server's JSON-RPC error answer (an unknown tool,
// invalid arguments), as a Tools implementation reports it.
type ProtocolError struct {
	Code    int64
	Message string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("mcp: server error %d: %s", e.Code, e.Message)
}

// callError is a failed call's error for the model and the client.
func (s *state) callError(server, outcome string, err error) *responses.CallError {
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		return &responses.CallError{Type: responses.ErrProtocol, Code: pe.Code, Message: pe.Message}
	case outcome == OutcomeTimeout:
		return &responses.CallError{Type: responses.ErrHTTP, Code: 504, Message: s.failureMessage(server, outcome)}
	case outcome == OutcomeCancelled:
		return &responses.CallError{Type: responses.ErrHTTP, Code: 499, Message: s.failureMessage(server, outcome)}
	}
	return &responses.CallError{Type: responses.ErrHTTP, Code: 502, Message: s.failureMessage(server, outcome)}
}

// cut is s's first n bytes, not splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if n >= len(s) {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

func (s *state) outcomeOf(ctx context.Context, err error, isError bool) string {
	switch {
	case err == nil && isError:
		return OutcomeToolError
	case err == nil:
		return OutcomeOK
	case s.parent.Err() != nil:
		return OutcomeCancelled
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return OutcomeTimeout
	}
	return OutcomeError
}

// failureMessage is what the model and the client see of a failed call:
// no internals, the request id to quote.
func (s *state) failureMessage(server, outcome string) string {
	switch outcome {
	case OutcomeTimeout:
		return fmt.Sprintf("The MCP server %q did not answer within %s.", server, s.l.limits.CallTimeout)
	case OutcomeCancelled:
		return "The call was cancelled."
	}
	return fmt.Sprintf("The MCP server %q could not be reached or failed (request id %s).", server, s.r.RequestID)
}

func (s *state) observe(srv *Server, tool, outcome string, d time.Duration) {
	if s.l.observer == nil {
		return
	}
	label := srv.Label
	if srv.UserSupplied {
		// A user's server and tool names would make metrics unbounded.
		label, tool = "(user-supplied)", "(user-supplied)"
	}
	s.l.observer.MCPToolCall(label, tool, outcome, d)
}
