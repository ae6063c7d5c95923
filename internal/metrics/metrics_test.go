package metrics

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestInstrumentsMove(t *testing.T) {
	t.Parallel()
	m := New()
	m.ObserveRequest("POST /chat", "POST", 200, 3*time.Millisecond)
	m.ObserveRequest("POST /chat", "POST", 429, time.Millisecond)
	m.LimiterDecision("free", "allowed")
	m.LimiterDecision("free", "limited")
	m.LimiterFallback()
	m.CacheLookup(true)
	m.CacheLookup(false)
	m.CacheLookup(false)
	m.Tokens("gpt", "free", 7, 5)
	m.DependencyError("redis")
	m.StreamStarted()
	m.StreamStarted()
	m.StreamEnded()
	m.UpstreamRetry("openai")

	checks := map[string]float64{
		`agentapi_http_requests_total{code="200",method="POST",route="POST /chat"}`: 1,
		`agentapi_http_requests_total{code="429",method="POST",route="POST /chat"}`: 1,
		`agentapi_ratelimit_decisions_total{result="limited",tier="free"}`:          1,
		`agentapi_ratelimit_decisions_total{result="fallback",tier="any"}`:          1,
		`agentapi_cache_lookups_total{result="hit"}`:                                1,
		`agentapi_cache_lookups_total{result="miss"}`:                               2,
		`agentapi_tokens_total{kind="prompt",model="gpt",tier="free"}`:              7,
		`agentapi_tokens_total{kind="completion",model="gpt",tier="free"}`:          5,
		`agentapi_dependency_errors_total{dependency="redis"}`:                      1,
		`agentapi_dependency_errors_total{dependency="database"}`:                   0,
		`agentapi_streams_in_flight`:                                                1,
		`agentapi_upstream_retries_total{upstream="openai"}`:                        1,
	}
	body := scrape(t, m)
	for series, want := range checks {
		if !strings.Contains(body, series+" "+formatFloat(want)+"\n") {
			t.Errorf("missing %s %v in:\n%s", series, want, grep(body, strings.SplitN(series, "{", 2)[0]))
		}
	}
	if !strings.Contains(body, "go_goroutines") || !strings.Contains(body, `agentapi_http_request_duration_seconds_bucket{method="POST",route="POST /chat",le="0.005"} 2`) {
		t.Errorf("histogram or runtime metrics missing")
	}
	var nilM *Metrics
	nilM.ObserveRequest("x", "GET", 200, 0) // must not panic
}

func TestTwoRegistriesAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := New(), New()
	a.CacheLookup(true)
	if got := testutil.ToFloat64(b.cacheLookups.WithLabelValues("hit")); got != 0 {
		t.Fatalf("registries share state: %v", got)
	}
}

func TestTransportTimesAndCounts(t *testing.T) {
	t.Parallel()
	m := New()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(502)
		}
	}))
	defer up.Close()
	c := &http.Client{Transport: &Transport{Base: http.DefaultTransport, Upstream: "test", Metrics: m}}
	for _, p := range []string{"/ok", "/fail"} {
		resp, err := c.Get(up.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if _, err := c.Get("http://127.0.0.1:1/"); err == nil {
		t.Fatal("want a connection error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", up.URL, nil)
	c.Do(req) // the caller leaving is not the upstream's error
	body := scrape(t, m)
	for _, want := range []string{
		`agentapi_upstream_errors_total{kind="status_5xx",upstream="test"} 1`,
		`agentapi_upstream_errors_total{kind="connection",upstream="test"} 1`,
		`agentapi_upstream_request_duration_seconds_count{code="200",upstream="test"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in:\n%s", want, grep(body, "agentapi_upstream"))
		}
	}
	if strings.Contains(body, `kind="timeout"`) {
		t.Error("a cancelled caller was counted as an upstream timeout")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d", rec.Code)
	}
	return rec.Body.String()
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
