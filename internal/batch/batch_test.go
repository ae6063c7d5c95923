package batch

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder is a handler that keeps copies of its batches; while gate is
// set, each batch waits on it first.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	gate    chan struct{}
}

func (r *recorder) handle(b []int) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, slices.Clone(b))
}

func (r *recorder) all() (items []int, batches int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.batches {
		items = append(items, b...)
	}
	return items, len(r.batches)
}

// TestFlushHandsOverInOrder: nothing is handled before the interval, and a
// flush hands over every item in the order added, in one batch.
func TestFlushHandsOverInOrder(t *testing.T) {
	t.Parallel()
	var r recorder
	q := New(time.Hour, 10, r.handle)
	for i := range 5 {
		if !q.Add(i) {
			t.Fatalf("Add(%d) refused", i)
		}
	}
	if items, _ := r.all(); len(items) != 0 || q.Held() != 5 {
		t.Fatalf("before the flush: handled %v, held %d", items, q.Held())
	}
	q.Flush()
	if items, n := r.all(); !slices.Equal(items, []int{0, 1, 2, 3, 4}) || n != 1 || q.Held() != 0 {
		t.Errorf("after the flush: %v in %d batches, held %d", items, n, q.Held())
	}
}

// TestTimerHandsOver: items reach the handler by themselves, and the timer
// arms again for items added after it rested.
func TestTimerHandsOver(t *testing.T) {
	t.Parallel()
	var r recorder
	q := New(2*time.Millisecond, 10, r.handle)
	for round := 1; round <= 2; round++ {
		q.Add(round)
		deadline := time.Now().Add(5 * time.Second)
		for items, _ := r.all(); len(items) < round; items, _ = r.all() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: not handed over by the timer", round)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // the timer finds nothing and rests
	}
}

// TestBoundCountsItemsBeingHandled: the bound covers items queued and
// items the handler still holds; they free their places once handled.
func TestBoundCountsItemsBeingHandled(t *testing.T) {
	t.Parallel()
	r := recorder{gate: make(chan struct{})}
	q := New(time.Hour, 2, r.handle)
	q.Add(1)
	q.Add(2)
	if q.Add(3) {
		t.Fatal("a third item was queued over a bound of 2")
	}
	done := make(chan struct{})
	go func() { q.Flush(); close(done) }()
	time.Sleep(10 * time.Millisecond) // the handler now holds both
	if q.Add(4) || q.Held() != 2 {
		t.Fatalf("while handled: Add accepted or held %d", q.Held())
	}
	close(r.gate)
	<-done
	if !q.Add(5) || q.Held() != 1 {
		t.Errorf("after the batch: held %d, want 1", q.Held())
	}
}

// TestCloseFlushesAndRefuses: Close hands over what is queued, and later
// items are refused.
func TestCloseFlushesAndRefuses(t *testing.T) {
	t.Parallel()
	var r recorder
	q := New(time.Hour, 10, r.handle)
	q.Add(1)
	q.Close()
	if items, _ := r.all(); !slices.Equal(items, []int{1}) {
		t.Errorf("Close handed over %v, want [1]", items)
	}
	if q.Add(2) {
		t.Error("an item was queued after Close")
	}
}
