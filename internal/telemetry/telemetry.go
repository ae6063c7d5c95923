// Package telemetry sets up OpenTelemetry tracing when an OTLP endpoint is
// configured, and wraps the rate limiter and the response cache so each call
// becomes a span. Nothing here touches OpenTelemetry's global providers: the
// tracer provider is built, passed in and shut down explicitly.
package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/ratelimit"
)

// instrumentation names the tracer.
const instrumentation = "github.com/agentapi/agentapi"

// Tracing is a tracer provider and its shutdown.
type Tracing struct {
	Provider trace.TracerProvider
	enabled  bool
	shutdown func(context.Context) error
}

// Disabled is tracing that records nothing and costs almost nothing.
func Disabled() *Tracing {
	return &Tracing{Provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}
}

// NewOTLP exports spans in batches over OTLP/HTTP to endpoint (a URL such as
// http://otel-collector:4318; the exporter appends /v1/traces).
func NewOTLP(ctx context.Context, endpoint, serviceName, version string) (*Tracing, error) {
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint+"/v1/traces"))
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(serviceName), semconv.ServiceVersion(version))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{Provider: tp, enabled: true, shutdown: tp.Shutdown}, nil
}

// Tracer is the service's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.Provider.Tracer(instrumentation) }

// Shutdown flushes pending spans (bounded by ctx).
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }

// Transport traces outgoing upstream calls (one client span each, with the
// W3C trace context propagated to the upstream). Disabled tracing returns
// base itself, so the hot path pays nothing.
func (t *Tracing) Transport(base http.RoundTripper) http.RoundTripper {
	if !t.enabled {
		return base
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.Provider),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "upstream " + r.Method + " " + r.URL.Path }))
}

// Limiter wraps a rate limiter so each decision is a span.
type Limiter struct {
	Next   ratelimit.Limiter
	Tracer trace.Tracer
}

// Allow implements ratelimit.Limiter.
func (l Limiter) Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	ctx, span := l.Tracer.Start(ctx, "ratelimit.allow", trace.WithAttributes(attribute.String("ratelimit.tier", p.Name)))
	defer span.End()
	d, err := l.Next.Allow(ctx, key, p)
	end(span, err)
	span.SetAttributes(attribute.Bool("ratelimit.allowed", d.Allowed), attribute.Int64("ratelimit.remaining", d.Remaining))
	return d, err
}

// Peek implements ratelimit.Limiter.
func (l Limiter) Peek(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	ctx, span := l.Tracer.Start(ctx, "ratelimit.peek", trace.WithAttributes(attribute.String("ratelimit.tier", p.Name)))
	defer span.End()
	d, err := l.Next.Peek(ctx, key, p)
	end(span, err)
	return d, err
}

// responseCache is the cache's method set.
type responseCache interface {
	Get(ctx context.Context, k cache.Key) ([]byte, bool, error)
	Set(ctx context.Context, k cache.Key, v []byte) error
}

// Cache wraps a response cache so each lookup and store is a span.
type Cache struct {
	Next   responseCache
	Tracer trace.Tracer
}

// Get implements the cache.
func (c Cache) Get(ctx context.Context, k cache.Key) ([]byte, bool, error) {
	ctx, span := c.Tracer.Start(ctx, "cache.get")
	defer span.End()
	v, ok, err := c.Next.Get(ctx, k)
	end(span, err)
	span.SetAttributes(attribute.Bool("cache.hit", ok))
	return v, ok, err
}

// Set implements the cache.
func (c Cache) Set(ctx context.Context, k cache.Key, v []byte) error {
	ctx, span := c.Tracer.Start(ctx, "cache.set", trace.WithAttributes(attribute.Int("cache.bytes", len(v))))
	defer span.End()
	err := c.Next.Set(ctx, k, v)
	end(span, err)
	return err
}

func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "failed")
	}
}

// ShutdownTimeout bounds the final flush of spans at exit.
const ShutdownTimeout = 5 * time.Second
