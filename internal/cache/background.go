package cache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Store is what a response cache provides: [Memory], [Redis] and
// [Background] all do.
type Store interface {
	Get(ctx context.Context, k Key) ([]byte, bool, error)
	Set(ctx context.Context, k Key, v []byte) error
}

// Defaults for [NewBackground] when given non-positive values.
const (
	// DefaultMaxPendingWrites bounds the writes a [Background] holds,
	// queued or being written. Batches leave every BatchInterval, so the
	// bound allows tens of thousands of writes a second, far more than a
	// replica serves; it only bites while the store is slow or hung.
	DefaultMaxPendingWrites = 256
	// DefaultWriteTimeout bounds one batch's write.
	DefaultWriteTimeout = time.Second
)

// BatchInterval is how long a [Background] write may wait to be sent with
// the others of its batch.
const BatchInterval = 2 * time.Millisecond

// Entry is one key and value to store.
type Entry struct {
	Key   Key
	Value []byte
}

// batchStore is a Store that writes many entries in one call ([Redis]:
// one pipelined round trip).
type batchStore interface {
	SetMany(ctx context.Context, entries []Entry) error
}

// Background is a cache whose Set returns at once: a request answered by
// the model does not wait for its answer to be stored. Writes are queued
// and sent in batches, at most BatchInterval after the first of a batch,
// in one call when the store can take many ([Redis]: one pipelined round
// trip for the batch instead of one per answer, and no goroutine per
// write). It is meant for a store across the network; an in-process one is
// quicker to write than to hand over.
//
// Writes are best effort, as cache writes are: when DefaultMaxPendingWrites
// (or the configured bound) are already queued or being written, a new one
// is dropped rather than queued, so a slow store cannot pile up memory. Get
// goes straight to the store; a Get that overtakes the write of the same
// key is a miss, which a cache may answer. Set never returns an error;
// failed writes are logged. It is safe for concurrent use.
type Background struct {
	next    Store
	many    batchStore // next's batch write; nil: one Set after another
	logger  *slog.Logger
	timeout time.Duration
	max     int

	mu      sync.Mutex
	queue   []Entry
	pending int // queued or being written
	armed   bool
	timer   *time.Timer
	writing sync.Mutex // one batch at a time
	dropped atomic.Uint64
}

// NewBackground returns a Background writing to next with at most
// maxPending writes held, each batch bounded by timeout. Failed writes go
// to logger (nil discards them).
func NewBackground(next Store, maxPending int, timeout time.Duration, logger *slog.Logger) *Background {
	if maxPending < 1 {
		maxPending = DefaultMaxPendingWrites
	}
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Background{next: next, logger: logger, timeout: timeout, max: maxPending}
	b.many, _ = next.(batchStore)
	return b
}

// Get reads from the store.
func (b *Background) Get(ctx context.Context, k Key) ([]byte, bool, error) {
	return b.next.Get(ctx, k)
}

// Set queues the write and returns; the caller's context ending does not
// cancel it. v must not change afterwards.
func (b *Background) Set(_ context.Context, k Key, v []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending >= b.max {
		b.dropped.Add(1)
		return nil
	}
	b.pending++
	b.queue = append(b.queue, Entry{Key: k, Value: v})
	if !b.armed {
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(BatchInterval, b.tick)
		} else {
			b.timer.Reset(BatchInterval)
		}
	}
	return nil
}

// tick writes the queue and stays armed while writes keep coming.
func (b *Background) tick() {
	b.write()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) > 0 {
		b.timer.Reset(BatchInterval)
		return
	}
	b.armed = false
}

// write sends what is queued as one batch.
func (b *Background) write() {
	b.writing.Lock()
	defer b.writing.Unlock()
	b.mu.Lock()
	batch := b.queue
	b.queue = nil
	b.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	failed := 0
	var err error
	if b.many != nil {
		if err = b.many.SetMany(ctx, batch); err != nil {
			failed = len(batch)
		}
	} else {
		for _, e := range batch {
			if e := b.next.Set(ctx, e.Key, e.Value); e != nil {
				failed, err = failed+1, e
			}
		}
	}
	if err != nil {
		b.logger.LogAttrs(ctx, slog.LevelWarn, "cache set failed", slog.Int("writes", failed), slog.String("error", err.Error()))
	}
	b.mu.Lock()
	b.pending -= len(batch)
	b.mu.Unlock()
}

// Dropped reports how many writes were dropped because the bound was
// reached.
func (b *Background) Dropped() uint64 { return b.dropped.Load() }

// Wait sends what is queued now and returns once no write is held, or ctx
// ends. Shutdown calls it so that answers already served are still
// stored.
func (b *Background) Wait(ctx context.Context) error {
	go b.write()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		b.mu.Lock()
		n := b.pending
		b.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
