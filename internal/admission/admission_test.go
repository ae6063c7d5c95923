package admission

import (
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/redis/go-redis/v9"
)

// newPipelined builds a Pipelined on client with a local fallback, as the
// server does, with keys of its own.
func newPipelined(t *testing.T, client *redis.Client) (Pipelined, *cache.Redis) {
	t.Helper()
	prefix := redistest.Prefix(t)
	lim, err := ratelimit.NewFallback(ratelimit.NewRedis(client, prefix+"rl:"), ratelimit.NewMemory(100),
		ratelimit.FallbackOptions{SharedTimeout: 5 * time.Second, ProbeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := cache.NewRedis(client, prefix+"cache:", time.Minute, 0)
	return Pipelined{Limiter: lim, Cache: c}, c
}

func TestPipelinedDecidesAndLooksUp(t *testing.T) {
	t.Parallel()
	a, c := newPipelined(t, redistest.Client(t))
	ctx := t.Context()
	p := ratelimit.Policy{Name: "free", Capacity: 2, RefillPerSecond: 0.001}
	k := cache.NewKey("user:1", "m", []byte("question"))

	res, err := a.AllowAndGet(ctx, "user:1", p, k)
	if err != nil || !res.Decision.Allowed || res.Decision.Remaining != 1 || !res.LookedUp || res.Hit || res.CacheErr != nil {
		t.Fatalf("first call: %+v, %v; want allowed, 1 left, looked up, miss", res, err)
	}
	if err := c.Set(ctx, k, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	res, err = a.AllowAndGet(ctx, "user:1", p, k)
	if err != nil || !res.Decision.Allowed || res.Decision.Remaining != 0 || !res.Hit || string(res.Value) != "answer" {
		t.Fatalf("second call: %+v, %v; want allowed, 0 left, hit with the answer", res, err)
	}
	res, err = a.AllowAndGet(ctx, "user:1", p, k)
	if err != nil || res.Decision.Allowed || res.Decision.RetryAfter <= 0 {
		t.Fatalf("third call: %+v, %v; want refused with a wait", res, err)
	}
}

func TestPipelinedAfterScriptFlush(t *testing.T) {
	t.Parallel()
	client := redistest.Client(t)
	a, c := newPipelined(t, client)
	ctx := t.Context()
	p := ratelimit.Policy{Name: "free", Capacity: 3, RefillPerSecond: 0.001}
	k := cache.NewKey("user:2", "m", []byte("q"))
	if _, err := a.AllowAndGet(ctx, "user:2", p, k); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, k, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	// Other tests share this Redis; each client recovers by EVAL.
	if err := client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := a.AllowAndGet(ctx, "user:2", p, k)
	if err != nil || !res.Decision.Allowed || res.Decision.Remaining != 1 || !res.Hit || string(res.Value) != "kept" {
		t.Fatalf("after SCRIPT FLUSH: %+v, %v; want allowed, 1 left (the bucket kept), hit", res, err)
	}
}

// TestPipelinedRedisDown: with Redis unreachable the decision falls back
// to the local limiter and the lookup fails as a cache error; once both
// know Redis is down, they skip it without waiting.
func TestPipelinedRedisDown(t *testing.T) {
	t.Parallel()
	client := redis.NewClient(&redis.Options{Addr: testkit.ClosedAddr(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { client.Close() })
	a, _ := newPipelined(t, client)
	ctx := t.Context()
	p := ratelimit.Policy{Name: "free", Capacity: 2, RefillPerSecond: 0.001}
	k := cache.NewKey("user:3", "m", []byte("q"))

	res, err := a.AllowAndGet(ctx, "user:3", p, k)
	if err != nil || !res.Decision.Allowed || !res.LookedUp || res.Hit || res.CacheErr == nil {
		t.Fatalf("first call with Redis down: %+v, %v; want a local decision and a failed lookup", res, err)
	}
	res, err = a.AllowAndGet(ctx, "user:3", p, k)
	if err != nil || !res.Decision.Allowed || res.Decision.Remaining != 0 || res.LookedUp {
		t.Fatalf("second call: %+v, %v; want the local bucket's last token and no lookup", res, err)
	}
	if !a.Limiter.Down() || a.Limiter.Fallbacks() != 2 {
		t.Errorf("limiter down %v with %d fallbacks, want down with 2", a.Limiter.Down(), a.Limiter.Fallbacks())
	}
	res, err = a.AllowAndGet(ctx, "user:3", p, k)
	if err != nil || res.Decision.Allowed {
		t.Fatalf("third call: %+v, %v; want the local bucket to refuse", res, err)
	}
}
