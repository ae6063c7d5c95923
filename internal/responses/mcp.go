package responses

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Item and tool kinds of server-side tools (MCP), in OpenAI's shapes.
const (
	TypeMCPListTools        = "mcp_list_tools"
	TypeMCPCall             = "mcp_call"
	TypeMCPApprovalRequest  = "mcp_approval_request"
	TypeMCPApprovalResponse = "mcp_approval_response"
	// ToolMCP is the type of a tool that names an MCP server.
	ToolMCP = "mcp"
)

// Kinds of an mcp_call's error, in OpenAI's words.
const (
	// ErrToolExecution: the tool answered with an error, or the call did
	// not run (denied, not available, a cap); Message is its text.
	ErrToolExecution = "mcp_tool_execution_error"
	// ErrProtocol: the server answered with a JSON-RPC error.
	ErrProtocol = "mcp_protocol_error"
	// ErrHTTP: the server could not be reached or did not answer in time.
	ErrHTTP = "http_error"
)

// CallError is a failed mcp_call's error: its kind, a code (a JSON-RPC
// or HTTP-like status for ErrProtocol and ErrHTTP) and a message the
// model and the client see.
type CallError struct {
	Type    string
	Code    int64
	Message string
}

// Bounds on an MCP tool of a request.
const (
	maxServerLabel   = 64
	maxServerURL     = 2048
	maxServerDesc    = 1024
	maxAllowedTools  = 128
	maxHeaders       = 16
	maxHeaderName    = 128
	maxHeaderValue   = 4096
	maxApprovalNames = 128
	maxReason        = 1024
)

// MCPTool is one tool of an mcp_list_tools item.
type MCPTool struct {
	Name        string
	Description string
	InputSchema json.RawMessage
	Annotations json.RawMessage
}

