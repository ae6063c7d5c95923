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
	"strings"

	"github.com/agentapi/agentapi/internal/mcp"
	"github.com/agentapi/agentapi/internal/tier"
)

// Bounds on what an admin may register, so a registry entry stays a small
// row and a header stays a header.
const (
	maxMCPURLBytes         = 2048
	maxMCPDescriptionBytes = 1024
	maxMCPHeaders          = 32
	maxMCPHeaderValueBytes = 8192
	maxMCPToolNames        = 256
	maxMCPToolNameBytes    = 128
)

// mcpRegistry is the admin registry of MCP servers (internal/mcp.Registry).
type mcpRegistry interface {
	List(ctx context.Context) ([]mcp.Server, error)
	Get(ctx context.Context, label string) (mcp.Server, error)
	Create(ctx context.Context, s mcp.Server) (mcp.Server, error)
	Update(ctx context.Context, label string, change mcp.ServerChange) (mcp.Server, error)
	Delete(ctx context.Context, label string) error
}

// emptyMCPRegistry is the registry of a handler built without one: no
// servers, and none can be registered.
func emptyMCPRegistry() mcpRegistry {
	r, _ := mcp.NewRegistry(mcp.RegistryOptions{}) // fails only on bad built-ins; there are none
	return r
}

// mcpServerView is a registered server as the API shows it: never its
// headers, only their names.
type mcpServerView struct {
	ServerLabel       string   `json:"server_label"`
	ServerURL         string   `json:"server_url,omitempty"`
	ServerDescription string   `json:"server_description,omitempty"`
	HeaderNames       []string `json:"header_names" jsonschema:"description=Names of the headers added to every request to the server; their values are never returned."`
	AllowedTools      []string `json:"allowed_tools" jsonschema:"description=null: every tool the server lists."`
	RequireApproval   string   `json:"require_approval" jsonschema:"enum=always,enum=never"`
	Tiers             []string `json:"tiers" jsonschema:"description=null: every tier."`
	Builtin           bool     `json:"builtin"`
}

type mcpServerList struct {
	Data []mcpServerView `json:"data"`
}

// mcpServerCreate is POST /admin/mcp-servers' body.
type mcpServerCreate struct {
	ServerLabel       string            `json:"server_label" jsonschema:"pattern=^[a-zA-Z0-9_-]{1\\,64}$"`
	ServerURL         string            `json:"server_url" jsonschema:"description=The server's Streamable HTTP endpoint (http or https; internal addresses allowed)."`
	ServerDescription string            `json:"server_description,omitempty"`
	Headers           map[string]string `json:"headers,omitempty" jsonschema:"description=Added by agentapi to every request to the server (credentials); stored encrypted, never returned or logged."`
	AllowedTools      []string          `json:"allowed_tools,omitempty" jsonschema:"description=Absent: every tool."`
	RequireApproval   string            `json:"require_approval,omitempty" jsonschema:"enum=always,enum=never,description=Default always."`
	Tiers             []string          `json:"tiers,omitempty" jsonschema:"description=Absent: every tier."`
}

// mcpServerPatch is PATCH /admin/mcp-servers/{label}'s body: absent fields
// stay; allowed_tools or tiers set to null mean "every" again.
type mcpServerPatch struct {
	ServerURL         *string            `json:"server_url,omitempty"`
	ServerDescription *string            `json:"server_description,omitempty"`
	Headers           *map[string]string `json:"headers,omitempty" jsonschema:"description=Replaces every header; {} removes them."`
	AllowedTools      json.RawMessage    `json:"allowed_tools,omitempty" jsonschema:"type=array,description=null: every tool."`
	RequireApproval   *string            `json:"require_approval,omitempty" jsonschema:"enum=always,enum=never"`
	Tiers             json.RawMessage    `json:"tiers,omitempty" jsonschema:"type=array,description=null: every tier."`
}

func toMCPServerView(s mcp.Server) mcpServerView {
	names := make([]string, 0, len(s.Headers))
	for k := range s.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	return mcpServerView{ServerLabel: s.Label, ServerURL: s.URL, ServerDescription: s.Description, HeaderNames: names,
		AllowedTools: s.AllowedTools, RequireApproval: s.RequireApproval, Tiers: s.Tiers, Builtin: s.Builtin}
}

// mcpError maps the registry's sentinels to API errors.
func mcpError(err error) error {
	switch {
	case errors.Is(err, mcp.ErrServerNotFound):
		return errStatus(http.StatusNotFound, "No MCP server has this label")
	case errors.Is(err, mcp.ErrServerExists):
		return errStatus(http.StatusConflict, "An MCP server with this label is already registered")
	case errors.Is(err, mcp.ErrBuiltin):
		return errStatus(http.StatusConflict, "This MCP server is built in; it cannot be changed or deleted")
	case errors.Is(err, mcp.ErrInvalidServer):
		return errValidation(fieldProblem{"body", strings.TrimPrefix(err.Error(), mcp.ErrInvalidServer.Error()+": ")})
	case errors.Is(err, mcp.ErrHeadersUnreadable):
		return errStatus(http.StatusConflict, "The stored headers of this server cannot be decrypted with SECRET_KEY; set headers again")
	}
	return err
}

