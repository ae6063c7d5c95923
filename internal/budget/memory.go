package budget

import (
	"context"
	"sync"
	"time"
)

// Memory keeps budgets in this process: right for a single replica (each
// replica would otherwise enforce its own budget). It is safe for concurrent
// use. Counters of past days are dropped as days go by.
type Memory struct {
	now func() time.Time

	mu       sync.Mutex
	counters map[memoryKey]int64
	today    string // the day counters were last pruned for
}

type memoryKey struct {
	userID, day string
}

// NewMemory returns an empty Memory. now is the clock (time.Now when nil).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, counters: map[memoryKey]int64{}}
}

// Reserve holds amount tokens of userID's budget for today if the day's
// counter is below limit, and returns the hold together with the status
// after it. A limit of 0 or less means no budget: the tokens are counted
// (so that a later tier with a budget sees them) but never refused. When
// the budget is used up it returns an *ExceededError and holds nothing.
func (m *Memory) Reserve(_ context.Context, userID string, limit, amount int64) (Reservation, Status, error) {
	if err := validate(userID, amount); err != nil {
		return Reservation{}, Status{}, err
	}
	now := m.now()
	day := dayOf(now)
	k := memoryKey{userID, day}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune(day)
	used := m.counters[k]
	st := Status{Used: used, Limit: max(limit, 0), Reset: untilMidnight(now)}
	if limit > 0 && used >= limit {
		return Reservation{}, st, &ExceededError{Status: st}
	}
	m.counters[k] = used + amount
	st.Used = used + amount
	return Reservation{UserID: userID, Day: day, Amount: amount}, st, nil
}

// Settle replaces the reservation by the tokens the call really used, on
// the day the reservation was made.
func (m *Memory) Settle(_ context.Context, r Reservation, actual int64) error {
	if r.UserID == "" {
		return nil
	}
	k := memoryKey{r.UserID, r.Day}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters[k] = max(m.counters[k]+actual-r.Amount, 0)
	return nil
}

// Status reports userID's counter for today against limit.
func (m *Memory) Status(_ context.Context, userID string, limit int64) (Status, error) {
	now := m.now()
	m.mu.Lock()
	used := m.counters[memoryKey{userID, dayOf(now)}]
	m.mu.Unlock()
	return Status{Used: used, Limit: max(limit, 0), Reset: untilMidnight(now)}, nil
}

// prune drops counters of days before yesterday once per day. Yesterday's
// stay so that calls that started before midnight can still settle.
func (m *Memory) prune(today string) {
	if today == m.today {
		return
	}
	m.today = today
	t, err := time.Parse(time.DateOnly, today)
	if err != nil {
		return
	}
	yesterday := t.AddDate(0, 0, -1).Format(time.DateOnly)
	for k := range m.counters {
		if k.day < yesterday {
			delete(m.counters, k)
		}
	}
}
