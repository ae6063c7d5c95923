// Package pgtest gives each test its own empty PostgreSQL schema, so tests
// against the shared server can run in parallel without seeing each other's
// tables. It is meant to be imported from _test.go files only.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the environment variable holding the server's URL, for
// example postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const EnvVar = "TEST_DATABASE_URL"

// setupTimeout bounds each administrative round trip, so a server that is
// down fails the test promptly instead of hanging it.
const setupTimeout = 30 * time.Second

// URL creates a fresh, uniquely named schema in the database named by
// TEST_DATABASE_URL and returns a connection URL whose sessions use it as
// their search_path, so unqualified table names land in it. The schema and
// everything in it is dropped when the test finishes. If TEST_DATABASE_URL is
// unset, the test is skipped.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvVar)
	if base == "" {
		t.Skipf("pgtest: %s is not set; skipping test that needs PostgreSQL", EnvVar)
	}

	// Lower-case on purpose: search_path folds unquoted names to lower case.
	schema := "pgtest_" + randomHex(8)
	exec(t, base, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	t.Cleanup(func() {
		exec(t, base, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})

	u, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("pgtest: %s: %v", EnvVar, err)
	}
	return withConnectTimeout(u)
}

// testConnectTimeout replaces the store's 3-second bound on a new
// connection in tests, unless the URL sets its own: with every package's
// tests running at once under the race detector on two cores, the server
// has been seen taking longer than 3 s to answer a connection, which fails
// a test at start-up for no fault of the code under test. A stalled
// connection still ends at the store's per-operation limit.
const testConnectTimeout = "15"

// withConnectTimeout adds connect_timeout to u unless it has one.
func withConnectTimeout(u string) string {
	if strings.Contains(u, "connect_timeout=") {
		return u
	}
	if strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://") {
		sep := "&"
		if !strings.Contains(u, "?") {
			sep = "?"
		}
		return u + sep + "connect_timeout=" + testConnectTimeout
	}
	return u + " connect_timeout=" + testConnectTimeout
}

// withSearchPath returns base with search_path set to schema. pgx sends
// parameters it does not itself understand to the server as run-time
// settings at connection start-up, so every connection opened from the
// result uses the schema without running any SQL first.
func withSearchPath(base, schema string) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			// url's message would repeat the URL and with it any password.
			return "", fmt.Errorf("not a valid URL")
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	// The keyword=value form: a later setting of a key overrides an earlier one.
	return base + " search_path=" + schema, nil
}

// exec runs one statement on a short-lived connection of its own. It uses
// context.Background rather than the test's context because it also runs in
// Cleanup, after the test's context has been cancelled.
func exec(t testing.TB, connString, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", EnvVar, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // documented never to fail
	return hex.EncodeToString(b)
}
