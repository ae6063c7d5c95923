package responses

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/llm"
)

// NewResponse is the response to req before the model has run: status
// in_progress, no output, every setting echoed as the Response object
// shows it.
func NewResponse(req *Request, id, model string, createdAt time.Time) *Response {
	r := &Response{
		ID:                id,
		Object:            "response",
		CreatedAt:         createdAt.Unix(),
		Status:            StatusInProgress,
		Model:             model,
		Instructions:      req.Instructions,
		Output:            []Item{},
		Tools:             req.Tools,
		Truncation:        req.Truncation,
		ParallelToolCalls: true,
		Text:              req.Text,
		TopP:              1,
		Temperature:       1,
		Reasoning:         json.RawMessage("null"),
		MaxOutputTokens:   req.MaxOutputTokens,
		MaxToolCalls:      req.MaxToolCalls,
		Store:             req.Store,
		ServiceTier:       "default",
		Metadata:          req.Metadata,
		SafetyIdentifier:  req.SafetyIdentifier,
		PromptCacheKey:    req.PromptCacheKey,
		User:              req.User,
	}
	if r.Tools == nil {
		r.Tools = []Tool{}
	}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	r.ToolChoice, _ = req.ToolChoice.MarshalJSON()
	if req.PreviousResponseID != "" {
		prev := req.PreviousResponseID
		r.PreviousResponseID = &prev
	}
	if req.ParallelToolCalls != nil {
		r.ParallelToolCalls = *req.ParallelToolCalls
	}
	if req.TopP != nil {
		r.TopP = *req.TopP
	}
	if req.Temperature != nil {
		r.Temperature = *req.Temperature
	}
	if req.PresencePenalty != nil {
		r.PresencePenalty = *req.PresencePenalty
	}
	if req.FrequencyPenalty != nil {
		r.FrequencyPenalty = *req.FrequencyPenalty
	}
	if req.ReasoningEffort != "" {
		r.Reasoning, _ = json.Marshal(map[string]any{"effort": req.ReasoningEffort, "summary": nil})
	}
	return r
}

// Answer is what a chat-completions answer says, in the terms a Response
// needs.
type Answer struct {
	Text         string
	Refusal      string
	Calls        []Call
	FinishReason string
	Usage        Usage
	HasUsage     bool
	Model        string
}

// Call is one tool call of an answer.
type Call struct {
	ID        string
	Name      string
	Arguments string
}

