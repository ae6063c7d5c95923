// Package mcp is agentapi's client side of the Model Context Protocol: the
// registry of MCP servers an admin registered (plus built-in ones), and a
// Client that lists and calls their tools over Streamable HTTP with the
// official Go SDK, adding the registry's credentials to every request.
//
// The agent loop (tools of type "mcp" in the Responses API) and the MCP
// gateway (/mcp) both reach servers through this package, so they share one
// set of bounds: a deadline per call, a cap on a result's size and a short
// cache of tool lists. It knows nothing of HTTP status codes; callers map its
// sentinels.
package mcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
)

// Approval rules of a server: whether a tool call waits for a person's
// approval (the agent loop) or not.
const (
	ApprovalAlways = "always"
	ApprovalNever  = "never"
)

// Server is one MCP server agentapi may call.
type Server struct {
	// Label names the server: [a-zA-Z0-9_-]{1,64}.
	Label string
	// URL is the server's Streamable HTTP endpoint.
	URL         string
	Description string
	// Headers are added to every request to the server; they are never
	// returned by the API and never logged.
	Headers map[string]string
	// AllowedTools nil means every tool the server lists.
	AllowedTools []string
	// RequireApproval is ApprovalAlways or ApprovalNever.
	RequireApproval string
	// Tiers nil means every tier.
	Tiers []string
	// UserSupplied marks a request's own server_url: it is dialled through
	// ClientOptions.PublicHTTP only (public addresses).
	UserSupplied bool
	// Handler, when set, serves the server in this process (the built-in
	// one): requests go to it directly, never over the network.
	Handler http.Handler
	// Builtin marks a server registered at construction; the admin API
	// cannot change or delete it.
	Builtin bool
}

// String shows the label and the URL without credentials, so a Server
// printed or logged by mistake leaks no header.
func (s Server) String() string {
	return fmt.Sprintf("mcp server %q (%s)", s.Label, redactURL(s.URL))
}

// LogValue is String, for slog.
func (s Server) LogValue() slog.Value { return slog.StringValue(s.String()) }

// AllowsTier reports whether a caller of tier t may use the server.
func (s Server) AllowsTier(t string) bool {
	return s.Tiers == nil || slices.Contains(s.Tiers, t)
}

// AllowsTool reports whether the server's allowlist admits tool name.
func (s Server) AllowsTool(name string) bool {
	return s.AllowedTools == nil || slices.Contains(s.AllowedTools, name)
}

// Tool is one tool a server offers.
type Tool struct {
	Name        string
	Description string
	InputSchema json.RawMessage
	// Annotations are the tool's hints (read-only, destructive, ...); nil
	// when it has none.
	Annotations json.RawMessage
}

// Result is what a tool call returned, cut to the size cap.
type Result struct {
	// Output is the text content joined with newlines (or the structured
	// content as JSON when there is no text); when Truncated, it ends
	// with a note saying it was cut.
	Output string
	// IsError reports that the tool answered with an error result
	// (isError), which is not a failure of the call.
	IsError   bool
	Truncated bool
	// Bytes is the output's size before cutting.
	Bytes int
}

// Errors a caller can tell apart.
var (
	// ErrServerNotFound reports a label the registry does not know.
	ErrServerNotFound = errors.New("mcp: no such server")
	// ErrServerExists reports a label already registered.
	ErrServerExists = errors.New("mcp: server label already registered")
	// ErrBuiltin reports an attempt to change or delete a built-in server.
	ErrBuiltin = errors.New("mcp: built-in server cannot be changed")
	// ErrInvalidServer reports a server description that cannot be used.
	ErrInvalidServer = errors.New("mcp: invalid server")
	// ErrUserServersRefused reports a user-supplied server while no
	// guarded dialer was given.
	ErrUserServersRefused = errors.New("mcp: user-supplied servers are not allowed")
	// ErrTimeout reports a call that hit MCP_CALL_TIMEOUT.
	ErrTimeout = errors.New("mcp: call timed out")
	// ErrUnavailable reports a server that could not be reached or broke
	// the protocol.
	ErrUnavailable = errors.New("mcp: server unavailable")
	// ErrHeadersUnreadable reports stored credentials that the current
	// SECRET_KEY (or SECRET_KEY_PREVIOUS) cannot open.
	ErrHeadersUnreadable = errors.New("mcp: stored headers cannot be decrypted with SECRET_KEY")
)

// labelPattern is what a server label may be: it becomes part of tool names
// (<label>__<tool>) and of URLs (/mcp/{label}).
var labelPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ValidLabel reports whether label may name a server.
func ValidLabel(label string) bool { return labelPattern.MatchString(label) }

// validate checks what the registry relies on; the admin API checks the
// rest with field-level messages first.
func (s Server) validate() error {
	if !ValidLabel(s.Label) {
		return fmt.Errorf("%w: label %q must be 1 to 64 letters, digits, '_' or '-'", ErrInvalidServer, s.Label)
	}
	if s.Handler == nil {
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: %q: url must be an http or https URL", ErrInvalidServer, s.Label)
		}
	}
	if s.RequireApproval != ApprovalAlways && s.RequireApproval != ApprovalNever {
		return fmt.Errorf("%w: %q: require_approval must be always or never", ErrInvalidServer, s.Label)
	}
	return nil
}

// redactURL drops user info and query (either may carry a secret) for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
