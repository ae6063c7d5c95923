package gateway

import (
	"strings"

	"github.com/agentapi/agentapi/internal/llm"
	"github.com/tidwall/gjson"
)

// EstimateRequest is the budget hold for a call: the request's size as
// prompt tokens (it overstates them, which is the safe side for a hold)
// plus the completion cap when the client set one.
func EstimateRequest(body []byte, maxTokens int64) int64 {
	return int64(len(body)+3)/4 + maxTokens
}

// UsageOrEstimate is the usage an upstream reported, or an estimate from
// the request and answer sizes when it reported none (some local upstreams
// never do), so that every call counts.
func UsageOrEstimate(u llm.Usage, request []byte, answer string) llm.Usage {
	if u.TotalTokens > 0 {
		return u
	}
	u.PromptTokens = llm.EstimateTokens(promptText(request))
	u.CompletionTokens = llm.EstimateTokens(answer)
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// promptText is the text a request asks the model to read: the messages'
// contents (text parts of multi-part contents included) or an embeddings
// input. A request of another shape counts whole, JSON syntax and all,
// which overstates it, the safe side for accounting.
func promptText(request []byte) string {
	var b strings.Builder
	add := func(v gjson.Result) {
		switch {
		case v.Type == gjson.String:
			b.WriteString(v.Str)
		case v.IsArray():
			for _, part := range v.Array() {
				if part.Type == gjson.String {
					b.WriteString(part.Str)
				} else if t := part.Get("text"); t.Type == gjson.String {
					b.WriteString(t.Str)
				}
			}
		}
	}
	found := false
	for _, m := range gjson.GetBytes(request, "messages").Array() {
		found = true
		add(m.Get("content"))
	}
	if in := gjson.GetBytes(request, "input"); in.Exists() {
		found = true
		add(in)
	}
	if !found {
		return string(request)
	}
	return b.String()
}
