package store

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// helperDBEnv, when set, makes TestOpenInChildProcess open that database
// and report, instead of being a test of its own.
const (
	helperDBEnv    = "AGENTAPI_STORE_HELPER_DB"
	helperStartEnv = "AGENTAPI_STORE_HELPER_START"
)

// TestOpenInChildProcess is the body of the child processes of
// TestSQLiteMigrateTwoProcesses.
func TestOpenInChildProcess(t *testing.T) {
	url := os.Getenv(helperDBEnv)
	if url == "" {
		t.Skip("runs only as a child of TestSQLiteMigrateTwoProcesses")
	}
	// Both children wait for the same instant, so their migrations
	// overlap instead of depending on how fast each process started.
	if ns, err := strconv.ParseInt(os.Getenv(helperStartEnv), 10, 64); err == nil {
		time.Sleep(time.Until(time.Unix(0, ns)))
	}
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestSQLiteMigrateTwoProcesses starts two processes on one SQLite file at
// once, as two servers (or `agentapi migrate` beside a server) do: both must
// come up, the schema migrated once. The file starts with goose's version
// table and every migration pending, so both race straight for CREATE
// TABLE (on a file without the version table goose happens to stagger
// them, which would hide a missing lock); TestSQLiteConcurrentOpen covers
// the fresh file within one process.
func TestSQLiteMigrateTwoProcesses(t *testing.T) {
	t.Parallel()
	if os.Getenv(helperDBEnv) != "" {
		t.Skip("child process")
	}
	url := "sqlite://" + filepath.Join(t.TempDir(), "two.db")
	pendingMigrations(t, url)
	start := strconv.FormatInt(time.Now().Add(500*time.Millisecond).UnixNano(), 10)
	var out [2]bytes.Buffer
	cmds := make([]*exec.Cmd, 2)
	for i := range cmds {
		c := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestOpenInChildProcess$", "-test.count=1")
		c.Env = append(os.Environ(), helperDBEnv+"="+url, helperStartEnv+"="+start)
		c.Stdout, c.Stderr = &out[i], &out[i]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = c
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("process %d: %v\n%s", i, err, out[i].String())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	assertMigratedOnce(t, s)
}
