package ratelimit

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pollWait bounds how long a test waits for a refill it knows must come.
// It is a budget against hanging, not a claim about speed.
const pollWait = 10 * time.Second

// testLimiter is the behaviour every Limiter must have. newLimiter returns a
// fresh limiter that shares no state with any other test.
func testLimiter(t *testing.T, newLimiter func(t *testing.T) Limiter) {
	t.Run("FirstRequest", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		p := Policy{Name: "free", Capacity: 5, RefillPerSecond: 1}
		d := mustAllow(t, l, "k", p)
		if !d.Allowed || d.Limit != 5 || d.Remaining != 4 || d.RetryAfter != 0 {
			t.Errorf("first Allow = %+v, want allowed, limit 5, remaining 4, no retry", d)
		}
		if d.Reset <= 0 || d.Reset > time.Second {
			t.Errorf("Reset = %v, want in (0, 1s] for one token at 1/s", d.Reset)
		}
	})

	t.Run("ExhaustThenDeny", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		// 100s per token: the few milliseconds between calls cannot refill one.
		p := Policy{Name: "slow", Capacity: 3, RefillPerSecond: 0.01}
		for want := int64(2); want >= 0; want-- {
			d := mustAllow(t, l, "k", p)
			if !d.Allowed || d.Remaining != want {
				t.Fatalf("Allow = %+v, want allowed with remaining %d", d, want)
			}
		}
		for range 3 {
			d := mustAllow(t, l, "k", p)
			if d.Allowed || d.Remaining != 0 {
				t.Fatalf("Allow after capacity = %+v, want denied with remaining 0", d)
			}
			if d.RetryAfter < 90*time.Second || d.RetryAfter > 100*time.Second {
				t.Errorf("RetryAfter = %v, want about 1/refill = 100s", d.RetryAfter)
			}
			if d.Reset < 290*time.Second || d.Reset > 300*time.Second {
				t.Errorf("Reset = %v, want about capacity/refill = 300s", d.Reset)
			}
		}
	})

	t.Run("Refill", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		p := Policy{Name: "fast", Capacity: 2, RefillPerSecond: 10}
		exhaust(t, l, "k", p)
		// Tokens come back: first one, then the bucket fills up to capacity
		// and no further.
		d := pollAllow(t, l, "k", p)
		if d.Remaining > 1 {
			t.Errorf("after refill Remaining = %d, want at most capacity-1 = 1", d.Remaining)
		}
		d = poll(t, func() (Decision, error) { return l.Peek(t.Context(), "k", p) },
			func(d Decision) bool { return d.Remaining == 2 })
		if d.Reset != 0 {
			t.Errorf("full bucket Reset = %v, want 0", d.Reset)
		}
		time.Sleep(300 * time.Millisecond) // three refills' worth, to show the cap holds
		if d := mustPeek(t, l, "k", p); d.Remaining != 2 {
			t.Errorf("idle bucket Remaining = %d, want capacity 2", d.Remaining)
		}
	})

	t.Run("PeekConsumesNothing", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		p := Policy{Name: "slow", Capacity: 3, RefillPerSecond: 0.01}
		want := Decision{Allowed: true, Limit: 3, Remaining: 3}
		for range 5 {
			if diff := cmp.Diff(want, mustPeek(t, l, "k", p)); diff != "" {
				t.Fatalf("Peek of a fresh key (-want +got):\n%s", diff)
			}
		}
		mustAllow(t, l, "k", p)
		for range 5 {
			if d := mustPeek(t, l, "k", p); !d.Allowed || d.Remaining != 2 {
				t.Fatalf("Peek after one Allow = %+v, want allowed with remaining 2", d)
			}
		}
		exhaust(t, l, "k", p)
		d := mustPeek(t, l, "k", p)
		if d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 {
			t.Errorf("Peek of an empty bucket = %+v, want denied, remaining 0, RetryAfter > 0", d)
		}
	})

	t.Run("KeysIndependent", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		p := Policy{Name: "one", Capacity: 1, RefillPerSecond: 0.01}
		exhaust(t, l, "alice", p)
		if d := mustAllow(t, l, "bob", p); !d.Allowed || d.Remaining != 0 {
			t.Errorf("bob after alice ran out = %+v, want allowed", d)
		}
		if d := mustAllow(t, l, "alice", p); d.Allowed {
			t.Errorf("alice = %+v, want still denied", d)
		}
	})

	t.Run("CapacityChange", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		small := Policy{Name: "free", Capacity: 3, RefillPerSecond: 0.0001}
		big := Policy{Name: "pro", Capacity: 10, RefillPerSecond: 0.0001}
		tiny := Policy{Name: "banned", Capacity: 1, RefillPerSecond: 0.0001}

		mustAllow(t, l, "k", small) // 2 tokens left
		// An upgrade raises the ceiling; the tokens already spent stay spent.
		if d := mustAllow(t, l, "k", big); !d.Allowed || d.Limit != 10 || d.Remaining != 1 {
			t.Errorf("Allow after upgrade = %+v, want allowed, limit 10, remaining 1", d)
		}
		// A downgrade caps what is left at the new capacity.
		if d := mustPeek(t, l, "k", tiny); !d.Allowed || d.Limit != 1 || d.Remaining != 1 {
			t.Errorf("Peek after downgrade = %+v, want allowed, limit 1, remaining 1", d)
		}
		if d := mustAllow(t, l, "k", tiny); !d.Allowed || d.Remaining != 0 {
			t.Errorf("Allow after downgrade = %+v, want allowed, remaining 0", d)
		}
		if d := mustAllow(t, l, "k", tiny); d.Allowed {
			t.Errorf("second Allow after downgrade = %+v, want denied", d)
		}
	})

	t.Run("RateChange", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		slow := Policy{Name: "free", Capacity: 2, RefillPerSecond: 0.0001}
		fast := Policy{Name: "pro", Capacity: 2, RefillPerSecond: 1000}
		exhaust(t, l, "k", slow)
		// At the slow rate the next token is hours away; at the new rate it
		// is a millisecond away.
		if d := mustPeek(t, l, "k", slow); d.RetryAfter < time.Hour {
			t.Fatalf("slow RetryAfter = %v, want hours", d.RetryAfter)
		}
		pollAllow(t, l, "k", fast)
	})

	t.Run("ExactUnderConcurrency", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		p := Policy{Name: "free", Capacity: 5, RefillPerSecond: 0.0001}
		const callers = 40
		var (
			wg        sync.WaitGroup
			start     = make(chan struct{})
			decisions = make([]Decision, callers)
			errs      = make([]error, callers)
		)
		for i := range callers {
			wg.Go(func() {
				<-start
				decisions[i], errs[i] = l.Allow(t.Context(), "k", p)
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("Allow: %v", err)
		}
		var remaining []int64
		for _, d := range decisions {
			if d.Allowed {
				remaining = append(remaining, d.Remaining)
			}
		}
		slices.Sort(remaining)
		// Each admitted caller saw its own position in the bucket.
		if diff := cmp.Diff([]int64{0, 1, 2, 3, 4}, remaining); diff != "" {
			t.Errorf("Remaining of the allowed callers (-want +got):\n%s", diff)
		}
	})

	t.Run("InvalidPolicy", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t)
		for _, p := range []Policy{
			{Name: "empty", Capacity: 0, RefillPerSecond: 1},
			{Name: "stuck", Capacity: 5, RefillPerSecond: 0},
			{Name: "negative", Capacity: 5, RefillPerSecond: -1},
		} {
			if _, err := l.Allow(t.Context(), "k", p); !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("Allow(%+v) error = %v, want ErrInvalidPolicy", p, err)
			}
			if _, err := l.Peek(t.Context(), "k", p); !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("Peek(%+v) error = %v, want ErrInvalidPolicy", p, err)
			}
		}
	})
}

