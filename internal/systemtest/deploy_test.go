package systemtest

// These tests stand in for a container engine, which our machines do not
// have. They check what the image, docker-compose.yml and the Kubernetes
// manifests promise by running what the container runs: the binary built
// with the Dockerfile's own flags, on a root filesystem made read-only by the
// kernel, and the server with the compose file's environment. The files
// themselves are parsed and checked for the properties the README promises.

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/joho/godotenv"
	"gopkg.in/yaml.v3"

	"github.com/agentapi/agentapi/internal/cli"
	"github.com/agentapi/agentapi/internal/config"
	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
)

// repoRoot is where the Dockerfile and friends live; go test runs in the
// package's directory.
const repoRoot = "../.."

// usageFlushBudget is how long serve waits for the last usage records after
// the HTTP server has drained (see serve.go); stop timeouts must cover it.
const usageFlushBudget = 10 * time.Second

// imageUID is the non-root user of the final image (distroless "nonroot").
const imageUID = 65532

func readRepoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// envExampleNames are the variables .env.example documents: the only ones the
// deployment files may set (a misspelt name would be silently ignored).
func envExampleNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	re := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, ".env.example")))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			names[m[1]] = true
		}
	}
	if len(names) < 10 {
		t.Fatalf(".env.example documents only %d variables", len(names))
	}
	return names
}

// ---------------------------------------------------------------------------
// Dockerfile

type dockerInstruction struct {
	stage int    // index of the FROM it belongs to
	cmd   string // upper-case keyword
	args  string
}

// parseDockerfile joins continuation lines and drops comments; enough for the
// plain Dockerfile we keep (no heredocs, default escape character).
func parseDockerfile(t *testing.T) []dockerInstruction {
	t.Helper()
	var out []dockerInstruction
	stage := -1
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstruction{stage: stage, cmd: cmd, args: strings.TrimSpace(args)})
	}
	for _, line := range strings.Split(string(readRepoFile(t, "Dockerfile")), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return out
}

// dockerBuild is the go build the Dockerfile runs, as the test repeats it.
type dockerBuild struct {
	ldflags string // with ${VERSION} still in it
}

// dockerfileBuild finds the Dockerfile's go build and checks the flags that
// make the binary static and reproducible.
func dockerfileBuild(t *testing.T) dockerBuild {
	t.Helper()
	for _, in := range parseDockerfile(t) {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/agentapi", "--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
			if !strings.Contains(in.args, want) {
				t.Errorf("Dockerfile: the go build step lacks %s", want)
			}
		}
		m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(in.args)
		if m == nil {
			t.Fatal(`Dockerfile: the go build step has no -ldflags "..."`)
		}
		if !strings.Contains(m[1], "-X github.com/agentapi/agentapi/internal/cli.Version=${VERSION}") {
			t.Errorf("Dockerfile: -ldflags %q does not stamp cli.Version from the VERSION build arg", m[1])
		}
		return dockerBuild{ldflags: m[1]}
	}
	t.Fatal("Dockerfile: no RUN with go build")
	return dockerBuild{}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	ins := parseDockerfile(t)
	dockerfileBuild(t)
	var froms []string
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in.args)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(froms))
	}
	if !strings.Contains(froms[0], "golang:") {
		t.Errorf("build stage %q is not a golang image", froms[0])
	}
	// The image's Go must satisfy go.mod's go line (GOTOOLCHAIN=local there).
	var goMod string
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(readRepoFile(t, "go.mod")); m != nil {
		goMod = string(m[1])
	}
	var goArg string
	for _, in := range ins {
		if in.cmd == "ARG" && strings.HasPrefix(in.args, "GO_VERSION=") {
			goArg = strings.TrimPrefix(in.args, "GO_VERSION=")
		}
	}
	if goMod == "" || !strings.HasPrefix(goArg, goMod) {
		t.Errorf("Dockerfile GO_VERSION %q does not follow go.mod's go %s", goArg, goMod)
	}
	final := len(froms) - 1
	if f := froms[final]; !strings.HasPrefix(f, "gcr.io/distroless/static") && f != "scratch" {
		t.Errorf("final stage %q is not distroless/static or scratch", f)
	}
	last := map[string]string{} // the final stage's last instruction of each kind
	for _, in := range ins {
		if in.stage == final {
			last[in.cmd] = in.args
		}
	}
	user, _, _ := strings.Cut(last["USER"], ":")
	if user != strconv.Itoa(imageUID) {
		t.Errorf("final stage USER %q, want the numeric non-root user %d", last["USER"], imageUID)
	}
	if last["WORKDIR"] != "/data" {
		t.Errorf("final stage WORKDIR %q, want /data (where the default SQLite file lands)", last["WORKDIR"])
	}
	dataOwned := false
	for _, in := range ins {
		if in.stage == final && in.cmd == "COPY" && strings.Contains(in.args, fmt.Sprintf("--chown=%d:%d", imageUID, imageUID)) && strings.HasSuffix(in.args, " /data") {
			dataOwned = true
		}
	}
	if !dataOwned {
		t.Errorf("final stage does not create /data owned by %d", imageUID)
	}
	if last["EXPOSE"] != "8000" {
		t.Errorf("EXPOSE %q, want 8000", last["EXPOSE"])
	}
	hc := last["HEALTHCHECK"]
	_, hcCmd, ok := strings.Cut(hc, "CMD ")
	var hcArgs []string
	if !ok || json.Unmarshal([]byte(hcCmd), &hcArgs) != nil || !slices.Equal(hcArgs, []string{"/agentapi", "healthcheck"}) {
		t.Errorf("HEALTHCHECK %q, want exec form CMD [\"/agentapi\", \"healthcheck\"]", hc)
	}
	var entry []string
	if json.Unmarshal([]byte(last["ENTRYPOINT"]), &entry) != nil || !slices.Equal(entry, []string{"/agentapi"}) {
		t.Errorf("ENTRYPOINT %q, want [\"/agentapi\"]", last["ENTRYPOINT"])
	}

	ignore := string(readRepoFile(t, ".dockerignore"))
	for _, want := range []string{".git", "**/.env", "**/*.db"} {
		if !slices.Contains(strings.Split(ignore, "\n"), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// ---------------------------------------------------------------------------
// The binary the image runs

// buildContainerBinary builds ./cmd/agentapi the way the Dockerfile does.
func buildContainerBinary(t *testing.T, version string) string {
	t.Helper()
	b := dockerfileBuild(t)
	bin := filepath.Join(t.TempDir(), "agentapi")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", strings.ReplaceAll(b.ldflags, "${VERSION}", version), "-o", bin, "./cmd/agentapi")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build as in the Dockerfile: %v\n%s", err, out)
	}
	return bin
}

