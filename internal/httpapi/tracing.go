package httpapi

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// withTracing opens the request's server span (continuing a caller's W3C
// trace context if it sent one). The span is named after the matched route
// once the mux has chosen it; the limiter, cache and upstream spans nest
// under it through the request context. With a no-op tracer this costs a
// few allocations and records nothing.
func withTracing(tracer trace.Tracer) func(http.Handler) http.Handler {
	prop := propagation.TraceContext{}
	return func(next http.Handler) http.Handler {
		if tracer == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", r.Method)))
			defer span.End()
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r.WithContext(ctx))
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			if ri := requestInfoFrom(ctx); ri != nil {
				if ri.route != "" {
					span.SetName(ri.route)
					span.SetAttributes(attribute.String("http.route", ri.route))
				}
				span.SetAttributes(attribute.String("agentapi.request_id", ri.id))
				if ri.userID != "" {
					span.SetAttributes(attribute.String("enduser.id", ri.userID))
				}
			}
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
		})
	}
}
