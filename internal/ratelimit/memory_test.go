package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	testLimiter(t, func(t *testing.T) Limiter { return NewMemory(1000) })
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestMemory(maxKeys int) (*Memory, *fakeClock) {
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewMemory(maxKeys)
	m.now = clock.Now
	return m, clock
}

func (m *Memory) has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.buckets[key]
	return ok
}

func TestMemoryBound(t *testing.T) {
	t.Parallel()
	m, clock := newTestMemory(10)
	p := Policy{Capacity: 3, RefillPerSecond: 0.001}
	for i := range 100 {
		if _, err := m.Allow(t.Context(), fmt.Sprint("user", i), p); err != nil {
			t.Fatal(err)
		}
		if n := m.Len(); n > 10 {
			t.Fatalf("after %d keys Len = %d, want at most 10", i+1, n)
		}
		clock.Advance(time.Millisecond)
	}
	if n := m.Len(); n != 10 {
		t.Errorf("Len = %d, want 10", n)
	}
}

func TestMemoryEvictsFullBucketsFirst(t *testing.T) {
	t.Parallel()
	m, clock := newTestMemory(3)
	ctx := t.Context()
	slow := Policy{Capacity: 5, RefillPerSecond: 0.001}
	fast := Policy{Capacity: 1, RefillPerSecond: 100}

	// "old" is the least recently used and still owes tokens; "refilled"
	// is more recent but full again after a second.
	mustMemAllow(t, m, "old", slow)
	clock.Advance(time.Millisecond)
	mustMemAllow(t, m, "refilled", fast)
	clock.Advance(time.Millisecond)
	mustMemAllow(t, m, "recent", slow)
	clock.Advance(time.Second)

	mustMemAllow(t, m, "new", slow)
	if m.has("refilled") {
		t.Error("the full bucket was kept")
	}
	for _, k := range []string{"old", "recent", "new"} {
		if !m.has(k) {
			t.Errorf("bucket %q was dropped while a full one existed", k)
		}
	}
	if d, _ := m.Peek(ctx, "old", slow); d.Remaining != 4 {
		t.Errorf("old Remaining = %d, want 4 (its state kept)", d.Remaining)
	}
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	m, clock := newTestMemory(3)
	ctx := t.Context()
	p := Policy{Capacity: 5, RefillPerSecond: 0.001}
	for _, k := range []string{"a", "b", "c", "a"} {
		mustMemAllow(t, m, k, p)
		clock.Advance(time.Millisecond)
	}
	mustMemAllow(t, m, "d", p) // no bucket is full: b is the least recently used

	want := map[string]int64{"a": 3, "b": 5, "c": 4, "d": 4}
	for k, rem := range want {
		if d, _ := m.Peek(ctx, k, p); d.Remaining != rem {
			t.Errorf("%s Remaining = %d, want %d", k, d.Remaining, rem)
		}
	}
	if m.has("b") {
		t.Error("b is still stored")
	}
}

func TestMemoryPeekUnknownKeyStoresNothing(t *testing.T) {
	t.Parallel()
	m := NewMemory(10)
	if _, err := m.Peek(t.Context(), "ghost", Policy{Capacity: 1, RefillPerSecond: 1}); err != nil {
		t.Fatal(err)
	}
	if n := m.Len(); n != 0 {
		t.Errorf("Len = %d after Peek of an unknown key, want 0", n)
	}
}

func TestMemoryRefillWithFakeClock(t *testing.T) {
	t.Parallel()
	m, clock := newTestMemory(10)
	p := Policy{Capacity: 4, RefillPerSecond: 2}
	for range 4 {
		mustMemAllow(t, m, "k", p)
	}
	d := mustMemAllow(t, m, "k", p)
	if d.Allowed || d.RetryAfter != 500*time.Millisecond || d.Reset != 2*time.Second {
		t.Fatalf("empty bucket = %+v, want denied, RetryAfter 500ms, Reset 2s", d)
	}
	clock.Advance(499 * time.Millisecond)
	if d := mustMemAllow(t, m, "k", p); d.Allowed || d.RetryAfter != time.Millisecond {
		t.Fatalf("1ms early = %+v, want denied, RetryAfter 1ms", d)
	}
	clock.Advance(time.Millisecond)
	if d := mustMemAllow(t, m, "k", p); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("on time = %+v, want allowed", d)
	}
	clock.Advance(time.Hour)
	if d := mustMemAllow(t, m, "k", p); !d.Allowed || d.Remaining != 3 {
		t.Fatalf("after an hour = %+v, want allowed with remaining 3", d)
	}
}

func TestNewMemoryDefaultBound(t *testing.T) {
	t.Parallel()
	if m := NewMemory(0); m.maxKeys != DefaultMaxKeys {
		t.Errorf("maxKeys = %d, want DefaultMaxKeys", m.maxKeys)
	}
}

func mustMemAllow(t *testing.T, m *Memory, key string, p Policy) Decision {
	t.Helper()
	d, err := m.Allow(context.Background(), key, p)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	return d
}

func BenchmarkMemoryAllow(b *testing.B) {
	p := Policy{Name: "bench", Capacity: 1 << 40, RefillPerSecond: 1e9}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i)
	}
	b.Run("OneKey", func(b *testing.B) {
		m := NewMemory(len(keys))
		ctx := context.Background()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Allow(ctx, "user:0", p); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("ManyKeys", func(b *testing.B) {
		m := NewMemory(len(keys))
		ctx := context.Background()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := m.Allow(ctx, keys[i%len(keys)], p); err != nil {
					b.Error(err)
				}
				i++
			}
		})
	})
	b.Run("Churn", func(b *testing.B) {
		// Twice as many keys as room: every call evicts a bucket.
		m := NewMemory(len(keys) / 2)
		ctx := context.Background()
		slow := Policy{Name: "bench", Capacity: 100, RefillPerSecond: 0.001}
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := m.Allow(ctx, keys[i%len(keys)], slow); err != nil {
					b.Error(err)
				}
				i++
			}
		})
	})
}