// TestContainerBinary builds the binary as the Dockerfile does and runs it
// as the container would. The first build with -trimpath is slow (it misses
// the usual build cache), so -short skips it.
func TestContainerBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the static binary; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the image is linux; the ELF checks need a linux build")
	}
	t.Parallel()
	const version = "v0.0.0-deploy-test"
	bin := buildContainerBinary(t, version)

	t.Run("static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("binary has a PT_INTERP program header: it is dynamically linked and would not run on distroless/static")
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("binary needs shared libraries %v (%v)", libs, err)
		}
		if f.Section(".symtab") != nil {
			t.Error("binary has a symbol table: -ldflags -s did not apply")
		}
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(repoRoot)
		if bytes.Contains(raw, []byte(abs+"/internal")) {
			t.Errorf("binary contains the build path %s: -trimpath did not apply", abs)
		}
	})

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").Output()
		if err != nil || strings.TrimSpace(string(out)) != version {
			t.Fatalf("version printed %q (%v), want %q: the Dockerfile's -X path does not reach cli.Version", out, err, version)
		}
	})

	t.Run("healthcheck fails when nothing listens", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "healthcheck")
		cmd.Env = []string{"HOST=127.0.0.1", "PORT=" + testkit.ClosedPort(t)}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("healthcheck with nothing listening: %v, output %q; want a non-zero exit", err, out)
		}
		if !strings.Contains(string(out), "healthcheck") {
			t.Errorf("healthcheck's error does not say what failed: %q", out)
		}
	})

	// The server on a root filesystem the kernel keeps read-only, with only
	// the directories a deployment makes writable: /data (a volume) when the
	// database is SQLite, none but /tmp (a tmpfs) when it is PostgreSQL.
	t.Run("read-only root with SQLite in the data directory", func(t *testing.T) {
		up := fakeOpenAI(t, 0)
		data, tmp := t.TempDir(), t.TempDir()
		p := startContainerProcess(t, bin, data, []string{data, tmp}, []string{
			"APP_ENV=production", "SECRET_KEY=" + strings.Repeat("k", 40), "OPENAI_API_KEY=sk-upstream-test",
			"OPENAI_BASE_URL=" + up.URL + "/v1", "TMPDIR=" + tmp,
			// DATABASE_URL unset: the default agentapi.db, in the working directory.
		})
		p.exercise(t)
		p.stop(t)
		var names []string
		entries, _ := os.ReadDir(data)
		for _, e := range entries {
			names = append(names, e.Name())
			if !strings.HasPrefix(e.Name(), "agentapi.db") {
				t.Errorf("data directory holds %s; only the SQLite files were expected", e.Name())
			}
		}
		if !slices.Contains(names, "agentapi.db") {
			t.Errorf("no agentapi.db in the data directory (found %v): the default DATABASE_URL did not land in the working directory", names)
		}
		assertEmpty(t, tmp, "TMPDIR")
	})

	t.Run("read-only root with PostgreSQL and Redis", func(t *testing.T) {
		dbURL := pgtest.URL(t)
		up := fakeOpenAI(t, 0)
		work, tmp := t.TempDir(), t.TempDir()
		p := startContainerProcess(t, bin, work, []string{tmp}, []string{
			"APP_ENV=production", "SECRET_KEY=" + strings.Repeat("k", 40), "OPENAI_API_KEY=sk-upstream-test",
			"OPENAI_BASE_URL=" + up.URL + "/v1", "TMPDIR=" + tmp,
			"DATABASE_URL=" + dbURL, "REDIS_URL=" + redistest.URL(t), "REDIS_KEY_PREFIX=" + redistest.Prefix(t),
		})
		p.exercise(t)
		p.stop(t)
		assertEmpty(t, work, "working directory")
		assertEmpty(t, tmp, "TMPDIR")
	})
}