func handleAdminListMCPServers(logger *slog.Logger, reg mcpRegistry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list, err := reg.List(r.Context())
		if err != nil {
			writeError(w, r, logger, mcpError(err))
			return
		}
		out := mcpServerList{Data: make([]mcpServerView, 0, len(list))}
		for _, s := range list {
			out.Data = append(out.Data, toMCPServerView(s))
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func handleAdminGetMCPServer(logger *slog.Logger, reg mcpRegistry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := reg.Get(r.Context(), r.PathValue("label"))
		if err != nil {
			writeError(w, r, logger, mcpError(err))
			return
		}
		writeJSON(w, http.StatusOK, toMCPServerView(s))
	})
}

func handleAdminCreateMCPServer(logger *slog.Logger, reg mcpRegistry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in mcpServerCreate
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		var problems []fieldProblem
		if !mcp.ValidLabel(in.ServerLabel) {
			problems = append(problems, fieldProblem{"server_label", "must be 1 to 64 letters, digits, '_' or '-'"})
		}
		problems = checkMCPURL(problems, in.ServerURL)
		problems = checkMCPFields(problems, &in.ServerDescription, &in.Headers, in.AllowedTools, in.RequireApproval, in.Tiers)
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		s, err := reg.Create(r.Context(), mcp.Server{Label: in.ServerLabel, URL: in.ServerURL, Description: in.ServerDescription,
			Headers: in.Headers, AllowedTools: in.AllowedTools, RequireApproval: in.RequireApproval, Tiers: in.Tiers})
		if err != nil {
			writeError(w, r, logger, mcpError(err))
			return
		}
		logAdminMCP(r, logger, "admin registered mcp server", s)
		writeJSON(w, http.StatusCreated, toMCPServerView(s))
	})
}

func handleAdminPatchMCPServer(logger *slog.Logger, reg mcpRegistry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in mcpServerPatch
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, r, logger, err)
			return
		}
		var (
			problems []fieldProblem
			change   = mcp.ServerChange{URL: in.ServerURL, Description: in.ServerDescription, Headers: in.Headers, RequireApproval: in.RequireApproval}
		)
		if in.ServerURL != nil {
			problems = checkMCPURL(problems, *in.ServerURL)
		}
		var allowed, tiers []string
		if in.AllowedTools != nil {
			if err := json.Unmarshal(in.AllowedTools, &allowed); err != nil {
				problems = append(problems, fieldProblem{"allowed_tools", "must be an array of tool names, or null"})
			}
			change.AllowedTools = &allowed
		}
		if in.Tiers != nil {
			if err := json.Unmarshal(in.Tiers, &tiers); err != nil {
				problems = append(problems, fieldProblem{"tiers", "must be an array of tier names, or null"})
			}
			change.Tiers = &tiers
		}
		approval := ""
		if in.RequireApproval != nil {
			approval = *in.RequireApproval
			if approval == "" {
				problems = append(problems, fieldProblem{"require_approval", "must be always or never"})
			}
		}
		problems = checkMCPFields(problems, in.ServerDescription, in.Headers, allowed, approval, tiers)
		if in.ServerURL == nil && in.ServerDescription == nil && in.Headers == nil && in.AllowedTools == nil && in.RequireApproval == nil && in.Tiers == nil {
			problems = append(problems, fieldProblem{"body", "set at least one of server_url, server_description, headers, allowed_tools, require_approval, tiers"})
		}
		if len(problems) > 0 {
			writeError(w, r, logger, errValidation(problems...))
			return
		}
		s, err := reg.Update(r.Context(), r.PathValue("label"), change)
		if err != nil {
			writeError(w, r, logger, mcpError(err))
			return
		}
		logAdminMCP(r, logger, "admin changed mcp server", s)
		writeJSON(w, http.StatusOK, toMCPServerView(s))
	})
}

func handleAdminDeleteMCPServer(logger *slog.Logger, reg mcpRegistry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		label := r.PathValue("label")
		if err := reg.Delete(r.Context(), label); err != nil {
			writeError(w, r, logger, mcpError(err))
			return
		}
		logAdminMCP(r, logger, "admin deleted mcp server", mcp.Server{Label: label})
		w.WriteHeader(http.StatusNoContent)
	})
}

// logAdminMCP records an admin's change: the label and URL, never headers.
func logAdminMCP(r *http.Request, logger *slog.Logger, msg string, s mcp.Server) {
	ctx := r.Context()
	logger.LogAttrs(ctx, slog.LevelInfo, msg, slog.String("request_id", requestID(ctx)),
		slog.String("admin_id", principalFrom(ctx).UserID), slog.String("server_label", s.Label), slog.Any("server", s))
}

