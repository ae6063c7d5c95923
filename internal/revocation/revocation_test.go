package revocation

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/redistest"
)

func newList(t *testing.T, rdb redis.UniversalClient, key string) (*List, *auth.DenyList) {
	t.Helper()
	deny := auth.NewDenyList(nil)
	l, err := New(deny, Options{Redis: rdb, Key: key, MaxTokenLifetime: time.Hour, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return l, deny
}

// TestSharedAcrossReplicas: a revocation on one replica reaches another
// through Redis within a second, by its background poll, and a replica that
// starts later loads it on its first poll.
func TestSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	key := redistest.Prefix(t) + "revoked"
	a, denyA := newList(t, rdb, key)
	b, denyB := newList(t, rdb, key)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go b.Run(ctx)

	exp := time.Now().Add(30 * time.Minute)
	if err := a.Revoke(t.Context(), "jti-1", exp); err != nil {
		t.Fatal(err)
	}
	if !denyA.Has("jti-1") {
		t.Fatal("the revoking replica does not refuse the token at once")
	}
	deadline := time.Now().Add(time.Second)
	for !denyB.Has("jti-1") {
		if time.Now().After(deadline) {
			t.Fatal("the other replica did not refuse the token within a second")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if denyB.Has("jti-2") {
		t.Fatal("an id never revoked is refused")
	}

	late, denyLate := newList(t, rdb, key)
	if err := late.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !denyLate.Has("jti-1") {
		t.Fatal("a replica started after the logout does not load it")
	}
	// Junk in the set (not written by us) is skipped, not fatal.
	if err := rdb.ZAdd(t.Context(), key, redis.Z{Score: float64(time.Now().UnixMilli()), Member: "no-separator"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := late.Poll(t.Context()); err != nil {
		t.Fatalf("poll over a foreign member: %v", err)
	}
}

// TestRedisOutage: with Redis down a logout still takes effect on its own
// replica at once, and reaches the others once Redis is back.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	opts.DialTimeout = 200 * time.Millisecond
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	a, denyA := newList(t, rdb, "revoked")
	b, denyB := newList(t, rdb, "revoked")

	srv.Kill()
	exp := time.Now().Add(30 * time.Minute)
	if err := a.Revoke(t.Context(), "jti-down", exp); err == nil {
		t.Fatal("Revoke reported success with Redis down")
	}
	if !denyA.Has("jti-down") {
		t.Fatal("a logout during a Redis outage is not refused locally")
	}
	if err := b.Poll(t.Context()); err == nil {
		t.Fatal("Poll reported success with Redis down")
	}

	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		errA, errB := a.Poll(t.Context()), b.Poll(t.Context())
		if errA == nil && errB == nil && denyB.Has("jti-down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis came back: poll errors %v, %v; other replica refuses: %v", errA, errB, denyB.Has("jti-down"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLocalOnly(t *testing.T) {
	t.Parallel()
	l, deny := newList(t, nil, "")
	if err := l.Revoke(t.Context(), "j", time.Now().Add(time.Minute)); err != nil || !deny.Has("j") {
		t.Fatalf("local revoke: %v, has %v", err, deny.Has("j"))
	}
	if err := l.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	l.Run(t.Context()) // returns at once without Redis
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("New without a deny list succeeded")
	}
	unused := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer unused.Close()
	if _, err := New(deny, Options{Redis: unused}); err == nil {
		t.Fatal("New with Redis but no key succeeded")
	}
}
