// Package testkit holds the helpers that tests of several packages share:
// a log sink safe for concurrent writers, waiting for a condition or a
// signal, addresses that refuse or never answer, and a TCP proxy that plays
// a server's failures. The fake OpenAI upstream is its subpackage
// fakeopenai.
//
// Only tests import it, and the load harness (cmd/loadharness), which runs
// the same fakes outside a test. It does not import package testing: its
// functions take a TB, which *testing.T and *testing.B satisfy.
package testkit

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// TB is the part of testing.TB the kit uses.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// Env is a getenv that reads m, for running the program (cli.Run, the
// config loader) with an environment of the test's own.
func Env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// SyncBuffer is an io.Writer that collects what several goroutines write
// (a server's log, say) and can be read while they write.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Eventually polls cond until it holds, failing the test with what if it
// still does not after within. The bound guards against a hang; it is not
// a speed assertion, so make it generous. Polls start a millisecond apart
// and slow down to 50ms.
func Eventually(t TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", within, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Await returns the next value from ch, failing the test with what if none
// comes within the bound (a liveness guard, like Eventually's).
func Await[E any](t TB, ch <-chan E, within time.Duration, what string) E {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s did not happen within %s", what, within)
		var zero E
		return zero
	}
}

// ClosedAddr returns a loopback address ("127.0.0.1:port") that nothing
// listens on: it did a moment ago, so no other process is likely to have
// taken it, and a client dialling it is refused at once.
func ClosedAddr(t TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// ClosedPort is ClosedAddr's port, for configuration that takes a port.
func ClosedPort(t TB) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(ClosedAddr(t))
	return port
}

// SilentListener returns the loopback address of a server that accepts
// every connection, reads and discards what the client sends and never
// answers, like a frozen server or a partition that still completes the
// TCP handshake. It and its connections close with the test.
func SilentListener(t TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: listen: %v", err)
	}
	var (
		mu     sync.Mutex
		held   []net.Conn
		closed bool
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			held = append(held, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// fail fails the test with err, if any: the kit's error-returning
// functions serve the load harness, their TB wrappers the tests.
func fail(t TB, err error) {
	if err != nil {
		t.Helper()
		t.Fatalf("%v", fmt.Errorf("testkit: %w", err))
	}
}
