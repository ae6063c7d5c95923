// Package metrics holds agentapi's Prometheus instruments in a registry of its
// own (never the library's global default), so tests and several servers in
// one process each get a clean set.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric name.
const namespace = "agentapi"

// Metrics is the set of instruments the service updates. The zero value is
// not usable; build one with New. A nil *Metrics is valid everywhere and
// records nothing, which keeps tests and tools free of wiring.
type Metrics struct {
	registry *prometheus.Registry

	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	limiterDecisions *prometheus.CounterVec
	cacheLookups     *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	upstreamErrors   *prometheus.CounterVec
	upstreamRetries  *prometheus.CounterVec
	tokens           *prometheus.CounterVec
	dependencyErrors *prometheus.CounterVec
	inFlightStreams  prometheus.Gauge
	mcpCalls         *prometheus.HistogramVec
}

// latencyBuckets spans sub-millisecond gateway overhead up to long model calls.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// New registers every instrument, plus Go runtime and process collectors, in
// a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests by route pattern, method and status code."}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
			Help: "Time from request start to the handler's return, by route pattern and method.", Buckets: latencyBuckets}, []string{"route", "method"}),
		limiterDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "ratelimit_decisions_total",
			Help: "Rate-limit decisions by tier and result (allowed, limited, error)."}, []string{"tier", "result"}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "cache_lookups_total",
			Help: "Response-cache lookups by result (hit, miss)."}, []string{"result"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "upstream_request_duration_seconds",
			Help: "Time until an upstream model API answered with headers, by upstream and status code.", Buckets: latencyBuckets}, []string{"upstream", "code"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "upstream_errors_total",
			Help: "Failed upstream calls by upstream and kind (connection, timeout, status_4xx, status_5xx, rate_limited)."}, []string{"upstream", "kind"}),
		upstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "upstream_retries_total",
			Help: "Upstream calls retried or moved to a fallback upstream, by upstream."}, []string{"upstream"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tokens_total",
			Help: "Model tokens by model, tier and kind (prompt, completion)."}, []string{"model", "tier", "kind"}),
		dependencyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "dependency_errors_total",
			Help: "Errors talking to Redis or the database, by dependency."}, []string{"dependency"}),
		inFlightStreams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "streams_in_flight",
			Help: "Streamed (SSE) responses currently open."}),
		mcpCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "mcp_tool_call_duration_seconds",
			Help: "Tool calls to MCP servers (agent loop and /mcp gateway) by server, tool and outcome (ok, tool_error, timeout, unavailable, protocol_error, cancelled, rate_limited, forbidden).", Buckets: latencyBuckets},
			[]string{"server", "tool", "outcome"}),
	}
	reg.MustRegister(m.requests, m.requestDuration, m.limiterDecisions, m.cacheLookups, m.upstreamDuration,
		m.upstreamErrors, m.upstreamRetries, m.tokens, m.dependencyErrors, m.inFlightStreams, m.mcpCalls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Pre-create the common series so dashboards show zeros, not gaps.
	for _, r := range []string{"hit", "miss"} {
		m.cacheLookups.WithLabelValues(r)
	}
	for _, d := range []string{"redis", "database"} {
		m.dependencyErrors.WithLabelValues(d)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Gatherer exposes the registry, for tests.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.registry }

// ObserveRequest records one finished HTTP request. route is the matched
// pattern (never the raw path, which would explode the label set).
func (m *Metrics) ObserveRequest(route, method string, code int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.requestDuration.WithLabelValues(route, method).Observe(d.Seconds())
}

// LimiterDecision counts one rate-limit decision; result is allowed, limited or error.
func (m *Metrics) LimiterDecision(tier, result string) {
	if m == nil {
		return
	}
	m.limiterDecisions.WithLabelValues(tier, result).Inc()
}

// LimiterFallback counts one decision made without Redis.
func (m *Metrics) LimiterFallback() {
	if m == nil {
		return
	}
	m.limiterDecisions.WithLabelValues("any", "fallback").Inc()
}

// CacheLookup counts a cache hit or miss.
func (m *Metrics) CacheLookup(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cacheLookups.WithLabelValues("hit").Inc()
	} else {
		m.cacheLookups.WithLabelValues("miss").Inc()
	}
}

// UpstreamResponse records how long an upstream took to answer with headers.
func (m *Metrics) UpstreamResponse(upstream string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.upstreamDuration.WithLabelValues(upstream, strconv.Itoa(code)).Observe(d.Seconds())
	switch {
	case code == http.StatusTooManyRequests:
		m.upstreamErrors.WithLabelValues(upstream, "rate_limited").Inc()
	case code >= 500:
		m.upstreamErrors.WithLabelValues(upstream, "status_5xx").Inc()
	case code >= 400:
		m.upstreamErrors.WithLabelValues(upstream, "status_4xx").Inc()
	}
}

// UpstreamError counts an upstream call that got no response (kind is
// connection or timeout).
func (m *Metrics) UpstreamError(upstream, kind string) {
	if m == nil {
		return
	}
	m.upstreamErrors.WithLabelValues(upstream, kind).Inc()
}

// UpstreamRetry counts one retry or fallback of an upstream call.
func (m *Metrics) UpstreamRetry(upstream string) {
	if m == nil {
		return
	}
	m.upstreamRetries.WithLabelValues(upstream).Inc()
}

// Tokens adds a call's token usage.
func (m *Metrics) Tokens(model, tier string, prompt, completion int64) {
	if m == nil {
		return
	}
	if prompt > 0 {
		m.tokens.WithLabelValues(model, tier, "prompt").Add(float64(prompt))
	}
	if completion > 0 {
		m.tokens.WithLabelValues(model, tier, "completion").Add(float64(completion))
	}
}

// DependencyError counts an error from "redis" or "database".
func (m *Metrics) DependencyError(dependency string) {
	if m == nil {
		return
	}
	m.dependencyErrors.WithLabelValues(dependency).Inc()
}

// StreamStarted and StreamEnded track open SSE responses.
func (m *Metrics) StreamStarted() {
	if m != nil {
		m.inFlightStreams.Inc()
	}
}

// StreamEnded is the counterpart of StreamStarted.
func (m *Metrics) StreamEnded() {
	if m != nil {
		m.inFlightStreams.Dec()
	}
}

// MCPToolCall records one tool call to an MCP server as it ends. server and
// tool come from the admin registry (user-supplied servers are reported
// under one name), which keeps the label set bounded.
func (m *Metrics) MCPToolCall(server, tool, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.mcpCalls.WithLabelValues(server, tool, outcome).Observe(d.Seconds())
}