func checkMCPURL(problems []fieldProblem, raw string) []fieldProblem {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return append(problems, fieldProblem{"server_url", "is required"})
	case len(raw) > maxMCPURLBytes:
		return append(problems, fieldProblem{"server_url", fmt.Sprintf("must be at most %d bytes", maxMCPURLBytes)})
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return append(problems, fieldProblem{"server_url", "must be an absolute http or https URL"})
	case u.User != nil:
		return append(problems, fieldProblem{"server_url", "must not carry credentials; put them in headers, which are stored encrypted"})
	}
	return problems
}

// checkMCPFields checks the fields create and patch share; nil pointers and
// empty values are "not given".
func checkMCPFields(problems []fieldProblem, description *string, headers *map[string]string, allowed []string, approval string, tiers []string) []fieldProblem {
	if description != nil && len(*description) > maxMCPDescriptionBytes {
		problems = append(problems, fieldProblem{"server_description", fmt.Sprintf("must be at most %d bytes", maxMCPDescriptionBytes)})
	}
	if headers != nil {
		if len(*headers) > maxMCPHeaders {
			problems = append(problems, fieldProblem{"headers", fmt.Sprintf("at most %d headers", maxMCPHeaders)})
		}
		for k, v := range *headers {
			if !validHeaderName(k) || len(v) > maxMCPHeaderValueBytes || strings.ContainsAny(v, "\r\n\x00") {
				// The name may be shown; the value never is.
				problems = append(problems, fieldProblem{"headers", fmt.Sprintf("header %q: names are tokens, values at most %d bytes without line breaks", k, maxMCPHeaderValueBytes)})
				break
			}
		}
	}
	if len(allowed) > maxMCPToolNames {
		problems = append(problems, fieldProblem{"allowed_tools", fmt.Sprintf("at most %d names", maxMCPToolNames)})
	}
	for _, n := range allowed {
		if n == "" || len(n) > maxMCPToolNameBytes {
			problems = append(problems, fieldProblem{"allowed_tools", fmt.Sprintf("names must be 1 to %d bytes", maxMCPToolNameBytes)})
			break
		}
	}
	if approval != "" && approval != mcp.ApprovalAlways && approval != mcp.ApprovalNever {
		problems = append(problems, fieldProblem{"require_approval", "must be always or never"})
	}
	for _, t := range tiers {
		if !slices.Contains(tier.Names(), t) {
			problems = append(problems, fieldProblem{"tiers", "each must be " + strings.Join(tier.Names(), " or ")})
			break
		}
	}
	return problems
}

// validHeaderName reports whether name is an HTTP token (RFC 9110).
func validHeaderName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for _, c := range name {
		if c > 127 || !(c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' || c == '+' || c == '-' || c == '.' ||
			c == '^' || c == '_' || c == '`' || c == '|' || c == '~' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}

func mcpServerOperations() []operation {
	auth := []docResponse{docUnauthorized, docForbidden}
	return []operation{
		{Method: "GET", Path: "/admin/mcp-servers", Tag: "admin", Auth: true, Summary: "List the MCP servers (admins only)",
			Description: "Built-in servers first, then registered ones by label. Header values are never returned.",
			Responses:   append([]docResponse{{Status: 200, Description: "The servers.", Body: mcpServerList{}}}, auth...)},
		{Method: "POST", Path: "/admin/mcp-servers", Tag: "admin", Auth: true, Summary: "Register an MCP server (admins only)",
			Description: "Its tools become reachable through /mcp and by server_label in the Responses API, for the tiers listed. Internal addresses are allowed. " +
				"Headers are stored encrypted under a key derived from SECRET_KEY and added by agentapi to every request to the server.",
			Request: mcpServerCreate{},
			Responses: append([]docResponse{{Status: 201, Description: "The registered server.", Body: mcpServerView{}},
				docMalformed, {Status: 409, Description: "The label is taken, or names a built-in server.", Body: errorBody{}}, docValidation}, auth...)},
		{Method: "GET", Path: "/admin/mcp-servers/{label}", Tag: "admin", Auth: true, Summary: "One MCP server (admins only)",
			Responses: append([]docResponse{{Status: 200, Description: "The server.", Body: mcpServerView{}}, docNotFound}, auth...)},
		{Method: "PATCH", Path: "/admin/mcp-servers/{label}", Tag: "admin", Auth: true, Summary: "Change an MCP server (admins only)",
			Description: "Absent fields stay. Every replica sees the change within 2 seconds.",
			Request:     mcpServerPatch{},
			Responses: append([]docResponse{{Status: 200, Description: "The changed server.", Body: mcpServerView{}},
				docMalformed, docNotFound, {Status: 409, Description: "A built-in server.", Body: errorBody{}}, docValidation}, auth...)},
		{Method: "DELETE", Path: "/admin/mcp-servers/{label}", Tag: "admin", Auth: true, Summary: "Remove an MCP server (admins only)",
			Description: "Its audit records stay.",
			Responses: append([]docResponse{{Status: 204, Description: "Removed."}, docNotFound,
				{Status: 409, Description: "A built-in server.", Body: errorBody{}}}, auth...)},
	}
}
