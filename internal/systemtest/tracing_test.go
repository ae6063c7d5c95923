package systemtest

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpCollector is a fake OTLP/HTTP trace receiver that keeps what it gets.
type otlpCollector struct {
	*httptest.Server
	mu    sync.Mutex
	spans map[string][]string // span name → trace ids (hex)
}

func newCollector(t *testing.T) *otlpCollector {
	c := &otlpCollector{spans: map[string][]string{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans[s.Name] = append(c.spans[s.Name], hex.EncodeToString(s.TraceId))
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ = proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	t.Cleanup(c.Close)
	return c
}

// TestTracingExportsRequestSpans runs the server with OTEL_EXPORTER_OTLP_ENDPOINT
// set: one /chat produces a request span with the limiter, cache and upstream
// spans in the same trace, whose id is in the request's log line.
func TestTracingExportsRequestSpans(t *testing.T) {
	t.Parallel()
	up := fakeOpenAI(t, 0)
	col := newCollector(t)
	s := startServer(t, map[string]string{
		"DATABASE_URL":                filepath.Join(t.TempDir(), "a.db"),
		"OPENAI_API_KEY":              "sk-upstream-test",
		"OPENAI_BASE_URL":             up.URL + "/v1",
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL,
	})
	_, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	status, body, hdr := call(t, "POST", s.url+"/chat", m["access_token"].(string), map[string]string{"message": "trace me"})
	if status != 200 {
		t.Fatalf("chat: %d %v", status, body)
	}
	reqID := hdr.Get("X-Request-ID")
	if err := s.shutdown(t); err != nil { // flushes the batch
		t.Fatal(err)
	}
	var traceID string
	sc := bufio.NewScanner(strings.NewReader(s.out.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "request" && line["request_id"] == reqID {
			traceID, _ = line["trace_id"].(string)
		}
	}
	if len(traceID) != 32 {
		t.Fatalf("the /chat log line has no trace_id (%q)", traceID)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, name := range []string{"POST /chat", "ratelimit.allow", "cache.get", "cache.set", "upstream POST /v1/chat/completions"} {
		ids := col.spans[name]
		found := false
		for _, id := range ids {
			found = found || id == traceID
		}
		if !found {
			t.Errorf("span %q not exported in trace %s (got %v)", name, traceID, col.spans)
		}
	}
}

// TestTracingOffByDefault checks nothing is exported without the variable.
func TestTracingOffByDefault(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"DATABASE_URL": filepath.Join(t.TempDir(), "a.db")})
	call(t, "GET", s.url+"/health", "", nil)
	s.shutdown(t)
	if strings.Contains(s.out.String(), `"trace_id"`) || strings.Contains(s.out.String(), "tracing enabled") {
		t.Fatal("tracing is on without OTEL_EXPORTER_OTLP_ENDPOINT")
	}
}
