package systemtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/cli"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// server is one agentapi process started through Run, as main would.
type server struct {
	url  string
	out  *testkit.SyncBuffer
	stop context.CancelFunc
	done chan error
}

// startServer runs `agentapi serve` with env and waits for its "listening" line.
func startServer(t *testing.T, env map[string]string) *server {
	t.Helper()
	s := launchServer(t, env)
	s.waitListening(t)
	return s
}

// launchServer starts `agentapi serve` with env without waiting for it, so
// that a test can start several at once; call waitListening on each. env is
// copied, and the server listens on a free loopback port.
func launchServer(t *testing.T, env map[string]string) *server {
	t.Helper()
	own := make(map[string]string, len(env)+2)
	for k, v := range env {
		own[k] = v
	}
	own["HOST"] = "127.0.0.1"
	own["PORT"] = "0"
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{out: &testkit.SyncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- cli.Run(ctx, []string{"serve"}, testkit.Env(own), strings.NewReader(""), s.out, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	return s
}

// waitListening waits for the server's "listening" log line and sets s.url.
func (s *server) waitListening(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.url == "" {
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("server did not start; output:\n%s", s.out.String())
		}
		select {
		case err := <-s.done:
			s.done <- err // for the cleanup
			t.Fatalf("server exited: %v\n%s", err, s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		sc := bufio.NewScanner(strings.NewReader(s.out.String()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				s.url = "http://" + line.Addr
			}
		}
	}
}

// shutdown cancels Run's context (SIGTERM in main) and returns Run's error.
func (s *server) shutdown(t *testing.T) error {
	t.Helper()
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("server did not stop")
		return nil
	}
}

func call(t *testing.T, method, url, token string, body any) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &m)
	return resp.StatusCode, m, resp.Header
}

// fakeOpenAI is the upstream most tests use: it takes the key
// sk-upstream-test and answers "Hi! You said: <the message>" with 3+4
// tokens, after delay.
func fakeOpenAI(t *testing.T, delay time.Duration) *fakeopenai.Server {
	return fakeopenai.New(t, fakeopenai.Options{Key: "sk-upstream-test", Latency: delay,
		Respond: func(r fakeopenai.Request) fakeopenai.Answer {
			return fakeopenai.Answer{Text: "Hi! You said: " + r.LastMessage(), Usage: fakeopenai.Usage{Prompt: 3, Completion: 4}}
		}})
}

// demoTokensUsed opens the database at db (a SQLite file, the server
// stopped) and returns the tokens the demo user used in the last hour.
func demoTokensUsed(t *testing.T, db string) (int64, error) {
	t.Helper()
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.UserByEmail(context.Background(), "user@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return st.TokensUsed(context.Background(), u.ID, time.Now().Add(-time.Hour))
}

// TestPrototypeFlow is the prototype's test_api.py, through the real program:
// log in as the demo user, 15 chats (10 succeed, then 429), then the quota.
func TestPrototypeFlow(t *testing.T) {
	t.Parallel()
	up := fakeOpenAI(t, 0)
	dir := t.TempDir()
	s := startServer(t, map[string]string{
		"DATABASE_URL":    filepath.Join(dir, "agentapi.db"),
		"OPENAI_API_KEY":  "sk-upstream-test",
		"OPENAI_BASE_URL": up.URL + "/v1",
		"LLM_MODEL":       "gpt-test",
	})
	status, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	if status != 200 {
		t.Fatalf("login: %d %v", status, m)
	}
	token := m["access_token"].(string)
	ok, limited := 0, 0
	for i := 0; i < 15; i++ {
		status, m, _ := call(t, "POST", s.url+"/chat", token, map[string]string{"message": fmt.Sprintf("Hello %d", i)})
		switch status {
		case 200:
			ok++
			if m["response"] != fmt.Sprintf("Hi! You said: Hello %d", i) || m["tokens_used"].(float64) != 7 {
				t.Fatalf("chat %d: %v", i, m)
			}
		case 429:
			limited++
		default:
			t.Fatalf("chat %d: %d %v", i, status, m)
		}
	}
	// At 1 token/s a slow machine might refill one during the loop.
	if ok < 10 || ok > 11 || limited != 15-ok {
		t.Fatalf("ok %d, limited %d; want 10 then 429s", ok, limited)
	}
	status, m, _ = call(t, "GET", s.url+"/chat/quota", token, nil)
	if status != 200 || m["tier"] != "free" || m["limit"].(float64) != 10 || m["remaining"].(float64) > 1 {
		t.Fatalf("quota: %d %v", status, m)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	out := s.out.String()
	for _, want := range []string{`"msg":"starting"`, `"msg":"request"`, "demo account", `"msg":"stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	for _, secret := range []string{"sk-upstream-test", token, `"password"`, "Hello 3"} {
		if strings.Contains(out, secret) {
			t.Errorf("log leaks %q", secret)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}
}

// TestEmbeddedDefaults starts with nothing configured but a database path: the
// mock model answers and the demo user exists.
func TestEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"DATABASE_URL": filepath.Join(t.TempDir(), "a.db")})
	status, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	if status != 200 {
		t.Fatalf("login: %d %v", status, m)
	}
	status, m, _ = call(t, "POST", s.url+"/chat", m["access_token"].(string), map[string]string{"message": "ping"})
	if status != 200 || m["response"] == "" || m["tokens_used"].(float64) <= 0 {
		t.Fatalf("mock chat: %d %v", status, m)
	}
	if status, _, _ := call(t, "GET", s.url+"/ready", "", nil); status != 200 {
		t.Fatalf("ready: %d", status)
	}
	if !strings.Contains(s.out.String(), "mock model") {
		t.Error("start-up log does not say the mock model answers")
	}
	if err := cli.Run(context.Background(), []string{"healthcheck"}, testkit.Env(map[string]string{"HOST": "127.0.0.1", "PORT": strings.TrimPrefix(s.url[strings.LastIndex(s.url, ":"):], ":")}), strings.NewReader(""), io.Discard, io.Discard); err != nil {
		t.Fatalf("healthcheck against a live server: %v", err)
	}
}

// TestGracefulShutdownDrains stops the server while a slow chat is in flight:
// the chat completes, its usage is written, and Run returns nil.
func TestGracefulShutdownDrains(t *testing.T) {
	t.Parallel()
	up := fakeOpenAI(t, 700*time.Millisecond)
	db := filepath.Join(t.TempDir(), "agentapi.db")
	s := startServer(t, map[string]string{
		"DATABASE_URL": db, "OPENAI_API_KEY": "sk-upstream-test", "OPENAI_BASE_URL": up.URL + "/v1",
	})
	_, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	token := m["access_token"].(string)
	type res struct {
		status int
		body   map[string]any
	}
	got := make(chan res, 1)
	go func() {
		st, body, _ := call(t, "POST", s.url+"/chat", token, map[string]string{"message": "slow"})
		got <- res{st, body}
	}()
	time.Sleep(200 * time.Millisecond) // let the request reach the upstream
	if err := s.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	r := <-got
	if r.status != 200 || r.body["response"] != "Hi! You said: slow" {
		t.Fatalf("in-flight request during shutdown: %d %v", r.status, r.body)
	}
	n, err := demoTokensUsed(t, db)
	if err != nil || n != 7 {
		t.Fatalf("usage after shutdown: %d %v (want 7: recorded before exit)", n, err)
	}
}
