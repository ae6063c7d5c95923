package responses

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/agentapi/agentapi/internal/llm"
)

// ChatOptions are the gateway's settings for one conversion to a
// chat-completions request.
type ChatOptions struct {
	// Model is the model the upstream runs.
	Model string
	// Stream asks for a streamed answer, with usage in the last chunk.
	Stream bool
	// DefaultMaxTokens is sent as max_completion_tokens when the request
	// set no max_output_tokens (the tier's cap); 0 sends nothing.
	DefaultMaxTokens int64
	// ContextTokens bounds the estimated size of the conversation sent
	// upstream; 0 means no bound. Beyond it, truncation "disabled" refuses
	// the request and "auto" drops the oldest items of the chain.
	ContextTokens int64
	// Functions are offered to the model besides the request's function
	// tools: the tools of its MCP servers, which the gateway runs.
	Functions []FunctionDef
}

// Chat is a chat-completions request built from a response's conversation.
type Chat struct {
	// Body is the JSON request body for the upstream.
	Body []byte
	// Dropped counts the oldest history items left out by truncation
	// "auto".
	Dropped int
	// Estimate is the conversation's estimated size in tokens.
	Estimate int64
}

// imageTokens is what an image counts for in the size estimate, about
// what one high-detail tile costs at OpenAI.
const imageTokens = 256

// Wire shapes of a chat-completions request.
type (
	chatRequest struct {
		Model               string            `json:"model"`
		Messages            []chatMessage     `json:"messages"`
		Tools               []chatTool        `json:"tools,omitempty"`
		ToolChoice          any               `json:"tool_choice,omitempty"`
		ParallelToolCalls   *bool             `json:"parallel_tool_calls,omitempty"`
		MaxCompletionTokens int64             `json:"max_completion_tokens,omitempty"`
		Temperature         *float64          `json:"temperature,omitempty"`
		TopP                *float64          `json:"top_p,omitempty"`
		PresencePenalty     *float64          `json:"presence_penalty,omitempty"`
		FrequencyPenalty    *float64          `json:"frequency_penalty,omitempty"`
		ResponseFormat      any               `json:"response_format,omitempty"`
		ReasoningEffort     string            `json:"reasoning_effort,omitempty"`
		Verbosity           string            `json:"verbosity,omitempty"`
		User                string            `json:"user,omitempty"`
		SafetyIdentifier    string            `json:"safety_identifier,omitempty"`
		PromptCacheKey      string            `json:"prompt_cache_key,omitempty"`
		Stream              bool              `json:"stream,omitempty"`
		StreamOptions       *chatStreamOption `json:"stream_options,omitempty"`
	}
	chatStreamOption struct {
		IncludeUsage bool `json:"include_usage"`
	}
	chatMessage struct {
		Role       string         `json:"role"`
		Content    any            `json:"content"`
		ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
		ToolCallID string         `json:"tool_call_id,omitempty"`
	}
	chatPart struct {
		Type     string        `json:"type"`
		Text     string        `json:"text,omitempty"`
		ImageURL *chatImageURL `json:"image_url,omitempty"`
	}
	chatImageURL struct {
		URL    string `json:"url"`
		Detail string `json:"detail,omitempty"`
	}
	chatToolCall struct {
		ID       string       `json:"id"`
		Type     string       `json:"type"`
		Function chatFunction `json:"function"`
	}
	chatFunction struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	chatTool struct {
		Type     string          `json:"type"`
		Function chatFunctionDef `json:"function"`
	}
	chatFunctionDef struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
		Strict      *bool           `json:"strict,omitempty"`
	}
)

// itemTokens estimates one item's size in tokens.
func itemTokens(it Item) int64 {
	n := llm.EstimateTokens(it.Arguments) + llm.EstimateTokens(it.Output) + llm.EstimateTokens(it.Name) + llm.EstimateTokens(it.summary)
	for _, p := range it.Content {
		if p.Type == PartInputImage {
			n += imageTokens
			continue
		}
		n += llm.EstimateTokens(p.Text) + llm.EstimateTokens(p.Refusal)
	}
	return n + 4 // the message's own framing
}

