package cli

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/testkit"
)

func TestStartRefusesBadConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"APP_ENV": "production", "OPENAI_API_KEY": "x", "SECRET_KEY": "your-secret-key-here"}, []string{"SECRET_KEY"}},
		{map[string]string{"APP_ENV": "production", "SECRET_KEY": strings.Repeat("s", 40)}, []string{"OPENAI_API_KEY"}},
		{map[string]string{"PORT": "x", "ALGORITHM": "none"}, []string{"PORT", "ALGORITHM"}},
	}
	for _, tc := range cases {
		err := Run(context.Background(), []string{"serve"}, testkit.Env(tc.env), strings.NewReader(""), io.Discard, io.Discard)
		if err == nil {
			t.Fatalf("%v: started", tc.env)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not name %s", tc.env, err, w)
			}
		}
	}
}

func TestUsersCommands(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "u.db")
	env := testkit.Env(map[string]string{"DATABASE_URL": db})
	var out bytes.Buffer
	run := func(stdin string, args ...string) error {
		out.Reset()
		return Run(context.Background(), args, env, strings.NewReader(stdin), &out, io.Discard)
	}
	if err := run("s3cret-password\n", "users", "create", "--email", "Pat@Example.com", "--password-stdin", "--tier", "pro"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Fatal("password echoed")
	}
	if err := run("", "users", "create", "--email", "pat@example.com", "--password", "another-password"); err == nil {
		t.Fatal("duplicate email accepted")
	}
	if err := run("", "users", "create", "--email", "q@example.com", "--password", "short"); err == nil {
		t.Fatal("short password accepted")
	}
	if err := run("", "users", "set-tier", "--email", "pat@example.com", "--tier", "gold"); err == nil {
		t.Fatal("unknown tier accepted")
	}
	if err := run("", "users", "set-tier", "--email", "nobody@example.com", "--tier", "pro"); err == nil {
		t.Fatal("set-tier on a missing user succeeded")
	}
	if err := run("", "users", "set-tier", "--email", "pat@example.com", "--tier", "free"); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.UserByEmail(context.Background(), "pat@example.com")
	if err != nil || u.Tier != "free" {
		t.Fatalf("user %+v %v", u, err)
	}
	if err := run("", "bogus"); err == nil {
		t.Fatal("unknown command accepted")
	}
}
