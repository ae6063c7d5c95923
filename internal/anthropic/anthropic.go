// Package anthropic translates Anthropic's Messages API to and from OpenAI
// chat completions, so that clients speaking Messages (Claude Code, the
// Anthropic SDKs) are served by whichever upstream the model routes to.
// It knows nothing of HTTP: the httpapi handler reads the request, calls
// the gateway with the translated body and writes what this package makes
// of the answer (a Message, or the Messages stream's events).
//
// Translated: system prompts (a string or text blocks), text and image
// blocks, tool definitions and tool_choice, assistant tool_use blocks and
// user tool_result blocks, stop_sequences, temperature, top_p, max_tokens;
// answers' text and tool calls, stop reasons and usage. Not translated
// (refused or ignored as documented on Request): thinking, documents and
// server tools, which chat completions cannot express.
package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
)

// ErrInvalid is a request this package cannot translate; the message says
// which field and why.
var ErrInvalid = errors.New("anthropic: invalid request")

// Request is a Messages request. Fields not listed are ignored, as the
// Messages API ignores unknown ones.
type Request struct {
	Model         string          `json:"model"`
	MaxTokens     int64           `json:"max_tokens"`
	System        json.RawMessage `json:"system,omitempty"`
	Messages      []Message       `json:"messages"`
	StopSequences []string        `json:"stop_sequences,omitempty"`
	Stream        bool            `json:"stream,omitempty"`
	Temperature   *float64        `json:"temperature,omitempty"`
	TopP          *float64        `json:"top_p,omitempty"`
	Tools         []Tool          `json:"tools,omitempty"`
	ToolChoice    *ToolChoice     `json:"tool_choice,omitempty"`
	Metadata      *struct {
		UserID string `json:"user_id,omitempty"`
	} `json:"metadata,omitempty"`
}

// Message is one turn: content is a string or an array of blocks.
type Message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// Block is one content block of a message.
type Block struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
	// tool_use
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
	// tool_result
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"`
	IsError   bool            `json:"is_error,omitempty"`
	// image
	Source *struct {
		Type      string `json:"type"`
		MediaType string `json:"media_type,omitempty"`
		Data      string `json:"data,omitempty"`
		URL       string `json:"url,omitempty"`
	} `json:"source,omitempty"`
}

// Tool is a client tool the model may call.
type Tool struct {
	Type        string          `json:"type,omitempty"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
}

// ToolChoice is auto, any, tool (with Name) or none.
type ToolChoice struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
}

// chat is the chat-completions request we send.
type chat struct {
	Model         string         `json:"model"`
	Messages      []chatMessage  `json:"messages"`
	MaxTokens     int64          `json:"max_tokens,omitempty"`
	Stop          []string       `json:"stop,omitempty"`
	Temperature   *float64       `json:"temperature,omitempty"`
	TopP          *float64       `json:"top_p,omitempty"`
	Tools         []chatTool     `json:"tools,omitempty"`
	ToolChoice    any            `json:"tool_choice,omitempty"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions map[string]any `json:"stream_options,omitempty"`
}

type chatMessage struct {
	Role       string         `json:"role"`
	Content    any            `json:"content"`
	ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

type chatPart struct {
	Type     string `json:"type"`
	Text     string `json:"text,omitempty"`
	ImageURL *struct {
		URL string `json:"url"`
	} `json:"image_url,omitempty"`
}

type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	} `json:"function"`
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// blocks reads a content field: a string is one text block.
func blocks(raw json.RawMessage, field string) ([]Block, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' {
		var s string
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, invalid("%s: %v", field, err)
			}
		}
		return []Block{{Type: "text", Text: s}}, nil
	}
	var out []Block
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, invalid("%s must be a string or an array of content blocks", field)
	}
	return out, nil
}

// text joins the text blocks of a content field (tool results, system).
func text(raw json.RawMessage, field string) (string, error) {
	bs, err := blocks(raw, field)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, x := range bs {
		if x.Type == "text" {
			if b.Len() > 0 {
				b.WriteString("\n")
			}
			b.WriteString(x.Text)
		}
	}
	return b.String(), nil
}