// MarshalJSON writes the tool in OpenAI's shape.
func (t MCPTool) MarshalJSON() ([]byte, error) {
	schema, ann := t.InputSchema, t.Annotations
	if len(schema) == 0 {
		schema = json.RawMessage(`{"type":"object"}`)
	}
	if len(ann) == 0 {
		ann = json.RawMessage("null")
	}
	var desc *string
	if t.Description != "" {
		desc = &t.Description
	}
	return json.Marshal(struct {
		Name        string          `json:"name"`
		Description *string         `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
		Annotations json.RawMessage `json:"annotations"`
	}{t.Name, desc, schema, ann})
}

// MCPServer is a tool of type "mcp": a server the model's tool calls go
// to, run by the gateway. Headers are sent to the server and never
// written back (not in the response, not in storage, not in logs).
type MCPServer struct {
	Label       string
	URL         string
	Description string
	// AllowedTools, when not nil, are the only tools offered.
	AllowedTools []string
	// Approval is require_approval; Approval.Set says the request gave
	// one.
	Approval Approval
	Headers  map[string]string
}

// Approval is a require_approval setting: "always", "never", or per tool
// names ({never: {tool_names}}, {always: {tool_names}}). A tool named in
// neither list of the object form needs approval.
type Approval struct {
	Set    bool
	Mode   string // "always", "never" or "filter"
	Always []string
	Never  []string
}

// Needs reports whether a call of tool needs the user's approval.
func (a Approval) Needs(tool string) bool {
	switch a.Mode {
	case "never":
		return false
	case "filter":
		if slices.Contains(a.Always, tool) {
			return true
		}
		return !slices.Contains(a.Never, tool)
	}
	return true
}

// MarshalJSON writes the setting as the response echoes it.
func (a Approval) MarshalJSON() ([]byte, error) {
	switch a.Mode {
	case "never", "always":
		return json.Marshal(a.Mode)
	case "filter":
		type names struct {
			ToolNames []string `json:"tool_names"`
		}
		v := map[string]names{}
		if a.Always != nil {
			v["always"] = names{a.Always}
		}
		if a.Never != nil {
			v["never"] = names{a.Never}
		}
		return json.Marshal(v)
	}
	return []byte(`"always"`), nil
}

// MCPServers is the request's MCP tools.
func (req *Request) MCPServers() []*MCPServer {
	var out []*MCPServer
	for _, t := range req.Tools {
		if t.MCP != nil {
			out = append(out, t.MCP)
		}
	}
	return out
}

// MarshalJSON writes a tool as the response echoes it: a function, or an
// MCP server without its headers.
func (t Tool) MarshalJSON() ([]byte, error) {
	if t.Type == ToolMCP && t.MCP != nil {
		s := t.MCP
		var url, desc *string
		if s.URL != "" {
			url = &s.URL
		}
		if s.Description != "" {
			desc = &s.Description
		}
		var allowed any
		if s.AllowedTools != nil {
			allowed = s.AllowedTools
		}
		return json.Marshal(struct {
			Type              string   `json:"type"`
			ServerLabel       string   `json:"server_label"`
			ServerURL         *string  `json:"server_url"`
			ServerDescription *string  `json:"server_description"`
			AllowedTools      any      `json:"allowed_tools"`
			Headers           any      `json:"headers"`
			RequireApproval   Approval `json:"require_approval"`
		}{ToolMCP, s.Label, url, desc, allowed, nil, s.Approval})
	}
	type function Tool
	return json.Marshal(function(t))
}

// parseMCPTool reads a tool of type "mcp"; p is its parameter path.
func parseMCPTool(raw json.RawMessage, p string) (Tool, error) {
	var w struct {
		Type              string            `json:"type"`
		ServerLabel       string            `json:"server_label"`
		ServerURL         string            `json:"server_url"`
		ServerDescription string            `json:"server_description"`
		AllowedTools      json.RawMessage   `json:"allowed_tools"`
		RequireApproval   json.RawMessage   `json:"require_approval"`
		Headers           map[string]string `json:"headers"`
	}
	if err := strictObject(raw, &w); err != nil {
		var probe map[string]json.RawMessage
		if json.Unmarshal(raw, &probe) == nil {
			for _, k := range []string{"connector_id", "authorization"} {
				if _, ok := probe[k]; ok {
					return Tool{}, &ParamError{Param: p + "." + k, Code: "unsupported_parameter",
						Message: fmt.Sprintf("'%s.%s' is not supported; name a registered server by server_label, or give server_url.", p, k)}
				}
			}
		}
		return Tool{}, paramErr(p, "'%s' (mcp) takes server_label, server_url, server_description, allowed_tools, require_approval and headers: %s.", p, fieldProblem(err))
	}
	if !validToolName(w.ServerLabel) {
		return Tool{}, paramErr(p+".server_label", "'%s.server_label' must be 1 to %d letters, digits, underscores or dashes.", p, maxServerLabel)
	}
	if len(w.ServerURL) > maxServerURL || len(w.ServerDescription) > maxServerDesc {
		return Tool{}, paramErr(p, "'%s' server_url is at most %d and server_description at most %d bytes.", p, maxServerURL, maxServerDesc)
	}
	s := &MCPServer{Label: w.ServerLabel, URL: w.ServerURL, Description: w.ServerDescription}
	if len(w.AllowedTools) > 0 && !isNull(w.AllowedTools) {
		names, err := toolNames(w.AllowedTools, p+".allowed_tools", true)
		if err != nil {
			return Tool{}, err
		}
		s.AllowedTools = names
	}
	if len(w.RequireApproval) > 0 && !isNull(w.RequireApproval) {
		a, err := parseApproval(w.RequireApproval, p+".require_approval")
		if err != nil {
			return Tool{}, err
		}
		s.Approval = a
	}
	if len(w.Headers) > maxHeaders {
		return Tool{}, paramErr(p+".headers", "'%s.headers' may have at most %d entries.", p, maxHeaders)
	}
	for k, v := range w.Headers {
		if k == "" || len(k) > maxHeaderName || len(v) > maxHeaderValue || !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			// The value is never echoed: it may be a credential.
			return Tool{}, paramErr(p+".headers", "'%s.headers' must map header names to values of at most %d bytes on one line.", p, maxHeaderValue)
		}
	}
	if len(w.Headers) > 0 {
		s.Headers = w.Headers
	}
	return Tool{Type: ToolMCP, Name: s.Label, MCP: s}, nil
}

func validHeaderName(k string) bool {
	for _, c := range k {
		if !(c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// toolNames reads a list of tool names: an array, or (when objectForm)
// {tool_names: [...]}.
func toolNames(raw json.RawMessage, p string, objectForm bool) ([]string, error) {
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		var o struct {
			ToolNames []string `json:"tool_names"`
			ReadOnly  *bool    `json:"read_only"`
		}
		if !objectForm || strictObject(raw, &o) != nil || o.ReadOnly != nil {
			return nil, paramErr(p, "'%s' must be an array of tool names or {\"tool_names\": [...]}.", p)
		}
		names = o.ToolNames
	}
	if len(names) > maxAllowedTools {
		return nil, paramErr(p, "'%s' may name at most %d tools.", p, maxAllowedTools)
	}
	for _, n := range names {
		if n == "" || len(n) > maxToolNameBytes*2 {
			return nil, paramErr(p, "'%s' names must be 1 to %d bytes.", p, maxToolNameBytes*2)
		}
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

func parseApproval(raw json.RawMessage, p string) (Approval, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "always" && s != "never" {
			return Approval{}, paramErr(p, "'%s' must be 'always', 'never' or {\"never\": {\"tool_names\": [...]}}.", p)
		}
		return Approval{Set: true, Mode: s}, nil
	}
	var o struct {
		Always json.RawMessage `json:"always"`
		Never  json.RawMessage `json:"never"`
	}
	if err := strictObject(raw, &o); err != nil {
		return Approval{}, paramErr(p, "'%s' must be 'always', 'never' or {\"never\": {\"tool_names\": [...]}}.", p)
	}
	a := Approval{Set: true, Mode: "filter"}
	var err error
	if len(o.Always) > 0 && !isNull(o.Always) {
		if a.Always, err = toolNames(o.Always, p+".always", true); err != nil {
			return Approval{}, err
		}
	}
	if len(o.Never) > 0 && !isNull(o.Never) {
		if a.Never, err = toolNames(o.Never, p+".never", true); err != nil {
			return Approval{}, err
		}
	}
	return a, nil
}

// isMCPItem reports whether typ is one of the MCP item types.
func isMCPItem(typ string) bool {
	switch typ {
	case TypeMCPListTools, TypeMCPCall, TypeMCPApprovalRequest, TypeMCPApprovalResponse:
		return true
	}
	return false
}

// mcpItemWire is every field an MCP item may have.
type mcpItemWire struct {
	Type              string          `json:"type"`
	ID                string          `json:"id"`
	Status            string          `json:"status"`
	ServerLabel       string          `json:"server_label"`
	Name              string          `json:"name"`
	Arguments         *string         `json:"arguments"`
	Output            *string         `json:"output"`
	Error             json.RawMessage `json:"error"`
	ApprovalRequestID *string         `json:"approval_request_id"`
	Approve           *bool           `json:"approve"`
	Reason            *string         `json:"reason"`
	Tools             []struct {
		Name        string          `json:"name"`
		Description *string         `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
		Annotations json.RawMessage `json:"annotations"`
	} `json:"tools"`
}

// parseMCPItem reads an MCP item (of a request's input, or of a stored
// response); ok is false when raw is not one.
func parseMCPItem(raw json.RawMessage, p string) (it Item, ok bool, err error) {
	var probe struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &probe) != nil || !isMCPItem(probe.Type) {
		return Item{}, false, nil
	}
	var w mcpItemWire
	if err := strictObject(raw, &w); err != nil {
		return Item{}, true, paramErr(p, "'%s' is not a valid %s item: %s.", p, probe.Type, fieldProblem(err))
	}
	if len(w.ID) > maxIDBytes || (w.ApprovalRequestID != nil && len(*w.ApprovalRequestID) > maxIDBytes) {
		return Item{}, true, paramErr(p+".id", "Item ids are at most %d bytes.", maxIDBytes)
	}
	it = Item{Type: w.Type, ID: w.ID, ServerLabel: w.ServerLabel, Name: w.Name}
	if w.Arguments != nil {
		it.Arguments = *w.Arguments
	}
	if w.Reason != nil {
		if len(*w.Reason) > maxReason {
			return Item{}, true, paramErr(p+".reason", "'%s.reason' is at most %d bytes.", p, maxReason)
		}
		it.Reason = *w.Reason
	}
	switch w.Type {
	case TypeMCPApprovalResponse:
		if w.ApprovalRequestID == nil || *w.ApprovalRequestID == "" || w.Approve == nil {
			return Item{}, true, paramErr(p, "'%s' (mcp_approval_response) needs approval_request_id and approve.", p)
		}
		it.ApprovalRequestID, it.Approve = *w.ApprovalRequestID, *w.Approve
		return it, true, nil
	case TypeMCPListTools:
		if !validToolName(w.ServerLabel) {
			return Item{}, true, paramErr(p+".server_label", "'%s.server_label' is required.", p)
		}
		it.Tools = []MCPTool{}
		for _, t := range w.Tools {
			mt := MCPTool{Name: t.Name, InputSchema: t.InputSchema, Annotations: t.Annotations}
			if isNull(mt.Annotations) {
				mt.Annotations = nil
			}
			if t.Description != nil {
				mt.Description = *t.Description
			}
			it.Tools = append(it.Tools, mt)
		}
	default:
		if !validToolName(w.ServerLabel) || w.Name == "" || w.Arguments == nil {
			return Item{}, true, paramErr(p, "'%s' (%s) needs server_label, name and arguments.", p, w.Type)
		}
	}
	if len(w.Error) > 0 && !isNull(w.Error) {
		var s string
		if json.Unmarshal(w.Error, &s) != nil {
			var e struct {
				Type    string `json:"type"`
				Code    int64  `json:"code"`
				Message string `json:"message"`
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			}
			if json.Unmarshal(w.Error, &e) != nil {
				return Item{}, true, paramErr(p+".error", "'%s.error' must be a string or an error object.", p)
			}
			s, it.ErrorType, it.ErrorCode = e.Message, e.Type, e.Code
			for _, c := range e.Content {
				s += c.Text
			}
		}
		it.Error = &s
	}
	if w.Output != nil {
		it.Output = *w.Output
	}
	if w.ApprovalRequestID != nil {
		it.ApprovalRequestID = *w.ApprovalRequestID
	}
	it.Status = w.Status
	if it.Type == TypeMCPCall && it.Status == "" {
		it.Status = StatusCompleted
		if it.Error != nil {
			it.Status = StatusFailed
		}
	}
	return it, true, nil
}

