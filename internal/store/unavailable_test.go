package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestOpTimeoutIsUnavailable holds SQLite's only write connection in an open
// transaction, so a write waits for it, and checks that the store's own
// time limit ends the wait with ErrUnavailable.
func TestOpTimeoutIsUnavailable(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "busy.db"))
	s.opTimeout = 100 * time.Millisecond
	tx, err := s.write.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	err = within(t, 10*time.Second, func() error {
		_, err := s.CreateUser(t.Context(), User{Email: "late@example.com", PasswordHash: "h"})
		return err
	})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CreateUser while the writer is held: %v, want ErrUnavailable", err)
	}
	// A store timeout must not read as the caller's own deadline: the HTTP
	// layer maps context.DeadlineExceeded to an upstream timeout.
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v still matches context.DeadlineExceeded", err)
	}
}

// TestCallerDeadlineIsNotUnavailable is the other side: when the caller's
// context ends first, the caller's error comes back unchanged.
func TestCallerDeadlineIsNotUnavailable(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "busy.db"))
	tx, err := s.write.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = s.CreateUser(ctx, User{Email: "late@example.com", PasswordHash: "h"})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("CreateUser past the caller's deadline: %v, want context.DeadlineExceeded and not ErrUnavailable", err)
	}
}

// TestOpenUnreachablePostgres needs no PostgreSQL: nothing listens on the
// port, so the connect fails and says the database is unavailable.
func TestOpenUnreachablePostgres(t *testing.T) {
	t.Parallel()
	_, err := Open(t.Context(), fmt.Sprintf("postgres://nobody:pw@%s/db?sslmode=disable", testkit.ClosedAddr(t)))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open on a closed port: %v, want ErrUnavailable", err)
	}
}

// TestOpenHungPostgres points Open at a server that accepts connections and
// never answers: without a connect timeout Open would wait forever.
func TestOpenHungPostgres(t *testing.T) {
	t.Parallel()
	addr := testkit.SilentListener(t)
	err := within(t, 4*pgConnectTimeout, func() error {
		s, err := Open(context.Background(), "postgres://nobody@"+addr+"/db?sslmode=disable")
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open on a silent server: %v, want ErrUnavailable", err)
	}
}

// within runs f and returns its error, failing the test if f is still
// running after d: these tests check that something does not hang, and
// should say so rather than wait for go test's own timeout.
func within(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("still waiting after %v", d)
		return nil
	}
}

// TestBrokenConnectionIsUnavailable: a connection the database closed (a
// restart, a proxy or load balancer dropping it) shows up as an unexpected
// end of stream on the next statement, and is the database being
// unavailable (503, retry), not an internal error.
func TestBrokenConnectionIsUnavailable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("store: get user %q: %w", "a@example.com", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("store: record usage: commit: %w", io.EOF), true},
		{&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, true},
		{&pgconn.ConnectError{}, true},
		{fmt.Errorf("store: create user: %w", &pgconn.PgError{Code: pgUniqueViolation}), false},
		{errors.New("sql: no rows in result set"), false},
	}
	for _, tc := range cases {
		if got := isConnectionError(tc.err); got != tc.want {
			t.Errorf("isConnectionError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
