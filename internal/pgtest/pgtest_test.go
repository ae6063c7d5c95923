package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestURLSkipsWithoutEnv(t *testing.T) {
	t.Setenv(EnvVar, "")
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		URL(t)
		t.Error("URL returned instead of skipping")
	})
	if !skipped {
		t.Fatal("URL did not skip the test with TEST_DATABASE_URL unset")
	}
}

func TestWithSearchPath(t *testing.T) {
	tests := []struct{ base, want string }{
		{"postgres://u@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?search_path=s1&sslmode=disable"},
		{"postgresql://u@h/db", "postgresql://u@h/db?search_path=s1"},
		{"postgres://u@h/db?search_path=old", "postgres://u@h/db?search_path=s1"},
		{"host=h dbname=db", "host=h dbname=db search_path=s1"},
	}
	for _, tt := range tests {
		got, err := withSearchPath(tt.base, "s1")
		if err != nil {
			t.Errorf("withSearchPath(%q): %v", tt.base, err)
			continue
		}
		if got != tt.want {
			t.Errorf("withSearchPath(%q) = %q, want %q", tt.base, got, tt.want)
		}
	}
}

// TestURLIsolatesAndDrops checks the promise tests rely on: two URLs see
// different schemas, tables created through one are invisible to the other,
// and the schema is gone after the test that asked for it ends.
func TestURLIsolatesAndDrops(t *testing.T) {
	ctx := context.Background()
	var schemaA string
	t.Run("isolation", func(t *testing.T) {
		a, b := URL(t), URL(t)
		schemaA = currentSchema(t, a)
		schemaB := currentSchema(t, b)
		if schemaA == schemaB {
			t.Fatalf("both URLs use schema %q", schemaA)
		}
		connA := connect(t, a)
		if _, err := connA.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := connect(t, b).QueryRow(ctx,
			"SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a' AND schemaname = current_schema()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("table created via the first URL is visible in the second schema")
		}
	})
	if schemaA == "" {
		t.Skip("isolation subtest did not run")
	}
	// The subtest's cleanups have run by now.
	var exists bool
	admin := connect(t, URL(t))
	if err := admin.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schemaA).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("schema %q still exists after its test finished", schemaA)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func currentSchema(t *testing.T, url string) string {
	t.Helper()
	var s *string
	if err := connect(t, url).QueryRow(context.Background(), "SELECT current_schema()").Scan(&s); err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Fatalf("no current schema for %s: the schema does not exist or search_path was not applied", url)
	}
	return *s
}

func TestWithConnectTimeout(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u@h/db?search_path=s1":                   "postgres://u@h/db?search_path=s1&connect_timeout=15",
		"postgres://u@h/db":                                  "postgres://u@h/db?connect_timeout=15",
		"postgres://u@h/db?connect_timeout=2&search_path=s1": "postgres://u@h/db?connect_timeout=2&search_path=s1",
		"host=h dbname=db search_path=s1":                    "host=h dbname=db search_path=s1 connect_timeout=15",
	} {
		if got := withConnectTimeout(in); got != want {
			t.Errorf("withConnectTimeout(%q) = %q, want %q", in, got, want)
		}
	}
}
