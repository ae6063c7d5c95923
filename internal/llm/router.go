package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults for [RouterOptions].
const (
	// DefaultRetries is how many extra rounds over the upstreams a call
	// gets after every upstream failed in a way worth retrying.
	DefaultRetries = 2
	// DefaultBackoffBase is the wait before the first extra round; it
	// doubles every round up to DefaultBackoffMax.
	DefaultBackoffBase = 100 * time.Millisecond
	// DefaultBackoffMax caps one wait between rounds.
	DefaultBackoffMax = 2 * time.Second
	// DefaultBreakerFailures is how many failures in a row open an
	// upstream's circuit.
	DefaultBreakerFailures = 5
	// DefaultBreakerCooldown is how long an open circuit fails fast before
	// one probe call is let through.
	DefaultBreakerCooldown = 30 * time.Second
)

// RouterOptions configures a [Router]. The zero value is usable.
type RouterOptions struct {
	// Timeout is the budget of one call from its start until the first
	// byte of the answer, all attempts and waits between them included.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// Retries is how many extra rounds over the upstreams follow the first
	// one when every upstream failed with a connection error, a 429 or a
	// 5xx. Negative means none; zero means DefaultRetries, so pass a
	// negative number to switch retries off.
	Retries int
	// BackoffBase and BackoffMax shape the wait between rounds: BackoffBase
	// doubled each round, capped at BackoffMax, of which a random half is
	// jitter. An upstream's Retry-After makes the wait longer, never
	// shorter. Zero means the defaults.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// BreakerFailures is how many consecutive failures open an upstream's
	// circuit; BreakerCooldown how long it then stays open. Zero means the
	// defaults.
	BreakerFailures uint32
	BreakerCooldown time.Duration
	// Logger receives one line per failed attempt and per circuit change;
	// nil discards them.
	Logger *slog.Logger
	// OnRetry, when set, is called before every attempt of a call but its
	// first (a retry, or a move to a fallback) with the name of the
	// upstream about to be tried, for example to count it in a metric. It
	// runs on the request path and must be quick.
	OnRetry func(upstream string)
}

// Router is a provider over one or more upstream [Client]s: the primary
// first, then each fallback in order. It retries calls that failed before
// any answer arrived, and keeps a circuit breaker per upstream so that one
// that keeps failing is skipped for a cool-down instead of costing every
// call a timeout. It has the same methods as Client, so the HTTP layer sees
// one provider. It is safe for concurrent use.
//
// A call goes round the upstreams whose circuit admits it. A failure worth
// retrying (connection refused, reset or cut off, 429, 5xx) moves on to
// the next upstream at once; any other failure (a 4xx, a timeout) ends the
// call. When every upstream failed, the router waits (exponential backoff
// with jitter, and at least as long as an upstream's Retry-After asked for
// that upstream) and goes round again, at most Retries more times. Nothing
// starts after Timeout has passed since the call began, and each attempt's
// first-byte budget is what is left of it.
//
// A streamed call counts as answered once its first event has arrived:
// the router reads that event before returning the stream, so an upstream
// that sends headers and then breaks off is retried too. Once the stream
// is handed over, nothing is retried, since the caller may already have
// passed bytes on.
type Router struct {
	upstreams []*routedUpstream
	timeout   time.Duration
	retries   int
	base, max time.Duration
	logger    *slog.Logger
	onRetry   func(upstream string)
}

