// Package usage records token usage off the request path: handlers hand a
// record to the Recorder, which writes batches to the store in the background
// and writes everything still pending before Close returns.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/store"
	"github.com/google/uuid"
)

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("usage: recorder closed")

// sink is where batches go (the store).
type sink interface {
	RecordUsage(ctx context.Context, recs []store.UsageRecord) error
}

// Options tunes a Recorder.
type Options struct {
	// FlushInterval is the longest a record waits before being written.
	FlushInterval time.Duration
	// BatchSize writes early once this many records wait.
	BatchSize int
	// WriteTimeout bounds one batch write.
	WriteTimeout time.Duration
}

// Recorder batches usage records. Records are not dropped: a failed batch
// stays pending and is retried on the next flush, and Close keeps trying until
// its context ends, logging exactly how many records could not be written.
// The one exception is a record whose user no longer exists, which no retry
// could ever store (see write).
type Recorder struct {
	sink   sink
	logger *slog.Logger
	opts   Options

	flushMu sync.Mutex // one batch write at a time keeps records in order and unduplicated
	mu      sync.Mutex
	pending []store.UsageRecord
	closed  bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// NewRecorder starts a Recorder writing to s.
func NewRecorder(s sink, logger *slog.Logger, opts Options) *Recorder {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	r := &Recorder{sink: s, logger: logger, opts: opts,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

// Record queues one record. It never blocks on the database. A record
// without an ID is given a random one here, so that however often its batch
// is written (a write whose outcome was lost is retried like any failed
// one), the store keeps it once.
func (r *Recorder) Record(_ context.Context, rec store.UsageRecord) error {
	if rec.ID == "" {
		// Time-ordered ids land at the end of the unique index instead of
		// all over it, which halves the cost of writing a batch.
		rec.ID = newRecordID()
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.pending = append(r.pending, rec)
	full := len(r.pending) >= r.opts.BatchSize
	r.mu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Pending is how many records wait to be written.
func (r *Recorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

func (r *Recorder) loop() {
	defer close(r.done)
	t := time.NewTicker(r.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		case <-r.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.opts.WriteTimeout)
		if err := r.Flush(ctx); err != nil {
			r.logger.LogAttrs(ctx, slog.LevelWarn, "usage flush failed; will retry",
				slog.Int("pending", r.Pending()), slog.String("error", err.Error()))
		}
		cancel()
	}
}

// Flush writes everything pending now, in batches.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	for {
		r.mu.Lock()
		n := min(len(r.pending), r.opts.BatchSize)
		batch := r.pending[:n:n]
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		done, err := r.write(ctx, batch)
		// flushMu keeps the head of pending as it was, so the records
		// written (or given up on) are exactly its first done.
		r.mu.Lock()
		r.pending = r.pending[done:]
		r.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// write stores batch and reports how many of its leading records are done
// with: written, or dropped because their user no longer exists.
//
// The store writes a batch all or nothing and refuses the whole of it with
// store.ErrNotFound when one record names a user that is gone (deleted
// accounts take their usage with them). Retrying that batch would fail
// forever and hold up every record behind it, so the batch is then written
// one record at a time: the records of existing users are kept, and only
// those of the missing user are dropped, with a log line saying so. Any
// other failure leaves the records pending for the next flush.
func (r *Recorder) write(ctx context.Context, batch []store.UsageRecord) (int, error) {
	err := r.sink.RecordUsage(ctx, batch)
	if err == nil {
		return len(batch), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("usage: write %d records: %w", len(batch), err)
	}
	dropped := map[string]int{}
	for i := range batch {
		err := r.sink.RecordUsage(ctx, batch[i:i+1])
		switch {
		case errors.Is(err, store.ErrNotFound):
			dropped[batch[i].UserID]++
		case err != nil:
			r.logDropped(ctx, dropped)
			return i, fmt.Errorf("usage: write record one by one: %w", err)
		}
	}
	r.logDropped(ctx, dropped)
	return len(batch), nil
}

// logDropped reports records given up on because their user is gone.
func (r *Recorder) logDropped(ctx context.Context, dropped map[string]int) {
	for userID, n := range dropped {
		r.logger.LogAttrs(ctx, slog.LevelWarn, "usage records dropped: their user no longer exists",
			slog.String("user_id", userID), slog.Int("records", n))
	}
}

// Close stops accepting records and writes what is pending, retrying until ctx
// ends. It reports how many records were lost if it could not write them all.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	already := r.closed
	r.closed = true
	r.mu.Unlock()
	if !already {
		close(r.stop)
	}
	<-r.done
	for {
		err := r.Flush(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			lost := r.Pending()
			r.logger.LogAttrs(context.Background(), slog.LevelError, "usage records not written at shutdown",
				slog.Int("lost", lost), slog.String("error", err.Error()))
			return fmt.Errorf("usage: %d records not written: %w", lost, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// newRecordID is a record's id: a version 7 UUID, whose leading bits are
// the time, so ids sort by when they were made. NewV7 fails only when the
// system's randomness does, which crypto/rand already treats as fatal.
func newRecordID() string {
	return uuid.Must(uuid.NewV7()).String()
}
