package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of ClientOptions' zero values.
const (
	DefaultCallTimeout    = 30 * time.Second
	DefaultMaxOutputBytes = 256 << 10
)

// Limits on what a server may send back, so that a misbehaving one cannot
// make agentapi buffer without end.
const (
	maxToolPages = 20
	maxTools     = 1000
	// maxToolCacheEntries bounds the tool-list cache; past it the cache
	// starts over (user-supplied servers can be many).
	maxToolCacheEntries = 1024
)

// Outcomes of a call, as reported to OnCall, metrics and the audit.
const (
	OutcomeOK            = "ok"
	OutcomeToolError     = "tool_error"
	OutcomeTimeout       = "timeout"
	OutcomeUnavailable   = "unavailable"
	OutcomeProtocolError = "protocol_error"
	OutcomeCancelled     = "cancelled"
)

// UserSuppliedMetricLabel stands for the server and the tool of every call
// to a user-supplied server in OnCall, keeping metric labels bounded.
const UserSuppliedMetricLabel = "(user-supplied)"

// ClientOptions configures NewClient.
type ClientOptions struct {
	// HTTP dials admin-registered servers (which may be internal); nil
	// means a client of its own with a tuned transport and no overall
	// timeout (each call carries its deadline).
	HTTP *http.Client
	// PublicHTTP dials UserSupplied servers; it must refuse private
	// addresses at connection time. Nil refuses such servers.
	PublicHTTP *http.Client
	// CallTimeout bounds one call or listing, connecting included
	// (MCP_CALL_TIMEOUT); 0 means DefaultCallTimeout.
	CallTimeout time.Duration
	// MaxOutputBytes cuts a result's output (MCP_MAX_OUTPUT_BYTES); 0
	// means DefaultMaxOutputBytes.
	MaxOutputBytes int
	// ToolsTTL is how long a server's tool list is reused
	// (MCP_TOOLS_TTL); 0 lists every time.
	ToolsTTL time.Duration
	// Version is sent to servers as the client's version.
	Version string
	// Logger receives connection trouble (never headers, arguments or
	// results); nil logs nothing.
	Logger *slog.Logger
	// Tracer opens a span per call and listing; nil traces nothing.
	Tracer trace.Tracer
	// OnCall, when set, is told of every tool call as it ends: for
	// metrics.
	OnCall func(server, tool, outcome string, d time.Duration)
}

// Client lists and calls tools of MCP servers over Streamable HTTP. It keeps
// one SDK session per registered server and reuses it, so a call costs one
// HTTP round trip rather than three (initialize, initialized, call); a
// session the server forgot is replaced once, transparently. It is safe for
// concurrent use; Close ends the sessions.
type Client struct {
	o      ClientOptions
	sdk    *sdk.Client
	plain  *http.Client
	logger *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	sessions map[string]*pooledSession // by sessionKey
	tools    map[string]toolsEntry     // by sessionKey
	closed   bool
}

type toolsEntry struct {
	tools   []Tool
	fetched time.Time
}

// pooledSession is one server's reusable session. sem (capacity 1) is held
// while connecting, so concurrent first calls share one handshake.
type pooledSession struct {
	label string
	sem   chan struct{}
	cs    *sdk.ClientSession
}

// NewClient builds a client.
func NewClient(o ClientOptions) *Client {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = DefaultMaxOutputBytes
	}
	version := o.Version
	if version == "" {
		version = "dev"
	}
	plain := o.HTTP
	if plain == nil {
		plain = &http.Client{Transport: newTransport()}
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		o: o,
		// Capabilities: none (no roots, sampling or elicitation): agentapi
		// answers no requests from servers.
		sdk:      sdk.NewClient(&sdk.Implementation{Name: "agentapi", Version: version}, &sdk.ClientOptions{Capabilities: &sdk.ClientCapabilities{}}),
		plain:    plain,
		logger:   logger,
		now:      time.Now,
		sessions: map[string]*pooledSession{},
		tools:    map[string]toolsEntry{},
	}
}

// newTransport is the transport for registered servers: bounded dials and
// handshakes (a call's deadline bounds the rest), and enough idle
// connections kept per server for concurrent calls.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// CallTimeout is the deadline of one call.
func (c *Client) CallTimeout() time.Duration { return c.o.CallTimeout }

// MaxOutputBytes is the cap on a result's output.
func (c *Client) MaxOutputBytes() int { return c.o.MaxOutputBytes }

// Close ends every pooled session.
func (c *Client) Close() error {
	c.mu.Lock()
	sessions := c.sessions
	c.sessions, c.closed = map[string]*pooledSession{}, true
	c.mu.Unlock()
	for _, p := range sessions {
		if p.cs != nil {
			p.cs.Close()
		}
	}
	return nil
}