// chatCompletion is the part of a chat.completion the conversion reads.
type chatCompletion struct {
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content   json.RawMessage `json:"content"`
			Refusal   *string         `json:"refusal"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
}

// chatUsage is a chat-completions usage object with its details.
type chatUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func (c *chatUsage) usage() Usage {
	var u Usage
	u.InputTokens, u.OutputTokens, u.TotalTokens = c.PromptTokens, c.CompletionTokens, c.TotalTokens
	if u.TotalTokens == 0 {
		u.TotalTokens = u.InputTokens + u.OutputTokens
	}
	if c.PromptTokensDetails != nil {
		u.InputTokensDetails.CachedTokens = c.PromptTokensDetails.CachedTokens
	}
	if c.CompletionTokensDetails != nil {
		u.OutputTokensDetails.ReasoningTokens = c.CompletionTokensDetails.ReasoningTokens
	}
	return u
}

// ParseCompletion reads a chat.completion answer.
func ParseCompletion(body []byte) (Answer, error) {
	var c chatCompletion
	if err := json.Unmarshal(body, &c); err != nil {
		return Answer{}, fmt.Errorf("responses: read chat completion: %w", err)
	}
	if len(c.Choices) == 0 {
		return Answer{}, fmt.Errorf("responses: read chat completion: no choices")
	}
	ch := c.Choices[0]
	a := Answer{FinishReason: ch.FinishReason, Model: c.Model}
	a.Text = contentString(ch.Message.Content)
	if ch.Message.Refusal != nil {
		a.Refusal = *ch.Message.Refusal
	}
	for _, tc := range ch.Message.ToolCalls {
		a.Calls = append(a.Calls, Call{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	if c.Usage != nil {
		a.Usage, a.HasUsage = c.Usage.usage(), true
	}
	return a, nil
}

// contentString is a message content's text: a string, or the text parts
// of an array.
func contentString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" || p.Type == "output_text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// Complete fills the response from a whole answer: its output items (a
// message when there is text or no tool call, then a function_call per
// tool call), usage and final status.
func (r *Response) Complete(a Answer, now time.Time) {
	if a.Text != "" || a.Refusal != "" || len(a.Calls) == 0 {
		msg := Item{Type: TypeMessage, ID: NewID("msg"), Status: StatusCompleted, Role: "assistant"}
		if a.Text != "" || a.Refusal == "" {
			msg.Content = append(msg.Content, Part{Type: PartOutputText, Text: a.Text})
		}
		if a.Refusal != "" {
			msg.Content = append(msg.Content, Part{Type: PartRefusal, Refusal: a.Refusal})
		}
		r.Output = append(r.Output, msg)
	}
	for _, c := range a.Calls {
		r.Output = append(r.Output, Item{Type: TypeFunctionCall, ID: NewID("fc"), Status: StatusCompleted,
			CallID: callID(c.ID), Name: c.Name, Arguments: c.Arguments})
	}
	r.Finish(a.FinishReason, a.Usage, now)
}

// callID is the upstream's tool-call id, or a new one when it gave none
// (some local upstreams do not).
func callID(id string) string {
	if id == "" {
		return NewID("call")
	}
	return id
}

// Finish sets the final status from the upstream's finish reason, drops
// function calls beyond max_tool_calls, and records usage and the time.
func (r *Response) Finish(finishReason string, u Usage, now time.Time) {
	if r.MaxToolCalls != nil {
		n, kept := int64(0), r.Output[:0]
		for _, it := range r.Output {
			if it.Type == TypeFunctionCall {
				if n >= *r.MaxToolCalls {
					continue
				}
				n++
			}
			kept = append(kept, it)
		}
		r.Output = kept
	}
	switch finishReason {
	case "length":
		r.Status, r.IncompleteDetails = StatusIncomplete, &IncompleteDetails{Reason: "max_output_tokens"}
	case "content_filter":
		r.Status, r.IncompleteDetails = StatusIncomplete, &IncompleteDetails{Reason: "content_filter"}
	default:
		r.Status = StatusCompleted
	}
	if r.Status == StatusIncomplete {
		for i := range r.Output {
			if r.Output[i].Type == TypeMessage {
				r.Output[i].Status = StatusIncomplete
			}
		}
	}
	r.Usage = &u
	at := now.Unix()
	r.CompletedAt = &at
}

// Fail marks the response failed with a code and a message that must not
// carry internals (it is stored and shown to the client).
func (r *Response) Fail(code, message string, u Usage, now time.Time) {
	r.Status = StatusFailed
	r.Error = &Error{Code: code, Message: message}
	r.Usage = &u
	at := now.Unix()
	r.CompletedAt = &at
}

// FromLLMUsage is the Responses usage of a bare token count.
func FromLLMUsage(u llm.Usage) Usage {
	var out Usage
	out.InputTokens, out.OutputTokens, out.TotalTokens = u.PromptTokens, u.CompletionTokens, u.TotalTokens
	if out.TotalTokens == 0 {
		out.TotalTokens = out.InputTokens + out.OutputTokens
	}
	return out
}

// LLMUsage is the bare token count of a Responses usage, for budgets and
// usage records.
func (u Usage) LLMUsage() llm.Usage {
	return llm.Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.TotalTokens}
}

// OutputText is the concatenated text of the response's output messages.
func (r *Response) OutputText() string {
	var b strings.Builder
	for _, it := range r.Output {
		if it.Type == TypeMessage {
			b.WriteString(it.Text())
		}
	}
	return b.String()
}

// History is what a response adds to its chain's conversation: its input
// items, then its output items.
func History(input []Item, r *Response) []Item {
	out := make([]Item, 0, len(input)+len(r.Output))
	out = append(out, input...)
	return append(out, r.Output...)
}
