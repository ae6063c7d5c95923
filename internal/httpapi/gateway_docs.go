package httpapi

// OpenAPI entries of the API-key, usage and OpenAI-compatible routes.

// openAIChatRequestDoc documents the fields of a chat-completions body the
// gateway reads; every other OpenAI field is accepted and passed through.
type openAIChatRequestDoc struct {
	Model         string           `json:"model,omitempty" jsonschema:"maxLength=200"`
	Messages      []map[string]any `json:"messages" jsonschema:"required"`
	Stream        bool             `json:"stream,omitempty"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage,omitempty"`
	} `json:"stream_options,omitempty"`
	MaxTokens           *int64 `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int64 `json:"max_completion_tokens,omitempty"`
}

// openAIEmbeddingsRequestDoc documents an embeddings body.
type openAIEmbeddingsRequestDoc struct {
	Model string `json:"model" jsonschema:"required,maxLength=200"`
	Input any    `json:"input" jsonschema:"required"`
}

// Responses of the OpenAI-compatible routes, whose errors are OpenAI-shaped.
var (
	docOpenAIBad          = docResponse{Status: 400, Description: "Invalid request (malformed JSON, a wrong field type, max_tokens or max_completion_tokens over the tier's cap, or refused by the provider).", Body: openAIErrorBody{}}
	docOpenAIUnauthorized = docResponse{Status: 401, Description: "Missing, invalid, revoked or disabled credential (code invalid_api_key).", Body: openAIErrorBody{}}
	docOpenAIModel        = docResponse{Status: 404, Description: "Model not allowed or unknown (code model_not_found).", Body: openAIErrorBody{}}
	docOpenAITooLarge     = docResponse{Status: 413, Description: "Body larger than MAX_BODY_BYTES, or than the tier's MAX_BODY_BYTES_<TIER>.", Body: openAIErrorBody{}}
	docOpenAILimited      = docResponse{Status: 429, Description: "Rate limit (code rate_limit_exceeded, see Retry-After) or daily token budget used up (code insufficient_quota, X-Should-Retry: false).", Body: openAIErrorBody{}}
	docOpenAIUpstream     = docResponse{Status: 502, Description: "Every upstream failed (type api_error).", Body: openAIErrorBody{}}
	docOpenAIBusy         = docResponse{Status: 503, Description: "Upstreams rate limiting us, or the token budget store down; see Retry-After.", Body: openAIErrorBody{}}
	docOpenAITimeout      = docResponse{Status: 504, Description: "No first byte within UPSTREAM_TIMEOUT.", Body: openAIErrorBody{}}
	docBudgetExceeded     = docResponse{Status: 429, Description: "Rate limit exceeded, or the tier's daily token budget is used up (body names which; X-Should-Retry: false for the budget).", Body: errorBody{}}
)

func gatewayOperations() []operation {
	return []operation{
		{Method: "GET", Path: "/usage", Tag: "usage", Auth: true, Summary: "Your token usage by day and model",
			Description: "Query: from, to (YYYY-MM-DD, UTC, inclusive; default the current month so far). Usage is written within about a second of each call.",
			Responses:   []docResponse{{Status: 200, Description: "Totals by day and model.", Body: usageReport{}}, docUnauthorized, docValidation}},

		{Method: "POST", Path: "/keys", Tag: "keys", Auth: true, Summary: "Create an API key",
			Description: "The key (sk-..., 256 random bits) is shown only in this answer; only its hash is stored. Needs an access token: API keys cannot manage keys.",
			Request:     keyCreateRequest{},
			Responses: []docResponse{{Status: 201, Description: "The new key.", Body: keyCreated{}},
				docMalformed, docUnauthorized, docForbidden, {Status: 409, Description: "Too many active keys.", Body: errorBody{}}, docValidation}},
		{Method: "GET", Path: "/keys", Tag: "keys", Auth: true, Summary: "List your API keys (without secrets)",
			Responses: []docResponse{{Status: 200, Description: "Newest first, revoked ones included.", Body: keyList{}}, docUnauthorized, docForbidden}},
		{Method: "DELETE", Path: "/keys/{id}", Tag: "keys", Auth: true, Summary: "Revoke an API key",
			Description: "Effective at once on this replica and within 2 seconds on every other.",
			Responses:   []docResponse{{Status: 204, Description: "Revoked (also when it already was)."}, docUnauthorized, docForbidden, docNotFound}},

		{Method: "POST", Path: "/v1/chat/completions", Tag: "openai", Auth: true, Summary: "OpenAI chat completions (plain or streamed)",
			Description: "OpenAI's request and answer; fields other than model, stream, stream_options, max_tokens and max_completion_tokens are passed through untouched. " +
				"A call over the tier's completion-token cap (MAX_TOKENS_<TIER>) is 400; one naming no limit is sent with max_completion_tokens set to the cap. " +
				"With stream: true the answer is text/event-stream in OpenAI's chunk format. Rate limited, cached (plain answers), budgeted and counted like /chat. Accepts a JWT or an API key.",
			Request: openAIChatRequestDoc{},
			Responses: []docResponse{{Status: 200, Description: "A chat.completion object, or an event stream of chat.completion.chunk objects ending in [DONE].", Body: map[string]any{}},
				docOpenAIBad, docOpenAIUnauthorized, docOpenAIModel, docOpenAITooLarge, docOpenAILimited, docOpenAIUpstream, docOpenAIBusy, docOpenAITimeout}},
		{Method: "POST", Path: "/v1/embeddings", Tag: "openai", Auth: true, Summary: "OpenAI embeddings",
			Request: openAIEmbeddingsRequestDoc{},
			Responses: []docResponse{{Status: 200, Description: "A list of embeddings.", Body: map[string]any{}},
				docOpenAIBad, docOpenAIUnauthorized, docOpenAIModel, docOpenAITooLarge, docOpenAILimited, docOpenAIUpstream, docOpenAIBusy, docOpenAITimeout}},
		{Method: "GET", Path: "/v1/models", Tag: "openai", Auth: true, Summary: "Models this deployment allows",
			Description: "LLM_MODELS when set, else the upstream's own list (kept for a minute).",
			Responses:   []docResponse{{Status: 200, Description: "An OpenAI model list.", Body: map[string]any{}}, docOpenAIUnauthorized, docOpenAIUpstream}},
		{Method: "GET", Path: "/v1/models/{model}", Tag: "openai", Auth: true, Summary: "One model",
			Responses: []docResponse{{Status: 200, Description: "An OpenAI model object.", Body: map[string]any{}}, docOpenAIUnauthorized, docOpenAIModel}},
	}
}
