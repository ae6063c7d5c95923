package systemtest

// End-to-end tests of agentapi on the Redis deployments a team runs past
// one machine: a Redis Cluster (three primaries with a replica each) and a
// primary with a replica under three Sentinels, both started by the test on
// loopback. Three replicas of the whole program share each deployment; the
// tests prove the same things TestReplicasShareLimitCacheAndAccounts proves
// on one Redis, then kill a primary under load.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/cli"
	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// redisDeployment is what the shared test body needs of a deployment.
type redisDeployment struct {
	url string
	// keys lists the keys matching pattern on every primary.
	keys func(t *testing.T, pattern string) []string
	// killPrimaryOf kills the primary holding key and returns a function
	// that waits until a replica has taken over and the deployment is
	// settled.
	killPrimaryOf func(t *testing.T, key string) (settled func())
	// sameNode reports whether two keys are on the same primary now.
	sameNode func(t *testing.T, a, b string) bool
}

// TestRedisCluster runs three replicas on a Redis Cluster whose servers
// accept only an ACL user.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.DeployOptions{User: "agentapi", Password: "cluster-pw"})
	admin := c.Client()
	testDeployment(t, redisDeployment{
		url: c.URL(),
		keys: func(t *testing.T, pattern string) []string {
			var mu sync.Mutex
			var all []string
			err := admin.ForEachMaster(t.Context(), func(ctx context.Context, m *redis.Client) error {
				// SCAN per primary: a cluster has no keyspace-wide SCAN.
				keys, err := m.Keys(ctx, pattern).Result()
				mu.Lock()
				all = append(all, keys...)
				mu.Unlock()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return all
		},
		killPrimaryOf: func(t *testing.T, key string) func() {
			c.PrimaryOf(key).Kill()
			return c.WaitHealthy
		},
		sameNode: func(t *testing.T, a, b string) bool {
			return c.PrimaryOf(a) == c.PrimaryOf(b)
		},
	})
}

// TestRedisSentinel runs three replicas on a primary and replica under
// Sentinel, over TLS only, as an ACL user.
func TestRedisSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t, redistest.DeployOptions{TLS: true, User: "agentapi", Password: "sentinel-pw"})
	admin := s.Client()
	testDeployment(t, redisDeployment{
		// A burst of 45 on cold pools makes 45 TLS handshakes at once, and
		// with Sentinel as many questions to a Sentinel; on a loaded
		// two-core machine some took longer than the 200ms dial default.
		// The URL's query overrides it, as an operator's would.
		url: s.URL() + "&dial_timeout=2s",
		keys: func(t *testing.T, pattern string) []string {
			keys, err := admin.Keys(t.Context(), pattern).Result()
			if err != nil {
				t.Fatal(err)
			}
			return keys
		},
		killPrimaryOf: func(t *testing.T, _ string) func() {
			s.Primary.Kill()
			return s.WaitFailover
		},
		sameNode: func(*testing.T, string, string) bool { return true },
	})
}

