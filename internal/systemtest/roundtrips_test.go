package systemtest

import (
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
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
// write follows once the answer has been sent, in a pipelined batch with
// the other writes of the moment (at most one round trip per write). It
// runs against a Redis of its own so that no other test's traffic counts.
func TestChatRedisRoundTrips(t *testing.T) {
	t.Parallel()
	rds := redistest.StartServer(t)
	up := newCountingUpstream(t)
	proxied, proxy := testkit.Behind(t, rds.URL())
	proxy.RecordTurns()
	env := replicaEnv(t, proxied, filepath.Join(t.TempDir(), "rt.db"), up.URL)
	s := startServer(t, env)

	// measure runs n requests made by send and returns the round trips to
	// Redis per request, by turn. writes is how many cache writes the
	// requests start; they are waited for, as they run after the answer.
	measure := func(what string, n int, send func(i int) int, wantStatus, writes int) map[string]float64 {
		t.Helper()
		proxy.TakeTurns(notPerRequest)
		for i := range n {
			if st := send(i); st != wantStatus {
				t.Fatalf("%s %d: status %d, want %d", what, i, st, wantStatus)
			}
		}
		turns := map[string]int{}
		waitFor(t, what+": cache writes", func() bool {
			for turn, k := range proxy.TakeTurns(notPerRequest) {
				turns[turn] += k
			}
			return setsIn(turns) >= writes
		})
		per := map[string]float64{}
		for turn, calls := range turns {
			per[turn] = float64(calls) / float64(n)
		}
		t.Logf("%s: Redis round trips per request, by turn: %v", what, per)
		return per
	}
	// writeTurns takes the cache writes out of per: SET commands per
	// request, and the round trips per request that carried them (cache
	// writes go in batches, so requests close together share one).
	writeTurns := func(per map[string]float64) (sets, trips float64) {
		for turn, v := range per {
			if w := strings.Fields(turn); len(w) > 0 && !slices.ContainsFunc(w, func(c string) bool { return c != "set" }) {
				sets += v * float64(len(w))
				trips += v
				delete(per, turn)
			}
		}
		return sets, trips
	}
	const n = 4
	token := signUp(t, s, s, "misses@example.com")
	// The first request loads the script (EVALSHA, NOSCRIPT, EVAL) and
	// dials; that happens once per Redis, not per request.
	chat(t, s, token, "warm up")
	waitFor(t, "the warm-up's cache write", func() bool { return setsIn(proxy.TakeTurns(notPerRequest)) == 1 })

	miss := measure("miss", n, func(i int) int { return chat(t, s, token, fmt.Sprintf("miss %d", i)).status }, http.StatusOK, n)
	if sets, trips := writeTurns(miss); sets != 1 || trips > 1 {
		t.Errorf("a cache miss writes %v entries in %v round trips per request, want 1 in at most 1", sets, trips)
	}
	if want := map[string]float64{"evalsha get": 1}; !maps.Equal(miss, want) {
		t.Errorf("a cache miss makes these other round trips to Redis per request: %v, want %v", miss, want)
	}

	hits := signUp(t, s, s, "hits@example.com")
	chat(t, s, hits, "asked before")
	waitFor(t, "the first ask's cache write", func() bool { return setsIn(proxy.TakeTurns(notPerRequest)) == 1 })
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

// setsIn counts the SET commands in turns (a turn is named by its
// commands, such as "set set" for a batch of two writes).
func setsIn(turns map[string]int) int {
	n := 0
	for turn, k := range turns {
		for _, c := range strings.Fields(turn) {
			if c == "set" {
				n += k
			}
		}
	}
	return n
}
