// Package ratelimit decides whether a caller may make one more request,
// using a token bucket per key whose size and refill rate come from the
// caller's tier.
//
// A bucket holds up to Capacity tokens and gains RefillPerSecond tokens per
// second; each allowed request takes one. Two implementations share those
// semantics: [Memory] keeps buckets in this process (one replica, or a
// fallback), [Redis] keeps them in Redis so every replica enforces one shared
// limit. [Fallback] puts Memory (or a fixed answer) behind Redis for when
// Redis cannot be reached.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrInvalidPolicy is returned for a Policy that cannot describe a bucket.
var ErrInvalidPolicy = errors.New("ratelimit: invalid policy")

// ErrUnavailable is returned by a [Fallback] in [FallbackDeny] mode while
// the shared limiter cannot be reached.
var ErrUnavailable = errors.New("ratelimit: shared limiter unavailable")

// Policy is one tier's bucket.
type Policy struct {
	// Name identifies the tier in logs and headers; it plays no part in
	// the arithmetic.
	Name string
	// Capacity is the most tokens the bucket holds: the burst a caller may
	// spend at once after being idle.
	Capacity int64
	// RefillPerSecond is how many tokens the bucket regains per second.
	RefillPerSecond float64
}

// Validate reports whether p describes a usable bucket: at least one token
// of capacity and a positive, finite refill rate. A zero rate is rejected
// because a bucket that never refills locks its key out forever.
func (p Policy) Validate() error {
	if p.Capacity < 1 {
		return fmt.Errorf("%w %q: capacity %d, want at least 1", ErrInvalidPolicy, p.Name, p.Capacity)
	}
	if !(p.RefillPerSecond > 0) || math.IsInf(p.RefillPerSecond, 1) {
		return fmt.Errorf("%w %q: refill %v per second, want a positive finite rate", ErrInvalidPolicy, p.Name, p.RefillPerSecond)
	}
	return nil
}

// Decision is the outcome of one Allow or Peek.
type Decision struct {
	// Allowed reports whether the request may proceed. For Peek it reports
	// whether an Allow made now would succeed.
	Allowed bool
	// Limit is the bucket's capacity.
	Limit int64
	// Remaining is the number of whole tokens left after this decision.
	Remaining int64
	// RetryAfter is, when not allowed, the time until one token is
	// available; 0 when allowed.
	RetryAfter time.Duration
	// Reset is the time until the bucket is full again.
	Reset time.Duration
}

// Limiter is what both implementations, and [Fallback], provide.
type Limiter interface {
	// Allow takes one token from key's bucket if it has one.
	Allow(ctx context.Context, key string, p Policy) (Decision, error)
	// Peek reports key's bucket without taking a token.
	Peek(ctx context.Context, key string, p Policy) (Decision, error)
}

// maxWait caps the durations we report so that a tiny refill rate cannot
// overflow time.Duration (about 292 years).
const maxWait = 100 * 365 * 24 * time.Hour

// decide builds the Decision for a bucket that holds tokens after the
// request was (or was not) served. Both implementations go through the same
// rounding so that they agree to the millisecond: durations are rounded up,
// so a client that waits exactly RetryAfter finds its token there.
func decide(allowed bool, tokens float64, p Policy) Decision {
	tokens = max(0, min(tokens, float64(p.Capacity)))
	d := Decision{
		Allowed:   allowed,
		Limit:     p.Capacity,
		Remaining: int64(math.Floor(tokens)),
		Reset:     waitFor(float64(p.Capacity)-tokens, p.RefillPerSecond),
	}
	if !allowed {
		d.RetryAfter = max(time.Millisecond, waitFor(1-tokens, p.RefillPerSecond))
	}
	return d
}

// waitFor returns how long refilling need tokens takes at rate per second,
// rounded up to the millisecond. It first rounds to the microsecond, the
// resolution of Redis's clock, so float noise (1000.00001µs) does not round
// a 1ms wait up to 2ms.
func waitFor(need, rate float64) time.Duration {
	if need <= 0 {
		return 0
	}
	ms := math.Ceil(math.Round(need/rate*1e6) / 1000)
	if ms >= float64(maxWait/time.Millisecond) {
		return maxWait
	}
	return time.Duration(ms) * time.Millisecond
}
