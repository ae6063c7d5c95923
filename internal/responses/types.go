// Package responses is the OpenAI Responses API (and Open Responses) on top
// of a chat-completions model: its request, item, response and streaming
// event shapes, the checks on a request, the conversion of a response chain
// and a new request into one chat-completions request, the building of the
// Response object from a chat-completions answer, and the translation of a
// chat-completions stream into Responses events.
//
// It knows nothing about HTTP: httpapi decodes the body with Parse, runs the
// model through the governed call, stores the result and writes Events.
// Storage is the store package's; this package only shapes what is stored.
package responses

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
)

// Item types this package reads and writes. Part 2 (conversations,
// compaction) adds its own kinds next to these.
const (
	TypeMessage            = "message"
	TypeFunctionCall       = "function_call"
	TypeFunctionCallOutput = "function_call_output"
)

// Statuses of a response and of its items.
const (
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusIncomplete = "incomplete"
	StatusFailed     = "failed"
	StatusCancelled  = "cancelled"
)

// Part types of a message's content.
const (
	PartInputText  = "input_text"
	PartOutputText = "output_text"
	PartInputImage = "input_image"
	PartRefusal    = "refusal"
)

// Item is one entry of a response's input or output: a message, a
// function call the model made, or the output of such a call. Which fields
// apply depends on Type; MarshalJSON writes each kind in OpenAI's shape.
type Item struct {
	Type   string
	ID     string
	Status string

	// Messages.
	Role string
	// Phase labels an assistant message as "commentary" or
	// "final_answer" (Open Responses); empty when not given.
	Phase   string
	Content []Part

	// Function calls and their outputs.
	CallID    string
	Name      string
	Arguments string
	Output    string

	// MCP items (mcp.go): the server, the tools it lists, a call's error,
	// and the approval a call answers or an approval response gives.
	ServerLabel       string
	Tools             []MCPTool
	Error             *string
	ErrorType         string // an mcp_call's: one of the CallError types
	ErrorCode         int64
	ApprovalRequestID string
	Approve           bool
	Reason            string
	// Compaction items: the sealed summary as the client sees it, and
	// the summary itself once opened (Sealer.Unseal); the summary is
	// never written out.
	EncryptedContent string
	summary          string
}

// Part is one piece of a message's content.
type Part struct {
	Type string
	// Text of input_text and output_text parts.
	Text string
	// ImageURL (a URL or a data: URL) and Detail of input_image parts.
	ImageURL string
	Detail   string
	// Refusal text of refusal parts.
	Refusal string
}

// emptyList is written where OpenAI always sends an array, so that an
// empty one is [] rather than null.
var emptyList = []struct{}{}

// MarshalJSON writes the part in OpenAI's shape for its type.
func (p Part) MarshalJSON() ([]byte, error) {
	switch p.Type {
	case PartOutputText:
		return json.Marshal(struct {
			Type        string     `json:"type"`
			Text        string     `json:"text"`
			Annotations []struct{} `json:"annotations"`
			Logprobs    []struct{} `json:"logprobs"`
		}{p.Type, p.Text, emptyList, emptyList})
	case PartInputImage:
		detail := p.Detail
		if detail == "" {
			detail = "auto"
		}
		return json.Marshal(struct {
			Type     string `json:"type"`
			ImageURL string `json:"image_url"`
			Detail   string `json:"detail"`
		}{p.Type, p.ImageURL, detail})
	case PartRefusal:
		return json.Marshal(struct {
			Type    string `json:"type"`
			Refusal string `json:"refusal"`
		}{p.Type, p.Refusal})
	default:
		return json.Marshal(struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}{p.Type, p.Text})
	}
}

