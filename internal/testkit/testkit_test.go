package testkit_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/testkit"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends line on a new connection to addr and reads one line
// back, waiting at most d.
func roundTrip(addr, line string, d time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func TestProxyFaults(t *testing.T) {
	t.Parallel()
	p := testkit.NewProxy(t, echoServer(t))
	if got, err := roundTrip(p.Addr(), "hello", 5*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	p.Freeze()
	var ne net.Error
	if _, err := roundTrip(p.Addr(), "frozen", 200*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("frozen: %v, want a timeout", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(p.Addr(), "thawed", 5*time.Second); err != nil || got != "thawed" {
		t.Fatalf("after a freeze: %q, %v", got, err)
	}

	p.Reset()
	if _, err := roundTrip(p.Addr(), "reset", 5*time.Second); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Fatalf("reset: %v, want the connection reset", err)
	}
	p.Refuse()
	if _, err := roundTrip(p.Addr(), "refused", 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("refused: %v, want the connection refused", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(p.Addr(), "back", 5*time.Second); err != nil || got != "back" {
		t.Fatalf("after refusal: %q, %v", got, err)
	}

	dropped := p.CutAfter("cut me")
	if _, err := roundTrip(p.Addr(), "cut me", 5*time.Second); err == nil {
		t.Fatal("the cut command's reply arrived")
	}
	if got := string(testkit.Await(t, dropped, 5*time.Second, "the dropped reply")); got != "cut me\n" {
		t.Fatalf("dropped reply %q", got)
	}
	testkit.Eventually(t, 5*time.Second, "the proxy to let go of its links", func() bool { return p.Links() == 0 && p.FDs() == 0 })
}

func TestRecordTurns(t *testing.T) {
	t.Parallel()
	p := testkit.NewProxy(t, echoServer(t))
	p.RecordTurns()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, cmd := range []string{"*1\r\n$4\r\nPING\r\n", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"} {
		io.WriteString(c, cmd)
		if _, err := io.ReadFull(r, make([]byte, len(cmd))); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "two turns", func() bool {
		turns := p.TakeTurns(map[string]bool{"ping": true})
		return len(turns) == 1 && turns["get ping"] == 1
	})
}

func TestAddresses(t *testing.T) {
	t.Parallel()
	if _, err := net.Dial("tcp", testkit.ClosedAddr(t)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("closed address: %v, want refused", err)
	}
	var ne net.Error
	if _, err := roundTrip(testkit.SilentListener(t), "anyone?", 200*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("silent listener: %v, want a timeout", err)
	}
}

func TestSyncBuffer(t *testing.T) {
	t.Parallel()
	var b testkit.SyncBuffer
	done := make(chan struct{})
	for range 4 {
		go func() { io.WriteString(&b, "x"); done <- struct{}{} }()
	}
	for range 4 {
		testkit.Await(t, done, 5*time.Second, "a write")
	}
	if b.String() != "xxxx" {
		t.Fatalf("got %q", b.String())
	}
}
