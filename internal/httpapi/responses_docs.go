package httpapi

// OpenAPI entries of the Responses API routes.

// responsesRequestDoc documents POST /v1/responses's body: OpenAI's
// Responses request. Any other field is a 400 naming it.
type responsesRequestDoc struct {
	Model              string            `json:"model,omitempty" jsonschema:"maxLength=200"`
	Input              any               `json:"input,omitempty" jsonschema:"description=A string (one user message) or an array of items: messages (roles user, system, developer, assistant; input_text and input_image parts), function_call and function_call_output."`
	Instructions       *string           `json:"instructions,omitempty"`
	PreviousResponseID *string           `json:"previous_response_id,omitempty" jsonschema:"description=Continue this stored response of yours; unknown, deleted, expired, unstored or another user's ids are all 400 previous_response_not_found."`
	Store              *bool             `json:"store,omitempty" jsonschema:"description=Store the response (default true); false writes nothing."`
	Stream             bool              `json:"stream,omitempty"`
	Tools              []map[string]any  `json:"tools,omitempty" jsonschema:"description=Function tools, and MCP tools (type mcp: server_label, server_url, allowed_tools, require_approval, headers) that agentapi runs itself; see docs/agent-tools.md."`
	ToolChoice         any               `json:"tool_choice,omitempty"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls,omitempty"`
	MaxOutputTokens    *int64            `json:"max_output_tokens,omitempty" jsonschema:"description=At most the tier's MAX_TOKENS_<TIER>."`
	MaxToolCalls       *int64            `json:"max_tool_calls,omitempty"`
	Temperature        *float64          `json:"temperature,omitempty"`
	TopP               *float64          `json:"top_p,omitempty"`
	Text               map[string]any    `json:"text,omitempty" jsonschema:"description=format: text, json_object or json_schema (sent upstream as response_format)."`
	Metadata           map[string]string `json:"metadata,omitempty"`
	Truncation         string            `json:"truncation,omitempty" jsonschema:"enum=auto,enum=disabled"`
	User               *string           `json:"user,omitempty"`
	SafetyIdentifier   *string           `json:"safety_identifier,omitempty"`
	PromptCacheKey     *string           `json:"prompt_cache_key,omitempty"`
}

// compactRequestDoc documents POST /v1/responses/compact's body.
type compactRequestDoc struct {
	Model              string  `json:"model" jsonschema:"maxLength=200"`
	Input              any     `json:"input,omitempty" jsonschema:"description=The conversation to compact: a string or items, as in POST /v1/responses."`
	PreviousResponseID *string `json:"previous_response_id,omitempty" jsonschema:"description=Compact this stored chain (then the input after it)."`
	Instructions       *string `json:"instructions,omitempty"`
	PromptCacheKey     *string `json:"prompt_cache_key,omitempty"`
}

