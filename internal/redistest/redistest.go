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
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
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
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		url, err := tryRedisServer(t, bin, port)
		if err == nil {
			return url
		}
		lastErr = err
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return ""
}

// tryRedisServer starts one redis-server on port and waits until it answers
// PING. On success the process is registered for killing at test cleanup; on
// failure it is killed before returning.
func tryRedisServer(t testing.TB, bin string, port int) (string, error) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
	)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("exec %s: %w", bin, err)
	}
	// exited is closed once the process is reaped, so both waitReady and
	// stop can wait on it without stealing each other's signal.
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	if err := waitReady(url, exited); err != nil {
		stop()
		return "", fmt.Errorf("port %d: %w", port, err)
	}
	t.Cleanup(stop)
	return url, nil
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

	deadline := time.Now().Add(readyWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited before answering: %w", err)
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
