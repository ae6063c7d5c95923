package budget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentapi/agentapi/internal/redisconn"
)

// keyTTL is how long a day's counter lives after its last change: the day
// itself, a day more for calls settling after midnight and for replicas
// whose clocks disagree about the date, and then it expires on its own.
const keyTTL = 48 * time.Hour

// reserveScript checks and reserves in one step, so no two replicas can both
// see room that only one of them may take.
//
// KEYS[1] is the user's counter for the day and KEYS[2] the call's mark
// (below). ARGV is the limit (0 for none), the amount to reserve and the
// TTL in seconds. It returns {1, counter after} when admitted and
// {0, counter} when the budget is used up.
//
// A reservation leaves a mark holding its answer for markTTL: the Redis
// client re-sends a command whose reply was lost to a broken connection,
// Redis may have run it the first time, and the mark makes the second run
// answer the same without reserving again. settleScript marks its calls
// the same way.
const reserveScript = `
local done = redis.call('GET', KEYS[2])
if done then
  return {1, tonumber(done)}
end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if limit > 0 and used >= limit then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], used, 'PX', ARGV[4])
return {1, used}
`

// settleScript applies the difference between actual and reserved tokens,
// never taking the counter below zero (which only an expired key could
// cause), and keeps the key alive. KEYS[2] is the call's mark, ARGV[3] its
// lifetime in milliseconds.
const settleScript = `
local done = redis.call('GET', KEYS[2])
if done then
  return tonumber(done)
end
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used < 0 then
  redis.call('SET', KEYS[1], 0)
  used = 0
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], used, 'PX', ARGV[3])
return used
`

// markTTL is how long a call's mark lives: far longer than the client's
// retry, which follows within milliseconds, and short enough that marks
// cost little memory (one small key per call for this long).
const markTTL = 10 * time.Second

// Redis keeps budgets in Redis, shared by every replica that uses the same
// Redis and prefix. One key per user and day, "<prefix><user id>:<date>",
// holds the counter; each reservation and settlement also leaves a
// short-lived mark, "<prefix>call:{<counter key>}<call>". The mark's hash
// tag is the counter's whole name, so on a Redis Cluster both keys share a
// slot and one script may touch both, while the counter keeps the name it
// had before clusters were supported (a rolling upgrade finds every
// day's count where the previous version left it). It is safe for
// concurrent use.
type Redis struct {
	client  redis.UniversalClient
	prefix  string
	now     func() time.Time
	reserve *redis.Script
	settle  *redis.Script
	// calls names each reservation and settlement: a random part for
	// this budget (callPrefix), then a counter.
	callPrefix string
	calls      atomic.Uint64
}

// NewRedis returns a Redis budget storing counters under prefix. now is the
// clock that decides the date (time.Now when nil).
func NewRedis(c redis.UniversalClient, prefix string, now func() time.Time) *Redis {
	if now == nil {
		now = time.Now
	}
	b := make([]byte, 8)
	rand.Read(b) // never fails
	return &Redis{client: c, prefix: prefix, now: now, callPrefix: hex.EncodeToString(b) + ":",
		reserve: redis.NewScript(reserveScript), settle: redis.NewScript(settleScript)}
}

// markKey returns the key of a new call's mark on counter, in counter's
// cluster slot.
func (r *Redis) markKey(counter string) string {
	return redisconn.KeyNear(counter, r.prefix+"call:", r.callPrefix+strconv.FormatUint(r.calls.Add(1), 36))
}

func (r *Redis) key(userID, day string) string { return r.prefix + userID + ":" + day }

// Reserve is [Memory.Reserve] on the shared counter.
func (r *Redis) Reserve(ctx context.Context, userID string, limit, amount int64) (Reservation, Status, error) {
	if err := validate(userID, amount); err != nil {
		return Reservation{}, Status{}, err
	}
	now := r.now()
	day := dayOf(now)
	counter := r.key(userID, day)
	res, err := r.reserve.Run(ctx, r.client, []string{counter, r.markKey(counter)},
		max(limit, 0), amount, int64(keyTTL/time.Second), markTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return Reservation{}, Status{}, fmt.Errorf("budget: reserve for user %q: %w", userID, err)
	}
	if len(res) != 2 {
		return Reservation{}, Status{}, fmt.Errorf("budget: reserve for user %q: script returned %d values, want 2", userID, len(res))
	}
	st := Status{Used: res[1], Limit: max(limit, 0), Reset: untilMidnight(now)}
	if res[0] != 1 {
		return Reservation{}, st, &ExceededError{Status: st}
	}
	return Reservation{UserID: userID, Day: day, Amount: amount}, st, nil
}

// Settle is [Memory.Settle] on the shared counter.
func (r *Redis) Settle(ctx context.Context, res Reservation, actual int64) error {
	if res.UserID == "" {
		return nil
	}
	counter := r.key(res.UserID, res.Day)
	err := r.settle.Run(ctx, r.client, []string{counter, r.markKey(counter)},
		actual-res.Amount, int64(keyTTL/time.Second), markTTL.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("budget: settle for user %q: %w", res.UserID, err)
	}
	return nil
}

// Status is [Memory.Status] on the shared counter.
func (r *Redis) Status(ctx context.Context, userID string, limit int64) (Status, error) {
	now := r.now()
	used, err := r.client.Get(ctx, r.key(userID, dayOf(now))).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Status{}, fmt.Errorf("budget: status of user %q: %w", userID, err)
	}
	return Status{Used: used, Limit: max(limit, 0), Reset: untilMidnight(now)}, nil
}