func mustAllow(t *testing.T, l Limiter, key string, p Policy) Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), key, p)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	checkInvariants(t, d, p)
	return d
}

func mustPeek(t *testing.T, l Limiter, key string, p Policy) Decision {
	t.Helper()
	d, err := l.Peek(t.Context(), key, p)
	if err != nil {
		t.Fatalf("Peek(%q): %v", key, err)
	}
	checkInvariants(t, d, p)
	return d
}

// checkInvariants holds for every decision, whatever the bucket's state.
func checkInvariants(t *testing.T, d Decision, p Policy) {
	t.Helper()
	if d.Limit != p.Capacity || d.Remaining < 0 || d.Remaining > p.Capacity || d.Reset < 0 {
		t.Errorf("decision %+v out of range for %+v", d, p)
	}
	if d.Allowed != (d.RetryAfter == 0) {
		t.Errorf("decision %+v: RetryAfter must be set exactly when denied", d)
	}
}

// exhaust takes tokens from key until a request is denied.
func exhaust(t *testing.T, l Limiter, key string, p Policy) {
	t.Helper()
	for range 1000 {
		if !mustAllow(t, l, key, p).Allowed {
			return
		}
	}
	t.Fatalf("1000 requests against capacity %d were all allowed", p.Capacity)
}

// pollAllow calls Allow until it is allowed.
func pollAllow(t *testing.T, l Limiter, key string, p Policy) Decision {
	t.Helper()
	return poll(t, func() (Decision, error) { return l.Allow(t.Context(), key, p) },
		func(d Decision) bool { return d.Allowed })
}

