package budget

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable time source shared by a test and its budget.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// budgeter is what both implementations provide.
type budgeter interface {
	Reserve(ctx context.Context, userID string, limit, amount int64) (Reservation, Status, error)
	Settle(ctx context.Context, r Reservation, actual int64) error
	Status(ctx context.Context, userID string, limit int64) (Status, error)
}

var (
	_ budgeter = (*Memory)(nil)
	_ budgeter = (*Redis)(nil)
)

// testBudget is the behaviour both implementations must share. newBudget
// returns a budget, sharing no state with other tests, that reads the given
// clock; replicas returns several budgets sharing one state (for Memory,
// the same one).
func testBudget(t *testing.T, newBudget func(t *testing.T, now func() time.Time) budgeter, replicas func(t *testing.T, n int) []budgeter) {
	ctx := context.Background()
	noon := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

	t.Run("ReserveSettleStatus", func(t *testing.T) {
		t.Parallel()
		c := newClock(noon)
		b := newBudget(t, c.now)
		r, st, err := b.Reserve(ctx, "u1", 1000, 300)
		if err != nil {
			t.Fatal(err)
		}
		if r != (Reservation{UserID: "u1", Day: "2026-03-10", Amount: 300}) || st.Used != 300 || st.Limit != 1000 || st.Remaining() != 700 {
			t.Fatalf("Reserve = %+v, %+v", r, st)
		}
		if st.Reset != 12*time.Hour {
			t.Errorf("Reset = %v at noon, want 12h", st.Reset)
		}
		if err := b.Settle(ctx, r, 120); err != nil {
			t.Fatal(err)
		}
		if st, _ := b.Status(ctx, "u1", 1000); st.Used != 120 {
			t.Errorf("after settling to 120: used %d", st.Used)
		}
		r2, _, _ := b.Reserve(ctx, "u1", 1000, 10)
		b.Settle(ctx, r2, 500) // more than reserved
		if st, _ := b.Status(ctx, "u1", 1000); st.Used != 620 {
			t.Errorf("after a call that used more than it reserved: used %d, want 620", st.Used)
		}
		if st, _ := b.Status(ctx, "someone-else", 1000); st.Used != 0 {
			t.Errorf("another user's counter is %d", st.Used)
		}
	})

	t.Run("RefusesOnceUsedUp", func(t *testing.T) {
		t.Parallel()
		b := newBudget(t, newClock(noon).now)
		// Below the limit a call starts even if it will take the counter over.
		r, _, err := b.Reserve(ctx, "u", 100, 90)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Reserve(ctx, "u", 100, 50); err != nil {
			t.Fatalf("a call at 90 of 100 must start: %v", err)
		}
		_, st, err := b.Reserve(ctx, "u", 100, 1)
		var ee *ExceededError
		if !errors.Is(err, ErrExceeded) || !errors.As(err, &ee) || ee.Status.Used != 140 || ee.Status.Limit != 100 || st.Used != 140 {
			t.Fatalf("Reserve past the budget = %+v, %v", st, err)
		}
		if st, _ := b.Status(ctx, "u", 100); st.Used != 140 {
			t.Errorf("a refused reservation changed the counter to %d", st.Used)
		}
		// Settling a call below what it reserved makes room again.
		b.Settle(ctx, r, 0)
		if _, _, err := b.Reserve(ctx, "u", 100, 1); err != nil {
			t.Errorf("after releasing 90 tokens: %v", err)
		}
	})

	t.Run("NoLimitCountsButNeverRefuses", func(t *testing.T) {
		t.Parallel()
		b := newBudget(t, newClock(noon).now)
		for range 3 {
			if _, _, err := b.Reserve(ctx, "u", 0, 1<<40); err != nil {
				t.Fatal(err)
			}
		}
		if st, _ := b.Status(ctx, "u", 0); st.Used != 3<<40 || st.Limit != 0 || st.Remaining() != 0 {
			t.Errorf("status %+v", st)
		}
		// The same counter then applies when a budget does.
		if _, _, err := b.Reserve(ctx, "u", 1000, 1); !errors.Is(err, ErrExceeded) {
			t.Errorf("with a budget after heavy use: %v", err)
		}
	})

	t.Run("NewDayNewBudget", func(t *testing.T) {
		t.Parallel()
		c := newClock(time.Date(2026, 3, 10, 23, 59, 0, 0, time.UTC))
		b := newBudget(t, c.now)
		late, st, err := b.Reserve(ctx, "u", 100, 100)
		if err != nil || st.Reset != time.Minute {
			t.Fatalf("Reserve = %+v, %v", st, err)
		}
		if _, _, err := b.Reserve(ctx, "u", 100, 1); !errors.Is(err, ErrExceeded) {
			t.Fatalf("second reservation on a full day: %v", err)
		}
		c.add(2 * time.Minute)
		r, st, err := b.Reserve(ctx, "u", 100, 10)
		if err != nil || r.Day != "2026-03-11" || st.Used != 10 {
			t.Fatalf("after midnight: %+v %+v %v", r, st, err)
		}
		// The call that started yesterday settles on yesterday.
		b.Settle(ctx, late, 5)
		if st, _ := b.Status(ctx, "u", 100); st.Used != 10 {
			t.Errorf("today's counter is %d after settling yesterday's call, want 10", st.Used)
		}
	})

	t.Run("ZeroReservationSettles", func(t *testing.T) {
		t.Parallel()
		b := newBudget(t, newClock(noon).now)
		if err := b.Settle(ctx, Reservation{}, 100); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Reserve(ctx, "", 10, 1); err == nil {
			t.Error("empty user id accepted")
		}
		if _, _, err := b.Reserve(ctx, "u", 10, -1); err == nil {
			t.Error("negative reservation accepted")
		}
	})

	t.Run("ConcurrentReservationsNeverOversell", func(t *testing.T) {
		t.Parallel()
		bs := replicas(t, 3)
		// Every call reserves 100 of a 1000 budget: whatever the
		// interleaving, exactly ten start.
		var admitted atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 60 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, err := bs[i%len(bs)].Reserve(ctx, "shared", 1000, 100)
				switch {
				case err == nil:
					admitted.Add(1)
				case !errors.Is(err, ErrExceeded):
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := admitted.Load(); n != 10 {
			t.Errorf("%d of 60 concurrent calls admitted, want exactly 10", n)
		}
	})
}

func TestMemory(t *testing.T) {
	t.Parallel()
	testBudget(t, func(t *testing.T, now func() time.Time) budgeter { return NewMemory(now) },
		func(t *testing.T, n int) []budgeter {
			m := NewMemory(nil)
			out := make([]budgeter, n)
			for i := range out {
				out[i] = m
			}
			return out
		})
}

func TestMemoryForgetsOldDays(t *testing.T) {
	t.Parallel()
	c := newClock(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	m := NewMemory(c.now)
	m.Reserve(context.Background(), "a", 0, 1)
	c.add(24 * time.Hour)
	m.Reserve(context.Background(), "b", 0, 1)
	if len(m.counters) != 2 {
		t.Fatalf("%d counters, want yesterday's kept", len(m.counters))
	}
	c.add(24 * time.Hour)
	m.Reserve(context.Background(), "c", 0, 1)
	if _, ok := m.counters[memoryKey{"a", "2026-03-10"}]; ok || len(m.counters) != 2 {
		t.Errorf("counters %v: the day before yesterday must be gone", m.counters)
	}
}

func TestStatusRemaining(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		st   Status
		want int64
	}{
		{Status{Used: 10, Limit: 100}, 90},
		{Status{Used: 150, Limit: 100}, 0},
		{Status{Used: 10, Limit: 0}, 0},
	} {
		if got := tc.st.Remaining(); got != tc.want {
			t.Errorf("%+v.Remaining() = %d, want %d", tc.st, got, tc.want)
		}
	}
}
