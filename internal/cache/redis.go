package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultCallTimeout bounds one Get or Set of a [Redis] cache. A healthy
// Redis answers in about a millisecond; a cache that cannot answer well
// within a request's budget is worth less than going to the model, so the
// caller gets an error instead of waiting for the client's own, longer,
// socket timeouts (and their retry).
const DefaultCallTimeout = 50 * time.Millisecond

// Redis is a response cache in Redis, shared by every replica using the
// same Redis and prefix. Each Get and Set is one command, bounded by
// DefaultCallTimeout (for socket reads and writes too when the client has
// ContextTimeoutEnabled, as package redisconn's clients do). It is safe for
// concurrent use.
type Redis struct {
	client        redis.UniversalClient
	prefix        string
	ttl           time.Duration
	maxEntryBytes int
	callTimeout   time.Duration
}

// NewRedis returns a cache storing k's value at prefix+k, each entry
// expiring ttl (DefaultTTL if ttl <= 0) after it was written. Values over
// maxEntryBytes (DefaultMaxEntryBytes if maxEntryBytes < 1) are not stored.
// It does not talk to Redis until the first call.
func NewRedis(c redis.UniversalClient, prefix string, ttl time.Duration, maxEntryBytes int) *Redis {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	// Redis expiries have millisecond resolution; a shorter TTL would be
	// rejected as zero.
	ttl = max(ttl, time.Millisecond)
	if maxEntryBytes < 1 {
		maxEntryBytes = DefaultMaxEntryBytes
	}
	return &Redis{client: c, prefix: prefix, ttl: ttl, maxEntryBytes: maxEntryBytes, callTimeout: DefaultCallTimeout}
}

// Get returns k's value, or false if k is absent or expired.
func (r *Redis) Get(ctx context.Context, k Key) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	v, err := r.client.Get(ctx, r.prefix+string(k)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cache: redis get: %w", err)
	}
	return v, true, nil
}

// Set stores v under k with the cache's TTL (SET with an expiry, one
// atomic command), replacing any previous value. A value over the
// per-entry cap is not stored and Set returns nil.
func (r *Redis) Set(ctx context.Context, k Key, v []byte) error {
	if len(v) > r.maxEntryBytes {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	if err := r.client.Set(ctx, r.prefix+string(k), v, r.ttl).Err(); err != nil {
		return fmt.Errorf("cache: redis set: %w", err)
	}
	return nil
}
