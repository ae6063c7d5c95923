package httpapi

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/admission"
	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/budget"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/agentapi/agentapi/internal/tier"
	"github.com/agentapi/agentapi/internal/usage"
)

// BenchmarkStreamFirstByte measures the time from sending a streamed chat
// request to reading its first event, straight from a local upstream
// ("direct") and through the gateway ("gateway": authentication, rate
// limit, token budget, body checks, the upstream call and the relay). The
// difference is the first-byte latency the gateway adds.
//
//	go test -run '^$' -bench StreamFirstByte -benchtime 2000x ./internal/httpapi
func BenchmarkStreamFirstByte(b *testing.B) {
	up := fakeopenai.New(b, fakeopenai.Options{Model: "m",
		Answer: fakeopenai.Answer{Text: "hi", Usage: fakeopenai.Usage{Prompt: 1, Completion: 1}}})

	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	u, err := st.CreateUser(ctx, store.User{Email: "bench@example.com", PasswordHash: "x"})
	if err != nil {
		b.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.TokenOptions{Secret: strings.Repeat("s", 32), Algorithm: "HS256", TTL: time.Hour, Issuer: "a", Audience: "a"})
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := tokens.Issue(u.ID, "free")
	if err != nil {
		b.Fatal(err)
	}
	client, err := llm.NewClient(llm.Options{BaseURL: up.URL + "/v1", APIKey: "k", Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	router, err := llm.NewRouter([]*llm.Client{client}, llm.RouterOptions{Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	rec := usage.NewRecorder(st, logger, usage.Options{})
	defer rec.Close(ctx)
	lim := ratelimit.NewMemory(1000)
	tiers, err := tier.New(tier.Tier{Name: tier.Free, RateLimit: ratelimit.Policy{Capacity: 1 << 40, RefillPerSecond: 1 << 30}, DailyTokens: 1 << 50})
	if err != nil {
		b.Fatal(err)
	}
	governed := gateway.New(gateway.Options{Logger: logger, Provider: router, Admitter: admission.Sequential{Limiter: lim},
		Tiers: tiers, Usage: rec, Budget: budget.NewMemory(nil), DefaultModel: "m"})
	h, err := NewHandler(Deps{
		Logger: logger, AppName: "bench", Users: st, Admin: st, Tokens: tokens,
		Gateway: governed, Limiter: lim,
		APIKeys: st, UsageReports: st,
		MaxBodyBytes: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	gw := httptest.NewServer(h)
	defer gw.Close()

	const body = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}`
	firstEvent := func(b *testing.B, url, token string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			b.Fatalf("first line %q, %v (status %d)", line, err, resp.StatusCode)
		}
		b.StopTimer()
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		b.StartTimer()
	}
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			firstEvent(b, up.URL+"/v1/chat/completions", "k")
		}
	})
	b.Run("gateway", func(b *testing.B) {
		for b.Loop() {
			firstEvent(b, gw.URL+"/v1/chat/completions", tok)
		}
	})
}
