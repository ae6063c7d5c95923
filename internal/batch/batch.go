// Package batch collects items from many goroutines and hands them to one
// handler in batches, on a timer that runs only while items wait. The
// access log (its lines and metrics) and the Redis cache's writes use it,
// so that per-request work runs in bursts with warm caches instead of
// once per request on a cold core.
package batch

import (
	"sync"
	"time"
)

// Queue holds items until a batch is handed to its handler: at most every
// interval after the first item of a batch arrived, or at once on Flush.
// Batches are handled one at a time, in the order their items were added.
// It is safe for concurrent use.
type Queue[T any] struct {
	every  time.Duration
	max    int
	handle func([]T)

	mu     sync.Mutex
	items  []T
	spare  []T // the last batch's array, reused
	held   int // queued or being handled
	armed  bool
	closed bool
	timer  *time.Timer

	handling sync.Mutex // one batch at a time keeps items in order
}

// New returns a Queue handing batches to handle at most every interval
// (every > 0) and holding at most max items, queued or being handled. The
// handler must not keep the slice it is given.
func New[T any](every time.Duration, max int, handle func([]T)) *Queue[T] {
	return &Queue[T]{every: every, max: max, handle: handle}
}

// Add queues v and reports true; it reports false, keeping nothing, when
// max items are held already or the queue is closed, so the caller can
// deal with v itself.
func (q *Queue[T]) Add(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.held >= q.max {
		return false
	}
	q.held++
	q.items = append(q.items, v)
	if !q.armed {
		q.armed = true
		if q.timer == nil {
			q.timer = time.AfterFunc(q.every, q.tick)
		} else {
			q.timer.Reset(q.every)
		}
	}
	return true
}

// tick hands over a batch and stays armed while items keep coming.
func (q *Queue[T]) tick() {
	q.Flush()
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && !q.closed {
		q.timer.Reset(q.every)
		return
	}
	q.armed = false
}

// Flush hands what is queued to the handler and returns once it is done.
func (q *Queue[T]) Flush() {
	q.handling.Lock()
	defer q.handling.Unlock()
	q.mu.Lock()
	batch := q.items
	q.items = q.spare[:0]
	q.mu.Unlock()
	if len(batch) > 0 {
		q.handle(batch)
	}
	clear(batch) // drop what the items refer to until the array is reused
	q.mu.Lock()
	q.held -= len(batch)
	q.spare = batch[:0]
	q.mu.Unlock()
}

// Held reports how many items are queued or being handled.
func (q *Queue[T]) Held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held
}

// Close refuses further items and flushes the queue.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	if q.timer != nil {
		q.timer.Stop()
	}
	q.mu.Unlock()
	q.Flush()
}
