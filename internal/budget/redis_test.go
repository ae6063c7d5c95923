package budget

import (
	"context"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestRedis(t *testing.T) {
	t.Parallel()
	testBudget(t, func(t *testing.T, now func() time.Time) budgeter {
		return NewRedis(redistest.Client(t), redistest.Prefix(t), now)
	}, func(t *testing.T, n int) []budgeter {
		// Separate clients on one Redis: replicas.
		url, prefix := redistest.URL(t), redistest.Prefix(t)
		out := make([]budgeter, n)
		for i := range out {
			opts, err := redis.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewClient(opts)
			t.Cleanup(func() { c.Close() })
			out[i] = NewRedis(c, prefix, nil)
		}
		return out
	})
}

func TestRedisKeyLayoutAndExpiry(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t)
	now := func() time.Time { return time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC) }
	b := NewRedis(c, prefix, now)
	ctx := context.Background()
	r, _, err := b.Reserve(ctx, "user-1", 100, 7)
	if err != nil {
		t.Fatal(err)
	}
	key := prefix + "user-1:2026-03-10"
	if v, err := c.Get(ctx, key).Int64(); err != nil || v != 7 {
		t.Fatalf("GET %s = %d, %v", key, v, err)
	}
	ttl, err := c.TTL(ctx, key).Result()
	if err != nil || ttl <= 24*time.Hour || ttl > keyTTL {
		t.Fatalf("TTL %v, %v; want more than a day and at most %v", ttl, err, keyTTL)
	}
	if err := b.Settle(ctx, r, 3); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get(ctx, key).Int64(); v != 3 {
		t.Errorf("after settle: %d", v)
	}
	// A counter that expired before its call settled does not go negative.
	c.Del(ctx, key)
	b.Settle(ctx, Reservation{UserID: "user-1", Day: "2026-03-10", Amount: 50}, 10)
	if v, _ := c.Get(ctx, key).Int64(); v != 0 {
		t.Errorf("counter %d after settling into an expired key, want 0", v)
	}
}

func TestRedisUnavailable(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	b := NewRedis(c, "x:", nil)
	if _, _, err := b.Reserve(context.Background(), "u", 10, 1); err == nil {
		t.Error("Reserve against a dead Redis succeeded")
	}
	if _, err := b.Status(context.Background(), "u", 10); err == nil {
		t.Error("Status against a dead Redis succeeded")
	}
	if err := b.Settle(context.Background(), Reservation{UserID: "u", Day: "2026-01-01", Amount: 1}, 2); err == nil {
		t.Error("Settle against a dead Redis succeeded")
	}
}

// TestRedisRetriedCallsApplyOnce runs a reservation's and a settlement's
// script twice with the same mark, as the Redis client does when a reply
// is lost after Redis ran the command: the counter moves once for each.
func TestRedisRetriedCallsApplyOnce(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	r := NewRedis(c, redistest.Prefix(t), nil)
	ctx := t.Context()
	counter := r.key("u1", dayOf(time.Now()))
	ttl, mark := int64(keyTTL/time.Second), markTTL.Milliseconds()

	reserveMark := r.markKey(counter)
	for range 2 {
		res, err := r.reserve.Run(ctx, c, []string{counter, reserveMark}, 0, 30, ttl, mark).Int64Slice()
		if err != nil || res[0] != 1 || res[1] != 30 {
			t.Fatalf("reserve = %v, %v; want {1, 30} both times", res, err)
		}
	}
	settleMark := r.markKey(counter)
	for range 2 {
		used, err := r.settle.Run(ctx, c, []string{counter, settleMark}, -20, ttl, mark).Int64()
		if err != nil || used != 10 {
			t.Fatalf("settle = %d, %v; want 10 both times", used, err)
		}
	}
	if got, err := c.Get(ctx, counter).Int64(); err != nil || got != 10 {
		t.Errorf("counter = %d, %v; want 10", got, err)
	}
	if d, err := c.PTTL(ctx, reserveMark).Result(); err != nil || d <= 0 || d > markTTL {
		t.Errorf("mark TTL %v, %v; want at most %v", d, err, markTTL)
	}
}
