package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/agentapi/agentapi/internal/catalog"
)

// Catalogue is the model catalogue in use (catalog.Live has this method).
type Catalogue interface {
	Current() *catalog.Catalog
}

// Capacity counts the requests and tokens each deployment was sent this
// minute (catalog.MemoryCapacity, catalog.RedisCapacity).
type Capacity interface {
	Acquire(ctx context.Context, deployment string, rpm, tpm int64) (bool, error)
	AddTokens(ctx context.Context, deployment string, tokens int64) error
}

// capacityTimeout bounds one capacity check or count: it is on the
// request path, and a cap that cannot be checked is not enforced.
const capacityTimeout = 100 * time.Millisecond

// CatalogueOptions configure a [CatalogueRouter].
type CatalogueOptions struct {
	// Router holds the timeout, retries, backoff and breaker settings and
	// the logger, as for a [Router].
	Router RouterOptions
	// Capacity enforces the deployments' rpm and tpm; nil counts in this
	// process.
	Capacity Capacity
	// Transport returns the HTTP transport of a deployment (for metrics
	// and tracing); nil gives each deployment its own NewTransport.
	Transport func(deployment string) http.RoundTripper
}

// CatalogueRouter is a provider that routes each call by the model its
// body names: the catalogue's entry for that name picks a deployment by
// weight among those whose circuit is closed and that have capacity left
// this minute; a deployment that fails before answering hands the call to
// the next, then to the model's fallbacks in order, all within the
// router's timeout. The answer's "model" is the public name of the model
// that answered. Deployments keep their client and circuit breaker across
// catalogue reloads while their URL and key stay the same. It is safe for
// concurrent use.
type CatalogueRouter struct {
	catalogue Catalogue
	settings  *Router // timeout, retries, backoff, logger; no upstreams
	failures  uint32
	cooldown  time.Duration
	capacity  Capacity
	transport func(string) http.RoundTripper

	mu          sync.Mutex
	deployments map[string]*routedDeployment
}

// routedDeployment is one deployment's client and breaker, and what they
// were built from.
type routedDeployment struct {
	baseURL, key string
	upstream     *routedUpstream
}

// NewCatalogueRouter returns a router over cat.
func NewCatalogueRouter(cat Catalogue, opts CatalogueOptions) *CatalogueRouter {
	r, failures, cooldown := routerFrom(opts.Router)
	c := &CatalogueRouter{catalogue: cat, settings: r, failures: failures, cooldown: cooldown,
		capacity: opts.Capacity, transport: opts.Transport, deployments: map[string]*routedDeployment{}}
	if c.capacity == nil {
		c.capacity = catalog.NewMemoryCapacity(nil)
	}
	return c
}

// upstreamOf returns the deployment's client and breaker, building them
// when the deployment is new or its URL or key changed.
func (c *CatalogueRouter) upstreamOf(d catalog.Deployment) (*routedUpstream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rd, ok := c.deployments[d.Name]; ok && rd.baseURL == d.BaseURL && rd.key == d.Key() {
		return rd.upstream, nil
	}
	var transport http.RoundTripper
	if c.transport != nil {
		transport = c.transport(d.Name)
	}
	client, err := NewClient(Options{BaseURL: d.BaseURL, APIKey: d.Key(), Timeout: c.settings.timeout, Name: d.Name, Transport: transport})
	if err != nil {
		return nil, fmt.Errorf("llm: deployment %q: %w", d.Name, err)
	}
	u := &routedUpstream{client: client, breaker: newBreaker(d.Name, c.failures, c.cooldown, c.settings.logger)}
	c.deployments[d.Name] = &routedDeployment{baseURL: d.BaseURL, key: d.Key(), upstream: u}
	// A new deployment means the catalogue changed: forget those it no
	// longer lists, so that changes made over weeks do not pile up.
	live := map[string]bool{}
	for _, m := range c.catalogue.Current().Models {
		for _, x := range m.Deployments {
			live[x.Name] = true
		}
	}
	for name := range c.deployments {
		if !live[name] && name != d.Name {
			delete(c.deployments, name)
		}
	}
	return u, nil
}

// attempt is one call to one deployment with the body it needs.
type attempt func(c *Client, body []byte, budget time.Duration) (Usage, error)

