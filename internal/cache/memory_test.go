package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	testCache(t, func(t *testing.T, ttl time.Duration) store {
		m := NewMemory(16*suiteMaxEntry, ttl)
		t.Cleanup(m.Close)
		return m
	})
}

// fakeClock is an otter.Clock that moves only when told to and never ticks,
// so nothing expires behind the test's back.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) NowNano() int64                      { return c.now.Load() }
func (c *fakeClock) Tick(time.Duration) <-chan time.Time { return nil }
func (c *fakeClock) Advance(d time.Duration)             { c.now.Add(int64(d)) }

func TestMemoryTTLFromWrite(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{}
	clock.now.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	m := newMemory(1<<20, time.Minute, clock)
	t.Cleanup(m.Close)
	k := NewKey("global", "m", []byte("ttl"))

	mustSet(t, m, k, []byte("v"))
	clock.Advance(59 * time.Second)
	mustGet(t, m, k) // a read does not extend the entry's life
	clock.Advance(time.Second)
	if _, ok, _ := m.Get(t.Context(), k); ok {
		t.Fatal("entry still there a full TTL after it was written")
	}

	mustSet(t, m, k, []byte("v1"))
	clock.Advance(30 * time.Second)
	mustSet(t, m, k, []byte("v2")) // a write restarts it
	clock.Advance(59 * time.Second)
	if got := mustGet(t, m, k); string(got) != "v2" {
		t.Errorf("Get = %q, want v2", got)
	}
}

func TestMemoryStaysWithinBound(t *testing.T) {
	t.Parallel()
	const maxBytes = 64 << 10
	m := NewMemory(maxBytes, time.Hour)
	t.Cleanup(m.Close)
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	var maxHeld uint64
	for i := range 20_000 {
		k := NewKey("global", "m", fmt.Appendf(nil, "%d", i))
		v := make([]byte, rng.IntN(m.maxEntryBytes+1))
		if err := m.Set(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		// Count what is actually held, not the cache's own tally, which
		// lags behind writes it has not processed yet.
		var held uint64
		for k, v := range m.entries.All() {
			held += uint64(weigh(k, v))
		}
		// Within one entry of the bound: otter may defer one drain.
		if limit := uint64(maxBytes + m.maxEntryBytes + entryOverhead + len(k)); held > limit {
			t.Fatalf("after %d entries the cache holds %d bytes, bound %d (+ one entry: %d)", i+1, held, maxBytes, limit)
		}
		maxHeld = max(maxHeld, held)
	}
	// A cache that kept almost nothing would pass trivially.
	if maxHeld < maxBytes/2 {
		t.Errorf("the cache never held more than %d bytes of a %d bound", maxHeld, maxBytes)
	}
}

func TestMemoryEntryCap(t *testing.T) {
	t.Parallel()
	m := NewMemory(1<<20, time.Minute)
	t.Cleanup(m.Close)
	if m.maxEntryBytes != 1<<16 {
		t.Errorf("per-entry cap = %d, want maxBytes/16 = %d", m.maxEntryBytes, 1<<16)
	}
}

func TestNewMemoryDefaults(t *testing.T) {
	t.Parallel()
	m := NewMemory(0, 0)
	t.Cleanup(m.Close)
	if got := m.entries.GetMaximum(); got != DefaultMaxBytes {
		t.Errorf("bound = %d, want DefaultMaxBytes", got)
	}
	k := NewKey("global", "m", nil)
	mustSet(t, m, k, []byte("v")) // a zero TTL must not mean "expire at once"
	mustGet(t, m, k)
}

func TestMemoryUsableAfterClose(t *testing.T) {
	t.Parallel()
	m := NewMemory(1<<20, time.Minute)
	m.Close()
	k := NewKey("global", "m", nil)
	mustSet(t, m, k, []byte("v"))
	mustGet(t, m, k)
}

func BenchmarkMemoryGet(b *testing.B) {
	m := NewMemory(64<<20, time.Hour)
	b.Cleanup(m.Close)
	ctx := context.Background()
	keys := make([]Key, 1024)
	value := make([]byte, 2048) // a typical chat completion body
	for i := range keys {
		keys[i] = NewKey("global", "m", fmt.Appendf(nil, "%d", i))
		if err := m.Set(ctx, keys[i], value); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok, _ := m.Get(ctx, keys[i%len(keys)]); !ok {
				b.Error("miss")
				return
			}
			i++
		}
	})
}
