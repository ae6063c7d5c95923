package cli

import (
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/agentapi/agentapi/internal/redistest"
)

// notPerRequest are commands a replica sends whatever its traffic: what
// go-redis sends when it opens a pooled connection, and the token
// revocation list's poll, which runs on a timer. The test leaves them out;
// a command that some request sends would still be counted.
var notPerRequest = map[string]bool{
	"hello": true, "client": true, "select": true, "auth": true,
	"zrangebyscore": true,
}

// TestChatRedisRoundTrips counts the round trips one /chat request makes
// to Redis, through a proxy that sees each one: the limiter's script and
// the cache lookup travel together as one pipeline, and a miss's cache
// write follows in a turn of its own once the answer has been sent. It
// runs against a Redis of its own so that no other test's traffic counts.
func TestChatRedisRoundTrips(t *testing.T) {
	t.Parallel()
	rds := redistest.StartServer(t)
	up := newCountingUpstream(t)
	proxied, proxy := behindProxy(t, rds.URL())
	proxy.recordTurns()
	env := replicaEnv(t, proxied, filepath.Join(t.TempDir(), "rt.db"), up.URL)
	s := startServer(t, env)

	// measure runs n requests made by send and returns the round trips to
	// Redis per request, by turn. writes is how many cache writes the
	// requests start; they are waited for, as they run after the answer.
	measure := func(what string, n int, send func(i int) int, wantStatus, writes int) map[string]float64 {
		t.Helper()
		proxy.takeTurns(notPerRequest)
		for i := range n {
			if st := send(i); st != wantStatus {
				t.Fatalf("%s %d: status %d, want %d", what, i, st, wantStatus)
			}
		}
		turns := map[string]int{}
		waitFor(t, what+": cache writes", func() bool {
			for turn, k := range proxy.takeTurns(notPerRequest) {
				turns[turn] += k
			}
			return turns["set"] >= writes
		})
		per := map[string]float64{}
		for turn, calls := range turns {
			per[turn] = float64(calls) / float64(n)
		}
		t.Logf("%s: Redis round trips per request, by turn: %v", what, per)
		return per
	}
	const n = 4
	token := signUp(t, s, s, "misses@example.com")
	// The first request loads the script (EVALSHA, NOSCRIPT, EVAL) and
	// dials; that happens once per Redis, not per request.
	chat(t, s, token, "warm up")
	waitFor(t, "the warm-up's cache write", func() bool { return proxy.takeTurns(notPerRequest)["set"] == 1 })

	miss := measure("miss", n, func(i int) int { return chat(t, s, token, fmt.Sprintf("miss %d", i)).status }, http.StatusOK, n)
	if want := map[string]float64{"evalsha get": 1, "set": 1}; !maps.Equal(miss, want) {
		t.Errorf("a cache miss makes these round trips to Redis per request: %v, want %v", miss, want)
	}

	hits := signUp(t, s, s, "hits@example.com")
	chat(t, s, hits, "asked before")
	waitFor(t, "the first ask's cache write", func() bool { return proxy.takeTurns(notPerRequest)["set"] == 1 })
	hit := measure("hit", n, func(int) int { return chat(t, s, hits, "asked before").status }, http.StatusOK, 0)
	if want := map[string]float64{"evalsha get": 1}; !maps.Equal(hit, want) {
		t.Errorf("a cache hit makes these round trips to Redis per request: %v, want %v", hit, want)
	}

	// The tier holds 5 requests: the first ask and the hits spent them. A
	// refused request's lookup rode along with its decision for nothing,
	// but cost no round trip of its own.
	limited := measure("limited", n, func(int) int { return chat(t, s, hits, "asked before").status }, http.StatusTooManyRequests, 0)
	if want := map[string]float64{"evalsha get": 1}; !maps.Equal(limited, want) {
		t.Errorf("a limited request makes these round trips to Redis: %v, want %v", limited, want)
	}
}