// Complete routes a chat-completions call.
func (c *CatalogueRouter) Complete(ctx context.Context, body []byte) (*Response, error) {
	return c.plain(ctx, body, func(cl *Client) *url.URL { return cl.chatURL })
}

// Embeddings routes an embeddings call.
func (c *CatalogueRouter) Embeddings(ctx context.Context, body []byte) (*Response, error) {
	return c.plain(ctx, body, func(cl *Client) *url.URL { return cl.embeddingsURL })
}

// plain routes a non-streamed call to the endpoint of each client.
func (c *CatalogueRouter) plain(ctx context.Context, body []byte, endpoint func(*Client) *url.URL) (*Response, error) {
	var out *Response
	public, _, err := c.route(ctx, body, func(cl *Client, b []byte, budget time.Duration) (Usage, error) {
		resp, err := cl.post(ctx, endpoint(cl), b, budget)
		if err != nil {
			return Usage{}, err
		}
		out = resp
		return resp.Usage, nil
	})
	if err != nil {
		return nil, err
	}
	renameAnswer(out, public)
	return out, nil
}

// Stream routes a streamed chat until its first event has arrived.
func (c *CatalogueRouter) Stream(ctx context.Context, body []byte) (*Stream, error) {
	var out *Stream
	public, deployment, err := c.route(ctx, body, func(cl *Client, b []byte, budget time.Duration) (Usage, error) {
		s, err := c.settings.openStream(ctx, cl, b, budget)
		if err != nil {
			return Usage{}, err
		}
		out = s
		return Usage{}, nil // counted when the stream closes
	})
	if err != nil {
		return nil, err
	}
	out.model = public
	out.onClose = func(u Usage, ok bool) {
		if ok {
			c.addTokens(ctx, deployment, u.TotalTokens)
		}
	}
	return out, nil
}

// Models lists the catalogue's public names in OpenAI's shape.
func (c *CatalogueRouter) Models(context.Context) ([]byte, error) {
	return ModelList(c.catalogue.Current().Names())
}

// ModelList is the body of GET /v1/models listing names.
func ModelList(names []string) ([]byte, error) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: make([]model, len(names))}
	for i, m := range names {
		list.Data[i] = model{ID: m, Object: "model", OwnedBy: "agentapi"}
	}
	return json.Marshal(list)
}

// renameAnswer makes a plain answer name the public model that answered.
func renameAnswer(r *Response, public string) {
	r.Model = public
	if m := gjson.GetBytes(r.Body, "model"); m.Exists() && m.Str != public {
		if out, err := sjson.SetBytes(r.Body, "model", public); err == nil {
			r.Body = out
		}
	}
}

