package systemtest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
)

// TestPostgresOutageCleanErrors cuts a running server off from PostgreSQL,
// first by silence and then by refusal. Logging in must then fail promptly
// with a clean JSON 5xx carrying the request id (no hang, no internals),
// while /health stays 200 and /ready reports the database.
func TestPostgresOutageCleanErrors(t *testing.T) {
	t.Parallel()
	direct := pgtest.URL(t) // skips, naming TEST_DATABASE_URL, when unset
	proxied, proxy := testkit.Behind(t, direct)
	up := newCountingUpstream(t)
	env := replicaEnv(t, "", proxied, up.URL)
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

	proxy.Freeze()
	// Each call waits out the store's time limit here, so one is enough.
	checkDown("silent", "/auth/login")
	proxy.Refuse()
	checkDown("refusing", "/auth/login", "/auth/register")

	if !strings.Contains(s.out.String(), store.ErrUnavailable.Error()) {
		t.Errorf("log does not name the cause (%q)", store.ErrUnavailable)
	}
}
