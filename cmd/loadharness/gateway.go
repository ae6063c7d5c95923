package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi/agentapi/internal/cli"
	"github.com/agentapi/agentapi/internal/tier"
)

// gateway is one agentapi server running in this process through cli.Run,
// exactly as cmd/agentapi runs it, with a fake environment.
type gateway struct {
	name  string
	url   string // http://127.0.0.1:port
	token string // access token of a pro-tier user
	// apiKey is an API key of the same user, when this build has POST /keys.
	apiKey string
	env    map[string]string
	stop   context.CancelFunc
	done   chan error
}

// gatewayOptions choose the backends of one gateway.
type gatewayOptions struct {
	name     string
	dir      string // for the SQLite file
	upstream string // OPENAI_BASE_URL
	redisURL string // empty: in-process limiter and cache
	// env adds to or overrides the environment below (the soak run's
	// short upstream timeout and tiny tier).
	env map[string]string
	// log, when set, receives every log line after start-up; by default
	// they are discarded.
	log io.Writer
}

// logSink receives the gateway's whole log (start-up lines and one access-log
// line per request, each fully formatted by slog's JSON handler) and keeps
// nothing but the listening address.
type logSink struct {
	found atomic.Bool
	mu    sync.Mutex
	addr  string
	tee   io.Writer // gets the lines after start-up, when set
	ready chan struct{}
	early bytes.Buffer // start-up lines, shown if the gateway fails to start
}

func (s *logSink) Write(p []byte) (int, error) {
	if s.found.Load() {
		if s.tee != nil {
			return s.tee.Write(p)
		}
		return len(p), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.found.Load() {
		return len(p), nil
	}
	if s.early.Len() < 64<<10 {
		s.early.Write(p)
	}
	var line struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal(p, &line) == nil && line.Msg == "listening" {
		s.addr = line.Addr
		s.found.Store(true)
		close(s.ready)
	}
	return len(p), nil
}

// startGateway creates a pro-tier user with the CLI, starts the server, and
// logs in. The pro tier's bucket is made so large that the limiter decides on
// every request but never refuses one.
func startGateway(ctx context.Context, o gatewayOptions) (*gateway, error) {
	secret := make([]byte, 32)
	rand.Read(secret)
	env := map[string]string{
		"APP_ENV":               "development",
		"HOST":                  "127.0.0.1",
		"PORT":                  "0",
		"SECRET_KEY":            hex.EncodeToString(secret),
		"DATABASE_URL":          filepath.Join(o.dir, o.name+".db"),
		"OPENAI_API_KEY":        "sk-harness-upstream",
		"OPENAI_BASE_URL":       o.upstream,
		"UPSTREAM_TIMEOUT":      "30s",
		"RATE_LIMIT_PRO":        "1099511627776", // 1<<40, the largest allowed
		"RATE_LIMIT_PRO_REFILL": "1000000000",
		// Tool calls through /mcp spend from a bucket of their own.
		"MCP_RATE_LIMIT_PRO":        "1099511627776",
		"MCP_RATE_LIMIT_PRO_REFILL": "1000000000",
		"LOG_LEVEL":                 "info",
		"DEMO_USER":                 "false",
		"SHUTDOWN_TIMEOUT":          "5s",
	}
	if o.redisURL != "" {
		env["REDIS_URL"] = o.redisURL
		// Cache entries of a run are never read again; let them expire soon.
		env["CACHE_TTL"] = "5m"
		// Where the server supports it, keep the run's keys apart from
		// anything else in the same Redis.
		env["REDIS_KEY_PREFIX"] = "agentapi-harness-" + hex.EncodeToString(secret[:4]) + ":"
	}
	maps.Copy(env, o.env)
	getenv := func(k string) string { return env[k] }

	email := "harness-" + hex.EncodeToString(secret[:6]) + "@example.com"
	password := hex.EncodeToString(secret[6:22])
	var out bytes.Buffer
	// An administrator, so that the harness can register its MCP server.
	if err := cli.Run(ctx, []string{"users", "create", "--email", email, "--password-stdin", "--tier", tier.Pro, "--admin"},
		getenv, strings.NewReader(password+"\n"), &out, &out); err != nil {
		return nil, fmt.Errorf("%s: users create: %w (%s)", o.name, err, out.String())
	}

	sink := &logSink{ready: make(chan struct{}), tee: o.log}
	runCtx, stop := context.WithCancel(ctx)
	g := &gateway{name: o.name, env: env, stop: stop, done: make(chan error, 1)}
	go labelled("server", o.name, func() { g.done <- cli.Run(runCtx, nil, getenv, strings.NewReader(""), sink, sink) })
	select {
	case <-sink.ready:
	case err := <-g.done:
		stop()
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return nil, fmt.Errorf("%s: server stopped at start: %v\n%s", o.name, err, sink.early.String())
	case <-time.After(30 * time.Second):
		stop()
		return nil, fmt.Errorf("%s: server did not start within 30s", o.name)
	}
	g.url = "http://" + sink.addr

	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	resp, err := http.Post(g.url+"/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		g.close()
		return nil, fmt.Errorf("%s: login: %w", o.name, err)
	}
	defer resp.Body.Close()
	var login struct {
		AccessToken string `json:"access_token"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &login) != nil || login.AccessToken == "" {
		g.close()
		return nil, fmt.Errorf("%s: login: %d %s", o.name, resp.StatusCode, raw)
	}
	g.token = login.AccessToken
	if g.apiKey, err = g.createAPIKey(); err != nil {
		g.close()
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return g, nil
}

// createAPIKey asks for an API key through POST /keys; a build without the
// route gives "" and no error.
func (g *gateway) createAPIKey() (string, error) {
	req, err := http.NewRequest(http.MethodPost, g.url+"/keys", strings.NewReader(`{"name":"loadharness"}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("create API key: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return "", nil
	case http.StatusCreated, http.StatusOK:
	default:
		return "", fmt.Errorf("create API key: %d %s", resp.StatusCode, raw)
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(raw, &k); err != nil || k.Key == "" {
		return "", fmt.Errorf("create API key: unexpected answer %s", raw)
	}
	return k.Key, nil
}

// close stops the server and waits for it to drain and flush usage.
func (g *gateway) close() error {
	g.stop()
	select {
	case err := <-g.done:
		return err
	case <-time.After(20 * time.Second):
		return errors.New(g.name + ": server did not stop within 20s")
	}
}
