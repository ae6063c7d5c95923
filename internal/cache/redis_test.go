package cache

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/redis/go-redis/v9"
)

func TestRedis(t *testing.T) {
	t.Parallel()
	testCache(t, func(t *testing.T, ttl time.Duration) store {
		return NewRedis(redistest.Client(t), redistest.Prefix(t), ttl, suiteMaxEntry)
	})
}

func TestRedisKeyAndTTL(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t)
	r := NewRedis(c, prefix, 90*time.Second, 1024)
	k := NewKey("global", "m", []byte("layout"))
	mustSet(t, r, k, []byte("v"))

	ttl, err := c.PTTL(t.Context(), prefix+string(k)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 90*time.Second {
		t.Errorf("PTTL = %v, want in (0, 90s]", ttl)
	}
	if got := c.Get(t.Context(), prefix+string(k)).Val(); got != "v" {
		t.Errorf("raw value = %q, want v", got)
	}
}

// TestRedisSetMany: a batch lands with the cache's TTL, in one pipelined
// round trip, skipping an entry over the size bound as Set does; an
// unreachable Redis is an error.
func TestRedisSetMany(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t)
	r := NewRedis(c, prefix, 90*time.Second, 16)
	entries := []Entry{
		{NewKey("global", "m", []byte("a")), []byte("one")},
		{NewKey("global", "m", []byte("b")), []byte("two")},
		{NewKey("global", "m", []byte("c")), bytes.Repeat([]byte("x"), 17)},
	}
	if err := r.SetMany(t.Context(), entries); err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		v, ok, err := r.Get(t.Context(), e.Key)
		if i < 2 && (err != nil || !ok || !bytes.Equal(v, e.Value)) {
			t.Errorf("entry %d: %q %v %v", i, v, ok, err)
		}
		if i == 2 && ok {
			t.Error("the entry over the size bound was stored")
		}
	}
	if ttl := c.PTTL(t.Context(), prefix+string(entries[1].Key)).Val(); ttl <= 0 || ttl > 90*time.Second {
		t.Errorf("PTTL = %v, want in (0, 90s]", ttl)
	}

	if err := NewRedis(unreachableRedis(t), prefix, time.Minute, 16).SetMany(t.Context(), entries[:1]); err == nil {
		t.Error("SetMany succeeded against a closed port")
	}
}

// unreachableRedis is a client for a loopback port nothing listens on.
func unreachableRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	client, err := redisconn.Open(redisconn.Options{Addr: testkit.ClosedAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	r := NewRedis(unreachableRedis(t), redistest.Prefix(t), time.Minute, 1024)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	k := NewKey("global", "m", nil)
	// An outage is an error, not a miss: the caller decides whether to go on.
	if _, ok, err := r.Get(ctx, k); err == nil || ok {
		t.Errorf("Get = ok %v, err %v; want an error", ok, err)
	}
	if err := r.Set(ctx, k, []byte("v")); err == nil {
		t.Error("Set succeeded against a closed port")
	}
}

// TestRedisHungServerBounded checks that the cache gives up on a Redis that
// accepts connections but never answers by itself, long before the client's
// own 10s socket timeouts would.
func TestRedisHungServerBounded(t *testing.T) {
	t.Parallel()
	client := redis.NewClient(&redis.Options{
		Addr: testkit.SilentListener(t), DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, ContextTimeoutEnabled: true, MaxRetries: -1,
	})
	t.Cleanup(func() { client.Close() })
	r := NewRedis(client, redistest.Prefix(t), time.Minute, 1024)
	r.probeInterval = 0 // try Redis on every call, so both calls time out
	k := NewKey("global", "m", nil)
	// The bound asserted is 20 times the call timeout: it tells "bounded by
	// the cache" from "bounded by the client's 10s", not how fast it is.
	start := time.Now()
	if _, _, err := r.Get(t.Context(), k); err == nil {
		t.Error("Get from a server that never answers succeeded")
	}
	if err := r.Set(t.Context(), k, []byte("v")); err == nil {
		t.Error("Set to a server that never answers succeeded")
	}
	if d := time.Since(start); d > 20*DefaultCallTimeout {
		t.Errorf("Get and Set against a hung server took %v, want them cut at about %v each", d, DefaultCallTimeout)
	}
}

// TestRedisBypassWhileFailing kills Redis under a cache: after one failed
// call the cache answers ErrBypassed without trying Redis, one call per
// probe interval tries again, and the first that succeeds ends the bypass.
func TestRedisBypassWhileFailing(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	client, err := redisconn.Open(redisconn.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	r := NewRedis(client, redistest.Prefix(t), time.Minute, 1024)
	now := time.Now()
	r.now = func() time.Time { return now }
	ctx := t.Context()
	k := NewKey("global", "m", []byte("q"))
	mustSet(t, r, k, []byte("v"))

	srv.Kill()
	if _, _, err := r.Get(ctx, k); err == nil || errors.Is(err, ErrBypassed) {
		t.Fatalf("first Get with Redis down = %v, want Redis's error", err)
	}
	if _, _, err := r.Get(ctx, k); !errors.Is(err, ErrBypassed) {
		t.Errorf("second Get with Redis down = %v, want ErrBypassed", err)
	}
	if err := r.Set(ctx, k, []byte("v")); !errors.Is(err, ErrBypassed) {
		t.Errorf("Set with Redis down = %v, want ErrBypassed", err)
	}

	srv.Restart()
	if _, _, err := r.Get(ctx, k); !errors.Is(err, ErrBypassed) {
		t.Errorf("Get before the probe is due = %v, want ErrBypassed", err)
	}
	now = now.Add(DefaultProbeInterval)
	// The probe reaches the restarted (empty) Redis: a miss, no error.
	if v, ok, err := r.Get(ctx, k); err != nil || ok {
		t.Fatalf("probe after Redis returned = %q, %v, %v; want a plain miss", v, ok, err)
	}
	mustSet(t, r, k, []byte("again"))
	if got := mustGet(t, r, k); string(got) != "again" {
		t.Errorf("Get after recovery = %q, want again", got)
	}
}

// TestRedisCallerCancelDoesNotBypass: a request that gave up says nothing
// about Redis, so it must not switch the cache off for everyone else.
func TestRedisCallerCancelDoesNotBypass(t *testing.T) {
	t.Parallel()
	r := NewRedis(redistest.Client(t), redistest.Prefix(t), time.Minute, 1024)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	k := NewKey("global", "m", nil)
	if _, _, err := r.Get(ctx, k); err == nil {
		t.Fatal("Get with a cancelled context succeeded")
	}
	if _, _, err := r.Get(t.Context(), k); err != nil {
		t.Errorf("Get after another caller's cancel = %v, want a plain miss", err)
	}
}

func TestNewRedisDefaults(t *testing.T) {
	t.Parallel()
	r := NewRedis(nil, "p:", 0, 0)
	if r.ttl != DefaultTTL || r.maxEntryBytes != DefaultMaxEntryBytes {
		t.Errorf("ttl %v, max entry %d; want defaults", r.ttl, r.maxEntryBytes)
	}
	if r := NewRedis(nil, "p:", time.Microsecond, 1); r.ttl != time.Millisecond {
		t.Errorf("sub-millisecond ttl became %v, want 1ms", r.ttl)
	}
}

func BenchmarkRedisGet(b *testing.B) {
	r := NewRedis(redistest.Client(b), redistest.Prefix(b), time.Minute, 1<<20)
	ctx := context.Background()
	k := NewKey("global", "m", nil)
	if err := r.Set(ctx, k, make([]byte, 2048)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := r.Get(ctx, k); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}
