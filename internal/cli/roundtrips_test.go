package cli

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// notPerRequest are commands a replica sends whatever its traffic: what
// go-redis sends when it opens a pooled connection, and the token
// revocation list's poll, which runs on a timer. The test leaves them out;
// a command that some request sends would still be counted.
var notPerRequest = map[string]bool{
	"hello": true, "client": true, "select": true, "auth": true,
	"zrangebyscore": true,
}

// monitor reads Redis's MONITOR feed, which lists every command Redis runs
// and who sent it: a client's address, or "lua" for the commands a script
// runs inside Redis (those cost no round trip).
type monitor struct {
	conn net.Conn
	r    *bufio.Reader
}

func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m := &monitor{conn: conn, r: bufio.NewReader(conn)}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line := m.line(t); line != "+OK" {
		t.Fatalf("MONITOR answered %q", line)
	}
	return m
}

func (m *monitor) line(t *testing.T) string {
	t.Helper()
	m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := m.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read MONITOR feed: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// clientCommands reads the feed up to the ECHO of sentinel and returns how
// often clients sent each command, leaving out script-internal commands,
// those in notPerRequest and the sentinel itself.
func (m *monitor) clientCommands(t *testing.T, sentinel string) map[string]int {
	t.Helper()
	calls := map[string]int{}
	for {
		// +1700000000.123456 [0 127.0.0.1:5555] "evalsha" "…" …
		line := m.line(t)
		_, rest, ok := strings.Cut(line, " [")
		source, rest, ok2 := strings.Cut(rest, "] ")
		if !ok || !ok2 {
			t.Fatalf("MONITOR line %q", line)
		}
		fields := strings.SplitN(rest, `"`, 5)
		if len(fields) < 3 {
			t.Fatalf("MONITOR line %q", line)
		}
		cmd := strings.ToLower(fields[1])
		if cmd == "echo" && len(fields) >= 4 && fields[3] == sentinel {
			return calls
		}
		if strings.HasSuffix(source, " lua") || notPerRequest[cmd] {
			continue
		}
		calls[cmd]++
	}
}

// TestChatRedisRoundTrips counts, on Redis's MONITOR feed, the commands
// one /chat request sends to Redis: the limiter's script, then the cache
// lookup, then (on a miss) the cache write, each one round trip. It runs
// against a Redis of its own so that no other test's traffic is counted.
func TestChatRedisRoundTrips(t *testing.T) {
	t.Parallel()
	rds := redistest.StartServer(t)
	up := newCountingUpstream(t)
	env := replicaEnv(t, rds.URL(), filepath.Join(t.TempDir(), "rt.db"), up.URL)
	s := startServer(t, env)
	opts, err := redis.ParseURL(rds.URL())
	if err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(opts)
	defer admin.Close()
	mon := startMonitor(t, opts.Addr)

	// seen returns the round trips since the last call, by command.
	phase := 0
	seen := func() map[string]int {
		t.Helper()
		phase++
		sentinel := fmt.Sprintf("end-of-phase-%d", phase)
		if err := admin.Echo(t.Context(), sentinel).Err(); err != nil {
			t.Fatal(err)
		}
		return mon.clientCommands(t, sentinel)
	}
	// measure runs n requests made by send and returns the round trips to
	// Redis per request, by command.
	measure := func(what string, n int, send func(i int) int, wantStatus int) map[string]float64 {
		t.Helper()
		seen()
		for i := range n {
			if st := send(i); st != wantStatus {
				t.Fatalf("%s %d: status %d, want %d", what, i, st, wantStatus)
			}
		}
		per := map[string]float64{}
		for name, calls := range seen() {
			per[name] = float64(calls) / float64(n)
		}
		t.Logf("%s: Redis round trips per request, by command: %v", what, per)
		return per
	}
	const n = 4
	token := signUp(t, s, s, "misses@example.com")
	// The first request loads the script (EVALSHA, NOSCRIPT, EVAL) and
	// dials; that happens once per Redis, not per request.
	t.Logf("first request: Redis round trips by command: %v", func() map[string]int {
		chat(t, s, token, "warm up")
		return seen()
	}())

	miss := measure("miss", n, func(i int) int { return chat(t, s, token, fmt.Sprintf("miss %d", i)).status }, http.StatusOK)
	want := map[string]float64{"evalsha": 1, "get": 1, "set": 1}
	if !maps.Equal(miss, want) {
		t.Errorf("a cache miss sends %v to Redis per request, want %v", miss, want)
	}

	hits := signUp(t, s, s, "hits@example.com")
	chat(t, s, hits, "asked before")
	hit := measure("hit", n, func(int) int { return chat(t, s, hits, "asked before").status }, http.StatusOK)
	if want := map[string]float64{"evalsha": 1, "get": 1}; !maps.Equal(hit, want) {
		t.Errorf("a cache hit sends %v to Redis per request, want %v", hit, want)
	}

	// The tier holds 5 requests: the first ask and the hits spent them.
	limited := measure("limited", n, func(int) int { return chat(t, s, hits, "asked before").status }, http.StatusTooManyRequests)
	if want := map[string]float64{"evalsha": 1}; !maps.Equal(limited, want) {
		t.Errorf("a limited request sends %v to Redis, want %v", limited, want)
	}
}