// MarshalJSON writes the item in OpenAI's shape for its type.
func (it Item) MarshalJSON() ([]byte, error) {
	switch it.Type {
	case TypeMCPListTools, TypeMCPCall, TypeMCPApprovalRequest, TypeMCPApprovalResponse:
		return it.marshalMCP()
	case TypeCompaction:
		return json.Marshal(struct {
			Type             string `json:"type"`
			ID               string `json:"id"`
			EncryptedContent string `json:"encrypted_content"`
		}{it.Type, it.ID, it.EncryptedContent})
	case TypeFunctionCall:
		return json.Marshal(struct {
			Type      string `json:"type"`
			ID        string `json:"id"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
			Status    string `json:"status"`
		}{it.Type, it.ID, it.CallID, it.Name, it.Arguments, it.Status})
	case TypeFunctionCallOutput:
		return json.Marshal(struct {
			Type   string `json:"type"`
			ID     string `json:"id"`
			CallID string `json:"call_id"`
			Output string `json:"output"`
			Status string `json:"status"`
		}{it.Type, it.ID, it.CallID, it.Output, it.Status})
	default:
		content := it.Content
		if content == nil {
			content = []Part{}
		}
		return json.Marshal(struct {
			Type    string `json:"type"`
			ID      string `json:"id"`
			Status  string `json:"status"`
			Role    string `json:"role"`
			Phase   string `json:"phase,omitempty"`
			Content []Part `json:"content"`
		}{it.Type, it.ID, it.Status, it.Role, it.Phase, content})
	}
}

// UnmarshalJSON reads an item as the input of a request would give it
// (which includes every shape MarshalJSON writes).
func (it *Item) UnmarshalJSON(b []byte) error {
	v, err := parseItem(b, "item")
	if err != nil {
		return err
	}
	*it = v
	return nil
}

// Text is the concatenated text of the item's text and output_text parts.
func (it Item) Text() string {
	var s string
	for _, p := range it.Content {
		if p.Type == PartInputText || p.Type == PartOutputText {
			s += p.Text
		}
	}
	return s
}

// Tool is a function the model may call, or (Type "mcp", with MCP set) an
// MCP server whose tools the gateway runs (mcp.go).
type Tool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
	MCP         *MCPServer      `json:"-"`
}

// TextFormat is text.format: "text", "json_object" or "json_schema" (with
// Name, Schema, Description and Strict).
type TextFormat struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// TextConfig is the response's text setting.
type TextConfig struct {
	Format    TextFormat `json:"format"`
	Verbosity string     `json:"verbosity,omitempty"`
}

// IncompleteDetails says why a response stopped short.
type IncompleteDetails struct {
	Reason string `json:"reason"`
}

// Error is a failed response's error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Usage is a response's token count, with the detail fields the SDKs and
// the Open Responses schema require.
type Usage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

// Add adds u2's counts to u's (a response that made several model calls).
func (u *Usage) Add(u2 Usage) {
	u.InputTokens += u2.InputTokens
	u.InputTokensDetails.CachedTokens += u2.InputTokensDetails.CachedTokens
	u.OutputTokens += u2.OutputTokens
	u.OutputTokensDetails.ReasoningTokens += u2.OutputTokensDetails.ReasoningTokens
	u.TotalTokens += u2.TotalTokens
}

// Response is the Response object. Every field the Open Responses schema
// lists is present; the nullable ones are pointers written as null.
type Response struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"`
	CreatedAt          int64              `json:"created_at"`
	CompletedAt        *int64             `json:"completed_at"`
	Status             string             `json:"status"`
	IncompleteDetails  *IncompleteDetails `json:"incomplete_details"`
	Model              string             `json:"model"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Instructions       *string            `json:"instructions"`
	Output             []Item             `json:"output"`
	Error              *Error             `json:"error"`
	Tools              []Tool             `json:"tools"`
	ToolChoice         json.RawMessage    `json:"tool_choice"`
	Truncation         string             `json:"truncation"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	Text               TextConfig         `json:"text"`
	TopP               float64            `json:"top_p"`
	PresencePenalty    float64            `json:"presence_penalty"`
	FrequencyPenalty   float64            `json:"frequency_penalty"`
	TopLogprobs        int64              `json:"top_logprobs"`
	Temperature        float64            `json:"temperature"`
	Reasoning          json.RawMessage    `json:"reasoning"`
	Usage              *Usage             `json:"usage"`
	MaxOutputTokens    *int64             `json:"max_output_tokens"`
	MaxToolCalls       *int64             `json:"max_tool_calls"`
	Store              bool               `json:"store"`
	Background         bool               `json:"background"`
	ServiceTier        string             `json:"service_tier"`
	Metadata           map[string]string  `json:"metadata"`
	SafetyIdentifier   *string            `json:"safety_identifier"`
	PromptCacheKey     *string            `json:"prompt_cache_key"`
	User               *string            `json:"user"`
	// Conversation names the conversation the response belongs to; absent
	// when it belongs to none.
	Conversation *ConversationRef `json:"conversation,omitempty"`
}

// ConversationRef is a response's conversation, as OpenAI writes it.
type ConversationRef struct {
	ID string `json:"id"`
}

// Terminal reports whether the response's status is final.
func (r *Response) Terminal() bool { return r.Status != StatusInProgress && r.Status != "queued" }

// NewID returns a new random id with prefix ("resp", "msg", "fc", "fco",
// "call"), in OpenAI's style: the prefix, an underscore and 48 hex digits.
func NewID(prefix string) string {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
	return prefix + "_" + hex.EncodeToString(b[:])
}