// ListTools returns the tools s offers, every page of them, from the cache
// while it is fresher than ToolsTTL. The registry's allowlist is not
// applied here: callers decide what to show.
func (c *Client) ListTools(ctx context.Context, s Server) ([]Tool, error) {
	key := sessionKey(s)
	if c.o.ToolsTTL > 0 {
		c.mu.Lock()
		e, ok := c.tools[key]
		c.mu.Unlock()
		if ok && c.now().Sub(e.fetched) < c.o.ToolsTTL {
			return e.tools, nil
		}
	}
	var tools []Tool
	err := c.withSession(ctx, s, "tools/list", func(ctx context.Context, cs *sdk.ClientSession) error {
		tools = tools[:0]
		cursor := ""
		for range maxToolPages {
			res, err := cs.ListTools(ctx, &sdk.ListToolsParams{Cursor: cursor})
			if err != nil {
				return err
			}
			for _, t := range res.Tools {
				if t == nil || len(tools) >= maxTools {
					continue
				}
				tools = append(tools, toTool(t))
			}
			if res.NextCursor == "" {
				break
			}
			cursor = res.NextCursor
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if c.o.ToolsTTL > 0 {
		c.mu.Lock()
		if len(c.tools) >= maxToolCacheEntries {
			c.tools = map[string]toolsEntry{}
		}
		c.tools[key] = toolsEntry{tools: tools, fetched: c.now()}
		c.mu.Unlock()
	}
	return tools, nil
}

// ForgetTools drops s's cached tool list, so the next ListTools asks.
func (c *Client) ForgetTools(s Server) {
	c.mu.Lock()
	delete(c.tools, sessionKey(s))
	c.mu.Unlock()
}

func toTool(t *sdk.Tool) Tool {
	out := Tool{Name: t.Name, Description: t.Description}
	if t.InputSchema != nil {
		if b, err := json.Marshal(t.InputSchema); err == nil {
			out.InputSchema = b
		}
	}
	if len(out.InputSchema) == 0 || string(out.InputSchema) == "null" {
		out.InputSchema = json.RawMessage(`{"type":"object"}`)
	}
	if t.Annotations != nil {
		if b, err := json.Marshal(t.Annotations); err == nil {
			out.Annotations = b
		}
	}
	return out
}

// CallTool calls tool name of s with args (a JSON object; empty means
// none). A tool that answers with an error result is Result{IsError:
// true}, not an error; an error is a failure to get an answer: ErrTimeout,
// ErrUnavailable, the caller's cancellation, or the server's JSON-RPC error
// (a *jsonrpc.Error in the chain).
func (c *Client) CallTool(ctx context.Context, s Server, name string, args json.RawMessage) (Result, error) {
	res, err := c.CallToolRaw(ctx, s, name, args)
	if err != nil {
		return Result{}, err
	}
	return c.toResult(res), nil
}

// CallToolRaw is CallTool returning the server's result as the SDK decoded
// it, uncut, for callers that pass it on whole (the MCP gateway); they
// apply MaxOutputBytes themselves.
func (c *Client) CallToolRaw(ctx context.Context, s Server, name string, args json.RawMessage) (*sdk.CallToolResult, error) {
	start := c.now()
	var span trace.Span
	if c.o.Tracer != nil {
		ctx, span = c.o.Tracer.Start(ctx, "mcp tools/call", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("mcp.server", s.Label), attribute.String("mcp.tool", name)))
	}
	var params any
	if len(args) > 0 && string(args) != "null" {
		params = args
	}
	var res *sdk.CallToolResult
	err := c.withSession(ctx, s, "tools/call", func(ctx context.Context, cs *sdk.ClientSession) error {
		var err error
		res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: params})
		return err
	})
	outcome := OutcomeOf(res, err)
	if span != nil {
		span.SetAttributes(attribute.String("mcp.outcome", outcome))
		if err != nil {
			span.SetStatus(codes.Error, outcome)
		}
		span.End()
	}
	if c.o.OnCall != nil {
		server, tool := s.Label, name
		if s.UserSupplied {
			// Anyone may name any server and tool: one series for all.
			server, tool = UserSuppliedMetricLabel, UserSuppliedMetricLabel
		}
		c.o.OnCall(server, tool, outcome, c.now().Sub(start))
	}
	return res, err
}

// Codes the SDK uses for its own failures (not the server's answers).
const (
	codeRejected      = -32005
	codeClientClosing = -32003
	codeServerClosing = -32004
)

