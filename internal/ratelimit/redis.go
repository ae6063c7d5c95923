package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// bucketScript decides one request in one atomic step inside Redis, so
// replicas sharing the Redis never race each other between read and write.
//
// KEYS[1] is the bucket, a hash of tokens (a float) and ts (Redis time in
// microseconds when tokens was true), plus the last spending call and its
// answer (below). ARGV is capacity, refill per second,
// and cost: 1 for Allow, 0 for Peek. It returns allowed (0/1), whole tokens
// left, milliseconds until one token, and milliseconds until full, rounded
// up as decide does in Go.
//
// Time comes from Redis's own clock so that replicas with skewed clocks
// agree. Since Redis 5 scripts replicate their effects, not their source,
// which makes reading TIME before a write legal; on Redis 4
// replicate_commands switches that on, later versions ignore it. Numbers are
// stored with explicit formats so no Redis version rounds the microsecond
// timestamp. A missing
// hash is a full bucket, which is also what expiry turns an idle bucket into,
// so the TTL is the time until full plus a margin for clock steps. Peek and
// a denied Allow write nothing: the stored state already implies the answer.
//
// ARGV[4] names the call (empty for Peek). A token taken is stored with
// the call's name and answer, and the same call run again answers the same
// without taking another: the Redis client re-sends a command whose reply
// was lost to a broken connection, and Redis may have run it the first
// time. Only the latest spending call is remembered, which covers the retry
// that follows at once.
const bucketScript = `
if redis.replicate_commands then redis.replicate_commands() end

local capacity = tonumber(ARGV[1])
local per_us = tonumber(ARGV[2]) / 1000000
local cost = tonumber(ARGV[3])
local call = ARGV[4]

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'call', 'answer')
if call ~= '' and state[3] == call and state[4] then
  local a, b, c, d = string.match(state[4], '^(%d+) (%d+) (%d+) (%d+)$')
  if a then return {tonumber(a), tonumber(b), tonumber(c), tonumber(d)} end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tokens = capacity
local stored, ts = tonumber(state[1]), tonumber(state[2])
if stored and ts then
  tokens = math.min(capacity, stored + math.max(0, now - ts) * per_us)
end

-- Milliseconds to refill need tokens, rounded as waitFor does in Go.
local function wait_ms(need)
  if need <= 0 then return 0 end
  return math.min(3153600000000, math.ceil(math.floor(need / per_us + 0.5) / 1000))
end

if tokens < 1 then
  return {0, math.floor(tokens), math.max(1, wait_ms(1 - tokens)), wait_ms(capacity - tokens)}
end
if cost > 0 then
  tokens = tokens - cost
  local answer = {1, math.floor(tokens), 0, wait_ms(capacity - tokens)}
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.0f', now),
    'call', call, 'answer', string.format('%d %d %d %d', answer[1], answer[2], answer[3], answer[4]))
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / per_us / 1000) + 1000)
  return answer
end
return {1, math.floor(tokens), 0, wait_ms(capacity - tokens)}
`

// Redis is a [Limiter] whose buckets live in Redis, so every replica that
// uses the same Redis and prefix enforces one limit. It is safe for
// concurrent use.
//
// Each decision is one EVALSHA of a Lua script (go-redis falls back to EVAL
// when Redis answers NOSCRIPT, e.g. after a restart or SCRIPT FLUSH). The
// script touches one key, so it also works on Redis Cluster.
type Redis struct {
	client redis.UniversalClient
	prefix string
	script *redis.Script
	// calls names each Allow: a random prefix for this limiter, then a
	// counter (see the script's ARGV[4]).
	callPrefix string
	calls      atomic.Uint64
}

// NewRedis returns a Redis limiter that stores key's bucket at prefix+key.
// It does not talk to Redis until the first decision.
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	b := make([]byte, 8)
	rand.Read(b) // never fails
	return &Redis{client: c, prefix: prefix, script: redis.NewScript(bucketScript), callPrefix: hex.EncodeToString(b) + ":"}
}

// callName returns a name no other Allow of any replica uses.
func (r *Redis) callName() string {
	return r.callPrefix + strconv.FormatUint(r.calls.Add(1), 36)
}

// Allow takes one token from key's bucket if it has one. A changed policy
// applies from this call on; tokens carry over, capped at the new capacity.
func (r *Redis) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	return r.AllowWith(ctx, key, p)
}

// Peek reports key's bucket without taking a token or writing anything.
func (r *Redis) Peek(ctx context.Context, key string, p Policy) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	// Cost 0 and no call name: a Peek spends nothing, so it has nothing
	// to recognise when repeated.
	return r.decision(key, p, r.script.Run(ctx, r.client, []string{r.prefix + key}, p.Capacity, p.RefillPerSecond, 0, ""))
}

// AllowWith is Allow sending extra commands to Redis in the same round
// trip: one pipeline holds the script's EVALSHA and then extra, so a caller
// that needs Redis anyway (a cache lookup, say) pays for one round trip,
// not two. Each extra command carries its own result and error; err is
// about the decision only. If Redis has lost the script (a restart, SCRIPT
// FLUSH), the decision is retried alone with EVAL, which also reloads it;
// extra commands are not sent twice.
func (r *Redis) AllowWith(ctx context.Context, key string, p Policy, extra ...redis.Cmder) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	keys := []string{r.prefix + key}
	pipe := r.client.Pipeline()
	call := r.callName()
	cmd := r.script.EvalSha(ctx, pipe, keys, p.Capacity, p.RefillPerSecond, 1, call)
	for _, c := range extra {
		// Queuing on a pipeline cannot fail; errors come from Exec.
		_ = pipe.Process(ctx, c)
	}
	// Exec's error is the first command's error, which cmd holds too.
	_, _ = pipe.Exec(ctx)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd = r.script.Eval(ctx, r.client, keys, p.Capacity, p.RefillPerSecond, 1, call)
	}
	return r.decision(key, p, cmd)
}

// decision reads the script's answer.
func (r *Redis) decision(key string, p Policy, cmd *redis.Cmd) (Decision, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: redis bucket %q: %w", key, err)
	}
	if len(res) != 4 {
		return Decision{}, fmt.Errorf("ratelimit: redis bucket %q: script returned %d values, want 4", key, len(res))
	}
	return Decision{
		Allowed:    res[0] == 1,
		Limit:      p.Capacity,
		Remaining:  res[1],
		RetryAfter: msDuration(res[2]),
		Reset:      msDuration(res[3]),
	}, nil
}

// msDuration converts the script's milliseconds to a Duration.
func msDuration(ms int64) time.Duration {
	return time.Duration(ms) * time.Millisecond
}
