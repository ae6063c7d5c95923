package redistest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestClientAnswers(t *testing.T) {
	t.Parallel()
	c := Client(t)
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestPrefixUnique(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 100 {
		p := Prefix(t)
		if !strings.HasPrefix(p, "test:") || !strings.HasSuffix(p, ":") {
			t.Fatalf("Prefix = %q, want test:<random>:", p)
		}
		if seen[p] {
			t.Fatalf("Prefix repeated %q", p)
		}
		seen[p] = true
	}
}

// The two start-up paths are exercised directly so they stay working even on
// machines where TEST_REDIS_URL short-circuits URL.

func TestStartRedisServer(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not on PATH")
	}
	pingURL(t, startRedisServer(t, bin))
}

func TestStartMiniredis(t *testing.T) {
	t.Parallel()
	pingURL(t, startMiniredis(t))
}

func TestMiniredisExpiresKeys(t *testing.T) {
	t.Parallel()
	opts, err := redis.ParseURL(startMiniredis(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	key := Prefix(t) + "k"
	if err := c.Set(t.Context(), key, "v", 50*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Exists(t.Context(), key).Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("key with a 50ms TTL never expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pingURL(t *testing.T, url string) {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", url, err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Set(t.Context(), Prefix(t)+"k", "v", 0).Err(); err != nil {
		t.Fatalf("SET on %s: %v", url, err)
	}
}

func TestServerOutageAndReturn(t *testing.T) {
	t.Parallel()
	s := StartServer(t)
	url := s.URL()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	opts.ContextTimeoutEnabled = true // so PING gives up after 300ms, not 3s
	c := redis.NewClient(opts)
	defer c.Close()
	ping := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		return c.Ping(ctx).Err()
	}
	key := Prefix(t) + "k"
	if err := c.Set(t.Context(), key, "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Freeze()
	if err := ping(); err == nil {
		t.Error("PING answered by a frozen server")
	}
	s.Thaw()
	if err := ping(); err != nil {
		t.Errorf("PING after Thaw: %v", err)
	}
	s.Kill()
	if err := ping(); err == nil {
		t.Error("PING answered by a killed server")
	}
	s.Restart()
	if s.URL() != url {
		t.Errorf("URL changed across a restart: %s, then %s", url, s.URL())
	}
	if err := ping(); err != nil {
		t.Errorf("PING after Restart: %v", err)
	}
	if n := c.Exists(t.Context(), key).Val(); n != 0 {
		t.Error("data survived a kill; the restarted server should start empty")
	}
}
