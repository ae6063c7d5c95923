package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

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

// turnProxy sits between a replica and Redis and records its round trips:
// a turn is what the client sends before Redis answers, so a pipeline of
// two commands is one turn and two commands sent one after the other are
// two. Each turn is named by its commands, space-separated, lower-case
// ("evalsha get").
type turnProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	turns  map[string]int
}

func startTurnProxy(t *testing.T, target string) *turnProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &turnProxy{ln: ln, target: target, turns: map[string]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *turnProxy) addr() string { return p.ln.Addr().String() }

// serve relays one connection. The client's bytes since Redis last
// answered make up the current turn; Redis's next answer closes it.
func (p *turnProxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	var mu sync.Mutex
	var pending []byte
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				mu.Lock()
				pending = append(pending, buf[:n]...)
				mu.Unlock()
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				server.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			mu.Lock()
			if len(pending) > 0 {
				p.record(commandNames(pending))
				pending = pending[:0]
			}
			mu.Unlock()
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *turnProxy) record(names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.turns[strings.Join(names, " ")]++
}

// take returns the turns recorded since the last take, leaving out those
// made only of commands in notPerRequest.
func (p *turnProxy) take() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for turn, n := range p.turns {
		if slices.ContainsFunc(strings.Fields(turn), func(c string) bool { return !notPerRequest[c] }) {
			out[turn] += n
		}
	}
	clear(p.turns)
	return out
}

// commandNames reads the names of the RESP commands in b (arrays of bulk
// strings, as clients send them).
func commandNames(b []byte) []string {
	var names []string
	r := bufio.NewReader(bytes.NewReader(b))
	line := func() string {
		s, _ := r.ReadString('\n')
		return strings.TrimRight(s, "\r\n")
	}
	for {
		head := line()
		if !strings.HasPrefix(head, "*") {
			return names
		}
		n, _ := strconv.Atoi(head[1:])
		for i := range n {
			size, _ := strconv.Atoi(strings.TrimPrefix(line(), "$"))
			arg := make([]byte, size+2)
			if _, err := io.ReadFull(r, arg); err != nil {
				return names
			}
			if i == 0 {
				names = append(names, strings.ToLower(string(arg[:size])))
			}
		}
	}
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
	opts, err := redis.ParseURL(rds.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := startTurnProxy(t, opts.Addr)
	env := replicaEnv(t, "redis://"+proxy.addr()+"/0", filepath.Join(t.TempDir(), "rt.db"), up.URL)
	s := startServer(t, env)

	// measure runs n requests made by send and returns the round trips to
	// Redis per request, by turn. writes is how many cache writes the
	// requests start; they are waited for, as they run after the answer.
	measure := func(what string, n int, send func(i int) int, wantStatus, writes int) map[string]float64 {
		t.Helper()
		proxy.take()
		for i := range n {
			if st := send(i); st != wantStatus {
				t.Fatalf("%s %d: status %d, want %d", what, i, st, wantStatus)
			}
		}
		turns := map[string]int{}
		waitFor(t, what+": cache writes", func() bool {
			for turn, k := range proxy.take() {
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
	waitFor(t, "the warm-up's cache write", func() bool { return proxy.take()["set"] == 1 })

	miss := measure("miss", n, func(i int) int { return chat(t, s, token, fmt.Sprintf("miss %d", i)).status }, http.StatusOK, n)
	if want := map[string]float64{"evalsha get": 1, "set": 1}; !maps.Equal(miss, want) {
		t.Errorf("a cache miss makes these round trips to Redis per request: %v, want %v", miss, want)
	}

	hits := signUp(t, s, s, "hits@example.com")
	chat(t, s, hits, "asked before")
	waitFor(t, "the first ask's cache write", func() bool { return proxy.take()["set"] == 1 })
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
