package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/metrics"
)

// accessLines returns the access-log lines written to buf, decoded.
func accessLines(t *testing.T, buf *syncBuffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, raw := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if raw == "" {
			continue
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(raw), &line); err != nil {
			t.Fatalf("not JSON: %s", raw)
		}
		if line["msg"] == "request" {
			lines = append(lines, line)
		}
	}
	return lines
}

// loggedHandler is a handler behind withRequestID and withAccessLog(a)
// that answers 201 and notes a user, a cache miss and tokens.
func loggedHandler(a *AccessLog) http.Handler {
	return withRequestID(withAccessLog(a)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := requestInfoFrom(r.Context())
		ri.route, ri.userID, ri.cache, ri.tier, ri.limit = "POST /chat", "u-1", "miss", "pro", "allowed"
		ri.tokens, ri.prompt, ri.completion, ri.model = 30, 10, 20, "m"
		writeRawJSON(w, http.StatusCreated, []byte(`{}`))
	})))
}

func serveLogged(t *testing.T, h http.Handler, id string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/chat?secret=x", strings.NewReader(`{}`))
	r.Header.Set("X-Request-ID", id)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d", w.Code)
	}
}

// metricsText scrapes m through MetricsHandler, which flushes a first.
func metricsText(t *testing.T, m *metrics.Metrics, a *AccessLog) string {
	t.Helper()
	w := httptest.NewRecorder()
	MetricsHandler(m, a).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return w.Body.String()
}

// TestAccessLogBatch: with a batch interval, a request's line and metrics
// wait for the flush, then come out in the order the requests ended, each
// stamped with its request's end rather than the flush's time, and a scrape
// of /metrics flushes first.
func TestAccessLogBatch(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	m := metrics.New()
	a := NewAccessLog(slog.New(slog.NewJSONHandler(&buf, nil)), m, time.Hour) // only explicit flushes
	h := loggedHandler(a)
	for _, id := range []string{"first", "second", "third"} {
		serveLogged(t, h, id)
	}
	if n := len(accessLines(t, &buf)); n != 0 {
		t.Fatalf("%d lines written before the flush", n)
	}
	ended := time.Now()
	time.Sleep(20 * time.Millisecond)
	if !strings.Contains(metricsText(t, m, a), `agentapi_http_requests_total{code="201",method="POST",route="POST /chat"} 3`) {
		t.Error("the scrape does not count the three queued requests")
	}
	lines := accessLines(t, &buf)
	if len(lines) != 3 {
		t.Fatalf("%d lines after the flush, want 3:\n%s", len(lines), buf.String())
	}
	for i, id := range []string{"first", "second", "third"} {
		l := lines[i]
		if l["request_id"] != id || l["status"] != float64(201) || l["path"] != "/chat" || l["user_id"] != "u-1" ||
			l["cache"] != "miss" || l["tokens"] != float64(30) || l["bytes"] != float64(2) {
			t.Errorf("line %d = %v", i, l)
		}
		at, err := time.Parse(time.RFC3339Nano, l["time"].(string))
		if err != nil || at.After(ended) {
			t.Errorf("line %d is stamped %v, after its request ended (%v)", i, l["time"], ended)
		}
	}
	if strings.Contains(buf.String(), "secret") {
		t.Error("the query string was logged")
	}
}

// TestAccessLogTimerFlushes: queued lines come out by themselves within
// the interval, and the timer keeps going for later requests.
func TestAccessLogTimerFlushes(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	a := NewAccessLog(slog.New(slog.NewJSONHandler(&buf, nil)), nil, 5*time.Millisecond)
	h := loggedHandler(a)
	for round := 1; round <= 2; round++ {
		serveLogged(t, h, "r")
		// Within 5s, or the line was not written by the timer.
		waitFor(t, func() bool { return len(accessLines(t, &buf)) >= round })
		time.Sleep(20 * time.Millisecond) // the timer finds nothing and rests
	}
}

// TestAccessLogFullQueueWritesInline: a queue at its bound makes each
// further request write its own line (memory stays bounded, nothing is
// dropped), and after Close every line is written at once.
func TestAccessLogFullQueueWritesInline(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	a := NewAccessLog(slog.New(slog.NewJSONHandler(&buf, nil)), nil, time.Hour)
	for range maxQueuedLines {
		a.add(accessEntry{id: "queued", status: 200})
	}
	a.add(accessEntry{id: "over", status: 200})
	lines := accessLines(t, &buf)
	if len(lines) != 1 || lines[0]["request_id"] != "over" {
		t.Fatalf("with a full queue: %d lines written (%v), want the one over the bound", len(lines), lines)
	}
	a.Close()
	if n := len(accessLines(t, &buf)); n != maxQueuedLines+1 {
		t.Fatalf("%d lines after Close, want %d", n, maxQueuedLines+1)
	}
	a.add(accessEntry{id: "after close", status: 500})
	if !bytes.Contains([]byte(buf.String()), []byte(`"level":"ERROR","msg":"request","request_id":"after close"`)) {
		t.Errorf("a request ending after Close is not logged at once, at ERROR for a 500:\n%.300s", buf.String())
	}
}