// ChatRequest converts a response's conversation into one chat-completions
// request: the request's instructions as the system message, then the
// chain's history (the input and output items of earlier responses, oldest
// first), then the request's own input.
func ChatRequest(req *Request, history []Item, o ChatOptions) (Chat, error) {
	var out Chat
	var total int64
	if req.Instructions != nil {
		total += llm.EstimateTokens(*req.Instructions)
	}
	for _, it := range req.Input {
		total += itemTokens(it)
	}
	var hist int64
	for _, it := range history {
		hist += itemTokens(it)
	}
	if o.ContextTokens > 0 && total+hist > o.ContextTokens {
		if req.Truncation != "auto" || total > o.ContextTokens {
			return Chat{}, &ParamError{Param: "input", Code: "context_length_exceeded", Message: fmt.Sprintf(
				"The conversation (about %d tokens) exceeds this deployment's context limit of %d tokens; start a new chain, or set truncation to 'auto' to drop its oldest items.",
				total+hist, o.ContextTokens)}
		}
		for len(history) > 0 && total+hist > o.ContextTokens {
			hist -= itemTokens(history[0])
			history = history[1:]
			out.Dropped++
		}
		// A tool's output whose call was dropped cannot open the history.
		for len(history) > 0 && history[0].Type == TypeFunctionCallOutput {
			hist -= itemTokens(history[0])
			history = history[1:]
			out.Dropped++
		}
	}
	out.Estimate = total + hist

	calls := map[string]bool{}
	for _, it := range history {
		if it.Type == TypeFunctionCall {
			calls[it.CallID] = true
		}
	}
	for i, it := range req.Input {
		switch it.Type {
		case TypeFunctionCall:
			calls[it.CallID] = true
		case TypeFunctionCallOutput:
			if !calls[it.CallID] {
				return Chat{}, paramErr("input["+strconv.Itoa(i)+"].call_id",
					"No tool call found for function call output with call_id %s.", firstRunes(it.CallID, 64))
			}
		}
	}

	cr := chatRequest{
		Model:             o.Model,
		Temperature:       req.Temperature,
		TopP:              req.TopP,
		PresencePenalty:   req.PresencePenalty,
		FrequencyPenalty:  req.FrequencyPenalty,
		ReasoningEffort:   req.ReasoningEffort,
		Verbosity:         req.Text.Verbosity,
		ParallelToolCalls: nil,
	}
	if req.Instructions != nil && *req.Instructions != "" {
		cr.Messages = append(cr.Messages, chatMessage{Role: "system", Content: *req.Instructions})
	}
	cr.Messages = appendMessages(cr.Messages, history)
	cr.Messages = appendMessages(cr.Messages, req.Input)
	if len(cr.Messages) == 0 {
		return Chat{}, paramErr("input", "The conversation is empty: give 'input'.")
	}
	for _, t := range req.Tools {
		if t.Type != "function" {
			continue
		}
		def := chatFunctionDef{Name: t.Name, Parameters: t.Parameters, Strict: t.Strict}
		if t.Description != nil {
			def.Description = *t.Description
		}
		cr.Tools = append(cr.Tools, chatTool{Type: "function", Function: def})
	}
	for _, f := range o.Functions {
		cr.Tools = append(cr.Tools, chatTool{Type: "function", Function: chatFunctionDef{Name: f.Name, Description: f.Description, Parameters: f.Parameters}})
	}
	if len(cr.Tools) > 0 {
		cr.ParallelToolCalls = req.ParallelToolCalls
		switch req.ToolChoice.Mode {
		case "":
		case "function":
			cr.ToolChoice = map[string]any{"type": "function", "function": map[string]string{"name": req.ToolChoice.Name}}
		default:
			cr.ToolChoice = req.ToolChoice.Mode
		}
	}
	switch f := req.Text.Format; f.Type {
	case "json_object":
		cr.ResponseFormat = map[string]string{"type": "json_object"}
	case "json_schema":
		js := map[string]any{"name": f.Name, "schema": f.Schema}
		if f.Description != "" {
			js["description"] = f.Description
		}
		if f.Strict != nil {
			js["strict"] = *f.Strict
		}
		cr.ResponseFormat = map[string]any{"type": "json_schema", "json_schema": js}
	}
	if req.MaxOutputTokens != nil {
		cr.MaxCompletionTokens = *req.MaxOutputTokens
	} else if o.DefaultMaxTokens > 0 {
		cr.MaxCompletionTokens = o.DefaultMaxTokens
	}
	if req.User != nil {
		cr.User = *req.User
	}
	if req.SafetyIdentifier != nil {
		cr.SafetyIdentifier = *req.SafetyIdentifier
	}
	if req.PromptCacheKey != nil {
		cr.PromptCacheKey = *req.PromptCacheKey
	}
	if o.Stream {
		cr.Stream = true
		cr.StreamOptions = &chatStreamOption{IncludeUsage: true}
	}
	body, err := json.Marshal(cr)
	if err != nil {
		return Chat{}, fmt.Errorf("responses: encode chat request: %w", err)
	}
	out.Body = body
	return out, nil
}