// poll calls f until done accepts its decision or pollWait runs out.
func poll(t *testing.T, f func() (Decision, error), done func(Decision) bool) Decision {
	t.Helper()
	deadline := time.Now().Add(pollWait)
	for {
		d, err := f()
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if done(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached after %v; last decision %+v", pollWait, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p     Policy
		valid bool
	}{
		{Policy{Capacity: 1, RefillPerSecond: 0.001}, true},
		{Policy{Capacity: 1000, RefillPerSecond: 1e6}, true},
		{Policy{Capacity: 0, RefillPerSecond: 1}, false},
		{Policy{Capacity: -1, RefillPerSecond: 1}, false},
		{Policy{Capacity: 1, RefillPerSecond: 0}, false},
		{Policy{Capacity: 1, RefillPerSecond: -1}, false},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if (err == nil) != tt.valid {
			t.Errorf("%+v.Validate() = %v, want valid=%v", tt.p, err, tt.valid)
		}
	}
}

func TestPolicyValidateRejectsNaNAndInf(t *testing.T) {
	t.Parallel()
	var zero float64
	for _, r := range []float64{zero / zero, 1 / zero} {
		if err := (Policy{Capacity: 1, RefillPerSecond: r}).Validate(); err == nil {
			t.Errorf("refill %v accepted", r)
		}
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	p := Policy{Capacity: 10, RefillPerSecond: 4} // 250ms per token
	tests := []struct {
		allowed bool
		tokens  float64
		want    Decision
	}{
		{true, 10, Decision{Allowed: true, Limit: 10, Remaining: 10}},
		{true, 9, Decision{Allowed: true, Limit: 10, Remaining: 9, Reset: 250 * time.Millisecond}},
		{true, 0.5, Decision{Allowed: true, Limit: 10, Remaining: 0, Reset: 2375 * time.Millisecond}},
		{false, 0.5, Decision{Limit: 10, RetryAfter: 125 * time.Millisecond, Reset: 2375 * time.Millisecond}},
		// A denial never says "retry now", however close the token is;
		// waits are rounded to the microsecond before rounding up to the
		// millisecond, so float noise does not add a millisecond.
		{false, 0.9999999, Decision{Limit: 10, RetryAfter: time.Millisecond, Reset: 2250 * time.Millisecond}},
		{false, 0.99, Decision{Limit: 10, RetryAfter: 3 * time.Millisecond, Reset: 2253 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.allowed, tt.tokens), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, decide(tt.allowed, tt.tokens, p)); diff != "" {
				t.Errorf("decide (-want +got):\n%s", diff)
			}
		})
	}
}
