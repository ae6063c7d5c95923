// Package admission makes a request's rate-limit decision and looks its
// cached answer up in one Redis round trip.
//
// A cacheable call needs both: the bucket's decision (a Lua script) and the
// cache entry (a GET). Sent one after the other they cost two round trips
// on every request; [Pipelined] sends them as one pipeline. The limiter
// keeps its own semantics (timeout, fallback while Redis is down, probes),
// and so does the cache (bypass while Redis fails): each reads its own
// answer from the shared round trip.
package admission

import (
	"context"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Result is the outcome of one admission.
type Result struct {
	// Decision is the rate limiter's.
	Decision ratelimit.Decision
	// LookedUp reports whether the cache was read in the same step.
	// When false the caller reads it itself if it still wants to: the
	// limiter answered without Redis (it is down), so the lookup was never
	// sent.
	LookedUp bool
	// Value and Hit are the cache's answer, when LookedUp.
	Value []byte
	Hit   bool
	// CacheErr is the lookup's error, when LookedUp; the decision stands
	// regardless (a cache that fails is a miss).
	CacheErr error
}

// Pipelined admits with a Redis limiter and a Redis cache. Both must use
// the same Redis client for the pipeline to be one round trip. The zero
// Tracer traces nothing.
type Pipelined struct {
	Limiter *ratelimit.Fallback
	Cache   *cache.Redis
	Tracer  trace.Tracer
	// Direct, when set, answers Allow and Peek (calls without a lookup)
	// instead of Limiter: the same limiter, wrapped (say, traced).
	Direct ratelimit.Limiter
}

// AllowAndGet takes one token of key's bucket under policy p and reads k
// from the cache, in one round trip when both can reach Redis.
func (a Pipelined) AllowAndGet(ctx context.Context, key string, p ratelimit.Policy, k cache.Key) (res Result, err error) {
	if a.Tracer != nil {
		var span trace.Span
		ctx, span = a.Tracer.Start(ctx, "ratelimit.allow+cache.get", trace.WithAttributes(attribute.String("ratelimit.tier", p.Name)))
		defer func() {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, "failed")
			}
			span.SetAttributes(attribute.Bool("ratelimit.allowed", res.Decision.Allowed),
				attribute.Bool("cache.looked_up", res.LookedUp), attribute.Bool("cache.hit", res.Hit))
			span.End()
		}()
	}
	get := a.Cache.GetCmd(ctx, k)
	if get == nil {
		// The cache is bypassed for now: decide alone.
		res.Decision, err = a.Limiter.Allow(ctx, key, p)
		return res, err
	}
	d, sent, err := a.Limiter.AllowWith(ctx, key, p, get)
	if err != nil {
		return Result{}, err
	}
	res.Decision = d
	if sent {
		res.LookedUp = true
		res.Value, res.Hit, res.CacheErr = a.Cache.GetResult(ctx, get)
	}
	return res, nil
}

// Allow takes one token of key's bucket under policy p, without a lookup.
func (a Pipelined) Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	if a.Direct != nil {
		return a.Direct.Allow(ctx, key, p)
	}
	return a.Limiter.Allow(ctx, key, p)
}

// Peek reports key's bucket without taking a token.
func (a Pipelined) Peek(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	if a.Direct != nil {
		return a.Direct.Peek(ctx, key, p)
	}
	return a.Limiter.Peek(ctx, key, p)
}
