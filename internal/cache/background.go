package cache

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/agentapi/agentapi/internal/batch"
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
	queue   *batch.Queue[Entry]
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
	b := &Background{next: next, logger: logger, timeout: timeout}
	b.many, _ = next.(batchStore)
	b.queue = batch.New(BatchInterval, maxPending, b.write)
	return b
}

// Get reads from the store.
func (b *Background) Get(ctx context.Context, k Key) ([]byte, bool, error) {
	return b.next.Get(ctx, k)
}

// Set queues the write and returns; the caller's context ending does not
// cancel it. v must not change afterwards.
func (b *Background) Set(_ context.Context, k Key, v []byte) error {
	if !b.queue.Add(Entry{Key: k, Value: v}) {
		b.dropped.Add(1)
	}
	return nil
}

// write sends one batch.
func (b *Background) write(entries []Entry) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	failed := 0
	var err error
	if b.many != nil {
		if err = b.many.SetMany(ctx, entries); err != nil {
			failed = len(entries)
		}
	} else {
		for _, e := range entries {
			if serr := b.next.Set(ctx, e.Key, e.Value); serr != nil {
				failed, err = failed+1, serr
			}
		}
	}
	if err != nil {
		b.logger.LogAttrs(ctx, slog.LevelWarn, "cache set failed", slog.Int("writes", failed), slog.String("error", err.Error()))
	}
}

// Dropped reports how many writes were dropped because the bound was
// reached.
func (b *Background) Dropped() uint64 { return b.dropped.Load() }

// Wait sends what is queued now and returns once no write is held, or ctx
// ends. Shutdown calls it so that answers already served are still
// stored.
func (b *Background) Wait(ctx context.Context) error {
	go b.queue.Flush()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for b.queue.Held() > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