// routedUpstream is one upstream with its circuit breaker.
type routedUpstream struct {
	client  *Client
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// Outcomes reported to a breaker. The breaker only needs to know whether a
// call speaks for or against the upstream's health.
var (
	errBreakerFailure  = errors.New("llm: upstream failed")
	errBreakerExcluded = errors.New("llm: outcome says nothing about the upstream")
)

// NewRouter returns a Router over clients, tried in the order given. It
// fails when there is no client.
func NewRouter(clients []*Client, opts RouterOptions) (*Router, error) {
	if len(clients) == 0 {
		return nil, errors.New("llm: router needs at least one upstream")
	}
	r, failures, cooldown := routerFrom(opts)
	for _, c := range clients {
		r.upstreams = append(r.upstreams, &routedUpstream{client: c, breaker: newBreaker(c.name, failures, cooldown, r.logger)})
	}
	return r, nil
}

// routerFrom is a Router without upstreams holding opts with their
// defaults applied, and the breakers' settings.
func routerFrom(opts RouterOptions) (r *Router, failures uint32, cooldown time.Duration) {
	r = &Router{
		timeout: opts.Timeout,
		retries: opts.Retries,
		base:    opts.BackoffBase,
		max:     opts.BackoffMax,
		logger:  opts.Logger,
		onRetry: opts.OnRetry,
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	switch {
	case r.retries == 0:
		r.retries = DefaultRetries
	case r.retries < 0:
		r.retries = 0
	}
	if r.base <= 0 {
		r.base = DefaultBackoffBase
	}
	if r.max <= 0 {
		r.max = DefaultBackoffMax
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	failures = opts.BreakerFailures
	if failures == 0 {
		failures = DefaultBreakerFailures
	}
	cooldown = opts.BreakerCooldown
	if cooldown <= 0 {
		cooldown = DefaultBreakerCooldown
	}
	return r, failures, cooldown
}

// newBreaker is the circuit breaker of one upstream: open after failures
// in a row, for cooldown, then one probe.
func newBreaker(name string, failures uint32, cooldown time.Duration, logger *slog.Logger) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     cooldown,
		ReadyToTrip: func(counts gobreaker.Counts) bool {
			return counts.ConsecutiveFailures >= failures
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errBreakerExcluded) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelWarn
			}
			logger.LogAttrs(context.Background(), level, "upstream circuit "+to.String(),
				slog.String("upstream", name), slog.String("from", from.String()))
		},
	})
}

// Complete sends a chat-completions request body as [Client.Complete] does,
// with retries and fallbacks.
func (r *Router) Complete(ctx context.Context, body []byte) (*Response, error) {
	var out *Response
	err := r.do(ctx, func(c *Client, budget time.Duration) error {
		resp, err := c.post(ctx, c.chatURL, body, budget)
		out = resp
		return err
	})
	return out, err
}

// Embeddings sends an embeddings request body as [Client.Embeddings] does,
// with retries and fallbacks.
func (r *Router) Embeddings(ctx context.Context, body []byte) (*Response, error) {
	var out *Response
	err := r.do(ctx, func(c *Client, budget time.Duration) error {
		resp, err := c.post(ctx, c.embeddingsURL, body, budget)
		out = resp
		return err
	})
	return out, err
}

// Models returns the model list of the first upstream that answers.
func (r *Router) Models(ctx context.Context) ([]byte, error) {
	var out []byte
	err := r.do(ctx, func(c *Client, budget time.Duration) error {
		raw, err := c.models(ctx, budget)
		out = raw
		return err
	})
	return out, err
}

// Stream opens a streamed chat as [Client.Stream] does, with retries and
// fallbacks until the stream's first event has arrived. The caller must
// Close the stream.
func (r *Router) Stream(ctx context.Context, body []byte) (*Stream, error) {
	var out *Stream
	err := r.do(ctx, func(c *Client, budget time.Duration) error {
		s, err := r.openStream(ctx, c, body, budget)
		out = s
		return err
	})
	return out, err
}

// openStream opens one stream and reads its first event within budget.
func (r *Router) openStream(ctx context.Context, c *Client, body []byte, budget time.Duration) (*Stream, error) {
	start := time.Now()
	s, err := c.stream(ctx, body, budget)
	if err != nil {
		return nil, err
	}
	// The headers used part of the budget; the first event gets the rest.
	var timedOut atomic.Bool
	timer := time.AfterFunc(max(budget-time.Since(start), 0), func() {
		timedOut.Store(true)
		s.cancel(errFirstByteTimeout)
	})
	payload, err := s.Next()
	stopped := timer.Stop()
	switch {
	case err == nil && stopped:
		s.peeked = append(s.peeked[:0], payload...)
		s.hasPeeked = true
		return s, nil
	case errors.Is(err, io.EOF) && stopped:
		// An answer without events is odd but complete; the caller sees
		// the end of the stream.
		return s, nil
	}
	s.Close()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, c.callerGone(ctxErr)
	}
	if timedOut.Load() {
		return nil, &UpstreamError{Kind: ErrUpstreamTimeout, Status: 200, Upstream: c.name,
			detail: "no event within " + budget.String()}
	}
	detail := "stream broke off before its first event"
	if err != nil && errors.Is(err, io.ErrUnexpectedEOF) {
		detail = "stream ended inside its first event"
	}
	return nil, &UpstreamError{Kind: ErrUpstreamUnavailable, Status: 200, Upstream: c.name, detail: detail, connection: true}
}

