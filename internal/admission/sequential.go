package admission

import (
	"context"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/ratelimit"
)

// Getter reads one cached answer.
type Getter interface {
	Get(ctx context.Context, k cache.Key) ([]byte, bool, error)
}

// Sequential admits with any limiter and any cache: the decision first,
// then, for an allowed call, the lookup. It is the admitter of an
// in-process deployment, where neither costs a round trip. A nil Cache
// finds nothing.
type Sequential struct {
	Limiter ratelimit.Limiter
	Cache   Getter
}

// Allow takes one token of key's bucket under policy p.
func (a Sequential) Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	return a.Limiter.Allow(ctx, key, p)
}

// Peek reports key's bucket without taking a token.
func (a Sequential) Peek(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	return a.Limiter.Peek(ctx, key, p)
}

// AllowAndGet takes one token of key's bucket and, when the call is
// allowed, reads k from the cache.
func (a Sequential) AllowAndGet(ctx context.Context, key string, p ratelimit.Policy, k cache.Key) (Result, error) {
	var res Result
	var err error
	res.Decision, err = a.Limiter.Allow(ctx, key, p)
	if err != nil || !res.Decision.Allowed || a.Cache == nil {
		return res, err
	}
	res.LookedUp = true
	res.Value, res.Hit, res.CacheErr = a.Cache.Get(ctx, k)
	return res, nil
}
