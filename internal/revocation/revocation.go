// Package revocation shares logged-out access tokens between replicas.
//
// Every replica keeps the revoked token ids in an in-process [auth.DenyList],
// which every request consults at the cost of a map lookup: no request waits
// on Redis, so a Redis outage slows nothing. A logout adds the id to the local
// list at once and to a sorted set in Redis; each replica polls that set every
// PollInterval (250ms by default) for entries newer than the last it saw, so
// every replica refuses a logged-out token within about a second.
//
// The sorted set's scores are Redis's own clock at the time of the write
// (taken inside a script), so replicas with skewed clocks still agree on what
// is new. Members are "jti|expiry-unix-ms"; entries older than a token lifetime
// are trimmed, since such tokens have expired anyway. A revocation that cannot
// reach Redis stays in force locally and is retried at every poll.
package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentapi/agentapi/internal/auth"
)

// Defaults for [Options].
const (
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultRedisTimeout bounds one poll or write; the poll runs in the
	// background, so this is about not piling up, not about latency.
	DefaultRedisTimeout = time.Second
	// overlap re-reads entries slightly older than the newest one seen, so a
	// write that committed with an equal score after a read is not missed
	// (seeing an entry twice is harmless).
	overlap = 2 * time.Second
	// maxPending bounds the revocations waiting for Redis to come back.
	maxPending = 100_000
)

// addScript adds one member scored with Redis's clock in milliseconds, and
// trims entries written more than ARGV[2] milliseconds ago.
const addScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return now
`

// Options configures a [List].
type Options struct {
	// Redis shares revocations between replicas; nil keeps them in this
	// process only (one replica).
	Redis redis.UniversalClient
	// Key is the sorted set's key, e.g. "agentapi:revoked".
	Key string
	// MaxTokenLifetime is the longest an access token lives; entries are
	// kept in Redis this long (plus leeway). Required with Redis.
	MaxTokenLifetime time.Duration
	// PollInterval is how often Run reads new entries; 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Logger receives one record when Redis stops answering and one when
	// it answers again; nil discards them.
	Logger *slog.Logger
}

type entry struct {
	jti string
	exp time.Time
}

// List revokes access tokens locally and, with Redis, on every replica. It
// is safe for concurrent use.
type List struct {
	deny   *auth.DenyList
	o      Options
	script *redis.Script

	mu      sync.Mutex
	pending []entry
	cursor  int64 // newest score seen, Redis milliseconds
	down    bool
}

// New returns a List that adds to deny, the list the token verifier consults.
func New(deny *auth.DenyList, o Options) (*List, error) {
	if deny == nil {
		return nil, errors.New("revocation: nil deny list")
	}
	if o.Redis != nil && (o.Key == "" || o.MaxTokenLifetime <= 0) {
		return nil, errors.New("revocation: Redis needs a key and the token lifetime")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &List{deny: deny, o: o, script: redis.NewScript(addScript)}, nil
}

// Revoke refuses the token id until exp, here at once and on other replicas
// within about a second. The local refusal never fails; an error means Redis
// did not take the entry, which is then retried at every poll.
func (l *List) Revoke(ctx context.Context, jti string, exp time.Time) error {
	l.deny.Add(jti, exp)
	if l.o.Redis == nil {
		return nil
	}
	if err := l.publish(ctx, entry{jti, exp}); err != nil {
		l.mu.Lock()
		if len(l.pending) < maxPending {
			l.pending = append(l.pending, entry{jti, exp})
		}
		l.mu.Unlock()
		return err
	}
	return nil
}

func (l *List) publish(ctx context.Context, e entry) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultRedisTimeout)
	defer cancel()
	keep := (l.o.MaxTokenLifetime + time.Minute).Milliseconds()
	member := e.jti + "|" + strconv.FormatInt(e.exp.UnixMilli(), 10)
	if err := l.script.Run(ctx, l.o.Redis, []string{l.o.Key}, member, keep).Err(); err != nil {
		return fmt.Errorf("revocation: publish: %w", err)
	}
	return nil
}

// Poll sends revocations that are waiting for Redis, then adds the entries
// other replicas wrote since the last poll to the local list. The first poll
// loads every entry still in Redis.
func (l *List) Poll(ctx context.Context) error {
	if l.o.Redis == nil {
		return nil
	}
	l.mu.Lock()
	pending := l.pending
	l.pending = nil
	cursor := l.cursor
	l.mu.Unlock()
	for i, e := range pending {
		if err := l.publish(ctx, e); err != nil {
			l.mu.Lock()
			l.pending = append(l.pending, pending[i:]...)
			l.mu.Unlock()
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultRedisTimeout)
	defer cancel()
	minScore := "-inf"
	if cursor > 0 {
		minScore = strconv.FormatInt(cursor-overlap.Milliseconds(), 10)
	}
	zs, err := l.o.Redis.ZRangeByScoreWithScores(ctx, l.o.Key, &redis.ZRangeBy{Min: minScore, Max: "+inf"}).Result()
	if err != nil {
		return fmt.Errorf("revocation: poll: %w", err)
	}
	newest := cursor
	for _, z := range zs {
		member, _ := z.Member.(string)
		jti, expMs, ok := strings.Cut(member, "|")
		ms, err := strconv.ParseInt(expMs, 10, 64)
		if !ok || err != nil {
			continue // not ours; nothing to refuse
		}
		l.deny.Add(jti, time.UnixMilli(ms))
		newest = max(newest, int64(z.Score))
	}
	l.mu.Lock()
	l.cursor = max(l.cursor, newest)
	l.mu.Unlock()
	return nil
}

// Run polls every PollInterval until ctx ends, logging when Redis stops and
// starts answering (not at every failed poll).
func (l *List) Run(ctx context.Context) {
	if l.o.Redis == nil {
		return
	}
	tick := time.NewTicker(l.o.PollInterval)
	defer tick.Stop()
	for {
		err := l.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		wasDown := l.down
		l.down = err != nil
		l.mu.Unlock()
		switch {
		case err != nil && !wasDown:
			l.o.Logger.Warn("revocation list: Redis is not answering; logouts on other replicas are not seen here until it is back", "error", err.Error())
		case err == nil && wasDown:
			l.o.Logger.Info("revocation list: Redis is answering again")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
