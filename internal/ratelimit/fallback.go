package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// FallbackMode says what a [Fallback] does while the shared limiter is
// unreachable.
type FallbackMode string

const (
	// FallbackLocal decides with the in-process limiter. Each replica then
	// enforces the limit on its own, so a caller spread over N replicas may
	// get up to N times the limit until Redis is back.
	FallbackLocal FallbackMode = "local"
	// FallbackAllow lets every request through: availability over limits.
	FallbackAllow FallbackMode = "allow"
	// FallbackDeny refuses every request with an error wrapping
	// [ErrUnavailable]: limits over availability.
	FallbackDeny FallbackMode = "deny"
)

// ParseFallbackMode checks that s names a FallbackMode.
func ParseFallbackMode(s string) (FallbackMode, error) {
	switch m := FallbackMode(s); m {
	case FallbackLocal, FallbackAllow, FallbackDeny:
		return m, nil
	default:
		return "", fmt.Errorf("ratelimit: unknown fallback mode %q, want local, allow or deny", s)
	}
}

// Defaults for [FallbackOptions].
const (
	// DefaultSharedTimeout bounds one call to the shared limiter. A healthy
	// Redis answers in about a millisecond, but a burst on a cold
	// connection pool waits for dials and handshakes: 45 simultaneous
	// decisions over three fresh clients took up to 12ms on two CPUs, and
	// up to 80ms under the race detector. A timeout that fires on a live
	// Redis is costly, because every decision made by the fallback
	// meanwhile is per replica and the shared limit stops being exact. A
	// hung Redis, on the other hand, costs this wait only to one request
	// per DefaultProbeInterval; the rest go straight to the fallback. So
	// the bound is generous on the scale of Redis and small on the scale
	// of a request.
	DefaultSharedTimeout = 250 * time.Millisecond
	// DefaultProbeInterval is how often, while the shared limiter is down,
	// one request tries it again. The other requests go straight to the
	// fallback, so a hung Redis costs one request per interval a timeout
	// instead of costing every request one.
	DefaultProbeInterval = time.Second
)

// FallbackOptions configures a [Fallback]. The zero value is usable.
type FallbackOptions struct {
	// Mode is what to do while the shared limiter is down; empty means
	// FallbackLocal.
	Mode FallbackMode
	// Logger receives one record when the shared limiter goes down and one
	// when it comes back; nil discards them.
	Logger *slog.Logger
	// SharedTimeout bounds each call to the shared limiter; 0 means
	// DefaultSharedTimeout.
	SharedTimeout time.Duration
	// ProbeInterval is how often a request retries the shared limiter while
	// it is down; 0 means DefaultProbeInterval.
	ProbeInterval time.Duration
	// OnFallback, if set, is called once for every decision made without
	// the shared limiter, e.g. to count it in a metric. It runs on the
	// request path and must be quick and safe for concurrent use.
	OnFallback func()
}

// Fallback is a [Limiter] that asks a shared limiter (normally [Redis]) and,
// when that fails, answers by its mode instead of failing the request. It
// returns to the shared limiter on its own once that answers again. It is
// safe for concurrent use.
type Fallback struct {
	shared        Limiter
	local         Limiter
	mode          FallbackMode
	logger        *slog.Logger
	sharedTimeout time.Duration
	probeInterval time.Duration
	onFallback    func()
	// now is the clock; tests replace it.
	now func() time.Time

	// down is set while the shared limiter is considered unreachable.
	down atomic.Bool
	// nextProbe is when (Unix nanoseconds) a request may next try the
	// shared limiter while down.
	nextProbe atomic.Int64
	// fallbacks counts decisions made without the shared limiter.
	fallbacks atomic.Uint64
}

