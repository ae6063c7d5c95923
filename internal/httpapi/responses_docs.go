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
	Tools              []map[string]any  `json:"tools,omitempty" jsonschema:"description=Function tools only."`
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
