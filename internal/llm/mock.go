package llm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
)

// Names the mock answers to in its model list. Chat and embedding calls
// accept any model name and echo it back, so configuration written for a
// real upstream works unchanged against the mock.
const (
	mockChatModel      = "mock-chat"
	mockEmbeddingModel = "mock-embedding"
	mockName           = "mock"
	// mockCreated is a fixed "created" time (2025-01-01T00:00:00Z) so that
	// identical requests get byte-identical answers, which caching tests
	// rely on.
	mockCreated = 1735689600
	// mockEchoRunes is how much of the user's message the reply repeats.
	mockEchoRunes = 200
	// mockDimensions is the length of mock embedding vectors.
	mockDimensions = 8
)

// Mock is an offline provider with the same methods as Client. It answers
// deterministically: a chat reply is "Mock reply: " followed by the first
// 200 characters of the last user message (and how many images it had),
// and usage is estimated with EstimateTokens. When the request offers tools
// (and tool_choice is not "none") and its last message is not a tool's
// result, it calls the one tool tool_choice names, else the first tool
// whose name has a word the message uses ("time" in current_time), else
// the first tool, with arguments built from the tool's JSON schema (an
// "expression" argument gets the arithmetic the message contains and a
// "timezone" argument "UTC", so the built-in tools can be tried); after a
// tool's result it
// answers "Mock reply: the tool said: " and the result's start. Tool calls
// are streamed as tool-call deltas, as OpenAI streams them. Invalid requests get an *UpstreamError of kind
// ErrUpstreamRejected with an OpenAI-shaped 400 body, as a real upstream
// would send. Mock is safe for concurrent use.
type Mock struct{}

// NewMock returns a Mock.
func NewMock() *Mock {
	return &Mock{}
}