// do runs call against the upstreams as the Router's documentation
// describes and returns the last failure when none succeeded.
func (r *Router) do(ctx context.Context, call func(c *Client, budget time.Duration) error) error {
	start := time.Now()
	deadline := start.Add(r.timeout)
	// notBefore holds, per upstream, the time its Retry-After asked us to
	// wait until.
	notBefore := make([]time.Time, len(r.upstreams))
	var lastErr error
	attempts := 0
	for round := 0; ; round++ {
		tried := false
		for i, u := range r.upstreams {
			now := time.Now()
			if now.Before(notBefore[i]) {
				continue
			}
			remaining := deadline.Sub(now)
			if remaining <= 0 {
				return r.giveUp(lastErr, deadline.Sub(start))
			}
			done, err := u.breaker.Allow()
			if err != nil {
				// Open (or half-open with its probe already out): skip.
				if lastErr == nil {
					lastErr = &UpstreamError{Kind: ErrUpstreamUnavailable, Upstream: u.client.name, detail: "circuit open"}
				}
				continue
			}
			tried = true
			if attempts > 0 && r.onRetry != nil {
				r.onRetry(u.client.name)
			}
			attempts++
			err = call(u.client, remaining)
			done(breakerOutcome(ctx, err))
			if err == nil {
				return nil
			}
			if ctxErr := ctx.Err(); ctxErr != nil {
				// The caller left while the attempt was failing: say so,
				// as a cancellation during the call or the wait would.
				if errors.Is(err, ctxErr) {
					return err
				}
				return u.client.callerGone(ctxErr)
			}
			if !retryable(err) {
				return err
			}
			lastErr = err
			var ue *UpstreamError
			if errors.As(err, &ue) && ue.RetryAfter > 0 {
				notBefore[i] = time.Now().Add(ue.RetryAfter)
			}
			r.logger.LogAttrs(ctx, slog.LevelWarn, "upstream attempt failed",
				slog.String("upstream", u.client.name), slog.Int("round", round), slog.String("error", err.Error()))
		}
		if !tried || round >= r.retries {
			// Every circuit open is the breakers' point: fail fast.
			return lastErr
		}
		wait := r.backoff(round)
		next := time.Now().Add(wait)
		// Wait for the first upstream that may be called again, but no
		// less than the backoff.
		earliest := time.Time{}
		for i := range r.upstreams {
			t := next
			if notBefore[i].After(t) {
				t = notBefore[i]
			}
			if earliest.IsZero() || t.Before(earliest) {
				earliest = t
			}
		}
		if !earliest.Before(deadline) {
			return lastErr
		}
		timer := time.NewTimer(time.Until(earliest))
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("llm: call abandoned by caller while waiting to retry: %w", ctx.Err())
		case <-timer.C:
		}
	}
}

// giveUp reports that the budget ran out between attempts.
func (r *Router) giveUp(lastErr error, budget time.Duration) error {
	if lastErr != nil {
		return lastErr
	}
	return &UpstreamError{Kind: ErrUpstreamTimeout, Upstream: r.names(), detail: "no answer within " + budget.String()}
}

// names lists the upstreams for an error message.
func (r *Router) names() string {
	names := make([]string, len(r.upstreams))
	for i, u := range r.upstreams {
		names[i] = u.client.name
	}
	return strings.Join(names, ",")
}

// backoff is the wait before round+1: the capped exponential step, half of
// it fixed and half random so that many callers retrying at once spread out.
func (r *Router) backoff(round int) time.Duration {
	step := r.max
	if round < 30 {
		step = min(r.base<<round, r.max)
	}
	half := step / 2
	return half + rand.N(step-half+1)
}

// retryable reports whether another attempt, here or at another upstream,
// could succeed: the network failed, or the upstream said it is overloaded
// (429) or broken (5xx). A 4xx is the request's fault and a timeout has
// spent the budget.
func retryable(err error) bool {
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		return false
	}
	return ue.connection || ue.Status == 429 || ue.Status >= 500
}

// breakerOutcome sorts a call's result for the circuit breaker: the caller
// leaving says nothing about the upstream, and a 4xx other than 429 means
// the upstream is up and judging requests, which is health.
func breakerOutcome(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		if ctx.Err() != nil {
			return errBreakerExcluded
		}
		return errBreakerFailure
	}
	if errors.Is(ue, ErrUpstreamRejected) {
		return nil
	}
	return errBreakerFailure
}
