package httpapi

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/metrics"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

// The benchmarks here measure the gateway's own work per request without
// sockets: the handler chain runs on an httptest.ResponseRecorder and the
// model answers from memory. The load harness (cmd/loadharness) measures the
// same path over loopback HTTP next to a bare reverse proxy.

// benchPlainAnswer is a chat completion of about 600 bytes, like the load
// harness's fake upstream sends.
var benchPlainAnswer = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1735689600,"model":"gpt-4o-mini-2024-07-18",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("A short answer. ", 25) + `","refusal":null},` +
	`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":58,"total_tokens":100}}`)

// answeringProvider answers every plain call with benchPlainAnswer from
// memory and leaves the other calls to the mock.
type answeringProvider struct{ *llm.Mock }

func (answeringProvider) Complete(context.Context, []byte) (*llm.Response, error) {
	return &llm.Response{Body: benchPlainAnswer, Usage: llm.Usage{PromptTokens: 42, CompletionTokens: 58, TotalTokens: 100},
		Model: "gpt-4o-mini-2024-07-18", Status: http.StatusOK}, nil
}

// discardUsage takes records and keeps none: on the request path the real
// recorder only appends to a slice; it writes in the background.
type discardUsage struct{}

func (discardUsage) Record(context.Context, store.UsageRecord) error { return nil }

// benchGateway builds the whole handler with every governance feature on:
// access-token and API-key authentication, the rate limiter (a bucket too
// large to refuse), the response cache, usage recording, metrics and the
// JSON access log (formatted, then discarded).
func benchGateway(b *testing.B) (h http.Handler, token, apiKey string) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	u, err := st.CreateUser(ctx, store.User{Email: "bench@example.com", Tier: "pro"})
	if err != nil {
		b.Fatal(err)
	}
	key, display, hash, err := auth.NewAPIKey()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.CreateAPIKey(ctx, store.APIKey{UserID: u.ID, Name: "bench", Hash: hash, Prefix: display}); err != nil {
		b.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.TokenOptions{Secret: "bench-secret-bench-secret-bench-secret", Algorithm: "HS256",
		TTL: time.Hour, Issuer: "agentapi", Audience: "agentapi"})
	if err != nil {
		b.Fatal(err)
	}
	token, _, err = tokens.Issue(u.ID, "pro")
	if err != nil {
		b.Fatal(err)
	}
	respCache := cache.NewMemory(64<<20, time.Hour)
	b.Cleanup(respCache.Close)
	lim := ratelimit.NewMemory(1 << 16)
	tiers, err := tier.New(
		tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: 10, RefillPerSecond: 1}},
		tier.Tier{Name: tier.Pro, RateLimit: ratelimit.Policy{Capacity: 1 << 40, RefillPerSecond: 1e9}},
	)
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	gw := gateway.New(gateway.Options{Logger: logger, Provider: answeringProvider{llm.NewMock()},
		Admitter: admission.Sequential{Limiter: lim, Cache: respCache}, Tiers: tiers,
		Cache: respCache, Usage: discardUsage{}, DefaultModel: "gpt-4o-mini"})
	h, err = NewHandler(Deps{
		Logger:       logger,
		AppName:      "bench",
		Metrics:      metrics.New(),
		Users:        st,
		Tokens:       tokens,
		Gateway:      gw,
		Limiter:      lim,
		APIKeys:      st,
		MaxBodyBytes: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	return h, token, key
}

// benchChatBody and benchOpenAIBody are the n-th request body; a new n is
// a cache miss.
func benchChatBody(n int) []byte {
	return []byte(`{"message":"benchmark prompt ` + strconv.Itoa(n) + `: summarise token buckets in three sentences."}`)
}

func benchOpenAIBody(n int) []byte {
	return []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"benchmark prompt ` + strconv.Itoa(n) +
		`: summarise token buckets in three sentences."}]}`)
}

// serveBench sends one request through h and checks that it succeeded.
func serveBench(b *testing.B, h http.Handler, path, credential string, body []byte) {
	r, err := http.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+credential)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", path, w.Code, w.Body.String())
	}
}

// BenchmarkGateway is one governed request through the whole handler chain:
// a cache miss (every body new) or a cache hit, on /chat and /v1, with an
// access token or an API key. Its allocs/op is the gateway's allocations
// per proxied request apart from the HTTP server's and client's own.
func BenchmarkGateway(b *testing.B) {
	for _, bc := range []struct {
		name, path string
		key, hit   bool
		body       func(int) []byte
	}{
		{"chat-miss", "/chat", false, false, benchChatBody},
		{"chat-hit", "/chat", false, true, benchChatBody},
		{"v1-miss", "/v1/chat/completions", false, false, benchOpenAIBody},
		{"v1-hit", "/v1/chat/completions", false, true, benchOpenAIBody},
		{"v1-apikey-miss", "/v1/chat/completions", true, false, benchOpenAIBody},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, token, key := benchGateway(b)
			cred := token
			if bc.key {
				cred = key
			}
			// Warms the account, key and token caches, and the response
			// cache for the hit cases.
			serveBench(b, h, bc.path, cred, bc.body(0))
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				if !bc.hit {
					n++
				}
				serveBench(b, h, bc.path, cred, bc.body(n))
			}
		})
	}
}

// BenchmarkDecodeChatRequest is reading a /chat body.
func BenchmarkDecodeChatRequest(b *testing.B) {
	body := benchChatBody(1)
	b.ReportAllocs()
	for b.Loop() {
		r, _ := http.NewRequest(http.MethodPost, "/chat", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var in chatRequest
		if err := decodeJSON(r, &in); err != nil || in.Message == nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadOpenAIRequest is reading a /v1/chat/completions body: the
// fields the gateway acts on, the rest kept as bytes.
func BenchmarkReadOpenAIRequest(b *testing.B) {
	body := benchOpenAIBody(1)
	b.ReportAllocs()
	for b.Loop() {
		r, _ := http.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if _, req, err := readOpenAIRequest(r); err != nil || !req.hasModel {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccessLog is the request id, the access-log line (formatted by
// slog's JSON handler, written to io.Discard) and, with metrics, the
// request's Prometheus observations, around a handler that does nothing.
func BenchmarkAccessLog(b *testing.B) {
	for _, withMetrics := range []bool{false, true} {
		name := "log"
		var m *metrics.Metrics
		if withMetrics {
			name, m = "log+metrics", metrics.New()
		}
		b.Run(name, func(b *testing.B) {
			logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
			h := withRequestID(withAccessLog(NewAccessLog(logger, m, 0))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ri := requestInfoFrom(r.Context())
				ri.userID, ri.cache, ri.tokens = "0190f3a4-8c7e-7b1a-9f2d-3c4b5a697887", "miss", 100
				w.WriteHeader(http.StatusOK)
			})))
			r, _ := http.NewRequest(http.MethodPost, "/chat", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}