// route runs call against the deployments of the body's model and then
// of its fallbacks, and returns the public name and deployment that
// answered.
func (c *CatalogueRouter) route(ctx context.Context, body []byte, call attempt) (public, deployment string, err error) {
	name := gjson.GetBytes(body, "model").Str
	cat := c.catalogue.Current()
	first, ok := cat.Model(name)
	if !ok {
		return "", "", &catalog.UnknownModelError{Model: name}
	}
	chain := []catalog.Model{first}
	for _, f := range first.Fallbacks {
		if m, ok := cat.Model(f); ok {
			chain = append(chain, m)
		}
	}
	r := c.settings
	start := time.Now()
	deadline := start.Add(r.timeout)
	var lastErr error
	attempts := 0
	for round := 0; ; round++ {
		tried := false
		for _, m := range chain {
			for _, d := range weightedOrder(m.Deployments) {
				remaining := time.Until(deadline)
				if remaining <= 0 {
					return "", "", r.giveUp(lastErr, deadline.Sub(start))
				}
				u, err := c.upstreamOf(d)
				if err != nil {
					lastErr = err
					continue
				}
				if u.breaker.State() == gobreaker.StateOpen {
					if lastErr == nil {
						lastErr = &UpstreamError{Kind: ErrUpstreamUnavailable, Upstream: d.Name, detail: "circuit open"}
					}
					continue
				}
				if !c.acquire(ctx, d) {
					lastErr = &UpstreamError{Kind: ErrUpstreamRateLimited, Status: http.StatusTooManyRequests, Upstream: d.Name,
						detail: "per-minute capacity used up", RetryAfter: untilNextMinute(time.Now())}
					continue
				}
				done, err := u.breaker.Allow()
				if err != nil {
					continue // half-open with its probe already out
				}
				tried = true
				if attempts > 0 && r.onRetry != nil {
					r.onRetry(d.Name)
				}
				attempts++
				sent, err := sjson.SetBytes(body, "model", d.UpstreamModel(m.Name))
				if err != nil {
					done(nil)
					return "", "", fmt.Errorf("llm: set upstream model: %w", err)
				}
				usage, err := call(u.client, sent, remaining)
				done(breakerOutcome(ctx, err))
				if err == nil {
					if usage.TotalTokens > 0 {
						c.addTokens(ctx, d.Name, usage.TotalTokens)
					}
					return m.Name, d.Name, nil
				}
				if ctxErr := ctx.Err(); ctxErr != nil {
					if errors.Is(err, ctxErr) {
						return "", "", err
					}
					return "", "", u.client.callerGone(ctxErr)
				}
				if !retryable(err) {
					return "", "", err
				}
				lastErr = err
				r.logger.LogAttrs(ctx, slog.LevelWarn, "deployment attempt failed", slog.String("model", m.Name),
					slog.String("upstream", d.Name), slog.Int("round", round), slog.String("error", err.Error()))
			}
		}
		if !tried || round >= r.retries {
			if lastErr == nil {
				lastErr = &UpstreamError{Kind: ErrUpstreamUnavailable, Upstream: name, detail: "no deployment available"}
			}
			return "", "", lastErr
		}
		wait := r.backoff(round)
		if !time.Now().Add(wait).Before(deadline) {
			return "", "", lastErr
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", "", fmt.Errorf("llm: call abandoned by caller while waiting to retry: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// acquire takes one request of d's per-minute capacity. A capacity store
// that cannot answer does not stop the call: the caps protect the
// provider's quota, which answers 429 itself if it must.
func (c *CatalogueRouter) acquire(ctx context.Context, d catalog.Deployment) bool {
	if d.RPM <= 0 && d.TPM <= 0 {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, capacityTimeout)
	defer cancel()
	ok, err := c.capacity.Acquire(cctx, d.Name, d.RPM, d.TPM)
	if err != nil {
		c.settings.logger.LogAttrs(ctx, slog.LevelWarn, "deployment capacity unavailable; not enforced for this call",
			slog.String("upstream", d.Name), slog.String("error", err.Error()))
		return true
	}
	return ok
}

// addTokens counts a call's tokens against its deployment's minute.
func (c *CatalogueRouter) addTokens(ctx context.Context, deployment string, tokens int64) {
	if tokens <= 0 {
		return
	}
	cat := c.catalogue.Current()
	capped := false
	for _, m := range cat.Models {
		for _, d := range m.Deployments {
			if d.Name == deployment && d.TPM > 0 {
				capped = true
			}
		}
	}
	if !capped {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), capacityTimeout)
	defer cancel()
	if err := c.capacity.AddTokens(cctx, deployment, tokens); err != nil {
		c.settings.logger.LogAttrs(ctx, slog.LevelWarn, "deployment token count failed",
			slog.String("upstream", deployment), slog.String("error", err.Error()))
	}
}

// weightedOrder is the order to try deployments in: those with a weight
// drawn one after another with chances proportional to their weights (so
// the first pick follows the weights exactly), then the standbys (weight
// 0) in the order listed.
func weightedOrder(ds []catalog.Deployment) []catalog.Deployment {
	if len(ds) == 1 {
		return ds
	}
	pool := make([]catalog.Deployment, 0, len(ds))
	var standby []catalog.Deployment
	total := 0
	for _, d := range ds {
		if d.Share() > 0 {
			pool = append(pool, d)
			total += d.Share()
		} else {
			standby = append(standby, d)
		}
	}
	out := make([]catalog.Deployment, 0, len(ds))
	for len(pool) > 0 {
		n := rand.IntN(total)
		i := 0
		for ; i < len(pool)-1; i++ {
			n -= pool[i].Share()
			if n < 0 {
				break
			}
		}
		out = append(out, pool[i])
		total -= pool[i].Share()
		pool = append(pool[:i], pool[i+1:]...)
	}
	return append(out, standby...)
}

// untilNextMinute is the wait until the per-minute counters start over.
func untilNextMinute(now time.Time) time.Duration {
	return now.Truncate(time.Minute).Add(time.Minute).Sub(now)
}
