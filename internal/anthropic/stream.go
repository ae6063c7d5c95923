package anthropic

import (
	"encoding/json"

	"github.com/tidwall/gjson"
)

// Stream turns a chat-completions stream into the Messages stream's
// events: message_start, then for each text or tool call a
// content_block_start, its deltas and a content_block_stop, then
// message_delta (stop reason and usage) and message_stop. It is not safe
// for concurrent use.
type Stream struct {
	id, model string
	input     int64 // input tokens as estimated at the start

	open      bool // a content block is open
	index     int  // the open (or next) block's index
	isTool    bool
	toolIndex int // the chat stream's index of the open tool call
	finish    string
}

// NewStream starts the translation of one answer; input is the estimate of
// input tokens that message_start reports (the real count comes in
// message_delta).
func NewStream(id, model string, input int64) *Stream {
	return &Stream{id: id, model: model, input: input, toolIndex: -1}
}

// appendEvent adds one server-sent event.
func appendEvent(buf []byte, name string, v any) []byte {
	data, _ := json.Marshal(v) // values of our own types only
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

// Start is message_start and a ping.
func (s *Stream) Start(buf []byte) []byte {
	msg := MessageBody{ID: s.id, Type: "message", Role: "assistant", Model: s.model, Content: []Content{},
		Usage: Usage{InputTokens: s.input}}
	buf = appendEvent(buf, "message_start", map[string]any{"type": "message_start", "message": msg})
	return appendEvent(buf, "ping", map[string]string{"type": "ping"})
}

func (s *Stream) closeBlock(buf []byte) []byte {
	if !s.open {
		return buf
	}
	buf = appendEvent(buf, "content_block_stop", map[string]any{"type": "content_block_stop", "index": s.index})
	s.open, s.isTool, s.toolIndex = false, false, -1
	s.index++
	return buf
}

// Chunk translates one chat-completions chunk and returns the events and
// the text it added (for a usage estimate when the upstream reports none).
func (s *Stream) Chunk(buf []byte, payload []byte) ([]byte, string) {
	if !gjson.ValidBytes(payload) {
		return buf, ""
	}
	choice := gjson.GetBytes(payload, "choices.0")
	delta := choice.Get("delta")
	var said string
	if c := delta.Get("content"); c.Type == gjson.String && c.Str != "" {
		if s.open && s.isTool {
			buf = s.closeBlock(buf)
		}
		if !s.open {
			empty := ""
			buf = appendEvent(buf, "content_block_start", map[string]any{"type": "content_block_start", "index": s.index,
				"content_block": Content{Type: "text", Text: &empty}})
			s.open = true
		}
		buf = appendEvent(buf, "content_block_delta", map[string]any{"type": "content_block_delta", "index": s.index,
			"delta": map[string]string{"type": "text_delta", "text": c.Str}})
		said = c.Str
	}
	for _, tc := range delta.Get("tool_calls").Array() {
		i := int(tc.Get("index").Int())
		if !s.open || !s.isTool || i != s.toolIndex {
			buf = s.closeBlock(buf)
			buf = appendEvent(buf, "content_block_start", map[string]any{"type": "content_block_start", "index": s.index,
				"content_block": Content{Type: "tool_use", ID: tc.Get("id").Str, Name: tc.Get("function.name").Str, Input: json.RawMessage("{}")}})
			s.open, s.isTool, s.toolIndex = true, true, i
		}
		if args := tc.Get("function.arguments").Str; args != "" {
			buf = appendEvent(buf, "content_block_delta", map[string]any{"type": "content_block_delta", "index": s.index,
				"delta": map[string]string{"type": "input_json_delta", "partial_json": args}})
			said += args
		}
	}
	if f := choice.Get("finish_reason"); f.Type == gjson.String {
		s.finish = f.Str
	}
	return buf, said
}

// End closes the open block and ends the message with its stop reason and
// usage.
func (s *Stream) End(buf []byte, u Usage) []byte {
	buf = s.closeBlock(buf)
	buf = appendEvent(buf, "message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": StopReason(s.finish), "stop_sequence": nil}, "usage": u})
	return appendEvent(buf, "message_stop", map[string]string{"type": "message_stop"})
}

// ErrorBody is Anthropic's error envelope.
type ErrorBody struct {
	Type  string      `json:"type"`
	Error ErrorObject `json:"error"`
}

// ErrorObject is the error itself; Type is one of Anthropic's error types
// (invalid_request_error, authentication_error, permission_error,
// not_found_error, request_too_large, rate_limit_error, api_error,
// overloaded_error).
type ErrorObject struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// ErrorEvent is the error event that ends a stream that failed midway.
func ErrorEvent(buf []byte, typ, message string) []byte {
	return appendEvent(buf, "error", ErrorBody{Type: "error", Error: ErrorObject{Type: typ, Message: message}})
}