// ServerError returns the JSON-RPC error the server answered with, if err
// carries one: an unknown tool, invalid arguments, ... The SDK wraps
// transport failures in JSON-RPC errors of its own, which are skipped.
func ServerError(err error) (*jsonrpc.Error, bool) {
	if err == nil {
		return nil, false
	}
	if w, ok := err.(*jsonrpc.Error); ok {
		switch w.Code {
		case codeRejected, codeClientClosing, codeServerClosing:
		default:
			return w, true
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return ServerError(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if w, ok := ServerError(e); ok {
				return w, true
			}
		}
	}
	return nil, false
}

// OutcomeOf names how a call ended, in the words of metrics and the audit.
func OutcomeOf(res *sdk.CallToolResult, err error) string {
	_, isServerErr := ServerError(err)
	switch {
	case err == nil && res != nil && res.IsError:
		return OutcomeToolError
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrTimeout):
		return OutcomeTimeout
	case isServerErr:
		return OutcomeProtocolError
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCancelled
	default:
		return OutcomeUnavailable
	}
}

// withSession runs fn on a session with s under the call deadline. A
// pooled session that the server no longer knows (ErrSessionMissing: the
// request was refused, not run) is replaced and fn run once more; one that
// broke otherwise is dropped so the next call connects afresh.
func (c *Client) withSession(ctx context.Context, s Server, op string, fn func(context.Context, *sdk.ClientSession) error) error {
	ctx, stop := isolate(ctx)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, c.o.CallTimeout, ErrTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		cs, release, err := c.session(ctx, s)
		if err != nil {
			return c.wrap(ctx, s, op, err)
		}
		err = fn(ctx, cs)
		release(err)
		if err == nil {
			return nil
		}
		if attempt == 0 && errors.Is(err, sdk.ErrSessionMissing) && ctx.Err() == nil {
			continue
		}
		return c.wrap(ctx, s, op, err)
	}
}

// isolate returns a context that ends when parent does but carries none of
// its values except the trace span. The SDK keeps per-request state in
// context values (the negotiated protocol version, above all): when the
// caller is itself serving an MCP request (the gateway), those values would
// otherwise leak into the requests made to the server behind it.
func isolate(parent context.Context) (context.Context, func()) {
	ctx := trace.ContextWithSpan(context.Background(), trace.SpanFromContext(parent))
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(parent, func() { cancel(context.Cause(parent)) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// wrap gives err the sentinel that says what happened.
func (c *Client) wrap(ctx context.Context, s Server, op string, err error) error {
	rpcErr, isServerErr := ServerError(err)
	switch {
	case errors.Is(context.Cause(ctx), ErrTimeout):
		return fmt.Errorf("mcp: %s %s: %w after %s", s.Label, op, ErrTimeout, c.o.CallTimeout)
	case ctx.Err() != nil:
		return fmt.Errorf("mcp: %s %s: %w", s.Label, op, context.Cause(ctx))
	case isServerErr:
		return fmt.Errorf("mcp: %s %s: %w", s.Label, op, rpcErr)
	case errors.Is(err, ErrUserServersRefused):
		return err
	default:
		c.logger.Warn("mcp server unavailable", "server", s.Label, "op", op, "error", err.Error())
		return fmt.Errorf("mcp: %s %s: %w: %v", s.Label, op, ErrUnavailable, err)
	}
}

// session returns a session with s and the function to call when done
// with it. Registered and built-in servers get a pooled session;
// user-supplied ones a session of their own, closed on release, so the pool
// stays bounded by the registry.
func (c *Client) session(ctx context.Context, s Server) (*sdk.ClientSession, func(error), error) {
	if s.UserSupplied {
		cs, err := c.connect(ctx, s)
		if err != nil {
			return nil, nil, err
		}
		return cs, func(error) { cs.Close() }, nil
	}
	key := sessionKey(s)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, fmt.Errorf("mcp: client closed")
	}
	p, ok := c.sessions[key]
	if !ok {
		// A server whose URL or headers changed gets a new key; its old
		// session is closed rather than kept forever.
		for k, old := range c.sessions {
			if old.label == s.Label {
				delete(c.sessions, k)
				go closeWhenFree(old)
			}
		}
		p = &pooledSession{label: s.Label, sem: make(chan struct{}, 1)}
		c.sessions[key] = p
	}
	c.mu.Unlock()

	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	cs := p.cs
	if cs == nil {
		var err error
		cs, err = c.connect(ctx, s)
		if err != nil {
			<-p.sem
			return nil, nil, err
		}
		p.cs = cs
	}
	<-p.sem
	return cs, func(err error) { c.release(p, cs, err) }, nil
}

// release drops p's session after an error that says it is broken: any
// error but the server's own JSON-RPC answer and a call's deadline (a slow
// tool says nothing about the session).
func (c *Client) release(p *pooledSession, cs *sdk.ClientSession, err error) {
	if err == nil {
		return
	}
	if _, ok := ServerError(err); ok || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if !errors.Is(err, sdk.ErrSessionMissing) {
			return
		}
	}
	p.sem <- struct{}{}
	if p.cs == cs {
		p.cs = nil
	}
	<-p.sem
	go cs.Close()
}

func closeWhenFree(p *pooledSession) {
	p.sem <- struct{}{}
	if p.cs != nil {
		p.cs.Close()
		p.cs = nil
	}
	<-p.sem
}

// connect opens a session with s: the SDK's Streamable HTTP client over
// the HTTP client s calls for, with s's headers added to every request.
func (c *Client) connect(ctx context.Context, s Server) (*sdk.ClientSession, error) {
	hc, err := c.httpClientFor(s)
	if err != nil {
		return nil, err
	}
	t := &sdk.StreamableClientTransport{
		Endpoint:   s.URL,
		HTTPClient: hc,
		// A call is one request under one deadline: no reconnect loops,
		// no standing GET stream per server.
		MaxRetries:           -1,
		DisableStandaloneSSE: true,
	}
	if s.Handler != nil && t.Endpoint == "" {
		t.Endpoint = "http://" + s.Label + ".in-process/mcp"
	}
	cs, err := c.sdk.Connect(ctx, t, nil)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return cs, nil
}

func (c *Client) httpClientFor(s Server) (*http.Client, error) {
	var base http.Client
	switch {
	case s.Handler != nil:
		base = http.Client{Transport: handlerTransport{h: s.Handler}}
	case s.UserSupplied:
		if c.o.PublicHTTP == nil {
			return nil, fmt.Errorf("%w: %q", ErrUserServersRefused, s.Label)
		}
		base = *c.o.PublicHTTP
	default:
		base = *c.plain
	}
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	host := ""
	if i := strings.Index(s.URL, "://"); i >= 0 {
		host = s.URL[i+3:]
		if j := strings.IndexAny(host, "/?#"); j >= 0 {
			host = host[:j]
		}
		if j := strings.LastIndex(host, "@"); j >= 0 {
			host = host[j+1:]
		}
	}
	base.Transport = headerTransport{base: rt, headers: s.Headers, host: host}
	return &base, nil
}

// sessionKey tells servers apart for the pool and the tool cache: the same
// label with another URL or other headers is another session.
func sessionKey(s Server) string {
	h := sha256.New()
	h.Write([]byte(s.URL))
	keys := make([]string, 0, len(s.Headers))
	for k := range s.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		h.Write([]byte{0})
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(s.Headers[k]))
	}
	kind := "r"
	if s.UserSupplied {
		kind = "u"
	}
	return kind + ":" + s.Label + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}

