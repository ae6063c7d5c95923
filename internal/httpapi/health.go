package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"
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

// handleReady is readiness: 200 only when every dependency answers in time.
func handleReady(checks []ReadyCheck) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		results := make(map[string]string, len(checks))
		status := http.StatusOK
		for _, c := range checks {
			if err := c.Check(ctx); err != nil {
				results[c.Name] = "unavailable"
				status = http.StatusServiceUnavailable
				continue
			}
			results[c.Name] = "ok"
		}
		word := "ready"
		if status != http.StatusOK {
			word = "not ready"
		}
		writeJSON(w, status, map[string]any{"status": word, "checks": results})
	})
}

// withJSONFallback gives unknown paths and wrong methods the same JSON error
// shape as everything else, instead of ServeMux's plain-text replies.
func withJSONFallback(logger *slog.Logger, mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// ServeMux answers 404 or 405 (with an Allow header); learn which.
		probe := &headerProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			writeError(w, r, logger, errStatus(http.StatusMethodNotAllowed, "Method not allowed"))
			return
		}
		writeError(w, r, logger, errStatus(http.StatusNotFound, "Not found"))
	})
}

type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(code int)        { p.status = code }
