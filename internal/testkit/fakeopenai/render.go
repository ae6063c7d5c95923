package fakeopenai

import "strconv"

// rendered is an answer in wire form: the plain body, and a stream's
// role chunk (nil without Options.RoleChunk), each word's chunk, its end
// (tool calls and the finish chunk) and its usage chunk.
type rendered struct {
	plain      []byte
	role       []byte
	chunks     [][]byte
	end, usage []byte
}

func (r *rendered) chunk(i int) []byte { return r.chunks[i%len(r.chunks)] }

const (
	answerID = `"id":"chatcmpl-fake"`
	created  = `"created":1735689600`
)

// render puts a into wire form, streams as the options say.
func (s *Server) render(model string, a Answer) *rendered {
	usageNull := s.opts.UsageNull
	r := &rendered{plain: renderPlain(model, a), end: renderEnd(model, a, usageNull), usage: renderUsage(model, a.StreamUsage)}
	if s.opts.RoleChunk {
		r.role = renderChunk(model, []byte(`{"role":"assistant","content":""}`), "", usageNull)
	}
	for _, w := range a.Words {
		delta := append([]byte(`{"content":`), strconv.Quote(w)...)
		delta = append(delta, '}')
		r.chunks = append(r.chunks, renderChunk(model, delta, "", usageNull))
	}
	return r
}

func appendUsage(b []byte, u Usage) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.Prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.Completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.Prompt+u.Completion), 10)
	return append(b, '}')
}

func finishReason(a Answer) string {
	if len(a.ToolCalls) > 0 {
		return "tool_calls"
	}
	return "stop"
}

func renderPlain(model string, a Answer) []byte {
	b := make([]byte, 0, 512+len(a.Text))
	b = append(b, `{`+answerID+`,"object":"chat.completion",`+created+`,"model":`...)
	b = strconv.AppendQuote(b, model)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	if a.Text == "" && len(a.ToolCalls) > 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendQuote(b, a.Text)
	}
	if len(a.ToolCalls) > 0 {
		b = append(b, `,"tool_calls":[`...)
		for i, c := range a.ToolCalls {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = strconv.AppendQuote(b, c.ID)
			b = append(b, `,"type":"function","function":{"name":`...)
			b = strconv.AppendQuote(b, c.Name)
			b = append(b, `,"arguments":`...)
			b = strconv.AppendQuote(b, c.Arguments)
			b = append(b, `}}`...)
		}
		b = append(b, ']')
	}
	b = append(b, `,"refusal":null},"logprobs":null,"finish_reason":"`...)
	b = append(b, finishReason(a)...)
	b = append(b, `"}],"usage":`...)
	b = appendUsage(b, a.Usage)
	return append(b, `,"system_fingerprint":"fp_fake"}`+"\n"...)
}

// renderChunk is one "data: {...}" event whose only choice has delta and,
// when finish is set, that finish reason.
func renderChunk(model string, delta []byte, finish string, usageNull bool) []byte {
	b := make([]byte, 0, 256+len(delta))
	b = append(b, `data: {`+answerID+`,"object":"chat.completion.chunk",`+created+`,"model":`...)
	b = strconv.AppendQuote(b, model)
	b = append(b, `,"choices":[{"index":0,"delta":`...)
	b = append(b, delta...)
	b = append(b, `,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendQuote(b, finish)
	}
	b = append(b, `}]`...)
	if usageNull {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}

func renderEnd(model string, a Answer, usageNull bool) []byte {
	var b []byte
	for i, c := range a.ToolCalls {
		delta := []byte(`{`)
		if i == 0 {
			delta = append(delta, `"role":"assistant","content":null,`...)
		}
		delta = append(delta, `"tool_calls":[{"index":`...)
		delta = strconv.AppendInt(delta, int64(i), 10)
		delta = append(delta, `,"id":`...)
		delta = strconv.AppendQuote(delta, c.ID)
		delta = append(delta, `,"type":"function","function":{"name":`...)
		delta = strconv.AppendQuote(delta, c.Name)
		delta = append(delta, `,"arguments":""}}]}`...)
		b = append(b, renderChunk(model, delta, "", usageNull)...)
		if c.Arguments != "" {
			delta = append(delta[:0], `{"tool_calls":[{"index":`...)
			delta = strconv.AppendInt(delta, int64(i), 10)
			delta = append(delta, `,"function":{"arguments":`...)
			delta = strconv.AppendQuote(delta, c.Arguments)
			delta = append(delta, `}}]}`...)
			b = append(b, renderChunk(model, delta, "", usageNull)...)
		}
	}
	return append(b, renderChunk(model, []byte(`{}`), finishReason(a), usageNull)...)
}

// renderUsage is the chunk with no choices that carries a stream's usage.
func renderUsage(model string, u Usage) []byte {
	b := []byte(`data: {` + answerID + `,"object":"chat.completion.chunk",` + created + `,"model":`)
	b = strconv.AppendQuote(b, model)
	b = append(b, `,"choices":[],"usage":`...)
	b = appendUsage(b, u)
	return append(b, "}\n\n"...)
}
