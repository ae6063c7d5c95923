package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/ratelimit"
)

// TestRateLimitHeadersAsFmtPrints pins setRateLimitHeaders, which appends
// its values by hand for speed, to what fmt's %q and %d print, and checks
// that the canonical header names read back under their usual spelling.
func TestRateLimitHeadersAsFmtPrints(t *testing.T) {
	t.Parallel()
	for _, pol := range []ratelimit.Policy{
		{Name: "free", Capacity: 10, RefillPerSecond: 1},
		{Name: "pro", Capacity: 1 << 40, RefillPerSecond: 1e9},
		{Name: `we"ird	tier ü`, Capacity: 7, RefillPerSecond: 0.3},
	} {
		for _, d := range []ratelimit.Decision{
			{Allowed: true, Remaining: 9, Reset: 1500 * time.Millisecond},
			{Remaining: 0, Reset: 0},
		} {
			h := http.Header{}
			setRateLimitHeaders(h, pol, d)
			window := int64(math.Ceil(float64(pol.Capacity) / pol.RefillPerSecond))
			wantPolicy := fmt.Sprintf("%q;q=%d;w=%d", pol.Name, pol.Capacity, window)
			wantLimit := fmt.Sprintf("%q;r=%d;t=%d", pol.Name, d.Remaining, ceilSeconds(d.Reset, 0))
			if got := h.Get("RateLimit-Policy"); got != wantPolicy {
				t.Errorf("RateLimit-Policy = %q, want %q", got, wantPolicy)
			}
			if got := h.Get("RateLimit"); got != wantLimit {
				t.Errorf("RateLimit = %q, want %q", got, wantLimit)
			}
			if len(h) != 2 {
				t.Errorf("headers %v, want exactly the two RateLimit fields", h)
			}
		}
	}
}
