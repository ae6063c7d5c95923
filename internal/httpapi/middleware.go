package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/agentapi/agentapi/internal/gateway"
)

type ctxKey int

const (
	ctxRequestInfo ctxKey = iota
	ctxPrincipal
)

// requestInfo travels with a request so that the one access-log line can carry
// what the handlers learned (who, cache, tokens) without a second log call.
type requestInfo struct {
	id     string
	route  string // the matched ServeMux pattern, for metrics
	userID string
	// call and more are the governed model calls the request made (most
	// make one, kept without a slice); the fields below them are filled
	// from their outcomes when the request ends.
	call  *gateway.Call
	more  []*gateway.Call
	tier  string
	limit string // rate-limit result: "allowed", "limited", "error", or ""
	cache string // "hit", "miss", or "" when not applicable
	model string
	// tokens is the call's total; prompt and completion split it for metrics.
	tokens, prompt, completion int64
	// dbError notes a database failure the request survived (or died of).
	dbError bool
	err     error
	// toolCalls and turns are a tool-loop response's (responses_agent.go).
	toolCalls, turns int
}

// noteCall adds a model call to the request's record.
func (ri *requestInfo) noteCall(c *gateway.Call) {
	switch {
	case ri == nil:
	case ri.call == nil:
		ri.call = c
	default:
		ri.more = append(ri.more, c)
	}
}

// takeOutcomes copies what the request's model calls did into the record:
// the first call's tier, rate-limit and cache results (later turns of a
// request spend no token and are not cached), the tokens of them all, and
// the model of the last that used any. It is the one place a call's
// outcome reaches the access log.
func (ri *requestInfo) takeOutcomes() {
	if ri.call == nil {
		return
	}
	first := ri.call.Outcome()
	ri.tier, ri.limit, ri.cache = first.Tier.Name, first.Limit.String(), first.Cache.String()
	ri.addUsage(first)
	for _, c := range ri.more {
		ri.addUsage(c.Outcome())
	}
}

// addUsage counts one call's tokens in the record.
func (ri *requestInfo) addUsage(o gateway.Outcome) {
	if o.Usage.TotalTokens != 0 {
		ri.tokens += o.Usage.TotalTokens
		ri.prompt += o.Usage.PromptTokens
		ri.completion += o.Usage.CompletionTokens
		ri.model = o.Model
	}
}

func requestInfoFrom(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(ctxRequestInfo).(*requestInfo)
	return ri
}

func requestID(ctx context.Context) string {
	if ri := requestInfoFrom(ctx); ri != nil {
		return ri.id
	}
	return ""
}

// validRequestID accepts a caller's X-Request-ID only if it is short and plain,
// so it cannot smuggle anything into logs or headers.
func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	rand.Read(b) // never fails (crypto/rand panics on its own if the OS source breaks)
	return hex.EncodeToString(b)
}

// requestIDHeader is X-Request-ID in the canonical form net/http uses.
const requestIDHeader = "X-Request-Id"

// withRequestID accepts or assigns the request id and echoes it back.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The header is named in its canonical form ("X-Request-Id"), the
		// form net/http stores and sends: Get and Set with "X-Request-ID"
		// would canonicalize, and allocate, on every request.
		var id string
		if v := r.Header[requestIDHeader]; len(v) > 0 {
			id = v[0]
		}
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header()[requestIDHeader] = []string{id}
		ri := &requestInfo{id: id}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxRequestInfo, ri)))
	})
}

// statusRecorder remembers the status and size for the access log. It keeps
// Flush and Unwrap working so streaming handlers and http.ResponseController
// see the real writer.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// sendNow puts a complete answer on the wire before the access log line
// and the metrics are made, so the client does not wait for them (they
// cost as much as a tenth of what the gateway adds to a call). An answer is
// complete when all of the length it declared has been written; any other
// (a stream, which has flushed itself, or one net/http will frame) is left
// to net/http. The duration logged includes sending it.
func sendNow(w http.ResponseWriter, rec *statusRecorder) {
	cl := rec.Header()["Content-Length"]
	if rec.status == 0 || len(cl) != 1 {
		return
	}
	if n, err := strconv.ParseInt(cl[0], 10, 64); err != nil || n != rec.bytes {
		return
	}
	_ = http.NewResponseController(w).Flush()
}

// withRecover turns a panic into a 500 in the usual error shape; the stack goes
// to the log only.
func withRecover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.LogAttrs(r.Context(), slog.LevelError, "panic",
					slog.String("request_id", requestID(r.Context())),
					slog.String("panic", fmt.Sprint(v)),
					slog.String("stack", string(debug.Stack())))
				writeError(w, r, logger, fmt.Errorf("panic: %v", v))
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// withCORS answers browsers only for origins on the allowlist. A "*" entry
// allows any origin but then never with credentials; listed origins get
// credentials. Other origins get no CORS headers at all.
func withCORS(origins []string) func(http.Handler) http.Handler {
	any := slices.Contains(origins, "*")
	return func(next http.Handler) http.Handler {
		if len(origins) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			h := w.Header()
			h.Add("Vary", "Origin")
			listed := origin != "" && slices.Contains(origins, origin)
			if origin != "" && (listed || any) {
				if listed {
					h.Set("Access-Control-Allow-Origin", origin)
					h.Set("Access-Control-Allow-Credentials", "true")
				} else {
					h.Set("Access-Control-Allow-Origin", "*")
				}
				h.Set("Access-Control-Expose-Headers", "X-Request-ID, Retry-After, RateLimit, RateLimit-Policy")
				if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
					h.Add("Vary", "Access-Control-Request-Method")
					h.Add("Vary", "Access-Control-Request-Headers")
					h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
					h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-ID")
					h.Set("Access-Control-Max-Age", "600")
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// withBodyLimit caps every request body; decodeJSON turns the overflow into a 413.
func withBodyLimit(logger *slog.Logger, max int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				writeError(w, r, logger, errStatus(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body exceeds %d bytes", max)))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, max)
			next.ServeHTTP(w, r)
		})
	}
}

// withSecurityHeaders sets headers that cost nothing and close off content sniffing.
func withSecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Canonical names and shared values: Set would check the names
		// and allocate a value slice per header per request. Sharing is
		// safe because len == cap: anything appending copies first.
		h := w.Header()
		h["X-Content-Type-Options"] = nosniffValue
		h["Cache-Control"] = noStoreValue
		next.ServeHTTP(w, r)
	})
}

var (
	nosniffValue = []string{"nosniff"}
	noStoreValue = []string{"no-store"}
)

// bearer extracts the credential of an "Authorization: Bearer x" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}
