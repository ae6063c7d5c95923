package config

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDocsAgreeWithLoader holds docs/configuration.md, .env.example and the
// loader's list of variables to one set of names: a variable the loader reads
// is documented in both, and neither documents one it does not read.
func TestDocsAgreeWithLoader(t *testing.T) {
	t.Parallel()
	want := map[string]bool{}
	for _, v := range Variables() {
		want[v] = true
	}
	compare := func(file string, got map[string]bool) {
		t.Helper()
		for v := range want {
			if !got[v] {
				t.Errorf("%s does not document %s, which the loader reads", file, v)
			}
		}
		for v := range got {
			if !want[v] {
				t.Errorf("%s documents %s, which the loader does not read", file, v)
			}
		}
	}
	compare(".env.example", envExampleVariables(t, filepath.Join("..", "..", ".env.example")))
	compare("docs/configuration.md", docsVariables(t, filepath.Join("..", "..", "docs", "configuration.md")))
}

// envExampleVariables are the names assigned in .env.example, commented out
// or not ("NAME=" or "# NAME=").
func envExampleVariables(t *testing.T, path string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	names := map[string]bool{}
	for _, line := range readLines(t, path) {
		if m := re.FindStringSubmatch(line); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// docsVariables are the names in the first column of the page's tables:
// each row starts with one or more `NAME`s.
func docsVariables(t *testing.T, path string) map[string]bool {
	t.Helper()
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	names := map[string]bool{}
	for _, line := range readLines(t, path) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			names[m[1]] = true
		}
	}
	return names
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Fatalf("%s is empty", path)
	}
	return lines
}

// TestDocsParsersFindDrift checks the two parsers on small inputs, so that
// TestDocsAgreeWithLoader cannot pass by reading nothing.
func TestDocsParsersFindDrift(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := filepath.Join(dir, "env")
	md := filepath.Join(dir, "md")
	os.WriteFile(env, []byte("# comment\nPORT=1\n# HOST=x\nnot a var\n"), 0o600)
	os.WriteFile(md, []byte("| Variable | Default |\n| --- | --- |\n| `PORT`, `HOST` | `8000` uses `OTHER` |\ntext `NOPE`\n"), 0o600)
	if got := sortedKeys(envExampleVariables(t, env)); !slices.Equal(got, []string{"HOST", "PORT"}) {
		t.Errorf("env names %v", got)
	}
	if got := sortedKeys(docsVariables(t, md)); !slices.Equal(got, []string{"HOST", "PORT"}) {
		t.Errorf("doc names %v", got)
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