// NewFallback returns a Fallback in front of shared. local is the limiter
// used in FallbackLocal mode and may be nil in the other modes.
func NewFallback(shared, local Limiter, opts FallbackOptions) (*Fallback, error) {
	if opts.Mode == "" {
		opts.Mode = FallbackLocal
	}
	if _, err := ParseFallbackMode(string(opts.Mode)); err != nil {
		return nil, err
	}
	if shared == nil {
		return nil, errors.New("ratelimit: fallback needs a shared limiter")
	}
	if opts.Mode == FallbackLocal && local == nil {
		return nil, errors.New("ratelimit: fallback mode local needs a local limiter")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SharedTimeout <= 0 {
		opts.SharedTimeout = DefaultSharedTimeout
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	return &Fallback{
		shared:        shared,
		local:         local,
		mode:          opts.Mode,
		logger:        opts.Logger,
		sharedTimeout: opts.SharedTimeout,
		probeInterval: opts.ProbeInterval,
		onFallback:    opts.OnFallback,
		now:           time.Now,
	}, nil
}

// Allow takes a token from key's bucket in the shared limiter, or decides
// by the fallback mode if the shared limiter cannot be reached.
func (f *Fallback) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	return f.decide(ctx, key, p, 1)
}

// Peek reads key's bucket from the shared limiter, or from the fallback if
// the shared limiter cannot be reached.
func (f *Fallback) Peek(ctx context.Context, key string, p Policy) (Decision, error) {
	return f.decide(ctx, key, p, 0)
}

// Fallbacks returns how many decisions were made without the shared
// limiter since f was created.
func (f *Fallback) Fallbacks() uint64 {
	return f.fallbacks.Load()
}

// Down reports whether f currently considers the shared limiter
// unreachable.
func (f *Fallback) Down() bool {
	return f.down.Load()
}

// decide runs one Allow (cost 1) or Peek (cost 0).
func (f *Fallback) decide(ctx context.Context, key string, p Policy, cost int) (Decision, error) {
	d, _, err := f.decideVia(ctx, key, p, cost, func(ctx context.Context) (Decision, error) {
		return call(ctx, f.shared, key, p, cost)
	})
	return d, err
}

// sharedWith is a shared limiter that can carry extra Redis commands in the
// round trip of its decision, as [Redis] can.
type sharedWith interface {
	AllowWith(ctx context.Context, key string, p Policy, extra ...redis.Cmder) (Decision, error)
}

// AllowWith is Allow sending extra commands in the shared limiter's round
// trip (see [Redis.AllowWith]). sent reports whether they went to Redis:
// false when the shared limiter was skipped (it is down and no probe is
// due) or cannot carry commands, in which case the caller must run them
// itself if it still wants them. When sent, each command holds its own
// result or error, even if the decision fell back.
func (f *Fallback) AllowWith(ctx context.Context, key string, p Policy, extra ...redis.Cmder) (d Decision, sent bool, err error) {
	with, ok := f.shared.(sharedWith)
	if !ok {
		d, err := f.Allow(ctx, key, p)
		return d, false, err
	}
	return f.decideVia(ctx, key, p, 1, func(ctx context.Context) (Decision, error) {
		return with.AllowWith(ctx, key, p, extra...)
	})
}

// decideVia makes one decision with shared, bounded by the shared
// timeout, or by the fallback mode when the shared limiter is down or
// fails. asked reports whether shared was called.
func (f *Fallback) decideVia(ctx context.Context, key string, p Policy, cost int, shared func(context.Context) (Decision, error)) (d Decision, asked bool, err error) {
	// A bad policy is our bug, not Redis's: report it without falling back.
	if err := p.Validate(); err != nil {
		return Decision{}, false, err
	}
	if f.down.Load() && !f.probeDue() {
		d, err := f.fallback(ctx, key, p, cost, nil)
		return d, false, err
	}

	sctx, cancel := context.WithTimeout(ctx, f.sharedTimeout)
	d, err = shared(sctx)
	cancel()
	if err == nil {
		f.markUp()
		return d, true, nil
	}
	if ctx.Err() != nil {
		// The caller gave up (client gone, request deadline); that says
		// nothing about the shared limiter's health.
		return Decision{}, true, fmt.Errorf("ratelimit: %w", context.Cause(ctx))
	}
	f.markDown(err)
	d, err = f.fallback(ctx, key, p, cost, err)
	return d, true, err
}

// probeDue reports whether this request should try the shared limiter
// while it is down. At most one request per probe interval gets true.
func (f *Fallback) probeDue() bool {
	next := f.nextProbe.Load()
	now := f.now().UnixNano()
	return now >= next && f.nextProbe.CompareAndSwap(next, now+int64(f.probeInterval))
}

// markDown records a failed shared call and logs the transition if this is
// the first failure.
func (f *Fallback) markDown(err error) {
	f.nextProbe.Store(f.now().Add(f.probeInterval).UnixNano())
	if f.down.CompareAndSwap(false, true) {
		f.logger.Warn("rate limiter: shared store unavailable, using fallback",
			slog.String("mode", string(f.mode)),
			slog.Duration("probe_interval", f.probeInterval),
			slog.String("error", err.Error()))
	}
}

// markUp records a successful shared call and logs the recovery if the
// shared limiter was down.
func (f *Fallback) markUp() {
	if f.down.Load() && f.down.CompareAndSwap(true, false) {
		f.logger.Info("rate limiter: shared store available again",
			slog.String("mode", string(f.mode)),
			slog.Uint64("fallback_decisions", f.fallbacks.Load()))
	}
}

// fallback decides without the shared limiter. cause is the shared
// limiter's error, or nil when it was not asked this time.
func (f *Fallback) fallback(ctx context.Context, key string, p Policy, cost int, cause error) (Decision, error) {
	f.fallbacks.Add(1)
	if f.onFallback != nil {
		f.onFallback()
	}
	switch f.mode {
	case FallbackAllow:
		// With no state to go by, answer as a fresh bucket would.
		return decide(true, float64(p.Capacity-int64(cost)), p), nil
	case FallbackDeny:
		if cause == nil {
			return Decision{}, fmt.Errorf("%w (key %q)", ErrUnavailable, key)
		}
		return Decision{}, fmt.Errorf("%w (key %q): %w", ErrUnavailable, key, cause)
	default:
		d, err := call(ctx, f.local, key, p, cost)
		if err != nil {
			return Decision{}, fmt.Errorf("ratelimit: local fallback: %w", err)
		}
		return d, nil
	}
}

// call runs Allow or Peek on l.
func call(ctx context.Context, l Limiter, key string, p Policy, cost int) (Decision, error) {
	if cost == 0 {
		return l.Peek(ctx, key, p)
	}
	return l.Allow(ctx, key, p)
}
