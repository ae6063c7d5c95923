package responses

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event is one server-sent event of a streamed response: its type and its
// JSON data (which repeats the type and carries the sequence number).
type Event struct {
	Type string
	Data []byte
}

// AppendSSE appends the event as it goes on the wire: an event line, one
// data line and the blank line that ends it.
func (e Event) AppendSSE(buf []byte) []byte {
	buf = append(buf, "event: "...)
	buf = append(buf, e.Type...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, e.Data...)
	return append(buf, "\n\n"...)
}

// Translator turns the chunks of a streamed chat completion into
// Responses events, building the response as it goes. Its methods are
// called in order: Start, Chunk for each chunk, Close, then Terminal once
// the response is stored. It is not safe for concurrent use.
type Translator struct {
	resp   *Response
	seq    int64
	events []Event

	// The item being streamed: a message (msg >= 0) or a function call
	// (call >= 0), as an index into resp.Output.
	msg, call int
	text      strings.Builder
	args      strings.Builder
	// upstream tool-call index of the call being streamed
	callIndex int

	finish   string
	usage    Usage
	hasUsage bool
	model    string

	// classify, when set, tells MCP tool calls from function calls
	// (mcp.go); turnStart is the first output index of the model turn.
	classify  Classifier
	turnStart int
}

// NewTranslator starts translating for resp, an in-progress response.
func NewTranslator(resp *Response) *Translator {
	return &Translator{resp: resp, msg: -1, call: -1, callIndex: -1}
}

// Response is the response as built so far (final after Close).
func (t *Translator) Response() *Response { return t.resp }

// Usage is the usage the stream reported, and whether it reported one.
func (t *Translator) Usage() (Usage, bool) { return t.usage, t.hasUsage }

// Model is the model the upstream named in its chunks ("" if none).
func (t *Translator) Model() string { return t.model }

// Text is the text streamed so far, for a usage estimate.
func (t *Translator) Text() string {
	var b strings.Builder
	for _, it := range t.resp.Output {
		b.WriteString(it.Text())
		b.WriteString(it.Arguments)
	}
	b.WriteString(t.text.String())
	b.WriteString(t.args.String())
	return b.String()
}

func (t *Translator) emit(typ string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only this package's own structs are marshalled.
		panic(fmt.Sprintf("responses: encode %s event: %v", typ, err))
	}
	t.events = append(t.events, Event{Type: typ, Data: data})
}

func (t *Translator) next() int64 {
	n := t.seq
	t.seq++
	return n
}

// take returns the events made since the last call.
func (t *Translator) take() []Event {
	ev := t.events
	t.events = nil
	return ev
}

// Event payloads, fields in OpenAI's order.
type (
	responseEvent struct {
		Type     string    `json:"type"`
		Sequence int64     `json:"sequence_number"`
		Response *Response `json:"response"`
	}
	itemEvent struct {
		Type        string `json:"type"`
		Sequence    int64  `json:"sequence_number"`
		OutputIndex int    `json:"output_index"`
		Item        Item   `json:"item"`
	}
	partEvent struct {
		Type         string `json:"type"`
		Sequence     int64  `json:"sequence_number"`
		ItemID       string `json:"item_id"`
		OutputIndex  int    `json:"output_index"`
		ContentIndex int    `json:"content_index"`
		Part         Part   `json:"part"`
	}
	textDeltaEvent struct {
		Type         string     `json:"type"`
		Sequence     int64      `json:"sequence_number"`
		ItemID       string     `json:"item_id"`
		OutputIndex  int        `json:"output_index"`
		ContentIndex int        `json:"content_index"`
		Delta        string     `json:"delta"`
		Logprobs     []struct{} `json:"logprobs"`
	}
	textDoneEvent struct {
		Type         string     `json:"type"`
		Sequence     int64      `json:"sequence_number"`
		ItemID       string     `json:"item_id"`
		OutputIndex  int        `json:"output_index"`
		ContentIndex int        `json:"content_index"`
		Text         string     `json:"text"`
		Logprobs     []struct{} `json:"logprobs"`
	}
	argsDeltaEvent struct {
		Type        string `json:"type"`
		Sequence    int64  `json:"sequence_number"`
		ItemID      string `json:"item_id"`
		OutputIndex int    `json:"output_index"`
		Delta       string `json:"delta"`
	}
	argsDoneEvent struct {
		Type        string `json:"type"`
		Sequence    int64  `json:"sequence_number"`
		ItemID      string `json:"item_id"`
		OutputIndex int    `json:"output_index"`
		Name        string `json:"name"`
		Arguments   string `json:"arguments"`
	}
	errorEvent struct {
		Type     string      `json:"type"`
		Sequence int64       `json:"sequence_number"`
		Error    errorDetail `json:"error"`
	}
	errorDetail struct {
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
	}
)