// marshalMCP writes an MCP item in OpenAI's shape.
func (it Item) marshalMCP() ([]byte, error) {
	switch it.Type {
	case TypeMCPListTools:
		tools := it.Tools
		if tools == nil {
			tools = []MCPTool{}
		}
		return json.Marshal(struct {
			Type        string    `json:"type"`
			ID          string    `json:"id"`
			ServerLabel string    `json:"server_label"`
			Tools       []MCPTool `json:"tools"`
			Error       *string   `json:"error"`
		}{it.Type, it.ID, it.ServerLabel, tools, it.Error})
	case TypeMCPCall:
		var out, approval *string
		var callErr any
		if it.Error == nil && it.Status != StatusInProgress {
			out = &it.Output
		}
		if it.Error != nil {
			callErr = mcpErrorJSON(it)
		}
		if it.ApprovalRequestID != "" {
			approval = &it.ApprovalRequestID
		}
		return json.Marshal(struct {
			Type              string  `json:"type"`
			ID                string  `json:"id"`
			ServerLabel       string  `json:"server_label"`
			Name              string  `json:"name"`
			Arguments         string  `json:"arguments"`
			Output            *string `json:"output"`
			Error             any     `json:"error"`
			ApprovalRequestID *string `json:"approval_request_id"`
			Status            string  `json:"status"`
		}{it.Type, it.ID, it.ServerLabel, it.Name, it.Arguments, out, callErr, approval, it.Status})
	case TypeMCPApprovalRequest:
		return json.Marshal(struct {
			Type        string `json:"type"`
			ID          string `json:"id"`
			ServerLabel string `json:"server_label"`
			Name        string `json:"name"`
			Arguments   string `json:"arguments"`
		}{it.Type, it.ID, it.ServerLabel, it.Name, it.Arguments})
	default: // TypeMCPApprovalResponse
		var reason *string
		if it.Reason != "" {
			reason = &it.Reason
		}
		return json.Marshal(struct {
			Type              string  `json:"type"`
			ID                string  `json:"id"`
			ApprovalRequestID string  `json:"approval_request_id"`
			Approve           bool    `json:"approve"`
			Reason            *string `json:"reason"`
		}{it.Type, it.ID, it.ApprovalRequestID, it.Approve, reason})
	}
}

