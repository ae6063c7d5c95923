package cache

import (
	"context"
	"log/slog"
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
	// DefaultMaxPendingWrites bounds the writes a [Background] has in
	// flight. A healthy Redis takes about a millisecond per write, so each
	// slot carries about a thousand writes a second, far more than a
	// replica serves; the bound only bites while the store is slow or hung.
	DefaultMaxPendingWrites = 256
	// DefaultWriteTimeout bounds one background write.
	DefaultWriteTimeout = time.Second
)

// Background is a cache whose Set returns at once and writes in a goroutine
// of its own, so a request answered by the model does not wait for its
// answer to be stored before it is sent. It is meant for a store across the
// network ([Redis]); an in-process one is quicker to write than to hand
// over.
//
// Writes are best effort, as cache writes are: when DefaultMaxPendingWrites
// (or the configured bound) are already in flight, a new one is dropped
// rather than queued, so a slow store cannot pile up goroutines or memory.
// Get goes straight to the store; a Get that overtakes the write of the
// same key is a miss, which a cache may answer. Set never returns an
// error; failed writes are logged. It is safe for concurrent use.
type Background struct {
	next    Store
	logger  *slog.Logger
	timeout time.Duration
	// slots holds one element per write in flight.
	slots   chan struct{}
	dropped atomic.Uint64
}

// NewBackground returns a Background writing to next with at most
// maxPending writes in flight, each bounded by timeout. Failed writes go
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
	return &Background{next: next, logger: logger, timeout: timeout, slots: make(chan struct{}, maxPending)}
}

// Get reads k from the store.
func (b *Background) Get(ctx context.Context, k Key) ([]byte, bool, error) {
	return b.next.Get(ctx, k)
}

// Set starts writing v under k and returns. The write outlives ctx's
// cancellation (the client may be gone by then) but keeps its values, and
// v must not be modified afterwards.
func (b *Background) Set(ctx context.Context, k Key, v []byte) error {
	select {
	case b.slots <- struct{}{}:
	default:
		b.dropped.Add(1)
		return nil
	}
	wctx := context.WithoutCancel(ctx)
	go func() {
		defer func() { <-b.slots }()
		ctx, cancel := context.WithTimeout(wctx, b.timeout)
		defer cancel()
		if err := b.next.Set(ctx, k, v); err != nil {
			b.logger.LogAttrs(ctx, slog.LevelWarn, "cache set failed", slog.String("error", err.Error()))
		}
	}()
	return nil
}

// Dropped returns how many writes were dropped because too many were in
// flight.
func (b *Background) Dropped() uint64 { return b.dropped.Load() }

// Wait returns once no write is in flight, or when ctx ends (returning
// its error). A server calls it when shutting down, once no request can
// start another write, before closing the store's connection.
func (b *Background) Wait(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for len(b.slots) > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
