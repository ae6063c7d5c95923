package responses

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Bounds on one request, beyond the body size httpapi enforces.
const (
	maxInputItems    = 4096
	maxParts         = 256
	maxTools         = 128
	maxToolNameBytes = 64
	maxMetadataKeys  = 16
	maxMetadataKey   = 64
	maxMetadataValue = 512
	maxIDBytes       = 128
	maxModelBytes    = 200
	maxShortString   = 512
)

// ParamError is a request refused because of one parameter; httpapi
// answers it with 400 and OpenAI's error object naming Param.
type ParamError struct {
	Param   string
	Code    string // "" or a machine-readable code such as "unknown_parameter"
	Message string
}

func (e *ParamError) Error() string { return e.Message }

func paramErr(param, format string, args ...any) *ParamError {
	return &ParamError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// ErrPreviousNotFound is the one answer to a previous_response_id that
// cannot be continued: unknown, deleted, expired, never stored, or
// another user's. Telling these apart would let a caller probe for ids.
func ErrPreviousNotFound(id string) *ParamError {
	return &ParamError{Param: "previous_response_id", Code: "previous_response_not_found",
		Message: fmt.Sprintf("Previous response with id '%s' not found.", id)}
}

// Request is a parsed and checked POST /v1/responses body.
type Request struct {
	// Model is "" when the body named none (the deployment's default
	// applies).
	Model              string
	Input              []Item
	Instructions       *string
	PreviousResponseID string
	// Conversation is the id of the conversation the response reads its
	// context from and appends its input and output to; "" for none.
	Conversation string
	Store        bool
	Stream       bool
	Tools        []Tool
	// ToolChoice is "auto", "none", "required", or a function.
	ToolChoice         ToolChoice
	ParallelToolCalls  *bool
	MaxOutputTokens    *int64
	MaxToolCalls       *int64
	Temperature        *float64
	TopP               *float64
	PresencePenalty    *float64
	FrequencyPenalty   *float64
	Text               TextConfig
	Metadata           map[string]string
	Truncation         string
	User               *string
	SafetyIdentifier   *string
	PromptCacheKey     *string
	ReasoningEffort    string
	textFormatExplicit bool
}

// ToolChoice is tool_choice: Mode "auto", "none" or "required", or Mode
// "function" with the function's Name.
type ToolChoice struct {
	Mode string
	Name string
}

// MarshalJSON writes the choice as the response echoes it.
func (c ToolChoice) MarshalJSON() ([]byte, error) {
	if c.Mode == "function" {
		return json.Marshal(struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}{"function", c.Name})
	}
	if c.Mode == "" {
		return []byte(`"auto"`), nil
	}
	return json.Marshal(c.Mode)
}

// unsupported names parameters of the Responses API this gateway does not
// implement; asking for them is a 400 naming them, never silently ignored.
var unsupported = map[string]string{
	"prompt": "Prompt templates are not supported.",
}

// Parse reads a POST /v1/responses body. Any problem is a *ParamError
// naming the parameter; nothing else is returned as an error.
func Parse(body []byte) (*Request, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, &ParamError{Message: "The request body must be a JSON object."}
	}
	if dec.More() {
		return nil, &ParamError{Message: "The request body must contain a single JSON object."}
	}
	req := &Request{Store: true, Truncation: "disabled", Text: TextConfig{Format: TextFormat{Type: "text"}}}
	// Parameters are handled in a fixed order, so the error a body with
	// several problems gets does not depend on map order.
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, name := range names {
		raw := fields[name]
		if isNull(raw) {
			continue
		}
		if err := req.set(name, raw); err != nil {
			return nil, err
		}
	}
	if req.Input == nil && req.PreviousResponseID == "" {
		if _, ok := fields["input"]; !ok {
			return nil, &ParamError{Param: "input", Code: "missing_required_parameter", Message: "Missing required parameter: 'input'."}
		}
	}
	if req.Conversation != "" && req.PreviousResponseID != "" {
		return nil, paramErr("conversation", "'conversation' and 'previous_response_id' cannot be used together.")
	}
	if req.ToolChoice.Mode == "function" {
		found := false
		for _, t := range req.Tools {
			found = found || t.Name == req.ToolChoice.Name
		}
		if !found {
			return nil, paramErr("tool_choice", "Tool choice '%s' not found in 'tools' parameter.", req.ToolChoice.Name)
		}
	}
	if req.ToolChoice.Mode == "required" && len(req.Tools) == 0 {
		return nil, paramErr("tool_choice", "Tool choice 'required' needs at least one tool in 'tools'.")
	}
	return req, nil
}