// ToChat translates r into a chat-completions body for model (the name
// the gateway routes by). A stream asks for usage in its last chunk.
func ToChat(r Request, model string) ([]byte, error) {
	if len(r.Messages) == 0 {
		return nil, invalid("messages: at least one message is required")
	}
	c := chat{Model: model, MaxTokens: r.MaxTokens, Stop: r.StopSequences, Temperature: r.Temperature, TopP: r.TopP, Stream: r.Stream}
	if r.Stream {
		c.StreamOptions = map[string]any{"include_usage": true}
	}
	if len(r.System) > 0 && string(r.System) != "null" {
		sys, err := text(r.System, "system")
		if err != nil {
			return nil, err
		}
		if sys != "" {
			c.Messages = append(c.Messages, chatMessage{Role: "system", Content: sys})
		}
	}
	for i, m := range r.Messages {
		field := fmt.Sprintf("messages.%d.content", i)
		bs, err := blocks(m.Content, field)
		if err != nil {
			return nil, err
		}
		switch m.Role {
		case "user":
			var parts []chatPart
			for _, b := range bs {
				switch b.Type {
				case "text":
					parts = append(parts, chatPart{Type: "text", Text: b.Text})
				case "image":
					if b.Source == nil {
						return nil, invalid("%s: an image needs a source", field)
					}
					p := chatPart{Type: "image_url", ImageURL: &struct {
						URL string `json:"url"`
					}{}}
					switch b.Source.Type {
					case "base64":
						p.ImageURL.URL = "data:" + b.Source.MediaType + ";base64," + b.Source.Data
					case "url":
						p.ImageURL.URL = b.Source.URL
					default:
						return nil, invalid("%s: image source type %q is not supported", field, b.Source.Type)
					}
					parts = append(parts, p)
				case "tool_result":
					// A tool's answer is its own message in chat
					// completions, right after the assistant's call.
					out, err := text(b.Content, field+".tool_result.content")
					if err != nil {
						return nil, err
					}
					if b.IsError && !strings.HasPrefix(out, "Error") {
						out = "Error: " + out
					}
					c.Messages = append(c.Messages, chatMessage{Role: "tool", ToolCallID: b.ToolUseID, Content: out})
				default:
					return nil, invalid("%s: block type %q is not supported", field, b.Type)
				}
			}
			if len(parts) == 1 && parts[0].Type == "text" {
				c.Messages = append(c.Messages, chatMessage{Role: "user", Content: parts[0].Text})
			} else if len(parts) > 0 {
				c.Messages = append(c.Messages, chatMessage{Role: "user", Content: parts})
			}
		case "assistant":
			msg := chatMessage{Role: "assistant"}
			var said strings.Builder
			for _, b := range bs {
				switch b.Type {
				case "text":
					said.WriteString(b.Text)
				case "tool_use":
					tc := chatToolCall{ID: b.ID, Type: "function"}
					tc.Function.Name = b.Name
					args := string(bytes.TrimSpace(b.Input))
					if args == "" || args == "null" {
						args = "{}"
					}
					tc.Function.Arguments = args
					msg.ToolCalls = append(msg.ToolCalls, tc)
				case "thinking", "redacted_thinking":
					// Not expressible upstream; the model's own notes
					// are dropped.
				default:
					return nil, invalid("%s: block type %q is not supported", field, b.Type)
				}
			}
			if said.Len() > 0 || len(msg.ToolCalls) == 0 {
				msg.Content = said.String()
			}
			c.Messages = append(c.Messages, msg)
		default:
			return nil, invalid("messages.%d.role must be user or assistant", i)
		}
	}
	for i, t := range r.Tools {
		if t.Type != "" && t.Type != "custom" {
			return nil, invalid("tools.%d: server tool %q is not supported", i, t.Type)
		}
		if t.Name == "" {
			return nil, invalid("tools.%d.name is required", i)
		}
		ct := chatTool{Type: "function"}
		ct.Function.Name, ct.Function.Description, ct.Function.Parameters = t.Name, t.Description, t.InputSchema
		c.Tools = append(c.Tools, ct)
	}
	if tc := r.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto", "":
			c.ToolChoice = "auto"
		case "any":
			c.ToolChoice = "required"
		case "none":
			c.ToolChoice = "none"
		case "tool":
			c.ToolChoice = map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}}
		default:
			return nil, invalid("tool_choice.type %q is not supported", tc.Type)
		}
	}
	return json.Marshal(c)
}

// Usage is a Message's token counts.
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// Content is a block of an answer.
type Content struct {
	Type  string          `json:"type"`
	Text  *string         `json:"text,omitempty"`
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

// MessageBody is a Messages answer.
type MessageBody struct {
	ID           string    `json:"id"`
	Type         string    `json:"type"`
	Role         string    `json:"role"`
	Model        string    `json:"model"`
	Content      []Content `json:"content"`
	StopReason   *string   `json:"stop_reason"`
	StopSequence *string   `json:"stop_sequence"`
	Usage        Usage     `json:"usage"`
}

// StopReason maps a chat-completions finish_reason.
func StopReason(finish string) string {
	switch finish {
	case "length":
		return "max_tokens"
	case "tool_calls", "function_call":
		return "tool_use"
	}
	return "end_turn"
}

// MessageID is a Messages id for a request id.
func MessageID(requestID string) string {
	return "msg_" + strings.ReplaceAll(requestID, "-", "")
}

// FromChat translates a plain chat-completions answer into a Message.
func FromChat(body []byte, id, model string, u Usage) ([]byte, error) {
	if !gjson.ValidBytes(body) {
		return nil, errors.New("anthropic: upstream answer is not JSON")
	}
	choice := gjson.GetBytes(body, "choices.0")
	msg := choice.Get("message")
	out := MessageBody{ID: id, Type: "message", Role: "assistant", Model: model, Content: []Content{}, Usage: u}
	if t := msg.Get("content"); t.Type == gjson.String && t.Str != "" {
		s := t.Str
		out.Content = append(out.Content, Content{Type: "text", Text: &s})
	}
	for _, tc := range msg.Get("tool_calls").Array() {
		args := tc.Get("function.arguments").Str
		if !gjson.Valid(args) || !gjson.Parse(args).IsObject() {
			args = "{}"
		}
		out.Content = append(out.Content, Content{Type: "tool_use", ID: tc.Get("id").Str, Name: tc.Get("function.name").Str, Input: json.RawMessage(args)})
	}
	reason := StopReason(choice.Get("finish_reason").Str)
	out.StopReason = &reason
	return json.Marshal(out)
}