// conversationRequestDoc documents POST /v1/conversations's body.
type conversationRequestDoc struct {
	Items    []map[string]any  `json:"items,omitempty" jsonschema:"description=Up to 20 initial items (as a response's input items)."`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// conversationUpdateDoc documents POST /v1/conversations/{id}'s body.
type conversationUpdateDoc struct {
	Metadata map[string]string `json:"metadata"`
}

// conversationItemsDoc documents POST /v1/conversations/{id}/items's body.
type conversationItemsDoc struct {
	Items []map[string]any `json:"items" jsonschema:"description=Up to 20 items, appended in order."`
}

var docConversationNotFound = docResponse{Status: 404, Description: "No conversation of yours has this id (unknown, deleted, expired, or another user's: all alike).", Body: openAIErrorBody{}}

var docResponseNotFound = docResponse{Status: 404, Description: "No response of yours has this id (unknown, deleted, expired, or another user's: all alike).", Body: openAIErrorBody{}}

func responsesOperations() []operation {
	return []operation{
		{Method: "POST", Path: "/v1/responses", Tag: "openai", Auth: true, Summary: "Create a response (OpenAI Responses API, plain or streamed)",
			Description: "Runs the model on input, after the conversation of previous_response_id when given, through the chat-completions upstream. " +
				"Stored (unless store: false) before the answer or the final event goes out, so any replica can continue it at once. " +
				"With stream: true the answer is text/event-stream of Responses events (response.created ... response.completed), each with a sequence_number. " +
				"One rate-limit token per request; tokens are budgeted and counted like /v1/chat/completions. Accepts a JWT or an API key.",
			Request: responsesRequestDoc{},
			Responses: []docResponse{{Status: 200, Description: "A Response object, or its event stream.", Body: map[string]any{}},
				{Status: 400, Description: "Invalid or unsupported parameter (param names it), previous_response_not_found, or max_output_tokens over the tier's cap.", Body: openAIErrorBody{}},
				docOpenAIUnauthorized, docOpenAIModel, docOpenAITooLarge, docOpenAILimited, docOpenAIUpstream, docOpenAIBusy, docOpenAITimeout}},
		{Method: "GET", Path: "/v1/responses", Tag: "openai", Auth: true, Summary: "WebSocket mode of the Responses API",
			Description: "Upgrade to a WebSocket (authenticated on the upgrade like any request). Each text message {\"type\": \"response.create\", ...POST /v1/responses fields without stream} runs one response and streams the SSE stream's events as messages, in order, with sequence_number; turns run one at a time. " +
				"previous_response_id continues stored responses from any replica and store: false responses of the same socket only (kept in its memory, RESPONSES_WS_MEMORY_BYTES). " +
				"Errors are {\"type\": \"error\", \"status\", \"error\": {code, message, param}} and leave the socket open. One rate-limit token per response.create. " +
				"Idle sockets close after RESPONSES_WS_IDLE_TIMEOUT (1000, idle timeout); a shutdown closes each after its running turn (1001).",
			Responses: []docResponse{{Status: 101, Description: "Switching to the WebSocket protocol.", Body: map[string]any{}},
				{Status: 426, Description: "Not a WebSocket upgrade.", Body: openAIErrorBody{}}, docOpenAIUnauthorized,
				{Status: 503, Description: "The server is shutting down.", Body: openAIErrorBody{}}}},
		{Method: "POST", Path: "/v1/responses/compact", Tag: "openai", Auth: true, Summary: "Compact a conversation into a sealed compaction item",
			Description: "The model summarises the conversation (previous_response_id's chain, then input) and the answer's output is one compaction item whose encrypted_content seals the summary " +
				"(XChaCha20-Poly1305 under a key derived from SECRET_KEY, bound to your user). Pass it back as input, HTTP or WebSocket, in place of what it summarised. " +
				"A tampered, foreign or pre-rotation compaction is a 400 naming the item. One rate-limit token; tokens budgeted and counted. Nothing is stored.",
			Request: compactRequestDoc{},
			Responses: []docResponse{{Status: 200, Description: "{id, object: response.compaction, created_at, output: [compaction], usage}.", Body: map[string]any{}},
				{Status: 400, Description: "model missing, invalid input, or previous_response_not_found.", Body: openAIErrorBody{}},
				docOpenAIUnauthorized, docOpenAIModel, docOpenAITooLarge, docOpenAILimited, docOpenAIUpstream, docOpenAIBusy, docOpenAITimeout}},
		{Method: "POST", Path: "/v1/conversations", Tag: "openai", Auth: true, Summary: "Create a conversation",
			Description: "Optional initial items and metadata. A response given conversation reads its items as context and appends its input and output, atomically. Kept RESPONSES_TTL after its last change.",
			Request:     conversationRequestDoc{},
			Responses: []docResponse{{Status: 200, Description: "{id, object: conversation, created_at, metadata}.", Body: conversationObject{}},
				{Status: 400, Description: "Invalid items or metadata.", Body: openAIErrorBody{}}, docOpenAIUnauthorized}},
		{Method: "GET", Path: "/v1/conversations/{id}", Tag: "openai", Auth: true, Summary: "A conversation of yours",
			Responses: []docResponse{{Status: 200, Description: "The conversation.", Body: conversationObject{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "POST", Path: "/v1/conversations/{id}", Tag: "openai", Auth: true, Summary: "Replace a conversation's metadata",
			Request: conversationUpdateDoc{},
			Responses: []docResponse{{Status: 200, Description: "The conversation.", Body: conversationObject{}},
				{Status: 400, Description: "Missing or invalid metadata.", Body: openAIErrorBody{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "DELETE", Path: "/v1/conversations/{id}", Tag: "openai", Auth: true, Summary: "Delete a conversation and its items",
			Responses: []docResponse{{Status: 200, Description: "{id, object: conversation.deleted, deleted: true}.", Body: conversationDeleted{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "GET", Path: "/v1/conversations/{id}/items", Tag: "openai", Auth: true, Summary: "A conversation's items, a page at a time",
			Description: "Query: after (an item id), limit (1-100, default 20), order (asc or desc, default desc).",
			Responses: []docResponse{{Status: 200, Description: "A list page: data, first_id, last_id, has_more.", Body: conversationItemList{}},
				{Status: 400, Description: "Bad limit, order or after.", Body: openAIErrorBody{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "POST", Path: "/v1/conversations/{id}/items", Tag: "openai", Auth: true, Summary: "Append items to a conversation",
			Request: conversationItemsDoc{},
			Responses: []docResponse{{Status: 200, Description: "A list of the items added, with their ids.", Body: conversationItemList{}},
				{Status: 400, Description: "Invalid items.", Body: openAIErrorBody{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "GET", Path: "/v1/conversations/{id}/items/{item_id}", Tag: "openai", Auth: true, Summary: "One item of a conversation",
			Responses: []docResponse{{Status: 200, Description: "The item.", Body: map[string]any{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "DELETE", Path: "/v1/conversations/{id}/items/{item_id}", Tag: "openai", Auth: true, Summary: "Delete an item of a conversation",
			Responses: []docResponse{{Status: 200, Description: "The conversation.", Body: conversationObject{}}, docOpenAIUnauthorized, docConversationNotFound}},
		{Method: "GET", Path: "/v1/responses/{id}", Tag: "openai", Auth: true, Summary: "A stored response of yours",
			Responses: []docResponse{{Status: 200, Description: "The Response object.", Body: map[string]any{}}, docOpenAIUnauthorized, docResponseNotFound}},
		{Method: "DELETE", Path: "/v1/responses/{id}", Tag: "openai", Auth: true, Summary: "Delete a stored response of yours",
			Responses: []docResponse{{Status: 200, Description: "{id, object: response, deleted: true}.", Body: deletedResponse{}}, docOpenAIUnauthorized, docResponseNotFound}},
		{Method: "GET", Path: "/v1/responses/{id}/input_items", Tag: "openai", Auth: true, Summary: "The input items of a stored response",
			Description: "Query: after (an item id), limit (1-100, default 20), order (asc or desc, default desc).",
			Responses: []docResponse{{Status: 200, Description: "A list page: data, first_id, last_id, has_more.", Body: inputItemList{}},
				{Status: 400, Description: "Bad limit, order or after.", Body: openAIErrorBody{}}, docOpenAIUnauthorized, docResponseNotFound}},
	}
}