// set reads one top-level parameter.
func (req *Request) set(name string, raw json.RawMessage) error {
	var err error
	switch name {
	case "model":
		var s string
		if err = strictString(raw, &s); err == nil && (s == "" || len(s) > maxModelBytes || strings.ContainsAny(s, " \t\r\n")) {
			err = errors.New("bad model")
		}
		if err != nil {
			return paramErr(name, "'model' must be a model name of at most %d bytes without spaces.", maxModelBytes)
		}
		req.Model = s
	case "input":
		req.Input, err = parseInput(raw)
		return err
	case "conversation":
		var id string
		if strictString(raw, &id) != nil {
			var obj struct {
				ID string `json:"id"`
			}
			if strictObject(raw, &obj) != nil {
				return paramErr(name, "'conversation' must be a conversation id or {\"id\": ...}.")
			}
			id = obj.ID
		}
		if id == "" || len(id) > maxIDBytes {
			return paramErr(name, "'conversation' must be a conversation id of at most %d bytes.", maxIDBytes)
		}
		req.Conversation = id
	case "instructions":
		var s string
		if err := strictString(raw, &s); err != nil {
			return paramErr(name, "'instructions' must be a string.")
		}
		req.Instructions = &s
	case "previous_response_id":
		var s string
		if err := strictString(raw, &s); err != nil || s == "" || len(s) > maxIDBytes {
			return paramErr(name, "'previous_response_id' must be a response id.")
		}
		req.PreviousResponseID = s
	case "store":
		return boolParam(name, raw, &req.Store)
	case "stream":
		return boolParam(name, raw, &req.Stream)
	case "background":
		var b bool
		if err := boolParam(name, raw, &b); err != nil {
			return err
		}
		if b {
			return paramErr(name, "Background responses are not supported; leave 'background' false.")
		}
	case "parallel_tool_calls":
		var b bool
		if err := boolParam(name, raw, &b); err != nil {
			return err
		}
		req.ParallelToolCalls = &b
	case "stream_options":
		var o struct {
			IncludeObfuscation *bool `json:"include_obfuscation"`
		}
		if err := strictObject(raw, &o); err != nil {
			return paramErr(name, "'stream_options' may only set include_obfuscation (a boolean).")
		}
	case "tools":
		req.Tools, err = parseTools(raw)
		return err
	case "tool_choice":
		req.ToolChoice, err = parseToolChoice(raw)
		return err
	case "max_output_tokens":
		n, err := intParam(name, raw, 16, 1<<40)
		if err != nil {
			return err
		}
		req.MaxOutputTokens = &n
	case "max_tool_calls":
		n, err := intParam(name, raw, 1, 1<<20)
		if err != nil {
			return err
		}
		req.MaxToolCalls = &n
	case "temperature":
		req.Temperature, err = floatParam(name, raw, 0, 2)
		return err
	case "top_p":
		req.TopP, err = floatParam(name, raw, 0, 1)
		return err
	case "presence_penalty":
		req.PresencePenalty, err = floatParam(name, raw, -2, 2)
		return err
	case "frequency_penalty":
		req.FrequencyPenalty, err = floatParam(name, raw, -2, 2)
		return err
	case "top_logprobs":
		n, err := intParam(name, raw, 0, 20)
		if err != nil {
			return err
		}
		if n != 0 {
			return paramErr(name, "'top_logprobs' is not supported; leave it 0.")
		}
	case "text":
		return req.parseText(raw)
	case "metadata":
		req.Metadata, err = parseMetadata(raw)
		return err
	case "truncation":
		var s string
		if err := strictString(raw, &s); err != nil || (s != "auto" && s != "disabled") {
			return paramErr(name, "'truncation' must be 'auto' or 'disabled'.")
		}
		req.Truncation = s
	case "user", "safety_identifier", "prompt_cache_key":
		var s string
		if err := strictString(raw, &s); err != nil || len(s) > maxShortString {
			return paramErr(name, "'%s' must be a string of at most %d bytes.", name, maxShortString)
		}
		switch name {
		case "user":
			req.User = &s
		case "safety_identifier":
			req.SafetyIdentifier = &s
		default:
			req.PromptCacheKey = &s
		}
	case "service_tier":
		var s string
		if err := strictString(raw, &s); err != nil || (s != "auto" && s != "default") {
			return paramErr(name, "'service_tier' must be 'auto' or 'default'.")
		}
	case "include":
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return paramErr(name, "'include' must be an array of strings.")
		}
		if len(list) > 0 {
			return paramErr(name, "'include' value '%s' is not supported.", firstRunes(list[0], 64))
		}
	case "reasoning":
		var r struct {
			Effort *string `json:"effort"`
		}
		if err := strictObject(raw, &r); err != nil {
			return paramErr(name, "'reasoning' may only set effort.")
		}
		if r.Effort != nil {
			switch *r.Effort {
			case "minimal", "low", "medium", "high", "none", "xhigh":
				req.ReasoningEffort = *r.Effort
			default:
				return paramErr("reasoning.effort", "'reasoning.effort' must be one of none, minimal, low, medium, high, xhigh.")
			}
		}
	default:
		if msg, ok := unsupported[name]; ok && msg != "" {
			return &ParamError{Param: name, Code: "unsupported_parameter", Message: fmt.Sprintf("Unsupported parameter: '%s'. %s", name, msg)}
		}
		return &ParamError{Param: firstRunes(name, 64), Code: "unknown_parameter", Message: fmt.Sprintf("Unknown parameter: '%s'.", firstRunes(name, 64))}
	}
	return nil
}

