package cli

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/store"
)

// tcpProxy forwards loopback connections to a server and can play that
// server's failures: silence (connections open, nothing answers, as in a
// network partition) and refusal (connections closed, nothing listening).
type tcpProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	silent bool
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	go p.accept()
	t.Cleanup(p.refuse)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		silent := p.silent
		p.mu.Unlock()
		if silent {
			continue // held open, never answered
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, up)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies src to dst until either fails, dropping what it reads while
// the proxy is silent.
func (p *tcpProxy) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		silent := p.silent
		p.mu.Unlock()
		if silent {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// silence stops all traffic through the proxy without closing anything.
func (p *tcpProxy) silence() {
	p.mu.Lock()
	p.silent = true
	p.mu.Unlock()
}

// refuse closes the listener and every connection.
func (p *tcpProxy) refuse() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// viaProxy rewrites a postgres:// URL to connect through p.
func viaProxy(t *testing.T, databaseURL string, p *tcpProxy) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.addr()
	return u.String()
}

// TestPostgresOutageCleanErrors cuts a running server off from PostgreSQL,
// first by silence and then by refusal. Logging in must then fail promptly
// with a clean JSON 5xx carrying the request id (no hang, no internals),
// while /health stays 200 and /ready reports the database.
func TestPostgresOutageCleanErrors(t *testing.T) {
	t.Parallel()
	direct := pgtest.URL(t) // skips, naming TEST_DATABASE_URL, when unset
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	up := newCountingUpstream(t)
	env := replicaEnv(t, "", viaProxy(t, direct, proxy), up.URL)
	delete(env, "REDIS_URL")
	s := startServer(t, env)
	creds := map[string]string{"email": "pg@example.com", "password": "correct horse battery"}
	if r := do(t, "POST", s.url+"/auth/register", "", creds); r.status != http.StatusCreated {
		t.Fatalf("register: %d %v", r.status, r.body)
	}

	// checkDown asserts what the server says while the database is away.
	// bound is "not a hang": the store's own time limit plus slack.
	bound := store.OpTimeout + 3*time.Second
	checkDown := func(phase string, paths ...string) {
		t.Helper()
		for _, path := range paths {
			body := map[string]string{"email": "pg@example.com", "password": "correct horse battery"}
			if path == "/auth/register" {
				body["email"] = "new-" + phase + "@example.com"
			}
			r := do(t, "POST", s.url+path, "", body)
			id, _ := r.body["request_id"].(string)
			if r.status < 500 || id == "" || id != r.header.Get("X-Request-ID") {
				t.Errorf("%s with the database %s: %d %v, want a 5xx with the request id", path, phase, r.status, r.body)
			}
			msg, _ := r.body["error"].(string)
			for _, leak := range []string{"store", "postgres", "dial", "127.0.0.1", "deadline"} {
				if strings.Contains(strings.ToLower(msg), leak) {
					t.Errorf("%s with the database %s: error %q shows internals", path, phase, r.body["error"])
				}
			}
			if r.took > bound {
				t.Errorf("%s with the database %s took %v, want under %v", path, phase, r.took, bound)
			}
			t.Logf("%s with the database %s: %d in %v", path, phase, r.status, r.took.Round(time.Millisecond))
		}
		if r := do(t, "GET", s.url+"/health", "", nil); r.status != http.StatusOK {
			t.Errorf("health with the database %s: %d", phase, r.status)
		}
		r := do(t, "GET", s.url+"/ready", "", nil)
		if checks, _ := r.body["checks"].(map[string]any); r.status != http.StatusServiceUnavailable || checks["database"] != "unavailable" {
			t.Errorf("ready with the database %s: %d %v, want 503 naming the database", phase, r.status, r.body)
		}
	}

	proxy.silence()
	// Each call waits out the store's time limit here, so one is enough.
	checkDown("silent", "/auth/login")
	proxy.refuse()
	checkDown("refusing", "/auth/login", "/auth/register")

	if !strings.Contains(s.out.String(), store.ErrUnavailable.Error()) {
		t.Errorf("log does not name the cause (%q)", store.ErrUnavailable)
	}
}