// mockChatRequest is the part of a chat request the mock reads.
type mockChatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role      string            `json:"role"`
		Content   json.RawMessage   `json:"content"`
		ToolCalls []json.RawMessage `json:"tool_calls"`
	} `json:"messages"`
	Tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
	ToolChoice    json.RawMessage `json:"tool_choice"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// mockChat is a parsed request together with its answer.
type mockChat struct {
	id    string
	model string
	reply string
	// call, when set, is the tool call the mock answers with instead of
	// reply.
	call         *mockToolCall
	usage        Usage
	includeUsage bool
}

// Complete answers a chat-completions request body with a deterministic
// OpenAI-shaped chat.completion.
func (m *Mock) Complete(ctx context.Context, body []byte) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("llm: %s: call abandoned by caller: %w", mockName, err)
	}
	chat, err := m.answer(body)
	if err != nil {
		return nil, err
	}
	stop := "stop"
	msg := mockMessage{Role: "assistant", Content: &chat.reply}
	if chat.call != nil {
		stop = "tool_calls"
		msg = mockMessage{Role: "assistant", ToolCalls: []mockToolCall{*chat.call}}
	}
	raw, err := json.Marshal(mockCompletion{
		ID:      chat.id,
		Object:  "chat.completion",
		Created: mockCreated,
		Model:   chat.model,
		Choices: []mockChoice{{
			Message:      msg,
			FinishReason: &stop,
		}},
		Usage: chat.usage,
	})
	if err != nil {
		return nil, fmt.Errorf("llm: %s: encode completion: %w", mockName, err)
	}
	return &Response{Body: raw, Usage: chat.usage, Model: chat.model, Status: http.StatusOK}, nil
}

// Stream answers a chat-completions request as an event stream: a chunk
// announcing the assistant role, one chunk per word of the same reply
// Complete gives, a chunk with finish_reason "stop", a usage chunk with
// empty choices when the request set stream_options.include_usage, then
// "[DONE]".
func (m *Mock) Stream(ctx context.Context, body []byte) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("llm: %s: call abandoned by caller: %w", mockName, err)
	}
	chat, err := m.answer(body)
	if err != nil {
		return nil, err
	}
	events, err := chat.events()
	if err != nil {
		return nil, err
	}
	return newStream(ctx, io.NopCloser(bytes.NewReader(events)), nil, mockName), nil
}

// Embeddings answers an embeddings request with deterministic unit vectors
// of 8 dimensions derived from a hash of each input, as floats or, when
// encoding_format is "base64", as little-endian float32 bytes in base64.
func (m *Mock) Embeddings(ctx context.Context, body []byte) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("llm: %s: call abandoned by caller: %w", mockName, err)
	}
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, mockRejection("request body is not valid JSON")
	}
	inputs, ok := embeddingInputs(req.Input)
	if !ok || len(inputs) == 0 {
		return nil, mockRejection("input must be a non-empty string, array of strings or array of tokens")
	}
	if req.Model == "" {
		req.Model = mockEmbeddingModel
	}
	out := mockEmbeddingList{Object: "list", Model: req.Model, Data: make([]mockEmbedding, len(inputs))}
	for i, in := range inputs {
		vec := mockVector(in)
		out.Data[i] = mockEmbedding{Object: "embedding", Index: i, Embedding: vec}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 0, 4*len(vec))
			for _, f := range vec {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			out.Data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
		out.Usage.PromptTokens += EstimateTokens(in)
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("llm: %s: encode embeddings: %w", mockName, err)
	}
	usage := Usage{PromptTokens: out.Usage.PromptTokens, TotalTokens: out.Usage.TotalTokens}
	return &Response{Body: raw, Usage: usage, Model: req.Model, Status: http.StatusOK}, nil
}

// Models returns an OpenAI-shaped model list naming the mock's models.
func (m *Mock) Models(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("llm: %s: call abandoned by caller: %w", mockName, err)
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{
		Object: "list",
		Data: []model{
			{ID: mockChatModel, Object: "model", Created: mockCreated, OwnedBy: "agentapi"},
			{ID: mockEmbeddingModel, Object: "model", Created: mockCreated, OwnedBy: "agentapi"},
		},
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("llm: %s: encode model list: %w", mockName, err)
	}
	return raw, nil
}

// answer parses a chat request and decides the reply and its usage.
func (m *Mock) answer(body []byte) (mockChat, error) {
	var req mockChatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return mockChat{}, mockRejection("request body is not valid JSON")
	}
	if len(req.Messages) == 0 {
		return mockChat{}, mockRejection("messages must be a non-empty array")
	}
	var prompt int64
	last, images := "", 0
	for _, msg := range req.Messages {
		// Content of an unexpected shape counts as empty rather than
		// failing: the mock is for trying the gateway, not for
		// validating requests.
		text, _ := contentText(msg.Content)
		prompt += EstimateTokens(text)
		if msg.Role == "user" {
			last, images = text, countImages(msg.Content)
		}
	}
	reply := "Mock reply: " + firstRunes(last, mockEchoRunes)
	if last == "" {
		reply = "Mock reply: (no user text)"
	}
	if images > 0 {
		reply += fmt.Sprintf(" (%d image(s) received)", images)
	}
	sum := sha256.Sum256(body)
	var call *mockToolCall
	if n := len(req.Messages); req.Messages[n-1].Role == "tool" {
		result, _ := contentText(req.Messages[n-1].Content)
		reply = "Mock reply: the tool said: " + firstRunes(result, mockEchoRunes)
	} else if name, params, ok := req.toolToCall(last); ok {
		call = &mockToolCall{ID: "call_mock_" + hex.EncodeToString(sum[:8]), Type: "function",
			Function: mockFunction{Name: name, Arguments: string(withExpression(mockArguments(params), last))}}
	}
	model := req.Model
	if model == "" {
		model = mockChatModel
	}
	completion := EstimateTokens(reply)
	if call != nil {
		completion = EstimateTokens(call.Function.Name) + EstimateTokens(call.Function.Arguments)
	}
	return mockChat{
		id:           "chatcmpl-mock-" + hex.EncodeToString(sum[:12]),
		model:        model,
		reply:        reply,
		call:         call,
		usage:        Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
	}, nil
}

// toolToCall is the function tool the mock calls: the one tool_choice
// names, else the first; none when there are no function tools or
// tool_choice is "none".
func (req *mockChatRequest) toolToCall(prompt string) (string, json.RawMessage, bool) {
	var choice struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	var mode string
	if json.Unmarshal(req.ToolChoice, &mode) == nil && mode == "none" {
		return "", nil, false
	}
	_ = json.Unmarshal(req.ToolChoice, &choice)
	if choice.Function.Name == "" {
		lower := strings.ToLower(prompt)
		for _, t := range req.Tools {
			for _, w := range strings.FieldsFunc(strings.ToLower(t.Function.Name), func(r rune) bool { return r == '_' || r == '-' }) {
				if len(w) >= 4 && strings.Contains(lower, w) && t.Type == "function" {
					return t.Function.Name, t.Function.Parameters, true
				}
			}
		}
	}
	for _, t := range req.Tools {
		if t.Type != "function" || t.Function.Name == "" {
			continue
		}
		if choice.Function.Name == "" || choice.Function.Name == t.Function.Name {
			return t.Function.Name, t.Function.Parameters, true
		}
	}
	return "", nil, false
}

// countImages counts the image_url parts of a message's content.
func countImages(raw json.RawMessage) int {
	var parts []struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return 0
	}
	n := 0
	for _, p := range parts {
		if p.Type == "image_url" {
			n++
		}
	}
	return n
}

// mockArguments builds a JSON value that fits schema: each required
// property (every property when none is marked required) with a value of
// its type, an enum's first value, or a string named after the property.
func mockArguments(schema json.RawMessage) []byte {
	var v any
	if json.Unmarshal(schema, &v) != nil {
		v = nil
	}
	out, err := json.Marshal(mockValue(v, "value", 0))
	if err != nil || len(out) == 0 || out[0] != '{' {
		return []byte("{}")
	}
	return out
}

// withExpression puts the arithmetic of prompt (its longest run of
// digits, operators and parentheses with an operator in it) in the
// arguments' "expression" string, when they have one.
func withExpression(args []byte, prompt string) []byte {
	var m map[string]any
	if json.Unmarshal(args, &m) != nil {
		return args
	}
	if _, ok := m["timezone"].(string); ok {
		m["timezone"] = "UTC"
		if out, err := json.Marshal(m); err == nil {
			args = out
		}
	}
	if _, ok := m["expression"].(string); !ok {
		return args
	}
	best, cur := "", strings.Builder{}
	flush := func() {
		s := strings.TrimSpace(cur.String())
		if len(s) > len(best) && strings.ContainsAny(s, "0123456789") && strings.ContainsAny(s, "+-*/%^") {
			best = s
		}
		cur.Reset()
	}
	for _, r := range prompt {
		if strings.ContainsRune("0123456789.+-*/%^() ", r) {
			cur.WriteRune(r)
			continue
		}
		flush()
	}
	flush()
	if best == "" {
		return args
	}
	m["expression"] = best
	out, err := json.Marshal(m)
	if err != nil {
		return args
	}
	return out
}

// mockValue is an example value for a JSON schema node.
func mockValue(node any, name string, depth int) any {
	s, _ := node.(map[string]any)
	if depth > 8 {
		return nil
	}
	if enum, ok := s["enum"].([]any); ok && len(enum) > 0 {
		return enum[0]
	}
	if c, ok := s["const"]; ok {
		return c
	}
	typ, _ := s["type"].(string)
	if list, ok := s["type"].([]any); ok && len(list) > 0 {
		typ, _ = list[0].(string)
	}
	if typ == "" && (depth == 0 || s["properties"] != nil) {
		typ = "object"
	}
	switch typ {
	case "object":
		props, _ := s["properties"].(map[string]any)
		out := map[string]any{}
		required, _ := s["required"].([]any)
		if len(required) == 0 {
			for k := range props {
				required = append(required, k)
			}
		}
		for _, k := range required {
			key, ok := k.(string)
			if !ok {
				continue
			}
			out[key] = mockValue(props[key], key, depth+1)
		}
		return out
	case "array":
		return []any{mockValue(s["items"], name, depth+1)}
	case "integer":
		if m, ok := s["minimum"].(float64); ok {
			return int64(m)
		}
		return 1
	case "number":
		if m, ok := s["minimum"].(float64); ok {
			return m
		}
		return 1.5
	case "boolean":
		return true
	case "null":
		return nil
	default:
		return "mock " + name
	}
}

// events renders the reply as the SSE body an OpenAI upstream would send.
func (c mockChat) events() ([]byte, error) {
	var buf bytes.Buffer
	write := func(chunk mockChunk) error {
		chunk.ID, chunk.Object, chunk.Created, chunk.Model = c.id, "chat.completion.chunk", mockCreated, c.model
		if c.includeUsage && chunk.Usage == nil {
			// OpenAI sends an explicit null on every chunk but the last
			// when usage was asked for.
			chunk.Usage = json.RawMessage("null")
		}
		raw, err := json.Marshal(chunk)
		if err != nil {
			return fmt.Errorf("llm: %s: encode chunk: %w", mockName, err)
		}
		buf.WriteString("data: ")
		buf.Write(raw)
		buf.WriteString("\n\n")
		return nil
	}
	empty := ""
	if err := write(mockChunk{Choices: []mockChunkChoice{{Delta: mockDelta{Role: "assistant", Content: &empty}}}}); err != nil {
		return nil, err
	}
	if c.call != nil {
		// The call's head (id, name) first, then its arguments in two
		// pieces, as OpenAI streams a tool call.
		head := mockStreamCall{Index: 0, ID: c.call.ID, Type: "function", Function: mockFunction{Name: c.call.Function.Name}}
		if err := write(mockChunk{Choices: []mockChunkChoice{{Delta: mockDelta{ToolCalls: []mockStreamCall{head}}}}}); err != nil {
			return nil, err
		}
		args := c.call.Function.Arguments
		half := len(args) / 2
		for _, piece := range []string{args[:half], args[half:]} {
			d := mockStreamCall{Index: 0, Function: mockFunction{Arguments: piece}}
			if err := write(mockChunk{Choices: []mockChunkChoice{{Delta: mockDelta{ToolCalls: []mockStreamCall{d}}}}}); err != nil {
				return nil, err
			}
		}
		return c.finishEvents(&buf, write, "tool_calls")
	}
	for _, word := range strings.SplitAfter(c.reply, " ") {
		if word == "" {
			continue
		}
		if err := write(mockChunk{Choices: []mockChunkChoice{{Delta: mockDelta{Content: &word}}}}); err != nil {
			return nil, err
		}
	}
	return c.finishEvents(&buf, write, "stop")
}

// finishEvents ends a streamed answer: the chunk with its finish reason,
// the usage chunk when asked for, and [DONE].
func (c mockChat) finishEvents(buf *bytes.Buffer, write func(mockChunk) error, reason string) ([]byte, error) {
	if err := write(mockChunk{Choices: []mockChunkChoice{{FinishReason: &reason}}}); err != nil {
		return nil, err
	}
	if c.includeUsage {
		usage, err := json.Marshal(c.usage)
		if err != nil {
			return nil, fmt.Errorf("llm: %s: encode usage: %w", mockName, err)
		}
		if err := write(mockChunk{Choices: []mockChunkChoice{}, Usage: usage}); err != nil {
			return nil, err
		}
	}
	buf.WriteString("data: [DONE]\n\n")
	return buf.Bytes(), nil
}

// mockRejection is the error a real upstream gives for a bad request.
func mockRejection(message string) *UpstreamError {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": message,
		"type":    "invalid_request_error",
		"param":   nil,
		"code":    nil,
	}})
	return &UpstreamError{
		Kind:     ErrUpstreamRejected,
		Status:   http.StatusBadRequest,
		Body:     body,
		Upstream: mockName,
		detail:   "type=invalid_request_error",
	}
}

// embeddingInputs lists the texts of an embeddings "input": a string, an
// array of strings, or token arrays (whose JSON text is then hashed).
func embeddingInputs(raw json.RawMessage) ([]string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return nil, false
		}
		return []string{s}, true
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil || len(items) == 0 {
			return nil, false
		}
		// A flat array of numbers is a single tokenised input.
		if first := bytes.TrimSpace(items[0]); len(first) > 0 && first[0] != '"' && first[0] != '[' {
			return []string{string(raw)}, true
		}
		out := make([]string, 0, len(items))
		for _, item := range items {
			var s string
			if json.Unmarshal(item, &s) == nil {
				out = append(out, s)
				continue
			}
			out = append(out, string(bytes.TrimSpace(item)))
		}
		return out, true
	default:
		return nil, false
	}
}

// mockVector derives a unit vector from the SHA-256 of text, so equal texts
// embed equally and different texts almost surely differently.
func mockVector(text string) []float32 {
	sum := sha256.Sum256([]byte(text))
	vec := make([]float32, mockDimensions)
	var norm float64
	for i := range vec {
		u := binary.BigEndian.Uint32(sum[4*i:])
		v := float64(u)/float64(1<<31) - 1 // spread over [-1, 1)
		vec[i] = float32(v)
		norm += v * v
	}
	if norm == 0 {
		vec[0], norm = 1, 1
	}
	scale := 1 / math.Sqrt(norm)
	for i := range vec {
		vec[i] = float32(float64(vec[i]) * scale)
	}
	return vec
}

// firstRunes returns at most n leading code points of s.
func firstRunes(s string, n int) string {
	count := 0
	for i := range s {
		if count == n {
			return s[:i]
		}
		count++
	}
	return s
}

// Wire shapes of the mock's answers, in OpenAI's field order.
type (
	mockCompletion struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []mockChoice `json:"choices"`
		Usage   Usage        `json:"usage"`
	}
	mockChoice struct {
		Index        int         `json:"index"`
		Message      mockMessage `json:"message"`
		FinishReason *string     `json:"finish_reason"`
	}
	mockMessage struct {
		Role      string         `json:"role"`
		Content   *string        `json:"content"`
		ToolCalls []mockToolCall `json:"tool_calls,omitempty"`
	}
	mockToolCall struct {
		ID       string       `json:"id"`
		Type     string       `json:"type"`
		Function mockFunction `json:"function"`
	}
	mockFunction struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	}
	mockStreamCall struct {
		Index    int          `json:"index"`
		ID       string       `json:"id,omitempty"`
		Type     string       `json:"type,omitempty"`
		Function mockFunction `json:"function"`
	}
	mockChunk struct {
		ID      string            `json:"id"`
		Object  string            `json:"object"`
		Created int64             `json:"created"`
		Model   string            `json:"model"`
		Choices []mockChunkChoice `json:"choices"`
		Usage   json.RawMessage   `json:"usage,omitempty"`
	}
	mockChunkChoice struct {
		Index        int       `json:"index"`
		Delta        mockDelta `json:"delta"`
		FinishReason *string   `json:"finish_reason"`
	}
	mockDelta struct {
		Role      string           `json:"role,omitempty"`
		Content   *string          `json:"content,omitempty"`
		ToolCalls []mockStreamCall `json:"tool_calls,omitempty"`
	}
	mockEmbeddingList struct {
		Object string          `json:"object"`
		Data   []mockEmbedding `json:"data"`
		Model  string          `json:"model"`
		Usage  struct {
			PromptTokens int64 `json:"prompt_tokens"`
			TotalTokens  int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	mockEmbedding struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
)