func (req *Request) parseText(raw json.RawMessage) error {
	var t struct {
		Format    json.RawMessage `json:"format"`
		Verbosity *string         `json:"verbosity"`
	}
	if err := strictObject(raw, &t); err != nil {
		return paramErr("text", "'text' may set format and verbosity only.")
	}
	if t.Verbosity != nil {
		switch *t.Verbosity {
		case "low", "medium", "high":
			req.Text.Verbosity = *t.Verbosity
		default:
			return paramErr("text.verbosity", "'text.verbosity' must be low, medium or high.")
		}
	}
	if len(t.Format) == 0 || isNull(t.Format) {
		return nil
	}
	var f TextFormat
	if err := strictObject(t.Format, &f); err != nil {
		return paramErr("text.format", "'text.format' must be an object with a type of text, json_object or json_schema.")
	}
	switch f.Type {
	case "text", "json_object":
		if f.Name != "" || len(f.Schema) > 0 {
			return paramErr("text.format", "'text.format' of type %s takes no name or schema.", f.Type)
		}
	case "json_schema":
		if f.Name == "" || len(f.Name) > maxToolNameBytes {
			return paramErr("text.format.name", "'text.format.name' is required for json_schema (at most %d bytes).", maxToolNameBytes)
		}
		if len(f.Schema) == 0 || bytes.TrimSpace(f.Schema)[0] != '{' {
			return paramErr("text.format.schema", "'text.format.schema' must be a JSON schema object.")
		}
	default:
		return paramErr("text.format.type", "'text.format.type' must be text, json_object or json_schema.")
	}
	req.Text.Format = f
	req.textFormatExplicit = true
	return nil
}