// snapshot is a copy of the response for an event, so that later changes
// to the response do not show in an event already made.
func (t *Translator) snapshot() *Response {
	c := *t.resp
	c.Output = append(make([]Item, 0, len(t.resp.Output)), t.resp.Output...)
	return &c
}

// Start makes response.created and response.in_progress.
func (t *Translator) Start() []Event {
	t.emit("response.created", responseEvent{"response.created", t.next(), t.snapshot()})
	t.emit("response.in_progress", responseEvent{"response.in_progress", t.next(), t.snapshot()})
	return t.take()
}

// streamChunk is the part of a chat.completion.chunk the translator reads.
type streamChunk struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content   *string `json:"content"`
			Refusal   *string `json:"refusal"`
			ToolCalls []struct {
				Index    *int   `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
}

// Chunk translates one chunk's payload (the data of one upstream event)
// into the events it causes; a chunk with nothing new causes none.
func (t *Translator) Chunk(payload []byte) ([]Event, error) {
	var c streamChunk
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("responses: read stream chunk: %w", err)
	}
	if c.Model != "" {
		t.model = c.Model
	}
	if c.Usage != nil {
		t.usage, t.hasUsage = c.Usage.usage(), true
	}
	if len(c.Choices) == 0 {
		return t.take(), nil
	}
	ch := c.Choices[0]
	if d := ch.Delta.Content; d != nil && *d != "" {
		t.textDelta(*d)
	}
	if d := ch.Delta.Refusal; d != nil && *d != "" {
		// A refusal is shown as text: chat upstreams rarely send one,
		// and a client reading output_text sees why there is no answer.
		t.textDelta(*d)
	}
	for _, tc := range ch.Delta.ToolCalls {
		idx := 0
		if tc.Index != nil {
			idx = *tc.Index
		}
		if t.call < 0 || idx != t.callIndex {
			t.closeItem()
			t.openCall(idx, tc.ID, tc.Function.Name)
		} else if tc.Function.Name != "" && t.resp.Output[t.call].Name == "" {
			t.resp.Output[t.call].Name = tc.Function.Name
		}
		if tc.Function.Arguments != "" {
			t.argsDelta(tc.Function.Arguments)
		}
	}
	if ch.FinishReason != nil && *ch.FinishReason != "" {
		t.finish = *ch.FinishReason
	}
	return t.take(), nil
}

func (t *Translator) openMessage() {
	t.closeItem()
	t.msg = len(t.resp.Output)
	it := Item{Type: TypeMessage, ID: NewID("msg"), Status: StatusInProgress, Role: "assistant", Content: []Part{}}
	t.resp.Output = append(t.resp.Output, it)
	t.emit("response.output_item.added", itemEvent{"response.output_item.added", t.next(), t.msg, it})
	t.emit("response.content_part.added", partEvent{"response.content_part.added", t.next(), it.ID, t.msg, 0,
		Part{Type: PartOutputText}})
}

func (t *Translator) textDelta(d string) {
	if t.msg < 0 {
		t.openMessage()
	}
	t.text.WriteString(d)
	t.emit("response.output_text.delta", textDeltaEvent{"response.output_text.delta", t.next(),
		t.resp.Output[t.msg].ID, t.msg, 0, d, emptyList})
}

func (t *Translator) openCall(idx int, id, name string) {
	t.call, t.callIndex = len(t.resp.Output), idx
	it := Item{Type: TypeFunctionCall, ID: NewID("fc"), Status: StatusInProgress, CallID: callID(id), Name: name}
	if t.classify != nil {
		switch kind, server := t.classify(name); kind {
		case KindMCP:
			it = Item{Type: TypeMCPCall, ID: NewID("mcp"), Status: StatusInProgress, ServerLabel: server, Name: name}
		case KindApproval:
			it = Item{Type: TypeMCPApprovalRequest, ID: NewID("mcpr"), ServerLabel: server, Name: name}
		}
	}
	t.resp.Output = append(t.resp.Output, it)
	t.emit("response.output_item.added", itemEvent{"response.output_item.added", t.next(), t.call, it})
}

// argsDelta adds to the arguments of the call being streamed.
func (t *Translator) argsDelta(d string) {
	t.args.WriteString(d)
	it := t.resp.Output[t.call]
	switch it.Type {
	case TypeFunctionCall:
		t.emit("response.function_call_arguments.delta", argsDeltaEvent{"response.function_call_arguments.delta", t.next(), it.ID, t.call, d})
	case TypeMCPCall:
		t.emit("response.mcp_call_arguments.delta", argsDeltaEvent{"response.mcp_call_arguments.delta", t.next(), it.ID, t.call, d})
	}
}

// closeItemAs finishes the item being streamed, if any, with its done
// events and the given final status.
func (t *Translator) closeItemAs(status string) {
	switch {
	case t.msg >= 0:
		it := &t.resp.Output[t.msg]
		text := t.text.String()
		t.text.Reset()
		part := Part{Type: PartOutputText, Text: text}
		t.emit("response.output_text.done", textDoneEvent{"response.output_text.done", t.next(), it.ID, t.msg, 0, text, emptyList})
		t.emit("response.content_part.done", partEvent{"response.content_part.done", t.next(), it.ID, t.msg, 0, part})
		it.Content = []Part{part}
		it.Status = status
		t.emit("response.output_item.done", itemEvent{"response.output_item.done", t.next(), t.msg, *it})
		t.msg = -1
	case t.call >= 0:
		it := &t.resp.Output[t.call]
		it.Arguments = t.args.String()
		t.args.Reset()
		switch it.Type {
		case TypeMCPCall:
			// The call stays in progress until the gateway has run it
			// (CallDone, CallSkipped).
			t.emit("response.mcp_call_arguments.done", mcpArgsDoneEvent{"response.mcp_call_arguments.done", t.next(), it.ID, t.call, it.Arguments})
			t.call, t.callIndex = -1, -1
			return
		case TypeMCPApprovalRequest:
			t.emit("response.output_item.done", itemEvent{"response.output_item.done", t.next(), t.call, *it})
			t.call, t.callIndex = -1, -1
			return
		}
		t.emit("response.function_call_arguments.done", argsDoneEvent{"response.function_call_arguments.done", t.next(),
			it.ID, t.call, it.Name, it.Arguments})
		it.Status = status
		t.emit("response.output_item.done", itemEvent{"response.output_item.done", t.next(), t.call, *it})
		t.call, t.callIndex = -1, -1
	}
}

func (t *Translator) closeItem() { t.closeItemAs(StatusCompleted) }

// Close ends the stream's items and sets the response's final state:
// completed (or incomplete, by the upstream's finish reason) when the
// stream ended cleanly; incomplete with reason "interrupted" when it was
// cut short (cut, as when the client left or the upstream broke off).
// u is the usage to record (the stream's own, or an estimate). It returns
// the done events of the open items; the terminal event comes from
// Terminal, once the response is stored.
func (t *Translator) Close(cut bool, u Usage, now time.Time) []Event {
	if cut {
		t.closeItemAs(StatusIncomplete)
		t.resp.Finish("", u, now)
		t.resp.Status, t.resp.IncompleteDetails = StatusIncomplete, &IncompleteDetails{Reason: "interrupted"}
		return t.take()
	}
	if t.finish == "length" || t.finish == "content_filter" {
		t.closeItemAs(StatusIncomplete)
	} else {
		t.closeItem()
	}
	if len(t.resp.Output) == 0 {
		// A model that said nothing still answers with a message, as a
		// plain response does.
		t.openMessage()
		t.closeItem()
	}
	t.resp.Finish(t.finish, u, now)
	return t.take()
}

// Fail ends the stream's items and marks the response failed, with a
// message that must carry no internals.
func (t *Translator) Fail(code, message string, u Usage, now time.Time) []Event {
	t.closeItemAs(StatusIncomplete)
	t.resp.Fail(code, message, u, now)
	return t.take()
}

// Terminal is the last event: response.completed, response.incomplete
// or response.failed, carrying the final response.
func (t *Translator) Terminal() Event {
	typ := "response.completed"
	switch t.resp.Status {
	case StatusIncomplete:
		typ = "response.incomplete"
	case StatusFailed:
		typ = "response.failed"
	}
	t.emit(typ, responseEvent{typ, t.next(), t.snapshot()})
	return t.take()[0]
}

// ErrorEvent is an "error" event, for a stream that cannot go on (the
// caller ends the stream after it).
func (t *Translator) ErrorEvent(code, message string) Event {
	t.emit("error", errorEvent{"error", t.next(), errorDetail{Type: "server_error", Code: code, Message: message}})
	return t.take()[0]
}
