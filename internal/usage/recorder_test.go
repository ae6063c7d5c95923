package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/store"
)

// fakeSink stores batches like the real store: all or nothing, refusing a
// batch with ErrNotFound when a record names an unknown user, and failing
// transiently while down is set.
type fakeSink struct {
	mu      sync.Mutex
	users   map[string]bool
	down    bool
	written []store.UsageRecord
	calls   int
}

func (f *fakeSink) RecordUsage(_ context.Context, recs []store.UsageRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return errors.New("database unavailable")
	}
	for _, r := range recs {
		if !f.users[r.UserID] {
			return fmt.Errorf("store: record usage for user id %q: %w", r.UserID, store.ErrNotFound)
		}
	}
	f.written = append(f.written, recs...)
	return nil
}

func (f *fakeSink) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeSink) requestIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, len(f.written))
	for i, r := range f.written {
		ids[i] = r.RequestID
	}
	return ids
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func rec(user, id string) store.UsageRecord {
	return store.UsageRecord{UserID: user, Model: "m", PromptTokens: 1, CompletionTokens: 2, RequestID: id}
}

func TestCloseWritesEverythingPending(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{users: map[string]bool{"u": true}}
	// A flush interval far beyond the test: only Close writes.
	r := NewRecorder(sink, discard(), Options{FlushInterval: time.Hour, BatchSize: 3})
	var want []string
	for i := range 10 {
		id := fmt.Sprint(i)
		want = append(want, id)
		if err := r.Record(context.Background(), rec("u", id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sink.requestIDs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("written %v, want %v in order", got, want)
	}
	if err := r.Record(context.Background(), rec("u", "late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Record after Close = %v, want ErrClosed", err)
	}
}

func TestFailedBatchesAreRetried(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{users: map[string]bool{"u": true}, down: true}
	r := NewRecorder(sink, discard(), Options{FlushInterval: 5 * time.Millisecond})
	for i := range 4 {
		r.Record(context.Background(), rec("u", fmt.Sprint(i)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sink.mu.Lock()
		calls := sink.calls
		sink.mu.Unlock()
		if calls >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recorder did not keep trying")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.Pending() != 4 {
		t.Fatalf("pending %d while the database is down, want 4", r.Pending())
	}
	sink.setDown(false)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sink.requestIDs(); len(got) != 4 {
		t.Errorf("written %v, want all 4 once", got)
	}
}

func TestCloseGivesUpOnlyWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{users: map[string]bool{"u": true}, down: true}
	r := NewRecorder(sink, discard(), Options{FlushInterval: time.Hour})
	r.Record(context.Background(), rec("u", "1"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := r.Close(ctx)
	if err == nil || r.Pending() != 1 {
		t.Fatalf("Close = %v with %d pending; want an error naming the unwritten record", err, r.Pending())
	}
}

// TestRecordsOfAMissingUserDoNotBlockOthers is the case of an account
// deleted while its usage waited: the store refuses every batch holding one
// of its records.
func TestRecordsOfAMissingUserDoNotBlockOthers(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{users: map[string]bool{"a": true, "b": true}}
	r := NewRecorder(sink, discard(), Options{FlushInterval: time.Hour, BatchSize: 4})
	for i, u := range []string{"a", "gone", "b", "gone", "a", "b"} {
		r.Record(context.Background(), rec(u, fmt.Sprint(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := fmt.Sprint(sink.requestIDs()); got != "[0 2 4 5]" {
		t.Errorf("written %s, want the four records of existing users, in order", got)
	}
	if r.Pending() != 0 {
		t.Errorf("%d records still pending: the missing user's would be retried forever", r.Pending())
	}
}

// TestOneByOneStopsAtATransientFailure checks that a failure halfway through
// writing records one at a time neither loses nor duplicates any.
func TestOneByOneStopsAtATransientFailure(t *testing.T) {
	t.Parallel()
	sink := &failAfter{fakeSink: fakeSink{users: map[string]bool{"a": true}}, okCalls: 3}
	r := NewRecorder(sink, discard(), Options{FlushInterval: time.Hour})
	for i, u := range []string{"a", "gone", "a", "a"} {
		r.Record(context.Background(), rec(u, fmt.Sprint(i)))
	}
	// Calls: the batch (refused), "0" (ok), "gone" (refused), then down.
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("Flush succeeded with the database down")
	}
	if r.Pending() != 2 {
		t.Fatalf("pending %d, want the 2 records not yet written", r.Pending())
	}
	sink.setDown(false)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(sink.requestIDs()); got != "[0 2 3]" {
		t.Errorf("written %s, want [0 2 3] exactly once each", got)
	}
}

// failAfter goes down after okCalls calls.
type failAfter struct {
	fakeSink
	okCalls int
}

func (f *failAfter) RecordUsage(ctx context.Context, recs []store.UsageRecord) error {
	f.mu.Lock()
	if f.calls >= f.okCalls && !f.down && f.okCalls >= 0 {
		f.down = true
		f.okCalls = -1 // once
	}
	f.mu.Unlock()
	return f.fakeSink.RecordUsage(ctx, recs)
}

// storeWithUser opens a SQLite store of the test's own, closed when the
// test ends, holding one user.
func storeWithUser(t *testing.T) (*store.Store, store.User) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "u.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	u, err := st.CreateUser(ctx, store.User{Email: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return st, u
}

func TestWithTheRealStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, u := storeWithUser(t)
	r := NewRecorder(st, discard(), Options{FlushInterval: time.Hour})
	r.Record(ctx, rec(u.ID, "1"))
	r.Record(ctx, rec("no-such-user", "2"))
	r.Record(ctx, rec(u.ID, "3"))
	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	n, err := st.TokensUsed(ctx, u.ID, time.Now().Add(-time.Hour))
	if err != nil || n != 6 {
		t.Fatalf("tokens of the existing user: %d, %v; want both records (6)", n, err)
	}
}

// lostReply is the real store behind a connection that breaks after the
// first batch's COMMIT went out: that batch is stored, but the recorder is
// told it failed.
type lostReply struct {
	*store.Store
	once sync.Once
}

func (l *lostReply) RecordUsage(ctx context.Context, recs []store.UsageRecord) error {
	err := l.Store.RecordUsage(ctx, recs)
	lost := false
	l.once.Do(func() { lost = true })
	if err == nil && lost {
		return errors.New("store: record usage: commit: unexpected EOF")
	}
	return err
}

// TestBatchWithLostReplyIsStoredOnce: the recorder writes a batch again
// after any error, including one whose batch was in fact stored; the ids it
// gives records make the store keep each once.
func TestBatchWithLostReplyIsStoredOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, u := storeWithUser(t)
	r := NewRecorder(&lostReply{Store: st}, discard(), Options{FlushInterval: time.Hour})
	r.Record(ctx, rec(u.ID, "1"))
	r.Record(ctx, rec(u.ID, "2"))
	if err := r.Flush(ctx); err == nil {
		t.Fatal("the first flush did not see the lost reply")
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := st.TokensUsed(ctx, u.ID, time.Now().Add(-time.Hour))
	if err != nil || n != 6 {
		t.Fatalf("tokens: %d, %v; want the two records once each (6)", n, err)
	}
}
