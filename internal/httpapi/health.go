package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentapi/agentapi/internal/metrics"
)

func handleRoot(appName string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"message": appName})
	})
}

// handleHealth is liveness: it answers as long as the process serves HTTP, and
// deliberately checks no dependency (a Redis blip must not get pods restarted).
func handleHealth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "healthy"})
	})
}

// handleReady is readiness: 200 when every required dependency answers in
// time. An optional one (Redis, when the limiter falls back locally) that
// fails makes the answer "degraded" but keeps the replica in service: taking
// every replica out of a load balancer because of a Redis outage they can
// serve through would turn a degradation into a full outage.
func handleReady(checks []ReadyCheck) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		results := make(map[string]string, len(checks))
		status, word := http.StatusOK, "ready"
		for _, c := range checks {
			if err := c.Check(ctx); err != nil {
				results[c.Name] = "unavailable"
				if c.Optional {
					if status == http.StatusOK {
						word = "degraded"
					}
					continue
				}
				status, word = http.StatusServiceUnavailable, "not ready"
				continue
			}
			results[c.Name] = "ok"
		}
		writeJSON(w, status, readyResponse{Status: word, Checks: results})
	})
}

// readyResponse is "ready", "degraded" (an optional dependency is down) or
// "not ready", and names each dependency with "ok" or "unavailable".
type readyResponse struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// handleMetrics serves Prometheus metrics, or a 404 when they are not
// served on this port.
func handleMetrics(logger *slog.Logger, m *metrics.Metrics, a *AccessLog, enabled bool) http.Handler {
	if m == nil || !enabled {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, r, logger, errStatus(http.StatusNotFound, "Metrics are not served on this port"))
		})
	}
	return MetricsHandler(m, a)
}

// MetricsHandler serves m after counting the requests a has queued, so a
// scrape sees every request that ended before it.
func MetricsHandler(m *metrics.Metrics, a *AccessLog) http.Handler {
	h := m.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Flush()
		h.ServeHTTP(w, r)
	})
}

// routes is where addRoutes registers: every route goes on the serving mux,
// wrapped to note its pattern for the metrics and the span name, and on a
// probe mux that only answers which of 404 and 405 an unmatched request
// deserves. The serving mux ends in a catch-all that gives those the same
// JSON error shape as everything else, instead of ServeMux's plain text.
// Each request is matched once: a lookup before serving would walk the
// routing tree twice.
type routes struct {
	serve, probe *http.ServeMux
}

func newRoutes(logger *slog.Logger) routes {
	rt := routes{serve: http.NewServeMux(), probe: http.NewServeMux()}
	rt.serve.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux answers 404 or 405 (with an Allow header); learn which.
		h, _ := rt.probe.Handler(r)
		probe := &headerProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			writeError(w, r, logger, errStatus(http.StatusMethodNotAllowed, "Method not allowed"))
			return
		}
		writeError(w, r, logger, errStatus(http.StatusNotFound, "Not found"))
	}))
	return rt
}

func (rt routes) Handle(pattern string, h http.Handler) {
	rt.probe.Handle(pattern, h)
	rt.serve.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ri := requestInfoFrom(r.Context()); ri != nil {
			ri.route = pattern
		}
		h.ServeHTTP(w, r)
	}))
}

type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(code int)        { p.status = code }