func assertEmpty(t *testing.T, dir, what string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s: the server wrote %s", what, e.Name())
	}
}

// containerProcess is the binary running `serve` as its own process.
type containerProcess struct {
	bin  string
	env  []string
	cmd  *exec.Cmd
	out  *testkit.SyncBuffer
	addr string

	exited chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before exited closes
}

// readOnlyRootWorks reports whether this machine lets the test make a private
// mount namespace (root, or CAP_SYS_ADMIN): then the kernel, not a promise,
// keeps the server off the root filesystem.
var readOnlyRootWorks = sync.OnceValue(func() bool {
	if _, err := exec.LookPath("unshare"); err != nil {
		return false
	}
	return exec.Command("unshare", "--mount", "--propagation", "private", "--", "mount", "-o", "remount,bind,ro", "/").Run() == nil
})

// startContainerProcess runs `bin serve` with env in workDir. Where the
// machine allows it, the process sees the whole root filesystem read-only
// except the writable directories (each bind-mounted over itself first),
// which is what a container with read_only: true and volumes sees. Elsewhere
// it runs normally, and only the callers' checks that nothing was written
// remain.
func startContainerProcess(t *testing.T, bin, workDir string, writable []string, env []string) *containerProcess {
	t.Helper()
	env = append(env, "HOST=127.0.0.1", "PORT=0", "LOG_LEVEL=info")
	var cmd *exec.Cmd
	if readOnlyRootWorks() {
		// unshare and sh exec in turn, so the server keeps this process's pid
		// and receives the SIGTERM sent to it.
		script := `set -e; bin=$1; cwd=$2; shift 2
for d in "$@"; do mount --bind "$d" "$d"; done
mount -o remount,bind,ro /
cd "$cwd"
exec "$bin" serve`
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", bin, workDir}, writable...)...)
		cmd.Env = append(env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	} else {
		t.Log("cannot make a mount namespace here: the root filesystem stays writable, and only the emptiness checks below hold")
		cmd = exec.Command(bin, "serve")
		cmd.Env = env
	}
	cmd.Dir = workDir
	p := &containerProcess{bin: bin, env: env, cmd: cmd, out: &testkit.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // an error only says it has exited already
		<-p.exited
	})
	deadline := time.After(60 * time.Second)
	for p.addr == "" {
		select {
		case <-p.exited:
			t.Fatalf("server exited before listening: %v\n%s", p.err, p.out.String())
		case <-deadline:
			t.Fatalf("server did not listen within a minute:\n%s", p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				p.addr = line.Addr
			}
		}
	}
	return p
}

// exercise runs the image's HEALTHCHECK command against the server, and a
// request that writes to the database, to the cache and to usage.
func (p *containerProcess) exercise(t *testing.T) {
	t.Helper()
	_, port, _ := net.SplitHostPort(p.addr)
	env := slices.DeleteFunc(slices.Clone(p.env), func(kv string) bool { return strings.HasPrefix(kv, "PORT=") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := exec.CommandContext(ctx, p.bin, "healthcheck")
	hc.Env = append(env, "PORT="+port)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Fatalf("healthcheck against the running server: %v\n%s", err, out)
	}

	base := "http://" + p.addr
	email := fmt.Sprintf("c%d@example.com", time.Now().UnixNano())
	if st, m, _ := call(t, "POST", base+"/auth/register", "", map[string]string{"email": email, "password": "container-password"}); st != 201 {
		t.Fatalf("register: %d %v\n%s", st, m, p.out.String())
	}
	st, m, _ := call(t, "POST", base+"/auth/login", "", map[string]string{"email": email, "password": "container-password"})
	if st != 200 {
		t.Fatalf("login: %d %v", st, m)
	}
	token, _ := m["access_token"].(string)
	for i := range 2 { // the second answer comes from the cache
		if st, m, _ := call(t, "POST", base+"/chat", token, map[string]string{"message": "from a container"}); st != 200 {
			t.Fatalf("chat %d: %d %v\n%s", i, st, m, p.out.String())
		}
	}
	if st, m, _ := call(t, "GET", base+"/ready", "", nil); st != 200 {
		t.Fatalf("ready: %d %v", st, m)
	}
}

// stop sends SIGTERM, as docker stop and the kubelet do, and expects a clean
// exit after the drain.
func (p *containerProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", p.err, p.out.String())
		}
	case <-time.After(30*time.Second + usageFlushBudget):
		t.Fatalf("server did not stop after SIGTERM:\n%s", p.out.String())
	}
	if !strings.Contains(p.out.String(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" line after SIGTERM:\n%s", p.out.String())
	}
	if strings.Contains(p.out.String(), "read-only file system") {
		t.Errorf("the server tried to write outside its writable directories:\n%s", p.out.String())
	}
}

