package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Transport wraps an upstream's http.RoundTripper to time each call until its
// response headers and count failures, without the LLM client knowing.
type Transport struct {
	Base     http.RoundTripper
	Upstream string
	Metrics  *Metrics
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.Base.RoundTrip(req)
	if err != nil {
		switch cause := context.Cause(req.Context()); {
		case cause == nil:
			t.Metrics.UpstreamError(t.Upstream, "connection")
		case errors.Is(cause, context.Canceled):
			// The caller went away; not the upstream's failure.
		default:
			// A deadline or a first-byte budget ran out.
			t.Metrics.UpstreamError(t.Upstream, "timeout")
		}
		return nil, err
	}
	t.Metrics.UpstreamResponse(t.Upstream, resp.StatusCode, time.Since(start))
	return resp, nil
}
