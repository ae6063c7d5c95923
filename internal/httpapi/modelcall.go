package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/tier"
)

// defaultStreamWriteTimeout is used when Deps.StreamWriteTimeout is zero.
const defaultStreamWriteTimeout = 30 * time.Second

// modelRoutes is what the handlers that call a model share: the gateway
// (the governed call's lifecycle) and the HTTP side of it.
type modelRoutes struct {
	logger       *slog.Logger
	gw           *gateway.Gateway
	writeTimeout time.Duration
	metrics      *metrics.Metrics // nil records nothing
}

func newModelRoutes(d Deps) *modelRoutes {
	m := &modelRoutes{logger: d.Logger, gw: d.Gateway, writeTimeout: d.StreamWriteTimeout, metrics: d.Metrics}
	if m.writeTimeout <= 0 {
		m.writeTimeout = defaultStreamWriteTimeout
	}
	return m
}

// callerOf is the gateway's view of who the request acts for.
func callerOf(ctx context.Context) gateway.Principal {
	p := principalFrom(ctx)
	return gateway.Principal{UserID: p.UserID, Tier: p.Tier, KeyID: p.KeyID}
}

// begin starts the request's governed model call and notes it for the
// access log. Every answer, refused or not, carries the IETF RateLimit
// headers of the decision. A refused call is answered here (429 with the
// legacy body, a budget's 429, or the limiter's error) and ok is false.
//
// Handlers call it once the request is known to be valid, so a request
// refused as malformed spends nothing.
func (m *modelRoutes) begin(w http.ResponseWriter, r *http.Request, s gateway.Spec) (call *gateway.Call, ok bool) {
	ctx := r.Context()
	s.RequestID = requestID(ctx)
	call, err := m.gw.Begin(ctx, callerOf(ctx), s)
	if call != nil {
		requestInfoFrom(ctx).noteCall(call)
		if o := call.Outcome(); o.Limit == gateway.LimitAllowed || o.Limit == gateway.LimitRefused {
			setRateLimitHeaders(w.Header(), o.Tier.RateLimit, o.Decision)
		}
	}
	if err != nil {
		writeError(w, r, m.logger, err)
		return nil, false
	}
	return call, true
}

// limitBody bounds the request body by the caller's tier. The answer to
// a larger body names the limit (413), like the server-wide bound's.
func (m *modelRoutes) limitBody(w http.ResponseWriter, r *http.Request) tier.Tier {
	t := m.gw.Tier(callerOf(r.Context()))
	if t.MaxBodyBytes > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, t.MaxBodyBytes)
	}
	return t
}

// errModelNotAllowed is OpenAI's answer for a model one may not use.
func errModelNotAllowed(model string) *apiError {
	msg := fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model)
	return &apiError{status: http.StatusNotFound, message: msg,
		openAI: openAIErrorFields{typ: "invalid_request_error", code: "model_not_found", param: "model"}}
}

// answerThenStore sends a complete answer, then keeps stored in the cache
// as the call's answer. The cache write (a Redis round trip, or otter's
// bookkeeping) then does not hold up the answer. A client reusing its
// connection still finds the entry: net/http reads a connection's next
// request only once this handler has returned.
func answerThenStore(ctx context.Context, w http.ResponseWriter, call *gateway.Call, answer, stored []byte) {
	writeRawJSON(w, http.StatusOK, answer)
	_ = http.NewResponseController(w).Flush()
	call.Store(ctx, stored)
}

// writeRawJSON writes a JSON body we already have as bytes. It states the
// length, so the answer can be sent before the handler chain returns (see
// withAccessLog) without being chunked.
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
}

var jsonContentType = []string{"application/json"}

// tokenBudgetBody is the 429 detail of a used-up budget outside /v1, in
// the spirit of the legacy rate-limit body.
type tokenBudgetBody struct {
	Error        string `json:"error"`
	Tier         string `json:"tier"`
	Budget       int64  `json:"budget"`
	Used         int64  `json:"used"`
	ResetSeconds int64  `json:"reset_seconds"`
}