func parseTools(raw json.RawMessage) ([]Tool, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, paramErr("tools", "'tools' must be an array.")
	}
	if len(list) > maxTools {
		return nil, paramErr("tools", "'tools' may list at most %d tools.", maxTools)
	}
	tools := make([]Tool, 0, len(list))
	seen := map[string]bool{}
	for i, el := range list {
		p := "tools[" + strconv.Itoa(i) + "]"
		var probe struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(el, &probe) == nil && probe.Type == ToolMCP {
			t, err := parseMCPTool(el, p)
			if err != nil {
				return nil, err
			}
			if seen["mcp:"+t.Name] {
				return nil, paramErr(p+".server_label", "Server label '%s' appears more than once.", t.Name)
			}
			seen["mcp:"+t.Name] = true
			tools = append(tools, t)
			continue
		}
		var t struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Description *string         `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
			Strict      *bool           `json:"strict"`
		}
		if err := strictObject(el, &t); err != nil {
			var typ struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(el, &typ) == nil && typ.Type != "" && typ.Type != "function" {
				return nil, &ParamError{Param: p + ".type", Code: "unsupported_parameter",
					Message: fmt.Sprintf("Tools of type '%s' are not supported; only function and mcp tools are.", firstRunes(typ.Type, 64))}
			}
			return nil, paramErr(p, "'%s' must be a function tool with type, name, description, parameters and strict only.", p)
		}
		if t.Type != "function" {
			return nil, &ParamError{Param: p + ".type", Code: "unsupported_parameter",
				Message: fmt.Sprintf("Tools of type '%s' are not supported; only function and mcp tools are.", firstRunes(t.Type, 64))}
		}
		if !validToolName(t.Name) {
			return nil, paramErr(p+".name", "'%s.name' must be 1 to %d letters, digits, underscores or dashes.", p, maxToolNameBytes)
		}
		if seen[t.Name] {
			return nil, paramErr(p+".name", "Tool name '%s' appears more than once.", t.Name)
		}
		seen[t.Name] = true
		if isNull(t.Parameters) {
			t.Parameters = nil
		}
		if len(t.Parameters) > 0 && bytes.TrimSpace(t.Parameters)[0] != '{' {
			return nil, paramErr(p+".parameters", "'%s.parameters' must be a JSON schema object.", p)
		}
		if len(t.Parameters) == 0 {
			t.Parameters = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		strict := true // OpenAI's default for function tools in the Responses API
		if t.Strict != nil {
			strict = *t.Strict
		}
		tools = append(tools, Tool{Type: "function", Name: t.Name, Description: t.Description, Parameters: compact(t.Parameters), Strict: &strict})
	}
	return tools, nil
}

func validToolName(s string) bool {
	if s == "" || len(s) > maxToolNameBytes {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func parseToolChoice(raw json.RawMessage) (ToolChoice, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto", "none", "required":
			return ToolChoice{Mode: s}, nil
		}
		return ToolChoice{}, paramErr("tool_choice", "'tool_choice' must be auto, none, required or a function.")
	}
	var f struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if err := strictObject(raw, &f); err != nil || f.Type != "function" || !validToolName(f.Name) {
		return ToolChoice{}, paramErr("tool_choice", "'tool_choice' must be auto, none, required or {\"type\":\"function\",\"name\":...}.")
	}
	return ToolChoice{Mode: "function", Name: f.Name}, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, paramErr("metadata", "'metadata' must be an object of string values.")
	}
	if len(m) > maxMetadataKeys {
		return nil, paramErr("metadata", "'metadata' may have at most %d keys.", maxMetadataKeys)
	}
	for k, v := range m {
		if len(k) > maxMetadataKey || len(v) > maxMetadataValue {
			return nil, paramErr("metadata", "'metadata' keys are at most %d and values at most %d characters.", maxMetadataKey, maxMetadataValue)
		}
	}
	return m, nil
}

// parseInput reads input: a string (one user message) or an array of
// items.
func parseInput(raw json.RawMessage) ([]Item, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []Item{{Type: TypeMessage, Role: "user", Content: []Part{{Type: PartInputText, Text: s}}}}, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, paramErr("input", "'input' must be a string or an array of items.")
	}
	if len(list) > maxInputItems {
		return nil, paramErr("input", "'input' may have at most %d items.", maxInputItems)
	}
	items := make([]Item, 0, len(list))
	for i, el := range list {
		it, err := parseItem(el, "input["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

// itemWire is every field an input item may have.
type itemWire struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Status    string          `json:"status"`
	Role      string          `json:"role"`
	Phase     string          `json:"phase"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments *string         `json:"arguments"`
	Output    json.RawMessage `json:"output"`
	// EncryptedContent is a compaction item's sealed summary.
	EncryptedContent *string `json:"encrypted_content"`
	CreatedBy        string  `json:"created_by"`
}

