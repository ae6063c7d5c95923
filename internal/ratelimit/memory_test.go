package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	m.epoch = clock.Now()
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

// TestMemoryEvictionRandomized drives a small Memory with random keys,
// policies and clock steps and checks every eviction against a brute-force
// reading of the rule: some full bucket if any is full, else the least
// recently used.
func TestMemoryEvictionRandomized(t *testing.T) {
	t.Parallel()
	const maxKeys = 8
	m, clock := newTestMemory(maxKeys)
	rng := rand.New(rand.NewPCG(1, 2))
	policies := []Policy{
		{Capacity: 1, RefillPerSecond: 100},
		{Capacity: 3, RefillPerSecond: 1},
		{Capacity: 5, RefillPerSecond: 0.01},
	}
	fullEvictions, lruEvictions := 0, 0
	for i := range 5000 {
		key := fmt.Sprint("k", rng.IntN(20))
		p := policies[rng.IntN(len(policies))]
		clock.Advance(time.Duration(rng.IntN(300)) * time.Millisecond)

		peek := rng.IntN(4) == 0
		before := m.snapshot()
		lru := m.recent.Back()
		var full map[string]bool
		if !peek && !m.has(key) && len(before) == maxKeys {
			full = make(map[string]bool)
			for k, b := range m.buckets {
				if b.lim.TokensAt(clock.Now()) >= float64(b.policy.Capacity) {
					full[k] = true
				}
			}
		}
		if peek {
			_, _ = m.Peek(t.Context(), key, p)
		} else {
			mustMemAllow(t, m, key, p)
		}
		after := m.snapshot()
		if len(after) > maxKeys {
			t.Fatalf("step %d: %d keys, bound %d", i, len(after), maxKeys)
		}
		m.checkHeap(t)
		var gone []string
		for k := range before {
			if !after[k] {
				gone = append(gone, k)
			}
		}
		if full == nil {
			if len(gone) != 0 {
				t.Fatalf("step %d: evicted %v without need", i, gone)
			}
			continue
		}
		if len(full) > 0 {
			fullEvictions++
		} else {
			lruEvictions++
		}
		if len(gone) != 1 {
			t.Fatalf("step %d: evicted %v, want exactly one", i, gone)
		}
		switch {
		case len(full) > 0 && !full[gone[0]]:
			t.Fatalf("step %d: evicted %s, which owes tokens, while %v were full", i, gone[0], full)
		case len(full) == 0 && gone[0] != lru.Value.(*bucket).key:
			t.Fatalf("step %d: evicted %s, want least recently used %s", i, gone[0], lru.Value.(*bucket).key)
		}
	}
	t.Logf("%d full-bucket and %d LRU evictions", fullEvictions, lruEvictions)
	// Both branches of the rule must have been exercised for the test to
	// mean anything.
	if fullEvictions < 50 || lruEvictions < 50 {
		t.Errorf("exercised %d full-bucket and %d LRU evictions, want at least 50 each", fullEvictions, lruEvictions)
	}
}

func (m *Memory) snapshot() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.buckets))
	for k := range m.buckets {
		out[k] = true
	}
	return out
}

// checkHeap verifies the heap order and the buckets' recorded positions.
func (m *Memory) checkHeap(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.byFullKept {
		return
	}
	if len(m.byFull) != len(m.buckets) {
		t.Fatalf("heap holds %d buckets, map %d", len(m.byFull), len(m.buckets))
	}
	for i, b := range m.byFull {
		if b.heapIndex != i {
			t.Fatalf("bucket %s at %d records index %d", b.key, i, b.heapIndex)
		}
		if parent := (i - 1) / 2; i > 0 && m.byFull[parent].fullAt > b.fullAt {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}
