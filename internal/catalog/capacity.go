package catalog

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Capacity counts what each deployment was sent in the current minute, so
// that its rpm and tpm caps hold. Memory counts for one process; Redis
// for every replica sharing it.
//
// A minute is the clock's minute (fixed windows): simple, shared across
// replicas with no coordination, and what providers' own per-minute
// limits mostly are.

// MemoryCapacity counts per-minute use in this process. It is safe for
// concurrent use.
type MemoryCapacity struct {
	now func() time.Time

	mu     sync.Mutex
	minute int64
	reqs   map[string]int64
	tokens map[string]int64
}

// NewMemoryCapacity returns empty counters; now is the clock (time.Now
// when nil).
func NewMemoryCapacity(now func() time.Time) *MemoryCapacity {
	if now == nil {
		now = time.Now
	}
	return &MemoryCapacity{now: now, reqs: map[string]int64{}, tokens: map[string]int64{}}
}

func (m *MemoryCapacity) roll() {
	minute := m.now().Unix() / 60
	if minute != m.minute {
		m.minute = minute
		clear(m.reqs)
		clear(m.tokens)
	}
}

// Acquire counts one request to deployment when it is under both caps
// this minute, and reports whether it was.
func (m *MemoryCapacity) Acquire(_ context.Context, deployment string, rpm, tpm int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roll()
	if (rpm > 0 && m.reqs[deployment] >= rpm) || (tpm > 0 && m.tokens[deployment] >= tpm) {
		return false, nil
	}
	m.reqs[deployment]++
	return true, nil
}

// AddTokens counts tokens a call to deployment used.
func (m *MemoryCapacity) AddTokens(_ context.Context, deployment string, tokens int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roll()
	m.tokens[deployment] += tokens
	return nil
}

// acquireScript checks both counters of the minute and counts the request
// in one step, so two replicas never both take the last slot. KEYS are
// the minute's request and token counters (one hash tag: one slot on a
// cluster); ARGV the caps (0: none) and the keys' lifetime in seconds.
const acquireScript = `
local reqs = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
if (rpm > 0 and reqs >= rpm) or (tpm > 0 and tokens >= tpm) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
`

// RedisCapacity counts per-minute use in Redis, shared by every replica
// using the same prefix. Keys are "<prefix>{<deployment>:<minute>}:r" and
// ":t", and expire two minutes after their minute began.
type RedisCapacity struct {
	client  redis.UniversalClient
	prefix  string
	now     func() time.Time
	acquire *redis.Script
}

// NewRedisCapacity returns counters in Redis under prefix.
func NewRedisCapacity(c redis.UniversalClient, prefix string, now func() time.Time) *RedisCapacity {
	if now == nil {
		now = time.Now
	}
	return &RedisCapacity{client: c, prefix: prefix, now: now, acquire: redis.NewScript(acquireScript)}
}

const capacityKeyTTL = 120 // seconds

func (r *RedisCapacity) keys(deployment string) (string, string) {
	base := r.prefix + "{" + deployment + ":" + strconv.FormatInt(r.now().Unix()/60, 10) + "}"
	return base + ":r", base + ":t"
}

// Acquire is [MemoryCapacity.Acquire] on the shared counters.
func (r *RedisCapacity) Acquire(ctx context.Context, deployment string, rpm, tpm int64) (bool, error) {
	reqs, tokens := r.keys(deployment)
	n, err := r.acquire.Run(ctx, r.client, []string{reqs, tokens}, rpm, tpm, capacityKeyTTL).Int64()
	if err != nil {
		return false, fmt.Errorf("catalog: capacity of deployment %q: %w", deployment, err)
	}
	return n == 1, nil
}

// AddTokens is [MemoryCapacity.AddTokens] on the shared counters.
func (r *RedisCapacity) AddTokens(ctx context.Context, deployment string, tokens int64) error {
	_, key := r.keys(deployment)
	pipe := r.client.Pipeline()
	pipe.IncrBy(ctx, key, tokens)
	pipe.Expire(ctx, key, capacityKeyTTL*time.Second)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("catalog: count tokens of deployment %q: %w", deployment, err)
	}
	return nil
}
