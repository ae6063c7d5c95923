package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentapi/agentapi/internal/batch"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/store"
	"go.opentelemetry.io/otel/trace"
)

// AccessLog makes the one access-log line of each request and counts its
// metrics, from the facts withAccessLog gathers when the request ends.
//
// With a batch interval (NewAccessLog), a request's goroutine only queues
// those facts; a timer formats the lines and counts the metrics of all the
// requests queued meanwhile, one after another. Formatting a line and
// updating a dozen metric series costs a few µs in a batch, with the code
// and data in the CPU's caches, and several times that when each request
// does it alone on a cold core; at 1,000 req/s that is about 5 µs of a
// /v1 miss's added p50 (BENCHMARKS.md, fourth pass), even though the
// answer was already sent before the line was made. A
// line is then written up to the interval after its request ended (its
// time field still says when that was), and a crash can lose the lines of
// that interval. Flush writes everything queued; /metrics flushes before
// it answers, and the server closes the log (flushing it) once its last
// request is done.
//
// A queue that reaches maxQueuedLines (a writer that blocks, such as a
// full pipe) makes each request write its own line again, as without a
// batch: memory stays bounded and no line is dropped.
type AccessLog struct {
	logger  *slog.Logger
	metrics *metrics.Metrics          // nil counts nothing
	queue   *batch.Queue[accessEntry] // nil: each request writes its own line
}

// maxQueuedLines bounds an AccessLog's queue (lines queued or being
// written).
const maxQueuedLines = 8192

// NewAccessLog returns an AccessLog that writes lines to logger and counts
// metrics in m (nil: none). every > 0 batches them at that interval; 0
// makes each request write its own line before its goroutine moves on.
func NewAccessLog(logger *slog.Logger, m *metrics.Metrics, every time.Duration) *AccessLog {
	a := &AccessLog{logger: logger, metrics: m}
	if every > 0 {
		a.queue = batch.New(every, maxQueuedLines, func(lines []accessEntry) {
			for i := range lines {
				a.write(lines[i])
			}
		})
	}
	return a
}

// accessEntry is what one request's line and metrics are made of.
type accessEntry struct {
	end      time.Time
	duration time.Duration
	id       string
	method   string
	path     string
	route    string
	status   int
	bytes    int64
	userID   string
	traceID  string
	tier     string
	limit    string
	cache    string
	model    string
	tokens   int64
	prompt   int64
	// completion tokens; prompt and completion split tokens for metrics.
	completion int64
	dbError    bool
	// toolCalls and turns count a response's server-side tool calls and
	// model turns (the tool loop).
	toolCalls, turns int
}

// add records one finished request.
func (a *AccessLog) add(e accessEntry) {
	if a.queue == nil || !a.queue.Add(e) {
		a.write(e)
	}
}

// Flush writes every queued line and counts its metrics before returning.
func (a *AccessLog) Flush() {
	if a.queue != nil {
		a.queue.Flush()
	}
}

// Close flushes the queue; lines of requests that end afterwards are
// written by their own goroutines.
func (a *AccessLog) Close() {
	if a.queue != nil {
		a.queue.Close()
	}
}

// write makes one request's line and counts its metrics.
func (a *AccessLog) write(e accessEntry) {
	if m := a.metrics; m != nil {
		m.ObserveRequest(e.route, e.method, e.status, e.duration)
		if e.limit != "" {
			m.LimiterDecision(e.tier, e.limit)
		}
		if e.cache != "" {
			m.CacheLookup(e.cache == "hit")
		}
		if e.dbError {
			m.DependencyError("database")
		}
		if e.prompt > 0 || e.completion > 0 {
			m.Tokens(e.model, e.tier, e.prompt, e.completion)
		}
	}
	level := slog.LevelInfo
	if e.status >= 500 {
		level = slog.LevelError
	}
	ctx := context.Background()
	if !a.logger.Enabled(ctx, level) {
		return
	}
	// What LogAttrs does, minus looking up the caller's program counter
	// (runtime.Callers, about a tenth of this line's cost): the handler
	// does not log the source, and for this line it would always be the
	// same function.
	line := slog.NewRecord(e.end, level, "request", 0)
	line.AddAttrs(
		slog.String("request_id", e.id),
		slog.String("method", e.method),
		slog.String("path", e.path),
		slog.Int("status", e.status),
		slog.Float64("duration_ms", float64(e.duration.Microseconds())/1000),
		slog.Int64("bytes", e.bytes),
	)
	if e.userID != "" {
		line.AddAttrs(slog.String("user_id", e.userID))
	}
	if e.traceID != "" {
		line.AddAttrs(slog.String("trace_id", e.traceID))
	}
	if e.cache != "" {
		line.AddAttrs(slog.String("cache", e.cache))
	}
	if e.tokens != 0 {
		line.AddAttrs(slog.Int64("tokens", e.tokens))
	}
	if e.turns != 0 {
		line.AddAttrs(slog.Int("tool_calls", e.toolCalls), slog.Int("turns", e.turns))
	}
	a.logger.Handler().Handle(ctx, line)
}

// withAccessLog gathers each request's facts for its one access-log line
// and its metrics, so every request is measured exactly once, from what the
// handlers noted in requestInfo. It logs the path but never the query
// string, headers or body: those can hold tokens and prompts.
func withAccessLog(a *AccessLog) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r)
			sendNow(w, rec)
			end := time.Now()
			ri := requestInfoFrom(r.Context())
			ri.takeOutcomes()
			e := accessEntry{
				end: end, duration: end.Sub(start),
				id: ri.id, method: r.Method, path: r.URL.Path, route: ri.route,
				status: rec.status, bytes: rec.bytes,
				userID: ri.userID, tier: ri.tier, limit: ri.limit, cache: ri.cache,
				model: ri.model, tokens: ri.tokens, prompt: ri.prompt, completion: ri.completion,
				dbError:   ri.dbError || errors.Is(ri.err, store.ErrUnavailable),
				toolCalls: ri.toolCalls, turns: ri.turns,
			}
			if e.status == 0 {
				e.status = http.StatusOK
			}
			if sc := trace.SpanContextFromContext(r.Context()); sc.IsValid() {
				e.traceID = sc.TraceID().String()
			}
			a.add(e)
		})
	}
}
