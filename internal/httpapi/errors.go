package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
)

// apiError is an error a handler already knows the status of. Its body is the
// legacy contract's shape: {"error": <message or object>, "path": <request path>}.
type apiError struct {
	status  int
	message any // a string, or an object such as the 429 body
	details []fieldProblem
	header  http.Header
	cause   error // for the log only

	// openAI refines the OpenAI-shaped body that /v1 paths get instead of
	// the legacy contract's; its zero value is derived from the status.
	openAI openAIErrorFields
}

// openAIErrorFields are the parts of an OpenAI error object that the status
// alone does not decide. Empty fields take their defaults.
type openAIErrorFields struct {
	message string // when message above is not a string, or should read differently
	typ     string
	code    string
	param   string
}

func (e *apiError) Error() string {
	if s, ok := e.message.(string); ok {
		return s
	}
	return http.StatusText(e.status)
}

func (e *apiError) Unwrap() error { return e.cause }

// fieldProblem names one invalid field of a request body.
type fieldProblem struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func errStatus(status int, msg string) *apiError { return &apiError{status: status, message: msg} }

func errValidation(problems ...fieldProblem) *apiError {
	return &apiError{status: http.StatusUnprocessableEntity, message: "Validation failed", details: problems}
}

type errorBody struct {
	Error     any            `json:"error"`
	Path      string         `json:"path"`
	Details   []fieldProblem `json:"details,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
}

// writeError is the one place errors become HTTP responses. Known errors map to
// their status; everything else is a 500 whose body says nothing about
// internals and carries the request id, while the details go to the log.
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	ae, ue := mapError(r.Context(), logger, err)
	for k, v := range ae.header {
		w.Header()[k] = v
	}
	if isAnthropicPath(r.URL.Path) {
		status, body := anthropicError(ae, ue, requestID(r.Context()))
		writeJSON(w, status, body)
		return
	}
	if isOpenAIPath(r.URL.Path) {
		// SDKs pointed at /v1 parse OpenAI's shape; the same mapping above
		// decided the status, only the body differs.
		status, body := openAIError(ae, ue, requestID(r.Context()))
		writeJSON(w, status, body)
		return
	}
	body := errorBody{Error: ae.message, Path: r.URL.Path, Details: ae.details}
	if ae.status >= 500 {
		body.RequestID = requestID(r.Context())
	}
	writeJSON(w, ae.status, body)
}

// mapError decides what err is answered with (and logs a 5xx), for
// writeError and for the error events of a WebSocket, which carry the
// same status and OpenAI error object.
func mapError(ctx context.Context, logger *slog.Logger, err error) (*apiError, *llm.UpstreamError) {
	info := requestInfoFrom(ctx)
	var ae *apiError
	var ue *llm.UpstreamError
	var limited *gateway.LimitedError
	var exceeded *gateway.BudgetExceededError
	var forbidden *gateway.ModelForbiddenError
	var unknown *catalog.UnknownModelError
	var spent *gateway.SpendExceededError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &unknown):
		ae = errModelNotAllowed(unknown.Model)
	case errors.As(err, &forbidden):
		ae = &apiError{status: http.StatusForbidden,
			message: fmt.Sprintf("The %s tier may not use the model `%s`.", forbidden.Tier, forbidden.Model),
			openAI:  openAIErrorFields{typ: "permission_error", code: "model_not_allowed", param: "model"}}
	case errors.As(err, &limited):
		ae = &apiError{status: http.StatusTooManyRequests,
			message: rateLimitBody{Error: "Rate limit exceeded", Tier: limited.Policy.Name, Limit: limited.Policy.Capacity},
			header:  http.Header{"Retry-After": {strconv.FormatInt(ceilSeconds(limited.Decision.RetryAfter, 1), 10)}}}
	case errors.As(err, &exceeded):
		st := exceeded.Status
		reset := ceilSeconds(st.Reset, 1)
		msg := fmt.Sprintf("Daily token budget of the %s tier (%d tokens per UTC day) is used up: %d used; it resets at 00:00 UTC, in %d seconds.",
			exceeded.Tier, st.Limit, st.Used, reset)
		ae = &apiError{status: http.StatusTooManyRequests,
			message: tokenBudgetBody{Error: "Daily token budget exceeded", Tier: exceeded.Tier, Budget: st.Limit, Used: st.Used, ResetSeconds: reset},
			// Waiting seconds will not help, so tell the SDKs not to retry.
			header: http.Header{"Retry-After": {strconv.FormatInt(reset, 10)}, "X-Should-Retry": {"false"}},
			openAI: openAIErrorFields{message: msg, typ: "insufficient_quota", code: "insufficient_quota"}}
	case errors.As(err, &spent):
		reset := ceilSeconds(spent.Reset, 1)
		msg := fmt.Sprintf("Daily spend limit of the %s tier (%s USD per UTC day) is used up: %s USD spent; it resets at 00:00 UTC, in %d seconds.",
			spent.Tier, spent.Limit, spent.Used, reset)
		ae = &apiError{status: http.StatusTooManyRequests,
			message: spendLimitBody{Error: "Daily spend limit exceeded", Tier: spent.Tier, LimitUSD: spent.Limit.String(), UsedUSD: spent.Used.String(), ResetSeconds: reset},
			header:  http.Header{"Retry-After": {strconv.FormatInt(reset, 10)}, "X-Should-Retry": {"false"}},
			openAI:  openAIErrorFields{message: msg, typ: "insufficient_quota", code: "insufficient_quota"}}
	case errors.Is(err, gateway.ErrBudgetUnavailable):
		ae = &apiError{status: http.StatusServiceUnavailable, message: "Token budget unavailable",
			header: http.Header{"Retry-After": {"1"}}}
	case errors.Is(err, auth.ErrInvalidToken):
		ae = &apiError{status: http.StatusUnauthorized, message: "Invalid token",
			header: http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}}}
	case errors.As(err, &ue):
		ae = upstreamError(ue)
	case errors.Is(err, llm.ErrUpstreamTimeout), errors.Is(err, context.DeadlineExceeded):
		ae = errStatus(http.StatusGatewayTimeout, "Upstream model timed out")
	case errors.Is(err, store.ErrUnavailable):
		ae = &apiError{status: http.StatusServiceUnavailable, message: "Database unavailable; retry later",
			header: http.Header{"Retry-After": {"1"}}}
	case errors.Is(err, ratelimit.ErrUnavailable):
		ae = errStatus(http.StatusServiceUnavailable, "Rate limiter unavailable")
	case errors.Is(err, store.ErrNotFound):
		ae = errStatus(http.StatusNotFound, "Not found")
	case errors.Is(err, store.ErrConflict):
		ae = errStatus(http.StatusConflict, "Conflict")
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		// The client went away; nobody reads this response. 499 is nginx's
		// convention and shows in the access log as what happened.
		ae = errStatus(499, "Client closed request")
	default:
		ae = errStatus(http.StatusInternalServerError, "Internal server error")
	}
	if info != nil {
		info.err = err
	}
	if ae.status >= 500 {
		logger.LogAttrs(ctx, slog.LevelError, "request failed",
			slog.String("request_id", requestID(ctx)), slog.Int("status", ae.status), slog.String("error", err.Error()))
	}
	return ae, ue
}

// upstreamError maps a failed provider call: the upstream's own trouble is a
// bad gateway, its rate limit is our temporary unavailability, and its silence
// is a gateway timeout.
func upstreamError(ue *llm.UpstreamError) *apiError {
	switch {
	case errors.Is(ue, llm.ErrUpstreamTimeout):
		return errStatus(http.StatusGatewayTimeout, "Upstream model timed out")
	case errors.Is(ue, llm.ErrUpstreamRateLimited):
		secs := int64(ue.RetryAfter.Round(time.Second) / time.Second)
		if secs < 1 {
			secs = 1
		}
		return &apiError{status: http.StatusServiceUnavailable, message: "Upstream model is rate limited; retry later",
			header: http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}}
	case errors.Is(ue, llm.ErrUpstreamRejected) && (ue.Status == http.StatusBadRequest || ue.Status == http.StatusNotFound || ue.Status == http.StatusUnprocessableEntity):
		// The request itself was refused (say, an unknown model): the caller's to fix.
		return errStatus(http.StatusBadRequest, "The model provider rejected the request (check the model name and parameters)")
	default:
		// Anything else, including the upstream refusing our own key, is ours.
		return errStatus(http.StatusBadGateway, "Upstream model failed")
	}
}

// isOpenAIPath reports whether a path belongs to the OpenAI-compatible
// surface, whose errors take OpenAI's shape.
func isOpenAIPath(path string) bool {
	return path == "/v1" || strings.HasPrefix(path, "/v1/")
}

// openAIErrorBody is OpenAI's error envelope. Param and code are null when
// they do not apply, as OpenAI sends them.
type openAIErrorBody struct {
	Error openAIErrorObject `json:"error"`
}

type openAIErrorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAIError renders an already mapped error in OpenAI's shape, so the
// official SDKs raise their usual exception for the status. A request the
// upstream itself refused (400, 404, 422) passes on the upstream's own
// status and error object: it describes the caller's request (an unknown
// model, a bad parameter) better than we could, and our upstream key is
// already redacted from it.
func openAIError(ae *apiError, ue *llm.UpstreamError, reqID string) (int, openAIErrorBody) {
	if ue != nil && errors.Is(ue, llm.ErrUpstreamRejected) && ae.status == http.StatusBadRequest {
		var up openAIErrorBody
		if json.Unmarshal(ue.Body, &up) == nil && up.Error.Message != "" {
			if up.Error.Type == "" {
				up.Error.Type = "invalid_request_error"
			}
			return ue.Status, up
		}
	}
	f := ae.openAI
	if f.message == "" {
		switch m := ae.message.(type) {
		case string:
			f.message = m
		case rateLimitBody:
			f.message = fmt.Sprintf("Rate limit exceeded for the %s tier (bursts of %d requests); retry after the Retry-After header's seconds.", m.Tier, m.Limit)
		default:
			f.message = http.StatusText(ae.status)
		}
		if len(ae.details) > 0 {
			parts := make([]string, len(ae.details))
			for i, d := range ae.details {
				parts[i] = d.Field + " " + d.Problem
			}
			f.message += ": " + strings.Join(parts, "; ")
		}
	}
	if f.param == "" && len(ae.details) > 0 {
		f.param = ae.details[0].Field
	}
	if f.typ == "" {
		switch {
		case ae.status == http.StatusUnauthorized:
			f.typ = "authentication_error"
			if f.code == "" {
				f.code = "invalid_api_key"
			}
		case ae.status == http.StatusForbidden:
			f.typ = "permission_error"
		case ae.status == http.StatusTooManyRequests:
			f.typ = "requests"
			if f.code == "" {
				f.code = "rate_limit_exceeded"
			}
		case ae.status >= 500:
			f.typ = "api_error"
		default:
			f.typ = "invalid_request_error"
		}
	}
	if ae.status >= 500 && reqID != "" {
		f.message += " (request id " + reqID + ")"
	}
	out := openAIErrorBody{Error: openAIErrorObject{Message: f.message, Type: f.typ}}
	if f.param != "" {
		out.Error.Param = &f.param
	}
	if f.code != "" {
		out.Error.Code = &f.code
	}
	return ae.status, out
}

// spendLimitBody is the 429 detail of a used-up spend limit outside /v1.
type spendLimitBody struct {
	Error        string `json:"error"`
	Tier         string `json:"tier"`
	LimitUSD     string `json:"limit_usd"`
	UsedUSD      string `json:"used_usd"`
	ResetSeconds int64  `json:"reset_seconds"`
}
