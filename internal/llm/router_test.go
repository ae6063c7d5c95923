package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/testkit"
)

var _ provider = (*Router)(nil)

// scripted is a fake upstream whose n-th call (from 1) is answered by
// step(n); it remembers when each call arrived.
type scripted struct {
	srv   *httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	times []time.Time
}

func newScripted(t *testing.T, step func(n int64, w http.ResponseWriter, r *http.Request)) *scripted {
	t.Helper()
	s := &scripted{}
	s.srv = upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := s.calls.Add(1)
		s.mu.Lock()
		s.times = append(s.times, time.Now())
		s.mu.Unlock()
		step(n, w, r)
	})
	return s
}

func (s *scripted) callTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

func okCompletion(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"model":"m","choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`)
}

func fail(status int) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, `{"error":{"message":"nope","type":"server_error"}}`)
	}
}

// dropConnection closes the connection without any answer.
func dropConnection(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func newTestRouter(t *testing.T, opts RouterOptions, servers ...*scripted) *Router {
	t.Helper()
	clients := make([]*Client, len(servers))
	for i, s := range servers {
		clients[i] = clientFor(t, s.srv, func(o *Options) { o.Name = fmt.Sprintf("upstream-%d", i) })
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = time.Millisecond
		opts.BackoffMax = 5 * time.Millisecond
	}
	r, err := NewRouter(clients, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRouterRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	cases := map[string]func(n int64, w http.ResponseWriter, r *http.Request){
		"500":     fail(500),
		"503":     fail(503),
		"429":     fail(429),
		"dropped": func(_ int64, w http.ResponseWriter, r *http.Request) { dropConnection(w, r) },
	}
	for name, first := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up := newScripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					first(n, w, r)
					return
				}
				okCompletion(w, r)
			})
			resp, err := newTestRouter(t, RouterOptions{}, up).Complete(context.Background(), []byte(`{}`))
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if resp.Usage.TotalTokens != 3 || up.calls.Load() != 2 {
				t.Errorf("usage %+v after %d calls, want 3 tokens after 2 calls", resp.Usage, up.calls.Load())
			}
		})
	}
}

func TestRouterDoesNotRetryRequestErrors(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 401, 404, 422} {
		up := newScripted(t, fail(status))
		fallback := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) { okCompletion(w, r) })
		_, err := newTestRouter(t, RouterOptions{}, up, fallback).Complete(context.Background(), []byte(`{}`))
		var ue *UpstreamError
		if !errors.As(err, &ue) || ue.Status != status {
			t.Errorf("%d: err = %v, want the upstream's %d", status, err, status)
		}
		if up.calls.Load() != 1 || fallback.calls.Load() != 0 {
			t.Errorf("%d: %d calls and %d to the fallback, want 1 and 0", status, up.calls.Load(), fallback.calls.Load())
		}
	}
}

func TestRouterGivesUpAfterRetries(t *testing.T) {
	t.Parallel()
	up := newScripted(t, fail(502))
	_, err := newTestRouter(t, RouterOptions{Retries: 3, BreakerFailures: 100}, up).Complete(context.Background(), []byte(`{}`))
	if !errors.Is(err, ErrUpstreamUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if n := up.calls.Load(); n != 4 {
		t.Errorf("%d calls, want 1 + 3 retries", n)
	}
	none := newScripted(t, fail(502))
	newTestRouter(t, RouterOptions{Retries: -1}, none).Complete(context.Background(), []byte(`{}`))
	if n := none.calls.Load(); n != 1 {
		t.Errorf("Retries -1: %d calls, want 1", n)
	}
}

func TestRouterFallsBackInOrder(t *testing.T) {
	t.Parallel()
	primary := newScripted(t, fail(503))
	second := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) { dropConnection(w, r) })
	third := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) { okCompletion(w, r) })
	var retried []string
	r := newTestRouter(t, RouterOptions{Retries: -1, OnRetry: func(name string) { retried = append(retried, name) }}, primary, second, third)
	if _, err := r.Complete(context.Background(), []byte(`{}`)); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if fmt.Sprint(retried) != "[upstream-1 upstream-2]" {
		t.Errorf("OnRetry saw %v, want the two fallbacks", retried)
	}
	p, s, th := primary.callTimes(), second.callTimes(), third.callTimes()
	if len(p) != 1 || len(s) != 1 || len(th) != 1 || !p[0].Before(s[0]) || !s[0].Before(th[0]) {
		t.Errorf("calls %d, %d, %d; want one each, in order", len(p), len(s), len(th))
	}
}

func TestRouterHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	up := newScripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After-Ms", "150")
			w.WriteHeader(429)
			return
		}
		okCompletion(w, r)
	})
	if _, err := newTestRouter(t, RouterOptions{}, up).Complete(context.Background(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	times := up.callTimes()
	if len(times) != 2 {
		t.Fatalf("%d calls, want 2", len(times))
	}
	// A lower bound: the retry must not come before the upstream allowed.
	if gap := times[1].Sub(times[0]); gap < 150*time.Millisecond {
		t.Errorf("retried after %v, before the 150ms Retry-After", gap)
	}

	// A Retry-After beyond the budget is not waited for: the caller hears
	// the 429 (and its Retry-After) at once.
	long := newScripted(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
	})
	_, err := newTestRouter(t, RouterOptions{Timeout: time.Second}, long).Complete(context.Background(), []byte(`{}`))
	var ue *UpstreamError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUpstreamRateLimited) || ue.RetryAfter != 30*time.Second {
		t.Fatalf("err = %v, want the 429 with its Retry-After", err)
	}
	if n := long.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestRouterStaysWithinTimeout(t *testing.T) {
	t.Parallel()
	up := newScripted(t, fail(500))
	const budget = 300 * time.Millisecond
	r := newTestRouter(t, RouterOptions{Timeout: budget, Retries: 1000, BackoffBase: 20 * time.Millisecond,
		BackoffMax: 40 * time.Millisecond, BreakerFailures: 1 << 30}, up)
	start := time.Now()
	_, err := r.Complete(context.Background(), []byte(`{}`))
	// The last attempt may have run out of budget (a timeout) or failed
	// like the others; either way the call ends in an upstream error.
	if !errors.Is(err, ErrUpstreamUnavailable) && !errors.Is(err, ErrUpstreamTimeout) {
		t.Fatalf("err = %v", err)
	}
	times := up.callTimes()
	if len(times) < 2 {
		t.Fatalf("%d calls, want retries", len(times))
	}
	for i, at := range times {
		if at.Sub(start) > budget {
			t.Errorf("attempt %d started %v after the call began, beyond the %v budget", i+1, at.Sub(start), budget)
		}
	}
}

func TestRouterHangSpendsBudgetAndCancelsUpstream(t *testing.T) {
	t.Parallel()
	started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	up := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) { hangUntilCancelled(started, cancelled)(w, r) })
	_, err := newTestRouter(t, RouterOptions{Timeout: 200 * time.Millisecond}, up).Complete(context.Background(), []byte(`{}`))
	if !errors.Is(err, ErrUpstreamTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "cancellation of the hung call")
	if n := up.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1 (a timeout is not retried)", n)
	}
}

