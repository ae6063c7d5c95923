// Package redistest gives tests a Redis to talk to without any set-up on the
// developer's machine.
//
// The order of preference mirrors what CI and laptops have: a server named by
// TEST_REDIS_URL (CI and the project machines), else a throwaway redis-server
// started on a free port when the binary is installed, else an in-process
// miniredis. Tests that share a server stay independent by putting every key
// under [Prefix].
//
// It is meant to be imported only from _test.go files.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvURL is the environment variable that names an existing Redis for tests.
const EnvURL = "TEST_REDIS_URL"

// startAttempts bounds how often a redis-server start is retried: the free
// port we pick can be taken by another process before the server binds it.
const startAttempts = 5

// readyWait is how long a freshly started redis-server may take to accept
// connections before the attempt counts as failed. It is a start-up budget,
// not an assertion about speed.
const readyWait = 10 * time.Second

// URL returns a redis:// URL for the test to use: TEST_REDIS_URL when set,
// else a redis-server started for this test on a free port, else an
// in-process miniredis. Servers it starts are stopped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	if bin, err := exec.LookPath("redis-server"); err == nil {
		return startRedisServer(t, bin)
	}
	return startMiniredis(t)
}

// Client returns a go-redis client for [URL], closed when the test ends.
// Without TEST_REDIS_URL every call starts its own server, so a test that
// needs two clients on one Redis should call URL once and build both from it.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatalf("redistest: parse %s: %v", EnvURL, err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Prefix returns a key prefix no other test uses, of the form
// "test:<random>:", so tests can share one Redis and run in parallel.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("redistest: random prefix: %v", err)
	}
	return "test:" + hex.EncodeToString(b[:]) + ":"
}

// startRedisServer runs bin on a free loopback port with persistence off and
// returns its URL. The port is found by binding :0 and releasing it, which
// leaves a small window for another process to take it, hence the retries.
func startRedisServer(t testing.TB, bin string) string {
	t.Helper()
	return newServer(t, bin).URL()
}

// Server is a redis-server process owned by one test, which the test can
// kill, freeze and bring back on the same port to play a Redis outage.
// Its methods must be called from the test's goroutine.
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	// proc is the running process, nil while killed.
	proc *process
}

// process is one run of redis-server.
type process struct {
	cmd *exec.Cmd
	// exited is closed once the process is reaped, so that waitReady and
	// kill can both wait for it.
	exited chan struct{}
}

// StartServer starts a redis-server of the test's own on a free loopback
// port, stopped when the test ends. Unlike [URL] it never uses
// TEST_REDIS_URL, whose server is shared and must not be stopped. The test
// is skipped when no redis-server binary is installed.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redistest: redis-server is not on PATH; install Redis to run this test")
	}
	return newServer(t, bin)
}

// newServer starts bin on a free port, retrying with another port when the
// chosen one is taken before the server binds it.
func newServer(t testing.TB, bin string) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		s.port = port
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.kill)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// URL is the server's redis:// URL; it stays the same across restarts.
func (s *Server) URL() string {
	return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port)
}

// Kill stops the server at once (SIGKILL), as a crash would. Its data is
// lost: persistence is off.
func (s *Server) Kill() {
	s.t.Helper()
	s.kill()
}

// Restart starts the server again on the same port, empty, and waits until
// it answers. It fails the test if the server cannot be started.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	var err error
	// The port was ours a moment ago; another process taking it in
	// between is unlikely but possible, so try a few times.
	for range startAttempts {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on port %d: %v", s.port, err)
}

// Freeze stops the server's process (SIGSTOP) without closing its socket:
// the kernel still accepts connections but nothing answers, like a hung
// server or a network partition. Thaw resumes it.
func (s *Server) Freeze() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	s.signal(syscall.SIGCONT)
}

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.proc == nil {
		s.t.Fatalf("redistest: signal %v: redis-server is not running", sig)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: signal %v: %v", sig, err)
	}
}

// start runs redis-server on s.port and waits until it answers PING. On
// failure the process is killed before returning.
func (s *Server) start() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	s.proc = p
	if err := waitReady(s.URL(), p.exited); err != nil {
		s.kill()
		return fmt.Errorf("port %d: %w", s.port, err)
	}
	return nil
}

// kill stops the running process, if any, and waits until it is reaped. A
// frozen process is killed too: SIGKILL needs no cooperation.
func (s *Server) kill() {
	if s.proc == nil {
		return
	}
	_ = s.proc.cmd.Process.Kill()
	<-s.proc.exited
	s.proc = nil
}

// waitReady polls url with PING until it answers, the process exits, or
// readyWait runs out.
func waitReady(url string, exited <-chan struct{}) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return fmt.Errorf("parse %s: %w", url, err)
	}
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	defer c.Close()
	return pingUntilReady(c, exited, 200*time.Millisecond)
}

// errExited is wrapped by pingUntilReady's error when the server's
// process ended before it answered.
var errExited = errors.New("redis-server exited before answering")

// pingUntilReady pings c, each ping bounded by perPing, until it answers,
// exited is closed (an error wrapping errExited), or readyWait runs out.
// The error carries the last ping's.
func pingUntilReady(c interface {
	Ping(context.Context) *redis.StatusCmd
}, exited <-chan struct{}, perPing time.Duration) error {
	deadline := time.Now().Add(readyWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), perPing)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%w: %w", errExited, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", readyWait, err)
		}
	}
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// miniredisTick is how often startMiniredis moves miniredis's TTL clock.
const miniredisTick = 10 * time.Millisecond

// startMiniredis runs an in-process miniredis for the test.
//
// miniredis only expires keys when told that time has passed, so a
// goroutine tells it every miniredisTick; code relying on TTLs then behaves
// as it would against a real server, to within a tick.
func startMiniredis(t testing.TB) string {
	t.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		t.Fatalf("redistest: start miniredis: %v", err)
	}
	t.Cleanup(m.Close)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(miniredisTick)
		defer ticker.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-ticker.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	// Cleanups run last-registered first: the ticker stops before Close.
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return "redis://" + m.Addr() + "/0"
}
