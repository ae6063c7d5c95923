package cache

import (
	"bytes"
	"context"
	"math"
	"time"

	"github.com/maypok86/otter/v2"
)

// Defaults for [NewMemory] and [NewRedis] when given non-positive values.
const (
	// DefaultTTL is how long an entry lives after it is written.
	DefaultTTL = 5 * time.Minute
	// DefaultMaxBytes bounds a Memory cache.
	DefaultMaxBytes = 64 << 20
	// DefaultMaxEntryBytes bounds one Redis entry.
	DefaultMaxEntryBytes = 1 << 20
)

// entryOverhead estimates what an entry costs beyond its key and value
// bytes (the cache's node, slice and string headers, hash table slot), so
// that many small entries cannot exceed the byte bound by much.
const entryOverhead = 128

// Memory is an in-process response cache bounded by total bytes, built on
// otter (a W-TinyLFU cache). It is safe for concurrent use.
//
// An entry's value may be at most a sixteenth of the bound: a larger one is
// not stored. Without that cap a single large response could evict many
// small, frequently hit ones, and a value near the bound could not be kept
// at all.
type Memory struct {
	entries       *otter.Cache[Key, []byte]
	maxEntryBytes int
}

// NewMemory returns a Memory holding at most maxBytes (DefaultMaxBytes if
// maxBytes < 1) of keys, values and per-entry overhead, each entry expiring
// ttl (DefaultTTL if ttl <= 0) after it was written.
//
// The cache runs a goroutine that removes expired entries; it stops by
// itself once the Memory is unreachable, or at once on Close.
func NewMemory(maxBytes int64, ttl time.Duration) *Memory {
	return newMemory(maxBytes, ttl, nil)
}

// newMemory is NewMemory with a clock; nil means the real one.
func newMemory(maxBytes int64, ttl time.Duration, clock otter.Clock) *Memory {
	if maxBytes < 1 {
		maxBytes = DefaultMaxBytes
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	// Weights are uint32; half of that range is far beyond any response.
	maxEntry := min(maxBytes/16, math.MaxUint32/2)
	return &Memory{
		entries: otter.Must(&otter.Options[Key, []byte]{
			MaximumWeight:    uint64(maxBytes),
			Weigher:          weigh,
			ExpiryCalculator: otter.ExpiryWriting[Key, []byte](ttl),
			Clock:            clock,
			// By default otter evicts on a background goroutine, and a
			// burst of writes can outrun it: in TestMemoryStaysWithinBound
			// the entries held reached ten times the bound. Running the
			// maintenance on the caller's goroutine keeps what is held
			// within one entry of the bound (otter can defer a drain while
			// its write buffer is being processed, seen once in a -race
			// run: 1,978 bytes over a 64 KiB bound); writers racing each
			// other can leave the entries they were adding over it until
			// the next call. It
			// costs a few hundred ns on some calls. We use no Compute or
			// deletion callbacks, which such an executor could deadlock.
			Executor: func(fn func()) { fn() },
		}),
		maxEntryBytes: int(maxEntry),
	}
}

// weigh is an entry's share of the byte bound.
func weigh(k Key, v []byte) uint32 {
	return uint32(min(len(k)+len(v)+entryOverhead, math.MaxUint32))
}

// Get returns a copy of k's value, or false if k is absent or expired.
func (m *Memory) Get(_ context.Context, k Key) ([]byte, bool, error) {
	v, ok := m.entries.GetIfPresent(k)
	if !ok {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

// Set stores a copy of v under k, replacing any previous value and
// restarting its TTL. A value over the per-entry cap is not stored and Set
// returns nil: a response too big to cache is not an error.
func (m *Memory) Set(_ context.Context, k Key, v []byte) error {
	if len(v) > m.maxEntryBytes {
		return nil
	}
	// Copy so the caller may reuse its buffer; the non-nil empty slice
	// keeps a cached empty value distinguishable from a miss.
	m.entries.Set(k, append(make([]byte, 0, len(v)), v...))
	return nil
}

// Close stops the cache's clean-up goroutine. It is optional (the
// goroutine ends once the Memory is garbage) but makes shutdown and leak
// checks deterministic. The Memory stays usable.
func (m *Memory) Close() {
	m.entries.StopAllGoroutines()
}