// TestHealthcheckFails covers the failures the image's HEALTHCHECK must
// report (TestEmbeddedDefaults covers a live server answering).
func TestHealthcheckFails(t *testing.T) {
	t.Parallel()
	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer unhealthy.Close()
	u, _ := url.Parse(unhealthy.URL)
	cases := map[string]string{
		"nothing listens": testkit.ClosedPort(t),
		"/health is 503":  u.Port(),
	}
	for name, port := range cases {
		err := cli.Run(context.Background(), []string{"healthcheck"}, testkit.Env(map[string]string{"PORT": port}), strings.NewReader(""), io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%s: healthcheck succeeded", name)
		}
	}
}

// ---------------------------------------------------------------------------
// docker-compose.yml

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image   string
	EnvFile []struct {
		Path     string
		Required *bool
	} `yaml:"env_file"`
	Environment map[string]string
	Deploy      struct{ Replicas int }
	Ports       []string
	Volumes     []string
	ReadOnly    bool `yaml:"read_only"`
	Tmpfs       []string
	CapDrop     []string `yaml:"cap_drop"`
	Healthcheck *struct {
		Test []string
	}
	StopGracePeriod string `yaml:"stop_grace_period"`
	DependsOn       map[string]struct {
		Condition string
	} `yaml:"depends_on"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	if err := yaml.Unmarshal(readRepoFile(t, "docker-compose.yml"), &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate expands ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}
// and ${VAR?error} as Compose does, from vars (Compose's .env).
func interpolate(s string, vars map[string]string) (string, error) {
	var problem error
	out := composeVar.ReplaceAllStringFunc(s, func(m string) string {
		g := composeVar.FindStringSubmatch(m)
		v, set := vars[g[1]]
		empty := !set || (strings.HasPrefix(g[2], ":") && v == "")
		switch strings.TrimPrefix(g[2], ":") {
		case "-":
			if empty {
				return g[3]
			}
		case "?":
			if empty {
				problem = fmt.Errorf("required variable %s is missing a value: %s", g[1], g[3])
			}
		}
		return v
	})
	return out, problem
}

// composeAPIEnv is the API container's environment: the env_file (.env),
// overridden by the service's `environment`, interpolated from the same .env.
func composeAPIEnv(t *testing.T, c composeFile, dotenv map[string]string) (map[string]string, error) {
	t.Helper()
	api := c.Services["api"]
	env := map[string]string{}
	if len(api.EnvFile) != 1 || api.EnvFile[0].Path != ".env" {
		t.Fatalf("api env_file %+v, want .env", api.EnvFile)
	}
	for k, v := range dotenv {
		env[k] = v
	}
	for k, v := range api.Environment {
		s, err := interpolate(v, dotenv)
		if err != nil {
			return nil, err
		}
		env[k] = s
	}
	return env, nil
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	for _, name := range []string{"api", "postgres", "redis", "nginx"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("docker-compose.yml has no %s service", name)
		}
	}
	api := c.Services["api"]
	if api.Deploy.Replicas < 2 {
		t.Errorf("api deploy.replicas %d, want at least 2", api.Deploy.Replicas)
	}
	if len(api.Ports) > 0 {
		t.Errorf("api publishes %v; only nginx should be reachable from outside", api.Ports)
	}
	if !api.ReadOnly || !slices.ContainsFunc(api.Tmpfs, func(s string) bool { return strings.HasPrefix(s, "/tmp") }) {
		t.Errorf("api: read_only %v, tmpfs %v; want a read-only root with a /tmp tmpfs", api.ReadOnly, api.Tmpfs)
	}
	if !slices.Contains(api.CapDrop, "ALL") {
		t.Errorf("api cap_drop %v, want ALL", api.CapDrop)
	}
	if api.Healthcheck == nil || !slices.Equal(api.Healthcheck.Test, []string{"CMD", "/agentapi", "healthcheck"}) {
		t.Errorf("api healthcheck %+v, want the binary's own", api.Healthcheck)
	}
	for _, dep := range []string{"postgres", "redis"} {
		if api.DependsOn[dep].Condition != "service_healthy" {
			t.Errorf("api depends_on %s: condition %q, want service_healthy", dep, api.DependsOn[dep].Condition)
		}
		if hc := c.Services[dep].Healthcheck; hc == nil || len(hc.Test) < 2 {
			t.Errorf("%s has no health check for depends_on to wait on", dep)
		}
	}
	grace, err := time.ParseDuration(api.StopGracePeriod)
	if err != nil || grace <= 30*time.Second+usageFlushBudget {
		t.Errorf("api stop_grace_period %q: want more than SHUTDOWN_TIMEOUT (30s) plus the usage flush (%s)", api.StopGracePeriod, usageFlushBudget)
	}

	known := envExampleNames(t)
	for k := range api.Environment {
		if !known[k] {
			t.Errorf("api environment sets %s, which .env.example does not document", k)
		}
	}
	// Production needs these; Compose must stop with a message when absent.
	for _, k := range []string{"SECRET_KEY", "OPENAI_API_KEY"} {
		dotenv := map[string]string{"SECRET_KEY": "s", "OPENAI_API_KEY": "k", "POSTGRES_PASSWORD": "p"}
		delete(dotenv, k)
		if _, err := composeAPIEnv(t, c, dotenv); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("compose without %s: %v; want it refused", k, err)
		}
	}
	if env, _ := composeAPIEnv(t, c, map[string]string{"SECRET_KEY": "s", "OPENAI_API_KEY": "k", "POSTGRES_PASSWORD": "p"}); env["APP_ENV"] != "production" {
		t.Errorf("api APP_ENV %q, want production", env["APP_ENV"])
	}

	ng := c.Services["nginx"]
	if !slices.ContainsFunc(ng.Ports, func(p string) bool { return strings.HasSuffix(p, ":8000") }) {
		t.Errorf("nginx ports %v do not publish 8000", ng.Ports)
	}
	if ng.DependsOn["api"].Condition != "service_healthy" {
		t.Errorf("nginx does not wait for a healthy api")
	}
	var conf string
	for _, v := range ng.Volumes {
		if src, dst, _ := strings.Cut(v, ":"); strings.HasPrefix(dst, "/etc/nginx/nginx.conf") {
			conf = string(readRepoFile(t, strings.TrimPrefix(src, "./")))
		}
	}
	if !regexp.MustCompile(`(?m)^\s*server api:8000 resolve\b`).MatchString(conf) {
		t.Errorf("nginx.conf does not balance over api:8000 with re-resolution")
	}
	if !regexp.MustCompile(`(?m)^\s*listen 8000;`).MatchString(conf) {
		t.Errorf("nginx.conf does not listen on 8000")
	}
}

// TestComposeEnvironmentStarts runs two replicas with the API service's
// environment from docker-compose.yml and .env.example as the .env, the way
// an operator following the README would fill it in. Only the service
// addresses change: postgres:5432 and redis:6379 become the local servers.
func TestComposeEnvironmentStarts(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t) // skips without TEST_DATABASE_URL
	redisURL := redistest.URL(t)
	up := fakeOpenAI(t, 0)
	c := loadCompose(t)

	dotenv, err := godotenv.Read(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	dotenv["SECRET_KEY"] = strings.Repeat("0123456789abcdef", 4)
	dotenv["OPENAI_API_KEY"] = "sk-upstream-test"
	dotenv["OPENAI_BASE_URL"] = up.URL + "/v1"
	dotenv["POSTGRES_PASSWORD"] = "compose-test-password"
	// Next to nothing refills during the test, so spent quota is exact.
	dotenv["RATE_LIMIT_FREE_REFILL"] = "0.001"
	env, err := composeAPIEnv(t, c, dotenv)
	if err != nil {
		t.Fatal(err)
	}

	// The URLs must name the services and credentials this file defines.
	pg := c.Services["postgres"].Environment
	db, err := url.Parse(env["DATABASE_URL"])
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	if pw, _ := db.User.Password(); db.Host != "postgres:5432" || db.User.Username() != pg["POSTGRES_USER"] ||
		db.Path != "/"+pg["POSTGRES_DB"] || pw != dotenv["POSTGRES_PASSWORD"] {
		t.Errorf("DATABASE_URL %s does not match the postgres service (%v)", db.Redacted(), pg)
	}
	if r, err := url.Parse(env["REDIS_URL"]); err != nil || r.Host != "redis:6379" {
		t.Errorf("REDIS_URL %q does not name the redis service", env["REDIS_URL"])
	}
	env["DATABASE_URL"] = dbURL
	env["REDIS_URL"] = redisURL
	// Keys of this run only: limiter, cache and login-throttle state in the
	// shared test Redis would otherwise carry over between runs.
	env["REDIS_KEY_PREFIX"] = redistest.Prefix(t)
	// This test is about sharing, not about a slow Redis: on a loaded
	// machine (the race detector, parallel packages) a call past the
	// default 250ms would send a replica to its local bucket for a second
	// and the count below would be of that bucket instead.
	env["RATE_LIMIT_REDIS_TIMEOUT"] = "5s"

	var replicas []*server
	for range c.Services["api"].Deploy.Replicas {
		replicas = append(replicas, startServer(t, maps.Clone(env)))
	}
	if len(replicas) < 2 {
		t.Fatalf("%d replicas", len(replicas))
	}
	for i, s := range replicas {
		st, m, _ := call(t, "GET", s.url+"/ready", "", nil)
		checks, _ := m["checks"].(map[string]any)
		if st != 200 || checks["database"] != "ok" || checks["redis"] != "ok" {
			t.Fatalf("replica %d /ready: %d %v", i, st, m)
		}
		out := s.out.String()
		if !strings.Contains(out, `"env":"production"`) || !strings.Contains(out, `"dialect":"postgres"`) {
			t.Errorf("replica %d did not start in production on PostgreSQL:\n%s", i, out)
		}
		if strings.Contains(out, "demo account") {
			t.Errorf("replica %d created the demo account", i)
		}
	}

	// One account and one quota across replicas: PostgreSQL, Redis and the
	// shared SECRET_KEY make them interchangeable behind the load balancer.
	a, b := replicas[0].url, replicas[1].url
	creds := map[string]string{"email": "compose@example.com", "password": "compose-password"}
	if st, m, _ := call(t, "POST", a+"/auth/register", "", creds); st != 201 {
		t.Fatalf("register on replica 0: %d %v", st, m)
	}
	st, m, _ := call(t, "POST", b+"/auth/login", "", creds)
	if st != 200 {
		t.Fatalf("login on replica 1: %d %v", st, m)
	}
	token, _ := m["access_token"].(string)
	for i := range 3 {
		if st, m, _ := call(t, "POST", a+"/chat", token, map[string]string{"message": fmt.Sprintf("hello %d", i)}); st != 200 {
			t.Fatalf("chat on replica 0 with replica 1's token: %d %v", st, m)
		}
	}
	st, m, _ = call(t, "GET", b+"/chat/quota", token, nil)
	if st != 200 || m["limit"] != float64(10) || m["remaining"] != float64(7) {
		t.Fatalf("quota on replica 1 after 3 chats on replica 0: %d %v; want 7 of 10 left (the limiter is shared)", st, m)
	}
}

// ---------------------------------------------------------------------------
// Kubernetes

type k8sMeta struct {
	Name   string
	Labels map[string]string
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string
	Metadata   k8sMeta
	Data       map[string]string
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string
		Port string
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type k8sSecurityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	Capabilities             struct{ Drop []string }
	SeccompProfile           struct{ Type string } `yaml:"seccompProfile"`
}

type k8sContainer struct {
	Name  string
	Image string
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string
		Value     string
		ValueFrom *struct {
			SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	}
	Resources struct {
		Requests map[string]string
		Limits   map[string]string
	}
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct{ Seconds int }
		} `yaml:"preStop"`
	}
	SecurityContext k8sSecurityContext `yaml:"securityContext"`
	VolumeMounts    []k8sVolumeMount   `yaml:"volumeMounts"`
}

type k8sVolumeMount struct {
	Name      string
	MountPath string `yaml:"mountPath"`
}

type k8sDeploymentSpec struct {
	Replicas int
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	Template struct {
		Metadata k8sMeta
		Spec     struct {
			TerminationGracePeriodSeconds int                `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               k8sSecurityContext `yaml:"securityContext"`
			Containers                    []k8sContainer
			Volumes                       []struct {
				Name     string
				EmptyDir *struct{} `yaml:"emptyDir"`
			}
		}
	}
}

