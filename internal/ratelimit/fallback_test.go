package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/alicebob/miniredis/v2"
)

// flakyLimiter is a shared limiter that can be switched off. While off it
// fails like an unreachable Redis.
type flakyLimiter struct {
	inner Limiter
	down  atomic.Bool
	calls atomic.Int64
}

var errConnRefused = errors.New("dial tcp: connection refused")

func (l *flakyLimiter) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	l.calls.Add(1)
	if l.down.Load() {
		return Decision{}, errConnRefused
	}
	return l.inner.Allow(ctx, key, p)
}

func (l *flakyLimiter) Peek(ctx context.Context, key string, p Policy) (Decision, error) {
	l.calls.Add(1)
	if l.down.Load() {
		return Decision{}, errConnRefused
	}
	return l.inner.Peek(ctx, key, p)
}

// recordingHandler keeps every log record for inspection.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// levels returns the levels logged so far, in order.
func (h *recordingHandler) levels() []slog.Level {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Level
	for _, r := range h.records {
		out = append(out, r.Level)
	}
	return out
}

func TestFallbackSuite(t *testing.T) {
	t.Parallel()
	// While the shared limiter is healthy, Fallback is just that limiter.
	testLimiter(t, func(t *testing.T) Limiter {
		f, err := NewFallback(NewMemory(100), NewMemory(100), FallbackOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	})
}

func TestFallbackTransitions(t *testing.T) {
	t.Parallel()
	shared := &flakyLimiter{inner: NewMemory(100)}
	logs := &recordingHandler{}
	var onFallback atomic.Int64
	f, err := NewFallback(shared, NewMemory(100), FallbackOptions{
		Mode:          FallbackLocal,
		Logger:        slog.New(logs),
		ProbeInterval: time.Minute,
		OnFallback:    func() { onFallback.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.now = clock.Now
	p := Policy{Capacity: 2, RefillPerSecond: 0.001}

	// Healthy: the shared limiter decides.
	mustAllow(t, f, "k", p)
	if f.Down() || f.Fallbacks() != 0 || len(logs.levels()) != 0 {
		t.Fatalf("healthy: down=%v fallbacks=%d logs=%v", f.Down(), f.Fallbacks(), logs.levels())
	}

	// Down: the local limiter decides, with its own fresh bucket, and only
	// the first failure is logged.
	shared.down.Store(true)
	calls := shared.calls.Load()
	for i, want := range []bool{true, true, false, false} {
		if d := mustAllow(t, f, "k", p); d.Allowed != want {
			t.Fatalf("request %d while down: allowed=%v, want %v", i, d.Allowed, want)
		}
	}
	if !f.Down() {
		t.Error("Down() = false after a failure")
	}
	if got := shared.calls.Load() - calls; got != 1 {
		t.Errorf("shared limiter called %d times while down within one probe interval, want 1", got)
	}

	// A probe interval later exactly one request tries again.
	clock.Advance(time.Minute)
	calls = shared.calls.Load()
	for range 5 {
		mustPeek(t, f, "k", p)
	}
	if got := shared.calls.Load() - calls; got != 1 {
		t.Errorf("shared limiter called %d times after the probe interval, want 1", got)
	}

	// Back up: the next probe succeeds and the shared state applies again
	// (one token was spent there before the outage).
	shared.down.Store(false)
	clock.Advance(time.Minute)
	if d := mustAllow(t, f, "k", p); !d.Allowed || d.Remaining != 0 {
		t.Errorf("first request after recovery = %+v, want allowed from the shared bucket with 0 left", d)
	}
	if f.Down() {
		t.Error("Down() = true after a successful probe")
	}
	if d := mustAllow(t, f, "k", p); d.Allowed {
		t.Errorf("shared bucket should be empty, got %+v", d)
	}

	if got, want := logs.levels(), []slog.Level{slog.LevelWarn, slog.LevelInfo}; !slices.Equal(got, want) {
		t.Errorf("logged levels %v, want one warning down and one info up %v", got, want)
	}
	// 4 Allows while down, 5 Peeks while still down.
	if f.Fallbacks() != 9 || onFallback.Load() != 9 {
		t.Errorf("Fallbacks() = %d, OnFallback calls = %d, want 9 each", f.Fallbacks(), onFallback.Load())
	}
}

func TestFallbackConcurrentOutage(t *testing.T) {
	t.Parallel()
	shared := &flakyLimiter{inner: NewMemory(10)}
	shared.down.Store(true)
	logs := &recordingHandler{}
	f, err := NewFallback(shared, NewMemory(10), FallbackOptions{Logger: slog.New(logs), ProbeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Capacity: 5, RefillPerSecond: 0.0001}
	const callers = 40
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		allowed atomic.Int64
	)
	for range callers {
		wg.Go(func() {
			<-start
			d, err := f.Allow(t.Context(), "k", p)
			if err != nil {
				t.Errorf("Allow: %v", err)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if allowed.Load() != 5 {
		t.Errorf("%d of %d allowed by the local fallback, want 5", allowed.Load(), callers)
	}
	if got := logs.levels(); len(got) != 1 {
		t.Errorf("logged %v for one outage, want a single warning", got)
	}
	if f.Fallbacks() != callers {
		t.Errorf("Fallbacks() = %d, want %d", f.Fallbacks(), callers)
	}
}

func TestFallbackModes(t *testing.T) {
	t.Parallel()
	p := Policy{Capacity: 1, RefillPerSecond: 0.001}
	newDown := func(t *testing.T, mode FallbackMode) *Fallback {
		shared := &flakyLimiter{inner: NewMemory(10)}
		shared.down.Store(true)
		f, err := NewFallback(shared, NewMemory(10), FallbackOptions{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	t.Run("allow", func(t *testing.T) {
		t.Parallel()
		f := newDown(t, FallbackAllow)
		for range 3 {
			d := mustAllow(t, f, "k", p)
			if !d.Allowed || d.Limit != 1 {
				t.Fatalf("Allow = %+v, want allowed with limit 1", d)
			}
		}
		if d := mustPeek(t, f, "k", p); !d.Allowed || d.Remaining != 1 {
			t.Errorf("Peek = %+v, want a full bucket", d)
		}
	})

	t.Run("deny", func(t *testing.T) {
		t.Parallel()
		f := newDown(t, FallbackDeny)
		// The first call reaches the shared limiter and carries its error;
		// the next is refused without asking it.
		_, err := f.Allow(t.Context(), "k", p)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errConnRefused) {
			t.Errorf("first Allow error = %v, want ErrUnavailable wrapping the cause", err)
		}
		if _, err := f.Peek(t.Context(), "k", p); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Peek error = %v, want ErrUnavailable", err)
		}
	})

	t.Run("local", func(t *testing.T) {
		t.Parallel()
		f := newDown(t, FallbackLocal)
		if d := mustAllow(t, f, "k", p); !d.Allowed {
			t.Errorf("first Allow = %+v, want allowed", d)
		}
		if d := mustAllow(t, f, "k", p); d.Allowed {
			t.Errorf("second Allow = %+v, want the local limit to deny", d)
		}
	})
}

func TestFallbackCallerGaveUp(t *testing.T) {
	t.Parallel()
	shared := &flakyLimiter{inner: NewRedis(redistest.Client(t), redistest.Prefix(t))}
	f, err := NewFallback(shared, NewMemory(10), FallbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.Allow(ctx, "k", Policy{Capacity: 1, RefillPerSecond: 1}); !errors.Is(err, context.Canceled) {
		t.Errorf("Allow with a cancelled context: error = %v, want context.Canceled", err)
	}
	if f.Down() || f.Fallbacks() != 0 {
		t.Errorf("a cancelled caller marked the shared limiter down (down=%v, fallbacks=%d)", f.Down(), f.Fallbacks())
	}
}

func TestFallbackInvalidPolicyIsNotAnOutage(t *testing.T) {
	t.Parallel()
	shared := &flakyLimiter{inner: NewMemory(10)}
	f, err := NewFallback(shared, NewMemory(10), FallbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Allow(t.Context(), "k", Policy{}); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("error = %v, want ErrInvalidPolicy", err)
	}
	if f.Down() {
		t.Error("an invalid policy marked the shared limiter down")
	}
}

func TestNewFallbackErrors(t *testing.T) {
	t.Parallel()
	m := NewMemory(10)
	tests := []struct {
		name          string
		shared, local Limiter
		opts          FallbackOptions
	}{
		{"unknown mode", m, m, FallbackOptions{Mode: "sometimes"}},
		{"no shared", nil, m, FallbackOptions{}},
		{"local without local", m, nil, FallbackOptions{Mode: FallbackLocal}},
	}
	for _, tt := range tests {
		if _, err := NewFallback(tt.shared, tt.local, tt.opts); err == nil {
			t.Errorf("%s: NewFallback succeeded", tt.name)
		}
	}
	if _, err := NewFallback(m, nil, FallbackOptions{Mode: FallbackDeny}); err != nil {
		t.Errorf("deny without a local limiter: %v", err)
	}
}

func TestParseFallbackMode(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"local", "allow", "deny"} {
		if m, err := ParseFallbackMode(s); err != nil || string(m) != s {
			t.Errorf("ParseFallbackMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "Local", "open"} {
		if _, err := ParseFallbackMode(s); err == nil {
			t.Errorf("ParseFallbackMode(%q) succeeded", s)
		}
	}
}

// TestFallbackUnreachableRedis uses a real client with the service's
// deadlines against a port nobody listens on.
func TestFallbackUnreachableRedis(t *testing.T) {
	t.Parallel()
	c, err := redisconn.Open(redisconn.Options{Addr: testkit.ClosedAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	shared := NewRedis(c, redistest.Prefix(t))
	p := Policy{Capacity: 2, RefillPerSecond: 0.001}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	local, err := NewFallback(shared, NewMemory(10), FallbackOptions{Mode: FallbackLocal})
	if err != nil {
		t.Fatal(err)
	}
	var allowed []bool
	for range 3 {
		d, err := local.Allow(ctx, "k", p)
		if err != nil {
			t.Fatalf("local mode Allow: %v", err)
		}
		allowed = append(allowed, d.Allowed)
	}
	if allowed[0] != true || allowed[1] != true || allowed[2] != false {
		t.Errorf("local mode decisions %v, want [true true false]", allowed)
	}
	if !local.Down() {
		t.Error("Down() = false with Redis unreachable")
	}

	deny, err := NewFallback(shared, nil, FallbackOptions{Mode: FallbackDeny})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deny.Allow(ctx, "k", p); !errors.Is(err, ErrUnavailable) {
		t.Errorf("deny mode error = %v, want ErrUnavailable", err)
	}
}

// TestFallbackRedisRestart stops and restarts a Redis under a Fallback and
// checks that decisions go back to the shared bucket.
func TestFallbackRedisRestart(t *testing.T) {
	t.Parallel()
	srv := miniredis.NewMiniRedis()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c, err := redisconn.Open(redisconn.Options{URL: "redis://" + srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	prefix := redistest.Prefix(t)
	shared := NewRedis(c, prefix)
	logs := &recordingHandler{}
	f, err := NewFallback(shared, NewMemory(10), FallbackOptions{
		Logger:        slog.New(logs),
		ProbeInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Capacity: 5, RefillPerSecond: 0.0001}
	ctx := t.Context()

	mustAllow(t, f, "k", p) // shared: 4 left

	srv.Close()
	testkit.Eventually(t, pollWait, "the fallback to find Redis down", func() bool {
		mustAllow(t, f, "other", p)
		return f.Down()
	})

	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	testkit.Eventually(t, pollWait, "the fallback to find Redis back", func() bool {
		mustPeek(t, f, "k", p)
		return !f.Down()
	})

	// Back on the shared bucket: what it said before the outage still holds.
	if d := mustAllow(t, f, "k", p); !d.Allowed || d.Remaining != 3 {
		t.Errorf("Allow after recovery = %+v, want the shared bucket with 3 left", d)
	}
	if d, err := shared.Peek(ctx, "k", p); err != nil || d.Remaining != 3 {
		t.Errorf("shared Peek = %+v, %v; want 3 left", d, err)
	}
	if got, want := logs.levels(), []slog.Level{slog.LevelWarn, slog.LevelInfo}; !slices.Equal(got, want) {
		t.Errorf("logged levels %v, want %v", got, want)
	}
}