// mcpErrorJSON is an mcp_call's error as OpenAI writes it: an object by
// kind (a tool's error carries its text as content).
func mcpErrorJSON(it Item) any {
	switch it.ErrorType {
	case ErrProtocol, ErrHTTP:
		return struct {
			Type    string `json:"type"`
			Code    int64  `json:"code"`
			Message string `json:"message"`
		}{it.ErrorType, it.ErrorCode, *it.Error}
	}
	type text struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	return struct {
		Type    string `json:"type"`
		Content []text `json:"content"`
	}{ErrToolExecution, []text{{"text", *it.Error}}}
}

// FunctionDef is a function offered to the model that is not one of the
// request's function tools (an MCP server's tool, run by the gateway).
type FunctionDef struct {
	Name        string
	Description string
	Parameters  json.RawMessage
}

// appendMCPCall appends an mcp_call as the chat-completions conversation
// sees it: the assistant's tool call, then the tool's answer (its output,
// or its error as text the model can react to).
func appendMCPCall(msgs []chatMessage, it Item) []chatMessage {
	call := chatToolCall{ID: it.ID, Type: "function", Function: chatFunction{Name: it.Name, Arguments: it.Arguments}}
	if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" {
		msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call)
		if s, ok := msgs[n-1].Content.(string); ok && s == "" {
			msgs[n-1].Content = nil
		}
	} else {
		msgs = append(msgs, chatMessage{Role: "assistant", ToolCalls: []chatToolCall{call}})
	}
	content := it.Output
	if it.Error != nil {
		content = "Error: " + *it.Error
	}
	return append(msgs, chatMessage{Role: "tool", ToolCallID: it.ID, Content: content})
}