// testDeployment is the body both tests share.
func testDeployment(t *testing.T, d redisDeployment) {
	up := newCountingUpstream(t)
	db := sharedDatabase(t)
	env := replicaEnv(t, d.url, db, up.URL)
	// Budgets are on (and far away) so every call reserves and settles
	// through the budget's two-key script.
	env["TOKEN_BUDGET_FREE"] = "1000000"
	// Exactness needs Redis's answers, even slow ones: a burst of 45 on
	// cold pools opens 45 connections (TLS handshakes, and with Sentinel a
	// question to a Sentinel each), which on a loaded two-core machine took
	// over 600ms. The same bound as TestReplicasShareLimitCacheAndAccounts.
	// It does not lengthen the failover below: a killed primary refuses
	// connections at once, and each request must still end within
	// outageBound.
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	prefix := env["REDIS_KEY_PREFIX"]
	rs := startReplicas(t, 3, env)
	defer func() {
		if t.Failed() {
			t.Logf("replica logs:\n%s", logs(rs))
		}
	}()

	exact := func(t *testing.T, name string, pick func(id string) bool) {
		t.Helper()
		roundRobin := pickUser(t, rs, name+"-rr", pick)
		var statuses []int
		for i := range 12 {
			statuses = append(statuses, chat(t, rs[i%3], roundRobin, fmt.Sprintf("%s round robin %d", name, i)).status)
		}
		if want := []int{200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429}; fmt.Sprint(statuses) != fmt.Sprint(want) {
			t.Errorf("%s: 12 requests over 3 replicas answered %v, want %v (exactly 5 pass)", name, statuses, want)
		}
		burstUser := pickUser(t, rs, name+"-burst", pick)
		const n = 45
		count := burst(t, rs, burstUser, name+" burst", n)
		if count[200] != 5 || count[429] != n-5 {
			t.Errorf("%s: %d simultaneous requests over 3 replicas: statuses %v, want exactly 5×200 and %d×429", name, n, count, n-5)
		}
		if left := remaining(t, rs, burstUser); left[0] != 0 || left[1] != 0 || left[2] != 0 {
			t.Errorf("%s: quota per replica after the burst = %v, want 0 everywhere", name, left)
		}
	}

	t.Run("one exact limit", func(t *testing.T) {
		exact(t, "before", nil)
		for i, s := range rs {
			if logHas(s, "rate limiter: shared store unavailable, using fallback") {
				t.Errorf("replica %d fell back from Redis; its decisions were not shared", i)
			}
		}
	})

	t.Run("shared cache next to the bucket", func(t *testing.T) {
		token, id := newFaultUser(t, rs[0], "cache@example.com")
		before := up.Calls()
		first := chat(t, rs[0], token, "what do replicas share?")
		if first.status != http.StatusOK || first.body["from_cache"] != false {
			t.Fatalf("first ask: %d %v", first.status, first.body)
		}
		var entries []string
		waitFor(t, "the cache entry", func() bool {
			entries = d.keys(t, prefix+cli.RedisCachePrefix+"*")
			return len(entries) >= 1
		})
		for _, i := range []int{1, 2} {
			r := chat(t, rs[i], token, "what do replicas share?")
			if r.status != http.StatusOK || r.body["from_cache"] != true || r.body["response"] != first.body["response"] {
				t.Errorf("repeat on replica %d: %d %v, want the cached answer", i, r.status, r.body)
			}
		}
		if n := up.Calls() - before; n != 1 {
			t.Errorf("upstream called %d times for one question asked on 3 replicas, want 1", n)
		}
		// The entry shares the slot of the user's bucket, so one pipeline
		// to one node carries the decision and the lookup.
		bucket := prefix + cli.RedisLimitPrefix + "user:" + id
		for _, e := range entries {
			if !strings.Contains(e, id) {
				continue // another test's user
			}
			if !redisconn.SameSlot(e, bucket) || !d.sameNode(t, e, bucket) {
				t.Errorf("cache entry %q is not in the slot of the bucket %q", e, bucket)
			}
		}
	})

	t.Run("budgets and logout", func(t *testing.T) {
		token, id := newFaultUser(t, rs[1], "budget@example.com")
		for i := range 3 {
			if r := chat(t, rs[i], token, fmt.Sprintf("budget %d", i)); r.status != http.StatusOK {
				t.Fatalf("chat %d: %d %v", i, r.status, r.body)
			}
		}
		// Each answer costs 7 tokens; the settlements run after the answers.
		waitFor(t, "three settled calls on every replica", func() bool {
			for _, s := range rs {
				q := do(t, "GET", s.url+"/chat/quota", token, nil)
				if tb, _ := q.body["token_budget"].(map[string]any); tb == nil || tb["used"] != 21.0 {
					return false
				}
			}
			return true
		})
		if marks := d.keys(t, prefix+cli.RedisBudgetPrefix+"call:*"); len(marks) == 0 {
			t.Error("no budget call marks in Redis")
		} else if counter := d.keys(t, prefix+cli.RedisBudgetPrefix+id+":*"); len(counter) != 1 {
			t.Errorf("budget counters of the user: %v, want one (its name unchanged: <prefix>budget:<user>:<day>)", counter)
		}

		if r := do(t, "POST", rs[0].url+"/auth/logout", token, nil); r.status != http.StatusNoContent {
			t.Fatalf("logout: %d %v", r.status, r.body)
		}
		waitFor(t, "every replica to refuse the logged-out token", func() bool {
			for _, s := range rs {
				if do(t, "GET", s.url+"/chat/quota", token, nil).status != http.StatusUnauthorized {
					return false
				}
			}
			return true
		})
	})

	t.Run("primary killed under load", func(t *testing.T) {
		victim, victimID := newFaultUser(t, rs[2], "victim@example.com")
		victimKey := prefix + cli.RedisLimitPrefix + "user:" + victimID
		others := make([]string, 3)
		for i := range others {
			others[i], _ = newFaultUser(t, rs[i], fmt.Sprintf("load%d@example.com", i))
		}
		users := append([]string{victim}, others...)

		var o outage
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					r, err := send("POST", rs[(w+i)%3].url+"/chat", users[w], map[string]string{"message": fmt.Sprintf("load %d %d", w, i)})
					mu.Lock()
					if err != nil {
						t.Errorf("worker %d: %v", w, err)
					} else {
						o.check(t, fmt.Sprintf("worker %d request %d on replica %d", w, i, (w+i)%3), r)
					}
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		time.Sleep(300 * time.Millisecond) // load before the kill
		settled := d.killPrimaryOf(t, victimKey)
		settled()
		t.Logf("settled at %s", time.Now().UTC().Format(time.RFC3339Nano))
		time.Sleep(300 * time.Millisecond) // load after the takeover
		close(stop)
		wg.Wait()
		t.Logf("%d answers during the failover; slowest %v (%s)", o.answers, o.slowest, o.slowestWhat)

		// Every replica goes back to the shared limiter at its next probe.
		// The probe reads the victim's bucket, which now lives on the
		// promoted node: a replica that has not yet learned the new layout
		// fails that read (and reloads it) instead of passing on a bucket
		// that never moved, then falls back for one probe interval, which
		// would make the exactness check below count its local decisions.
		waitFor(t, "every replica back on the shared limiter", func() bool {
			back := true
			for _, s := range rs {
				do(t, "GET", s.url+"/chat/quota", victim, nil) // a Peek probes when due
				out := s.out.String()
				if strings.Count(out, "rate limiter: shared store unavailable") != strings.Count(out, "rate limiter: shared store available again") {
					back = false
				}
			}
			return back
		})
		// The limit is exact again, also for buckets on the promoted node.
		exact(t, "after", func(id string) bool {
			return d.sameNode(t, prefix+cli.RedisLimitPrefix+"user:"+id, victimKey)
		})
	})
	assertJSONLogs(t, rs)
}

// pickUser registers users until pick accepts one's id (nil accepts the
// first) and returns that user's access token.
func pickUser(t *testing.T, rs []*server, name string, pick func(id string) bool) string {
	t.Helper()
	for i := range 20 {
		token, id := newFaultUser(t, rs[i%len(rs)], fmt.Sprintf("%s-%d@example.com", name, i))
		if pick == nil || pick(id) {
			return token
		}
	}
	t.Fatalf("no user of 20 registered for %s had a bucket where wanted", name)
	return ""
}