const k8sDir = "deploy/kubernetes"

// loadK8s reads every document of every manifest, keyed by kind.
func loadK8s(t *testing.T) (objects map[string][]k8sObject, files []string) {
	t.Helper()
	objects = map[string][]k8sObject{}
	var kust struct {
		Resources []string
		Namespace string
		Images    []struct{ Name string }
	}
	if err := yaml.Unmarshal(readRepoFile(t, k8sDir+"/kustomization.yaml"), &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if kust.Namespace == "" {
		t.Error("kustomization.yaml sets no namespace")
	}
	entries, err := os.ReadDir(filepath.Join(repoRoot, k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) != ".yaml" || name == "kustomization.yaml" {
			continue
		}
		files = append(files, name)
		if !slices.Contains(kust.Resources, name) && name != "secret.example.yaml" {
			t.Errorf("%s is not listed in kustomization.yaml", name)
		}
		dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, k8sDir+"/"+name)))
		for {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without apiVersion, kind or name", name)
			}
			objects[o.Kind] = append(objects[o.Kind], o)
		}
	}
	for _, r := range kust.Resources {
		if !slices.Contains(files, r) {
			t.Errorf("kustomization.yaml lists %s, which does not exist", r)
		}
	}
	if slices.Contains(kust.Resources, "secret.example.yaml") {
		t.Error("kustomization.yaml applies the example Secret; it would overwrite real credentials")
	}
	if len(kust.Images) != 1 || kust.Images[0].Name != "agentapi" {
		t.Errorf("kustomization.yaml images %+v, want one entry for agentapi", kust.Images)
	}
	return objects, files
}

