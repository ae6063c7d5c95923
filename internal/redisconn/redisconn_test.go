package redisconn

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/google/go-cmp/cmp"
)

// tuning is the subset of options this package is responsible for.
type tuning struct {
	Addr                  string
	DB                    int
	Password              string
	TLS                   bool
	DialTimeout           time.Duration
	DialerRetries         int
	ReadTimeout           time.Duration
	WriteTimeout          time.Duration
	PoolTimeout           time.Duration
	MaxRetries            int
	MinRetryBackoff       time.Duration
	MaxRetryBackoff       time.Duration
	ContextTimeoutEnabled bool
	MinIdleConns          int
}

func TestOpenOptions(t *testing.T) {
	t.Parallel()
	want := func(addr string, db int, password string, tls bool) tuning {
		return tuning{
			Addr: addr, DB: db, Password: password, TLS: tls,
			DialTimeout:           200 * time.Millisecond,
			DialerRetries:         1,
			ReadTimeout:           100 * time.Millisecond,
			WriteTimeout:          100 * time.Millisecond,
			PoolTimeout:           100 * time.Millisecond,
			MaxRetries:            1,
			MinRetryBackoff:       5 * time.Millisecond,
			MaxRetryBackoff:       20 * time.Millisecond,
			ContextTimeoutEnabled: true,
		}
	}
	overridden := want("redis:6379", 0, "", false)
	overridden.DialTimeout = time.Second
	overridden.MaxRetries = 0 // max_retries=-1 means "no retries" to go-redis
	patient := want("redis:6379", 0, "", false)
	patient.ReadTimeout, patient.WriteTimeout = 3*time.Second, 3*time.Second
	urlWins := want("redis:6379", 0, "", false)
	urlWins.ReadTimeout = 50 * time.Millisecond
	urlWins.WriteTimeout = 3 * time.Second

	tests := []struct {
		name string
		opts Options
		want tuning
	}{
		{"url", Options{URL: "redis://:s3cret@redis.internal:6380/2"}, want("redis.internal:6380", 2, "s3cret", false)},
		{"url wins over addr", Options{URL: "redis://a:1/3", Addr: "b:2", DB: 4, Password: "x"}, want("a:1", 3, "", false)},
		{"tls url", Options{URL: "rediss://cache.example.com:6379"}, want("cache.example.com:6379", 0, "", true)},
		{"addr", Options{Addr: "127.0.0.1:6379", DB: 5, Password: "pw"}, want("127.0.0.1:6379", 5, "pw", false)},
		{"query overrides", Options{URL: "redis://redis:6379?dial_timeout=1s&max_retries=-1"}, overridden},
		{"io timeout", Options{URL: "redis://redis:6379", IOTimeout: 3 * time.Second}, patient},
		{"query wins over io timeout", Options{URL: "redis://redis:6379?read_timeout=50ms", IOTimeout: 3 * time.Second}, urlWins},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Open(tt.opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer c.Close()
			o := c.Options()
			got := tuning{
				Addr: o.Addr, DB: o.DB, Password: o.Password, TLS: o.TLSConfig != nil,
				DialTimeout: o.DialTimeout, DialerRetries: o.DialerRetries,
				ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout, PoolTimeout: o.PoolTimeout,
				MaxRetries: o.MaxRetries, MinRetryBackoff: o.MinRetryBackoff, MaxRetryBackoff: o.MaxRetryBackoff,
				ContextTimeoutEnabled: o.ContextTimeoutEnabled, MinIdleConns: o.MinIdleConns,
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"empty", Options{}},
		{"unknown scheme", Options{URL: "http://redis:6379"}},
		{"bad db", Options{URL: "redis://redis:6379/zero"}},
		{"unparsable", Options{URL: "redis://:hunter2@redis:port/0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Open(tt.opts)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded, want error")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestOpenDoesNotDial(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := Open(Options{Addr: l.Addr().String()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	if n := c.PoolStats().TotalConns; n != 0 {
		t.Errorf("pool holds %d connections after Open, want 0", n)
	}
}

func TestOpenTalksToRedis(t *testing.T) {
	t.Parallel()
	c, err := Open(Options{URL: redistest.URL(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	// Every call the server makes carries a deadline, which then bounds
	// the socket I/O; without one the 100ms read timeout applies, which a
	// loaded machine running the race detector can exceed on a first dial.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	key := redistest.Prefix(t) + "k"
	if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want \"v\", nil", got, err)
	}
}

func TestOpenUnreachableFails(t *testing.T) {
	t.Parallel()
	// A port we bound and released: nothing listens there now.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	c, err := Open(Options{Addr: addr})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping to a closed port succeeded")
	}
}

func TestLoggerWritesJSON(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	l := NewLogger(slog.New(slog.NewJSONHandler(&b, nil)))
	l.Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts: %v", 1, errors.New("connection refused"))
	var rec struct {
		Level  string `json:"level"`
		Msg    string `json:"msg"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(b.String()), &rec); err != nil {
		t.Fatalf("not one JSON record: %q: %v", b.String(), err)
	}
	want := "connection pool: failed to dial after 1 attempts: connection refused"
	if rec.Level != "WARN" || rec.Msg != "redis client" || rec.Detail != want {
		t.Errorf("record = %+v, want WARN \"redis client\" with detail %q", rec, want)
	}
}
