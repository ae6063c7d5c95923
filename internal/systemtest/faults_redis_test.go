package systemtest

// Fault tests for what a Redis client's own behaviour can do to exact
// limits: a command retried after its reply was lost, and a read timeout
// shorter than the limiter's deadline. Both failed before the limiter and
// budget scripts learned to recognise a retried call and the client's I/O
// timeout was raised to RATE_LIMIT_REDIS_TIMEOUT.

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestFaultRedisReplyLost lets a limiter decision, then a budget
// reservation, reach Redis and run there, and drops the connection before
// the reply comes back (a Redis restart or a network cut at that moment).
// The client library retries the command on a new connection; the scripts
// recognise the call and answer as before, so one request spends one token
// and one call reserves its estimate once.
func TestFaultRedisReplyLost(t *testing.T) {
	t.Parallel()
	direct, proxied, proxy := redisBehindProxy(t)
	databaseURL := sharedDatabase(t)
	up := newCountingUpstream(t)
	env := faultEnv(t, patientRedis(t, proxied), databaseURL, up.URL, 10)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	s := startServer(t, env)
	prefix := env["REDIS_KEY_PREFIX"]
	admin := redisAdmin(t, direct)

	// cutOnce arms the cut on needle and sends one chat; it retries when the
	// command cut was an EVALSHA that Redis refused with NOSCRIPT (another
	// test flushed the scripts), which runs nothing.
	cutOnce := func(token, needle, message string) {
		t.Helper()
		for attempt := 0; ; attempt++ {
			dropped := proxy.CutAfter(needle)
			r := chat(t, s, token, fmt.Sprintf("%s %d", message, attempt))
			if r.status != http.StatusOK {
				t.Fatalf("chat with its Redis command cut: %d %v", r.status, r.body)
			}
			select {
			case reply := <-dropped:
				if bytes.HasPrefix(reply, []byte("-NOSCRIPT")) && attempt < 3 {
					continue
				}
				t.Logf("dropped reply %q", reply)
				return
			case <-time.After(10 * time.Second):
				t.Fatal("no command was cut")
			}
		}
	}

	t.Run("limiter", func(t *testing.T) {
		token, _ := newFaultUser(t, s, "cut-limiter@example.com")
		chats(t, s, token, "warm", 1)
		if left := quotaLeft(t, s, token); left != 9 {
			t.Fatalf("%d left after one chat", left)
		}
		cutOnce(token, prefix+"rl:user:", "cut")
		if left := quotaLeft(t, s, token); left != 8 {
			t.Errorf("after one more chat, whose decision lost its reply, %d left, want 8", left)
		}
	})
	t.Run("budget", func(t *testing.T) {
		token, userID := newFaultUser(t, s, "cut-budget@example.com")
		chats(t, s, token, "warm", 1)
		if held := budgetHeld(t, admin, prefix, userID); held != 7 {
			t.Fatalf("budget %d after one call", held)
		}
		cutOnce(token, prefix+"budget:", "cut")
		if held := budgetHeld(t, admin, prefix, userID); held != 14 {
			t.Errorf("after a second call, whose reservation lost its reply, the budget holds %d, want 14", held)
		}
	})
}

// TestFaultSlowRedisWithinLimiterTimeout makes Redis answer in 150ms with
// RATE_LIMIT_REDIS_TIMEOUT=3s and otherwise the default configuration: as
// the README says, the longer limiter timeout keeps the limit exact through
// the slow moment (the Redis client's read timeout, 100ms by default, no
// longer cuts it first).
func TestFaultSlowRedisWithinLimiterTimeout(t *testing.T) {
	t.Parallel()
	_, proxied, proxy := redisBehindProxy(t)
	up := newCountingUpstream(t)
	env := faultEnv(t, proxied, sharedDatabase(t), up.URL, 5)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "3s"
	s := startServer(t, env)
	token, _ := newFaultUser(t, s, "slow-default@example.com")
	proxy.SetLatency(150 * time.Millisecond)
	got := burst(t, []*server{s}, token, "slow", 7)
	proxy.SetLatency(0)
	t.Logf("statuses %v", got)
	if logHas(s, "rate limiter: shared store unavailable, using fallback") {
		t.Errorf("the limiter fell back from a Redis that answers in 150ms, with RATE_LIMIT_REDIS_TIMEOUT=3s")
	}
}
