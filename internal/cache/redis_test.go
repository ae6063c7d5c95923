package cache

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/redistest"
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

func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	client, err := redisconn.Open(redisconn.Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	r := NewRedis(client, redistest.Prefix(t), time.Minute, 1024)
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
