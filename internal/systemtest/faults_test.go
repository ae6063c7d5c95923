package systemtest

// The fault suite: the real program, started through Run, against real
// Redis and PostgreSQL, while one of its dependencies fails. Each test
// asserts the status a client gets and that nothing is lost: every call
// that reached the model is recorded exactly once (counted in the store
// after Run returned, so nothing can still be on its way), the token budget
// holds what the calls used and no more, the rate-limit bucket holds one
// token per request, the server answers healthy requests afterwards, every
// error is JSON with the request id, and no log line is a stack trace.
//
// Faults other tests already cover are not repeated here; SECURITY.md's
// "Fault suite" lists every fault with the test that covers it. The proxy
// that plays Redis's and PostgreSQL's failures is in proxy_test.go.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/redis/go-redis/v9"
)

// patientRedis adds to a Redis URL client deadlines that a loaded test
// machine cannot miss, for tests whose subject is not Redis's speed: with
// the request-path defaults (100ms a command) a busy two-CPU machine under
// the race detector now and then misses one, and the limiter then decides
// per replica, which is right but not what those tests count.
func patientRedis(t *testing.T, redisURL string) string {
	t.Helper()
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for _, k := range []string{"dial_timeout", "read_timeout", "write_timeout", "pool_timeout"} {
		q.Set(k, "5s")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// faultEnv is replicaEnv with a bucket of capacity requests, a token
// budget (so that every call reserves and settles), and upstream calls
// neither retried nor circuit-broken, so that every call reaches the
// upstream exactly once.
func faultEnv(t *testing.T, redisURL, databaseURL, upstreamURL string, capacity int) map[string]string {
	t.Helper()
	env := replicaEnv(t, redisURL, databaseURL, upstreamURL)
	env["RATE_LIMIT_FREE"] = fmt.Sprint(capacity)
	env["TOKEN_BUDGET_FREE"] = "1000000" // budgets on: reservations must settle
	env["UPSTREAM_RETRIES"] = "0"
	env["UPSTREAM_BREAKER_FAILURES"] = "1000"
	return env
}

// newFaultUser registers email on s and logs in, returning the access
// token and the user's id.
func newFaultUser(t *testing.T, s *server, email string) (token, id string) {
	t.Helper()
	creds := map[string]string{"email": email, "password": "correct horse battery"}
	r := do(t, "POST", s.url+"/auth/register", "", creds)
	id, _ = r.body["id"].(string)
	if r.status != http.StatusCreated || id == "" {
		t.Fatalf("register %s: %d %v", email, r.status, r.body)
	}
	r = do(t, "POST", s.url+"/auth/login", "", creds)
	token, _ = r.body["access_token"].(string)
	if r.status != http.StatusOK || token == "" {
		t.Fatalf("login %s: %d %v", email, r.status, r.body)
	}
	return token, id
}

// usageOf reads userID's usage records from the store by model: rows and
// tokens. Call it after the servers stopped, when every record is written.
func usageOf(t *testing.T, databaseURL, userID string) (rows, tokens map[string]int64) {
	t.Helper()
	st, err := store.Open(context.Background(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	days, err := st.UsageByDay(context.Background(), userID, time.Now().AddDate(0, 0, -2), time.Now().AddDate(0, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	rows, tokens = map[string]int64{}, map[string]int64{}
	for _, d := range days {
		rows[d.Model] += d.Requests
		tokens[d.Model] += d.TotalTokens
	}
	return rows, tokens
}

func sumOf(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// redisAdmin is a client of its own on the Redis the servers use, to look
// at what they stored there.
func redisAdmin(t *testing.T, redisURL string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// budgetHeld sums the user's token-budget counters in Redis over all days
// (a test running across midnight has two).
func budgetHeld(t *testing.T, c *redis.Client, prefix, userID string) int64 {
	t.Helper()
	keys, err := c.Keys(context.Background(), prefix+"budget:"+userID+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, k := range keys {
		v, err := c.Get(context.Background(), k).Int64()
		if err != nil {
			t.Fatal(err)
		}
		n += v
	}
	return n
}

// quotaLeft is what /chat/quota says is left of the caller's bucket.
func quotaLeft(t *testing.T, s *server, token string) int {
	t.Helper()
	r := do(t, "GET", s.url+"/chat/quota", token, nil)
	left, ok := r.body["remaining"].(float64)
	if r.status != http.StatusOK || !ok {
		t.Fatalf("quota: %d %v", r.status, r.body)
	}
	return int(left)
}

// stackTraceMarks are what a Go stack trace or panic report would put in a
// log line.
var stackTraceMarks = []string{"goroutine ", "panic", "runtime/debug", ".go:"}

// assertCleanLogs fails for any output line of the servers that is not JSON
// or looks like a stack trace.
func assertCleanLogs(t *testing.T, servers ...*server) {
	t.Helper()
	assertJSONLogs(t, servers)
	for i, s := range servers {
		for _, line := range strings.Split(s.out.String(), "\n") {
			for _, mark := range stackTraceMarks {
				if strings.Contains(line, mark) {
					t.Errorf("server %d logged %q, like a stack trace: %s", i, mark, line)
				}
			}
		}
	}
}

// route is one way to ask the model: /chat or /v1/chat/completions, plain
// or streamed.
type route struct {
	name   string
	path   string
	stream bool
}

var (
	chatPlain  = route{"chat", "/chat", false}
	chatStream = route{"chat stream", "/chat", true}
	v1Plain    = route{"v1", "/v1/chat/completions", false}
	v1Stream   = route{"v1 stream", "/v1/chat/completions", true}
	allRoutes  = []route{chatPlain, chatStream, v1Plain, v1Stream}
)

// body is the route's request for model with message.
func (rt route) body(model, message string) string {
	var b []byte
	if rt.path == "/chat" {
		b, _ = json.Marshal(map[string]any{"message": message, "model": model, "stream": rt.stream})
	} else {
		b, _ = json.Marshal(map[string]any{"model": model, "stream": rt.stream,
			"messages": []map[string]string{{"role": "user", "content": message}}})
	}
	return string(b)
}

// sseEvent is one server-sent event: its name ("" for OpenAI's unnamed
// events) and data.
type sseEvent struct{ name, data string }

// answer is one HTTP answer, with its events when it was a stream.
type answer struct {
	status int
	header http.Header
	body   []byte
	events []sseEvent
	err    error // reading the body failed
}

// readEvents reads server-sent events from r until the stream ends or,
// when limit is positive, limit events came. It reads no further than the
// events it returns, so a caller can go on reading from r.
func readEvents(r *bufio.Reader, limit int) ([]sseEvent, error) {
	var events []sseEvent
	var e sseEvent
	for limit <= 0 || len(events) < limit {
		line, err := r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return events, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.data != "" || e.name != "" {
				events = append(events, e)
			}
			e = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			e.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			e.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return events, nil
}

// ask sends the route's request and reads the whole answer. It may run on
// any goroutine.
func ask(ctx context.Context, baseURL, token string, rt route, model, message string) answer {
	resp, err := postRoute(ctx, baseURL, token, rt, model, message)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		a.events, a.err = readEvents(bufio.NewReader(resp.Body), 0)
	} else {
		a.body, a.err = io.ReadAll(resp.Body)
	}
	return a
}

// postRoute posts the route's request for model and message with the token and
// returns the response, its body unread.
func postRoute(ctx context.Context, baseURL, token string, rt route, model, message string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", baseURL+rt.path, strings.NewReader(rt.body(model, message)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return testClient.Do(req)
}

// checkError fails unless a is an error answer with status want, whose
// body is JSON in the route's shape, with the request id in the header and,
// for a 5xx, in the body.
func checkError(t *testing.T, what string, rt route, a answer, want int) {
	t.Helper()
	if a.err != nil || a.status != want {
		t.Errorf("%s: %d %s (%v), want %d", what, a.status, a.body, a.err, want)
		return
	}
	id := a.header.Get("X-Request-ID")
	if id == "" {
		t.Errorf("%s: no X-Request-ID", what)
	}
	if !strings.HasPrefix(rt.path, "/v1/") {
		var body struct {
			Error     any    `json:"error"`
			Path      string `json:"path"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(a.body, &body); err != nil || body.Error == nil || body.Path != rt.path {
			t.Errorf("%s: body %q is not the JSON error of %s", what, a.body, rt.path)
		}
		if want >= 500 && body.RequestID != id {
			t.Errorf("%s: body's request id %q, header's %q", what, body.RequestID, id)
		}
		return
	}
	var body openAIError
	if err := json.Unmarshal(a.body, &body); err != nil || body.Error.Message == "" || body.Error.Type == "" {
		t.Errorf("%s: body %q is not an OpenAI error", what, a.body)
	}
	if want >= 500 && !strings.Contains(body.Error.Message, "(request id "+id+")") {
		t.Errorf("%s: message %q does not name request id %q", what, body.Error.Message, id)
	}
}

// openAIError is OpenAI's error body.
type openAIError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

// streamEnd is how a stream answer ended: "done" (/chat's done event or
// /v1's [DONE]), "error" (/chat's error event with the request id, or /v1's
// error data naming it), or what else came last.
func streamEnd(rt route, a answer) string {
	if len(a.events) == 0 {
		return "no events"
	}
	last := a.events[len(a.events)-1]
	id := a.header.Get("X-Request-ID")
	switch {
	case rt.path == "/chat" && last.name == "done":
		return "done"
	case rt.path == "/chat" && last.name == "error":
		var e struct {
			Error     string `json:"error"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal([]byte(last.data), &e) == nil && e.Error != "" && e.RequestID == id {
			return "error"
		}
	case last.data == "[DONE]":
		return "done"
	default:
		var e openAIError
		if json.Unmarshal([]byte(last.data), &e) == nil && strings.Contains(e.Error.Message, "(request id "+id+")") {
			return "error"
		}
	}
	return fmt.Sprintf("%+v", last)
}

// text is what the stream's events said, put together.
func (a answer) text(rt route) string {
	var b strings.Builder
	for _, e := range a.events {
		var chunk struct {
			Content string `json:"content"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(e.data), &chunk) != nil {
			continue
		}
		if rt.path == "/chat" {
			if e.name == "delta" {
				b.WriteString(chunk.Content)
			}
			continue
		}
		for _, c := range chunk.Choices {
			b.WriteString(c.Delta.Content)
		}
	}
	return b.String()
}

// upstreamTimeout is TestFaultUpstream's UPSTREAM_TIMEOUT, the first-byte
// budget that a hung upstream uses up; slowGap is the pause between the
// words of a slow stream, which in all takes longer than that budget.
const (
	upstreamTimeout = 2 * time.Second
	slowGap         = 700 * time.Millisecond
)

// faultyUpstream is the fake OpenAI with each request's behaviour chosen
// by the part of its model name before the first dot, so that each case
// of a test has a model of its own and its usage can be told apart in the
// store (the fake counts calls and cancellations by model):
//
//	ok       answers (plain or streamed, three words, usage 4+3)
//	fail500  500 with internals in the body
//	fail429  429 with Retry-After: 1
//	hang     sends nothing until the call is cancelled
//	slow     streams four words slowGap apart, longer in all than
//	         upstreamTimeout
//	cut      streams two words, then drops the connection; plain, drops it
//	         in the middle of the JSON
//	endless  streams one word, then nothing until cancelled
//	held     streams one word, then waits for Release before the rest
var faultyBehaviours = map[string]fakeopenai.Fault{
	"fail500": fakeopenai.Status500, "fail429": fakeopenai.Status429, "hang": fakeopenai.Hang,
	"slow": fakeopenai.Slow, "cut": fakeopenai.Cut, "endless": fakeopenai.Endless, "held": fakeopenai.Held,
}

func newFaultyUpstream(t *testing.T) *fakeopenai.Server {
	t.Helper()
	return fakeopenai.New(t, fakeopenai.Options{Key: "sk-upstream-test",
		SlowGap: slowGap, SlowWords: []string{"one ", "two ", "three ", "four"}, CutAfter: 2,
		Respond: func(r fakeopenai.Request) fakeopenai.Answer {
			behaviour, _, _ := strings.Cut(r.Model, ".")
			return fakeopenai.Answer{Fault: faultyBehaviours[behaviour]}
		}})
}

// TestFaultUpstream runs every upstream failure against each of the four
// ways to ask the model, through the real program with its budget in Redis
// and its usage in the database. Each case has a model of its own, so its
// upstream calls and usage records are counted apart. After all of them
// the server still answers, and once it stopped: failed calls recorded
// nothing, calls that produced text (a stream broken off by the upstream,
// a stream the client left) recorded it once, the budget holds exactly
// what was recorded (no reservation left behind), and the rate limit spent
// exactly one token per request.
//
// internal/httpapi tests each mapping at the handler (TestUpstreamFailures,
// TestV1ErrorsAreOpenAIShaped, TestChatStream, TestV1StreamUpstreamFailsMidway,
// TestStreamStallBeforeFirstEventIs504, TestV1StreamClientDisconnectCancelsUpstreamAndCounts);
// this is the same faults through Run, on every route, counted in the store.
func TestFaultUpstream(t *testing.T) {
	t.Parallel()
	redisURL, databaseURL := patientRedis(t, redistest.URL(t)), sharedDatabase(t)
	up := newFaultyUpstream(t)
	const capacity = 1000
	env := faultEnv(t, redisURL, databaseURL, up.URL, capacity)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	env["UPSTREAM_TIMEOUT"] = upstreamTimeout.String()
	s := startServer(t, env)
	token, userID := newFaultUser(t, s, "upstream-faults@example.com")

	type outcome int
	const (
		failed     outcome = iota // an error answer with status
		completed                 // 200, the whole answer
		brokenOff                 // 200, then the stream's error event
		clientLeft                // the client hung up after the first event
	)
	type fault struct {
		behaviour string
		routes    []route
		outcome   outcome
		status    int
		// rows is the usage records each call leaves; cancels, whether the
		// upstream call must have been cancelled.
		rows    int64
		cancels bool
	}
	faults := []fault{
		{"fail500", allRoutes, failed, http.StatusBadGateway, 0, false},
		{"fail429", allRoutes, failed, http.StatusServiceUnavailable, 0, false},
		{"hang", allRoutes, failed, http.StatusGatewayTimeout, 0, true},
		{"cut", []route{chatPlain, v1Plain}, failed, http.StatusBadGateway, 0, false},
		{"cut", []route{chatStream, v1Stream}, brokenOff, http.StatusOK, 1, false},
		{"slow", []route{chatStream, v1Stream}, completed, http.StatusOK, 1, false},
		{"endless", []route{chatStream, v1Stream}, clientLeft, http.StatusOK, 1, true},
	}
	// Every case's request at once (most of them wait on a timeout or a
	// slow upstream), then each case's checks as a subtest of its own.
	type call struct {
		fault
		rt    route
		model string
		got   answer
	}
	var calls []*call
	wantRows := map[string]int64{}
	for _, f := range faults {
		for _, rt := range f.routes {
			c := &call{fault: f, rt: rt, model: f.behaviour + "." + strings.ReplaceAll(rt.name, " ", "-")}
			calls = append(calls, c)
			wantRows[c.model] = f.rows
		}
	}
	requests := len(calls)
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.outcome == clientLeft {
				c.got = leaveAfterFirstEvent(ctx, cancel, s.url, token, c.rt, c.model)
			} else {
				c.got = ask(ctx, s.url, token, c.rt, c.model, "fault "+c.model)
			}
		})
	}
	wg.Wait()
	for _, c := range calls {
		t.Run(c.behaviour+" "+c.rt.name, func(t *testing.T) {
			a, rt, model := c.got, c.rt, c.model
			switch c.outcome {
			case failed:
				checkError(t, model, rt, a, c.status)
				if c.status == http.StatusServiceUnavailable && a.header.Get("Retry-After") == "" {
					t.Errorf("%s: 503 without Retry-After", model)
				}
				if strings.Contains(string(a.body), "internal.py") {
					t.Errorf("%s: the upstream's internals reached the client: %s", model, a.body)
				}
			case completed:
				if a.err != nil || a.status != http.StatusOK || streamEnd(rt, a) != "done" || a.text(rt) != "one two three four" {
					t.Errorf("%s: %d, ended %s, text %q (%v); want the whole answer", model, a.status, streamEnd(rt, a), a.text(rt), a.err)
				}
			case brokenOff:
				if a.err != nil || a.status != http.StatusOK || streamEnd(rt, a) != "error" || a.text(rt) != "one two " {
					t.Errorf("%s: %d, ended %s, text %q (%v); want the words so far, then the error event", model, a.status, streamEnd(rt, a), a.text(rt), a.err)
				}
			case clientLeft:
				if a.status != http.StatusOK || a.text(rt) != "one " {
					t.Errorf("%s: %d, text %q before leaving", model, a.status, a.text(rt))
				}
			}
			if n := up.CallsOf(model); n != 1 {
				t.Errorf("%s: the upstream was called %d times, want once", model, n)
			}
			if c.cancels {
				waitFor(t, model+": the upstream call to be cancelled", func() bool { return up.CancelledOf(model) == 1 })
			}
		})
	}

	// Healthy requests still work, on every route.
	for _, rt := range allRoutes {
		model := "ok.after-" + strings.ReplaceAll(rt.name, " ", "-")
		wantRows[model] = 1
		requests++
		a := ask(context.Background(), s.url, token, rt, model, "healthy "+rt.name)
		if a.err != nil || a.status != http.StatusOK || (rt.stream && streamEnd(rt, a) != "done") {
			t.Errorf("%s after the faults: %d %s %+v (%v)", rt.name, a.status, a.body, a.events, a.err)
		}
	}
	if left := quotaLeft(t, s, token); left != capacity-requests {
		t.Errorf("rate limit: %d left after %d requests from %d, want one token spent per request", left, requests, capacity)
	}
	admin := redisAdmin(t, redisURL)
	if err := s.shutdown(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	rows, tokens := usageOf(t, databaseURL, userID)
	for model, want := range wantRows {
		if rows[model] != want {
			t.Errorf("%s: %d usage records, want %d", model, rows[model], want)
		}
	}
	for model, n := range rows {
		if _, ok := wantRows[model]; !ok {
			t.Errorf("%d usage records of model %q, which no call named", n, model)
		}
	}
	if held := budgetHeld(t, admin, env["REDIS_KEY_PREFIX"], userID); held != sumOf(tokens) {
		t.Errorf("the token budget holds %d tokens, the usage records %d (by model %v): reservations were left or charged twice", held, sumOf(tokens), tokens)
	}
	assertCleanLogs(t, s)
}

// leaveAfterFirstEvent opens the route's stream, reads its first event and
// hangs up.
func leaveAfterFirstEvent(ctx context.Context, cancel context.CancelFunc, baseURL, token string, rt route, model string) answer {
	resp, err := postRoute(ctx, baseURL, token, rt, model, "leave "+model)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	a.events, a.err = readEvents(bufio.NewReader(resp.Body), 1)
	cancel()
	return a
}

// redisBehindProxy is the test's Redis (the shared one when TEST_REDIS_URL
// is set) and a proxy in front of it: the servers get the proxy's URL, the
// test keeps the direct one.
func redisBehindProxy(t *testing.T) (direct, proxied string, p *testkit.Proxy) {
	t.Helper()
	direct = redistest.URL(t)
	proxied, p = testkit.Behind(t, direct)
	return direct, proxied, p
}

// chats sends n chats with distinct messages and returns their statuses.
func chats(t *testing.T, s *server, token, prefix string, n int) []int {
	t.Helper()
	var statuses []int
	for i := range n {
		r := chat(t, s, token, fmt.Sprintf("%s %d", prefix, i))
		statuses = append(statuses, r.status)
		if r.status != http.StatusOK && r.status != http.StatusTooManyRequests {
			t.Errorf("%s %d: %d %v", prefix, i, r.status, r.body)
		}
	}
	return statuses
}

func statusCount(statuses []int, status int) int {
	n := 0
	for _, s := range statuses {
		if s == status {
			n++
		}
	}
	return n
}

// TestFaultRedisRefusedAndRestarted stops the Redis a server uses (the
// proxy refuses every connection) and starts it again with its data, as a
// restart with persistence or a network outage does. While it is down the
// server limits on its own and keeps recording usage; afterwards it goes
// back to the shared bucket, which holds exactly what it held before (the
// outage's local decisions did not leak into it), the budget holds the
// tokens of the budgeted calls only, and every call is recorded once.
//
// TestReplicasRedisOutageLocal kills a Redis of its own, which loses its
// data, and checks the per-replica limits across three replicas; this test
// keeps the data and counts what the outage did to it.
func TestFaultRedisRefusedAndRestarted(t *testing.T) {
	t.Parallel()
	direct, proxied, proxy := redisBehindProxy(t)
	databaseURL := sharedDatabase(t)
	up := newCountingUpstream(t)
	env := faultEnv(t, patientRedis(t, proxied), databaseURL, up.URL, 5)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	s := startServer(t, env)
	token, userID := newFaultUser(t, s, "redis-restart@example.com")

	if got := chats(t, s, token, "before", 2); statusCount(got, http.StatusOK) != 2 {
		t.Fatalf("before the outage: %v", got)
	}

	proxy.Refuse()
	// The server limits on its own, from a full bucket of its own: 5 of 6
	// pass.
	got := chats(t, s, token, "during", 6)
	if want := []int{200, 200, 200, 200, 200, 429}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("with Redis refusing connections: %v, want %v", got, want)
	}
	if !logHas(s, "rate limiter: shared store unavailable, using fallback") {
		t.Error("the server did not log that it fell back from Redis")
	}

	proxy.Restore()
	waitFor(t, "the limiter to use Redis again", func() bool {
		quotaLeft(t, s, token)
		return logHas(s, "rate limiter: shared store available again")
	})
	if left := quotaLeft(t, s, token); left != 3 {
		t.Errorf("after the restart the shared bucket has %d left, want the 3 it had before the outage", left)
	}
	if got := chats(t, s, token, "after", 1); got[0] != http.StatusOK {
		t.Errorf("after the restart: %v", got)
	}
	if left := quotaLeft(t, s, token); left != 2 {
		t.Errorf("after one more chat the shared bucket has %d left, want 2", left)
	}

	if err := s.shutdown(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	rows, tokens := usageOf(t, databaseURL, userID)
	if sumOf(rows) != 2+5+1 || sumOf(tokens) != 7*8 {
		t.Errorf("usage records %v, tokens %v; want 8 calls of 7 tokens, each recorded once", rows, tokens)
	}
	// The calls made while Redis was down were not budgeted (fail open);
	// the others were, once each.
	if held := budgetHeld(t, redisAdmin(t, direct), env["REDIS_KEY_PREFIX"], userID); held != 7*3 {
		t.Errorf("the token budget holds %d tokens, want 21 (the 3 calls made while Redis answered)", held)
	}
	assertCleanLogs(t, s)
}

// TestFaultRedisScriptFlushMidLoad empties Redis's script cache again and
// again while two replicas take a burst of chats for one user. The limiter
// and the budget are Lua scripts called by hash; every replica must notice
// NOSCRIPT and send the script again, without a failed request, without a
// fallback to per-replica limits, and without deciding or charging twice:
// exactly the bucket's capacity passes, the budget holds exactly the tokens
// of the calls that passed, and each is recorded once. SCRIPT FLUSH is
// safe on a Redis other tests share: their clients recover the same way.
//
// ratelimit's TestRedisSurvivesScriptFlush flushes once between two
// decisions of one limiter; this is the whole program under load.
func TestFaultRedisScriptFlushMidLoad(t *testing.T) {
	t.Parallel()
	direct, proxied, proxy := redisBehindProxy(t)
	databaseURL := sharedDatabase(t)
	up := newCountingUpstream(t)
	const capacity = 24
	env := faultEnv(t, patientRedis(t, proxied), databaseURL, up.URL, capacity)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	rs := startReplicas(t, 2, env)
	token, userID := newFaultUser(t, rs[0], "script-flush@example.com")
	noscript := proxy.WatchReplies("NOSCRIPT")
	admin := redisAdmin(t, direct)

	stop := make(chan struct{})
	flushes := make(chan int)
	go func() {
		n := 0
		defer func() { flushes <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if admin.ScriptFlush(context.Background()).Err() == nil {
				n++
			}
		}
	}()
	// Waves of 12 simultaneous chats, until the replicas met NOSCRIPT and
	// at least twice the capacity was asked for.
	counts := map[int]int{}
	sent := 0
	for wave := 0; noscript.Load() == 0 || sent < 2*capacity; wave++ {
		if wave == 20 {
			t.Fatalf("no NOSCRIPT reply reached the replicas in %d requests", sent)
		}
		replies := make([]reply, 12)
		errs := make([]error, 12)
		var wg sync.WaitGroup
		for i := range replies {
			wg.Go(func() {
				replies[i], errs[i] = send("POST", rs[i%2].url+"/chat", token, map[string]string{"message": fmt.Sprintf("wave %d chat %d", wave, i)})
			})
		}
		wg.Wait()
		for i, r := range replies {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			counts[r.status]++
			if r.status != http.StatusOK && r.status != http.StatusTooManyRequests {
				t.Errorf("chat during the flushes: %d %v", r.status, r.body)
			}
		}
		sent += len(replies)
	}
	close(stop)
	t.Logf("%d chats, %d SCRIPT FLUSHes, %d NOSCRIPT replies; statuses %v", sent, <-flushes, noscript.Load(), counts)

	if counts[http.StatusOK] != capacity || counts[http.StatusTooManyRequests] != sent-capacity {
		t.Errorf("statuses %v of %d chats, want exactly %d passed", counts, sent, capacity)
	}
	for i, s := range rs {
		if logHas(s, "rate limiter: shared store unavailable, using fallback") {
			t.Errorf("replica %d fell back from Redis: a flushed script was taken for an outage", i)
		}
		if left := quotaLeft(t, s, token); left != 0 {
			t.Errorf("replica %d: %d left, want 0", i, left)
		}
	}
	for _, s := range rs {
		if err := s.shutdown(t); err != nil {
			t.Fatalf("Run returned %v", err)
		}
	}
	rows, tokens := usageOf(t, databaseURL, userID)
	if sumOf(rows) != capacity || sumOf(tokens) != 7*capacity {
		t.Errorf("usage records %v, tokens %v; want %d calls of 7 tokens, each recorded once", rows, tokens, capacity)
	}
	if held := budgetHeld(t, admin, env["REDIS_KEY_PREFIX"], userID); held != 7*capacity {
		t.Errorf("the token budget holds %d tokens, want %d", held, 7*capacity)
	}
	assertCleanLogs(t, rs...)
}

// burst sends n chats as token at once, spread over rs in turn, and
// returns their statuses; each must be an answer, 200 or 429.
func burst(t *testing.T, rs []*server, token, prefix string, n int) map[int]int {
	t.Helper()
	replies := make([]reply, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			replies[i], errs[i] = send("POST", rs[i%len(rs)].url+"/chat", token, map[string]string{"message": fmt.Sprintf("%s %d", prefix, i)})
		})
	}
	close(start)
	wg.Wait()
	counts := map[int]int{}
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		counts[r.status]++
		if r.status != http.StatusOK && r.status != http.StatusTooManyRequests {
			t.Errorf("%s %d: %d %v", prefix, i, r.status, r.body)
		}
	}
	return counts
}

// TestFaultRedisSlow puts latency on every answer from Redis (commands
// reach it at once; replies come late), below and above
// RATE_LIMIT_REDIS_TIMEOUT. Below, the limit stays exact and shared: the
// server waits for Redis. Above, the limiter gives up on Redis and decides
// in-process, every request is still answered, and once Redis is quick
// again the server goes back to it by itself. The Redis client's own
// per-command deadline is raised (patientRedis) so that this test is about
// RATE_LIMIT_REDIS_TIMEOUT alone.
//
// TestReplicasRedisHang covers a Redis that never answers.
func TestFaultRedisSlow(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		latency time.Duration
		timeout string // RATE_LIMIT_REDIS_TIMEOUT
		shared  bool   // the limiter must not fall back
	}{
		{"below the timeout", 150 * time.Millisecond, "3s", true},
		{"above the timeout", 700 * time.Millisecond, "150ms", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			direct, proxied, proxy := redisBehindProxy(t)
			databaseURL := sharedDatabase(t)
			up := newCountingUpstream(t)
			const capacity = 5
			env := faultEnv(t, patientRedis(t, proxied), databaseURL, up.URL, capacity)
			env["RATE_LIMIT_REDIS_TIMEOUT"] = tc.timeout
			s := startServer(t, env)
			token, userID := newFaultUser(t, s, "slow-redis@example.com")

			proxy.SetLatency(tc.latency)
			// Seven at once: five pass, whoever decides, because the
			// in-process fallback starts with a full bucket of its own.
			const n = 7
			if got := burst(t, []*server{s}, token, "slow", n); got[http.StatusOK] != capacity || got[http.StatusTooManyRequests] != n-capacity {
				t.Errorf("%d chats at once with Redis %v slow: statuses %v, want %d passed", n, tc.latency, got, capacity)
			}
			fellBack := logHas(s, "rate limiter: shared store unavailable, using fallback")
			if tc.shared && fellBack {
				t.Errorf("the limiter fell back although Redis answered within RATE_LIMIT_REDIS_TIMEOUT=%s", tc.timeout)
			}
			if !tc.shared && !fellBack {
				t.Errorf("the limiter did not fall back from a Redis %v slow with RATE_LIMIT_REDIS_TIMEOUT=%s", tc.latency, tc.timeout)
			}

			proxy.SetLatency(0)
			if !tc.shared {
				waitFor(t, "the limiter to use Redis again", func() bool {
					quotaLeft(t, s, token)
					return logHas(s, "rate limiter: shared store available again")
				})
			}
			// A timed-out decision may still have run in Redis (its reply
			// came late), but no request may spend two tokens there.
			left := quotaLeft(t, s, token)
			if tc.shared && left != 0 || left < capacity-n {
				t.Errorf("the shared bucket has %d left after %d requests on a bucket of %d", left, n, capacity)
			}
			if err := s.shutdown(t); err != nil {
				t.Fatalf("Run returned %v", err)
			}
			rows, tokens := usageOf(t, databaseURL, userID)
			if sumOf(rows) != capacity || sumOf(tokens) != 7*capacity {
				t.Errorf("usage records %v, tokens %v; want %d calls of 7 tokens, each recorded once", rows, tokens, capacity)
			}
			if held := budgetHeld(t, redisAdmin(t, direct), env["REDIS_KEY_PREFIX"], userID); held != 7*capacity {
				t.Errorf("the token budget holds %d tokens, want %d", held, 7*capacity)
			}
			assertCleanLogs(t, s)
		})
	}
}

// TestFaultPostgresDown refuses every connection to PostgreSQL while a
// server runs, then lets them through again. Meanwhile what needs the
// database fails cleanly (503, JSON, request id, Retry-After: login,
// usage reports, an API key once the replica's few seconds of trusting its
// lookup are over), and what does not keeps working: an access token is
// verified by its signature and the account's last known state, and its
// chats are answered; their usage waits in the server and is written once
// the database is back, once each. Recovery needs no restart.
//
// TestPostgresOutageCleanErrors covers a silent database, the clean 5xx
// bodies without internals, and /health and /ready during the outage.
func TestFaultPostgresDown(t *testing.T) {
	t.Parallel()
	direct := pgtest.URL(t) // skips, naming TEST_DATABASE_URL, when unset
	proxied, proxy := testkit.Behind(t, direct)
	redisURL := patientRedis(t, redistest.URL(t))
	up := newCountingUpstream(t)
	env := faultEnv(t, redisURL, proxied, up.URL, 1000)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	s := startServer(t, env)
	token, userID := newFaultUser(t, s, "pg-down@example.com")
	r := do(t, "POST", s.url+"/keys", token, map[string]string{"name": "outage"})
	key, _ := r.body["key"].(string)
	if r.status != http.StatusCreated || key == "" {
		t.Fatalf("create key: %d %v", r.status, r.body)
	}
	answered := 0
	// Distinct messages throughout: a cache hit would record nothing.
	for i, cred := range []string{token, key} {
		if r := chat(t, s, cred, fmt.Sprint("before ", i)); r.status != http.StatusOK {
			t.Fatalf("chat before the outage: %d %v", r.status, r.body)
		}
		answered++
	}

	proxy.Refuse()
	// unavailable checks a clean 503 for a request that needs the database.
	unavailable := func(what string, r reply) {
		t.Helper()
		id, _ := r.body["request_id"].(string)
		if r.status != http.StatusServiceUnavailable || id == "" || id != r.header.Get("X-Request-ID") || r.header.Get("Retry-After") == "" {
			t.Errorf("%s with the database down: %d %v %v, want 503 with the request id and Retry-After", what, r.status, r.body, r.header)
		}
	}
	creds := map[string]string{"email": "pg-down@example.com", "password": "correct horse battery"}
	unavailable("login", do(t, "POST", s.url+"/auth/login", "", creds))
	unavailable("register", do(t, "POST", s.url+"/auth/register", "", map[string]string{"email": "pg-new@example.com", "password": "correct horse battery"}))
	unavailable("usage report", do(t, "GET", s.url+"/usage", token, nil))
	// The access token goes on working after the account's cached state
	// is too old to trust and the lookup fails: the last known state
	// stands in.
	waitFor(t, "the server to find the account lookup failing", func() bool {
		if r := chat(t, s, token, fmt.Sprintf("during %d", answered)); r.status != http.StatusOK {
			t.Fatalf("chat with an access token while the database is down: %d %v", r.status, r.body)
		}
		answered++
		return logHas(s, "account lookup failed; using the last known state or the token's claims")
	})
	// The API key works while the replica still trusts its lookup, then
	// needs the database.
	waitFor(t, "the API key to need the database", func() bool {
		r := chat(t, s, key, fmt.Sprintf("during %d", answered))
		if r.status == http.StatusOK {
			answered++
			return false
		}
		unavailable("chat with an API key", r)
		return true
	})

	proxy.Restore()
	waitFor(t, "login to work again", func() bool {
		r := do(t, "POST", s.url+"/auth/login", "", creds)
		if r.status != http.StatusOK {
			unavailable("login while the database comes back", r)
		}
		return r.status == http.StatusOK
	})
	for i, cred := range []string{token, key} {
		if r := chat(t, s, cred, fmt.Sprint("after ", i)); r.status != http.StatusOK {
			t.Errorf("chat after the outage: %d %v", r.status, r.body)
		}
		answered++
	}
	if !logHas(s, "usage flush failed; will retry") {
		t.Error("no usage flush failed while the database was down; the test did not test the retry")
	}
	admin := redisAdmin(t, redisURL)
	if err := s.shutdown(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	rows, tokens := usageOf(t, direct, userID)
	if sumOf(rows) != int64(answered) || sumOf(tokens) != 7*int64(answered) {
		t.Errorf("%d chats answered, usage records %v, tokens %v; want each recorded once", answered, rows, tokens)
	}
	if held := budgetHeld(t, admin, env["REDIS_KEY_PREFIX"], userID); held != sumOf(tokens) {
		t.Errorf("the token budget holds %d tokens, the usage records %d", held, sumOf(tokens))
	}
	assertCleanLogs(t, s)
}

// TestFaultShutdownWithLiveStreams cancels Run's context (SIGTERM in main)
// while five streams are open, on both routes. The server stops taking
// connections; the four streams that finish within SHUTDOWN_TIMEOUT reach
// their clients whole; the fifth, which never finishes, is cut at the
// deadline; Run returns nil (exit status 0); and every stream's tokens are
// in the store once, the cut one's as far as it got.
//
// TestGracefulShutdownDrains covers a plain chat in flight, and
// TestShutdownCutsStreamButKeepsItsUsage a lone stream that is cut.
func TestFaultShutdownWithLiveStreams(t *testing.T) {
	t.Parallel()
	redisURL, databaseURL := patientRedis(t, redistest.URL(t)), sharedDatabase(t)
	up := newFaultyUpstream(t)
	env := faultEnv(t, redisURL, databaseURL, up.URL, 100)
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"
	env["SHUTDOWN_TIMEOUT"] = "4s"
	s := startServer(t, env)
	token, userID := newFaultUser(t, s, "shutdown@example.com")

	type stream struct {
		rt    route
		model string
		live  chan struct{}
		got   chan answer
	}
	var streams []*stream
	for i, rt := range []route{chatStream, chatStream, v1Stream, v1Stream} {
		streams = append(streams, &stream{rt: rt, model: fmt.Sprintf("held.%d", i)})
	}
	endless := &stream{rt: chatStream, model: "endless.cut"}
	streams = append(streams, endless)
	for _, st := range streams {
		st.live, st.got = make(chan struct{}), make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest("POST", s.url+st.rt.path, strings.NewReader(st.rt.body(st.model, "shut down while "+st.model)))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := testClient.Do(req)
			if err != nil {
				close(st.live)
				st.got <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			a := answer{status: resp.StatusCode, header: resp.Header}
			br := bufio.NewReader(resp.Body)
			a.events, a.err = readEvents(br, 1)
			close(st.live)
			if a.err == nil {
				var rest []sseEvent
				rest, a.err = readEvents(br, 0)
				a.events = append(a.events, rest...)
			}
			st.got <- a
		}()
	}
	for _, st := range streams {
		select {
		case <-st.live:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not start", st.model)
		}
	}

	s.stop() // SIGTERM
	waitFor(t, "the server to start shutting down", func() bool { return logHas(s, "shutting down") })
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitFor(t, "new connections to be refused", func() bool {
		resp, err := fresh.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	up.Release() // the held streams finish now, within the deadline

	for _, st := range streams[:4] {
		a := <-st.got
		if a.err != nil || a.status != http.StatusOK || streamEnd(st.rt, a) != "done" || a.text(st.rt) != "one two three" {
			t.Errorf("%s over the shutdown: %d, ended %s, text %q (%v); want the whole answer", st.model, a.status, streamEnd(st.rt, a), a.text(st.rt), a.err)
		}
	}
	if a := <-endless.got; streamEnd(endless.rt, a) == "done" {
		t.Errorf("the endless stream ended normally: %+v", a.events)
	}
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run returned %v, want nil (exit status 0)", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if up.CancelledOf(endless.model) != 1 {
		t.Error("the endless stream's upstream call was not cancelled")
	}

	rows, tokens := usageOf(t, databaseURL, userID)
	for _, st := range streams {
		want := int64(7)
		if st == endless {
			want = tokens[st.model] // an estimate of its prompt and one word
		}
		if rows[st.model] != 1 || tokens[st.model] != want || want == 0 {
			t.Errorf("%s: %d usage records, %d tokens; want it recorded once", st.model, rows[st.model], tokens[st.model])
		}
	}
	if len(rows) != len(streams) {
		t.Errorf("usage records by model %v", rows)
	}
	if held := budgetHeld(t, redisAdmin(t, redisURL), env["REDIS_KEY_PREFIX"], userID); held != sumOf(tokens) {
		t.Errorf("the token budget holds %d tokens, the usage records %d", held, sumOf(tokens))
	}
	assertCleanLogs(t, s)
}

// TestFaultPostgresCommitReplyLost breaks the connection to PostgreSQL right
// after a usage batch's COMMIT reached the server and before its reply came
// back. The batch is stored, but the server cannot know that and writes it
// again with its next flush; the call must still be recorded once.
func TestFaultPostgresCommitReplyLost(t *testing.T) {
	t.Parallel()
	direct := pgtest.URL(t) // skips, naming TEST_DATABASE_URL, when unset
	proxied, proxy := testkit.Behind(t, direct)
	up := newCountingUpstream(t)
	env := faultEnv(t, patientRedis(t, redistest.URL(t)), proxied, up.URL, 10)
	s := startServer(t, env)
	token, userID := newFaultUser(t, s, "commit-lost@example.com")
	dropped := proxy.CutAfter("commit\x00") // pgx commits with the simple query "commit"
	if r := chat(t, s, token, "counted once"); r.status != http.StatusOK {
		t.Fatalf("chat: %d %v", r.status, r.body)
	}
	select {
	case <-dropped:
	case <-time.After(20 * time.Second):
		t.Fatal("no COMMIT went through the proxy")
	}
	if r := chat(t, s, token, "healthy afterwards"); r.status != http.StatusOK {
		t.Errorf("chat after the broken commit: %d %v", r.status, r.body)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if rows, tokens := usageOf(t, direct, userID); sumOf(rows) != 2 || sumOf(tokens) != 14 {
		t.Errorf("two calls, usage records %v, tokens %v; want each recorded once", rows, tokens)
	}
	assertCleanLogs(t, s)
}