// ToolKind says what the gateway does with a tool call the model makes.
type ToolKind int

const (
	// KindFunction goes back to the client as a function_call.
	KindFunction ToolKind = iota
	// KindMCP is run by the gateway (an mcp_call).
	KindMCP
	// KindApproval needs the user's approval first (an
	// mcp_approval_request).
	KindApproval
)

// Classifier tells, by the name the model called, what a call is and on
// which server an MCP tool lives.
type Classifier func(name string) (kind ToolKind, server string)

// SetClassifier makes the translator turn the model's tool calls into
// mcp_call and mcp_approval_request items where c says so (nil: every
// call is a function_call).
func (t *Translator) SetClassifier(c Classifier) { t.classify = c }

// Turn is what one model turn produced.
type Turn struct {
	FinishReason string
	Usage        Usage
	HasUsage     bool
	// MCPCalls are the output indexes of the mcp_call items to run, in
	// order; Approvals and Functions count the other calls.
	MCPCalls  []int
	Approvals int
	Functions int
	// Text is what the turn produced, for a usage estimate.
	Text string
}

// BeginTurn marks the start of a model turn.
func (t *Translator) BeginTurn() {
	t.turnStart = len(t.resp.Output)
	t.finish, t.usage, t.hasUsage = "", Usage{}, false
}

// EndTurn closes the turn's open items and reports what it produced. An
// mcp_call item stays in progress until CallDone.
func (t *Translator) EndTurn() ([]Event, Turn) {
	if t.finish == "length" || t.finish == "content_filter" {
		t.closeItemAs(StatusIncomplete)
	} else {
		t.closeItem()
	}
	tr := Turn{FinishReason: t.finish, Usage: t.usage, HasUsage: t.hasUsage}
	var b strings.Builder
	for i := t.turnStart; i < len(t.resp.Output); i++ {
		it := t.resp.Output[i]
		b.WriteString(it.Text())
		b.WriteString(it.Name)
		b.WriteString(it.Arguments)
		switch it.Type {
		case TypeMCPCall:
			tr.MCPCalls = append(tr.MCPCalls, i)
		case TypeMCPApprovalRequest:
			tr.Approvals++
		case TypeFunctionCall:
			tr.Functions++
		}
	}
	tr.Text = b.String()
	return t.take(), tr
}

// Answer adds a whole (not streamed) model turn's answer as output items,
// making the events a stream of it would have made.
func (t *Translator) Answer(a Answer) []Event {
	t.model = a.Model
	if a.Text != "" || a.Refusal != "" {
		t.textDelta(a.Text + a.Refusal)
	}
	for i, c := range a.Calls {
		t.closeItem()
		t.openCall(i, c.ID, c.Name)
		if c.Arguments != "" {
			t.argsDelta(c.Arguments)
		}
	}
	t.finish = a.FinishReason
	t.usage, t.hasUsage = a.Usage, a.HasUsage
	return t.take()
}

// Event payloads of MCP items.
type (
	mcpStatusEvent struct {
		Type        string `json:"type"`
		Sequence    int64  `json:"sequence_number"`
		ItemID      string `json:"item_id"`
		OutputIndex int    `json:"output_index"`
	}
	mcpArgsDoneEvent struct {
		Type        string `json:"type"`
		Sequence    int64  `json:"sequence_number"`
		ItemID      string `json:"item_id"`
		OutputIndex int    `json:"output_index"`
		Arguments   string `json:"arguments"`
	}
)