func TestRouterCircuitBreaker(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	primary := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if healthy.Load() {
			okCompletion(w, r)
			return
		}
		w.WriteHeader(500)
	})
	fallback := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) { okCompletion(w, r) })
	r := newTestRouter(t, RouterOptions{Retries: -1, BreakerFailures: 2, BreakerCooldown: 200 * time.Millisecond}, primary, fallback)
	for i := range 5 {
		if _, err := r.Complete(context.Background(), []byte(`{}`)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if p, f := primary.calls.Load(), fallback.calls.Load(); p != 2 || f != 5 {
		t.Fatalf("primary %d, fallback %d calls; want the circuit open after 2 failures", p, f)
	}
	// After the cool-down one probe goes to the primary; once it succeeds
	// the primary takes the traffic again.
	healthy.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for primary.calls.Load() == 2 {
		if time.Now().After(deadline) {
			t.Fatal("the open circuit never let a probe through")
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := r.Complete(context.Background(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	before := fallback.calls.Load()
	for range 3 {
		r.Complete(context.Background(), []byte(`{}`))
	}
	if fallback.calls.Load() != before {
		t.Errorf("fallback still called after the primary recovered")
	}
}

func TestRouterAllCircuitsOpenFailsFast(t *testing.T) {
	t.Parallel()
	up := newScripted(t, fail(500))
	r := newTestRouter(t, RouterOptions{Retries: -1, BreakerFailures: 1, BreakerCooldown: time.Hour}, up)
	r.Complete(context.Background(), []byte(`{}`))
	_, err := r.Complete(context.Background(), []byte(`{}`))
	if !errors.Is(err, ErrUpstreamUnavailable) || up.calls.Load() != 1 {
		t.Fatalf("err = %v after %d calls; want a fail-fast unavailable error and no second call", err, up.calls.Load())
	}
}

func TestRouterRejectionsKeepCircuitClosed(t *testing.T) {
	t.Parallel()
	up := newScripted(t, fail(400))
	r := newTestRouter(t, RouterOptions{BreakerFailures: 2}, up)
	for range 5 {
		r.Complete(context.Background(), []byte(`{}`))
	}
	if n := up.calls.Load(); n != 5 {
		t.Errorf("%d calls reached the upstream, want 5: a 400 is not the upstream failing", n)
	}
}

func TestRouterCallerCancelDuringBackoff(t *testing.T) {
	t.Parallel()
	up := newScripted(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(503)
	})
	r := newTestRouter(t, RouterOptions{Timeout: time.Minute}, up)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for up.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := r.Complete(ctx, []byte(`{}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestRouterStreamRetriesBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	up := newScripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		if n == 1 {
			// Headers, then the connection breaks: nothing was passed on yet.
			panic(http.ErrAbortHandler)
		}
		sse(w, `{"choices":[{"delta":{"content":"a"}}]}`)
		sse(w, `{"choices":[{"delta":{"content":"b"}}]}`)
		sse(w, "[DONE]")
	})
	s, err := newTestRouter(t, RouterOptions{}, up).Stream(context.Background(), []byte(`{"stream":true}`))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	defer s.Close()
	got := ""
	for {
		payload, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d, _ := StreamDelta(payload)
		got += d
	}
	if got != "ab" || up.calls.Load() != 2 {
		t.Errorf("deltas %q after %d calls, want \"ab\" after 2", got, up.calls.Load())
	}
}

func TestRouterStreamNotRetriedAfterFirstEvent(t *testing.T) {
	t.Parallel()
	up := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		sse(w, `{"choices":[{"delta":{"content":"a"}}]}`)
		panic(http.ErrAbortHandler)
	})
	s, err := newTestRouter(t, RouterOptions{}, up).Stream(context.Background(), []byte(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p, err := s.Next(); err != nil || string(p) != `{"choices":[{"delta":{"content":"a"}}]}` {
		t.Fatalf("first event %q, %v", p, err)
	}
	if _, err := s.Next(); !errors.Is(err, ErrUpstreamUnavailable) {
		t.Fatalf("after the cut: %v", err)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestRouterStreamFirstEventStall(t *testing.T) {
	t.Parallel()
	var cancelled atomic.Int64
	up := newScripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
			cancelled.Add(1)
		case <-time.After(5 * time.Second):
		}
	})
	_, err := newTestRouter(t, RouterOptions{Timeout: 200 * time.Millisecond}, up).Stream(context.Background(), []byte(`{"stream":true}`))
	if !errors.Is(err, ErrUpstreamTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	// Every call that reached the upstream (on a loaded machine the budget
	// can run out before one does) must have been cancelled, not left to
	// hang until the upstream gives up.
	deadline := time.Now().Add(5 * time.Second)
	for cancelled.Load() != up.calls.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d stalled stream calls were cancelled", cancelled.Load(), up.calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRouterModelsAndEmbeddings(t *testing.T) {
	t.Parallel()
	up := newScripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n%2 == 1 {
			w.WriteHeader(502)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/models" {
			io.WriteString(w, `{"object":"list","data":[{"id":"m1"}]}`)
			return
		}
		io.WriteString(w, `{"object":"list","data":[],"model":"e","usage":{"prompt_tokens":4,"total_tokens":4}}`)
	})
	r := newTestRouter(t, RouterOptions{}, up)
	raw, err := r.Models(context.Background())
	if err != nil || string(raw) != `{"object":"list","data":[{"id":"m1"}]}` {
		t.Fatalf("Models = %s, %v", raw, err)
	}
	resp, err := r.Embeddings(context.Background(), []byte(`{"input":"x"}`))
	if err != nil || resp.Usage.PromptTokens != 4 {
		t.Fatalf("Embeddings = %+v, %v", resp, err)
	}
}

func TestNewRouterNeedsAnUpstream(t *testing.T) {
	t.Parallel()
	if _, err := NewRouter(nil, RouterOptions{}); err == nil {
		t.Fatal("NewRouter without clients succeeded")
	}
}

func TestUsageOnlyChunk(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`: true,
		`{"id":"x","choices":[],"usage":{"prompt_tokens":1}}`:                               true,
		`{"choices":[{"delta":{"content":"a"}}],"usage":null}`:                              false,
		`{"choices":[{"delta":{"content":"a"}}]}`:                                           false,
		`{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}`:     false,
		`{"choices":[{"delta":{"content":"\"usage\": {}"}}]}`:                               false,
		`not json "usage": {`: false,
	}
	for chunk, want := range cases {
		if got := UsageOnlyChunk([]byte(chunk)); got != want {
			t.Errorf("UsageOnlyChunk(%s) = %v, want %v", chunk, got, want)
		}
	}
}