// toResult joins a result's content as text and cuts it to the cap.
func (c *Client) toResult(r *sdk.CallToolResult) Result {
	var parts []string
	for _, content := range r.Content {
		switch v := content.(type) {
		case *sdk.TextContent:
			parts = append(parts, v.Text)
		case *sdk.ImageContent:
			parts = append(parts, fmt.Sprintf("[image %s, %d bytes]", v.MIMEType, len(v.Data)))
		case *sdk.AudioContent:
			parts = append(parts, fmt.Sprintf("[audio %s, %d bytes]", v.MIMEType, len(v.Data)))
		case *sdk.ResourceLink:
			parts = append(parts, fmt.Sprintf("[resource %s]", v.URI))
		case *sdk.EmbeddedResource:
			if v.Resource != nil && v.Resource.Text != "" {
				parts = append(parts, v.Resource.Text)
			} else if v.Resource != nil {
				parts = append(parts, fmt.Sprintf("[resource %s]", v.Resource.URI))
			}
		}
	}
	out := strings.Join(parts, "\n")
	if out == "" && r.StructuredContent != nil {
		if b, err := json.Marshal(r.StructuredContent); err == nil {
			out = string(b)
		}
	}
	text, cut := Truncate(out, c.o.MaxOutputBytes)
	return Result{Output: text, IsError: r.IsError, Truncated: cut, Bytes: len(out)}
}

// Truncate cuts s to at most max bytes, on a UTF-8 boundary, ending it with
// a note that says how much was kept; it reports whether it cut.
func Truncate(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	note := fmt.Sprintf("\n[output truncated by agentapi: %d of %d bytes shown]", 0, len(s))
	keep := max - len(note)
	if keep < 0 {
		keep = 0
	}
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	note = fmt.Sprintf("\n[output truncated by agentapi: %d of %d bytes shown]", keep, len(s))
	out := s[:keep] + note
	if len(out) > max {
		out = out[:max]
	}
	return out, true
}
