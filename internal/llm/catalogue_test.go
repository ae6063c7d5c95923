package llm_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/agentapi/agentapi/internal/catalog"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// fixedCatalogue is a catalogue that a test swaps by hand.
type fixedCatalogue struct {
	cur atomic.Pointer[catalog.Catalog]
}

func (f *fixedCatalogue) Current() *catalog.Catalog { return f.cur.Load() }

func newCatalogue(t *testing.T, models ...catalog.Model) *fixedCatalogue {
	t.Helper()
	c, err := catalog.New("", models, catalog.Validation{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixedCatalogue{}
	f.cur.Store(c)
	return f
}

func weight(n int) *int { return &n }

func deployment(name string, s *fakeopenai.Server, upstreamModel string, w int) catalog.Deployment {
	return catalog.Deployment{Name: name, BaseURL: s.URL + "/v1", Model: upstreamModel, Weight: weight(w)}
}

func quietRouter(cat llm.Catalogue, capacity llm.Capacity) *llm.CatalogueRouter {
	return llm.NewCatalogueRouter(cat, llm.CatalogueOptions{
		Router:   llm.RouterOptions{Timeout: 10 * time.Second, Retries: -1, BreakerFailures: 3, BreakerCooldown: 200 * time.Millisecond},
		Capacity: capacity,
	})
}

func chat(model string) []byte {
	return []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
}

func streamChat(model string) []byte {
	return []byte(`{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
}

func down(s *fakeopenai.Server) {
	s.Handle(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
}

func TestCatalogueRoutesByModelName(t *testing.T) {
	t.Parallel()
	a := fakeopenai.New(t, fakeopenai.Options{})
	b := fakeopenai.New(t, fakeopenai.Options{})
	cat := newCatalogue(t,
		catalog.Model{Name: "alpha", Deployments: []catalog.Deployment{deployment("a", a, "up-alpha", 1)}},
		catalog.Model{Name: "beta", Deployments: []catalog.Deployment{deployment("b", b, "", 1)}},
	)
	r := quietRouter(cat, nil)
	ctx := context.Background()

	resp, err := r.Complete(ctx, chat("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	if a.CallsOf("up-alpha") != 1 || b.Calls() != 0 {
		t.Fatalf("alpha: upstream calls a=%d (as up-alpha %d) b=%d, want only a, under its upstream name", a.Calls(), a.CallsOf("up-alpha"), b.Calls())
	}
	if resp.Model != "alpha" || gjson.GetBytes(resp.Body, "model").Str != "alpha" {
		t.Fatalf("answer names %q / %q, want the public name alpha", resp.Model, gjson.GetBytes(resp.Body, "model").Str)
	}

	s, err := r.Stream(ctx, streamChat("beta"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	chunks := 0
	for {
		p, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m := gjson.GetBytes(p, "model"); m.Exists() && m.Str != "beta" {
			t.Fatalf("chunk names model %q, want beta", m.Str)
		}
		chunks++
	}
	if chunks == 0 || b.CallsOf("beta") != 1 || s.Model() != "beta" {
		t.Fatalf("beta stream: %d chunks, b calls %d, model %q", chunks, b.CallsOf("beta"), s.Model())
	}

	_, err = r.Complete(ctx, chat("gamma"))
	if !errors.Is(err, catalog.ErrUnknownModel) {
		t.Fatalf("unknown model: err = %v, want ErrUnknownModel", err)
	}
}

// TestCatalogueWeights sends 2000 calls over weights 3:1. The first
// deployment's share is 0.75 with a standard deviation of about 0.0097;
// the test allows 0.70 to 0.80 (over 5 deviations), so it fails on a
// wrong weighting, not on chance.
func TestCatalogueWeights(t *testing.T) {
	t.Parallel()
	a := fakeopenai.New(t, fakeopenai.Options{})
	b := fakeopenai.New(t, fakeopenai.Options{})
	cat := newCatalogue(t, catalog.Model{Name: "m", Deployments: []catalog.Deployment{
		deployment("a", a, "", 3), deployment("b", b, "", 1)}})
	r := quietRouter(cat, nil)
	const n = 2000
	for range n {
		if _, err := r.Complete(context.Background(), chat("m")); err != nil {
			t.Fatal(err)
		}
	}
	share := float64(a.Calls()) / n
	if a.Calls()+b.Calls() != n || share < 0.70 || share > 0.80 {
		t.Fatalf("a got %d, b %d of %d calls: a's share %.3f, want 0.75 ± 0.05", a.Calls(), b.Calls(), n, share)
	}
}

// TestCatalogueDeploymentDown: a deployment answering 503 costs no call
// (each fails over to its sibling), its circuit opens after three
// failures so it stops being tried, and its share comes back once it
// recovers.
func TestCatalogueDeploymentDown(t *testing.T) {
	t.Parallel()
	a := fakeopenai.New(t, fakeopenai.Options{})
	b := fakeopenai.New(t, fakeopenai.Options{})
	down(b)
	cat := newCatalogue(t, catalog.Model{Name: "m", Deployments: []catalog.Deployment{
		deployment("a", a, "", 1), deployment("b", b, "", 1)}})
	r := quietRouter(cat, nil)
	const n = 200
	start := time.Now()
	for range n {
		if _, err := r.Complete(context.Background(), chat("m")); err != nil {
			t.Fatalf("a call failed although a is up: %v", err)
		}
	}
	// Three failures open b's circuit; each cool-down (200ms) that passed
	// lets one probe through.
	probes := int64(time.Since(start) / (200 * time.Millisecond))
	if a.Calls() != n || b.Calls() > 3+probes {
		t.Fatalf("a answered %d of %d; b was tried %d times, want at most 3 + %d probes (its circuit is open)", a.Calls(), n, b.Calls(), probes)
	}
	b.Handle(nil)
	before := b.Calls()
	testkit.Eventually(t, 10*time.Second, "b takes calls again after its cool-down", func() bool {
		if _, err := r.Complete(context.Background(), chat("m")); err != nil {
			t.Fatal(err)
		}
		return b.Calls() > before+5
	})
}

func TestCatalogueFallbacks(t *testing.T) {
	t.Parallel()
	a := fakeopenai.New(t, fakeopenai.Options{})
	b := fakeopenai.New(t, fakeopenai.Options{})
	down(a)
	cat := newCatalogue(t,
		catalog.Model{Name: "main", Fallbacks: []string{"spare"}, Deployments: []catalog.Deployment{deployment("a", a, "", 1)}},
		catalog.Model{Name: "spare", Deployments: []catalog.Deployment{deployment("b", b, "up-spare", 1)}},
	)
	r := quietRouter(cat, nil)
	resp, err := r.Complete(context.Background(), chat("main"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Model != "spare" || a.Calls() != 1 || b.CallsOf("up-spare") != 1 {
		t.Fatalf("answered by %q; a tried %d, b %d; want spare after one failed try of main", resp.Model, a.Calls(), b.CallsOf("up-spare"))
	}
	s, err := r.Stream(context.Background(), streamChat("main"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s.Model() != "spare" {
		t.Fatalf("stream answered by %q, want spare", s.Model())
	}
}

// TestCatalogueCapacityAcrossReplicas: two routers (two replicas) share
// a deployment's 10 requests per minute through Redis; the other 20 calls
// go to the standby deployment.
func TestCatalogueCapacityAcrossReplicas(t *testing.T) {
	t.Parallel()
	a := fakeopenai.New(t, fakeopenai.Options{})
	b := fakeopenai.New(t, fakeopenai.Options{})
	capped := deployment("capped", a, "", 1)
	capped.RPM = 10
	cat := newCatalogue(t, catalog.Model{Name: "m", Deployments: []catalog.Deployment{capped, deployment("standby", b, "", 0)}})
	rdb, prefix := redistest.Client(t), redistest.Prefix(t)
	minute := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return minute }
	replicas := []*llm.CatalogueRouter{
		quietRouter(cat, catalog.NewRedisCapacity(rdb, prefix, clock)),
		quietRouter(cat, catalog.NewRedisCapacity(rdb, prefix, clock)),
	}
	for i := range 30 {
		if _, err := replicas[i%2].Complete(context.Background(), chat("m")); err != nil {
			t.Fatal(err)
		}
	}
	if a.Calls() != 10 || b.Calls() != 20 {
		t.Fatalf("capped deployment got %d calls, standby %d; want 10 and 20", a.Calls(), b.Calls())
	}
	// The next minute starts over.
	minute = minute.Add(time.Minute)
	if _, err := replicas[0].Complete(context.Background(), chat("m")); err != nil {
		t.Fatal(err)
	}
	if a.Calls() != 11 {
		t.Fatalf("capped deployment got %d calls after the minute turned, want 11", a.Calls())
	}
}

// TestCatalogueCapacityUsedUp: with no deployment left this minute the
// call fails as rate limited, with a Retry-After until the next minute.
func TestCatalogueCapacityUsedUp(t *testing.T) {
	t.Parallel()
	a := fakeopenai.New(t, fakeopenai.Options{})
	d := deployment("a", a, "", 1)
	d.RPM = 1
	cat := newCatalogue(t, catalog.Model{Name: "m", Deployments: []catalog.Deployment{d}})
	r := quietRouter(cat, catalog.NewMemoryCapacity(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC) }))
	if _, err := r.Complete(context.Background(), chat("m")); err != nil {
		t.Fatal(err)
	}
	_, err := r.Complete(context.Background(), chat("m"))
	var ue *llm.UpstreamError
	if !errors.As(err, &ue) || !errors.Is(err, llm.ErrUpstreamRateLimited) || ue.RetryAfter <= 0 {
		t.Fatalf("err = %v, want a rate-limited upstream error with Retry-After", err)
	}
}
