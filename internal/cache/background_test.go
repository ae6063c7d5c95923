package cache

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// gatedStore is a Store whose Set waits for gate, then records or fails.
type gatedStore struct {
	gate    chan struct{}
	started chan Key
	fail    error
	mu      sync.Mutex
	written map[Key][]byte
}

func newGatedStore() *gatedStore {
	return &gatedStore{gate: make(chan struct{}), started: make(chan Key, 16), written: map[Key][]byte{}}
}

func (g *gatedStore) Get(_ context.Context, k Key) ([]byte, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.written[k]
	return v, ok, nil
}

func (g *gatedStore) Set(ctx context.Context, k Key, v []byte) error {
	g.started <- k
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	if g.fail != nil {
		return g.fail
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.written[k] = v
	return nil
}

func TestBackgroundWritesAfterSetReturns(t *testing.T) {
	t.Parallel()
	s := newGatedStore()
	b := NewBackground(s, 2, time.Minute, nil)
	ctx, cancel := context.WithCancel(t.Context())
	// Set returns while the store is still held; the request's context
	// ending does not cancel the write.
	if err := b.Set(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-s.started
	if _, ok, _ := b.Get(t.Context(), "a"); ok {
		t.Fatal("the write landed before the store let it")
	}
	close(s.gate)
	if err := b.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := b.Get(t.Context(), "a"); !ok || string(v) != "1" {
		t.Errorf("after Wait: %q, %v; want the value", v, ok)
	}
}

func TestBackgroundDropsBeyondItsBound(t *testing.T) {
	t.Parallel()
	s := newGatedStore()
	b := NewBackground(s, 2, time.Minute, nil)
	for _, k := range []Key{"a", "b", "c", "d"} {
		if err := b.Set(t.Context(), k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Dropped(); got != 2 {
		t.Errorf("dropped %d writes with 2 in flight, want 2", got)
	}
	// Wait gives up with its context while writes are held.
	short, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := b.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with writes held = %v, want the deadline", err)
	}
	close(s.gate)
	if err := b.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Slots are free again.
	if err := b.Set(t.Context(), "e", []byte("e")); err != nil || b.Wait(t.Context()) != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(t.Context(), "e"); !ok || b.Dropped() != 2 {
		t.Errorf("a write after the slots freed: stored %v, dropped %d", ok, b.Dropped())
	}
}

func TestBackgroundLogsFailuresWithoutValues(t *testing.T) {
	t.Parallel()
	s := newGatedStore()
	s.fail = errors.New("store refused")
	close(s.gate)
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))
	b := NewBackground(s, 1, time.Minute, logger)
	b.Set(t.Context(), "k", []byte("secret answer canary"))
	if err := b.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, "cache set failed") || !strings.Contains(out, "store refused") {
		t.Errorf("failure not logged: %s", out)
	}
	if strings.Contains(out, "canary") {
		t.Errorf("the log holds the cached answer: %s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// batchRecorder is a store that takes batches and records each.
type batchRecorder struct {
	*gatedStore
	mu      sync.Mutex
	batches [][]Entry
}

func (b *batchRecorder) SetMany(_ context.Context, entries []Entry) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batches = append(b.batches, slices.Clone(entries))
	return nil
}

// TestBackgroundSendsBatches: writes queued together reach a store that
// takes batches in one call, in the order they were made, and none by Set.
func TestBackgroundSendsBatches(t *testing.T) {
	t.Parallel()
	s := &batchRecorder{gatedStore: newGatedStore()}
	b := NewBackground(s, 16, time.Minute, nil)
	for _, k := range []Key{"a", "b", "c"} {
		if err := b.Set(t.Context(), k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []Key
	for _, batch := range s.batches {
		for _, e := range batch {
			keys = append(keys, e.Key)
		}
	}
	if !slices.Equal(keys, []Key{"a", "b", "c"}) || len(s.batches) > 2 {
		t.Errorf("batches %v: keys %v, want a, b, c in at most two batches", s.batches, keys)
	}
	if len(s.started) != 0 {
		t.Error("a write went through Set, not the batch")
	}
}
