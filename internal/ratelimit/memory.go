package ratelimit

import (
	"container/heap"
	"container/list"
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is the bucket count [NewMemory] uses when given no
// positive bound. A bucket costs about 250 bytes plus its key, so this is
// about 25 MB when full.
const DefaultMaxKeys = 100_000

// Memory is an in-process [Limiter]: a golang.org/x/time/rate bucket per
// key, at most a fixed number of keys. It is safe for concurrent use.
//
// One mutex guards every bucket. That is what makes decisions exact (40
// concurrent requests against 5 tokens admit exactly 5, and each sees its
// own Remaining) and it costs less than the rest of a request; see
// BenchmarkMemoryAllow before reaching for sharding.
//
// When a new key would exceed the bound, a bucket that has refilled
// completely is dropped first, since a full bucket is exactly what a new
// key starts with and dropping it loses nothing. Only when no bucket is full
// is the least recently used one dropped, which forgives that key's debt.
type Memory struct {
	maxKeys int
	// now is the clock; tests replace it.
	now func() time.Time
	// epoch anchors fullAt; offsets from it are cheaper to compare in the
	// heap than time.Time values.
	epoch time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	// recent orders buckets by last use, most recent at the front.
	recent list.List
	// byFull is a min-heap of buckets by the time they will be full. It is
	// built only when the bound is first reached, so a Memory that never
	// fills up never pays for keeping it in order.
	byFull     fullHeap
	byFullKept bool
}

// bucket is one key's state.
type bucket struct {
	key    string
	policy Policy
	lim    *rate.Limiter
	// fullAt is when the bucket will be full if nobody takes a token, in
	// nanoseconds since Memory.epoch.
	fullAt int64
	// heapIndex is the bucket's position in Memory.byFull.
	heapIndex int
	// elem is the bucket's place in Memory.recent.
	elem *list.Element
}

// NewMemory returns an empty Memory that holds at most maxKeys buckets
// (DefaultMaxKeys if maxKeys < 1). It starts no goroutines.
func NewMemory(maxKeys int) *Memory {
	if maxKeys < 1 {
		maxKeys = DefaultMaxKeys
	}
	return &Memory{
		maxKeys: maxKeys,
		now:     time.Now,
		epoch:   time.Now(),
		buckets: make(map[string]*bucket),
	}
}

// Allow takes one token from key's bucket if it has one. A key's policy may
// change between calls (a tier upgrade): the new capacity and rate apply
// from now on, and the tokens already in the bucket carry over, capped at
// the new capacity.
func (m *Memory) Allow(_ context.Context, key string, p Policy) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	now := m.now()
	b := m.buckets[key]
	if b == nil {
		b = m.add(key, p, now)
	}
	m.applyPolicy(b, p, now)
	allowed := b.lim.AllowN(now, 1)
	tokens := b.lim.TokensAt(now)
	m.touch(b, tokens, now)
	return decide(allowed, tokens, p), nil
}

// Peek reports key's bucket without taking a token; Allowed says whether
// Allow would succeed now. An unknown key reads as a full bucket and is not
// stored.
func (m *Memory) Peek(_ context.Context, key string, p Policy) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	b := m.buckets[key]
	if b == nil {
		return decide(true, float64(p.Capacity), p), nil
	}
	now := m.now()
	m.applyPolicy(b, p, now)
	tokens := b.lim.TokensAt(now)
	m.touch(b, tokens, now)
	return decide(tokens >= 1, tokens, p), nil
}

// Len returns the number of buckets held.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets)
}

// add stores a full bucket for key, first making room if the bound is
// reached. The caller holds m.mu.
func (m *Memory) add(key string, p Policy, now time.Time) *bucket {
	for len(m.buckets) >= m.maxKeys {
		m.evictOne(now)
	}
	b := &bucket{
		key:    key,
		policy: p,
		lim:    rate.NewLimiter(rate.Limit(p.RefillPerSecond), int(p.Capacity)),
		fullAt: m.since(now),
	}
	b.elem = m.recent.PushFront(b)
	if m.byFullKept {
		heap.Push(&m.byFull, b)
	}
	m.buckets[key] = b
	return b
}

// evictOne drops the bucket that became full earliest if any is full now,
// else the least recently used one. The caller holds m.mu.
func (m *Memory) evictOne(now time.Time) {
	if !m.byFullKept {
		m.byFull = make(fullHeap, 0, len(m.buckets))
		for _, b := range m.buckets {
			b.heapIndex = len(m.byFull)
			m.byFull = append(m.byFull, b)
		}
		heap.Init(&m.byFull)
		m.byFullKept = true
	}
	victim := m.byFull[0]
	if victim.fullAt > m.since(now) {
		victim = m.recent.Back().Value.(*bucket)
	}
	heap.Remove(&m.byFull, victim.heapIndex)
	m.recent.Remove(victim.elem)
	delete(m.buckets, victim.key)
}

// applyPolicy switches b to p if its capacity or rate changed. The caller
// holds m.mu.
func (m *Memory) applyPolicy(b *bucket, p Policy, now time.Time) {
	if b.policy.Capacity == p.Capacity && b.policy.RefillPerSecond == p.RefillPerSecond {
		return
	}
	// Both setters first settle the tokens earned so far at the old
	// values, so the change is not retroactive.
	b.lim.SetLimitAt(now, rate.Limit(p.RefillPerSecond))
	b.lim.SetBurstAt(now, int(p.Capacity))
	b.policy = p
}

// touch records that b was used now and holds tokens. The caller holds m.mu.
func (m *Memory) touch(b *bucket, tokens float64, now time.Time) {
	m.recent.MoveToFront(b.elem)
	fullAt := m.since(now)
	if missing := float64(b.policy.Capacity) - tokens; missing > 0 {
		fullAt += int64(min(missing/b.policy.RefillPerSecond*float64(time.Second), float64(maxWait)))
	}
	if fullAt != b.fullAt {
		b.fullAt = fullAt
		if m.byFullKept {
			heap.Fix(&m.byFull, b.heapIndex)
		}
	}
}

// since returns t as nanoseconds since m.epoch. It uses the monotonic
// clock, so a step of the wall clock does not reorder buckets.
func (m *Memory) since(t time.Time) int64 {
	return int64(t.Sub(m.epoch))
}

// fullHeap implements heap.Interface over buckets, earliest fullAt first.
type fullHeap []*bucket

func (h fullHeap) Len() int           { return len(h) }
func (h fullHeap) Less(i, j int) bool { return h[i].fullAt < h[j].fullAt }
func (h fullHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}

func (h *fullHeap) Push(x any) {
	b := x.(*bucket)
	b.heapIndex = len(*h)
	*h = append(*h, b)
}

func (h *fullHeap) Pop() any {
	old := *h
	n := len(old)
	b := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return b
}