func (t *Translator) status(typ string, i int) {
	t.emit(typ, mcpStatusEvent{typ, t.next(), t.resp.Output[i].ID, i})
}

// ListTools adds an mcp_list_tools item for server and returns its index;
// ListToolsDone completes it.
func (t *Translator) ListTools(server string) (int, []Event) {
	t.closeItem()
	i := len(t.resp.Output)
	it := Item{Type: TypeMCPListTools, ID: NewID("mcpl"), ServerLabel: server, Tools: []MCPTool{}}
	t.resp.Output = append(t.resp.Output, it)
	t.emit("response.output_item.added", itemEvent{"response.output_item.added", t.next(), i, it})
	t.status("response.mcp_list_tools.in_progress", i)
	return i, t.take()
}

// ListToolsDone completes the mcp_list_tools item i with the tools, or
// with the error (a message for the client, without internals).
func (t *Translator) ListToolsDone(i int, tools []MCPTool, errMsg string) []Event {
	it := &t.resp.Output[i]
	if errMsg != "" {
		it.Error = &errMsg
		t.status("response.mcp_list_tools.failed", i)
	} else {
		it.Tools = tools
		t.status("response.mcp_list_tools.completed", i)
	}
	t.emit("response.output_item.done", itemEvent{"response.output_item.done", t.next(), i, *it})
	return t.take()
}

// AddCall adds an mcp_call item the gateway runs without the model having
// asked in this response (an approved request's call), and returns its
// index.
func (t *Translator) AddCall(server, name, arguments, approvalID string) (int, []Event) {
	t.closeItem()
	i := len(t.resp.Output)
	it := Item{Type: TypeMCPCall, ID: NewID("mcp"), Status: StatusInProgress, ServerLabel: server, Name: name,
		ApprovalRequestID: approvalID}
	t.resp.Output = append(t.resp.Output, it)
	t.emit("response.output_item.added", itemEvent{"response.output_item.added", t.next(), i, it})
	if arguments != "" {
		t.emit("response.mcp_call_arguments.delta", argsDeltaEvent{"response.mcp_call_arguments.delta", t.next(), it.ID, i, arguments})
	}
	t.resp.Output[i].Arguments = arguments
	t.emit("response.mcp_call_arguments.done", mcpArgsDoneEvent{"response.mcp_call_arguments.done", t.next(), it.ID, i, arguments})
	return i, t.take()
}

// CallStarted says the mcp_call item i is being run.
func (t *Translator) CallStarted(i int) []Event {
	t.status("response.mcp_call.in_progress", i)
	return t.take()
}

// CallDone completes the mcp_call item i with the tool's output, or with
// its error (what the model and the client see) when it failed.
func (t *Translator) CallDone(i int, output string, e *CallError) []Event {
	it := &t.resp.Output[i]
	if e != nil {
		msg := e.Message
		it.Error, it.ErrorType, it.ErrorCode, it.Status = &msg, e.Type, e.Code, StatusFailed
		t.status("response.mcp_call.failed", i)
	} else {
		it.Output, it.Status = output, StatusCompleted
		t.status("response.mcp_call.completed", i)
	}
	t.emit("response.output_item.done", itemEvent{"response.output_item.done", t.next(), i, *it})
	return t.take()
}

// CallSkipped completes the mcp_call item i that was not run (a cap was
// reached), with the reason as its error and status incomplete.
func (t *Translator) CallSkipped(i int, reason string) []Event {
	it := &t.resp.Output[i]
	it.Error, it.ErrorType, it.Status = &reason, ErrToolExecution, StatusIncomplete
	t.status("response.mcp_call.failed", i)
	t.emit("response.output_item.done", itemEvent{"response.output_item.done", t.next(), i, *it})
	return t.take()
}

// Incomplete marks the final response incomplete for reason (a cap of the
// tool loop), after Close.
func (r *Response) Incomplete(reason string) {
	r.Status, r.IncompleteDetails = StatusIncomplete, &IncompleteDetails{Reason: reason}
}

// MCPTruncationNote is appended to a tool's output that was cut.
func MCPTruncationNote(kept, total int) string {
	return "\n[output truncated: " + strconv.Itoa(kept) + " of " + strconv.Itoa(total) + " bytes]"
}
