package cache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentapi/agentapi/internal/redisconn"
)

// DefaultCallTimeout bounds one Get or Set of a [Redis] cache, dial and
// retry included. A healthy Redis answers in about a millisecond, but
// giving up on a live one is costly: a lookup cut short becomes a model
// call, and a failure turns the cache off for DefaultProbeInterval. A hung
// Redis, on the other hand, makes only about one call per interval wait
// this long, the others being bypassed. So the bound is generous on the
// scale of Redis and small on the scale of a request.
const DefaultCallTimeout = 200 * time.Millisecond

// DefaultProbeInterval is how often, while Redis is failing, one call of a
// [Redis] cache tries it again. The other calls fail at once with
// [ErrBypassed], so a hung Redis costs a request DefaultCallTimeout about
// once per interval per replica instead of on every Get and Set.
const DefaultProbeInterval = time.Second

// ErrBypassed is returned by a [Redis] cache that skips Redis because its
// last call failed and the next probe is not yet due. Callers treat it like
// any other cache error: go to the model.
var ErrBypassed = errors.New("cache: redis failing, bypassed until the next probe")

// Redis is a response cache in Redis, shared by every replica using the
// same Redis and prefix. Each Get and Set is one command, bounded by
// DefaultCallTimeout (for socket reads and writes too when the client has
// ContextTimeoutEnabled, as package redisconn's clients do). After a call
// fails for want of Redis (unreachable, timed out), the cache is bypassed
// until a probe succeeds; see [DefaultProbeInterval]. It is safe for
// concurrent use.
type Redis struct {
	client        redis.UniversalClient
	prefix        string
	ttl           time.Duration
	maxEntryBytes int
	callTimeout   time.Duration
	probeInterval time.Duration
	// now is the clock; tests replace it.
	now func() time.Time
	// nearPrefix is the prefix of the keys that anchored entries are
	// placed next to (see PlaceNear); "" leaves every entry unplaced.
	nearPrefix string

	// down is set while Redis is considered failing.
	down atomic.Bool
	// nextProbe is when (Unix nanoseconds) a call may next try Redis
	// while down.
	nextProbe atomic.Int64
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
	return &Redis{
		client: c, prefix: prefix, ttl: ttl, maxEntryBytes: maxEntryBytes,
		callTimeout: DefaultCallTimeout, probeInterval: DefaultProbeInterval, now: time.Now,
	}
}

// PlaceNear makes the cache store each entry whose key has an anchor (see
// [Key.Near]) in the Redis Cluster hash slot of the key
// anchorPrefix+anchor, by a hash tag naming that key. Without it, and for
// keys without an anchor, an entry's name is prefix+digest and its slot is
// the digest's: entries spread over the cluster. It must be called before
// the cache is used.
//
// Placing entries changes their names, so entries written before (by a
// replica without placement) are not found: a rolling deploy costs some
// misses while it runs, nothing else.
func (r *Redis) PlaceNear(anchorPrefix string) {
	r.nearPrefix = anchorPrefix
}

// name is k's Redis key.
func (r *Redis) name(k Key) string {
	digest, anchor := k.parts()
	if anchor == "" || r.nearPrefix == "" {
		return r.prefix + digest
	}
	return redisconn.KeyNear(r.nearPrefix+anchor, r.prefix, digest)
}

// Get returns k's value, or false if k is absent or expired.
func (r *Redis) Get(ctx context.Context, k Key) ([]byte, bool, error) {
	cmd := r.GetCmd(ctx, k)
	if cmd == nil {
		return nil, false, ErrBypassed
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	_ = r.client.Process(cctx, cmd) // the error is cmd's, read below
	return r.GetResult(ctx, cmd)
}

// GetCmd returns the GET that reads k, for a caller that sends it to Redis
// itself, in a pipeline with commands of its own; GetResult then reads its
// answer. It returns nil while the cache is bypassed (see
// [DefaultProbeInterval]): the caller then has nothing to send.
func (r *Redis) GetCmd(ctx context.Context, k Key) *redis.StringCmd {
	if r.bypass() {
		return nil
	}
	return redis.NewStringCmd(ctx, "get", r.name(k))
}

// GetResult reads the answer of a GET made by GetCmd once it ran, as Get
// does, and updates the cache's view of Redis's health from it. ctx is
// the caller's, which tells a failure of Redis from a caller giving up.
func (r *Redis) GetResult(ctx context.Context, cmd *redis.StringCmd) ([]byte, bool, error) {
	v, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		r.markUp()
		return nil, false, nil
	}
	if err != nil {
		r.markFailed(ctx, err)
		return nil, false, fmt.Errorf("cache: redis get: %w", err)
	}
	r.markUp()
	return v, true, nil
}

// Set stores v under k with the cache's TTL (SET with an expiry, one
// atomic command), replacing any previous value. A value over the
// per-entry cap is not stored and Set returns nil.
func (r *Redis) Set(ctx context.Context, k Key, v []byte) error {
	if len(v) > r.maxEntryBytes {
		return nil
	}
	if r.bypass() {
		return ErrBypassed
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	if err := r.client.Set(cctx, r.name(k), v, r.ttl).Err(); err != nil {
		r.markFailed(ctx, err)
		return fmt.Errorf("cache: redis set: %w", err)
	}
	r.markUp()
	return nil
}

// SetMany stores entries in one pipelined round trip (entries over the
// size bound are skipped, as Set skips them). Background sends its batches
// through it.
func (r *Redis) SetMany(ctx context.Context, entries []Entry) error {
	if r.bypass() {
		return ErrBypassed
	}
	cctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	defer cancel()
	_, err := r.client.Pipelined(cctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			if len(e.Value) <= r.maxEntryBytes {
				p.Set(cctx, r.name(e.Key), e.Value, r.ttl)
			}
		}
		return nil
	})
	if err != nil {
		r.markFailed(ctx, err)
		return fmt.Errorf("cache: redis set of %d entries: %w", len(entries), err)
	}
	r.markUp()
	return nil
}

// bypass reports whether this call should skip Redis: it is failing and
// this call is not the one probe allowed per interval.
func (r *Redis) bypass() bool {
	if !r.down.Load() {
		return false
	}
	next := r.nextProbe.Load()
	now := r.now().UnixNano()
	return now < next || !r.nextProbe.CompareAndSwap(next, now+int64(r.probeInterval))
}

// markFailed starts or extends bypassing after err, unless err says nothing
// about Redis's health: the caller gave up (ctx ended), or Redis answered
// with an error reply, which it can only do while up.
func (r *Redis) markFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	if _, ok := errors.AsType[redis.Error](err); ok {
		return
	}
	r.nextProbe.Store(r.now().Add(r.probeInterval).UnixNano())
	r.down.Store(true)
}

// markUp ends bypassing after a call that reached Redis.
func (r *Redis) markUp() {
	if r.down.Load() {
		r.down.Store(false)
	}
}