// parseItem reads one input item; p is its parameter path for errors.
func parseItem(raw json.RawMessage, p string) (Item, error) {
	if it, ok, err := parseMCPItem(raw, p); ok {
		return it, err
	}
	var w itemWire
	if err := strictObject(raw, &w); err != nil {
		var probe struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.Type != "" && !knownItemType(probe.Type) {
			return Item{}, unsupportedItem(p, probe.Type)
		}
		return Item{}, paramErr(p, "'%s' is not a valid item: %s.", p, fieldProblem(err))
	}
	if len(w.ID) > maxIDBytes || len(w.CallID) > maxIDBytes {
		return Item{}, paramErr(p+".id", "Item ids are at most %d bytes.", maxIDBytes)
	}
	if w.Type == "" && w.Role != "" {
		w.Type = TypeMessage
	}
	switch w.Type {
	case TypeMessage:
		return parseMessage(w, p)
	case TypeFunctionCall:
		if w.CallID == "" || !validToolName(w.Name) || w.Arguments == nil {
			return Item{}, paramErr(p, "'%s' (function_call) needs call_id, name and arguments.", p)
		}
		if w.Role != "" || len(w.Content) > 0 || len(w.Output) > 0 {
			return Item{}, paramErr(p, "'%s' (function_call) takes call_id, name, arguments, id and status only.", p)
		}
		return Item{Type: w.Type, ID: w.ID, Status: itemStatus(w.Status), CallID: w.CallID, Name: w.Name, Arguments: *w.Arguments}, nil
	case TypeFunctionCallOutput:
		if w.CallID == "" || len(w.Output) == 0 {
			return Item{}, paramErr(p, "'%s' (function_call_output) needs call_id and output.", p)
		}
		if w.Role != "" || len(w.Content) > 0 || w.Name != "" || w.Arguments != nil {
			return Item{}, paramErr(p, "'%s' (function_call_output) takes call_id, output, id and status only.", p)
		}
		out, err := outputText(w.Output, p+".output")
		if err != nil {
			return Item{}, err
		}
		return Item{Type: w.Type, ID: w.ID, Status: itemStatus(w.Status), CallID: w.CallID, Output: out}, nil
	case TypeCompaction:
		if w.EncryptedContent == nil || *w.EncryptedContent == "" {
			return Item{}, paramErr(p+".encrypted_content", "'%s' (compaction) needs encrypted_content.", p)
		}
		if len(*w.EncryptedContent) > maxEncryptedContent {
			return Item{}, paramErr(p+".encrypted_content", "'%s.encrypted_content' is longer than %d bytes.", p, maxEncryptedContent)
		}
		if w.Role != "" || len(w.Content) > 0 || w.CallID != "" || w.Name != "" || w.Arguments != nil || len(w.Output) > 0 {
			return Item{}, paramErr(p, "'%s' (compaction) takes encrypted_content and id only.", p)
		}
		id := w.ID
		if id == "" {
			id = NewID("cmp")
		}
		return Item{Type: TypeCompaction, ID: id, EncryptedContent: *w.EncryptedContent}, nil
	case "":
		return Item{}, paramErr(p+".type", "'%s.type' is required.", p)
	default:
		return Item{}, unsupportedItem(p, w.Type)
	}
}

func knownItemType(t string) bool {
	return t == TypeMessage || t == TypeFunctionCall || t == TypeFunctionCallOutput || t == TypeCompaction || isMCPItem(t)
}

func unsupportedItem(p, typ string) *ParamError {
	return &ParamError{Param: p + ".type", Code: "unsupported_parameter",
		Message: fmt.Sprintf("Input items of type '%s' are not supported.", firstRunes(typ, 64))}
}

func itemStatus(s string) string {
	switch s {
	case StatusInProgress, StatusIncomplete:
		return s
	}
	return StatusCompleted
}