// appendMessages appends items as chat messages. Consecutive function
// calls become one assistant message with several tool calls, joined to
// the assistant message just before them if there is one.
func appendMessages(msgs []chatMessage, items []Item) []chatMessage {
	for _, it := range items {
		switch it.Type {
		case TypeMessage:
			msgs = append(msgs, messageOf(it))
		case TypeFunctionCall:
			call := chatToolCall{ID: it.CallID, Type: "function", Function: chatFunction{Name: it.Name, Arguments: it.Arguments}}
			if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call)
				if s, ok := msgs[n-1].Content.(string); ok && s == "" {
					msgs[n-1].Content = nil
				}
				continue
			}
			msgs = append(msgs, chatMessage{Role: "assistant", ToolCalls: []chatToolCall{call}})
		case TypeFunctionCallOutput:
			msgs = append(msgs, chatMessage{Role: "tool", ToolCallID: it.CallID, Content: it.Output})
		case TypeMCPCall:
			msgs = appendMCPCall(msgs, it)
		case TypeCompaction:
			// Sealer.Unseal has opened it; one that was not opened
			// says nothing rather than something unverified.
			if it.summary != "" {
				msgs = append(msgs, chatMessage{Role: "system", Content: compactionMessage(it.summary)})
			}
		}
	}
	return msgs
}

// messageOf converts a message item. Developer messages go as system
// messages, which every chat-completions upstream knows; content that is
// all text goes as a plain string for the same reason.
func messageOf(it Item) chatMessage {
	role := it.Role
	if role == "developer" {
		role = "system"
	}
	hasImage := false
	for _, p := range it.Content {
		hasImage = hasImage || p.Type == PartInputImage
	}
	if !hasImage || role != "user" {
		var b strings.Builder
		for _, p := range it.Content {
			switch p.Type {
			case PartInputText, PartOutputText:
				b.WriteString(p.Text)
			case PartRefusal:
				b.WriteString(p.Refusal)
			}
		}
		return chatMessage{Role: role, Content: b.String()}
	}
	parts := make([]chatPart, 0, len(it.Content))
	for _, p := range it.Content {
		if p.Type == PartInputImage {
			parts = append(parts, chatPart{Type: "image_url", ImageURL: &chatImageURL{URL: p.ImageURL, Detail: p.Detail}})
			continue
		}
		parts = append(parts, chatPart{Type: "text", Text: p.Text})
	}
	return chatMessage{Role: role, Content: parts}
}