func one(t *testing.T, objects map[string][]k8sObject, kind string) k8sObject {
	t.Helper()
	if len(objects[kind]) != 1 {
		t.Fatalf("%d %s objects, want 1", len(objects[kind]), kind)
	}
	return objects[kind][0]
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var spec T
	if err := o.Spec.Decode(&spec); err != nil {
		t.Fatalf("%s %s spec: %v", o.Kind, o.Metadata.Name, err)
	}
	return spec
}

// String shows the fields that were set, for failure messages.
func (s k8sSecurityContext) String() string {
	b := func(p *bool) string {
		if p == nil {
			return "unset"
		}
		return strconv.FormatBool(*p)
	}
	user := "unset"
	if s.RunAsUser != nil {
		user = strconv.Itoa(*s.RunAsUser)
	}
	return fmt.Sprintf("{runAsNonRoot:%s runAsUser:%s readOnlyRootFilesystem:%s allowPrivilegeEscalation:%s drop:%v seccomp:%q}",
		b(s.RunAsNonRoot), user, b(s.ReadOnlyRootFilesystem), b(s.AllowPrivilegeEscalation), s.Capabilities.Drop, s.SeccompProfile.Type)
}

func isTrue(b *bool) bool { return b != nil && *b }

func isFalse(b *bool) bool { return b != nil && !*b }

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	objects, _ := loadK8s(t)
	cm := one(t, objects, "ConfigMap")
	secret := one(t, objects, "Secret")
	dep := one(t, objects, "Deployment")
	spec := decodeSpec[k8sDeploymentSpec](t, dep)
	pod := spec.Template.Spec

	if spec.Replicas < 2 {
		t.Errorf("Deployment replicas %d, want at least 2", spec.Replicas)
	}
	for k, v := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("Deployment selector %s=%s does not match the pod labels", k, v)
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != "agentapi" {
		t.Errorf("image %q, want agentapi (set by kustomization.yaml's images)", c.Image)
	}

	// Probes: on the named port that is the server's PORT.
	port, _ := strconv.Atoi(cm.Data["PORT"])
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != port {
		t.Errorf("container ports %+v, want http on PORT %d", c.Ports, port)
	}
	for _, p := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{{"startupProbe", c.StartupProbe, "/health"}, {"livenessProbe", c.LivenessProbe, "/health"}, {"readinessProbe", c.ReadinessProbe, "/ready"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != "http" {
			got := "none"
			if p.probe != nil && p.probe.HTTPGet != nil {
				got = fmt.Sprintf("GET %s on port %s", p.probe.HTTPGet.Path, p.probe.HTTPGet.Port)
			}
			t.Errorf("%s: %s, want GET %s on port http", p.name, got, p.path)
			continue
		}
		// /ready bounds its dependency checks to 2s; a shorter probe timeout
		// would fail a pod whose dependencies are merely slow.
		if p.path == "/ready" && p.probe.TimeoutSeconds <= 2 {
			t.Errorf("%s timeoutSeconds %d, want more than /ready's own 2s budget", p.name, p.probe.TimeoutSeconds)
		}
	}

	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
			t.Errorf("resources %+v lack a %s request or limit", c.Resources, r)
		}
	}

	sc, psc := c.SecurityContext, pod.SecurityContext
	if !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser != imageUID || psc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, runAsUser %d (the image's user), seccomp RuntimeDefault", psc, imageUID)
	}
	if !isTrue(sc.RunAsNonRoot) || !isTrue(sc.ReadOnlyRootFilesystem) || !isFalse(sc.AllowPrivilegeEscalation) ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("container securityContext %+v: want non-root, read-only root, no privilege escalation, drop ALL, seccomp RuntimeDefault", sc)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m k8sVolumeMount) bool { return m.MountPath == "/tmp" }) {
		t.Error("no writable /tmp under the read-only root filesystem")
	}

	// Graceful shutdown fits in the grace period.
	shutdown, err := time.ParseDuration(cm.Data["SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("ConfigMap SHUTDOWN_TIMEOUT: %v", err)
	}
	var preStop time.Duration
	if ps := c.Lifecycle.PreStop; ps != nil && ps.Sleep != nil {
		preStop = time.Duration(ps.Sleep.Seconds) * time.Second
	}
	if need := preStop + shutdown + usageFlushBudget; time.Duration(pod.TerminationGracePeriodSeconds)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d: want more than preStop %s + SHUTDOWN_TIMEOUT %s + usage flush %s",
			pod.TerminationGracePeriodSeconds, preStop, shutdown, usageFlushBudget)
	}

	// Configuration: non-secrets from the ConfigMap, secrets by secretKeyRef.
	fromCM := false
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == cm.Metadata.Name {
			fromCM = true
		}
		if ef.SecretRef != nil && ef.SecretRef.Name != secret.Metadata.Name {
			t.Errorf("envFrom names Secret %q; the example is %q", ef.SecretRef.Name, secret.Metadata.Name)
		}
	}
	if !fromCM {
		t.Errorf("the container does not read ConfigMap %s", cm.Metadata.Name)
	}
	fromSecret := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != secret.Metadata.Name || secret.StringData[ref.Key] == "" {
			t.Errorf("env %s refers to %s/%s, which the example Secret does not have", e.Name, ref.Name, ref.Key)
		}
		fromSecret[e.Name] = true
	}
	for _, k := range []string{"SECRET_KEY", "OPENAI_API_KEY", "DATABASE_URL", "REDIS_URL"} {
		if !fromSecret[k] {
			t.Errorf("%s does not come from the Secret", k)
		}
		if _, ok := cm.Data[k]; ok {
			t.Errorf("ConfigMap holds %s, a secret", k)
		}
	}
	known := envExampleNames(t)
	for k := range cm.Data {
		if !known[k] {
			t.Errorf("ConfigMap sets %s, which .env.example does not document", k)
		}
	}

	// The ConfigMap with the example Secret is refused (placeholders must not
	// run); with real values the configuration loads, in production.
	env := map[string]string{}
	for k, v := range cm.Data {
		env[k] = v
	}
	for k, v := range secret.StringData {
		env[k] = v
	}
	if _, err := config.Load(testkit.Env(env), ""); err == nil || !strings.Contains(err.Error(), "SECRET_KEY") {
		t.Errorf("the example Secret's placeholders load: %v; want SECRET_KEY refused", err)
	}
	env["SECRET_KEY"] = strings.Repeat("0123456789abcdef", 4)
	cfg, err := config.Load(testkit.Env(env), "")
	if err != nil {
		t.Fatalf("ConfigMap with a real Secret: %v", err)
	}
	if !cfg.Production() || cfg.Server.Port != port || cfg.Redis.URL == "" || !strings.HasPrefix(cfg.Database.URL, "postgres://") {
		t.Errorf("loaded config: production %v, port %d, redis %q, database %q", cfg.Production(), cfg.Server.Port, cfg.Redis.URL, cfg.Database.URL)
	}

	// Service, PodDisruptionBudget and autoscaler find the pods.
	type serviceSpec struct {
		Selector map[string]string
		Ports    []struct {
			Name       string
			TargetPort string `yaml:"targetPort"`
		}
	}
	svc := decodeSpec[serviceSpec](t, one(t, objects, "Service"))
	if len(svc.Selector) == 0 || len(svc.Ports) != 1 || svc.Ports[0].TargetPort != "http" {
		t.Errorf("Service spec %+v, want a selector and targetPort http", svc)
	}
	for k, v := range svc.Selector {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("Service selector %s=%s matches no pod label", k, v)
		}
	}
	pdb := decodeSpec[struct {
		MinAvailable   *string `yaml:"minAvailable"`
		MaxUnavailable *string `yaml:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		}
	}](t, one(t, objects, "PodDisruptionBudget"))
	if (pdb.MinAvailable == nil) == (pdb.MaxUnavailable == nil) || len(pdb.Selector.MatchLabels) == 0 {
		t.Errorf("PodDisruptionBudget %+v: want one of minAvailable/maxUnavailable and a selector", pdb)
	}
	for k, v := range pdb.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("PodDisruptionBudget selector %s=%s matches no pod label", k, v)
		}
	}
	if hpas := objects["HorizontalPodAutoscaler"]; len(hpas) > 0 {
		hpa := decodeSpec[struct {
			ScaleTargetRef struct{ Kind, Name string } `yaml:"scaleTargetRef"`
			MinReplicas    int                         `yaml:"minReplicas"`
		}](t, hpas[0])
		if hpa.ScaleTargetRef.Kind != "Deployment" || hpa.ScaleTargetRef.Name != dep.Metadata.Name || hpa.MinReplicas < 2 {
			t.Errorf("HorizontalPodAutoscaler %+v: want the Deployment %s, at least 2 replicas", hpa, dep.Metadata.Name)
		}
	}
}