func parseMessage(w itemWire, p string) (Item, error) {
	switch w.Role {
	case "user", "system", "developer", "assistant":
	default:
		return Item{}, paramErr(p+".role", "'%s.role' must be user, system, developer or assistant.", p)
	}
	if w.CallID != "" || w.Name != "" || w.Arguments != nil || len(w.Output) > 0 {
		return Item{}, paramErr(p, "'%s' (message) takes role, content, id, status and phase only.", p)
	}
	if w.Phase != "" && (w.Role != "assistant" || (w.Phase != "commentary" && w.Phase != "final_answer")) {
		return Item{}, paramErr(p+".phase", "'%s.phase' is commentary or final_answer, on assistant messages only.", p)
	}
	it := Item{Type: TypeMessage, ID: w.ID, Status: itemStatus(w.Status), Role: w.Role, Phase: w.Phase}
	textType := PartInputText
	if w.Role == "assistant" {
		textType = PartOutputText
	}
	var s string
	if json.Unmarshal(w.Content, &s) == nil {
		it.Content = []Part{{Type: textType, Text: s}}
		return it, nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(w.Content, &parts); err != nil {
		return Item{}, paramErr(p+".content", "'%s.content' must be a string or an array of content parts.", p)
	}
	if len(parts) > maxParts {
		return Item{}, paramErr(p+".content", "'%s.content' may have at most %d parts.", p, maxParts)
	}
	for j, raw := range parts {
		pp := p + ".content[" + strconv.Itoa(j) + "]"
		var c struct {
			Type        string          `json:"type"`
			Text        *string         `json:"text"`
			ImageURL    *string         `json:"image_url"`
			Detail      string          `json:"detail"`
			FileID      *string         `json:"file_id"`
			Refusal     *string         `json:"refusal"`
			Annotations json.RawMessage `json:"annotations"`
			Logprobs    json.RawMessage `json:"logprobs"`
		}
		if err := strictObject(raw, &c); err != nil {
			return Item{}, paramErr(pp, "'%s' is not a valid content part: %s.", pp, fieldProblem(err))
		}
		switch c.Type {
		case PartInputText, PartOutputText, "text":
			if c.Text == nil || c.ImageURL != nil || c.FileID != nil || c.Refusal != nil {
				return Item{}, paramErr(pp+".text", "'%s' needs text (and nothing else of another part type).", pp)
			}
			if c.Type == PartOutputText && w.Role != "assistant" {
				return Item{}, paramErr(pp+".type", "output_text parts belong to assistant messages.")
			}
			it.Content = append(it.Content, Part{Type: textType, Text: *c.Text})
		case PartInputImage:
			if w.Role == "assistant" {
				return Item{}, paramErr(pp+".type", "Assistant messages cannot contain images.")
			}
			if c.FileID != nil {
				return Item{}, &ParamError{Param: pp + ".file_id", Code: "unsupported_parameter", Message: "Images by file_id are not supported; send image_url (a URL or a data: URL)."}
			}
			if c.ImageURL == nil || *c.ImageURL == "" {
				return Item{}, paramErr(pp+".image_url", "'%s.image_url' is required.", pp)
			}
			u := *c.ImageURL
			if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "data:image/") {
				return Item{}, paramErr(pp+".image_url", "'%s.image_url' must be an http(s) URL or a data:image/ URL.", pp)
			}
			switch c.Detail {
			case "", "auto", "low", "high":
			default:
				return Item{}, paramErr(pp+".detail", "'%s.detail' must be auto, low or high.", pp)
			}
			it.Content = append(it.Content, Part{Type: PartInputImage, ImageURL: u, Detail: c.Detail})
		case PartRefusal:
			if w.Role != "assistant" || c.Refusal == nil {
				return Item{}, paramErr(pp, "Refusal parts belong to assistant messages and need refusal.")
			}
			it.Content = append(it.Content, Part{Type: PartRefusal, Refusal: *c.Refusal})
		default:
			return Item{}, &ParamError{Param: pp + ".type", Code: "unsupported_parameter",
				Message: fmt.Sprintf("Content parts of type '%s' are not supported.", firstRunes(c.Type, 64))}
		}
	}
	return it, nil
}

// outputText reads a function_call_output's output: a string, or an
// array of input_text parts (joined).
func outputText(raw json.RawMessage, p string) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", paramErr(p, "'%s' must be a string or an array of input_text parts.", p)
	}
	var b strings.Builder
	for j, part := range parts {
		if part.Type != PartInputText {
			return "", &ParamError{Param: p + "[" + strconv.Itoa(j) + "].type", Code: "unsupported_parameter",
				Message: "Only input_text parts are supported in a function_call_output."}
		}
		b.WriteString(part.Text)
	}
	return b.String(), nil
}

// strictString decodes a JSON string, refusing other types.
func strictString(raw json.RawMessage, s *string) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, s)
}

// strictObject decodes a JSON object into v, refusing unknown fields.
func strictObject(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("not an object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// fieldProblem words a decoding error without echoing the value.
func fieldProblem(err error) string {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + firstRunes(f, 66)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "field " + te.Field + " has the wrong type"
	}
	if msg == "not an object" {
		return "not an object"
	}
	return "malformed"
}

func boolParam(name string, raw json.RawMessage, dst *bool) error {
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		return paramErr(name, "'%s' must be a boolean.", name)
	}
	return nil
}

func intParam(name string, raw json.RawMessage, lo, hi int64) (int64, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != float64(int64(f)) || int64(f) < lo || int64(f) > hi {
		return 0, paramErr(name, "'%s' must be an integer from %d to %d.", name, lo, hi)
	}
	return int64(f), nil
}

func floatParam(name string, raw json.RawMessage, lo, hi float64) (*float64, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f < lo || f > hi {
		return nil, paramErr(name, "'%s' must be a number from %g to %g.", name, lo, hi)
	}
	return &f, nil
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// firstRunes is at most n leading code points of s, for echoing a
// client's value in a message.
func firstRunes(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}
