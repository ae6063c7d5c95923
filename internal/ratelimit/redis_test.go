package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestRedis(t *testing.T) {
	t.Parallel()
	testLimiter(t, func(t *testing.T) Limiter {
		return NewRedis(redistest.Client(t), redistest.Prefix(t))
	})
}

func TestRedisSurvivesScriptFlush(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	l := NewRedis(c, redistest.Prefix(t))
	p := Policy{Capacity: 3, RefillPerSecond: 0.01}
	mustAllow(t, l, "k", p)
	if err := c.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	// The script is gone from Redis; the state is not.
	if d := mustAllow(t, l, "k", p); !d.Allowed || d.Remaining != 1 {
		t.Errorf("Allow after SCRIPT FLUSH = %+v, want allowed with remaining 1", d)
	}
}

func TestRedisSharedBetweenReplicas(t *testing.T) {
	t.Parallel()
	url := redistest.URL(t)
	prefix := redistest.Prefix(t)
	// Two replicas: separate clients, separate limiters, one Redis.
	replicas := []*Redis{
		NewRedis(newClient(t, url), prefix),
		NewRedis(newClient(t, url), prefix),
	}
	p := Policy{Capacity: 5, RefillPerSecond: 0.0001}
	allowed := 0
	for i := range 12 {
		if mustAllow(t, replicas[i%2], "user:1", p).Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d of 12 alternating requests allowed, want 5", allowed)
	}
}

func TestRedisKeyLayout(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t)
	l := NewRedis(c, prefix)
	ctx := t.Context()
	p := Policy{Capacity: 10, RefillPerSecond: 2} // 5s from empty to full

	mustPeek(t, l, "k", p)
	if n := c.Exists(ctx, prefix+"k").Val(); n != 0 {
		t.Errorf("Peek of a fresh key created it")
	}
	mustAllow(t, l, "k", p)
	ttl, err := c.PTTL(ctx, prefix+"k").Result()
	if err != nil {
		t.Fatal(err)
	}
	// One token spent: full again in 500ms, plus the 1s margin.
	if ttl <= 0 || ttl > 1500*time.Millisecond {
		t.Errorf("PTTL = %v, want in (0, 1.5s]", ttl)
	}
	fields, err := c.HGetAll(ctx, prefix+"k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fields["tokens"]; !ok || fields["ts"] == "" {
		t.Errorf("hash = %v, want tokens and ts", fields)
	}
}

func TestRedisError(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t)
	// A key of the wrong type makes the script fail inside Redis.
	if err := c.Set(t.Context(), prefix+"k", "not a hash", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	l := NewRedis(c, prefix)
	if _, err := l.Allow(t.Context(), "k", Policy{Capacity: 1, RefillPerSecond: 1}); err == nil {
		t.Error("Allow on a string key succeeded")
	}
}

func newClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func BenchmarkRedisAllow(b *testing.B) {
	c := redistest.Client(b)
	l := NewRedis(c, redistest.Prefix(b))
	p := Policy{Name: "bench", Capacity: 1 << 40, RefillPerSecond: 1e9}
	ctx := context.Background()
	b.Run("Serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.Allow(ctx, "user:0", p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(ctx, "user:0", p); err != nil {
					b.Error(err)
				}
			}
		})
	})
}

// allowWith is a Limiter whose Allow goes through AllowWith, carrying a
// PING along, so the shared limiter tests cover the pipelined path.
type allowWith struct{ *Redis }

func (a allowWith) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	ping := redis.NewStatusCmd(ctx, "ping")
	d, err := a.Redis.AllowWith(ctx, key, p, ping)
	if err == nil && ping.Val() != "PONG" {
		return d, fmt.Errorf("the command sent along answered %q, %v", ping.Val(), ping.Err())
	}
	return d, err
}

func TestRedisAllowWith(t *testing.T) {
	t.Parallel()
	testLimiter(t, func(t *testing.T) Limiter {
		return allowWith{NewRedis(redistest.Client(t), redistest.Prefix(t))}
	})
}

func TestRedisAllowWithSurvivesScriptFlush(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	l := allowWith{NewRedis(c, redistest.Prefix(t))}
	p := Policy{Capacity: 3, RefillPerSecond: 0.01}
	mustAllow(t, l, "k", p)
	if err := c.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	if d := mustAllow(t, l, "k", p); !d.Allowed || d.Remaining != 1 {
		t.Errorf("AllowWith after SCRIPT FLUSH = %+v, want allowed with remaining 1", d)
	}
}

// TestRedisRetriedCallSpendsOnce runs one call of the script twice, as the
// Redis client does when a reply is lost to a broken connection after Redis
// ran the command: the second run answers as the first without spending.
func TestRedisRetriedCallSpendsOnce(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	l := NewRedis(c, redistest.Prefix(t))
	p := Policy{Capacity: 5, RefillPerSecond: 0.001}
	keys := []string{l.prefix + "k"}
	run := func(call string) []int64 {
		t.Helper()
		res, err := l.script.Run(t.Context(), c, keys, p.Capacity, p.RefillPerSecond, 1, call).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := run("replica-a:1")
	again := run("replica-a:1")
	if first[1] != 4 || !slices.Equal(first, again) {
		t.Errorf("a call run twice answered %v then %v, want 4 tokens left both times", first, again)
	}
	if other := run("replica-a:2"); other[1] != 3 {
		t.Errorf("the next call left %d tokens, want 3", other[1])
	}
	if d, err := l.Peek(t.Context(), "k", p); err != nil || d.Remaining != 3 {
		t.Errorf("Peek = %+v, %v; want 3 left", d, err)
	}
}
